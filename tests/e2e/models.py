"""The registry the e2e cluster's pods load from: the rehearsal's demo models, registered as versions.

Run as ``python -m tests.e2e.models WORKDIR`` (a subprocess, so MLflow's process-global tracking URI never
leaks into other tests); prints the tracking URI. Versions, in order:

    1 good   2 good   3 erroring   4 slow   5 losing   6 erroring (staging's own)

Each version is logged through a run that also records a replay slice (``replay/bars.parquet``), exactly as
the training pipeline records one, so staging's integration Job can replay bars with registry access alone.
Versions 1 to 5 carry ``integration_passed=true`` as if staging had passed them (production promotion
requires it; the production scenarios show what the canary catches that staging missed). Version 6 is left
for the staging scenario's integration Job to judge.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

NAME = "autotrader-signal"
KINDS = ("good", "good", "erroring", "slow", "losing", "erroring")
GOOD, NEW_GOOD, ERRORING, SLOW, LOSING, STAGING_ERRORING = "1", "2", "3", "4", "5", "6"
STRENGTH = 40.0  # the rehearsal's market: the momentum rule earns money there


def replay_frame() -> pd.DataFrame:
    """48 bars of two instruments with the store's features, as the pipeline's replay slice."""
    from autotrader.params import Instrument
    from autotrader.rehearsal.traffic import _feed
    from autotrader.sources.sim import SimulatedMarket

    market = SimulatedMarket(seed=11, signal_strength=STRENGTH)
    frames = []
    for inst in (
        Instrument(broker="binance", symbol="ETHUSDT"),
        Instrument(broker="oanda", symbol="GBP_USD"),
    ):
        feed = _feed(market, inst, pd.Timestamp("2025-03-03", tz="UTC"), 3)
        frame = feed.frame.iloc[feed.warmup : feed.warmup + 48].assign(broker=inst.broker, symbol=inst.symbol)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frames.append(frame[["timestamp", "broker", "symbol", "close", *feed.features]])
    return pd.concat(frames).sort_values(["timestamp", "broker", "symbol"]).reset_index(drop=True)


def build(workdir: Path) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    from autotrader.modeling.tracking import log_replay_rows
    from autotrader.rehearsal.demo_models import MomentumModel, signature_and_metadata

    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("e2e", artifact_location=(workdir / "artifacts").as_uri())
    signature, metadata = signature_and_metadata()  # the store's features in, recorded feature set
    replay = replay_frame()
    for version, kind in enumerate(KINDS, start=1):
        with mlflow.start_run(experiment_id=experiment, run_name=f"demo-{kind}"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=MomentumModel(kind),
                signature=signature,
                metadata=metadata,
                registered_model_name=NAME,
                pip_requirements=["mlflow", "numpy", "pandas"],
            )
            log_replay_rows(replay)
        assert str(info.registered_model_version) == str(version)
        client.set_model_version_tag(NAME, str(version), "demo_kind", kind)
        if str(version) != STAGING_ERRORING:
            client.set_model_version_tag(NAME, str(version), "integration_passed", "true")
    return uri


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
