"""The bar schema every source returns and every stage downstream relies on.

``timestamp`` is the bar's open time, UTC and tz-aware. ``spread`` is the quoted ask − bid in price
units where the broker gives one (Oanda, the simulator) and null where it does not (Binance klines).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BAR_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "broker",
    "symbol",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "spread",
)
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMERIC_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume", "spread")
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"


def empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["timestamp"] = pd.Series(dtype=TIMESTAMP_DTYPE)
    frame["broker"] = frame["broker"].astype(object)
    frame["symbol"] = frame["symbol"].astype(object)
    return frame


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Order the columns and cast the numeric ones; used by sources whose data are known to be well-typed.

    It does not sort, deduplicate or fix anything: finding broken data is validation's job.
    """
    out = frame.loc[:, list(BAR_COLUMNS)].copy()
    for col in NUMERIC_COLUMNS:
        out[col] = out[col].astype("float64")
    out["broker"] = out["broker"].astype(object)
    out["symbol"] = out["symbol"].astype(object)
    return out.reset_index(drop=True)


def interval_alias(interval: pd.Timedelta) -> str:
    """``7min`` rather than ``0 days 00:07:00`` in messages."""
    return pd.tseries.frequencies.to_offset(interval).freqstr


def bars_from_columns(
    broker: str,
    symbol: str,
    timestamps: pd.DatetimeIndex,
    ohlcv: np.ndarray,
    spread: np.ndarray | float = np.nan,
) -> pd.DataFrame:
    """Bars from a broker's rows: an (n, 5) float array of open, high, low, close, volume."""
    if len(timestamps) == 0:
        return empty_bars()
    frame = pd.DataFrame(
        {
            "timestamp": timestamps,
            "broker": broker,
            "symbol": symbol,
            "open": ohlcv[:, 0],
            "high": ohlcv[:, 1],
            "low": ohlcv[:, 2],
            "close": ohlcv[:, 3],
            "volume": ohlcv[:, 4],
            "spread": spread,
        }
    )
    return conform(frame)
