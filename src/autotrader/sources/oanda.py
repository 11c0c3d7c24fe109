"""Oanda v20 candles: ``GET /v3/instruments/{instrument}/candles?price=BA``, paginated by time window.

Bid and ask candles give the mid OHLC ((bid + ask) / 2) and the quoted spread at the close
(``ask.c − bid.c``). Only ``complete: true`` candles are kept: the forming one would change after we
stored it. Oanda caps a request at 5000 candles, so [start, end) is cut into windows of at most 5000
bars. The token comes from ``OANDA_API_TOKEN`` only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from autotrader.errors import ConfigError, SourceError
from autotrader.params import Instrument, LiveParams
from autotrader.schema import bars_from_columns, empty_bars, interval_alias
from autotrader.sources.http import JsonClient

TOKEN_ENV = "OANDA_API_TOKEN"
MAX_CANDLES = 5000  # the documented maximum per request

GRANULARITIES: dict[pd.Timedelta, str] = {
    pd.Timedelta(seconds=5): "S5",
    pd.Timedelta(seconds=10): "S10",
    pd.Timedelta(seconds=15): "S15",
    pd.Timedelta(seconds=30): "S30",
    pd.Timedelta(minutes=1): "M1",
    pd.Timedelta(minutes=2): "M2",
    pd.Timedelta(minutes=4): "M4",
    pd.Timedelta(minutes=5): "M5",
    pd.Timedelta(minutes=10): "M10",
    pd.Timedelta(minutes=15): "M15",
    pd.Timedelta(minutes=30): "M30",
    pd.Timedelta(hours=1): "H1",
    pd.Timedelta(hours=2): "H2",
    pd.Timedelta(hours=3): "H3",
    pd.Timedelta(hours=4): "H4",
    pd.Timedelta(hours=6): "H6",
    pd.Timedelta(hours=8): "H8",
    pd.Timedelta(hours=12): "H12",
    pd.Timedelta(days=1): "D",
}

Candle = tuple[pd.Timestamp, float, float, float, float, float, float]


def oanda_granularity(interval: pd.Timedelta) -> str:
    try:
        return GRANULARITIES[interval]
    except KeyError as exc:
        raise ConfigError(
            f"data.interval {interval_alias(interval)} has no Oanda granularity; use one of {', '.join(GRANULARITIES.values())}"
        ) from exc


def _rfc3339(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def parse_candles(body: Any) -> list[Candle]:
    """(time, mid o/h/l/c, volume, spread) of each complete candle; raises on a body not shaped like v20's."""
    candles = body["candles"]
    if not isinstance(candles, list):
        raise TypeError("'candles' is not an array")
    out: list[Candle] = []
    for candle in candles:
        if not candle["complete"]:
            continue
        bid, ask = candle["bid"], candle["ask"]
        mids = [(float(bid[k]) + float(ask[k])) / 2.0 for k in ("o", "h", "l", "c")]
        spread = float(ask["c"]) - float(bid["c"])
        out.append((pd.Timestamp(candle["time"]).tz_convert("UTC"), *mids, float(candle["volume"]), spread))
    return out


class OandaSource:
    """FX candles for instruments such as EUR_USD, authorised by ``Authorization: Bearer $OANDA_API_TOKEN``."""

    broker = "oanda"

    def __init__(self, live: LiveParams, sleep: Callable[[float], None] = time.sleep) -> None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError(
                f"data.source=live with an oanda instrument needs the environment variable {TOKEN_ENV} "
                "(a v20 API token); it is not set"
            )
        self.client = JsonClient(
            self.broker,
            live.oanda_url,
            timeout_s=live.timeout_s,
            deadline_s=live.deadline_s,
            max_attempts=live.max_attempts,
            backoff_s=live.backoff_s,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept-Datetime-Format": "RFC3339",
                "Accept": "application/json",
            },
            error_keys=("errorMessage", "message"),
            sleep=sleep,
        )

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame:
        """Complete candles opening in [start, end), windows stitched in time order without duplicates."""
        granularity = oanda_granularity(interval)
        path = f"/v3/instruments/{instrument.symbol}/candles"
        span = interval * (MAX_CANDLES - 1)  # room for an inclusive `to`
        rows: list[Candle] = []
        last: pd.Timestamp | None = None
        cursor = start
        while cursor < end:
            window_end = min(cursor + span, end)
            try:
                page = self.client.get_json(
                    path,
                    {
                        "price": "BA",
                        "granularity": granularity,
                        "from": _rfc3339(cursor),
                        "to": _rfc3339(window_end),
                    },
                    symbol=instrument.symbol,
                    parse=parse_candles,
                )
            except SourceError as exc:
                if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
                    raise SourceError(f"{exc} (check {TOKEN_ENV} and data.live.oanda_url)") from exc
                raise
            for row in page:
                ts = row[0]
                if start <= ts < end and (last is None or ts > last):
                    rows.append(row)
                    last = ts
            cursor = window_end
        return self._frame(instrument, rows)

    @staticmethod
    def _frame(instrument: Instrument, rows: list[Candle]) -> pd.DataFrame:
        if not rows:
            return empty_bars()
        values = np.asarray([r[1:] for r in rows], dtype="float64")
        stamps = pd.DatetimeIndex([r[0] for r in rows]).as_unit("ns")
        return bars_from_columns(instrument.broker, instrument.symbol, stamps, values[:, :5], values[:, 5])

    def close(self) -> None:
        self.client.close()
