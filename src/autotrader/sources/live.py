"""``data.source: live``: one source that sends each instrument to its broker's connector.

Connectors are built on first use, so a missing ``OANDA_API_TOKEN`` only matters when an oanda
instrument is asked for, and ``ib_async`` is only imported for ibkr instruments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from autotrader.params import Instrument, LiveParams
from autotrader.schema import empty_bars
from autotrader.sources import BarSource


def last_closed_bar_end(interval: pd.Timedelta, now: datetime | None = None) -> pd.Timestamp:
    """The open time of the bar forming now: every bar before it has closed."""
    return pd.Timestamp(now or datetime.now(UTC)).tz_convert("UTC").floor(interval)


class LiveSource:
    """Binance, Oanda v20 and Interactive Brokers behind the ``BarSource`` interface."""

    def __init__(
        self,
        live: LiveParams,
        *,
        ib_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.live = live
        self.ib_factory = ib_factory
        self.sleep = sleep
        self._connectors: dict[str, BarSource] = {}

    def connector(self, broker: str) -> BarSource:
        if broker not in self._connectors:
            if broker == "binance":
                from autotrader.sources.binance import BinanceSource

                self._connectors[broker] = BinanceSource(self.live, sleep=self.sleep)
            elif broker == "oanda":
                from autotrader.sources.oanda import OandaSource

                self._connectors[broker] = OandaSource(self.live, sleep=self.sleep)
            elif broker == "ibkr":
                from autotrader.sources.ibkr import IbkrSource

                self._connectors[broker] = IbkrSource(self.live, ib_factory=self.ib_factory, sleep=self.sleep)
            else:  # params validation allows only the three brokers; this guards direct callers
                raise ValueError(f"unknown broker {broker!r}")
        return self._connectors[broker]

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame:
        """Bars in [start, end); a window reaching past now stops at the last bar that has closed.

        Brokers also serve the bar still forming; stored, it would change under us on the next run.
        """
        end = min(end, last_closed_bar_end(interval))
        if end <= start:
            return empty_bars()
        return self.connector(instrument.broker).fetch(instrument, start, end, interval)

    def close(self) -> None:
        for connector in self._connectors.values():
            close = getattr(connector, "close", None)
            if close is not None:
                close()
        self._connectors.clear()
