"""Shared helpers for the serving and deploy tests (no tests here).

Real models, not mocks: a small HistGradientBoosting classifier trained on the project's own
features of a few days of the simulated market, saved as an MLflow model folder; plus a few pyfunc
models that misbehave on purpose (one that raises, one that answers out of range).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import numpy as np
import pandas as pd

from autotrader.params import FeatureParams, Instrument
from autotrader.processes import ServerProcess, free_port, http_ok
from autotrader.schema import BAR_COLUMNS

BIN = Path(sys.executable).parent
END = pd.Timestamp("2026-11-20", tz="UTC")
INSTRUMENTS = (Instrument(broker="binance", symbol="BTCUSDT"), Instrument(broker="oanda", symbol="EUR_USD"))
HGB_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def pins(*packages: str) -> list[str]:
    """Explicit requirements (``pkg==installed``), as training writes them; skips MLflow's slow inference."""
    return [f"{p}=={importlib.metadata.version(p)}" for p in packages]


def simulated_features(days: int = 8, instruments: tuple[Instrument, ...] = INSTRUMENTS) -> pd.DataFrame:
    """Bars + features (the store's layout) of a few days of the simulated market, 5-minute bars."""
    from autotrader.features import compute_features
    from autotrader.sources.sim import SimulatedMarket

    market = SimulatedMarket(seed=7, signal_strength=1.0)
    start = END - pd.Timedelta(days=days)
    frames = [
        compute_features(market.fetch(inst, start, END, pd.Timedelta(minutes=5)), FeatureParams())
        for inst in instruments
    ]
    return pd.concat(frames, ignore_index=True)


def build_store(root: Path, days: int = 4, instruments: tuple[Instrument, ...] = INSTRUMENTS) -> Path:
    """A real feature store (raw partitions → ``autotrader.store.update_store``) under ``root``."""
    from autotrader import rawstore
    from autotrader.sources.sim import SimulatedMarket
    from autotrader.store import update_store

    market = SimulatedMarket(seed=7, signal_strength=1.0)
    start = END - pd.Timedelta(days=days)
    frames = [
        (inst.broker, inst.symbol, market.fetch(inst, start, END, pd.Timedelta(minutes=5)))
        for inst in instruments
    ]
    rawstore.write_extract(root / "raw", frames)
    update_store(root / "raw", root / "features", FeatureParams(), "5min", "sim", show_progress=False)
    return root / "features"


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in BAR_COLUMNS]


def train_model(dest: Path, frame: pd.DataFrame, horizon: int = 12) -> Path:
    """A small HGB signal model (ternary label: sign of the forward return) saved as an MLflow folder."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    columns = feature_columns(frame)
    parts = []
    for _, group in frame.groupby(["broker", "symbol"], sort=False):
        forward = np.log(group["close"].shift(-horizon) / group["close"])
        parts.append(group.assign(_fwd=forward))
    data = pd.concat(parts).dropna(subset=["_fwd"])
    label = np.where(data["_fwd"] > 5e-4, 1, np.where(data["_fwd"] < -5e-4, -1, 0))
    X = data[columns].astype("float64")
    with threadpool_limits(1):  # OpenMP on a busy 2-core box: 0.5 s with one thread, 18 s with two
        model = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=15, random_state=0).fit(X, label)
    mlflow.sklearn.save_model(
        model,
        str(dest),
        signature=infer_signature(X.head(50), model.predict(X.head(50))),
        skops_trusted_types=HGB_TRUSTED,
        pip_requirements=pins("mlflow", "scikit-learn", "numpy", "pandas", "skops"),
    )
    return dest


class RaisingModel(mlflow.pyfunc.PythonModel):
    """A pyfunc model that always raises: the server must answer 500, not crash."""

    def predict(self, context, model_input, params=None):
        raise RuntimeError("deliberate failure in predict")


class OutOfRangeModel(mlflow.pyfunc.PythonModel):
    """A pyfunc model that answers 7: the server must refuse to pass that on (500)."""

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), 7)


class SignModel(mlflow.pyfunc.PythonModel):
    """signal = sign(momentum): lets a test choose every signal the server gives."""

    def predict(self, context, model_input, params=None):
        return np.sign(model_input["momentum"].to_numpy()).astype(int)


class RaisesOnLiveModel(mlflow.pyfunc.PythonModel):
    """Passes the all-zeros warm-up, raises on any real input: a model that breaks under traffic."""

    def predict(self, context, model_input, params=None):
        if np.any(model_input.to_numpy() != 0):
            raise RuntimeError("deliberate failure in predict")
        return np.zeros(len(model_input), dtype=int)


CUSTOM_MODELS = {
    "raises": RaisingModel,
    "out_of_range": OutOfRangeModel,
    "sign": SignModel,
    "raises_on_live": RaisesOnLiveModel,
}


def save_custom_model(dest: Path, kind: str, columns: list[str]) -> Path:
    """Save one of the misbehaving pyfunc models with a signature on ``columns``.

    The class is pickled by value (cloudpickle), so a server process that cannot import this test
    module still loads it.
    """
    import cloudpickle
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    python_model = CUSTOM_MODELS[kind]()
    signature = ModelSignature(inputs=Schema([ColSpec("double", c) for c in columns]))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        mlflow.pyfunc.save_model(
            str(dest),
            python_model=python_model,
            signature=signature,
            pip_requirements=pins("mlflow", "numpy", "pandas", "cloudpickle"),
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return dest


def instance(row: pd.Series, columns: list[str]) -> dict[str, Any]:
    """One feature-store row → one /predict instance (null for a missing feature value)."""
    return {
        "broker": row["broker"],
        "symbol": row["symbol"],
        "timestamp": row["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "close": float(row["close"]),
        "features": {c: (None if pd.isna(row[c]) else float(row[c])) for c in columns},
    }


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    # registry.connect() in this test process sets MLFLOW_HTTP_REQUEST_* defaults (30 s, 2 retries); a server
    # inheriting them would honour them as an operator's settings and its bounded load would take minutes.
    for key in [k for k in env if k.startswith("MLFLOW_HTTP_REQUEST_")]:
        del env[key]
    env["MODEL_LOAD_ATTEMPTS"] = "1"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def serve(
    model_uri: str,
    env: dict[str, str] | None = None,
    version: str | None = None,
    log_path: Path | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``autotrader serve`` in a subprocess on a free loopback port; yields (base URL, process).

    ``log_path``: where the server's output goes (a test that reads the log); else a temporary file.
    ``args``: more ``autotrader serve`` options.
    """
    port = free_port()
    extra = {"MODEL_URI": model_uri, **(env or {})}
    if version:
        extra["MODEL_VERSION"] = version
    url = f"http://127.0.0.1:{port}"
    with ServerProcess(
        [str(BIN / "autotrader"), "serve", "--port", str(port), "--log-level", "warning", *args],
        env=server_env(extra),
        log=log_path,
        url=url,
    ) as server:
        server.wait_until(http_ok(f"{url}/healthz", timeout=1), 60)
        assert server.proc is not None
        yield url, server.proc


def wait_ready(url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    response = httpx.get(f"{url}/readyz", timeout=2)
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        response = httpx.get(f"{url}/readyz", timeout=2)
    return response
