"""Freshness: is each instrument's newest bar as new as its market allows at the logical date?

Wall-clock age is the wrong yardstick for markets that close: at Saturday noon the newest EUR/USD
bar is a day old and perfectly fresh, and at 03:00 UTC SPY's newest bar is from the previous
session's close. So the lag is counted in *expected bars* on the broker's calendar: the bars the
market should have printed after our newest one, up to the last one that is complete at ``at``
(``autotrader.calendars.last_expected_bar``). Stale means more than ``max_staleness_bars`` of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from autotrader import rawstore
from autotrader.calendars import bar_index, last_expected_bar

_DATE = re.compile(r"date=\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Freshness:
    broker: str
    symbol: str
    newest_bar: pd.Timestamp | None
    last_expected_bar: pd.Timestamp | None
    lag_bars: int | None  # None when there are no bars at all
    max_staleness_bars: int
    stale: bool

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"

    def reason(self) -> str:
        """One line a person can act on."""
        if self.newest_bar is None:
            return f"{self.key}: no bars in the raw store"
        if not self.stale:
            return f"{self.key}: fresh (lag {self.lag_bars} bar(s))"
        return (
            f"{self.key}: stale — newest bar {self.newest_bar.isoformat()} lags the last expected bar "
            f"{self.last_expected_bar.isoformat() if self.last_expected_bar is not None else '?'} by "
            f"{self.lag_bars} bar(s) (max {self.max_staleness_bars}, rule health.max_staleness_bars)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "newest_bar": self.newest_bar.isoformat() if self.newest_bar is not None else None,
            "last_expected_bar": (
                self.last_expected_bar.isoformat() if self.last_expected_bar is not None else None
            ),
            "lag_bars": self.lag_bars,
            "max_staleness_bars": self.max_staleness_bars,
            "stale": self.stale,
        }


def lag_in_bars(
    broker: str, newest: pd.Timestamp, last_expected: pd.Timestamp | None, interval: pd.Timedelta
) -> int:
    """Expected bars in (newest, last_expected] on the broker's calendar; 0 when newest is not behind."""
    if last_expected is None or newest >= last_expected:
        return 0
    expected = bar_index(broker, newest, last_expected + interval, interval)
    return int((expected > newest).sum())


def assess(
    broker: str,
    symbol: str,
    newest: pd.Timestamp | None,
    at: pd.Timestamp,
    interval: pd.Timedelta,
    max_staleness_bars: int,
) -> Freshness:
    """Freshness of one instrument whose newest bar opened at ``newest`` (None: no bars), judged at ``at``."""
    expected = last_expected_bar(broker, at, interval)
    if newest is None:
        return Freshness(broker, symbol, None, expected, None, max_staleness_bars, stale=True)
    lag = lag_in_bars(broker, newest, expected, interval)
    return Freshness(
        broker, symbol, newest, expected, lag, max_staleness_bars, stale=lag > max_staleness_bars
    )


def newest_bar(raw_root: str | Path, broker: str, symbol: str, at: pd.Timestamp) -> pd.Timestamp | None:
    """Open time of the newest bar before ``at`` in the raw store, reading only the last day files."""
    files = [f for f in rawstore.partition_files(raw_root, broker, symbol) if _DATE.search(f.parent.name)]
    for path in reversed(files):  # newest day first; stop at the first day with a bar before ``at``
        stamps = pd.to_datetime(
            pq.read_table(path, columns=["timestamp"]).column("timestamp").to_pandas(),
            utc=True,
            errors="coerce",
        )
        stamps = stamps[stamps < at]
        if len(stamps):
            return pd.Timestamp(stamps.max())
    return None


def check_freshness(
    raw_root: str | Path,
    instruments: list[tuple[str, str]],
    at: pd.Timestamp,
    interval: pd.Timedelta,
    max_staleness_bars: int,
) -> list[Freshness]:
    """Freshness of each (broker, symbol); an instrument missing from the raw store is stale."""
    return [
        assess(broker, symbol, newest_bar(raw_root, broker, symbol, at), at, interval, max_staleness_bars)
        for broker, symbol in instruments
    ]
