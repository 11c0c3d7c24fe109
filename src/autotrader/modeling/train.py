"""Model selection and fitting: purged walk-forward CV per candidate, pick by the CV metric, refit.

1. Every candidate (``train.candidates``) is scored on purged, embargoed walk-forward folds of the
   *training* split (``splits.purged_folds``).
2. The candidate with the best mean CV metric wins (lower is better for ``log_loss``).
3. The winner is refitted on the training split and checked on the validation split (a holdout
   neither CV nor selection saw: the ``valid_*`` metrics).
4. The final model is refitted on train + valid (both already purged and embargoed against the test
   windows by ``prepare``), with the same seed — plus, under walk-forward evaluation, the earlier
   out-of-sample windows (``extra``), purged and embargoed against the last window's start: the
   shipped model is the one the last window tests, refitted as the weekly retraining would.

Every fit and every score is weighted by label uniqueness (``weights``): overlapping labels count
as the independent observations they are. The last test window is never read here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss
from sklearn.pipeline import Pipeline

from autotrader.errors import ModelError
from autotrader.modeling import CLASSES
from autotrader.modeling.labels import LABEL, LABEL_END
from autotrader.modeling.models import build, empty_columns, thread_limit
from autotrader.modeling.splits import _ns, keep_before, purged_folds, time_grid
from autotrader.modeling.weights import uniqueness_weights
from autotrader.params import TrainParams

# metric name → True when larger is better
METRICS: dict[str, bool] = {"log_loss": False, "accuracy": True, "balanced_accuracy": True, "macro_f1": True}


def proba_full(model: Pipeline, X: pd.DataFrame) -> np.ndarray:
    """Class probabilities in ``CLASSES`` order (-1, 0, 1), zero for a class the model never saw."""
    proba = model.predict_proba(X)
    out = np.zeros((len(X), len(CLASSES)))
    for j, cls in enumerate(model.classes_):
        out[:, CLASSES.index(int(cls))] = proba[:, j]
    return out


def classification_scores(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and (with probabilities) log loss over the three classes.

    ``weights``: per-row sample weights (label uniqueness), so overlapping rows count once.
    """
    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred, sample_weight=weights)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred, sample_weight=weights)),
        "macro_f1": float(
            f1_score(
                y_true,
                y_pred,
                labels=list(CLASSES),
                average="macro",
                zero_division=0,
                sample_weight=weights,
            )
        ),
    }
    if proba is not None:
        clipped = np.clip(proba, 1e-15, 1.0)
        clipped = clipped / clipped.sum(axis=1, keepdims=True)
        scores["log_loss"] = float(log_loss(y_true, clipped, labels=list(CLASSES), sample_weight=weights))
    return scores


def evaluate_model(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    proba = proba_full(model, X)
    pred = np.asarray(CLASSES)[proba.argmax(axis=1)]
    return classification_scores(y, pred, proba, weights)


def fit_weighted(name: str, train: TrainParams, frame: pd.DataFrame, features: Sequence[str]) -> Pipeline:
    """Candidate ``name`` fitted on ``frame``, each row weighted by its label uniqueness."""
    X = frame.loc[:, list(features)]
    model = build(name, train, empty_columns(X))
    return model.fit(X, frame[LABEL].to_numpy(), model__sample_weight=uniqueness_weights(frame))


def rows_before(frame: pd.DataFrame, boundary: pd.Timestamp, embargo: int) -> pd.DataFrame:
    """Rows that may train a model tested from ``boundary`` on: purged and embargoed against it."""
    ts, end = _ns(frame["timestamp"]), _ns(frame[LABEL_END])
    cut = int(_ns(pd.DatetimeIndex([boundary]))[0])
    return frame[keep_before(ts, end, cut, time_grid(ts), embargo)].reset_index(drop=True)


def check_labels(y: pd.Series | np.ndarray, where: str) -> None:
    """A classifier needs at least two classes; say which file has one and what to change."""
    present = sorted({int(v) for v in np.unique(np.asarray(y))})
    if len(present) < 2:
        raise ModelError(
            f"labels in {where} have a single class {present} (rule: a classifier needs ≥ 2 classes); "
            "lower train.cost_threshold_bps, change train.horizon or widen train.lookback_days"
        )


@dataclass
class CandidateResult:
    name: str
    fold_scores: list[dict[str, float]]
    metric: str

    @property
    def mean(self) -> float:
        return float(np.mean([s[self.metric] for s in self.fold_scores]))


@dataclass
class TrainResult:
    model: Pipeline
    chosen: str
    candidates: dict[str, CandidateResult]
    valid_scores: dict[str, float]
    feature_columns: list[str]
    counts: dict[str, int] = field(default_factory=dict)


def cross_validate(
    name: str,
    train: TrainParams,
    frame: pd.DataFrame,
    features: Sequence[str],
    advance: Callable[[str], None] | None = None,
) -> CandidateResult:
    """Scores of candidate ``name`` on each purged walk-forward fold of ``frame``."""
    folds = purged_folds(frame["timestamp"], frame[LABEL_END], train.cv_folds, train.embargo)
    y = frame[LABEL].to_numpy()
    scores: list[dict[str, float]] = []
    for k, fold in enumerate(folds, start=1):
        if len(np.unique(y[fold.train])) < 2:
            raise ModelError(
                f"CV fold {k} of {name}: training rows have a single class; use fewer train.cv_folds"
            )
        model = fit_weighted(name, train, frame.iloc[fold.train], features)
        held = frame.iloc[fold.valid]
        fold_scores = evaluate_model(
            model, held.loc[:, list(features)], y[fold.valid], uniqueness_weights(held)
        )
        fold_scores.update(n_train=float(len(fold.train)), n_valid=float(len(fold.valid)))
        scores.append(fold_scores)
        if advance:
            advance(f"CV {name} fold {k}/{len(folds)}")
    return CandidateResult(name=name, fold_scores=scores, metric=train.cv_metric)


def select(results: dict[str, CandidateResult], metric: str) -> str:
    """The candidate with the best mean CV metric; ties go to the earlier candidate in params order."""
    larger_is_better = METRICS[metric]
    best = None
    for name, result in results.items():
        if best is None:
            best = name
            continue
        current, incumbent = result.mean, results[best].mean
        if (current > incumbent) if larger_is_better else (current < incumbent):
            best = name
    assert best is not None
    return best


def fit(
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    features: Sequence[str],
    train: TrainParams,
    advance: Callable[[str], None] | None = None,
    where: str = "the training split",
    extra: pd.DataFrame | None = None,
    final_before: pd.Timestamp | None = None,
) -> TrainResult:
    """Select and fit the model (see the module docstring). Deterministic for a given seed and data."""
    if train.cv_metric not in METRICS:
        raise ModelError(f"train.cv_metric {train.cv_metric!r} is not one of {', '.join(METRICS)}")
    if not train.candidates:
        raise ModelError("train.candidates is empty: name at least one of hgb, logreg")
    if train_frame.empty:
        raise ModelError(f"{where} is empty: nothing to train on")
    if valid_frame.empty:
        raise ModelError(f"{where}: the validation split is empty")
    check_labels(train_frame[LABEL], where)
    with thread_limit():
        return _fit(train_frame, valid_frame, list(features), train, advance, extra, final_before)


def _fit(
    train_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    features: list[str],
    train: TrainParams,
    advance: Callable[[str], None] | None,
    extra: pd.DataFrame | None = None,
    final_before: pd.Timestamp | None = None,
) -> TrainResult:
    results = {name: cross_validate(name, train, train_frame, features, advance) for name in train.candidates}
    chosen = select(results, train.cv_metric)

    holdout = fit_weighted(chosen, train, train_frame, features)
    valid_scores = evaluate_model(
        holdout, valid_frame[features], valid_frame[LABEL].to_numpy(), uniqueness_weights(valid_frame)
    )
    if advance:
        advance(f"holdout check of {chosen}")

    both = pd.concat([train_frame, valid_frame, *([extra] if extra is not None else [])], ignore_index=True)
    if final_before is not None:
        both = rows_before(both, final_before, train.embargo)
    final = fit_weighted(chosen, train, both, features)
    if advance:
        advance(f"final fit of {chosen}")
    return TrainResult(
        model=final,
        chosen=chosen,
        candidates=results,
        valid_scores=valid_scores,
        feature_columns=features,
        counts={"train": len(train_frame), "valid": len(valid_frame), "final_fit": len(both)},
    )


def steps(train: TrainParams) -> int:
    """How many ``advance`` calls ``fit`` makes (for a progress bar)."""
    return len(train.candidates) * train.cv_folds + 2
