"""Time-ordered splits with a purge and an embargo, for the train/valid/test cut and for CV.

A sample at bar ``t`` is labelled with what happens over ``[t, t+h]`` (its *label window*,
``label_end`` = the timestamp of bar ``t+h``). Two samples whose label windows overlap share
information, so a training sample may never have a label window that reaches into a later split
(the **purge**); and because features are rolling windows that also reach across a boundary, a
further ``embargo`` bars are left out between the two (the **embargo**). Bars are counted on the
*timestamp grid* of all instruments together (multi-instrument data are grouped by timestamp), so
every instrument is cut at the same instant.

Between two adjacent splits A (earlier) and B (later) the gap is taken from A: B keeps every sample
from its first timestamp on, A keeps a sample only if its label window ends before the embargo zone
that precedes B. So the test window is exactly the last ``test_days``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autotrader.errors import ModelError
from autotrader.modeling.labels import LABEL_END


def _ns(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC), for fast comparisons."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return values
    index = pd.DatetimeIndex(values)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.asi8


def time_grid(timestamps: pd.Series | np.ndarray) -> np.ndarray:
    """Sorted unique timestamps (int64 ns): the bar clock all instruments share."""
    return np.unique(_ns(timestamps))


def embargo_start(grid: np.ndarray, boundary: int, embargo: int) -> int:
    """The grid timestamp ``embargo`` bars before ``boundary`` (``boundary`` itself when embargo is 0)."""
    pos = int(np.searchsorted(grid, boundary, side="left"))
    if embargo <= 0:
        return boundary
    return int(grid[pos - embargo]) if pos - embargo >= 0 else int(grid[0]) - 1


def keep_before(
    ts: np.ndarray, label_end: np.ndarray, boundary: int, grid: np.ndarray, embargo: int
) -> np.ndarray:
    """Mask of samples that may train for a split starting at ``boundary``: purged and embargoed."""
    cutoff = embargo_start(grid, boundary, embargo)
    return (ts < boundary) & (label_end < cutoff)


@dataclass(frozen=True)
class Boundaries:
    """Where the train/valid/test splits start (UTC) and the window they came from."""

    start: pd.Timestamp
    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}


def split_train_valid_test(
    frame: pd.DataFrame,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    test_days: int,
    validation_fraction: float,
    embargo: int,
) -> tuple[dict[str, pd.DataFrame], Boundaries]:
    """Cut labelled rows into train / valid / test by time.

    Test = the last ``test_days`` before ``end``. Valid = the last ``validation_fraction`` of the
    remaining timestamp grid. Train = what is before. Each earlier split is purged and embargoed
    against the next one (see the module docstring).
    """
    test_start = end - pd.Timedelta(days=test_days)
    if test_start <= start:
        raise ModelError(
            f"train.test_days={test_days} leaves no room for training in the window "
            f"[{start.isoformat()}, {end.isoformat()}); raise train.lookback_days or lower train.test_days"
        )
    ts = _ns(frame["timestamp"])
    label_end = _ns(frame[LABEL_END])
    grid = time_grid(ts)
    t_test = int(_ns(pd.DatetimeIndex([test_start]))[0])
    pre = grid[grid < t_test]
    if len(pre) < 2:
        raise ModelError(
            f"no bars before the test window start {test_start.isoformat()} in the feature store; "
            "raise train.lookback_days or lower train.test_days"
        )
    t_valid = int(pre[min(len(pre) - 1, int(np.floor(len(pre) * (1 - validation_fraction))))])
    masks = {
        "train": keep_before(ts, label_end, t_valid, grid, embargo),
        "valid": (ts >= t_valid) & keep_before(ts, label_end, t_test, grid, embargo),
        "test": ts >= t_test,
    }
    parts = {name: frame[mask].reset_index(drop=True) for name, mask in masks.items()}
    bounds = Boundaries(
        start=start,
        valid_start=pd.Timestamp(t_valid, tz="UTC"),
        test_start=test_start,
        end=end,
    )
    return parts, bounds


@dataclass(frozen=True)
class Fold:
    """Row positions of one CV fold, and the time span it validates on."""

    train: np.ndarray
    valid: np.ndarray
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp


def purged_folds(
    timestamps: pd.Series | np.ndarray,
    label_end: pd.Series | np.ndarray,
    n_folds: int,
    embargo: int,
    *,
    walk_forward: bool = True,
) -> list[Fold]:
    """Purged and embargoed CV folds over the shared timestamp grid.

    ``walk_forward=True`` (the default and what ``train`` uses): the grid is cut into ``n_folds + 1``
    consecutive blocks; fold ``k`` validates on block ``k`` and trains only on what comes before it,
    purged (no label window reaching into the fold) and embargoed (``embargo`` bars left out before
    it). Training never sees what follows a validation fold, a stronger guarantee than the embargo
    after it.

    ``walk_forward=False``: classic purged K-fold (López de Prado, AFML ch. 7) over ``n_folds``
    blocks; training also uses samples after the fold, minus those whose bar is inside a validation
    label window (purge) and minus ``embargo`` bars after the fold (embargo).
    """
    ts = _ns(timestamps)
    end = _ns(label_end)
    grid = time_grid(ts)
    blocks = n_folds + 1 if walk_forward else n_folds
    if len(grid) < blocks * 2:
        raise ModelError(f"{len(grid)} distinct timestamps are too few for {n_folds} CV folds")
    edges = np.linspace(0, len(grid), blocks + 1).round().astype(int)
    folds: list[Fold] = []
    for k in range(1 if walk_forward else 0, blocks):
        lo, hi = int(grid[edges[k]]), int(grid[edges[k + 1] - 1])
        in_fold = (ts >= lo) & (ts <= hi)
        train = keep_before(ts, end, lo, grid, embargo)
        if not walk_forward:
            last_label = int(end[in_fold].max())
            after_pos = int(np.searchsorted(grid, hi, side="right")) + max(embargo, 0)
            after = int(grid[after_pos]) if after_pos < len(grid) else np.iinfo(np.int64).max
            train |= (ts > last_label) & (ts >= after)
        valid_idx = np.flatnonzero(in_fold)
        train_idx = np.flatnonzero(train)
        if len(train_idx) == 0 or len(valid_idx) == 0:
            raise ModelError(
                f"CV fold {len(folds) + 1} has no {'training' if len(train_idx) == 0 else 'validation'} rows "
                f"after purge ({embargo} embargo bars); use fewer train.cv_folds or a longer window"
            )
        folds.append(
            Fold(
                train=train_idx,
                valid=valid_idx,
                valid_start=pd.Timestamp(lo, tz="UTC"),
                valid_end=pd.Timestamp(hi, tz="UTC"),
            )
        )
    return folds
