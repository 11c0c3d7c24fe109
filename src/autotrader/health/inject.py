"""Known defects and market shifts, injected into the bars from a moment on: the health check's test cases.

Each takes one instrument's bars (time order) and a start ``since``, and returns new bars in the bar
schema; the bench (bench/health_power.py) and the tests use them to measure what the check detects.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def _late(bars: pd.DataFrame, since: pd.Timestamp) -> np.ndarray:
    return (bars["timestamp"] >= since).to_numpy()


def volatility(bars: pd.DataFrame, since: pd.Timestamp, factor: float = 2.0) -> pd.DataFrame:
    """Every log price move from ``since`` on ×factor, wicks too; volume and relative spread kept."""
    out = bars.copy()
    late = _late(out, since)
    log_close = np.log(out["close"].to_numpy(dtype=float))
    moves = np.diff(log_close, prepend=log_close[0])
    moves[late] *= factor
    close = np.exp(log_close[0] + np.cumsum(moves))
    open_ = np.r_[out["open"].iloc[0], close[:-1]]
    k = np.where(late, factor, 1.0)
    up = np.log(out["high"] / np.maximum(out["open"], out["close"])).to_numpy()
    down = np.log(np.minimum(out["open"], out["close"]) / out["low"]).to_numpy()
    rel_spread = (out["spread"] / out["close"]).to_numpy()
    out["open"], out["close"] = open_, close
    out["high"] = np.maximum(open_, close) * np.exp(k * up)
    out["low"] = np.minimum(open_, close) * np.exp(-k * down)
    out["spread"] = rel_spread * close
    return out


def spread(bars: pd.DataFrame, since: pd.Timestamp, factor: float = 3.0) -> pd.DataFrame:
    """The quoted spread from ``since`` on ×factor."""
    out = bars.copy()
    late = _late(out, since)
    out.loc[late, "spread"] = out.loc[late, "spread"] * factor
    return out


def price_scale(bars: pd.DataFrame, since: pd.Timestamp, factor: float = 100.0) -> pd.DataFrame:
    """Every price field (open, high, low, close, spread) from ``since`` on ×factor: a unit or split error."""
    out = bars.copy()
    late = _late(out, since)
    for column in ("open", "high", "low", "close", "spread"):
        out.loc[late, column] = out.loc[late, column] * factor
    return out


def frozen(bars: pd.DataFrame, since: pd.Timestamp) -> pd.DataFrame:
    """A stuck feed: from ``since`` on every bar repeats the last close before it (open = high = low = close)."""
    out = bars.copy()
    late = _late(out, since)
    if not late.any():
        return out
    first = int(np.argmax(late))
    last = float(out["close"].iloc[first - 1]) if first > 0 else float(out["open"].iloc[first])
    for column in ("open", "high", "low", "close"):
        out.loc[late, column] = last
    return out


def volume(bars: pd.DataFrame, since: pd.Timestamp, factor: float = 0.1) -> pd.DataFrame:
    """Volume from ``since`` on ×factor (a venue dropped from the consolidated feed)."""
    out = bars.copy()
    late = _late(out, since)
    out.loc[late, "volume"] = out.loc[late, "volume"] * factor
    return out


ONE_HOUR = pd.Timedelta(hours=1)


def gap(bars: pd.DataFrame, since: pd.Timestamp, length: pd.Timedelta = ONE_HOUR) -> pd.DataFrame:
    """The bars in [since, since + length) removed."""
    ts = bars["timestamp"]
    return bars[~((ts >= since) & (ts < since + length))].reset_index(drop=True)


SHIFTS: dict[str, Callable[[pd.DataFrame, pd.Timestamp], pd.DataFrame]] = {
    "volatility ×2": volatility,
    "spread ×3": spread,
    "price scale ×100": price_scale,
    "frozen feed": frozen,
    "volume ×0.1": volume,
    "one-hour gap": gap,
}
