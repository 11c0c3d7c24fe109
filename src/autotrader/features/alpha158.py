"""Alpha158: qlib's 158 price-volume factors (``qlib.contrib.data.loader.Alpha158DL``), as a feature family.

Selected with ``features.families: [core, alpha158]`` (params.yaml); the default ``[core]`` leaves the
store exactly as before. Names and formulas follow qlib 0.9.7's default config — 9 k-bar shapes,
4 price ratios at window 0, and 29 rolling operators × windows 5, 10, 20, 30, 60 — with the store's
rules instead of qlib's:

* **complete windows only.** qlib's rolling operators use ``min_periods=1`` (a 60-bar mean on the
  second bar is a 2-bar mean); here a row whose window is not full, or holds a NaN, is NaN. Each
  spec's ``lookback`` is the first defined row, so the store's warm-up covers the longest window.
* **window-local arithmetic.** Every value at row t is computed from rows t-lookback … t only, in a
  fixed order (loops over window *offsets*, each one vectorised numpy pass over all rows; doubling
  trees for sums, max and min; pandas' skip-list rank, which counts positions). No running totals,
  so an incremental day equals a full rebuild bit for bit. Regression and correlation sums are
  centred inside each window, so they do not cancel on prices of 60,000.
* **VWAP.** Bars carry no traded value, so ``VWAP0`` uses the typical price (high+low+close)/3 as
  the bar's VWAP; the qlib comparison (bench/peer_qlib.py) writes the same proxy as qlib's ``$vwap``.

Why numpy and not polars/numba: neither is in the lock (numba would fuse each window's passes into
one loop; polars' rolling kernels keep running totals, which breaks the bit-for-bit rule). Every
operator here is a few vectorised numpy passes per window offset, on views, without temporaries.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autotrader.features.spec import BarArrays, FeatureSpec
from autotrader.features.windows import lag, rolling_mean, rolling_std, rolling_sum
from autotrader.params import FeatureParams

FAMILY = "alpha158"
WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)
EPS = 1e-12  # qlib's guard in every ratio's denominator
_CHUNK = 65_536  # rows per block of the sorted-window quantile (bounds its memory to ~chunk × w)

# (name, formula in qlib's expression language, lookback): k-bar and price features.
_STATIC: tuple[tuple[str, str], ...] = (
    ("KMID", "($close-$open)/$open"),
    ("KLEN", "($high-$low)/$open"),
    ("KMID2", "($close-$open)/($high-$low+1e-12)"),
    ("KUP", "($high-Greater($open, $close))/$open"),
    ("KUP2", "($high-Greater($open, $close))/($high-$low+1e-12)"),
    ("KLOW", "(Less($open, $close)-$low)/$open"),
    ("KLOW2", "(Less($open, $close)-$low)/($high-$low+1e-12)"),
    ("KSFT", "(2*$close-$high-$low)/$open"),
    ("KSFT2", "(2*$close-$high-$low)/($high-$low+1e-12)"),
    ("OPEN0", "$open/$close"),
    ("HIGH0", "$high/$close"),
    ("LOW0", "$low/$close"),
    ("VWAP0", "$vwap/$close"),
)

# Rolling operators: name → (qlib formula with {d}, extra lookback beyond d-1: 1 where a Ref(·, 1) is read).
_ROLLING: dict[str, tuple[str, int]] = {
    "ROC": ("Ref($close, {d})/$close", 1),
    "MA": ("Mean($close, {d})/$close", 0),
    "STD": ("Std($close, {d})/$close", 0),
    "BETA": ("Slope($close, {d})/$close", 0),
    "RSQR": ("Rsquare($close, {d})", 0),
    "RESI": ("Resi($close, {d})/$close", 0),
    "MAX": ("Max($high, {d})/$close", 0),
    "MIN": ("Min($low, {d})/$close", 0),
    "QTLU": ("Quantile($close, {d}, 0.8)/$close", 0),
    "QTLD": ("Quantile($close, {d}, 0.2)/$close", 0),
    "RANK": ("Rank($close, {d})", 0),
    "RSV": ("($close-Min($low, {d}))/(Max($high, {d})-Min($low, {d})+1e-12)", 0),
    "IMAX": ("IdxMax($high, {d})/{d}", 0),
    "IMIN": ("IdxMin($low, {d})/{d}", 0),
    "IMXD": ("(IdxMax($high, {d})-IdxMin($low, {d}))/{d}", 0),
    "CORR": ("Corr($close, Log($volume+1), {d})", 0),
    "CORD": ("Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), {d})", 1),
    "CNTP": ("Mean($close>Ref($close, 1), {d})", 1),
    "CNTN": ("Mean($close<Ref($close, 1), {d})", 1),
    "CNTD": ("Mean($close>Ref($close, 1), {d})-Mean($close<Ref($close, 1), {d})", 1),
    "SUMP": ("Sum(Greater($close-Ref($close, 1), 0), {d})/(Sum(Abs($close-Ref($close, 1)), {d})+1e-12)", 1),
    "SUMN": ("Sum(Greater(Ref($close, 1)-$close, 0), {d})/(Sum(Abs($close-Ref($close, 1)), {d})+1e-12)", 1),
    "SUMD": (
        "(Sum(Greater($close-Ref($close, 1), 0), {d})-Sum(Greater(Ref($close, 1)-$close, 0), {d}))"
        "/(Sum(Abs($close-Ref($close, 1)), {d})+1e-12)",
        1,
    ),
    "VMA": ("Mean($volume, {d})/($volume+1e-12)", 0),
    "VSTD": ("Std($volume, {d})/($volume+1e-12)", 0),
    "WVMA": (
        "Std(Abs($close/Ref($close, 1)-1)*$volume, {d})/(Mean(Abs($close/Ref($close, 1)-1)*$volume, {d})+1e-12)",
        1,
    ),
    "VSUMP": (
        "Sum(Greater($volume-Ref($volume, 1), 0), {d})/(Sum(Abs($volume-Ref($volume, 1)), {d})+1e-12)",
        1,
    ),
    "VSUMN": (
        "Sum(Greater(Ref($volume, 1)-$volume, 0), {d})/(Sum(Abs($volume-Ref($volume, 1)), {d})+1e-12)",
        1,
    ),
    "VSUMD": (
        "(Sum(Greater($volume-Ref($volume, 1), 0), {d})-Sum(Greater(Ref($volume, 1)-$volume, 0), {d}))"
        "/(Sum(Abs($volume-Ref($volume, 1)), {d})+1e-12)",
        1,
    ),
}


def names() -> list[str]:
    """The 158 column names in qlib's order (k-bar, price, then each operator over every window)."""
    return [n for n, _ in _STATIC] + [f"{op}{d}" for op in _ROLLING for d in WINDOWS]


def specs(p: FeatureParams) -> list[FeatureSpec]:
    """qlib's formula text in each spec; lookback = first complete row (ROC d reads d bars back)."""
    out = [FeatureSpec(n, FAMILY, f"qlib Alpha158 {n}", f, 0) for n, f in _STATIC]
    for op, (formula, extra) in _ROLLING.items():
        for d in WINDOWS:
            lookback = d if op == "ROC" else d - 1 + extra
            out.append(
                FeatureSpec(f"{op}{d}", FAMILY, f"qlib Alpha158 {op}{d}", formula.format(d=d), lookback)
            )
    return out


# ----------------------------------------------------------------------------------------- window helpers


def _has_nan(x: np.ndarray, w: int) -> np.ndarray:
    return rolling_sum(np.isnan(x).astype(np.float64), w) != 0  # NaN (too few rows) also counts as True


def _rolling_extreme(x: np.ndarray, w: int, pick: Callable[..., np.ndarray]) -> np.ndarray:
    """max/min of the last w values by a doubling table (exact: max and min never round)."""
    level, size = x, 1
    while size * 2 <= w:
        level = pick(level, lag(level, size))
        size *= 2
    out = pick(level, lag(level, w - size)) if size < w else level.copy()
    out[_has_nan(x, w)] = np.nan
    return out


def _window_rows(x: np.ndarray, w: int, k: int) -> np.ndarray:
    """For every complete window (rows w-1 … n-1), its k-th row counted from the oldest (k = 0 … w-1): a view."""
    return x[k : len(x) - w + 1 + k]


def _complete(values: np.ndarray, n: int, w: int) -> np.ndarray:
    """Values of the complete windows placed at rows w-1 … n-1; the first w-1 rows NaN."""
    out = np.full(n, np.nan)
    out[w - 1 :] = values
    return out


def _rolling_argextreme(x: np.ndarray, w: int, better: Callable[..., np.ndarray]) -> np.ndarray:
    """1-based position of the window's max (or min) counted from its oldest row; the earliest on ties."""
    n = len(x)
    if n < w:
        return np.full(n, np.nan)
    best = _window_rows(x, w, 0).copy()
    pos = np.ones(n - w + 1)
    take = np.empty(n - w + 1, dtype=bool)
    for k in range(1, w):  # from the second-oldest to the newest row of the window
        value = _window_rows(x, w, k)
        better(value, best, out=take)
        np.copyto(best, value, where=take)
        pos[take] = k + 1
    out = _complete(pos, n, w)
    out[_has_nan(x, w)] = np.nan
    return out


def _rolling_quantiles(x: np.ndarray, w: int, qs: tuple[float, ...]) -> list[np.ndarray]:
    """pandas' linear-interpolation rolling quantiles, from one partial sort of each window (blocks of rows)."""
    n = len(x)
    outs = [np.full(n, np.nan) for _ in qs]
    if n < w:
        return outs
    plan = []
    for q in qs:
        rank = q * (w - 1)  # pandas: idx = q·(nobs−1); low + (high − low)·(idx − floor(idx))
        lo = int(rank)
        plan.append((lo, min(lo + 1, w - 1), rank - lo))
    kth = sorted({k for lo, hi, _ in plan for k in (lo, hi)})
    windows = np.lib.stride_tricks.sliding_window_view(x, w)
    for start in range(0, len(windows), _CHUNK):
        block = np.partition(windows[start : start + _CHUNK], kth, axis=1)
        rows = slice(w - 1 + start, w - 1 + start + len(block))
        for out, (lo, hi, frac) in zip(outs, plan, strict=True):
            vlow = block[:, lo]
            out[rows] = vlow if frac == 0 else vlow + (block[:, hi] - vlow) * frac
    has_nan = _has_nan(x, w)
    for out in outs:
        out[has_nan] = np.nan
    return outs


def _rolling_rank_pct(x: np.ndarray, w: int) -> np.ndarray:
    """scipy's percentileofscore(window, x[t], kind='rank') / 100: (below + (equal + 1)/2) / w.

    Counted by comparing x[t] with each older row of its window: integers, so exact and window-local.
    """
    n = len(x)
    if n < w:
        return np.full(n, np.nan)
    last = _window_rows(x, w, w - 1)
    below = np.zeros(n - w + 1)
    equal = np.zeros(n - w + 1)
    for k in range(w - 1):
        older = _window_rows(x, w, k)
        below += older < last
        equal += older == last
    out = _complete((below + equal / 2.0 + 1.0) / w, n, w)  # x[t] itself: one more equal value
    out[_has_nan(x, w)] = np.nan
    return out


def _regression(y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope, R² and last residual of y on time 1…w in each window (y centred on its window mean)."""
    n = len(y)
    if n < w:
        nan = np.full(n, np.nan)
        return nan, nan.copy(), nan.copy()
    mean = rolling_mean(y, w)[w - 1 :]
    xc = np.arange(w, dtype=np.float64) - (w - 1) / 2.0  # oldest … newest, centred
    sxx = float(np.sum(xc * xc))
    sxy = np.zeros(n - w + 1)
    syy = np.zeros(n - w + 1)
    dev = np.empty(n - w + 1)
    for k in range(w):  # k-th row of each window, from the oldest
        np.subtract(_window_rows(y, w, k), mean, out=dev)
        sxy += xc[k] * dev
        syy += dev * dev
    slope = sxy / sxx
    rsq = sxy * sxy / (sxx * syy)
    resi = (_window_rows(y, w, w - 1) - mean) - slope * xc[-1]
    return _complete(slope, n, w), _complete(rsq, n, w), _complete(resi, n, w)


def _corr(a: np.ndarray, b: np.ndarray, w: int) -> np.ndarray:
    """Pearson correlation inside each window (two-pass: deviations from the window means)."""
    n = len(a)
    if n < w:
        return np.full(n, np.nan)
    ma, mb = rolling_mean(a, w)[w - 1 :], rolling_mean(b, w)[w - 1 :]
    sab, saa, sbb = (np.zeros(n - w + 1) for _ in range(3))
    da, db = np.empty(n - w + 1), np.empty(n - w + 1)
    for k in range(w):
        np.subtract(_window_rows(a, w, k), ma, out=da)
        np.subtract(_window_rows(b, w, k), mb, out=db)
        sab += da * db
        saa += da * da
        sbb += db * db
    return _complete(sab / np.sqrt(saa * sbb), n, w)


def _indicator(condition: np.ndarray, defined: np.ndarray) -> np.ndarray:
    return np.where(defined, condition.astype(np.float64), np.nan)


# ----------------------------------------------------------------------------------------- compute


def compute(bars: BarArrays, p: FeatureParams, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All 158 columns; ``known`` (other families' features) is not used."""
    o, h, lo, c, v = bars.open, bars.high, bars.low, bars.close, bars.volume
    out: dict[str, np.ndarray] = {}
    rng = h - lo + EPS
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    out["KMID"] = (c - o) / o
    out["KLEN"] = (h - lo) / o
    out["KMID2"] = (c - o) / rng
    out["KUP"] = (h - top) / o
    out["KUP2"] = (h - top) / rng
    out["KLOW"] = (bottom - lo) / o
    out["KLOW2"] = (bottom - lo) / rng
    out["KSFT"] = (2 * c - h - lo) / o
    out["KSFT2"] = (2 * c - h - lo) / rng
    out["OPEN0"] = o / c
    out["HIGH0"] = h / c
    out["LOW0"] = lo / c
    out["VWAP0"] = ((h + lo + c) / 3.0) / c

    prev_c, prev_v = lag(c, 1), lag(v, 1)
    dc, dv = c - prev_c, v - prev_v
    has_dc = ~np.isnan(dc)
    up, down = _indicator(dc > 0, has_dc), _indicator(dc < 0, has_dc)
    gain, loss, move = np.maximum(dc, 0.0), np.maximum(-dc, 0.0), np.abs(dc)
    vgain, vloss, vmove = np.maximum(dv, 0.0), np.maximum(-dv, 0.0), np.abs(dv)
    log_v1 = np.log(v + 1.0)
    ratio_c = c / prev_c
    log_ratio_v = np.log(v / prev_v + 1.0)
    weighted = np.abs(ratio_c - 1.0) * v
    v_eps = v + EPS

    for d in WINDOWS:
        out[f"ROC{d}"] = lag(c, d) / c
        out[f"MA{d}"] = rolling_mean(c, d) / c
        out[f"STD{d}"] = rolling_std(c, d) / c
        slope, rsq, resi = _regression(c, d)
        out[f"BETA{d}"] = slope / c
        out[f"RSQR{d}"] = rsq
        out[f"RESI{d}"] = resi / c
        hi_d = _rolling_extreme(h, d, np.maximum)
        lo_d = _rolling_extreme(lo, d, np.minimum)
        out[f"MAX{d}"] = hi_d / c
        out[f"MIN{d}"] = lo_d / c
        qtlu, qtld = _rolling_quantiles(c, d, (0.8, 0.2))
        out[f"QTLU{d}"] = qtlu / c
        out[f"QTLD{d}"] = qtld / c
        out[f"RANK{d}"] = _rolling_rank_pct(c, d)
        out[f"RSV{d}"] = (c - lo_d) / (hi_d - lo_d + EPS)
        imax = _rolling_argextreme(h, d, np.greater)
        imin = _rolling_argextreme(lo, d, np.less)
        out[f"IMAX{d}"] = imax / d
        out[f"IMIN{d}"] = imin / d
        out[f"IMXD{d}"] = (imax - imin) / d
        out[f"CORR{d}"] = _corr(c, log_v1, d)
        out[f"CORD{d}"] = _corr(ratio_c, log_ratio_v, d)
        cntp, cntn = rolling_mean(up, d), rolling_mean(down, d)
        out[f"CNTP{d}"] = cntp
        out[f"CNTN{d}"] = cntn
        out[f"CNTD{d}"] = cntp - cntn
        s_gain, s_loss, s_move = rolling_sum(gain, d), rolling_sum(loss, d), rolling_sum(move, d) + EPS
        out[f"SUMP{d}"] = s_gain / s_move
        out[f"SUMN{d}"] = s_loss / s_move
        out[f"SUMD{d}"] = (s_gain - s_loss) / s_move
        out[f"VMA{d}"] = rolling_mean(v, d) / v_eps
        out[f"VSTD{d}"] = rolling_std(v, d) / v_eps
        out[f"WVMA{d}"] = rolling_std(weighted, d) / (rolling_mean(weighted, d) + EPS)
        sv_gain, sv_loss = rolling_sum(vgain, d), rolling_sum(vloss, d)
        sv_move = rolling_sum(vmove, d) + EPS
        out[f"VSUMP{d}"] = sv_gain / sv_move
        out[f"VSUMN{d}"] = sv_loss / sv_move
        out[f"VSUMD{d}"] = (sv_gain - sv_loss) / sv_move
    return out
