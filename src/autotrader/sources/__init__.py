"""Bar sources behind one interface: each returns frames in the bar schema (``autotrader.schema``).

``sim`` is the embedded default (offline, deterministic); ``files`` imports CSV/Parquet history;
``live`` talks to the brokers (Binance, Oanda v20, Interactive Brokers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pandas as pd

from autotrader.params import DataParams, Instrument


class BarSource(Protocol):
    """Yields one frame per instrument, in the bar schema, covering [start, end)."""

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame: ...


def source_for(data: DataParams) -> BarSource:
    """The source that ``data.source`` names, configured from params (secrets from the environment)."""
    if data.source == "sim":
        from autotrader.sources.sim import SimulatedMarket

        return SimulatedMarket(
            seed=data.sim.seed,
            signal_strength=data.sim.signal_strength,
            epoch=data.sim.epoch_ts,
            regime_switching=data.sim.regime_switching,
        )
    if data.source == "files":
        from autotrader.sources.files import FileSource

        return FileSource(data.files)
    from autotrader.sources.live import LiveSource

    return LiveSource(data.live)


def fetch_all(data: DataParams) -> Iterator[tuple[Instrument, pd.DataFrame]]:
    """Every active instrument's bars for the configured window, in params order."""
    source = source_for(data)
    start, end = data.start_ts(), data.end_ts()
    for instrument in data.active_instruments():
        yield instrument, source.fetch(instrument, start, end, data.interval_td)
