"""Regime features: is volatility calm, normal or stormy, and is the market trending up or down.

The volatility regime compares today's realised volatility with the terciles of its own recent past
(a rolling rank), so it adapts to each instrument and needs no absolute thresholds.
"""

from __future__ import annotations

import numpy as np

from autotrader.features.spec import BarArrays, FeatureSpec
from autotrader.features.windows import lag, rolling_mean, rolling_rank, rolling_std
from autotrader.params import FeatureParams

FAMILY = "regime"


def regime_vol_window(p: FeatureParams) -> int:
    """The realised-volatility window the regime ranks: the slowest of ``vol_windows``."""
    return max(p.vol_windows)


def trend_slope_lag(p: FeatureParams) -> int:
    """How far back the moving-average slope looks: a quarter of the trend window."""
    return max(1, p.trend_window // 4)


def specs(p: FeatureParams) -> list[FeatureSpec]:
    vw, rw, tw, k = regime_vol_window(p), p.regime_window, p.trend_window, trend_slope_lag(p)
    rank_params = {"vol_window": vw, "window": rw}
    trend_params = {"window": tw, "slope_lag": k}
    return [
        FeatureSpec(
            "vol_rank",
            FAMILY,
            f"rank of vol_{vw} among its previous {rw - 1} values, in [0, 1]",
            "share of vol_{t-j} < vol_t for j = 1…w-1 (ties count half)",
            vw + rw - 1,
            rank_params,
        ),
        FeatureSpec(
            "vol_regime",
            FAMILY,
            "volatility regime: 0 calm (below the window's lower tercile), 1 normal, 2 stormy (above the upper)",
            "0 if vol_rank < 1/3, 2 if vol_rank > 2/3, else 1",
            vw + rw - 1,
            rank_params,
        ),
        FeatureSpec(
            f"trend_dist_{tw}",
            FAMILY,
            "distance of close from its moving average, log",
            "ln(close / MA_w(close))",
            tw - 1,
            trend_params,
        ),
        FeatureSpec(
            f"trend_slope_{tw}",
            FAMILY,
            "slope of the slow moving average, log change over the slope lag",
            "ln(MA_w(close)_t / MA_w(close)_{t-k})",
            tw - 1 + k,
            trend_params,
        ),
        FeatureSpec(
            "trend_regime",
            FAMILY,
            "trend regime: +1 close above a rising MA, -1 below a falling MA, 0 otherwise",
            "sign(trend_dist) if sign(trend_dist) == sign(trend_slope) else 0",
            tw - 1 + k,
            trend_params,
        ),
    ]


def compute(bars: BarArrays, p: FeatureParams, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``known``: features of earlier families; the technical family already has the realised vol."""
    close = bars.close
    vw = regime_vol_window(p)
    vol = known.get(f"vol_{vw}")
    if vol is None:
        log_close = np.log(close)
        vol = rolling_std(log_close - lag(log_close, 1), vw, ddof=1)
    rank = rolling_rank(vol, p.regime_window)
    regime = np.where(rank < 1 / 3, 0.0, np.where(rank > 2 / 3, 2.0, 1.0))
    regime[np.isnan(rank)] = np.nan

    ma = rolling_mean(close, p.trend_window)
    dist = np.log(close / ma)
    slope = np.log(ma / lag(ma, trend_slope_lag(p)))
    dist_sign, slope_sign = np.sign(dist), np.sign(slope)
    trend = np.where(dist_sign == slope_sign, dist_sign, 0.0)
    trend[np.isnan(dist) | np.isnan(slope)] = np.nan
    return {
        "vol_rank": rank,
        "vol_regime": regime,
        f"trend_dist_{p.trend_window}": dist,
        f"trend_slope_{p.trend_window}": slope,
        "trend_regime": trend,
    }
