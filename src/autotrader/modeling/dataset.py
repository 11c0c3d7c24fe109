"""The ``prepare`` step: read the feature store over the training window, label, split.

Reads ``[data.end − train.lookback_days, data.end)`` from the store, labels every row
(``labels.label_frame``), drops rows whose label window runs past the data, and cuts
train / valid / test by time with a purge and an embargo (``splits``). Writes nothing itself: the
stage writes what this returns, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotrader import calendars
from autotrader.errors import ModelError
from autotrader.jsonfiles import read_json
from autotrader.modeling import CLASSES, KEYS
from autotrader.modeling.labels import BAR_RETURN, FWD_RETURN, LABEL, LABEL_END, label_frame
from autotrader.modeling.splits import Boundaries, split_train_valid_test
from autotrader.modeling.train import check_labels
from autotrader.modeling.walkforward import Window, windows
from autotrader.params import Params
from autotrader.store import feature_columns, load_features, read_metadata

SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLITS_FILE = "splits.json"
BASE_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "broker",
    "symbol",
    "open",
    "close",
    "spread",
    BAR_RETURN,
    FWD_RETURN,
    LABEL_END,
    LABEL,
)
# A market may open up to this long after the window start and still count as covered (holidays).
COVERAGE_SLACK = pd.Timedelta(days=1)


@dataclass
class Prepared:
    parts: dict[str, pd.DataFrame]
    info: dict[str, Any]


def check_coverage(meta: dict[str, Any], start: pd.Timestamp, root: str, lookback_days: int) -> None:
    """The store must reach back to the first bar each market should print after ``start``."""
    interval = pd.Timedelta(pd.tseries.frequencies.to_offset(meta.get("interval", "5min")))
    spans = meta.get("time_range", {}).get("per_instrument", {})
    short = []
    for inst, span in sorted(spans.items()):
        broker = inst.split("/", 1)[0]
        try:
            expected = calendars.bar_index(broker, start, start + pd.Timedelta(days=10), interval)
        except ValueError:
            continue
        first = pd.Timestamp(span["start"])
        if len(expected) and first > expected[0] + COVERAGE_SLACK:
            short.append(f"{inst} starts {first.isoformat()}")
    if short:
        raise ModelError(
            f"train.lookback_days={lookback_days} reaches back to {start.isoformat()} but the feature store "
            f"{root} does not: {'; '.join(short)}. Lower train.lookback_days or raise data.lookback_days"
        )


def label_and_split(
    frame: pd.DataFrame,
    params: Params,
    features: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    where: str,
) -> tuple[dict[str, pd.DataFrame], Boundaries]:
    """Label the window's rows and cut them into train / valid / test (purged, embargoed)."""
    train = params.train
    labelled = label_frame(frame, train.horizon, train.cost_threshold_bps)
    if labelled.empty:
        raise ModelError(
            f"{where}: no row has a complete label window of train.horizon={train.horizon} bars in "
            f"[{start.isoformat()}, {end.isoformat()})"
        )
    labelled = labelled.loc[:, [*BASE_COLUMNS, *features]]
    labelled[features] = labelled[features].astype("float64")
    return split_train_valid_test(
        labelled,
        start=start,
        end=end,
        test_days=train.test_days * train.oos_windows,
        validation_fraction=train.validation_fraction,
        embargo=train.embargo,
    )


def prepare(params: Params, root: str | None = None) -> Prepared:
    """Labelled, split rows for training and testing, plus a JSON-able description of the cut."""
    root = root or params.paths.features
    train = params.train
    end = params.data.end_ts()
    start = end - pd.Timedelta(days=train.lookback_days)
    meta = read_metadata(root)
    features = feature_columns(root)
    frame = load_features(start, end, root=root)
    if frame.empty:
        raise ModelError(
            f"{root}: no feature rows in the training window [{start.isoformat()}, {end.isoformat()}) "
            f"(data.end={params.data.end}, train.lookback_days={train.lookback_days})"
        )
    check_coverage(meta, start, root, train.lookback_days)
    parts, bounds = label_and_split(frame, params, features, start, end, where=root)
    for name in SPLITS:
        if parts[name].empty:
            raise ModelError(
                f"the {name} split is empty after purge and embargo (window {start.date()}…{end.date()}, "
                f"test_days={train.test_days}, horizon={train.horizon}, embargo={train.embargo})"
            )
    check_labels(parts["train"][LABEL], f"the train split of {root} [{start.date()}, {bounds.valid_start})")

    def describe(part: pd.DataFrame) -> dict[str, Any]:
        counts = part[LABEL].value_counts()
        return {
            "rows": len(part),
            "first": part["timestamp"].min().isoformat(),
            "last": part["timestamp"].max().isoformat(),
            "last_label_end": part[LABEL_END].max().isoformat(),
            "classes": {str(c): int(counts.get(c, 0)) for c in CLASSES},
            "instruments": {f"{b}/{s}": int(n) for (b, s), n in part.groupby(list(KEYS)).size().items()},
        }

    info = {
        "boundaries": bounds.as_dict(),
        "oos_windows": oos_windows(bounds, params),
        "horizon": train.horizon,
        "cost_threshold_bps": train.cost_threshold_bps,
        "embargo": train.embargo,
        "interval": meta.get("interval"),
        "features": features,
        "feature_set_version": meta.get("feature_set_version"),
        # what the server needs to compute the same features from bars (features/contract.py)
        "feature_params": meta.get("feature_params"),
        "feature_fingerprint": meta.get("fingerprint"),
        "warmup_bars": meta.get("warmup_bars"),
        "store_source_hash": meta.get("source_hash"),
        "splits": {name: describe(parts[name]) for name in SPLITS},
    }
    return Prepared(parts=parts, info=info)


def read_prepared(folder: str | Path, names: tuple[str, ...] = SPLITS) -> Prepared:
    """Load what ``prepare`` wrote; a ModelError names the missing or unreadable file."""
    folder = Path(folder)
    info_path = folder / SPLITS_FILE
    info = read_json(info_path, ModelError, "run the prepare stage first")
    parts = {}
    for name in names:
        path = folder / f"{name}.parquet"
        try:
            parts[name] = pd.read_parquet(path)
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: not found (run the prepare stage first)") from exc
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ModelError(f"{path}: not a readable Parquet file ({exc})") from exc
        missing = [c for c in (*BASE_COLUMNS, *info.get("features", [])) if c not in parts[name].columns]
        if missing:
            raise ModelError(f"{path}: missing column(s) {', '.join(missing)}")
    return Prepared(parts=parts, info=info)


def class_balance(labels: pd.Series | np.ndarray) -> dict[str, float]:
    values = np.asarray(labels)
    return {str(c): float((values == c).mean()) if len(values) else 0.0 for c in CLASSES}


def features_in_memory(bars: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Bars of any instruments → bars + features, as the store would hold them (for benchmarks and tests).

    The same ``autotrader.features.compute_features`` the store uses, per instrument in time order,
    without writing a store.
    """
    from autotrader.features import compute_features

    frames = [
        compute_features(part.sort_values("timestamp").reset_index(drop=True), params.features)
        for _, part in bars.groupby(list(KEYS), sort=True)
    ]
    return pd.concat(frames, ignore_index=True) if frames else bars.iloc[0:0]


def prepare_frame(frame: pd.DataFrame, params: Params, features: list[str]) -> Prepared:
    """``prepare`` on an in-memory bars+features frame (no store): window, label, split."""
    end = params.data.end_ts()
    start = end - pd.Timedelta(days=params.train.lookback_days)
    window = frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)]
    parts, bounds = label_and_split(window, params, features, start, end, where="the in-memory frame")
    info = {
        "boundaries": bounds.as_dict(),
        "oos_windows": oos_windows(bounds, params),
        "features": list(features),
    }
    return Prepared(parts=parts, info=info)


def oos_windows(bounds: Boundaries, params: Params) -> list[dict[str, str]]:
    """The walk-forward test windows (``train.oos_windows`` × ``train.test_days``) as ISO strings."""
    return [w.as_dict() for w in windows(bounds.test_start, bounds.end, params.train.oos_windows)]


def window_spans(info: dict[str, Any]) -> list[Window]:
    """The walk-forward windows recorded in splits.json (one window = the whole test split if absent)."""
    spans = info.get("oos_windows")
    if not spans:
        b = info["boundaries"]
        return [Window(pd.Timestamp(b["test_start"]), pd.Timestamp(b["end"]))]
    return [Window(pd.Timestamp(w["start"]), pd.Timestamp(w["end"])) for w in spans]
