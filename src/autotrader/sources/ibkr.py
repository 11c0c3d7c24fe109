"""Interactive Brokers historical bars through ``ib_async`` (TWS or IB Gateway on ``ibkr_host:ibkr_port``).

Equities (SPY, QQQ) as ``Stock(symbol, "SMART", "USD")``, ``whatToShow="TRADES"``, regular trading
hours only (``useRTH=True``) and ``formatDate=2`` so bar times come back as UTC. IB limits how much
history one request may span for a bar size, so [start, end) is walked backwards in chunks that fit
the documented duration/bar-size table, and paced to stay inside the historical-data pacing rules
(no burst of requests on one contract, at most 60 requests in 10 minutes). TRADES bars carry no
quote, so ``spread`` is null.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from autotrader.errors import ConfigError, SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.schema import bars_from_columns, empty_bars, interval_alias

# bar interval → (barSizeSetting, durationStr, how far one request reaches back)
BAR_SIZES: dict[pd.Timedelta, tuple[str, str, pd.Timedelta]] = {
    pd.Timedelta(seconds=1): ("1 secs", "1800 S", pd.Timedelta(minutes=30)),
    pd.Timedelta(seconds=5): ("5 secs", "3600 S", pd.Timedelta(hours=1)),
    pd.Timedelta(seconds=10): ("10 secs", "14400 S", pd.Timedelta(hours=4)),
    pd.Timedelta(seconds=15): ("15 secs", "14400 S", pd.Timedelta(hours=4)),
    pd.Timedelta(seconds=30): ("30 secs", "28800 S", pd.Timedelta(hours=8)),
    pd.Timedelta(minutes=1): ("1 min", "1 D", pd.Timedelta(days=1)),
    pd.Timedelta(minutes=2): ("2 mins", "2 D", pd.Timedelta(days=2)),
    pd.Timedelta(minutes=3): ("3 mins", "1 W", pd.Timedelta(days=7)),
    pd.Timedelta(minutes=5): ("5 mins", "1 W", pd.Timedelta(days=7)),
    pd.Timedelta(minutes=10): ("10 mins", "1 W", pd.Timedelta(days=7)),
    pd.Timedelta(minutes=15): ("15 mins", "1 W", pd.Timedelta(days=7)),
    pd.Timedelta(minutes=20): ("20 mins", "1 W", pd.Timedelta(days=7)),
    pd.Timedelta(minutes=30): ("30 mins", "1 M", pd.Timedelta(days=28)),
    pd.Timedelta(hours=1): ("1 hour", "1 M", pd.Timedelta(days=28)),
    pd.Timedelta(hours=2): ("2 hours", "1 M", pd.Timedelta(days=28)),
    pd.Timedelta(hours=3): ("3 hours", "1 M", pd.Timedelta(days=28)),
    pd.Timedelta(hours=4): ("4 hours", "1 M", pd.Timedelta(days=28)),
    pd.Timedelta(hours=8): ("8 hours", "1 M", pd.Timedelta(days=28)),
    pd.Timedelta(days=1): ("1 day", "1 Y", pd.Timedelta(days=360)),
}

REQUEST_GAP_S = 0.5  # ≥ 6 requests on one contract within 2 s is a pacing violation
PACING_WINDOW_S = 600.0
MAX_REQUESTS_PER_WINDOW = 60
MIN_REQUEST_TIMEOUT_S = 60.0  # historical requests are slow; an HTTP-sized timeout would drop chunks
NO_DATA_CODE = 162  # "HMDS query returned no data" (also used for pacing violations, told apart by text)
RETRY_CODES = frozenset({366, 1100, 1101})  # query lost, connectivity lost (pacing: by text)


class _Retryable(Exception):
    pass


def ibkr_bar_size(interval: pd.Timedelta) -> tuple[str, str, pd.Timedelta]:
    try:
        return BAR_SIZES[interval]
    except KeyError as exc:
        raise ConfigError(
            f"data.interval {interval_alias(interval)} has no IBKR bar size; use one of "
            f"{', '.join(size for size, _, _ in BAR_SIZES.values())}"
        ) from exc


def _bar_time(value: date | datetime, symbol: str) -> pd.Timestamp:
    """UTC bar open; daily bars arrive as a ``date`` (the session), intraday as an aware datetime."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        return ts.tz_convert("UTC")
    if isinstance(value, datetime):
        raise SourceError(
            f"ibkr {symbol}: bar time {value} has no time zone; formatDate=2 should give UTC (check the gateway)"
        )
    return ts.tz_localize("UTC")


class IbkrSource:
    """Historical TRADES bars from IB; one connection per instrument fetch, closed afterwards."""

    broker = "ibkr"

    def __init__(
        self,
        live: LiveParams,
        ib_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self.ib_factory = ib_factory
        self.sleep = sleep
        self.clock = clock
        self._sent: deque[float] = deque(maxlen=MAX_REQUESTS_PER_WINDOW)

    @property
    def address(self) -> str:
        return f"{self.live.ibkr_host}:{self.live.ibkr_port}"

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.live.max_attempts),
            wait=wait_exponential(multiplier=self.live.backoff_s, max=30.0),
            retry=retry_if_exception_type(_Retryable),
            sleep=self.sleep,
            reraise=True,
        )

    def _pace(self) -> None:
        """Wait so that requests keep IB's historical-data pacing rules."""
        now = self.clock()
        wait = 0.0
        if self._sent:
            wait = max(wait, self._sent[-1] + REQUEST_GAP_S - now)
        if len(self._sent) == MAX_REQUESTS_PER_WINDOW:
            wait = max(wait, self._sent[0] + PACING_WINDOW_S - now)
        if wait > 0:
            self.sleep(wait)
        self._sent.append(now + max(wait, 0.0))

    def _connect(self, symbol: str) -> Any:
        if self.ib_factory is None:
            from ib_async import IB

            factory: Callable[[], Any] = IB
        else:
            factory = self.ib_factory

        def attempt() -> Any:
            ib = factory()
            ib.RaiseRequestErrors = True
            try:
                ib.connect(
                    self.live.ibkr_host,
                    self.live.ibkr_port,
                    clientId=self.live.ibkr_client_id,
                    timeout=self.live.timeout_s,
                    readonly=True,
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                raise _Retryable(f"cannot connect: {type(exc).__name__}: {exc}") from exc
            return ib

        try:
            return self._retrying()(attempt)
        except _Retryable as exc:
            raise SourceError(
                f"ibkr {symbol}: TWS/IB Gateway at {self.address} failed after {self.live.max_attempts} "
                f"attempt(s): {exc} (is it running with the API enabled? data.live.ibkr_host/ibkr_port)"
            ) from exc

    def _chunk(
        self, ib: Any, contract: Any, symbol: str, chunk_end: pd.Timestamp, interval: pd.Timedelta
    ) -> list:
        bar_size, duration, _ = ibkr_bar_size(interval)

        def attempt() -> list:
            from ib_async import RequestError

            self._pace()
            try:
                return list(
                    ib.reqHistoricalData(
                        contract,
                        endDateTime=chunk_end.to_pydatetime(),
                        durationStr=duration,
                        barSizeSetting=bar_size,
                        whatToShow="TRADES",
                        useRTH=True,
                        formatDate=2,
                        timeout=max(self.live.timeout_s, MIN_REQUEST_TIMEOUT_S),
                    )
                )
            except RequestError as exc:
                text = str(exc.message)
                if exc.code == NO_DATA_CODE and "pacing" not in text.lower():
                    return []
                if exc.code in RETRY_CODES or "pacing" in text.lower():
                    raise _Retryable(f"IB error {exc.code}: {text}") from exc
                raise SourceError(
                    f"ibkr {symbol}: reqHistoricalData ending {chunk_end} refused: IB error {exc.code}: {text}"
                ) from exc
            except (OSError, TimeoutError, ConnectionError) as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

        try:
            return self._retrying()(attempt)
        except _Retryable as exc:
            raise SourceError(
                f"ibkr {symbol}: reqHistoricalData ending {chunk_end} via {self.address} failed after "
                f"{self.live.max_attempts} attempt(s); last error {exc}"
            ) from exc

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame:
        """Bars opening in [start, end), chunks walked back from ``end`` and stitched forward without duplicates."""
        from ib_async import Stock

        _, _, reach = ibkr_bar_size(interval)
        symbol = instrument.symbol
        contract = Stock(symbol, "SMART", "USD")
        ib = self._connect(symbol)
        chunks: list[list] = []
        try:
            chunk_end = end
            while chunk_end > start:
                chunks.append(self._chunk(ib, contract, symbol, chunk_end, interval))
                chunk_end = chunk_end - reach
        finally:
            ib.disconnect()
        rows: dict[pd.Timestamp, tuple[float, float, float, float, float]] = {}
        for bars in reversed(chunks):
            for bar in bars:
                ts = _bar_time(bar.date, symbol)
                if start <= ts < end and ts not in rows:
                    rows[ts] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        return self._frame(instrument, rows)

    @staticmethod
    def _frame(instrument: Instrument, rows: dict[pd.Timestamp, tuple[float, ...]]) -> pd.DataFrame:
        if not rows:
            return empty_bars()
        stamps = sorted(rows)
        values = np.asarray([rows[t] for t in stamps], dtype="float64")
        index = pd.DatetimeIndex(stamps).as_unit("ns")
        return bars_from_columns(instrument.broker, instrument.symbol, index, values)
