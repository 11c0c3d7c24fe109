"""The ``evaluate`` step as a function: predict the test window, backtest, score, explain.

Also used by ``gate`` to put the champion through the very same backtest on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from autotrader.modeling import CLASSES
from autotrader.modeling import backtest as bt
from autotrader.modeling import metrics as m
from autotrader.modeling.labels import FWD_RETURN, LABEL
from autotrader.modeling.models import thread_limit
from autotrader.modeling.plots import plot_frames
from autotrader.modeling.train import classification_scores, proba_full
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
    """Configurations tried for the deflated Sharpe: candidates × hyper-parameter sets per candidate (1)."""
    return len(params.train.candidates)


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


def evaluate(model: Any, test: pd.DataFrame, features: list[str], params: Params) -> Evaluation:
    """Every test-window figure the gate, the card and the plots need."""
    signal, proba = predict(model, test[features])
    result = bt.run(test.assign(**{bt.SIGNAL: signal}), params.costs, hold=params.train.horizon)
    actual = test[LABEL].to_numpy("int64")
    ic, rank_ic = m.information_coefficient(proba[:, 2] - proba[:, 0], test[FWD_RETURN].to_numpy())
    imp = importance(model, test, features, params.train.seed)
    confusion = {f"{a}->{p}": int(((actual == a) & (signal == p)).sum()) for a in CLASSES for p in CLASSES}
    metrics: dict[str, Any] = {
        "portfolio": result.metrics["portfolio"],
        "instruments": result.metrics["instruments"],
        "classification": classification_scores(actual, signal, proba),
        "ic": ic,
        "rank_ic": rank_ic,
        "dsr": m.deflated_sharpe_ratio(result.portfolio_daily.to_numpy(), n_trials(params)),
        "confusion": confusion,
        "test_rows": len(test),
        "holding_bars": params.train.horizon,
        "signal_share": {str(c): float((signal == c).mean()) for c in CLASSES},
        "importance": {row.feature: float(row.importance) for row in imp.itertuples()},
    }
    return Evaluation(
        metrics=metrics, backtest=result, plots=plot_frames(result.portfolio_bars, actual, signal, imp)
    )
