"""The newest bar's features only, bit for bit what ``compute_feature_arrays`` gives for that row.

Why: the bars-in server (``autotrader.serving.bars``) needs one row — the newest bar's — from a
request that carries the warm-up window. The full path computes every feature for every bar of the
window (336 rows with the default params) and throws all but the last row away; its window loops
(``rolling_std`` and the truncated EMAs iterate over window offsets) cost the same whatever the
number of rows, so the server paid ~1.6 ms of CPU per instrument for one row.

How it stays exact: every feature here does the *same floating-point operations in the same order*
as the full path (``technical``, ``microstructure``, ``regime`` over ``windows``), only on fewer rows:

- element-wise steps (log, differences, ratios, ``safe_divide``) run on the short tail a feature
  reads, with the same numpy ufuncs on contiguous arrays;
- ``rolling_sum``/``rolling_mean`` (a fixed doubling tree, window-local by construction) run, as
  they are, on the minimal tail: row t of the tail is row t of the whole series;
- ``rolling_std`` and ``rolling_weighted_sum`` accumulate offset by offset (acc += term_j, j = 0 …
  w-1, newest first). Here the same terms are laid out as a (rows × w) matrix and summed with
  ``np.cumsum`` along the window axis — a strictly sequential left fold, the same additions in the
  same order (``np.sum`` would sum pairwise and differ in the last bits, so it is never used);
- the regime rank counts the window's values below / equal to the newest one: pandas' average rank
  of those integers, which is exact in float64 for any window this size.

Only the ``core`` family is implemented here; any other family (``alpha158``) is computed by the
full path over the window, so the result is still the store's row. ``tests/test_features_lastrow.py``
checks every feature against ``compute_feature_arrays`` with ``np.array_equal`` over many windows of
the simulated market, the real EURUSD file and edge cases (flat prices, zero volume, no spread).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

from autotrader.features import microstructure, regime
from autotrader.features.build import compute_feature_arrays_of, feature_specs, warmup_bars
from autotrader.features.spec import FEATURE_DTYPE, BarArrays
from autotrader.features.technical import EMA_SPANS
from autotrader.features.windows import safe_divide, truncated_ema_weights
from autotrader.params import FeatureParams

_CORE = ("core",)


def last_row_sum(x: np.ndarray, w: int, rows: int = 1) -> np.ndarray:
    """``windows.rolling_sum(x, w)[-rows:]``, bit for bit: the same doubling tree, built for those rows only.

    Level b holds sums of 2^b consecutive values, level b = level b-1 + level b-1 shifted by 2^(b-1),
    and the window adds the levels of w's set bits from the lowest, exactly as ``rolling_sum``; the
    arrays here are aligned on the newest value and shrink by each shift instead of being NaN-padded.
    """
    need = rows + w - 1
    if w < 1 or len(x) < need:
        raise ValueError(f"last_row_sum: {len(x)} values, {need} needed for {rows} row(s) of window {w}")
    level = np.asarray(x[len(x) - need :], dtype=np.float64)
    size, offset, remaining = 1, 0, w
    total: np.ndarray | None = None
    while True:
        if remaining & 1:
            stop = len(level) - offset
            part = level[stop - rows : stop]
            total = part if total is None else total + part
            offset += size
        remaining >>= 1
        if not remaining:
            break
        level = level[size:] + level[:-size]
        size *= 2
    assert total is not None
    return total


def last_row_mean(x: np.ndarray, w: int, rows: int = 1) -> np.ndarray:
    """``windows.rolling_mean(x, w)[-rows:]``, bit for bit."""
    return last_row_sum(x, w, rows) / w


def _windows(tail: np.ndarray, w: int) -> np.ndarray:
    """(rows × w) view of a contiguous tail; column j holds x[t-j] (newest first), as the window loops add."""
    rows = len(tail) - w + 1
    if rows == 1:
        return tail[::-1][None, :]
    step = tail.strides[0]
    return as_strided(tail[w - 1 :], shape=(rows, w), strides=(step, -step), writeable=False)


def last_row_std(x: np.ndarray, w: int, rows: int = 1, ddof: int = 1) -> np.ndarray:
    """``windows.rolling_std(x, w, ddof)[-rows:]``, bit for bit, from the last ``rows + w - 1`` values."""
    need = rows + w - 1
    if len(x) < need or w - ddof <= 0:
        raise ValueError(f"last_row_std: {len(x)} values, {need} needed for {rows} row(s) of window {w}")
    tail = np.ascontiguousarray(x[len(x) - need :], dtype=np.float64)
    mean = last_row_mean(tail, w, rows)  # the same doubling tree on the same window values
    terms = _windows(tail, w) - mean[:, None]  # x[t-j] - mean_t, the order rolling_std adds them
    np.multiply(terms, terms, out=terms)
    acc = np.cumsum(terms, axis=1)[:, -1]  # sequential: ((d0² + d1²) + d2²) + …, never pairwise
    return np.sqrt(acc / (w - ddof))


def last_row_weighted_sum(x: np.ndarray, weights: np.ndarray, rows: int = 1) -> np.ndarray:
    """``windows.rolling_weighted_sum(x, weights)[-rows:]``, bit for bit, from the last values it reads."""
    w = len(weights)
    need = rows + w - 1
    if len(x) < need:
        raise ValueError(f"last_row_weighted_sum: {len(x)} values, {need} needed")
    tail = np.ascontiguousarray(x[len(x) - need :], dtype=np.float64)
    # rolling_weighted_sum adds x·1.0 as x itself; a product with 1.0 is x exactly, so one rule fits
    terms = _windows(tail, w) * weights[None, :]
    return np.cumsum(terms, axis=1)[:, -1]


@lru_cache(maxsize=64)
def _ema_weights(span: int) -> np.ndarray:
    weights = truncated_ema_weights(span, EMA_SPANS)
    weights.flags.writeable = False
    return weights


def last_row_rank(x: np.ndarray, w: int) -> float:
    """``windows.rolling_rank(x, w)[-1]``: pandas' average rank of x[t] among the last w values, scaled."""
    window = np.asarray(x[len(x) - w :], dtype=np.float64)
    if len(window) < w or w < 2 or np.isnan(window).any():
        return float("nan")
    newest = window[-1]
    less = int(np.count_nonzero(window < newest))
    equal = int(np.count_nonzero(window == newest))  # includes the newest value itself
    with_self = less + (equal + 1) / 2  # mean of the tied ranks less+1 … less+equal (exact: halves)
    return (with_self - 1.0) / (w - 1)


def _technical(bars: BarArrays, p: FeatureParams) -> dict[str, float]:
    close = bars.close
    out: dict[str, float] = {}
    longest = max(*p.return_horizons, *p.vol_windows) + 1  # ret_h reads h + 1 closes, vol_w w + 1
    log_close = np.log(close[-longest:])
    for h in p.return_horizons:
        out[f"ret_{h}"] = log_close[-1] - log_close[-1 - h]
    ret_1 = log_close[1:] - log_close[:-1]

    w = p.rsi_window
    c = close[-(w + 1) :]
    change = c[1:] - c[:-1]
    gain = last_row_mean(np.where(np.isnan(change), np.nan, np.maximum(change, 0.0)), w)
    loss = last_row_mean(np.where(np.isnan(change), np.nan, np.maximum(-change, 0.0)), w)
    out[f"rsi_{w}"] = (100.0 * safe_divide(gain, gain + loss, where_zero=0.5))[-1]

    w_signal = _ema_weights(p.macd.signal)
    rows = len(w_signal)  # the signal EMA reads this many rows of the line
    ema_fast = last_row_weighted_sum(close, _ema_weights(p.macd.fast), rows)
    ema_slow = last_row_weighted_sum(close, _ema_weights(p.macd.slow), rows)
    line = (ema_fast - ema_slow) / close[-rows:]
    signal = last_row_weighted_sum(line, w_signal)[-1]
    out["macd_line"] = line[-1]
    out["macd_signal"] = signal
    out["macd_hist"] = line[-1] - signal

    w = p.bollinger_window
    c = close[-w:]
    mid = last_row_mean(c, w)
    sigma = last_row_std(c, w, ddof=0)
    out[f"bb_pctb_{w}"] = safe_divide(c[-1:] - (mid - 2.0 * sigma), 4.0 * sigma, where_zero=0.5)[-1]

    w = p.atr_window
    c, high, low = close[-(w + 1) :], bars.high[-w:], bars.low[-w:]
    prev_close = c[:-1]
    true_range = np.maximum(high - low, np.abs(high - prev_close))
    true_range = np.maximum(true_range, np.abs(low - prev_close))
    out[f"atr_{w}"] = last_row_mean(true_range, w)[-1] / c[-1]

    for vw in p.vol_windows:
        out[f"vol_{vw}"] = last_row_std(ret_1, vw, ddof=1)[-1]
    return out


def _microstructure(bars: BarArrays, p: FeatureParams) -> dict[str, float]:
    close, volume = bars.close, bars.volume
    out: dict[str, float] = {"rel_spread": bars.spread[-1] / close[-1]}

    w = p.volume_z_window
    v = volume[-w:]
    log_volume = np.log1p(np.where(v >= 0, v, np.nan))
    out[f"volume_z_{w}"] = safe_divide(
        log_volume[-1:] - last_row_mean(log_volume, w),
        last_row_std(log_volume, w, ddof=1),
        where_zero=0.0,
    )[-1]

    w = p.amihud_window
    c, v = close[-(w + 1) :], volume[-w:]
    log_close = np.log(c)
    abs_ret = np.abs(log_close[1:] - log_close[:-1])
    dollar_volume = c[1:] * v
    dollar_volume = np.where(dollar_volume > 0, dollar_volume, np.nan)
    amihud = 1e4 * last_row_mean(abs_ret / dollar_volume, w) * last_row_mean(dollar_volume, w)
    out[f"amihud_{w}"] = amihud[-1]

    w = p.parkinson_window
    hl = np.log(bars.high[-w:] / bars.low[-w:])
    out[f"parkinson_{w}"] = np.sqrt(last_row_mean(hl * hl, w) / microstructure._FOUR_LN2)[-1]

    w = p.signed_volume_window
    v = volume[-w:]
    signed = np.sign(close[-w:] - bars.open[-w:]) * v
    out[f"signed_volume_{w}"] = safe_divide(last_row_sum(signed, w), last_row_sum(v, w), where_zero=0.0)[-1]
    return out


def _regime(bars: BarArrays, p: FeatureParams) -> dict[str, float]:
    close = bars.close
    vw, rw = regime.regime_vol_window(p), p.regime_window
    # the realised vol of the last rw rows, as technical computes it (vol_{vw} over 1-bar log returns)
    log_close = np.log(close[-(rw + vw) :])
    vol = last_row_std(log_close[1:] - log_close[:-1], vw, rw, ddof=1)
    rank = last_row_rank(vol, rw)
    regime_value = float("nan") if rank != rank else (0.0 if rank < 1 / 3 else (2.0 if rank > 2 / 3 else 1.0))

    tw, k = p.trend_window, regime.trend_slope_lag(p)
    ma = last_row_mean(close, tw, k + 1)  # MA_t-k … MA_t
    dist = np.log(close[-1:] / ma[-1:])
    slope = np.log(ma[-1:] / ma[:1])
    dist_sign, slope_sign = np.sign(dist), np.sign(slope)
    trend = np.where(dist_sign == slope_sign, dist_sign, 0.0)
    trend[np.isnan(dist) | np.isnan(slope)] = np.nan
    return {
        "vol_rank": rank,
        "vol_regime": regime_value,
        f"trend_dist_{tw}": dist[-1],
        f"trend_slope_{tw}": slope[-1],
        "trend_regime": trend[-1],
    }


def compute_last_row(bars: BarArrays, params: FeatureParams) -> dict[str, float]:
    """One instrument's bars (time order, at least ``warmup_bars(params) + 1``) → the newest row's features.

    Same names, order and bits as ``compute_feature_arrays(bars)[name][-1]`` for every feature
    (non-finite values become NaN, as there). The caller checks order and uniqueness of the bars,
    as the store's caller does.
    """
    names, need = _plan(params)
    if len(bars) < need:
        raise ValueError(f"compute_last_row: {len(bars)} bar(s); the features need {need} (warm-up + 1)")
    if tuple(dict.fromkeys(params.families)) != _CORE:
        # a family without a last-row path: the full path over the minimal window (still exact)
        window = BarArrays(*(np.ascontiguousarray(a[len(a) - need :]) for a in _columns(bars)))
        return {name: float(column[-1]) for name, column in compute_feature_arrays_of(window, params).items()}
    values: dict[str, float] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        values.update(_technical(bars, params))
        values.update(_microstructure(bars, params))
        values.update(_regime(bars, params))
    out: dict[str, float] = {}
    for name in names:
        x = float(np.asarray(values[name], dtype=FEATURE_DTYPE))
        out[name] = x if math.isfinite(x) else math.nan
    return out


@lru_cache(maxsize=16)
def _plan(params: FeatureParams) -> tuple[tuple[str, ...], int]:
    """(feature names in column order, bars needed) for a params set (frozen, hashable): once per set."""
    return tuple(s.name for s in feature_specs(params)), warmup_bars(params) + 1


def _columns(bars: BarArrays) -> tuple[np.ndarray, ...]:
    return (bars.open, bars.high, bars.low, bars.close, bars.volume, bars.spread)


__all__ = ["compute_last_row", "last_row_rank", "last_row_std", "last_row_weighted_sum"]
