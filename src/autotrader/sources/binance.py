"""Binance spot klines: ``GET /api/v3/klines``, paginated by ``startTime``, rate-limit aware.

A kline is ``[open_time_ms, open, high, low, close, volume, close_time_ms, quote_volume, trades,
taker_base, taker_quote, ignore]`` with prices as strings. Binance gives no bid/ask on klines, so
``spread`` is null. Every request costs weight against a per-minute budget the server reports in
``X-MBX-USED-WEIGHT-1M``; near the budget we wait for the next minute instead of drawing a 429 (and,
ignored, a 418 IP ban).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd

from autotrader.errors import ConfigError
from autotrader.params import Instrument, LiveParams
from autotrader.schema import bars_from_columns, empty_bars, interval_alias
from autotrader.sources.http import JsonClient

KLINES_PATH = "/api/v3/klines"
PAGE_LIMIT = 1000  # the documented maximum per request
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
WEIGHT_LIMIT_1M = 6000  # spot REQUEST_WEIGHT per minute (GET /api/v3/exchangeInfo rateLimits)
WEIGHT_SAFETY = 0.9  # pause when this share of the minute's budget is used
API_KEY_ENV = "BINANCE_API_KEY"

INTERVALS: dict[pd.Timedelta, str] = {
    pd.Timedelta(seconds=1): "1s",
    pd.Timedelta(minutes=1): "1m",
    pd.Timedelta(minutes=3): "3m",
    pd.Timedelta(minutes=5): "5m",
    pd.Timedelta(minutes=15): "15m",
    pd.Timedelta(minutes=30): "30m",
    pd.Timedelta(hours=1): "1h",
    pd.Timedelta(hours=2): "2h",
    pd.Timedelta(hours=4): "4h",
    pd.Timedelta(hours=6): "6h",
    pd.Timedelta(hours=8): "8h",
    pd.Timedelta(hours=12): "12h",
    pd.Timedelta(days=1): "1d",
}


def binance_interval(interval: pd.Timedelta) -> str:
    try:
        return INTERVALS[interval]
    except KeyError as exc:
        raise ConfigError(
            f"data.interval {interval_alias(interval)} has no Binance kline interval; use one of "
            f"{', '.join(INTERVALS.values())}"
        ) from exc


def parse_klines(body: Any) -> list[tuple[int, float, float, float, float, float]]:
    """(open_time_ms, o, h, l, c, volume) per kline; raises on anything not shaped like Binance's answer."""
    if not isinstance(body, list):
        raise TypeError(f"expected a JSON array of klines, got {type(body).__name__}")
    rows = []
    for kline in body:
        if not isinstance(kline, list) or len(kline) < 6:
            raise ValueError(f"kline is not an array of 12 fields: {str(kline)[:80]}")
        rows.append((int(kline[0]), *(float(v) for v in kline[1:6])))
    return rows


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


class BinanceSource:
    """Spot klines for symbols such as BTCUSDT; ``BINANCE_API_KEY`` (optional) is sent as ``X-MBX-APIKEY``."""

    broker = "binance"

    def __init__(self, live: LiveParams, sleep: Callable[[float], None] = time.sleep) -> None:
        headers = {"Accept": "application/json"}
        api_key = os.environ.get(API_KEY_ENV)
        if api_key:
            headers["X-MBX-APIKEY"] = api_key
        self.sleep = sleep
        self.client = JsonClient(
            self.broker,
            live.binance_url,
            timeout_s=live.timeout_s,
            deadline_s=live.deadline_s,
            max_attempts=live.max_attempts,
            backoff_s=live.backoff_s,
            headers=headers,
            error_keys=("msg", "code"),
            sleep=sleep,
        )
        self.waited_for_weight_s = 0.0

    def _watch_weight(self, response: httpx.Response) -> None:
        """Near the per-minute weight budget, sleep into the next minute before the next request."""
        used = response.headers.get(WEIGHT_HEADER)
        if used is None or not used.isdigit():
            return
        if int(used) >= WEIGHT_LIMIT_1M * WEIGHT_SAFETY:
            wait = 60.0 - (time.time() % 60.0) + 1.0
            self.waited_for_weight_s += wait
            self.sleep(wait)

    def fetch(
        self, instrument: Instrument, start: pd.Timestamp, end: pd.Timestamp, interval: pd.Timedelta
    ) -> pd.DataFrame:
        """Klines opening in [start, end), pages stitched in time order without duplicates."""
        code = binance_interval(interval)
        step_ms = int(interval.value // 1_000_000)
        start_ms, end_ms = _ms(start), _ms(end)
        rows: list[tuple[int, float, float, float, float, float]] = []
        cursor, last_open = start_ms, -1
        while cursor < end_ms:
            page = self.client.get_json(
                KLINES_PATH,
                {
                    "symbol": instrument.symbol,
                    "interval": code,
                    "startTime": cursor,
                    "endTime": end_ms - 1,  # inclusive on Binance's side: keep the window half-open
                    "limit": PAGE_LIMIT,
                },
                symbol=instrument.symbol,
                parse=parse_klines,
                on_response=self._watch_weight,
            )
            fresh = [r for r in page if last_open < r[0] < end_ms and r[0] >= start_ms]
            rows.extend(fresh)
            if fresh:
                last_open = fresh[-1][0]
            if len(page) < PAGE_LIMIT or not fresh:
                break
            cursor = last_open + step_ms
        return self._frame(instrument, rows)

    @staticmethod
    def _frame(
        instrument: Instrument, rows: list[tuple[int, float, float, float, float, float]]
    ) -> pd.DataFrame:
        if not rows:
            return empty_bars()
        arr = np.asarray(rows, dtype="float64")
        stamps = pd.to_datetime(np.asarray([r[0] for r in rows], dtype="int64"), unit="ms", utc=True)
        return bars_from_columns(instrument.broker, instrument.symbol, stamps, arr[:, 1:6])

    def close(self) -> None:
        self.client.close()
