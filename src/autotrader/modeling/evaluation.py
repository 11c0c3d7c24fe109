"""The ``evaluate`` step as a function: the walk-forward OOS predictions → backtest, score, explain.

Pooled over the ``train.oos_windows`` windows: the backtest, classification scores, IC, the deflated
Sharpe (with the honest trial count) and a stationary-bootstrap CI of the Sharpe; per window: the
Sharpe with its CI, trades and what was fitted. Also used by ``gate`` to put the champion and the
candidate through the very same backtest on the same rows (the last window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from autotrader.modeling import CLASSES, KEYS
from autotrader.modeling import backtest as bt
from autotrader.modeling import metrics as m
from autotrader.modeling.labels import FWD_RETURN, LABEL
from autotrader.modeling.models import thread_limit
from autotrader.modeling.plots import plot_frames
from autotrader.modeling.train import classification_scores, proba_full
from autotrader.modeling.walkforward import OutOfSample, Window, window_of
from autotrader.params import Params

IMPORTANCE_ROWS = 4000
IMPORTANCE_REPEATS = 3


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    backtest: bt.BacktestResult
    plots: dict[str, pd.DataFrame]


def predict(model: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(signal in {-1, 0, 1}, probabilities in CLASSES order)."""
    with thread_limit():
        proba = proba_full(model, X)
    return np.asarray(CLASSES, dtype="int64")[proba.argmax(axis=1)], proba


def n_trials(params: Params) -> int:
    """Configurations this run tried: candidates × hyper-parameter sets per candidate (1)."""
    return len(params.train.candidates)


def local_trials(params: Params) -> dict[str, Any]:
    """The trial count when there is no experiment history to read (a bench, a test, an empty registry)."""
    n = n_trials(params)
    return {
        "total": n,
        "this_run": n,
        "prior_runs": 0,
        "prior_candidates": 0,
        "source": "this run's candidates only (no earlier runs of this model name were found)",
    }


def backtest_model(model: Any, test: pd.DataFrame, features: list[str], params: Params) -> bt.BacktestResult:
    signal, _ = predict(model, test[features])
    return bt.run(test.assign(**{bt.SIGNAL: signal}), params.costs, hold=params.train.horizon)


def importance(model: Any, test: pd.DataFrame, features: list[str], seed: int) -> pd.DataFrame:
    """Permutation importance (drop in balanced accuracy) on a seeded sample of the test window."""
    sample = test.sample(n=min(IMPORTANCE_ROWS, len(test)), random_state=seed) if len(test) else test
    if sample.empty or sample[LABEL].nunique() < 2:
        return pd.DataFrame({"feature": features, "importance": 0.0, "std": 0.0})
    with thread_limit():
        result = permutation_importance(
            model,
            sample[features],
            sample[LABEL].to_numpy(),
            scoring="balanced_accuracy",
            n_repeats=IMPORTANCE_REPEATS,
            random_state=seed,
            n_jobs=1,
        )
    frame = pd.DataFrame(
        {"feature": features, "importance": result.importances_mean, "std": result.importances_std}
    )
    return frame.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def capacity(test: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """How many non-overlapping bets the test rows can hold: Σ over instruments of rows // horizon."""
    per = {f"{b}/{s}": int(n) // horizon for (b, s), n in test.groupby(list(KEYS)).size().items()}
    return {"rows": len(test), "horizon": horizon, "max_bets": int(sum(per.values())), "per_instrument": per}


def window_metrics(result: bt.BacktestResult, oos: OutOfSample, params: Params) -> list[dict[str, Any]]:
    """Sharpe (with a stationary-bootstrap CI), trades and rows of each walk-forward window."""
    broker = bt.portfolio_calendar(result.instruments)
    stamps = pd.Series(result.portfolio_bars.index)
    days = bt.session_dates(broker, stamps)
    where = window_of(stamps, oos.windows)
    trade_window = window_of(pd.Series(pd.DatetimeIndex(result.trades["entry"])), oos.windows)
    ppy = result.portfolio_periods_per_year
    out = []
    for k, fit in enumerate(oos.fits):
        mask = where == k
        daily = bt.daily_returns(result.portfolio_bars.to_numpy()[mask], days[mask])
        ci = m.sharpe_confidence_interval(
            daily.to_numpy(),
            ppy,
            level=params.train.ci_level,
            samples=params.train.bootstrap_samples,
            seed=params.train.seed + k,
        )
        trades = result.trades["ret"].to_numpy()[trade_window == k]
        out.append(
            {
                **fit,
                "sharpe": ci["sharpe"],
                "sharpe_ci": [ci["low"], ci["high"]],
                "n_days": len(daily),
                "n_trades": len(trades),
                "win_rate": m.win_rate(trades),
                "total_return": float(np.prod(1.0 + daily.to_numpy()) - 1.0),
            }
        )
    return out


def evaluate(
    model: Any,
    test: pd.DataFrame,
    features: list[str],
    params: Params,
    *,
    oos: OutOfSample | None = None,
    trials: dict[str, Any] | None = None,
    with_importance: bool = True,
) -> Evaluation:
    """Every out-of-sample figure the gate, the card and the plots need.

    ``oos``: the walk-forward predictions (``walkforward.predict_out_of_sample``); without it the
    model predicts the whole test split as one window. ``trials``: the honest trial count for the
    deflated Sharpe (``trials.count_trials``); without it, this run's candidates.
    """
    if oos is None:
        signal, proba = predict(model, test[features])
        b = (test["timestamp"].min(), test["timestamp"].max() + pd.Timedelta(1, "ns"))
        oos = OutOfSample(
            rows=test,
            signal=signal,
            proba=proba,
            windows=[Window(b[0], b[1])],
            fits=[{"start": b[0].isoformat(), "end": b[1].isoformat(), "model": "shipped"}],
        )
    test, signal, proba = oos.rows, oos.signal, oos.proba
    trials = trials or local_trials(params)
    result = bt.run(test.assign(**{bt.SIGNAL: signal}), params.costs, hold=params.train.horizon)
    actual = test[LABEL].to_numpy("int64")
    ic, rank_ic = m.information_coefficient(proba[:, 2] - proba[:, 0], test[FWD_RETURN].to_numpy())
    last = window_of(test["timestamp"], oos.windows) == len(oos.windows) - 1
    if with_importance:
        imp = importance(model, test[last], features, params.train.seed)
    else:
        imp = pd.DataFrame({"feature": features, "importance": 0.0, "std": 0.0})
    confusion = {f"{a}->{p}": int(((actual == a) & (signal == p)).sum()) for a in CLASSES for p in CLASSES}
    ppy = result.portfolio_periods_per_year
    pooled_ci = m.sharpe_confidence_interval(
        result.portfolio_daily.to_numpy(),
        ppy,
        level=params.train.ci_level,
        samples=params.train.bootstrap_samples,
        seed=params.train.seed,
    )
    portfolio = {**result.metrics["portfolio"], "sharpe_ci": [pooled_ci["low"], pooled_ci["high"]]}
    metrics: dict[str, Any] = {
        "portfolio": portfolio,
        "instruments": result.metrics["instruments"],
        "windows": window_metrics(result, oos, params),
        "ci": {"level": params.train.ci_level, "method": "stationary bootstrap", "block": pooled_ci["block"]},
        "classification": classification_scores(actual, signal, proba),
        "ic": ic,
        "rank_ic": rank_ic,
        "dsr": {
            **m.deflated_sharpe_ratio(result.portfolio_daily.to_numpy(), int(trials["total"])),
            "trials": trials,
        },
        "capacity": capacity(test, params.train.horizon),
        "confusion": confusion,
        "test_rows": len(test),
        "holding_bars": params.train.horizon,
        "fill": params.costs.fill,
        "synthetic": params.data.source == "sim",
        "signal_strength": params.data.sim.signal_strength if params.data.source == "sim" else None,
        "signal_share": {str(c): float((signal == c).mean()) for c in CLASSES},
        "importance": {row.feature: float(row.importance) for row in imp.itertuples()},
    }
    return Evaluation(
        metrics=metrics, backtest=result, plots=plot_frames(result.portfolio_bars, actual, signal, imp)
    )
