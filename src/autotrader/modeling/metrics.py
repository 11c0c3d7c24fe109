"""Performance statistics of a backtest: pure functions on return series.

Conventions (documented in docs/training.md and checked against ``empyrical`` in the tests):

* Sharpe: mean / sample standard deviation (ddof = 1) of **daily** returns × √(periods per year),
  no risk-free rate; 0 when the returns do not vary (e.g. no trades).
* Max drawdown: the largest fall of the equity curve from a running peak, the starting equity
  included, as a positive fraction (0.12 = 12 %).
* Win rate: winning trades / trades (a trade's return includes its entry and exit costs).
* Profit factor: gross profit of winning trades / gross loss of losing trades (None when no loss).
* Deflated Sharpe ratio (Bailey & López de Prado, 2014): the probability that the true Sharpe is
  above the best Sharpe expected from ``n_trials`` unskilled configurations.
* Sharpe confidence interval: percentile interval over a stationary bootstrap (Politis & Romano,
  1994) of the daily returns, implemented here in numpy (no extra dependency); its coverage on a
  known autocorrelated process is tested.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

EULER_GAMMA = 0.5772156649015329


def sharpe_ratio(daily_returns: pd.Series | np.ndarray, periods_per_year: float) -> float:
    values = np.asarray(daily_returns, dtype="float64")
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return 0.0
    std = values.std(ddof=1)
    if std == 0 or values.max() == values.min():
        return 0.0
    return float(values.mean() / std * math.sqrt(periods_per_year))


def equity_curve(returns: pd.Series | np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 + np.asarray(returns, dtype="float64"))


def drawdown(returns: pd.Series | np.ndarray) -> np.ndarray:
    """Drawdown after each return (≤ 0), measured from the running peak including the start (1.0)."""
    equity = equity_curve(returns)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    return equity / peak - 1.0


def max_drawdown(returns: pd.Series | np.ndarray) -> float:
    values = np.asarray(returns, dtype="float64")
    if len(values) == 0:
        return 0.0
    return float(-drawdown(values).min())


def win_rate(trade_returns: pd.Series | np.ndarray) -> float:
    values = np.asarray(trade_returns, dtype="float64")
    return float((values > 0).mean()) if len(values) else 0.0


def profit_factor(trade_returns: pd.Series | np.ndarray) -> float | None:
    values = np.asarray(trade_returns, dtype="float64")
    loss = -values[values < 0].sum()
    if loss == 0:
        return None
    return float(values[values > 0].sum() / loss)


def information_coefficient(score: np.ndarray, forward: np.ndarray) -> tuple[float, float]:
    """(Pearson IC, Spearman rank IC) of a prediction score against realised forward returns."""
    score = np.asarray(score, dtype="float64")
    forward = np.asarray(forward, dtype="float64")
    ok = np.isfinite(score) & np.isfinite(forward)
    if ok.sum() < 3 or np.ptp(score[ok]) == 0 or np.ptp(forward[ok]) == 0:
        return 0.0, 0.0
    ic = float(np.corrcoef(score[ok], forward[ok])[0, 1])
    rank_ic = float(stats.spearmanr(score[ok], forward[ok]).statistic)
    return ic, rank_ic


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """E[max SR] of ``n_trials`` zero-skill configurations whose Sharpe estimates have this variance."""
    if n_trials <= 1:
        return 0.0
    z = stats.norm.ppf
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * z(1 - 1 / n_trials) + EULER_GAMMA * z(1 - 1 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(returns: pd.Series | np.ndarray, n_trials: int) -> dict[str, float]:
    """DSR of per-period (here daily) ``returns`` after ``n_trials`` configurations were tried.

    The variance of the trials' Sharpe estimates is taken as the estimator's own variance under the
    null, 1 / (T − 1), since the candidates' test-window Sharpes are deliberately never computed
    (only the chosen model touches the test window). Skewness and kurtosis are those of ``returns``.
    """
    values = np.asarray(returns, dtype="float64")
    values = values[np.isfinite(values)]
    t = len(values)
    if t < 3 or values.std(ddof=1) == 0:
        return {"dsr": 0.0, "sr": 0.0, "sr0": 0.0, "n_trials": float(n_trials), "periods": float(t)}
    sr = values.mean() / values.std(ddof=1)
    skew = float(stats.skew(values, bias=False))
    kurt = float(stats.kurtosis(values, fisher=False, bias=False))
    sr0 = expected_max_sharpe(n_trials, 1.0 / (t - 1))
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    denom = max(denom, 1e-12)
    dsr = float(stats.norm.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denom)))
    return {"dsr": dsr, "sr": float(sr), "sr0": float(sr0), "n_trials": float(n_trials), "periods": float(t)}


def stationary_bootstrap_indices(
    n: int, samples: int, mean_block: float, rng: np.random.Generator
) -> np.ndarray:
    """Politis & Romano (1994) stationary bootstrap: ``samples × n`` indices into a series of length ``n``.

    Each resample is a chain of blocks with geometric lengths (mean ``mean_block``) starting at
    uniformly drawn points, wrapping around the end: it keeps the short-range dependence of the
    series (a daily P&L with overlapping bets is autocorrelated) while remaining stationary.
    """
    if n <= 0:
        return np.zeros((samples, 0), dtype=np.int64)
    p = 1.0 / max(float(mean_block), 1.0)
    new_block = rng.random((samples, n)) < p
    new_block[:, 0] = True
    starts = rng.integers(0, n, size=(samples, n))
    position = np.arange(n)
    # the column where the current block began, and the start drawn there
    began = np.maximum.accumulate(np.where(new_block, position, 0), axis=1)
    first = np.take_along_axis(starts, began, axis=1)
    return (first + position - began) % n


def default_block_length(n: int) -> float:
    """A mean block length of n^(1/3), the rate that is optimal for variance-type statistics."""
    return max(1.0, float(n) ** (1.0 / 3.0))


def sharpe_confidence_interval(
    returns: pd.Series | np.ndarray,
    periods_per_year: float,
    *,
    level: float = 0.9,
    samples: int = 2000,
    seed: int = 0,
    mean_block: float | None = None,
) -> dict[str, float | None]:
    """Percentile CI of the annualised Sharpe by the stationary bootstrap (``None`` bounds if < 3 periods)."""
    values = np.asarray(returns, dtype="float64")
    values = values[np.isfinite(values)]
    n = len(values)
    point = sharpe_ratio(values, periods_per_year)
    if n < 3:
        return {"sharpe": point, "low": None, "high": None, "level": level, "block": None, "periods": n}
    block = mean_block or default_block_length(n)
    idx = stationary_bootstrap_indices(n, samples, block, np.random.default_rng(seed))
    draws = values[idx]
    std = draws.std(axis=1, ddof=1)
    ok = std > 0
    stats_ = np.where(ok, draws.mean(axis=1) / np.where(ok, std, 1.0), 0.0) * math.sqrt(periods_per_year)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats_, [alpha, 1.0 - alpha])
    return {
        "sharpe": point,
        "low": float(low),
        "high": float(high),
        "level": level,
        "block": float(block),
        "periods": n,
    }


def sharpe_null_bound(n_days: int, periods_per_year: float, z: float = 4.0) -> float:
    """|annualised Sharpe| a zero-skill strategy exceeds with probability ≈ 2·(1 − Φ(z)) over ``n_days``.

    Under the null the daily Sharpe estimate is ≈ N(0, 1/n), so the annualised one is
    ≈ N(0, periods_per_year / n): the bound is z·√(periods_per_year / n_days).
    """
    return float(z * math.sqrt(periods_per_year / max(n_days, 1)))
