"""Online strategy scoring: did the signal the server gave last time for an instrument make money?

When a later bar of an instrument arrives, the position the server advised on the previous bar has
been held over the interval between them, so its realised return is

    r = signal_prev × (close_new / close_prev − 1)

The server exports Σr, Σr² and n (see ``metrics.py``); a rolling Sharpe is computed in PromQL from
their deltas over a window. Rules that keep the sums honest under retries, replays and batches:

- bars are taken in timestamp order within a request;
- a bar at the same timestamp as the last one seen (a retry, a replay) scores nothing and changes
  nothing — the first answer is the one a client would have acted on;
- an older bar (out of order, a late replay) scores nothing and changes nothing;
- both are counted (``autotrader_online_bars_skipped_total{reason="repeat"|"stale"}``), so a client
  replaying old bars to pad or blur the score shows up;
- a bar dated in the future is refused before it gets here (``app.PredictionService``: beyond
  ``PREDICT_MAX_CLOCK_SKEW_S`` it is a 422): one bar dated 9999 would otherwise become the
  instrument's last bar and freeze its scoring for good, every real bar after it being "older";
- state is per (broker, symbol) and bounded: the least recently seen instrument is dropped beyond
  ``max_instruments``, so a client sending random symbols cannot grow memory without limit.

Costs are not subtracted: this is the model's gross edge, comparable between canary and stable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class _Last:
    timestamp: datetime
    close: float
    signal: int


def realised_return(signal_prev: int, close_prev: float, close_new: float) -> float:
    return signal_prev * (close_new / close_prev - 1.0)


class OnlineScorer:
    """Per-instrument memory of the last (timestamp, close, signal), turning new bars into returns."""

    def __init__(self, max_instruments: int = 10_000) -> None:
        self.max_instruments = max_instruments
        self._last: OrderedDict[tuple[str, str], _Last] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._last)

    def observe(
        self,
        keys: Sequence[tuple[str, str]],
        timestamps: Sequence[datetime],
        closes: Sequence[float],
        signals: Sequence[int],
    ) -> list[float]:
        """Record a request's bars and their signals; return the realised returns they complete."""
        return self.observe_counted(keys, timestamps, closes, signals)[0]

    def observe_counted(
        self,
        keys: Sequence[tuple[str, str]],
        timestamps: Sequence[datetime],
        closes: Sequence[float],
        signals: Sequence[int],
    ) -> tuple[list[float], int, int]:
        """``observe``, plus how many bars were skipped as repeats (same timestamp) and as stale (older)."""
        n = len(keys)
        repeats = stale = 0
        order = range(n) if _sorted(timestamps) else sorted(range(n), key=timestamps.__getitem__)
        out: list[float] = []
        with self._lock:
            last = self._last
            for i in order:
                key, ts, close = keys[i], timestamps[i], closes[i]
                prev = last.get(key)
                if prev is not None:
                    if ts <= prev.timestamp:
                        if ts == prev.timestamp:
                            repeats += 1
                        else:
                            stale += 1
                        continue
                    out.append(realised_return(prev.signal, prev.close, close))
                    last.move_to_end(key)
                last[key] = _Last(ts, close, int(signals[i]))
            while len(last) > self.max_instruments:
                last.popitem(last=False)
        return out, repeats, stale


def _sorted(values: Sequence[datetime]) -> bool:
    return all(values[i] <= values[i + 1] for i in range(len(values) - 1))
