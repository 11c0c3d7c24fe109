"""What is sent to a model: replayed store bars, the training run's recorded bars, synthetic and golden inputs.

``check_golden`` predicts the golden inputs twice in process (deterministic, and equal to recorded
outputs when a golden file is given).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotrader.errors import DeployError
from autotrader.jsonfiles import read_json
from autotrader.serving.deploy_checks.candidate import Candidate, Check
from autotrader.serving.model import (
    FeatureBounds,
    LoadedModel,
    ModelOutputError,
)
from autotrader.serving.schemas import (
    MAX_BATCH,
    RequestError,
    iso_utc,
    parse_request,
)


def _instance(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    values = {}
    for c in columns:
        v = row[c]
        values[c] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return {
        "broker": str(row["broker"]),
        "symbol": str(row["symbol"]),
        "timestamp": iso_utc(pd.Timestamp(row["timestamp"]).to_pydatetime()),
        "close": float(row["close"]),
        "features": values,
    }


def instances_from_frame(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Feature-store rows → /predict instances (JSON ``null`` for a missing feature value)."""
    return [_instance(row, columns) for row in frame.to_dict("records")]


def synthetic_instances(
    columns: Sequence[str], n: int = 32, seed: int = 0, bounds: FeatureBounds | None = None
) -> list[dict[str, Any]]:
    """Seeded features: a deterministic smoke input when there is no store to read.

    Standard normal, except that a feature whose training range the model recorded is drawn
    uniformly inside that range: the server refuses values far outside it (model.FeatureBounds).
    """
    rng = np.random.default_rng(seed)
    ranges: dict[str, tuple[float, float]] = {}
    if bounds is not None:
        for name, lo, hi in zip(bounds.names, bounds.train_lo, bounds.train_hi, strict=True):
            if np.isfinite(lo) and np.isfinite(hi):
                ranges[name] = (float(lo), float(hi))

    def draw(column: str, z: float) -> float:
        if column not in ranges:
            return float(z)
        lo, hi = ranges[column]
        return lo + (hi - lo) * float(0.5 + np.arctan(z) / np.pi)  # z → (0, 1), deterministic

    start = pd.Timestamp("2026-01-05T00:00:00Z")
    return [
        {
            "broker": "binance",
            "symbol": "BTCUSDT",
            "timestamp": iso_utc((start + pd.Timedelta(minutes=5 * i)).to_pydatetime()),
            "close": 60_000.0,
            "features": {
                c: draw(c, v) for c, v in zip(columns, rng.standard_normal(len(columns)), strict=True)
            },
        }
        for i in range(n)
    ]


def replay_slice(root: Path, bars: int) -> pd.DataFrame:
    """The last ``bars`` rows of every instrument in the store, in timestamp order across instruments."""
    from autotrader.store import load_features, read_metadata

    meta = read_metadata(root)
    end_text = (meta.get("time_range") or {}).get("end")
    if not end_text:
        raise DeployError(f"{root}: the feature store is empty; nothing to replay")
    last = pd.Timestamp(end_text)
    last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
    interval = pd.Timedelta(pd.tseries.frequencies.to_offset(meta.get("interval", "5min")))
    # The reader is point-in-time: a bar (stamped with its open) is returned once it has closed, so
    # reading up to the last bar's close returns the last bar too.
    end = last + interval
    # Enough calendar time for `bars` bars even across a weekend or a market holiday.
    span = max(interval * bars * 2, pd.Timedelta(days=1)) + pd.Timedelta(days=4)
    frame = load_features(end - span, end, root=root)
    frame = frame.groupby(["broker", "symbol"], sort=True, group_keys=False).tail(bars)
    return frame.sort_values(["timestamp", "broker", "symbol"], kind="stable").reset_index(drop=True)


def replay_from_run(candidate: Candidate, bars: int) -> pd.DataFrame:
    """The slice of bars recorded with the model's training run (``replay/bars.parquet``).

    A registered version carries its own test bars, so the staging pre-promotion Job can replay them
    against the preview pods with nothing but registry access (no feature store in that image).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from autotrader.modeling.tracking import REPLAY_ARTIFACT

    if candidate.name is None or candidate.version is None:
        raise DeployError(f"{candidate.given}: no feature store to replay from, and not a registry model")
    from autotrader import registry

    run_id = registry.get_version(candidate.name, candidate.version).run_id
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REPLAY_ARTIFACT, tracking_uri=candidate.tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise DeployError(
            f"{candidate.uri}: no feature store here and run {run_id} has no {REPLAY_ARTIFACT}: {exc}"
        ) from exc
    frame = pd.read_parquet(local)
    frame = frame.groupby(["broker", "symbol"], sort=True, group_keys=False).tail(bars)
    return frame.sort_values(["timestamp", "broker", "symbol"], kind="stable").reset_index(drop=True)


def golden_instances(
    model: LoadedModel, features_root: Path | None, per_instrument: int = 8
) -> list[dict[str, Any]]:
    """Inputs for the smoke prediction: the store's last rows when there is a store, else synthetic."""
    columns = list(model.columns or [])
    if features_root is not None and (features_root / "_metadata.json").is_file():
        frame = replay_slice(features_root, per_instrument)
        if set(columns) <= set(frame.columns):
            return instances_from_frame(frame, columns)
    return synthetic_instances(columns, bounds=model.bounds)


def predict_instances(model: LoadedModel, instances: list[dict[str, Any]]) -> list[int]:
    """Through the same validation as the server, then the model: one signal per instance."""
    body = json.dumps({"instances": instances}).encode()
    parsed = parse_request(body, max_batch=max(MAX_BATCH, len(instances)))
    return model.predict(model.frame(parsed)).tolist()


def read_golden(path: Path) -> dict[str, Any]:
    golden = read_json(path, DeployError, "the golden file; record one with --write-golden")
    if (
        not isinstance(golden, dict)
        or not isinstance(golden.get("instances"), list)
        or not golden["instances"]
    ):
        raise DeployError(f"{path}: golden file needs a non-empty 'instances' list")
    predictions = golden.get("predictions")
    if predictions is not None and (
        not isinstance(predictions, list) or len(predictions) != len(golden["instances"])
    ):
        raise DeployError(f"{path}: 'predictions' must list one signal per instance")
    return golden


def check_golden(
    model: LoadedModel, instances: list[dict[str, Any]], expected: list[int] | None
) -> tuple[list[Check], list[int] | None]:
    """Predict the golden inputs twice: valid, deterministic, and equal to ``expected`` when given."""
    checks: list[Check] = []
    try:
        first = predict_instances(model, instances)
        second = predict_instances(model, instances)
    except RequestError as exc:
        return [Check("golden inputs are valid requests", False, exc.reason, True)], None
    except ModelOutputError as exc:
        return [Check("golden predictions", False, str(exc), True)], None
    except Exception as exc:  # the model's own failure on valid input
        return [Check("golden predictions", False, f"model failed: {type(exc).__name__}: {exc}", True)], None
    checks.append(Check("golden inputs are valid requests", True, f"{len(instances)} instances"))
    same = first == second
    checks.append(
        Check("deterministic", same, "same predictions twice" if same else "two runs disagree", True)
    )
    if expected is not None:
        diff = [i for i, (a, b) in enumerate(zip(first, expected, strict=True)) if a != b]
        detail = (
            f"all {len(expected)} equal the recorded outputs"
            if not diff
            else f"{len(diff)} of {len(expected)} differ from the recorded outputs (first at index {diff[0]}: "
            f"got {first[diff[0]]}, recorded {expected[diff[0]]})"
        )
        checks.append(Check("golden outputs", not diff, detail, True))
    return checks, first
