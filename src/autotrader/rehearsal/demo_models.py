"""Small MLflow pyfunc models for the analysis rehearsal: one good, and three that must be caught.

All four trade the same causal momentum rule on two of the feature store's features (``ret_1``, the
last bar's log return, and ``ret_3``, the last three bars'). Their inputs are the store's whole default
feature set and their MLmodel metadata records it (``feature_set``: params, hash, bar interval, code
fingerprint, warm-up), exactly as a trained model records it, so the server can serve them through
bars-in (``POST /predict/bars``: it computes the features from raw bars) as well as through feature
vectors. On the simulated market with signal the rule makes money; the others break it in the three
ways a canary analysis watches:

- ``losing``: the good rule's signals negated (same traffic, same latency, loses money);
- ``slow``: the good rule after a ~300 ms sleep per request (p99 latency);
- ``erroring``: the good rule, but every ``error_every``-th call raises (HTTP 500s).

The classes live in the library (not a test) so the server process can unpickle them by reference.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a runtime dependency
    PythonModel = object  # type: ignore[assignment,misc]

INTERVAL = "5min"  # the rehearsal market's bars (``rehearsal.traffic``)
KINDS: tuple[str, ...] = ("good", "losing", "slow", "erroring")


class MomentumModel(PythonModel):  # type: ignore[misc]
    """long when recent returns are up, short when down, flat on a tie: ``sign(ret_1 + ret_3 / 3)``."""

    def __init__(self, kind: str = "good", delay_s: float = 0.3, error_every: int = 5) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown demo model kind {kind!r}; choose one of {KINDS}")
        self.kind = kind
        self.delay_s = delay_s
        self.error_every = error_every
        self._calls = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        score = model_input["ret_1"].to_numpy(dtype=float) + model_input["ret_3"].to_numpy(dtype=float) / 3.0
        signals = np.sign(score).astype(np.int64)
        if self.kind == "losing":
            return -signals
        if self.kind == "slow":
            time.sleep(self.delay_s)
        elif self.kind == "erroring":
            with self._lock:
                self._calls += 1
                calls = self._calls
            if calls % self.error_every == 0:
                raise RuntimeError(f"demo model failure on call {calls} (one in {self.error_every})")
        return signals


def feature_names() -> tuple[str, ...]:
    """The demo models' inputs: the store's default feature set, in the store's column order."""
    from autotrader.features import feature_names as names
    from autotrader.params import FeatureParams

    return tuple(names(FeatureParams()))


def feature_set() -> dict[str, Any]:
    """The MLmodel ``feature_set`` record a model trained on a default store at 5-minute bars carries."""
    from autotrader.features import fingerprint, warmup_bars
    from autotrader.features.contract import feature_set_record
    from autotrader.params import FeatureParams

    params = FeatureParams()
    record = feature_set_record(
        {
            "feature_params": params.model_dump(mode="json"),
            "interval": INTERVAL,
            "feature_fingerprint": fingerprint(params, INTERVAL),
            "warmup_bars": warmup_bars(params),
        }
    )
    assert record is not None
    return record


def signature_and_metadata() -> tuple[Any, dict[str, Any]]:
    """The signature (every default feature in, a signal out) and metadata every demo model is saved with."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({name: [0.001, -0.002, 0.0] for name in feature_names()})
    signature = infer_signature(example, np.array([1, -1, 0], dtype=np.int64))
    return signature, {"feature_set": feature_set()}


def save(kind: str, path: str | os.PathLike[str]) -> Path:
    """Save a demo model of ``kind`` as an MLflow model folder with a feature signature and feature set."""
    import mlflow

    path = Path(path)
    signature, metadata = signature_and_metadata()
    with warnings.catch_warnings():  # "no input example": the signature is given explicitly
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=MomentumModel(kind),
            signature=signature,
            metadata=metadata,
            pip_requirements=["mlflow", "numpy", "pandas"],
        )
    return path
