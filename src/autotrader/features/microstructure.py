"""Microstructure features: spread, volume surprise, price impact, range volatility, order-flow sign.

Raw volume is not comparable across instruments (BTC lots vs SPY shares), so every volume feature
is either a z-score, a share, or cancels its units.
"""

from __future__ import annotations

import numpy as np

from autotrader.features.spec import BarArrays, FeatureSpec
from autotrader.features.windows import lag, rolling_mean, rolling_std, rolling_sum, safe_divide
from autotrader.params import FeatureParams

FAMILY = "microstructure"
_FOUR_LN2 = 4.0 * np.log(2.0)


def specs(p: FeatureParams) -> list[FeatureSpec]:
    return [
        FeatureSpec(
            "rel_spread",
            FAMILY,
            "quoted spread relative to price; NaN where the broker gives no spread (Binance klines)",
            "spread / close",
            0,
        ),
        FeatureSpec(
            f"volume_z_{p.volume_z_window}",
            FAMILY,
            "z-score of log volume against its rolling window; 0 when volume is constant",
            "(ln(1+v) - mean(ln(1+v), w)) / std(ln(1+v), w, ddof=1)",
            p.volume_z_window - 1,
            {"window": p.volume_z_window},
        ),
        FeatureSpec(
            f"amihud_{p.amihud_window}",
            FAMILY,
            "Amihud illiquidity scaled by the window's mean dollar volume, in bps: the |return| one "
            "average bar's volume moves the price (units cancel, so comparable across instruments); "
            "NaN while a zero-volume bar is in the window",
            "1e4 · mean(|ret_1| / (close·v), w) · mean(close·v, w)",
            p.amihud_window,
            {"window": p.amihud_window},
        ),
        FeatureSpec(
            f"parkinson_{p.parkinson_window}",
            FAMILY,
            "Parkinson high-low volatility per bar",
            "sqrt(mean(ln(high/low)², w) / (4 ln 2))",
            p.parkinson_window - 1,
            {"window": p.parkinson_window},
        ),
        FeatureSpec(
            f"signed_volume_{p.signed_volume_window}",
            FAMILY,
            "signed-volume proxy: net share of volume on up bars, in [-1, 1]; 0 when no volume",
            "Σ sign(close-open)·v / Σ v over w",
            p.signed_volume_window - 1,
            {"window": p.signed_volume_window},
        ),
    ]


def compute(bars: BarArrays, p: FeatureParams, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``known``: features of earlier families (unused here)."""
    close, volume = bars.close, bars.volume
    out: dict[str, np.ndarray] = {"rel_spread": bars.spread / close}

    log_volume = np.log1p(np.where(volume >= 0, volume, np.nan))
    w = p.volume_z_window
    out[f"volume_z_{w}"] = safe_divide(
        log_volume - rolling_mean(log_volume, w), rolling_std(log_volume, w, ddof=1), where_zero=0.0
    )

    log_close = np.log(close)
    abs_ret = np.abs(log_close - lag(log_close, 1))
    dollar_volume = close * volume
    dollar_volume = np.where(dollar_volume > 0, dollar_volume, np.nan)
    w = p.amihud_window
    out[f"amihud_{w}"] = 1e4 * rolling_mean(abs_ret / dollar_volume, w) * rolling_mean(dollar_volume, w)

    w = p.parkinson_window
    hl = np.log(bars.high / bars.low)
    out[f"parkinson_{w}"] = np.sqrt(rolling_mean(hl * hl, w) / _FOUR_LN2)

    w = p.signed_volume_window
    signed = np.sign(close - bars.open) * volume
    out[f"signed_volume_{w}"] = safe_divide(rolling_sum(signed, w), rolling_sum(volume, w), where_zero=0.0)
    return out
