"""Model selection and fitting, in memory: reproducible, leak-free transforms, clear refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from autotrader.errors import ModelError
from autotrader.features import feature_names
from autotrader.modeling.dataset import features_in_memory, prepare_frame
from autotrader.modeling.labels import LABEL, LABEL_END
from autotrader.modeling.models import build
from autotrader.modeling.splits import purged_folds
from autotrader.modeling.train import (
    CandidateResult,
    cross_validate,
    evaluate_model,
    fit,
    fit_weighted,
    select,
)
from autotrader.modeling.weights import uniqueness_weights
from autotrader.params import Instrument, Params
from autotrader.sources.sim import SimulatedMarket

from .conftest import REPO

pytestmark = pytest.mark.xdist_group("training-unit")


def small_params(**train) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update({"lookback_days": 14, "test_days": 4, "oos_windows": 1, "cv_folds": 3, **train})
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def prepared():
    params = small_params()
    sim = SimulatedMarket(seed=5, signal_strength=params.data.sim.signal_strength)
    end = params.data.end_ts()
    bars = pd.concat(
        [
            sim.fetch(inst, end - pd.Timedelta(days=17), end, params.data.interval_td)
            for inst in (
                Instrument(broker="binance", symbol="BTCUSDT"),
                Instrument(broker="oanda", symbol="EUR_USD"),
            )
        ],
        ignore_index=True,
    )
    features = feature_names(params.features)
    return params, prepare_frame(features_in_memory(bars, params), params, features), features


def test_same_data_and_params_give_the_same_model_and_metrics(prepared) -> None:
    params, data, features = prepared
    first = fit(data.parts["train"], data.parts["valid"], features, params.train)
    second = fit(data.parts["train"], data.parts["valid"], features, params.train)
    assert first.chosen == second.chosen
    assert {k: v.fold_scores for k, v in first.candidates.items()} == {
        k: v.fold_scores for k, v in second.candidates.items()
    }
    assert first.valid_scores == second.valid_scores
    X = data.parts["test"][features]
    np.testing.assert_array_equal(first.model.predict_proba(X), second.model.predict_proba(X))


def test_scaling_is_fitted_on_training_rows_only(prepared) -> None:
    params, data, features = prepared
    train = data.parts["train"]
    model = build("logreg", params.train).fit(train[features], train[LABEL])
    imputed = train[features].fillna(train[features].median())
    np.testing.assert_allclose(model.named_steps["scale"].mean_, imputed.mean().to_numpy(), rtol=1e-9)
    both = pd.concat([train, data.parts["test"]])
    assert not np.allclose(model.named_steps["scale"].mean_, both[features].mean().to_numpy())


def test_the_model_predicts_the_three_documented_classes(prepared) -> None:
    params, data, features = prepared
    result = fit(data.parts["train"], data.parts["valid"], features, params.train)
    assert sorted(int(c) for c in result.model.classes_) == [-1, 0, 1]
    assert set(np.unique(result.model.predict(data.parts["test"][features]))) <= {-1, 0, 1}
    assert result.counts["final_fit"] == len(data.parts["train"]) + len(data.parts["valid"])


def test_a_single_class_is_refused_naming_where(prepared) -> None:
    params, data, features = prepared
    flat = data.parts["train"].assign(**{LABEL: 0})
    with pytest.raises(ModelError, match=r"labels in my/train\.parquet have a single class \[0\]"):
        fit(flat, data.parts["valid"], features, params.train, where="my/train.parquet")


def test_unknown_cv_metric_is_refused(prepared) -> None:
    _, data, features = prepared
    with pytest.raises(ModelError, match="cv_metric"):
        fit(data.parts["train"], data.parts["valid"], features, small_params(cv_metric="auc").train)


def test_selection_follows_the_metric_direction() -> None:
    a = CandidateResult("a", [{"log_loss": 0.9, "accuracy": 0.5}], "log_loss")
    b = CandidateResult("b", [{"log_loss": 1.0, "accuracy": 0.6}], "log_loss")
    assert select({"a": a, "b": b}, "log_loss") == "a"
    a.metric = b.metric = "accuracy"
    assert select({"a": a, "b": b}, "accuracy") == "b"


def test_fits_and_cv_scores_are_weighted_by_label_uniqueness(prepared) -> None:
    params, data, features = prepared
    train = data.parts["train"]
    weights = uniqueness_weights(train)
    assert weights.std() > 0.05  # rows next to a purge gap overlap fewer labels: weights differ
    fitted = fit_weighted("logreg", params.train, train, features)
    by_hand = build("logreg", params.train).fit(train[features], train[LABEL], model__sample_weight=weights)
    unweighted = build("logreg", params.train).fit(train[features], train[LABEL])
    X = data.parts["valid"][features]
    np.testing.assert_allclose(fitted.predict_proba(X), by_hand.predict_proba(X))
    assert not np.allclose(fitted.predict_proba(X), unweighted.predict_proba(X))
    # CV scores are weighted too: fold scores equal the weighted scores of the same fold models
    result = cross_validate("logreg", params.train, train, features)
    fold = purged_folds(train["timestamp"], train[LABEL_END], params.train.cv_folds, params.train.embargo)[0]
    model = fit_weighted("logreg", params.train, train.iloc[fold.train], features)
    held = train.iloc[fold.valid]
    expected = evaluate_model(model, held[features], held[LABEL].to_numpy(), uniqueness_weights(held))
    assert result.fold_scores[0]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-12)
    plain = evaluate_model(model, held[features], held[LABEL].to_numpy())
    assert result.fold_scores[0]["log_loss"] != pytest.approx(plain["log_loss"], rel=1e-9)


def test_weighted_hgb_fits_bin_on_unweighted_quantiles_and_still_use_the_weights() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.ensemble._hist_gradient_boosting import binning

    from autotrader.modeling.models import thread_limit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    y = (X[:, 0] + rng.normal(size=3000) > 0).astype(int)
    w = rng.uniform(0.1, 2.0, 3000)
    original = binning._find_binning_thresholds

    def model():
        return HistGradientBoostingClassifier(max_iter=10, early_stopping=False, random_state=0)

    with thread_limit():
        weighted = model().fit(X, y, sample_weight=w)
        plain = model().fit(X, y)
    assert binning._find_binning_thresholds is original  # restored
    for a, b in zip(weighted._bin_mapper.bin_thresholds_, plain._bin_mapper.bin_thresholds_, strict=True):
        np.testing.assert_array_equal(a, b)  # the same candidate split points ...
    assert not np.allclose(weighted.predict_proba(X), plain.predict_proba(X))  # ... but a weighted fit


def test_the_model_card_flags_synthetic_data_and_implausible_sharpe() -> None:
    from autotrader.modeling.model_card import render

    evaluation = {
        "portfolio": {"sharpe": 7.5, "sharpe_ci": [3.0, 12.0], "n_trades": 40, "expectancy": 0.001},
        "windows": [{"start": "a", "end": "b", "model": "shipped", "sharpe": 7.5, "sharpe_ci": [3.0, 12.0]}],
        "dsr": {
            "dsr": 0.99,
            "n_trials": 6.0,
            "trials": {"source": "MLflow experiment history: 2 earlier runs"},
        },
        "capacity": {"rows": 900, "horizon": 36, "max_bets": 25},
        "synthetic": True,
        "signal_strength": 4.0,
    }
    card = render(small_params(), training={}, prepared={}, evaluation=evaluation)
    assert "Synthetic data" in card and "signal strength 4.0" in card
    assert "Implausible Sharpe** (> 6) in: pooled, window 1" in card
    assert "**6 trials**: MLflow experiment history" in card
    assert "| Trades | ≥ 100 | 40 | insufficient evidence |" in card
    real = render(
        small_params(),
        training={},
        prepared={},
        evaluation={**evaluation, "synthetic": False, "portfolio": {"sharpe": 1.2}, "windows": []},
    )
    assert "Synthetic data" not in real and "Implausible" not in real
