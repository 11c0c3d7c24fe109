"""Derived tables the Great Expectations suites judge: what pandas computes so that GE can check it.

GE checks columns and rows; it cannot know a broker calendar or a robust σ. So pandas computes, fully
vectorised, a row-level ``checks`` table (the bars read leniently as UTC and numbers, the robust
return z-score, whether each bar is an expected bar of the calendar, how far it lies outside a
session, whether it sits on the interval grid or after the window, the run lengths of identical OHLC
and of zero volume while open, non-finite cells, the largest magnitude, spread / close) and a
``sessions`` table (one row per calendar session: expected vs observed bars). The verdicts still come
from GE expectations over these columns (thresholds are params, in ``rules``); nothing here decides
pass or fail. Runs are counted in time order, not file order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autotrader.calendars import bar_index, expected_bars_per_session, schedule
from autotrader.params import DataParams
from autotrader.schema import NUMERIC_COLUMNS

# The checks table's columns, split between the ``checks`` suite and the narrow ``feed`` suite. Derived
# numbers stay int64/float64: GE's between-expectation is vectorised only for those two dtypes (an int32
# or float32 column is checked value by value in Python, ~50× slower on 1M rows).
CHECK_COLUMNS: tuple[str, ...] = ("timestamp", *NUMERIC_COLUMNS, "return_z", "on_calendar")
FEED_COLUMNS: tuple[str, ...] = (
    "before_end",
    "outside_session_s",
    "on_grid",
    "non_finite",
    "magnitude",
    "spread_ratio",
    "identical_ohlc_run",
    "zero_volume_run",
)
# σ of a normal distribution from its median absolute deviation.
MAD_TO_SIGMA = 1.4826
UTC_DTYPE = "datetime64[ns, UTC]"


@dataclass(frozen=True)
class Window:
    """The clipped window [start, end) whose calendar the bars are held to."""

    start: pd.Timestamp
    end: pd.Timestamp
    interval: pd.Timedelta
    clip_to_data: bool  # data.end == "now": the newest bar ends the window (freshness is health's job)

    @classmethod
    def from_params(cls, data: DataParams) -> Window:
        return cls(data.start_ts(), data.end_ts(), data.interval_td, clip_to_data=data.end == "now")

    def end_for(self, timestamps: pd.Series) -> pd.Timestamp:
        newest = timestamps.max()
        if self.clip_to_data and pd.notna(newest):
            return min(self.end, newest + self.interval)
        return self.end


def lenient_utc(column: pd.Series | None, rows: int) -> pd.Series:
    """Timestamps read as UTC for the derived checks, NaT where they cannot be read.

    The schema suite judges the column's real dtype (naive or non-UTC fails there); here a naive
    column is read as UTC and an offset is converted, so the other families still say something useful.
    """
    if column is None:
        return pd.Series(pd.NaT, index=pd.RangeIndex(rows), dtype=UTC_DTYPE)
    column = column.reset_index(drop=True)
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        out = column.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(column.dtype):
        out = column.dt.tz_localize("UTC")
    elif pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype):
        try:
            out = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
        except (TypeError, ValueError):
            out = pd.Series(pd.NaT, index=column.index, dtype=UTC_DTYPE)
    else:  # numbers or booleans are not timestamps; the schema suite says so
        out = pd.Series(pd.NaT, index=column.index, dtype=UTC_DTYPE)
    return out.astype(UTC_DTYPE)


def lenient_number(column: pd.Series | None, rows: int) -> pd.Series:
    """A numeric column as float64, NaN where a value is not a number (the schema suite counts those)."""
    if column is None or pd.api.types.is_datetime64_any_dtype(column.dtype):
        return pd.Series(np.nan, index=pd.RangeIndex(rows), dtype="float64")
    return pd.to_numeric(column.reset_index(drop=True), errors="coerce").astype("float64")


def robust_return_z(timestamps: pd.Series, close: pd.Series) -> pd.Series:
    """|log return| / (1.4826 · MAD) per bar, in time order, aligned to the input rows.

    Robust σ (MAD, not the standard deviation) so that the spike being looked for does not inflate
    the yardstick it is measured with. Rows without a usable timestamp or a positive close get NaN,
    which GE skips; those rows fail their own rules.
    """
    rows = len(close)
    order = timestamps.reset_index(drop=True).sort_values(kind="stable", na_position="last").index
    sorted_close = close.reset_index(drop=True).to_numpy("float64")[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close = np.where(sorted_close > 0, np.log(sorted_close), np.nan)
    returns = np.full(rows, np.nan)
    if rows > 1:
        returns[1:] = np.diff(log_close)
    finite = returns[np.isfinite(returns)]
    z_sorted = np.full(rows, np.nan)
    if finite.size:
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(finite - np.median(finite))))
        if not sigma > 0:  # a (nearly) constant series: fall back to the plain standard deviation
            sigma = float(np.std(finite))
        z_sorted = np.abs(returns) / sigma if sigma > 0 else np.where(np.isfinite(returns), 0.0, np.nan)
    z = np.empty(rows)
    z[order.to_numpy()] = z_sorted
    return pd.Series(z, name="return_z")


def _member(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``values.isin(pool)`` for UTC nanosecond times by binary search in the sorted pool (NaT is never in
    it): the same booleans as pandas' hash-based isin, for a fraction of its time on 1M bars."""
    keys = np.asarray(pool, dtype="datetime64[ns]").view(np.int64)
    if not (keys.size < 2 or (keys[1:] > keys[:-1]).all()):
        keys = np.unique(keys)
    keys = keys[keys != np.iinfo(np.int64).min]  # NaT
    stamps = np.asarray(values, dtype="datetime64[ns]").view(np.int64)
    if keys.size == 0:
        return np.zeros(stamps.size, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, stamps), keys.size - 1)
    return keys[pos] == stamps


def time_order(timestamps: pd.Series) -> np.ndarray:
    """Row positions in time order (stable; rows without a time last)."""
    values = timestamps.reset_index(drop=True)
    if values.notna().all() and values.is_monotonic_increasing:
        return np.arange(len(values))
    return values.sort_values(kind="stable", na_position="last").index.to_numpy()


def _to_rows(sorted_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Values computed in time order, put back in the raw rows' order."""
    out = np.empty_like(sorted_values)
    out[order] = sorted_values
    return out


def identical_ohlc_runs(checks: pd.DataFrame, order: np.ndarray) -> np.ndarray:
    """Per row, the length of its run of consecutive bars (in time order) with identical open/high/low/close.

    A frozen feed repeats the last quote, so its bars are equal to the bar before; a NaN never equals,
    so a bar with a missing price starts a run of its own (its null is another rule's finding).
    """
    rows = len(checks)
    if rows == 0:
        return np.zeros(0, dtype=np.int64)
    prices = checks[["open", "high", "low", "close"]].to_numpy("float64")[order]
    same = np.zeros(rows, dtype=bool)
    same[1:] = (prices[1:] == prices[:-1]).all(axis=1)
    run_id = np.cumsum(~same)  # a new run wherever a bar differs from the one before
    sizes = np.bincount(run_id)
    return _to_rows(sizes[run_id], order)


def flagged_runs(flag_sorted: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per row, the length of its run of consecutive flagged bars in time order (0 if not flagged)."""
    if flag_sorted.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = flag_sorted & ~np.r_[False, flag_sorted[:-1]]
    run_id = np.cumsum(starts)
    sizes = np.bincount(run_id, weights=flag_sorted).astype(np.int64)
    return _to_rows(np.where(flag_sorted, sizes[run_id], 0), order)


def session_position(
    timestamps: pd.Series, broker: str, interval: pd.Timedelta, end: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: seconds the bar lies outside its broker's calendar sessions (0 inside), and whether it
    sits on the interval grid of the session it belongs to.

    Bars at or after ``end`` (future-dated, their own rule) and rows without a time count as inside and
    on the grid. Outside means from the close to the bar's *end* (a bar opening at the close lies a
    whole interval outside) or from the bar's open to the next session's open. The sessions are those
    around the bars themselves, not the window: with ``data.end: now`` the window moves between runs.
    The grid is anchored at the open of the last session that opened at or before the bar (the next
    one for a bar before every session), as ``calendars.bar_index`` lays out expected bars.
    """
    values = timestamps.reset_index(drop=True)
    rows = len(values)
    outside = np.zeros(rows, dtype="float64")
    on_grid = np.ones(rows, dtype=bool)
    usable = (values.notna() & (values < end)).to_numpy()
    if not usable.any():
        return outside, on_grid
    stamps = values[usable]
    margin = pd.Timedelta(days=7)  # reaches the sessions on either side of a weekend or holiday
    sched = schedule(broker, stamps.min() - margin, stamps.max() + margin).sort_values("open")
    t = stamps.to_numpy("datetime64[ns]").astype(np.int64)
    if sched.empty:
        outside[usable] = np.inf
        return outside, on_grid
    opens = sched["open"].to_numpy("datetime64[ns]").astype(np.int64)
    closes = sched["close"].to_numpy("datetime64[ns]").astype(np.int64)
    step = int(interval.value)
    last = np.searchsorted(opens, t, side="right") - 1  # the last session opened at or before t
    has_last = last >= 0
    prev = np.clip(last, 0, None)
    inside = has_last & (t < closes[prev])
    after_close = np.where(has_last, t + step - closes[prev], np.iinfo(np.int64).max)
    following = np.clip(last + 1, 0, opens.size - 1)
    before_open = np.where(last + 1 < opens.size, opens[following] - t, np.iinfo(np.int64).max)
    distance = np.where(inside, 0, np.minimum(after_close, before_open)).astype("float64") / 1e9
    anchor = np.where(has_last, opens[prev], opens[0])
    outside[usable] = distance
    on_grid[usable] = (t - anchor) % step == 0
    return outside, on_grid


def checks_table(
    frame: pd.DataFrame,
    expected: pd.DatetimeIndex,
    timestamps: pd.Series | None = None,
    *,
    broker: str | None = None,
    interval: pd.Timedelta | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Row-level table in the raw rows' order: lenient UTC timestamp, numbers, and the derived columns
    the anomaly rules judge (see the module docstring).

    ``timestamps`` is ``lenient_utc`` of the frame's column when the caller already has it. Without
    ``broker``/``interval``/``end`` the calendar-position columns say every bar is inside, on the grid
    and before the end (callers that only want the numbers and the return z).
    """
    rows = len(frame)
    if timestamps is None:
        timestamps = lenient_utc(frame.get("timestamp"), rows)
    out = pd.DataFrame({"timestamp": timestamps.reset_index(drop=True)})
    for col in NUMERIC_COLUMNS:
        out[col] = lenient_number(frame.get(col), rows)
    out["return_z"] = robust_return_z(out["timestamp"], out["close"])
    # A row without a timestamp is the null rule's finding, not this one's: it counts as on the calendar
    # here (a plain bool column, which GE filters much faster than an object column with None).
    out["on_calendar"] = (
        _member(out["timestamp"].to_numpy("datetime64[ns]"), expected.to_numpy("datetime64[ns]"))
        | out["timestamp"].isna()
    )
    if broker is not None and interval is not None and end is not None:
        out["before_end"] = (out["timestamp"] < end) | out["timestamp"].isna()
        outside, on_grid = session_position(out["timestamp"], broker, interval, end)
    else:
        out["before_end"] = True
        outside, on_grid = np.zeros(rows), np.ones(rows, dtype=bool)
    out["outside_session_s"] = outside
    out["on_grid"] = on_grid
    numbers = out[list(NUMERIC_COLUMNS)].to_numpy("float64")
    infinite = np.isinf(numbers)
    out["non_finite"] = infinite.sum(axis=1).astype(np.int64)
    magnitudes = np.where(infinite | np.isnan(numbers), 0.0, np.abs(numbers))
    out["magnitude"] = magnitudes.max(axis=1) if rows else np.zeros(0)
    close = out["close"].to_numpy("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["spread"].to_numpy("float64") / close
    out["spread_ratio"] = np.where(np.isfinite(ratio) & (close > 0), ratio, np.nan)
    order = time_order(out["timestamp"])
    out["identical_ohlc_run"] = identical_ohlc_runs(out, order)
    open_zero = (out["volume"].to_numpy("float64") == 0) & (outside == 0) & out["before_end"].to_numpy()
    out["zero_volume_run"] = flagged_runs(open_zero[order], order)
    return out


@dataclass(frozen=True)
class CalendarView:
    """Expected bars of the window against those observed, per session and as runs of missing bars."""

    expected: pd.DatetimeIndex
    sessions: pd.DataFrame  # session, expected, observed, coverage, missing
    gaps: pd.DataFrame  # start, end (exclusive), bars, session


def calendar_view(
    timestamps: pd.Series, broker: str, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
) -> CalendarView:
    """Compare observed bar times with the broker calendar over the clipped window [start, end)."""
    expected = bar_index(broker, start, end, interval)
    counts = expected_bars_per_session(broker, start, end, interval)
    # Same session labelling as calendars.expected_bars_per_session, kept per expected bar.
    sched = schedule(broker, start, end)
    labels = pd.Series(sched.index, index=sched["open"]).sort_index()
    session_of = labels.reindex(expected, method="ffill").to_numpy()
    present = _member(expected.to_numpy("datetime64[ns]"), timestamps.dropna().to_numpy("datetime64[ns]"))
    observed = (
        pd.Series(present.astype(np.int64)).groupby(session_of).sum().reindex(counts.index, fill_value=0)
    )
    sessions = pd.DataFrame(
        {
            "session": pd.DatetimeIndex(counts.index).strftime("%Y-%m-%d"),
            "expected": counts.to_numpy(np.int64),
            "observed": observed.to_numpy(np.int64),
        }
    )
    sessions["coverage"] = sessions["observed"] / sessions["expected"]
    sessions["missing"] = sessions["expected"] - sessions["observed"]
    return CalendarView(
        expected=expected, sessions=sessions, gaps=_gap_runs(expected, present, session_of, interval)
    )


def _gap_runs(
    expected: pd.DatetimeIndex, present: np.ndarray, session_of: np.ndarray, interval: pd.Timedelta
) -> pd.DataFrame:
    """Runs of consecutive missing expected bars (consecutive in the calendar, so a weekend is no gap)."""
    missing = np.flatnonzero(~present)
    if missing.size == 0:
        return pd.DataFrame(
            {
                "start": pd.Series(dtype=UTC_DTYPE),
                "end": pd.Series(dtype=UTC_DTYPE),
                "bars": pd.Series(dtype="int64"),
                "session": pd.Series(dtype=object),
            }
        )
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    firsts = missing[np.r_[0, breaks]]
    lasts = missing[np.r_[breaks - 1, missing.size - 1]]
    return pd.DataFrame(
        {
            "start": expected[firsts],
            "end": expected[lasts] + interval,
            "bars": (lasts - firsts + 1).astype(np.int64),
            "session": pd.DatetimeIndex(session_of[firsts]).strftime("%Y-%m-%d"),
        }
    )
