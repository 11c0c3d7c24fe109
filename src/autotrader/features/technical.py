"""Technical features: returns, RSI, MACD, Bollinger %B, ATR and realised volatility.

All are ratios or log-differences of prices, so BTC at 60,000 and EURUSD at 1.08 land on the same
scale and one model can serve both.
"""

from __future__ import annotations

import numpy as np

from autotrader.features.spec import BarArrays, FeatureSpec
from autotrader.features.windows import (
    lag,
    rolling_mean,
    rolling_std,
    rolling_weighted_sum,
    safe_divide,
    truncated_ema_weights,
)
from autotrader.params import FeatureParams

FAMILY = "technical"
EMA_SPANS = 4  # truncated EMAs keep 4 spans of weights (see windows.truncated_ema_weights)


def _ema_length(span: int) -> int:
    return len(truncated_ema_weights(span, EMA_SPANS))


def specs(p: FeatureParams) -> list[FeatureSpec]:
    slow_len = max(_ema_length(p.macd.fast), _ema_length(p.macd.slow))
    macd_lb = slow_len - 1
    signal_lb = macd_lb + _ema_length(p.macd.signal) - 1
    macd_params = {"fast": p.macd.fast, "slow": p.macd.slow, "signal": p.macd.signal, "ema_spans": EMA_SPANS}
    out = [
        FeatureSpec(
            f"ret_{h}",
            FAMILY,
            f"log return over the last {h} bars",
            "ln(close_t / close_{t-h})",
            h,
            {"horizon": h},
        )
        for h in p.return_horizons
    ]
    out += [
        FeatureSpec(
            f"rsi_{p.rsi_window}",
            FAMILY,
            "relative strength index (Cutler: simple means of gains and losses), 0-100; 50 when flat",
            "100·mean(gain,w) / (mean(gain,w) + mean(loss,w)), gain = max(Δclose,0), loss = max(-Δclose,0)",
            p.rsi_window,
            {"window": p.rsi_window},
        ),
        FeatureSpec(
            "macd_line",
            FAMILY,
            "MACD line divided by close (scale-free); EMAs truncated to 4 spans",
            "(EMA_fast(close) - EMA_slow(close)) / close",
            macd_lb,
            macd_params,
        ),
        FeatureSpec(
            "macd_signal",
            FAMILY,
            "EMA of the price-normalised MACD line",
            "EMA_signal(macd_line)",
            signal_lb,
            macd_params,
        ),
        FeatureSpec(
            "macd_hist",
            FAMILY,
            "MACD histogram (line minus signal), price-normalised",
            "macd_line - macd_signal",
            signal_lb,
            macd_params,
        ),
        FeatureSpec(
            f"bb_pctb_{p.bollinger_window}",
            FAMILY,
            "Bollinger %B with ±2σ bands (0 = lower band, 1 = upper band); 0.5 when σ = 0",
            "(close - (MA_w - 2σ_w)) / (4σ_w), σ with ddof=0",
            p.bollinger_window - 1,
            {"window": p.bollinger_window, "k": 2},
        ),
        FeatureSpec(
            f"atr_{p.atr_window}",
            FAMILY,
            "average true range divided by close",
            "mean(max(high-low, |high-close_{t-1}|, |low-close_{t-1}|), w) / close",
            p.atr_window,
            {"window": p.atr_window},
        ),
    ]
    out += [
        FeatureSpec(
            f"vol_{w}",
            FAMILY,
            f"realised volatility: standard deviation of 1-bar log returns over {w} bars",
            "std(ln(close_t/close_{t-1}), w, ddof=1)",
            w,
            {"window": w},
        )
        for w in p.vol_windows
    ]
    return out


def compute(bars: BarArrays, p: FeatureParams, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``known``: features of earlier families (unused here)."""
    close = bars.close
    log_close = np.log(close)
    out: dict[str, np.ndarray] = {}
    for h in p.return_horizons:
        out[f"ret_{h}"] = log_close - lag(log_close, h)
    ret_1 = log_close - lag(log_close, 1)

    change = close - lag(close, 1)
    gain = rolling_mean(np.where(np.isnan(change), np.nan, np.maximum(change, 0.0)), p.rsi_window)
    loss = rolling_mean(np.where(np.isnan(change), np.nan, np.maximum(-change, 0.0)), p.rsi_window)
    out[f"rsi_{p.rsi_window}"] = 100.0 * safe_divide(gain, gain + loss, where_zero=0.5)

    ema_fast = rolling_weighted_sum(close, truncated_ema_weights(p.macd.fast, EMA_SPANS))
    ema_slow = rolling_weighted_sum(close, truncated_ema_weights(p.macd.slow, EMA_SPANS))
    line = (ema_fast - ema_slow) / close
    signal = rolling_weighted_sum(line, truncated_ema_weights(p.macd.signal, EMA_SPANS))
    out["macd_line"] = line
    out["macd_signal"] = signal
    out["macd_hist"] = line - signal

    w = p.bollinger_window
    mid = rolling_mean(close, w)
    sigma = rolling_std(close, w, ddof=0)
    out[f"bb_pctb_{w}"] = safe_divide(close - (mid - 2.0 * sigma), 4.0 * sigma, where_zero=0.5)

    prev_close = lag(close, 1)
    # np.maximum propagates NaN: a missing previous close leaves the true range undefined.
    true_range = np.maximum(bars.high - bars.low, np.abs(bars.high - prev_close))
    true_range = np.maximum(true_range, np.abs(bars.low - prev_close))
    out[f"atr_{p.atr_window}"] = rolling_mean(true_range, p.atr_window) / close

    for vw in p.vol_windows:
        out[f"vol_{vw}"] = rolling_std(ret_1, vw, ddof=1)
    return out
