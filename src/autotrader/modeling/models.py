"""The candidate models: scikit-learn Pipelines built from ``params.train``.

Every fitted transform (imputation, scaling) is a step of the Pipeline, so it is fitted on the
training rows only and travels with the model into serving. ``hgb`` handles missing values natively;
``logreg`` imputes the median and standardises first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from autotrader.params import TrainParams

THREADS_ENV = "AUTOTRADER_MODEL_THREADS"


@contextlib.contextmanager
def thread_limit() -> Iterator[None]:
    """Fit and predict with one OpenMP/BLAS thread unless ``AUTOTRADER_MODEL_THREADS`` says otherwise.

    Measured on the 2-core CI box: with a second process busy, two OpenMP threads made a
    HistGradientBoosting fit 5× *slower* (threads spin waiting for a core); at these data sizes one
    thread is also the fastest on an idle machine.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(os.environ.get(THREADS_ENV, "1")))), unweighted_bin_edges():
        yield


def _unweighted_thresholds(
    col_data: np.ndarray, max_bins: int, sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """scikit-learn's ``_find_binning_thresholds`` on unweighted quantiles.

    With ``sample_weight`` (label-uniqueness weights), scikit-learn 1.9 also weights the quantiles
    that become the bin edges, through a per-percentile Python loop: a HistGradientBoosting fit became
    10× slower (1.4 s instead of 0.13 s CPU on 15 000 rows). Bin edges are only the candidate split
    points; the weights still act where they matter, on every gradient, hessian and leaf value of
    the fit. So the edges are taken from the unweighted quantiles, as without weights.
    """
    return _ORIGINAL_THRESHOLDS[0](col_data, max_bins)


_ORIGINAL_THRESHOLDS: list = []


@contextlib.contextmanager
def unweighted_bin_edges() -> Iterator[None]:
    """Swap in ``_unweighted_thresholds`` for the duration of a fit or prediction (restored after)."""
    from sklearn.ensemble._hist_gradient_boosting import binning

    if not _ORIGINAL_THRESHOLDS:
        _ORIGINAL_THRESHOLDS.append(binning._find_binning_thresholds)
    if binning._find_binning_thresholds is _unweighted_thresholds:  # nested
        yield
        return
    binning._find_binning_thresholds = _unweighted_thresholds
    try:
        yield
    finally:
        binning._find_binning_thresholds = _ORIGINAL_THRESHOLDS[0]


def empty_columns(X: pd.DataFrame) -> list[str]:
    """Columns without a single value (e.g. ``rel_spread`` from a source that quotes no spread)."""
    return [str(c) for c in X.columns[X.isna().all(axis=0).to_numpy()]]


def build(name: str, train: TrainParams, empty: Sequence[str] = ()) -> Pipeline:
    """An unfitted Pipeline for candidate ``name`` (``hgb`` or ``logreg``), seeded from ``train.seed``.

    ``empty``: input columns with no value in the rows it will be fitted on. HistGradientBoosting
    cannot bin a column that is all missing, and such a column carries nothing, so the hgb Pipeline
    drops it by name (the model's input signature is unchanged); logreg's imputer keeps it as zeros.
    """
    if name == "hgb":
        hp = train.hgb
        model = HistGradientBoostingClassifier(
            max_iter=hp.max_iter,
            learning_rate=hp.learning_rate,
            max_leaf_nodes=hp.max_leaf_nodes,
            min_samples_leaf=hp.min_samples_leaf,
            l2_regularization=hp.l2_regularization,
            # No early stopping: its validation split is a random (shuffled) sample of the training
            # rows, which overlapping labels make optimistic, and it makes the model depend on the split.
            early_stopping=False,
            random_state=train.seed,
        )
        if not empty:
            return Pipeline([("model", model)])
        drop = ColumnTransformer(
            [("empty", "drop", list(empty))], remainder="passthrough", verbose_feature_names_out=False
        )
        return Pipeline([("drop_empty", drop), ("model", model)])
    if name == "logreg":
        hp = train.logreg
        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
                ("model", LogisticRegression(C=hp.C, max_iter=hp.max_iter, random_state=train.seed)),
            ]
        )
    raise ValueError(f"unknown candidate {name!r}; known: hgb, logreg")


def hyperparameters(name: str, train: TrainParams) -> dict[str, float | int | str]:
    """The knobs of candidate ``name`` as flat MLflow params (``hgb.max_iter`` …)."""
    source = train.hgb if name == "hgb" else train.logreg
    return {f"{name}.{k}": v for k, v in source.model_dump().items()}
