"""Loading the pinned model and turning validated instances into signals.

The server loads exactly one model, named by ``MODEL_URI`` (``models:/<name>/<version>`` or a local
MLflow model folder), with ``mlflow.pyfunc.load_model``. Its signature's input columns are the
contract with clients: instances must carry exactly those features. The hot path builds one float64
matrix per request (a list comprehension over instances, no per-row pandas work) and one DataFrame.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autotrader.serving.hgb import FLAT_MAX_ROWS, FlatHGB, compile_hgb
from autotrader.serving.schemas import Instance, RequestError

log = logging.getLogger("autotrader.serving")

_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
# Signature column types the matrix can be cast to; anything else is refused at load time.
_NUMPY_TYPES: dict[str, str] = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
}


class ModelOutputError(Exception):
    """The model answered with something that is not one signal in {-1, 0, 1} per instance."""


# Where training records each feature's [min, max] over its training rows (the MLmodel ``metadata``,
# written by ``autotrader.modeling.tracking.log_model``); read here without importing modeling.
FEATURE_BOUNDS_KEY = "feature_bounds"
DEFAULT_BOUNDS_MARGIN = 10.0


@dataclass(frozen=True)
class FeatureBounds:
    """What values a model accepts, per column (in the model's column order).

    A value is accepted within the training range widened by ``margin`` times its span on each
    side: ``[min − margin·span, max + margin·span]`` (span = max − min, or max(|min|, |max|, 1) for
    a constant column). Far outside it the model was never fitted (a logistic model overflows
    at ~1e306: a 500 before this check); a bar that far out is a client or data bug, refused with
    a 422 that names the feature. NaN (JSON null, "missing") is always accepted: the models handle it.
    """

    names: tuple[str, ...]
    train_lo: np.ndarray
    train_hi: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    margin: float

    @classmethod
    def from_metadata(
        cls, metadata: Any, order: Sequence[str], margin: float = DEFAULT_BOUNDS_MARGIN
    ) -> FeatureBounds | None:
        """The bounds recorded with the model, in ``order``; None when it recorded none (older models)."""
        recorded = (metadata or {}).get(FEATURE_BOUNDS_KEY) if isinstance(metadata, dict) else None
        if not isinstance(recorded, dict):
            return None
        train_lo = np.full(len(order), -np.inf)
        train_hi = np.full(len(order), np.inf)
        for j, name in enumerate(order):
            pair = recorded.get(name)
            if isinstance(pair, list | tuple) and len(pair) == 2 and all(_finite(v) for v in pair):
                train_lo[j], train_hi[j] = float(pair[0]), float(pair[1])
        known = np.isfinite(train_lo)
        span = np.where(
            train_hi > train_lo,
            train_hi - train_lo,
            np.maximum(np.maximum(np.abs(train_lo), np.abs(train_hi)), 1.0),
        )
        with np.errstate(invalid="ignore", over="ignore"):
            lo = np.where(known, train_lo - margin * span, -np.inf)
            hi = np.where(known, train_hi + margin * span, np.inf)
        return cls(tuple(order), train_lo, train_hi, lo, hi, margin)

    def check(self, matrix: np.ndarray, instances: Sequence[Instance]) -> None:
        """A RequestError (422) naming the first instance and feature outside the bounds."""
        outside = (matrix < self.lo) | (matrix > self.hi)  # NaN compares False: missing is fine
        if not outside.any():
            return
        i, j = (int(k) for k in np.argwhere(outside)[0])
        inst = instances[i]
        raise RequestError(
            422,
            f"instances[{i}].features.{self.names[j]} ({inst.broker}/{inst.symbol}): {matrix[i, j]:.6g} is "
            f"outside the range this model accepts [{self.lo[j]:.6g}, {self.hi[j]:.6g}] (its training "
            f"range [{self.train_lo[j]:.6g}, {self.train_hi[j]:.6g}] widened by {self.margin:g}× its span)",
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def version_label(model_uri: str, explicit: str | None = None) -> str:
    """The ``model_version`` label: ``MODEL_VERSION`` if given, N for ``models:/name/N``, else "local".

    An alias URI (``models:/name@staging``) labels as the alias; deployments pin versions, so this
    only shows up when someone serves an alias by hand.
    """
    if explicit:
        return explicit
    if match := _VERSION_URI.match(model_uri):
        return match["version"]
    if match := _ALIAS_URI.match(model_uri):
        return match["alias"]
    return "local"


def parse_registry_uri(model_uri: str) -> tuple[str, str] | None:
    """``models:/name/N`` → (name, "N"); anything else → None."""
    match = _VERSION_URI.match(model_uri)
    return (match["name"], match["version"]) if match else None


@dataclass
class LoadedModel:
    """A pyfunc model plus what the hot path needs from its signature, computed once.

    Fast path: for an sklearn-flavoured model fitted on named columns (``feature_names_in_`` equal to
    the signature's columns), prediction calls the estimator on a float64 matrix in its own column
    order. scikit-learn's DataFrame input checks cost ~3x the prediction itself for one row
    (measured: 6.2 ms vs 1.8 ms per row for a 100-iteration HGB on a loaded 2-core box), and the
    checks they make — names, order, numeric dtype — are made here once, against the signature,
    before anything reaches the model. A plain numeric HistGradientBoostingClassifier additionally
    gets a verified flat tree walk for small requests (``hgb.py``: identical scores, ~10x less CPU
    for one row). Every other model goes through ``pyfunc.predict(DataFrame)`` with MLflow's own
    schema enforcement.
    """

    pyfunc: Any
    uri: str
    columns: tuple[str, ...] | None  # None: the model has no input signature (any consistent feature set)
    dtypes: dict[str, str] = field(default_factory=dict)  # non-float64 columns only
    estimator: Any = None  # set for the fast path
    order: tuple[str, ...] | None = None  # the estimator's column order (fast path)
    flat: FlatHGB | None = None  # verified flat tree walk for small requests (HGB only, see hgb.py)
    bounds: FeatureBounds | None = None  # the accepted value range per column, from training (if recorded)
    pre: Any = None  # a Pipeline's transform steps, run apart so their output can be checked (fast path)
    final: Any = None  # ... and its final estimator

    @classmethod
    def from_pyfunc(cls, pyfunc: Any, uri: str, bounds_margin: float = DEFAULT_BOUNDS_MARGIN) -> LoadedModel:
        schema = pyfunc.metadata.get_input_schema()
        if schema is None:
            return cls(pyfunc=pyfunc, uri=uri, columns=None)
        if not schema.has_input_names():
            raise ValueError(
                f"{uri}: the model signature has unnamed (tensor) inputs; expected feature columns"
            )
        names = tuple(schema.input_names())
        dtypes: dict[str, str] = {}
        for name, kind in zip(names, schema.input_types(), strict=True):
            key = getattr(kind, "name", str(kind))
            if key not in _NUMPY_TYPES:
                raise ValueError(f"{uri}: signature column {name!r} has type {key}; expected a numeric type")
            if _NUMPY_TYPES[key] != "float64":
                dtypes[name] = _NUMPY_TYPES[key]
        model = cls(pyfunc=pyfunc, uri=uri, columns=names, dtypes=dtypes)
        estimator = _sklearn_estimator(pyfunc)
        fitted = getattr(estimator, "feature_names_in_", None)
        if (
            estimator is not None
            and not dtypes
            and fitted is not None
            and set(fitted) == set(names)
            and _takes_a_matrix(estimator, len(names))
        ):
            model.estimator = estimator
            model.order = tuple(str(c) for c in fitted)
            _quiet_feature_name_warning()
            model.flat = compile_hgb(estimator)
            model.pre, model.final = _split_pipeline(estimator)
        model.bounds = FeatureBounds.from_metadata(
            getattr(pyfunc.metadata, "metadata", None), model.order or names, bounds_margin
        )
        return model

    def frame(self, instances: Sequence[Instance]) -> Any:
        """Instances → the model's input (matrix or DataFrame), or a RequestError (422) naming bad features."""
        columns = self.columns
        if columns is None:
            columns = tuple(instances[0].features)
        wanted = set(columns)
        for i, inst in enumerate(instances):
            if inst.features.keys() != wanted:
                have = set(inst.features)
                missing, unknown = sorted(wanted - have), sorted(have - wanted)
                parts = []
                if missing:
                    parts.append(f"missing feature(s) {', '.join(missing[:10])}")
                if unknown:
                    parts.append(f"unknown feature(s) {', '.join(unknown[:10])}")
                raise RequestError(
                    422,
                    f"instances[{i}] ({inst.broker}/{inst.symbol}): {'; '.join(parts)}; "
                    f"the model expects exactly {len(columns)} features (GET /readyz lists them)",
                )
        order = self.order or columns
        nan = np.nan
        rows = [[nan if (v := f[c]) is None else v for c in order] for f in (i.features for i in instances)]
        matrix = np.array(rows, dtype=np.float64).reshape(len(instances), len(order))
        if self.bounds is not None:
            self.bounds.check(matrix, instances)
        if self.estimator is not None:
            return matrix
        frame = pd.DataFrame(matrix, columns=list(order), copy=False)
        if self.dtypes:
            frame = self._cast(frame)
        return frame

    def _cast(self, frame: pd.DataFrame) -> pd.DataFrame:
        for name, dtype in self.dtypes.items():
            values = frame[name].to_numpy()
            if dtype != "float32" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
                raise RequestError(
                    422, f"feature {name!r} must be a whole number (the model signature says {dtype})"
                )
        return frame.astype(self.dtypes)

    def predict(self, inputs: Any) -> np.ndarray:
        """Signals as int8 in {-1, 0, 1}, one per row; a ModelOutputError when the model says otherwise."""
        if self.flat is not None and len(inputs) <= FLAT_MAX_ROWS:
            raw = self.flat.predict(inputs)
        elif self.pre is not None:
            raw = self.final.predict(self._transform(inputs))
        elif self.estimator is not None:
            raw = self.estimator.predict(inputs)
        else:
            raw = self.pyfunc.predict(inputs)
        if isinstance(raw, pd.DataFrame):
            raw = raw.iloc[:, 0]
        values = np.asarray(raw).reshape(-1)
        if len(values) != len(inputs):
            raise ModelOutputError(f"model returned {len(values)} predictions for {len(inputs)} rows")
        try:
            numeric = values.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ModelOutputError(f"model returned non-numeric predictions ({values.dtype})") from exc
        signals = np.rint(numeric)
        bad = ~np.isin(signals, (-1.0, 0.0, 1.0)) | (signals != numeric)
        if bad.any():
            raise ModelOutputError(f"model returned {values[bad][0]!r}; expected signals in {{-1, 0, 1}}")
        return signals.astype(np.int8)

    def _transform(self, matrix: np.ndarray) -> Any:
        """The Pipeline's transforms, then a finite-output check: a 422 naming the feature that overflowed.

        This is exactly what ``Pipeline.predict`` does before its last step, plus the check. It
        catches what the recorded bounds cannot (a model trained before bounds were recorded): a
        finite input the scaler turns into ±inf (1e306 / a small scale), which the logistic model
        would refuse with a ValueError, a 500.
        """
        out = self.pre.transform(matrix)
        values = out.toarray() if hasattr(out, "toarray") else np.asarray(out)
        bad = np.isinf(values)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            order = list(self.order or ())
            try:
                name = str(self.pre.get_feature_names_out(order)[j])
            except Exception:  # a transform without feature names: say which output column
                name = f"transformed column {j}"
            sent = f"{matrix[i, order.index(name)]:.6g}" if name in order else "a value"
            raise RequestError(
                422,
                f"instances[{i}].features.{name}: {sent} overflows the model's input transform to "
                "infinity; send values in the range the model was trained on",
            )
        return out

    def warm(self) -> None:
        """One dummy prediction, so the first real request does not pay for lazy initialisation."""
        if self.columns is None:
            return
        order = self.order or self.columns
        matrix = np.zeros((1, len(order)))
        if self.estimator is not None:
            self.predict(matrix)
            return
        frame = pd.DataFrame(matrix, columns=list(order))
        self.predict(frame.astype(self.dtypes) if self.dtypes else frame)


def _sklearn_estimator(pyfunc: Any) -> Any:
    """The fitted estimator behind an sklearn-flavoured pyfunc model, else None."""
    loader = pyfunc.metadata.flavors.get("python_function", {}).get("loader_module")
    if loader != "mlflow.sklearn":
        return None
    try:
        estimator = pyfunc.get_raw_model()
    except Exception:  # older wrappers without get_raw_model: stay on the pyfunc path
        return None
    return estimator if callable(getattr(estimator, "predict", None)) else None


def _takes_a_matrix(estimator: Any, n_features: int) -> bool:
    """Does the estimator predict a plain float matrix? The fast path passes one.

    Not every fitted Pipeline does: training's hgb Pipeline drops an all-missing column *by name*
    (a ColumnTransformer), which only a DataFrame can provide; such a model stays on the pyfunc
    path (a DataFrame per request) instead of failing its warm-up and never becoming ready.
    """
    try:
        estimator.predict(np.zeros((1, n_features)))
    except Exception as exc:  # any refusal: the DataFrame path is the safe one
        log.info(
            "the model does not predict a plain matrix (%s); using the DataFrame path", type(exc).__name__
        )
        return False
    return True


def _split_pipeline(estimator: Any) -> tuple[Any, Any]:
    """(transforms, final step) of a Pipeline with transform steps, else (None, None).

    A Pipeline whose other steps are all passthrough (what hgb training saves) needs no check.
    """
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline) or len(estimator.steps) < 2:
        return None, None
    if all(step in (None, "passthrough") for _, step in estimator.steps[:-1]):
        return None, None
    return estimator[:-1], estimator.steps[-1][1]


def _quiet_feature_name_warning() -> None:
    """The fast path passes a matrix in ``feature_names_in_`` order; sklearn would warn on every call."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)


def limit_threads(threads: int | None) -> None:
    """Cap OpenMP/BLAS threads of the libraries loaded so far, for the CALLING thread.

    One uvicorn worker per pod, scaled by pods: a single-row prediction gains nothing from a second
    OpenMP thread, and on a busy or CPU-limited node OpenMP's spinning threads multiply latency
    (HistGradientBoosting went from 0.5 s to 18 s to fit on this 2-core box under load, and single
    predictions from ~2 ms to seconds). OpenMP keeps its thread count per calling thread, so every
    thread that predicts must call this once, after the model's libraries are imported
    (``PredictionService`` does it on each of its worker threads, ``load`` on the loader thread).
    """
    if threads is None or threads <= 0:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def load(
    model_uri: str, threads: int | None = 1, bounds_margin: float = DEFAULT_BOUNDS_MARGIN
) -> LoadedModel:
    """``mlflow.pyfunc.load_model`` + signature inspection + thread cap + warm-up; raises on any failure."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    limit_threads(threads)  # before anything predicts, after the model's libraries are loaded
    model = LoadedModel.from_pyfunc(pyfunc, model_uri, bounds_margin)
    model.warm()
    return model


@dataclass
class LoadState:
    """What ``/readyz`` reports: loading, ready, or failed with the reason."""

    status: str = "loading"  # loading | ready | failed
    reason: str = "model is loading"
    model: LoadedModel | None = None
    seconds: float | None = None
    started: float | None = None  # time.monotonic() when loading began


def bound_registry_calls(timeout_s: float, env: dict[str, str] | Any = None) -> dict[str, str]:
    """Bound every MLflow HTTP call of the model load; returns the settings in force.

    MLflow's defaults retry a registry call 7 times with exponential backoff and wait 120 s per
    read: with the registry down, a server stayed not ready for ~400 s (measured) before saying
    why. The server retries whole loads itself (``MODEL_LOAD_ATTEMPTS``, with backoff, the reason
    on ``/readyz`` after each), so MLflow's own retries are off and each call has ``timeout_s``.
    Set only where unset: an operator's ``MLFLOW_HTTP_REQUEST_*`` wins. Called by ``autotrader
    serve`` for its own process (not by the library, which must not change a host's environment).
    """
    env = os.environ if env is None else env
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))  # MLflow wants an int
    return {k: env[k] for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}


class ModelLoader:
    """Loads the model on a background thread so ``/healthz`` answers while MLflow downloads."""

    def __init__(
        self,
        model_uri: str | None,
        attempts: int = 3,
        backoff_s: float = 1.0,
        threads: int | None = 1,
        bounds_margin: float = DEFAULT_BOUNDS_MARGIN,
    ) -> None:
        self.model_uri = model_uri
        self.threads = threads
        self.bounds_margin = bounds_margin
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.state = LoadState()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.on_ready: list[Any] = []

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once loading has finished (either way)."""
        return self._done.wait(timeout)

    def _run(self) -> None:
        try:
            self._load_with_retries()
        finally:
            self._done.set()

    def _load_with_retries(self) -> None:
        if not self.model_uri:
            self.state = LoadState(status="failed", reason="MODEL_URI is not set")
            log.error("model not loaded: MODEL_URI is not set")
            return
        started = time.perf_counter()
        begun = time.monotonic()
        self.state = LoadState(
            status="loading", reason=f"loading {self.model_uri} (attempt 1/{self.attempts})", started=begun
        )
        for attempt in range(1, self.attempts + 1):
            try:
                model = load(self.model_uri, self.threads, self.bounds_margin)
            except Exception as exc:  # any failure keeps the server alive and not ready
                reason = f"loading {self.model_uri} failed: {type(exc).__name__}: {_first_line(exc)}"
                elapsed = time.monotonic() - begun
                if attempt < self.attempts:
                    self.state = LoadState(
                        status="loading",
                        reason=f"{reason} (attempt {attempt}/{self.attempts} after {elapsed:.1f} s; retrying)",
                        started=begun,
                    )
                    log.warning("%s; retrying (attempt %d/%d)", reason, attempt, self.attempts)
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                    continue
                reason = f"{reason} (gave up after {self.attempts} attempt(s), {elapsed:.1f} s)"
                self.state = LoadState(status="failed", reason=reason, started=begun)
                log.error("model not loaded: %s", reason)
                return
            seconds = time.perf_counter() - started
            for callback in self.on_ready:
                callback(model)
            self.state = LoadState(status="ready", reason="ready", model=model, seconds=seconds)
            log.info("model %s loaded and warm in %.2fs (%s features)", self.model_uri, seconds, _n(model))
            return


def _n(model: LoadedModel) -> str:
    return "any" if model.columns is None else str(len(model.columns))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else repr(exc)


def env_model_uri(env: dict[str, str] | None = None) -> str | None:
    env = dict(os.environ) if env is None else env
    return env.get("MODEL_URI") or None
