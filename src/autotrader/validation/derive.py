"""Derived tables the Great Expectations suites judge: what pandas computes so that GE can check it.

GE checks columns and rows; it cannot know a broker calendar or a robust σ. So pandas computes, fully
vectorised, a row-level ``checks`` table (the bars read leniently as UTC and numbers, the robust
return z-score, whether each bar is an expected bar of the calendar) and a ``sessions`` table (one
row per calendar session: expected vs observed bars). The verdicts still come from GE expectations
over these columns; nothing here decides pass or fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autotrader.calendars import bar_index, expected_bars_per_session, schedule
from autotrader.schema import NUMERIC_COLUMNS

# σ of a normal distribution from its median absolute deviation.
MAD_TO_SIGMA = 1.4826
UTC_DTYPE = "datetime64[ns, UTC]"


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


def checks_table(
    frame: pd.DataFrame, expected: pd.DatetimeIndex, timestamps: pd.Series | None = None
) -> pd.DataFrame:
    """Row-level table in the raw rows' order: lenient UTC timestamp, numbers, return z, on-calendar flag.

    ``timestamps`` is ``lenient_utc`` of the frame's column when the caller already has it.
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
    out["on_calendar"] = out["timestamp"].isin(expected) | out["timestamp"].isna()
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
    observed_times = pd.DatetimeIndex(timestamps.dropna().unique())
    present = expected.isin(observed_times)
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
