"""Health windows, counted in an instrument's own expected bars, and the columns compared inside them.

Why bars and not clock days: a "day" is 288 five-minute bars for BTC and EUR/USD but 78 for SPY, and
a weekend holds none for FX. Counting expected bars on the broker's calendar makes "the last trading
day" mean the same thing for every instrument, and puts the windows on the same footing as the
feature lookbacks (which count bars too).

Two kinds of column are compared:

* **Signals** — bar-level quantities with a memory of one bar: ``abs_ret`` (|log return|),
  ``log_range`` (ln high/low), ``rel_spread`` (spread/close) and ``volume``. Neighbouring values are
  (nearly) independent, so one trading day already holds a few hundred independent values — enough
  for a PSI whose noise is well below its threshold. They carry what every feature is built from
  (volatility, liquidity, activity), so they raise the alarm.
* **Features** from the store, for drill-down. A feature with lookback ``m`` has only about ``n/m``
  independent values in ``n`` bars (``vol_48`` over one day: six), so it is compared on windows of at
  least ``memories_per_window · m`` bars, thinned to every ``m``-th row. Its verdict is reported, not
  alarmed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from autotrader.calendars import bar_index

SIGNALS: dict[str, str] = {
    "abs_ret": "|ln(close_t / close_{t-1})| — volatility, a frozen feed (0), a price-scale jump",
    "log_range": "ln(high / low) — intrabar volatility, a frozen feed (0)",
    "rel_spread": "spread / close — quoted liquidity",
    "volume": "volume per bar — activity, a volume collapse",
}


@lru_cache(maxsize=64)
def bars_per_day(broker: str, interval: pd.Timedelta, at: pd.Timestamp) -> int:
    """Bars in a full trading day on the broker's calendar (288 at 5 min for 24 h markets, 78 for NYSE).

    The most bars any UTC date held in the four weeks before ``at``: a short Sunday FX session or a
    half day never sets it.
    """
    idx = bar_index(broker, at - pd.Timedelta(days=28), at, interval)
    if len(idx) == 0:
        return max(1, int(pd.Timedelta(days=1) / interval))
    return int(pd.Series(1, index=idx.normalize()).groupby(level=0).sum().max())


@dataclass(frozen=True)
class Span:
    """A window of an instrument's expected bars: [start, end), ``bars`` of them, thinned to every ``stride``-th."""

    start: pd.Timestamp
    end: pd.Timestamp
    bars: int
    stride: int = 1

    def as_dict(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "bars": self.bars,
            "stride": self.stride,
        }


@dataclass(frozen=True)
class InstrumentWindows:
    """One instrument's expected bar stamps up to ``at`` and its alarm window sizes."""

    key: str
    expected: pd.DatetimeIndex  # every bar the calendar expects, oldest first, ending before ``at``
    at: pd.Timestamp
    current_bars: int  # current_days · bars_per_day
    reference_bars: int  # reference_days · bars_per_day

    def spans(self, memory: int = 1, memories_per_window: int = 1) -> tuple[Span, Span] | None:
        """(reference, current) for a column with this memory; None when history is too short.

        The current window holds at least ``memories_per_window`` memories and at least the alarm
        window; the reference is ``reference_bars / current_bars`` times as long, or as long as the
        history allows (never shorter than the current window).
        """
        stride = max(1, int(memory))
        cur = max(self.current_bars, memories_per_window * stride)
        ratio = self.reference_bars / self.current_bars
        n = len(self.expected)
        if n < 2 * cur:
            return None
        ref = min(round(ratio * cur), n - cur)
        start_cur = self.expected[n - cur]
        start_ref = self.expected[n - cur - ref]
        return Span(start_ref, start_cur, ref, stride), Span(start_cur, self.at, cur, stride)


def instrument_windows(
    key: str, broker: str, first: pd.Timestamp, at: pd.Timestamp, interval: pd.Timedelta,
    current_days: int, reference_days: int,
) -> InstrumentWindows:  # fmt: skip
    per_day = bars_per_day(broker, interval, at)
    expected = bar_index(broker, first, at, interval)
    return InstrumentWindows(key, expected, at, current_days * per_day, reference_days * per_day)


def signal_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The signal columns of one instrument's rows (time order), aligned with them."""
    close = rows["close"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_close = np.log(close)
        abs_ret = np.abs(np.diff(log_close, prepend=np.nan))
        out = pd.DataFrame(
            {
                "abs_ret": abs_ret,
                "log_range": np.log(rows["high"].to_numpy(dtype=float) / rows["low"].to_numpy(dtype=float)),
                "rel_spread": rows["spread"].to_numpy(dtype=float) / close,
                "volume": rows["volume"].to_numpy(dtype=float),
            },
            index=rows.index,
        )
    return out.replace([np.inf, -np.inf], np.nan)


def take(values: pd.Series, stamps: pd.Series, span: Span) -> np.ndarray:
    """The finite values in ``span``, thinned to every ``stride``-th row counted back from the newest."""
    inside = ((stamps >= span.start) & (stamps < span.end)).to_numpy()
    picked = values.to_numpy(dtype=float)[inside]
    if span.stride > 1:
        picked = picked[::-1][:: span.stride][::-1]
    return picked[np.isfinite(picked)]


def reference_quantiles(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each value sits in the reference's distribution (mid-rank CDF, 0…1).

    The probability integral transform: the reference becomes uniform, so the equal-width bins
    Evidently's PSI uses become equal-mass bins — no bin carries a sliver of reference mass whose
    emptiness alone would read as drift (the heavy tails of returns made most of the old false
    alarms). Any monotone rescaling of a column (a unit, a log) leaves it unchanged.
    """
    ordered = np.sort(reference)
    lo = np.searchsorted(ordered, values, side="left")
    hi = np.searchsorted(ordered, values, side="right")
    return (lo + hi) / (2.0 * max(len(ordered), 1))
