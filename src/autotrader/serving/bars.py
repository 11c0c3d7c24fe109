"""Bars in, signals out: ``POST /predict/bars`` computes the features itself, with the store's own code.

Design: **stateless**. Each request carries, per instrument, the newest bar and the bars before it
that the features read (the warm-up: ``warmup_bars`` of the model's feature params, + 1 for the bar
itself; ``GET /readyz`` says how many as ``bars.bars_required``). The server computes the newest
bar's features from that window with ``autotrader.features.compute_last_row``: the arithmetic of
``compute_feature_arrays`` — the function the feature store runs — for the newest row only
(tests/test_features_lastrow.py holds the two equal bit for bit), and predicts for that bar. The
features are window-local bit for bit (docs/features.md), so the row equals the store's row
exactly. No per-instrument state is kept:
any replica (stable or canary, a fresh pod, a pod that saw none of the instrument's earlier bars)
gives the same answer to the same request. docs/serving.md ("Bars in") has the measured reasons.

The feature params come from the model (its MLmodel ``metadata.feature_set``, recorded at training,
``autotrader.features.contract``), never from the server's guess. They are checked once, when the
model loads: their recorded hash, the params this deployment expects (``FEATURE_PARAMS``), the
fingerprint of the server's feature code and the model's input columns. Any disagreement makes
every bars-in request a 409 naming the param (and ``/readyz`` says so); vectors to ``/predict``
still work.

The bars come as rows (``{"bars": [...]}``, one object per bar) or as columns (``{"windows": [...]}``,
one list per column per instrument, ``bar_columns.py``: about half the CPU of rows for the same
window); both become the same ``Window`` arrays and meet the same rules.

Bad bars get the rules that guard the store (``autotrader.validation``'s rule names): a 422 naming
the rule, the instrument and the bar, before anything is computed or scored.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from autotrader.calendars import profile
from autotrader.features import compute_last_row, feature_names, fingerprint, warmup_bars
from autotrader.features.contract import FEATURE_SET_KEY, params_diff, params_hash
from autotrader.features.spec import BarArrays
from autotrader.params import Broker, FeatureParams, ValidateParams
from autotrader.serving.bar_columns import BarWindow, window_arrays
from autotrader.serving.model import LoadedModel
from autotrader.serving.schemas import RequestError, _errors, _summary, iso_utc

MAX_INSTRUMENTS = 64  # instruments per request
MAX_BARS_FACTOR = 4  # at most this × bars_required bars per instrument (only the last window is used)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class Bar(BaseModel):
    """One bar in the bar schema (``autotrader.schema.BAR_COLUMNS``); ``spread`` may be null/absent."""

    # allow_inf_nan: a NaN/Infinity token or an overflow is the finite_values rule's 422, named as such
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=True, frozen=True)

    timestamp: AwareDatetime = Field(strict=False)  # the bar's open time, with a zone
    broker: Broker
    symbol: str = Field(min_length=1, max_length=64)
    open: float
    high: float
    low: float
    close: float
    volume: float
    spread: float | None = None


class BarsRequest(BaseModel):
    """Rows (``bars``: one object per bar) or columns (``windows``: one per instrument, bar_columns.py)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    bars: list[Bar] | None = None
    windows: list[BarWindow] | None = None
    return_features: bool = False  # echo the computed features (parity checks, debugging)

    @model_validator(mode="after")
    def _one_form(self) -> BarsRequest:
        if (self.bars is None) == (self.windows is None):
            raise ValueError("send either bars (one object per bar) or windows (columns per instrument)")
        return self


class FeatureSetError(Exception):
    """The model's recorded feature set cannot be served exactly: bars-in answers 409 with this."""


@dataclass(frozen=True)
class FeatureSet:
    """What the server computes for a model: resolved and checked once, when the model loads."""

    params: FeatureParams
    params_hash: str
    interval: pd.Timedelta
    names: tuple[str, ...]  # feature_names(params), the store's column order
    bars_required: int  # warmup_bars + 1


def resolve_feature_set(
    metadata: Any, columns: Sequence[str] | None, expected: Mapping[str, Any] | None = None
) -> FeatureSet:
    """The model's recorded feature set, checked; a FeatureSetError says what disagrees.

    ``expected``: params this deployment was configured with (``FEATURE_PARAMS``); each must equal
    the model's. A param the model does not record is accepted only at the server's default (a
    param added to the code after the model was trained, e.g. ``families``).
    """
    record = metadata.get(FEATURE_SET_KEY) if isinstance(metadata, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        raise FeatureSetError(
            "the model records no feature params (metadata.feature_set; trained before they were "
            "recorded): bars-in cannot know which features to compute; retrain, or send feature vectors"
        )
    recorded = record["params"]
    if params_hash(recorded) != record.get("params_hash"):
        raise FeatureSetError(
            f"the model's recorded feature params hash to {params_hash(recorded)[:12]}…, not to the "
            f"recorded params_hash {str(record.get('params_hash'))[:12]}…: the metadata was altered"
        )
    served = _merge(recorded, expected or {})
    try:
        params = FeatureParams.model_validate(served)
    except ValidationError as exc:
        raise FeatureSetError(f"the feature params cannot be used by this server: {exc}") from exc
    dump = params.model_dump(mode="json")
    defaults = FeatureParams().model_dump(mode="json")
    # a param unknown to the model counts as recorded at the server's default
    comparable = {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}
    differ = params_diff(comparable, dump)
    if differ:
        detail = ", ".join(f"{n} (model {_at(comparable, n)!r}, server {_at(dump, n)!r})" for n in differ)
        raise FeatureSetError(
            f"feature params differ from those the model was trained on: {detail}; the model's "
            f"params_hash is {record['params_hash'][:12]}…, the server's {params_hash(dump)[:12]}…"
        )
    interval_text = record.get("interval")
    try:
        interval = pd.Timedelta(pd.tseries.frequencies.to_offset(interval_text))
    except (TypeError, ValueError) as exc:
        raise FeatureSetError(f"the model records no usable bar interval ({interval_text!r})") from exc
    recorded_fp = record.get("fingerprint")
    if recorded_fp and fingerprint(params, str(interval_text)) != recorded_fp:
        raise FeatureSetError(
            "the server's feature code differs from the store's that the model was trained on (same "
            f"params, fingerprint {fingerprint(params, str(interval_text))[:12]}… ≠ the model's "
            f"{recorded_fp[:12]}…: feature definitions or CODE_VERSION changed); retrain on a rebuilt store"
        )
    names = tuple(feature_names(params))
    if columns is not None and set(columns) != set(names):
        missing, extra = sorted(set(columns) - set(names)), sorted(set(names) - set(columns))
        raise FeatureSetError(
            f"the model's inputs are not the features of its recorded params (model-only: {missing[:10]}, "
            f"params-only: {extra[:10]})"
        )
    return FeatureSet(params, record["params_hash"], interval, names, warmup_bars(params) + 1)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _at(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


@dataclass(frozen=True)
class Window:
    """One instrument's bars from a request, as arrays in request order."""

    broker: str
    symbol: str
    index: Sequence[int]  # positions in the request's ``bars`` list (rows) or in the window (columns)
    stamps_us: np.ndarray  # int64 µs since the epoch (UTC)
    values: dict[str, np.ndarray]  # open, high, low, close, volume, spread (NaN: none given)
    window: int | None = None  # the position in ``windows`` (columns form); None for rows

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"

    def loc(self, k: int) -> str:
        """Where the k-th bar of this window is in the request, for messages."""
        if self.window is None:
            return f"bars[{self.index[k]}]"
        return f"windows[{self.window}] bar {self.index[k]}"


@dataclass(frozen=True)
class NewestBar:
    """What the signal is for, shaped like a /predict instance for the shared response and scoring."""

    broker: str
    symbol: str
    timestamp: datetime
    close: float


def parse_bars(body: bytes) -> BarsRequest:
    """Body → validated bars (types, zones, brokers), or a 422 naming the field."""
    if not body.strip():
        raise RequestError(422, 'empty body: send {"bars": [{timestamp, broker, symbol, open, ...}, ...]}')
    try:
        return BarsRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = _errors(exc)
        raise RequestError(422, f"invalid bars request: {_summary(errors)}", errors) from exc


def columns(windows: Sequence[BarWindow]) -> list[Window]:
    """The columns form's windows as arrays; an instrument may have one window only."""
    out: list[Window] = []
    seen: dict[str, int] = {}
    for w, window in enumerate(windows):
        where = f"windows[{w}]"
        if window.key in seen:
            raise RequestError(
                422,
                f"{where}: {window.key} already has windows[{seen[window.key]}] (one window per instrument)",
                [{"loc": where, "instrument": window.key}],
            )
        seen[window.key] = w
        stamps, values = window_arrays(window, where)
        out.append(Window(window.broker, window.symbol, range(len(stamps)), stamps, values, window=w))
    return out


def group(bars: Sequence[Bar]) -> list[Window]:
    """Bars per instrument, in request order (sorting would hide the out-of-order rule)."""
    rows: dict[tuple[str, str], list[int]] = {}
    for i, bar in enumerate(bars):
        rows.setdefault((bar.broker, bar.symbol), []).append(i)
    out = []
    for (broker, symbol), index in rows.items():
        chosen = [bars[i] for i in index]
        stamps = np.array([(b.timestamp - _EPOCH) // _US for b in chosen], dtype=np.int64)
        values = {
            "open": np.array([b.open for b in chosen], dtype=np.float64),
            "high": np.array([b.high for b in chosen], dtype=np.float64),
            "low": np.array([b.low for b in chosen], dtype=np.float64),
            "close": np.array([b.close for b in chosen], dtype=np.float64),
            "volume": np.array([b.volume for b in chosen], dtype=np.float64),
            "spread": np.array([np.nan if b.spread is None else b.spread for b in chosen], dtype=np.float64),
        }
        out.append(Window(broker, symbol, index, stamps, values))
    return out


def _refuse(window: Window, k: int, rule: str, what: str) -> RequestError:
    stamp = iso_utc(_EPOCH + timedelta(microseconds=int(window.stamps_us[k])))
    return RequestError(
        422,
        f"{window.loc(k)} ({window.key} {stamp}) breaks rule {rule}: {what}",
        [{"loc": window.loc(k), "rule": rule, "instrument": window.key, "timestamp": stamp}],
    )


def check_window(
    window: Window, need: int, interval: pd.Timedelta, now: datetime, skew_s: float, rules: ValidateParams
) -> None:
    """The store's validation rules on one instrument's bars; a 422 naming the first broken rule.

    Same rule names as ``autotrader.validation.rules``. ``not_future``: a bar is known at its close
    (open + interval), so one that closes after the server's clock (+ the allowed skew) is refused —
    the store never holds a bar still open, and its features would differ once it closes.
    """
    ts, v = window.stamps_us, window.values
    n = len(ts)
    step = np.diff(ts)
    if (step < 0).any():
        k = int(np.argmax(step < 0)) + 1
        raise _refuse(
            window, k, "increasing_timestamps", "older than the bar before it (send bars oldest first)"
        )
    if (step == 0).any():
        k = int(np.argmax(step == 0)) + 1
        raise _refuse(
            window, k, "unique_timestamps", "the same timestamp as the bar before it (duplicate bar)"
        )
    for col in ("open", "high", "low", "close", "volume", "spread"):
        bad = np.isinf(v[col]) if col == "spread" else ~np.isfinite(v[col])
        if bad.any():
            k = int(np.argmax(bad))
            raise _refuse(window, k, "finite_values", f"{col} is {v[col][k]!r}, not a finite number")
    for col in ("open", "high", "low", "close"):
        if (v[col] <= 0).any():
            k = int(np.argmax(v[col] <= 0))
            raise _refuse(window, k, f"positive_{col}", f"{col} {v[col][k]!r} ≤ 0 (prices are positive)")
    if (v["high"] < v["low"]).any():
        k = int(np.argmax(v["high"] < v["low"]))
        raise _refuse(window, k, "high_ge_low", f"high {v['high'][k]!r} < low {v['low'][k]!r}")
    for col in ("volume", "spread"):
        if (v[col] < 0).any():
            k = int(np.argmax(v[col] < 0))
            raise _refuse(window, k, f"non_negative_{col}", f"{col} {v[col][k]!r} < 0")
    closes_us = int(ts[-1]) + interval // pd.Timedelta(microseconds=1)
    limit_us = (now - _EPOCH) // _US + int(skew_s * 1e6)
    if closes_us > limit_us:
        ahead = (closes_us - (now - _EPOCH) // _US) / 1e6
        raise _refuse(
            window,
            n - 1,
            "not_future",
            f"the bar closes {ahead:.0f} s after the server clock ({iso_utc(now)}; at most {skew_s:g} s "
            "of clock skew): a future-dated or still-open bar",
        )
    frozen = rules.frozen_bars.of(profile(window.broker).asset_class)
    if frozen and n >= frozen:
        prices = np.stack([v["open"], v["high"], v["low"], v["close"]], axis=1)
        same = np.r_[False, (prices[1:] == prices[:-1]).all(axis=1)]
        run_id = np.cumsum(~same)
        sizes = np.bincount(run_id)
        if sizes.max() >= frozen:
            k = int(np.argmax(sizes[run_id] >= frozen)) + frozen - 1
            raise _refuse(
                window,
                k,
                "frozen_ohlc",
                f"{frozen} bars in a row with identical open/high/low/close (a frozen feed)",
            )
    if n < need:
        raise RequestError(
            422,
            f"{window.key}: {n} bar(s) sent; the model's features need {need} per instrument (the newest "
            f"bar + {need - 1} bars of warm-up, oldest first; GET /readyz says bars.bars_required)",
            [{"loc": "bars", "instrument": window.key, "bars_required": need, "bars_sent": n}],
        )


def features_of(window: Window, fs: FeatureSet) -> np.ndarray:
    """The newest bar's features, in ``fs.names`` order: the store's row, bit for bit.

    ``compute_last_row`` does the store's arithmetic for the newest row only (~0.3 ms of CPU
    instead of ~1.6 ms for ``compute_feature_arrays`` over the whole window, then its last row);
    tests/test_features_lastrow.py holds it equal to the full path bit for bit.
    """
    start = len(window.stamps_us) - fs.bars_required
    v = window.values
    arrays = BarArrays(
        *(np.ascontiguousarray(v[c][start:]) for c in ("open", "high", "low", "close", "volume", "spread"))
    )
    row = compute_last_row(arrays, fs.params)
    return np.array([row[name] for name in fs.names], dtype=np.float64)


class BarsService:
    """The /predict/bars pipeline without HTTP; shares the /predict service's model, metrics and scorer."""

    def __init__(
        self, service: Any, expected: Mapping[str, Any] | None, rules: ValidateParams | None = None
    ) -> None:
        self.service = service  # app.PredictionService: config, loader, metrics, scorer, _respond
        self.expected = expected
        self.rules = rules or ValidateParams()
        self._lock = threading.Lock()
        self._resolved: tuple[int, FeatureSet | None, str | None] | None = None

    def feature_set(self, model: LoadedModel) -> tuple[FeatureSet | None, str | None]:
        """(feature set, None) or (None, why bars-in is refused); resolved once per loaded model."""
        with self._lock:
            if self._resolved is None or self._resolved[0] != id(model):
                metadata = getattr(model.pyfunc.metadata, "metadata", None)
                try:
                    fs, reason = resolve_feature_set(metadata, model.columns, self.expected), None
                except FeatureSetError as exc:
                    fs, reason = None, str(exc)
                self._resolved = (id(model), fs, reason)
            return self._resolved[1], self._resolved[2]

    def status(self) -> dict[str, Any] | None:
        """The ``bars`` part of ``/readyz``."""
        model = self.service.loader.state.model
        if model is None:
            return None
        fs, reason = self.feature_set(model)
        if fs is None:
            return {"ready": False, "reason": reason}
        return {
            "ready": True,
            "bars_required": fs.bars_required,
            "interval": pd.tseries.frequencies.to_offset(fs.interval).freqstr,
            "feature_params_hash": fs.params_hash,
        }

    def handle(self, body: bytes) -> tuple[int, dict[str, Any]]:
        service = self.service
        model = service.loader.state.model
        if model is None:
            return 503, {"detail": f"model not ready: {service.loader.state.reason}"}
        fs, reason = self.feature_set(model)
        if fs is None:
            return 409, {"detail": f"bars-in is unavailable for this model: {reason}"}
        try:
            request = parse_bars(body)
            windows = self._checked(request, fs)
            matrix = np.stack([features_of(w, fs) for w in windows])
            newest = [self._newest(w) for w in windows]
            inputs = self._inputs(model, fs, matrix, newest)
        except RequestError as exc:
            return exc.status, exc.body()
        status, payload = service.predict_inputs(model, newest, inputs)
        if status == 200:
            payload["bars_required"] = fs.bars_required
            if request.return_features:
                for pred, row in zip(payload["predictions"], matrix.tolist(), strict=True):
                    pred["features"] = {
                        n: (None if x != x else x) for n, x in zip(fs.names, row, strict=True)
                    }
        return status, payload

    def _checked(self, request: BarsRequest, fs: FeatureSet) -> list[Window]:
        if request.windows is not None:
            if not request.windows:
                raise RequestError(422, "windows is empty: send each instrument's newest bar and its warm-up")
            windows = columns(request.windows)
        else:
            if not request.bars:
                raise RequestError(422, "bars is empty: send each instrument's newest bar and its warm-up")
            windows = group(request.bars)
        if len(windows) > MAX_INSTRUMENTS:
            raise RequestError(
                413, f"{len(windows)} instruments exceed the limit of {MAX_INSTRUMENTS} per request"
            )
        now = datetime.now(UTC)
        config = self.service.config
        for w in windows:
            if len(w.stamps_us) > MAX_BARS_FACTOR * fs.bars_required:
                raise RequestError(
                    413,
                    f"{w.key}: {len(w.stamps_us)} bars exceed the limit of {MAX_BARS_FACTOR * fs.bars_required} "
                    f"per instrument (the features need {fs.bars_required})",
                )
            check_window(w, fs.bars_required, fs.interval, now, config.max_clock_skew_s, self.rules)
        return windows

    @staticmethod
    def _newest(w: Window) -> NewestBar:
        stamp = _EPOCH + timedelta(microseconds=int(w.stamps_us[-1]))
        return NewestBar(w.broker, w.symbol, stamp, float(w.values["close"][-1]))

    @staticmethod
    def _inputs(model: LoadedModel, fs: FeatureSet, matrix: np.ndarray, newest: list[NewestBar]) -> Any:
        """Features (store order) → the model's input, as ``LoadedModel.frame`` builds it for vectors."""
        order = model.order or model.columns or fs.names
        position = {n: j for j, n in enumerate(fs.names)}
        x = matrix[:, [position[n] for n in order]]
        if model.bounds is not None:
            model.bounds.check(x, newest)  # a 422 naming the feature, like /predict
        if model.estimator is not None:
            return x
        frame = pd.DataFrame(x, columns=list(order), copy=False)
        return frame.astype(model.dtypes) if model.dtypes else frame
