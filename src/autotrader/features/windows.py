"""Window arithmetic that gives the same bits wherever a series starts.

pandas' rolling sum/mean/std keep a running total (add the new value, subtract the old one), so the
value at row t carries rounding from every row before it: computing the same day with a different
amount of history changes the last bits. The store's promise — an incremental update equals a full
rebuild exactly — needs each output to depend on the values inside its window only, summed in a fixed
order. These helpers do that with a loop over the *window offsets* (never over rows): every pass is
one vectorised numpy operation over the whole series.

Convention: the output at row t uses rows t-w+1 … t; rows with fewer than w values before them, or
with any NaN in the window, are NaN (the window is either complete or absent).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FloatArray = np.ndarray


def lag(x: FloatArray, k: int) -> FloatArray:
    """x shifted k rows later (row t holds x[t-k]); the first k rows are NaN."""
    if k < 0:
        raise ValueError("lag must look back (k ≥ 0): a negative lag would read the future")
    out = np.full(len(x), np.nan)
    if k == 0:
        out[:] = x
    elif k < len(x):
        out[k:] = x[:-k]
    return out


def rolling_sum(x: FloatArray, w: int) -> FloatArray:
    """Sum of the last w values as a fixed tree of additions (bit-identical for any start).

    Doubling: level b holds sums of 2^b consecutive values, built from level b-1; the window is then
    the sum of the levels in w's binary expansion. log2(w) + popcount(w) vectorised passes instead of
    w, and pairwise-style rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    if w < 1:
        raise ValueError("a window needs at least one value")
    n = len(x)
    if n < w:
        return np.full(n, np.nan)
    level, size = x, 1
    total: FloatArray | None = None
    offset = 0
    remaining = w
    while True:
        if remaining & 1:
            part = lag(level, offset)
            total = part if total is None else total + part
            offset += size
        remaining >>= 1
        if not remaining:
            break
        level = level + lag(level, size)
        size *= 2
    assert total is not None
    return total


def rolling_weighted_sum(x: FloatArray, weights: FloatArray) -> FloatArray:
    """Σ_j weights[j]·x[t-j] for j = 0 … len(weights)-1 (weights[0] applies to the newest value)."""
    x = np.asarray(x, dtype=np.float64)
    w = len(weights)
    n = len(x)
    out = np.full(n, np.nan)
    if w < 1:
        raise ValueError("a window needs at least one value")
    if n < w:
        return out
    acc = x[w - 1 :] * weights[0] if weights[0] != 1.0 else x[w - 1 :].copy()
    buf = np.empty_like(acc)
    for j in range(1, w):
        segment = x[w - 1 - j : n - j]
        if weights[j] == 1.0:
            acc += segment
        else:
            np.multiply(segment, weights[j], out=buf)
            acc += buf
    out[w - 1 :] = acc
    return out


def rolling_mean(x: FloatArray, w: int) -> FloatArray:
    return rolling_sum(x, w) / w


def rolling_std(x: FloatArray, w: int, ddof: int = 1) -> FloatArray:
    """Two-pass standard deviation inside each window: exact to the window, no cancellation on prices."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    out = np.full(n, np.nan)
    if n < w or w - ddof <= 0:
        return out
    mean = rolling_mean(x, w)[w - 1 :]
    acc = np.zeros(n - w + 1)
    buf = np.empty_like(acc)
    for j in range(w):
        np.subtract(x[w - 1 - j : n - j], mean, out=buf)
        np.multiply(buf, buf, out=buf)
        acc += buf
    out[w - 1 :] = np.sqrt(acc / (w - ddof))
    return out


def rolling_rank(x: FloatArray, w: int) -> FloatArray:
    """Where x[t] sits among the previous w-1 values: share strictly below it (ties count half), in [0, 1].

    Comparing the rank with 1/3 and 2/3 is the same as comparing x[t] with the window's terciles, so
    this gives a rolling-quantile regime without interpolation rules or a sorted structure.
    """
    x = np.asarray(x, dtype=np.float64)
    if w < 2 or len(x) < w:
        return np.full(len(x), np.nan)
    # pandas' rolling rank counts positions in a skip list of exactly the window's values: an integer
    # per row that depends on nothing outside the window (no running float totals).
    with_self = pd.Series(x).rolling(w, min_periods=w).rank(method="average", pct=False).to_numpy()
    rank = (with_self - 1.0) / (w - 1)
    has_nan = rolling_sum(np.isnan(x).astype(np.float64), w) > 0
    rank[has_nan] = np.nan
    return rank


def truncated_ema_weights(span: int, length_in_spans: int) -> FloatArray:
    """EMA weights α(1-α)^j cut after ``length_in_spans·span`` terms and renormalised to sum to 1.

    A true EMA remembers every bar since the series began, so the same bar gets a different value
    depending on how much history was loaded. Cutting after 4 spans drops less than e^-8 of the weight
    and makes the average a finite window like every other feature here.
    """
    alpha = 2.0 / (span + 1.0)
    length = max(1, span * length_in_spans)
    weights = alpha * (1.0 - alpha) ** np.arange(length)
    return weights / weights.sum()


def safe_divide(num: FloatArray, den: FloatArray, where_zero: float) -> FloatArray:
    """num/den, ``where_zero`` where den == 0, NaN where either is NaN (no warnings, no inf)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    num_b, den_b = np.broadcast_arrays(num, den)
    ok = np.isfinite(num_b) & np.isfinite(den_b)
    nonzero = ok & (den_b != 0)
    np.divide(num_b, den_b, out=out, where=nonzero)
    out[ok & (den_b == 0)] = where_zero
    return out
