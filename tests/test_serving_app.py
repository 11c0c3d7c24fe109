"""The model server in-process (FastAPI TestClient, lifespan included) with a real MLflow model.

Covers the endpoints, the Prometheus exposition (parsed with prometheus_client's own parser), input
validation (every kind of bad input is a 4xx with a reason, then a good request still works), model
failures (500, counted), a model that fails to load (/readyz 503 with the reason) and online scoring.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from autotrader.errors import ConfigError
from autotrader.serving import ServerConfig, create_app
from autotrader.serving.metrics import LATENCY_BUCKETS
from autotrader.serving.online import OnlineScorer
from tests.test_serving_support import (
    feature_columns,
    instance,
    save_custom_model,
    simulated_features,
    train_model,
)

pytestmark = pytest.mark.xdist_group("serving-app")


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return simulated_features(days=4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, features: pd.DataFrame) -> Path:
    return train_model(tmp_path_factory.mktemp("model") / "model", features)


def _client(model_uri: str, version: str = "7") -> TestClient:
    app = create_app(ServerConfig(model_uri=model_uri, model_version=version, load_attempts=1))
    return TestClient(app)


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Any:
    with _client(str(model_dir)) as c:
        assert c.app.state.loader.wait(60)
        yield c


def samples(client: TestClient) -> list[tuple[str, dict[str, str], float]]:
    text = client.get("/metrics").text
    return [
        (s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]


def value(client: TestClient, name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples(client) if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def test_health_ready_and_feature_list(client: TestClient, features: pd.DataFrame) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["model_version"] == "7"
    assert body["features"] == feature_columns(features)


def test_predict_batch_matches_the_model_and_echoes_instances(
    client: TestClient, features: pd.DataFrame, model_dir: Path
) -> None:
    cols = feature_columns(features)
    rows = features.dropna(subset=cols).iloc[-40:]
    body = {"instances": [instance(r, cols) for _, r in rows.iterrows()]}
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["model_version"] == "7"
    preds = out["predictions"]
    assert [p["symbol"] for p in preds] == rows["symbol"].tolist()
    assert [p["timestamp"] for p in preds] == [i["timestamp"] for i in body["instances"]]
    direct = mlflow.pyfunc.load_model(str(model_dir)).predict(rows[cols].astype("float64"))
    assert [p["signal"] for p in preds] == np.asarray(direct).astype(int).tolist()
    assert {p["label"] for p in preds} <= {"long", "flat", "short"}
    for p in preds:
        assert p["label"] == {1: "long", 0: "flat", -1: "short"}[p["signal"]]


def test_bare_instance_and_null_feature_are_accepted(client: TestClient, features: pd.DataFrame) -> None:
    cols = feature_columns(features)
    row = features.iloc[5]  # early row: warm-up NaNs travel as JSON null
    inst = instance(row, cols)
    assert any(v is None for v in inst["features"].values())
    response = client.post("/predict", json=inst)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def _bad_bodies(good: dict[str, Any], cols: list[str]) -> list[tuple[str, bytes, int, str]]:
    """(name, body, expected status, a word the reason must contain)."""

    def dump(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    first = cols[0]
    feats = good["features"]
    return [
        ("not json", b"{not json", 422, "JSON"),
        ("json array", b"[1, 2]", 422, "object"),
        ("empty body", b"", 422, "empty"),
        ("NaN token", dump({"instances": [{**good, "close": math.nan}]}), 422, "JSON"),
        (
            "Infinity token",
            dump({"instances": [{**good, "features": {**feats, first: math.inf}}]}),
            422,
            "JSON",
        ),
        (
            "overflow to inf",
            dump({"instances": [good]}).replace(b'"close": ', b'"close": 1e999, "x": ', 1),
            422,
            "",
        ),
        ("string number", dump({"instances": [{**good, "features": {**feats, first: "0.5"}}]}), 422, first),
        ("bool number", dump({"instances": [{**good, "close": True}]}), 422, "close"),
        (
            "missing field",
            dump({"instances": [{k: v for k, v in good.items() if k != "close"}]}),
            422,
            "close",
        ),
        ("missing feature", dump({**good, "features": {c: feats[c] for c in cols[1:]}}), 422, first),
        ("unknown feature", dump({**good, "features": {**feats, "bogus": 1.0}}), 422, "bogus"),
        ("unknown field", dump({**good, "extra": 1}), 422, "extra"),
        ("naive timestamp", dump({**good, "timestamp": "2026-11-19T23:55:00"}), 422, "time zone"),
        ("bad timestamp", dump({**good, "timestamp": "yesterday"}), 422, "timestamp"),
        ("negative close", dump({**good, "close": -1.0}), 422, "close"),
        ("unknown broker", dump({**good, "broker": "nasdaq"}), 422, "broker"),
        ("instances not a list", dump({"instances": good}), 422, "list"),
        ("empty batch", dump({"instances": []}), 422, "empty"),
        ("huge batch", dump({"instances": [good] * 1025}), 413, "1024"),
    ]


def test_bad_input_is_4xx_with_a_reason_and_the_server_stays_up(
    client: TestClient, features: pd.DataFrame
) -> None:
    cols = feature_columns(features)
    good = instance(features.dropna(subset=cols).iloc[-1], cols)
    before_500 = value(client, "autotrader_requests_total", route="/predict", status="500")
    for name, body, status, word in _bad_bodies(good, cols):
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (name, response.status_code, response.text)
        detail = json.dumps(response.json())
        assert word in detail, (name, detail)
    assert client.post("/predict", json={"instances": [good]}).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert value(client, "autotrader_requests_total", route="/predict", status="500") == before_500
    assert value(client, "autotrader_requests_total", route="/predict", status="422") >= 17
    assert value(client, "autotrader_requests_total", route="/predict", status="413") >= 1


def test_oversized_body_is_413_before_parsing(model_dir: Path) -> None:
    app = create_app(ServerConfig(model_uri=str(model_dir), model_version="1", max_body_bytes=1000))
    with TestClient(app) as c:
        response = c.post("/predict", content=b"[" + b"1," * 2000 + b"1]")
        assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_metrics_exposition_follows_the_contract(client: TestClient, features: pd.DataFrame) -> None:
    cols = feature_columns(features)
    client.post("/predict", json=instance(features.dropna(subset=cols).iloc[-2], cols))
    client.get("/nowhere")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    expected = {
        "autotrader_requests": "counter",
        "autotrader_request_duration_seconds": "histogram",
        "autotrader_predictions": "counter",
        "autotrader_strategy_return_sum": "gauge",
        "autotrader_strategy_return_sq_sum": "gauge",
        "autotrader_strategy_returns": "counter",
        "autotrader_model_ready": "gauge",
        "autotrader_model_info": "gauge",
    }
    for name, kind in expected.items():
        assert name in families, name
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert sample.labels.get("model_version") == "7", sample
    buckets = sorted(
        float(s.labels["le"])
        for s in families["autotrader_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/predict" and s.labels["le"] != "+Inf"
    )
    assert buckets == list(LATENCY_BUCKETS)
    info = families["autotrader_model_info"].samples[0]
    assert info.value == 1 and info.labels["model_uri"].endswith("model")
    assert value(client, "autotrader_model_ready") == 1
    assert value(client, "autotrader_requests_total", route="other", status="404") >= 1
    signals = {s.labels["signal"] for s in families["autotrader_predictions"].samples}
    assert signals == {"long", "flat", "short"}


def test_prediction_counter_adds_up(client: TestClient, features: pd.DataFrame) -> None:
    cols = feature_columns(features)
    rows = features.dropna(subset=cols).iloc[-100:]
    before = {s: value(client, "autotrader_predictions_total", signal=s) for s in ("long", "flat", "short")}
    preds = client.post(
        "/predict", json={"instances": [instance(r, cols) for _, r in rows.iterrows()]}
    ).json()
    after = {s: value(client, "autotrader_predictions_total", signal=s) for s in ("long", "flat", "short")}
    for label in before:
        assert after[label] - before[label] == sum(p["label"] == label for p in preds["predictions"])


def test_two_apps_keep_separate_metrics(model_dir: Path) -> None:
    with _client(str(model_dir), "a") as a, _client(str(model_dir), "b") as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        assert value(a, "autotrader_requests_total", route="/healthz", model_version="a") == 2
        assert value(b, "autotrader_requests_total", route="/healthz", model_version="b") == 1
        assert value(b, "autotrader_requests_total", model_version="a") == 0


def test_not_ready_until_loaded(model_dir: Path) -> None:
    app = create_app(ServerConfig(model_uri=str(model_dir), model_version="1"))
    c = TestClient(app)  # no context manager: the lifespan (and so the loader) has not started
    assert c.get("/healthz").status_code == 200
    ready = c.get("/readyz")
    assert ready.status_code == 503 and ready.json()["reason"] == "model is loading"
    assert c.post("/predict", json={}).status_code == 503
    assert value(c, "autotrader_model_ready") == 0


def test_model_that_fails_to_load_keeps_readyz_503_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with _client(str(missing), "9") as c:
        assert c.app.state.loader.wait(60)
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "failed" and str(missing) in ready.json()["reason"]
        assert c.get("/healthz").status_code == 200
        predict = c.post("/predict", json={"instances": []})
        assert predict.status_code == 503 and "not ready" in predict.json()["detail"]
        assert value(c, "autotrader_model_ready", model_version="9") == 0


@pytest.mark.parametrize("kind", ["raises", "out_of_range"])
def test_a_failing_model_is_a_counted_500_not_a_crash(
    tmp_path: Path, features: pd.DataFrame, kind: str
) -> None:
    cols = feature_columns(features)
    folder = save_custom_model(tmp_path / kind, kind, cols)
    with _client(str(folder), "bad") as c:
        assert c.app.state.loader.wait(60)
        # A model that fails its warm-up prediction never becomes ready …
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ("deliberate failure" if kind == "raises" else "expected signals") in ready.json()["reason"]
        assert c.get("/healthz").status_code == 200


def test_a_model_failing_on_live_requests_answers_500(tmp_path: Path, features: pd.DataFrame) -> None:
    """Warm-up passes, live traffic fails: 500 with the reason, counted, server still answering."""
    cols = feature_columns(features)
    folder = save_custom_model(tmp_path / "flaky", "raises_on_live", cols)
    with _client(str(folder), "flaky") as c:
        assert c.app.state.loader.wait(60)
        assert c.get("/readyz").status_code == 200
        good = instance(features.dropna(subset=cols).iloc[-1], cols)
        response = c.post("/predict", json=good)
        assert response.status_code == 500
        assert "deliberate failure" in response.json()["detail"]
        assert (
            value(c, "autotrader_requests_total", route="/predict", status="500", model_version="flaky") == 1
        )
        assert c.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------ online scoring


@pytest.fixture(scope="module")
def sign_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A model whose signal is sign(momentum): the test decides every signal."""
    folder = save_custom_model(tmp_path_factory.mktemp("sign") / "sign", "sign", ["momentum"])
    with _client(str(folder), "s") as c:
        assert c.app.state.loader.wait(60)
        assert c.get("/readyz").status_code == 200
        yield c


def bar(symbol: str, minute: int, close: float, momentum: float) -> dict[str, Any]:
    return {
        "broker": "binance",
        "symbol": symbol,
        "timestamp": f"2026-11-19T10:{minute:02d}:00Z",
        "close": close,
        "features": {"momentum": momentum},
    }


def returns(client: TestClient) -> tuple[float, float, float]:
    return (
        value(client, "autotrader_strategy_return_sum"),
        value(client, "autotrader_strategy_return_sq_sum"),
        value(client, "autotrader_strategy_returns_total"),
    )


def test_online_return_has_the_sign_of_the_position(sign_client: TestClient) -> None:
    s0, q0, n0 = returns(sign_client)
    # Long at 100, price rises to 110: +10 %.
    assert (
        sign_client.post("/predict", json=bar("LONGUSDT", 0, 100.0, 1.0)).json()["predictions"][0]["signal"]
        == 1
    )
    assert returns(sign_client) == (s0, q0, n0)  # nothing to score yet
    assert sign_client.post("/predict", json=bar("LONGUSDT", 5, 110.0, -1.0)).status_code == 200
    s1, q1, n1 = returns(sign_client)
    assert n1 - n0 == 1
    assert s1 - s0 == pytest.approx(0.10)
    assert q1 - q0 == pytest.approx(0.01)
    # Now short at 110 (the second bar's signal), price rises to 121: −10 %.
    sign_client.post("/predict", json=bar("LONGUSDT", 10, 121.0, 0.0))
    s2, _, n2 = returns(sign_client)
    assert n2 - n1 == 1 and s2 - s1 == pytest.approx(-0.10)
    # Flat at 121: the next bar scores exactly zero, but is counted.
    sign_client.post("/predict", json=bar("LONGUSDT", 15, 50.0, 0.0))
    s3, _, n3 = returns(sign_client)
    assert n3 - n2 == 1 and s3 == pytest.approx(s2)


def test_retries_and_stale_bars_are_not_scored_twice(sign_client: TestClient) -> None:
    sign_client.post("/predict", json=bar("RETRYUSDT", 0, 100.0, 1.0))
    sign_client.post("/predict", json=bar("RETRYUSDT", 5, 101.0, 1.0))
    before = returns(sign_client)
    skipped = {
        r: value(sign_client, "autotrader_online_bars_skipped_total", reason=r) for r in ("repeat", "stale")
    }
    sign_client.post("/predict", json=bar("RETRYUSDT", 5, 101.0, 1.0))  # same bar again
    sign_client.post("/predict", json=bar("RETRYUSDT", 0, 100.0, 1.0))  # an older bar
    assert returns(sign_client) == before
    assert (
        value(sign_client, "autotrader_online_bars_skipped_total", reason="repeat") == skipped["repeat"] + 1
    )
    assert value(sign_client, "autotrader_online_bars_skipped_total", reason="stale") == skipped["stale"] + 1


def _at(symbol: str, when: datetime | str, close: float, momentum: float = 1.0) -> dict[str, Any]:
    stamp = when if isinstance(when, str) else when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "broker": "binance",
        "symbol": symbol,
        "timestamp": stamp,
        "close": close,
        "features": {"momentum": momentum},
    }


def test_a_bar_dated_in_the_future_is_refused_and_cannot_freeze_scoring(sign_client: TestClient) -> None:
    """Before: one bar dated 9999 became the instrument's last bar, and every real bar after it was
    "older" and never scored again. Now it is a 422 naming the timestamp, and scoring goes on."""
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(minutes=10)
    assert sign_client.post("/predict", json=_at("FUTUREUSDT", t0, 100.0)).status_code == 200
    for when in ("9999-12-31T23:59:00Z", now + timedelta(hours=1)):
        response = sign_client.post("/predict", json=_at("FUTUREUSDT", when, 1.0))
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "instances[0].timestamp" in detail and "ahead of the server clock" in detail
    _, _, n0 = returns(sign_client)
    response = sign_client.post("/predict", json=_at("FUTUREUSDT", t0 + timedelta(minutes=5), 110.0))
    assert response.status_code == 200
    assert returns(sign_client)[2] == n0 + 1  # the real next bar is scored: nothing froze
    # within the allowed skew (120 s by default) a bar a little ahead of the clock is fine
    assert (
        sign_client.post("/predict", json=_at("FUTUREUSDT", now + timedelta(seconds=30), 1.0)).status_code
        == 200
    )
    # one future bar in a batch refuses the whole batch: nothing of it is scored
    batch = [
        _at("FUTUREUSDT", now + timedelta(minutes=1), 1.0),
        _at("FUTUREUSDT", now + timedelta(days=1), 1.0),
    ]
    response = sign_client.post("/predict", json={"instances": batch})
    assert response.status_code == 422 and "instances[1].timestamp" in response.json()["detail"]


def test_the_clock_skew_is_a_setting(model_dir: Path, features: pd.DataFrame) -> None:
    cols = feature_columns(features)
    good = instance(features.dropna(subset=cols).iloc[-1], cols)
    soon = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    strict_app = create_app(ServerConfig(model_uri=str(model_dir), model_version="1", max_clock_skew_s=0))
    with TestClient(strict_app) as c:
        assert c.app.state.loader.wait(60)
        assert c.post("/predict", json={**good, "timestamp": soon}).status_code == 422
        assert c.post("/predict", json=good).status_code == 200
    assert ServerConfig.from_env({"PREDICT_MAX_CLOCK_SKEW_S": "5"}).max_clock_skew_s == 5.0


def test_a_batch_is_scored_in_time_order(sign_client: TestClient) -> None:
    s0, _, n0 = returns(sign_client)
    batch = [
        bar("BATCHUSDT", 10, 90.0, 1.0),
        bar("BATCHUSDT", 0, 100.0, -1.0),
        bar("BATCHUSDT", 5, 80.0, 1.0),
    ]
    response = sign_client.post("/predict", json={"instances": batch})
    assert [p["signal"] for p in response.json()["predictions"]] == [1, -1, 1]  # answers in request order
    s1, _, n1 = returns(sign_client)
    # t0 short at 100 → t5 at 80: +20 %; t5 long at 80 → t10 at 90: +12.5 %.
    assert n1 - n0 == 2
    assert s1 - s0 == pytest.approx(0.20 + 0.125)


def test_scorer_forgets_the_oldest_instrument_beyond_its_bound() -> None:
    scorer = OnlineScorer(max_instruments=2)
    t = [pd.Timestamp(f"2026-01-01T00:0{i}:00Z").to_pydatetime() for i in range(3)]
    for sym in ("A", "B", "C"):
        scorer.observe([("binance", sym)], [t[0]], [1.0], [1])
    assert len(scorer) == 2
    assert scorer.observe([("binance", "A")], [t[1]], [2.0], [1]) == []  # forgotten: no previous bar
    assert scorer.observe([("binance", "C")], [t[1]], [2.0], [1]) == [pytest.approx(1.0)]


@pytest.mark.parametrize(
    ("uri", "explicit", "label"),
    [
        ("models:/autotrader-signal/3", None, "3"),
        ("models:/autotrader-signal/3", "7", "7"),
        ("models:/autotrader-signal@champion", None, "champion"),
        ("models/model", None, "local"),
    ],
)
def test_model_version_label_follows_the_contract(uri: str, explicit: str | None, label: str) -> None:
    config = ServerConfig.from_env({"MODEL_URI": uri, **({"MODEL_VERSION": explicit} if explicit else {})})
    assert config.model_uri == uri and config.model_version == label


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_numeric_setting_is_a_config_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="PREDICT_WORKERS"):
        ServerConfig.from_env({"MODEL_URI": "models/model", "PREDICT_WORKERS": value})


# ------------------------------------------------------------------- values the model cannot handle


@pytest.fixture(scope="module")
def logreg_models(tmp_path_factory: pytest.TempPathFactory, features: pd.DataFrame) -> dict[str, Path]:
    """The training pipeline's logistic candidate (impute → scale → LogisticRegression), fitted on real
    features: once logged by ``autotrader.modeling.tracking.log_model`` (bounds recorded with it),
    once saved plainly, as a model from before bounds were recorded."""
    import mlflow
    import mlflow.sklearn

    from autotrader.modeling.models import build
    from autotrader.modeling.tracking import download_model, log_model, skops_trusted_types
    from autotrader.params import TrainParams

    root = tmp_path_factory.mktemp("logreg")
    cols = feature_columns(features)
    X = features[cols].astype("float64")
    forward = features.groupby(["broker", "symbol"])["close"].shift(-12) / features["close"] - 1
    y = np.sign(forward.fillna(0.0).round(4)).astype(int)
    model = build("logreg", TrainParams()).fit(X, y)
    bounded = root / "bounded"
    bounded.mkdir()
    # log_model logs into the fluent API's active run; mlflow.set_tracking_uri also exports
    # MLFLOW_TRACKING_URI to the environment, which later tests' subprocesses would inherit (and which
    # wins over their params). Restore both: the module's URI as it was (usually unset), and the env.
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(f"sqlite:///{root / 'mlflow.db'}"):
            experiment = mlflow.create_experiment("bounds", artifact_location=(root / "artifacts").as_uri())
            with mlflow.start_run(experiment_id=experiment):
                logged = log_model(model, X)
            download_model(logged.model_uri, bounded)
    finally:
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
    plain = root / "plain"
    mlflow.sklearn.save_model(
        model,
        str(plain),
        signature=mlflow.models.infer_signature(X.head(20), y.head(20)),
        skops_trusted_types=skops_trusted_types(model),
    )
    return {"bounded": bounded, "plain": plain}


@pytest.mark.parametrize("kind", ["bounded", "plain"])
def test_a_huge_feature_value_is_a_422_naming_the_feature_not_a_500(
    logreg_models: dict[str, Path], features: pd.DataFrame, kind: str
) -> None:
    """1e306 is valid JSON and a finite float, but the logistic model overflows on it (before: a 500).
    With bounds recorded at training it is refused against them; without, by the finite check of the
    Pipeline's transformed input."""
    cols = feature_columns(features)
    good = instance(features.dropna(subset=cols).iloc[-1], cols)
    with _client(str(logreg_models[kind]), kind) as c:
        assert c.app.state.loader.wait(60)
        assert c.get("/readyz").status_code == 200, c.get("/readyz").text
        assert c.post("/predict", json=good).status_code == 200
        for feature in ("ret_1", "vol_12", cols[-1]):
            for huge in (1e306, -1e306):
                bad = {**good, "features": {**good["features"], feature: huge}}
                response = c.post("/predict", json={"instances": [good, bad]})
                if kind == "plain" and feature != "ret_1":
                    # without bounds only what overflows is refused; a value the scaler turns into
                    # something finite is the model's to judge (here: a prediction, never a 500)
                    assert response.status_code in (200, 422), (feature, response.text)
                    if response.status_code == 200:
                        continue
                assert response.status_code == 422, (feature, response.text)
                detail = response.json()["detail"]
                assert f"instances[1].features.{feature}" in detail, detail
        assert value(c, "autotrader_requests_total", route="/predict", status="500") == 0
        assert c.post("/predict", json=good).status_code == 200


def test_recorded_bounds_come_from_the_training_rows(
    logreg_models: dict[str, Path], features: pd.DataFrame
) -> None:
    from mlflow.models import Model

    cols = feature_columns(features)
    recorded = Model.load(str(logreg_models["bounded"] / "MLmodel")).metadata["feature_bounds"]
    assert set(recorded) == set(cols)
    for c in cols:
        column = features[c].astype("float64")
        if column.notna().any():
            assert recorded[c] == [pytest.approx(column.min()), pytest.approx(column.max())]
        else:
            assert recorded[c] is None
    # a value inside the widened range is accepted, one just beyond it is not
    good = instance(features.dropna(subset=cols).iloc[-1], cols)
    lo, hi = recorded["ret_1"]
    edge = hi + 10 * (hi - lo)
    with _client(str(logreg_models["bounded"]), "b") as c:
        assert c.app.state.loader.wait(60)
        inside = {**good, "features": {**good["features"], "ret_1": edge * 0.999}}
        outside = {**good, "features": {**good["features"], "ret_1": edge * 1.001}}
        assert c.post("/predict", json=inside).status_code == 200
        response = c.post("/predict", json=outside)
        assert response.status_code == 422 and "training range" in response.json()["detail"]


def test_a_pipeline_that_drops_an_empty_column_by_name_is_served(
    tmp_path: Path, features: pd.DataFrame
) -> None:
    """Training's hgb Pipeline drops an all-missing column by name (a source that quotes no spread):
    it cannot predict a plain matrix. Before, the fast path fed it one, the warm-up failed and the
    model never became ready; now it is served through the DataFrame path, and its answers are the
    model's own."""
    import mlflow.sklearn

    from autotrader.modeling.models import build
    from autotrader.modeling.tracking import skops_trusted_types
    from autotrader.params import TrainParams

    cols = feature_columns(features)
    X = features[cols].astype("float64").assign(rel_spread=np.nan)
    forward = features.groupby(["broker", "symbol"])["close"].shift(-12) / features["close"] - 1
    y = np.sign(forward.fillna(0.0).round(4)).astype(int)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # OpenMP on a busy 2-core box (see test_serving_support.train_model)
        small = TrainParams.model_validate({"hgb": {"max_iter": 20}})
        model = build("hgb", small, empty=["rel_spread"]).fit(X, y)
    folder = tmp_path / "dropping"
    mlflow.sklearn.save_model(
        model,
        str(folder),
        signature=mlflow.models.infer_signature(X.head(20), y.head(20)),
        skops_trusted_types=skops_trusted_types(model),
    )
    rows = X.dropna(subset=[c for c in cols if c != "rel_spread"]).tail(5)
    with _client(str(folder), "drop") as c:
        assert c.app.state.loader.wait(60)
        assert c.get("/readyz").status_code == 200, c.get("/readyz").text
        body = {"instances": [instance(features.loc[i], cols) for i in rows.index]}
        for inst in body["instances"]:
            inst["features"]["rel_spread"] = None  # the source quotes no spread
        response = c.post("/predict", json=body)
        assert response.status_code == 200, response.text
        assert [p["signal"] for p in response.json()["predictions"]] == model.predict(rows).tolist()


def test_deploy_checks_synthetic_inputs_stay_inside_the_recorded_bounds(
    logreg_models: dict[str, Path],
) -> None:
    """``autotrader deploy check`` without a feature store smoke-tests the model on synthetic rows;
    for a model with recorded bounds they are drawn inside them, so the check does not trip the
    server's own bounds (standard-normal rows did: ret_1's accepted range is well inside ±1)."""
    from autotrader.serving.deploy_checks import golden_instances, predict_instances
    from autotrader.serving.model import load

    model = load(str(logreg_models["bounded"]))
    assert model.bounds is not None
    instances = golden_instances(model, None)
    signals = predict_instances(model, instances)
    assert len(signals) == len(instances) and set(signals) <= {-1, 0, 1}
