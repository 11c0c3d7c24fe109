"""The flat HistGradientBoosting walk used for small requests must give scikit-learn's exact answers."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from autotrader.serving.hgb import FlatHGB, agrees, compile_hgb
from autotrader.serving.model import load
from tests.test_serving_support import feature_columns, simulated_features, train_model

pytestmark = pytest.mark.xdist_group("serving-app")


def _fit(X: np.ndarray, y: np.ndarray, **kw: object) -> HistGradientBoostingClassifier:
    with threadpool_limits(1):
        return HistGradientBoostingClassifier(max_iter=25, random_state=0, **kw).fit(X, y)


def _rows(n: int, f: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)) * rng.choice([1e-4, 1.0, 1e3], size=f)
    X[rng.random(X.shape) < 0.15] = np.nan
    return X


@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = simulated_features(days=3)
    return train_model(tmp_path_factory.mktemp("hgb") / "model", frame), frame


def test_identical_to_sklearn_on_the_served_model(real_model: tuple[Path, pd.DataFrame]) -> None:
    folder, frame = real_model
    estimator = mlflow.sklearn.load_model(str(folder))
    flat = compile_hgb(estimator)
    assert flat is not None and flat.k == 3
    X = frame[list(estimator.feature_names_in_)].to_numpy(dtype=np.float64)  # warm-up NaNs included
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", UserWarning)
        assert np.array_equal(flat.raw(X), estimator._raw_predict(X))
        assert np.array_equal(flat.predict(X), estimator.predict(X))
        for n in (1, 3, 16):
            rows = _rows(n, X.shape[1], seed=n)
            assert np.array_equal(flat.predict(rows), estimator.predict(rows))


def test_the_server_uses_it_and_agrees_with_pyfunc(real_model: tuple[Path, pd.DataFrame]) -> None:
    folder, frame = real_model
    model = load(str(folder))
    assert model.flat is not None
    cols = feature_columns(frame)
    rows = frame.iloc[-12:]
    served = model.predict(rows[list(model.order)].to_numpy(dtype=np.float64))
    direct = mlflow.pyfunc.load_model(str(folder)).predict(rows[cols])
    assert served.tolist() == np.asarray(direct).astype(int).tolist()


def test_binary_classifier_uses_the_sign_rule() -> None:
    X = _rows(3000, 5, seed=1)
    y = np.where(np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) > 0, "up", "down")
    estimator = _fit(X, y)
    flat = compile_hgb(estimator)
    assert flat is not None and flat.k == 1
    probe = _rows(500, 5, seed=2)
    assert np.array_equal(flat.predict(probe), estimator.predict(probe))


def test_a_pipeline_that_is_only_the_classifier_is_compiled_too() -> None:
    """Training saves ``Pipeline([("model", HGB)])``; a Pipeline with a real transform is left alone."""
    X = _rows(3000, 4, seed=6)
    y = np.digitize(np.nan_to_num(X[:, 1]), [-0.3, 0.3]) - 1
    with threadpool_limits(1):
        pipe = Pipeline([("model", HistGradientBoostingClassifier(max_iter=20, random_state=0))]).fit(X, y)
        flat = compile_hgb(pipe)
        assert flat is not None
        probe = _rows(400, 4, seed=7)
        assert np.array_equal(flat.predict(probe), pipe.predict(probe))
        scaled = Pipeline(
            [("scale", StandardScaler()), ("model", HistGradientBoostingClassifier(max_iter=5))]
        ).fit(X, y)
    assert compile_hgb(scaled) is None


def test_the_verification_catches_a_wrong_walk() -> None:
    X = _rows(3000, 4, seed=3)
    y = np.digitize(np.nan_to_num(X[:, 0]), [-0.5, 0.5]) - 1
    estimator = _fit(X, y)
    flat = FlatHGB(estimator)
    assert agrees(flat, estimator)
    split = np.flatnonzero(~flat.leaf)
    flat.missing_left[split] = ~flat.missing_left[split]  # NaN goes the wrong way
    assert not agrees(flat, estimator)


def test_only_plain_numeric_hgb_is_compiled() -> None:
    X = np.column_stack([_rows(2000, 2, seed=4), np.random.default_rng(5).integers(0, 4, 2000)])
    y = (np.nan_to_num(X[:, 0]) > 0).astype(int)
    assert compile_hgb(_fit(X, y, categorical_features=[2])) is None
    assert compile_hgb(LogisticRegression().fit(np.nan_to_num(X), y)) is None
