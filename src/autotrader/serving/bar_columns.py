"""The columnar form of a bars-in request: each instrument's window as columns, not one object per bar.

    {"windows": [{"broker": "binance", "symbol": "BTCUSDT",
                  "timestamp": ["2026-11-19T00:00:00Z", ...], "open": [...], "high": [...],
                  "low": [...], "close": [...], "volume": [...], "spread": [... or null]}]}

The same bar schema as the rows form (``{"bars": [{timestamp, broker, symbol, open, ...}, ...]}``),
column by column, oldest bar first. Why a second form: a stateless request carries the whole warm-up
window (336 bars with the default params). As rows that is 336 JSON objects validated one by one and
regrouped per instrument, about half the endpoint's CPU; as columns, pydantic validates seven flat
lists, numpy converts each at once, and the body is about half the size (docs/serving.md, "Bars in",
has the measurements). Both forms meet the same rules (``bars.check_window``) and give the same answer
bit for bit (tests/test_serving_bars.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from autotrader.params import Broker
from autotrader.serving.schemas import RequestError

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_PLAIN_UTC = 20  # len("2026-11-19T00:00:00Z"): the form clients send, parsed by numpy at once


class BarWindow(BaseModel):
    """One instrument's bars as columns; ``spread`` may be absent, or null where the broker quotes none."""

    # allow_inf_nan: a NaN/Infinity token or an overflow is the finite_values rule's 422, named as such
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=True, frozen=True)

    broker: Broker
    symbol: str = Field(min_length=1, max_length=64)
    timestamp: list[str]  # ISO 8601 with a zone (Z or ±HH:MM): each bar's open time
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]
    spread: list[float | None] | None = None

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.symbol}"


def stamps_us(texts: Sequence[str], where: str) -> np.ndarray:
    """ISO 8601 times with a zone → int64 µs since the epoch (UTC); a 422 naming the bar otherwise.

    ``YYYY-MM-DDTHH:MM:SSZ`` (what clients and the store write) is parsed by numpy in one call; any
    other form (fractions, ``+02:00`` offsets) goes through ``datetime.fromisoformat`` bar by bar.
    """
    if all(len(t) == _PLAIN_UTC and t[10] == "T" and t[-1] == "Z" for t in texts):
        try:
            return np.array([t[:-1] for t in texts], dtype="datetime64[us]").astype(np.int64)
        except ValueError:
            pass  # e.g. month 13: the slow path names the bar
    out = np.empty(len(texts), dtype=np.int64)
    for k, text in enumerate(texts):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise RequestError(
                422,
                f"{where}.timestamp[{k}]: {text!r} is not an ISO 8601 time",
                [{"loc": f"{where}.timestamp[{k}]", "input": text}],
            ) from exc
        if moment.tzinfo is None:
            raise RequestError(
                422,
                f"{where}.timestamp[{k}]: {text!r} has no timezone (send UTC as 'Z' or an offset)",
                [{"loc": f"{where}.timestamp[{k}]", "input": text}],
            )
        out[k] = (moment - _EPOCH) // _US
    return out


def window_arrays(window: BarWindow, where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(timestamps in µs, the price columns as float64 arrays; spread NaN where none was given)."""
    n = len(window.timestamp)
    if n == 0:
        raise RequestError(
            422,
            f"{where} ({window.key}): no bars; send the newest bar and its warm-up, oldest first",
            [{"loc": f"{where}.timestamp", "instrument": window.key, "bars": 0}],
        )
    columns: dict[str, Sequence[float | None]] = {c: getattr(window, c) for c in PRICE_COLUMNS}
    columns["spread"] = window.spread if window.spread is not None else [None] * n
    for name, column in columns.items():
        if len(column) != n:
            raise RequestError(
                422,
                f"{where} ({window.key}): column {name} has {len(column)} values for {n} timestamps",
                [{"loc": f"{where}.{name}", "instrument": window.key, "values": len(column), "bars": n}],
            )
    values = {name: np.array(column, dtype=np.float64) for name, column in columns.items()}
    return stamps_us(window.timestamp, where), values
