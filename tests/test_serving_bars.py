"""``POST /predict/bars``: the server computes features from bars with the store's own code.

A small real pipeline (extract → validate → features → prepare → train, in a scratch copy) gives a
feature store and a model that records its feature set. Then, for every instrument and every bar of
a test window, the raw bars up to that bar go to the server (the bar + its warm-up, as a client
sends them) and the features it computed must equal the store's row bit for bit, and its signal the
batch prediction from the store's row. Once over the simulated market (three brokers) and once over
the real hourly EURUSD file. A feature param changed on the server side, or a model whose recorded
params were edited, must give a 409 naming the param, never a skewed answer. Bad bars are 422s
naming the store's validation rule, and leave the server's online state as it was.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from autotrader import rawstore
from autotrader.features import compute_feature_arrays
from autotrader.params import FeatureParams
from autotrader.serving import ServerConfig, create_app
from autotrader.store import feature_columns, load_features, read_metadata

from .conftest import Project, make_project, use_eurusd_file

pytestmark = [pytest.mark.xdist_group("serving-bars"), pytest.mark.slow]

SMALL_TRAINING = {
    "train.bootstrap_samples": 200,
    "train.cv_folds": 3,
    "train.candidates": ["hgb"],
}


def run_pipeline(project: Project) -> None:
    for stage in ("extract", "validate", "features", "prepare", "train"):
        project.stage(stage)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(tmp_path_factory.mktemp("bars-sim") / "project", with_dvc=False)
    project.set_params(
        **{
            "data.lookback_days": 24,
            "data.instruments": [
                {"broker": "binance", "symbol": "BTCUSDT"},
                {"broker": "oanda", "symbol": "EUR_USD"},
                {"broker": "ibkr", "symbol": "SPY"},
            ],
            "train.lookback_days": 22,
            "train.test_days": 3,
            "train.oos_windows": 2,
            **SMALL_TRAINING,
        }
    )
    run_pipeline(project)
    return project


@pytest.fixture(scope="module")
def eurusd(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The real hourly EURUSD file through the files source, as tests/test_training_files.py reads it."""
    project = make_project(tmp_path_factory.mktemp("bars-eurusd") / "project", with_dvc=False)
    use_eurusd_file(project, **SMALL_TRAINING)
    run_pipeline(project)
    return project


def client_for(model: Path, **config: Any) -> TestClient:
    app = create_app(ServerConfig(model_uri=str(model), model_version="1", load_attempts=1, **config))
    return TestClient(app)


def bar_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw bars → the wire format: the bar schema, a tz-aware ISO timestamp, null for a missing spread."""
    out = []
    for row in frame.itertuples(index=False):
        out.append(
            {
                "timestamp": row.timestamp.isoformat(),
                "broker": row.broker,
                "symbol": row.symbol,
                "open": float(row.open),
                "high": float(row.high),
                "low": float(row.low),
                "close": float(row.close),
                "volume": float(row.volume),
                "spread": None if pd.isna(row.spread) else float(row.spread),
            }
        )
    return out


def raw_bars(project: Project) -> dict[tuple[str, str], pd.DataFrame]:
    raw = project.root / "data" / "raw"
    return {
        (b, s): rawstore.read_instrument(raw, b, s).sort_values("timestamp").reset_index(drop=True)
        for b, s in rawstore.instruments(raw)
    }


def bits(values: np.ndarray) -> np.ndarray:
    """float64 → its bit pattern, every NaN made one pattern: "equal" means bit for bit, NaN-aware."""
    values = np.where(np.isnan(values), np.nan, values)
    return values.view(np.int64)


def check_parity(project: Project, window_days: int) -> int:
    """Every bar of the last ``window_days`` of the store, per instrument: online == store, bit for bit.

    Returns how many (instrument, bar) pairs were compared.
    """
    store = project.root / "data" / "features"
    meta = read_metadata(store)
    names = feature_columns(store)
    end = pd.Timestamp(meta["time_range"]["end"]) + pd.Timedelta(meta["interval"])
    rows = load_features(end - pd.Timedelta(days=window_days), end, root=store)
    assert rows["broker"].nunique() >= 1 and len(rows) > 0
    model_dir = project.root / "models" / "model"
    batch = mlflow.pyfunc.load_model(str(model_dir)).predict(rows[names])
    rows = rows.assign(batch_signal=np.asarray(batch).reshape(-1).astype(int))
    raws = raw_bars(project)
    compared = 0
    with client_for(model_dir) as client:
        assert client.app.state.loader.wait(60)
        ready = client.get("/readyz").json()
        need = ready["bars"]["bars_required"]
        assert need == meta["warmup_bars"] + 1
        # one request per timestamp, holding every instrument that has a bar then (several instruments)
        for stamp, at in rows.groupby("timestamp", sort=True):
            body: list[dict[str, Any]] = []
            for row in at.itertuples(index=False):
                raw = raws[(row.broker, row.symbol)]
                upto = raw[raw["timestamp"] <= stamp].tail(need)
                assert len(upto) == need, f"{row.broker}/{row.symbol} {stamp}: warm-up not in raw"
                body.extend(bar_rows(upto))
            answer = client.post("/predict/bars", json={"bars": body, "return_features": True})
            assert answer.status_code == 200, answer.text
            got = {(p["broker"], p["symbol"]): p for p in answer.json()["predictions"]}
            for row in at.itertuples(index=False):
                pred = got[(row.broker, row.symbol)]
                assert pred["timestamp"] == stamp.isoformat().replace("+00:00", "Z")
                online = np.array(
                    [np.nan if pred["features"][n] is None else pred["features"][n] for n in names]
                )
                offline = np.array([getattr(row, n) for n in names], dtype=np.float64)
                differ = [n for n, a, b in zip(names, bits(online), bits(offline), strict=True) if a != b]
                assert not differ, f"{row.broker}/{row.symbol} {stamp}: online ≠ store for {differ}"
                assert pred["signal"] == row.batch_signal, f"{row.broker}/{row.symbol} {stamp}"
                compared += 1
    return compared


def test_online_features_and_signals_equal_the_store_bit_for_bit_on_the_simulated_market(
    sim: Project,
) -> None:
    compared = check_parity(sim, window_days=1)
    assert compared >= 288 + 288 + 78  # 24/7, 24/5 and one NYSE session of 5-minute bars


def test_online_features_and_signals_equal_the_store_bit_for_bit_on_real_eurusd(eurusd: Project) -> None:
    compared = check_parity(eurusd, window_days=7)
    assert compared >= 100  # a week of hourly FX bars


def test_the_model_records_its_feature_params_and_their_hash(sim: Project) -> None:
    mlmodel = yaml.safe_load((sim.root / "models" / "model" / "MLmodel").read_text())
    record = mlmodel["metadata"]["feature_set"]
    meta = read_metadata(sim.root / "data" / "features")
    assert record["params"] == meta["feature_params"]
    assert record["fingerprint"] == meta["fingerprint"] and record["interval"] == meta["interval"]
    assert record["warmup_bars"] == meta["warmup_bars"]
    from autotrader.features.contract import params_hash

    assert record["params_hash"] == params_hash(meta["feature_params"])


def good_window(project: Project, broker: str = "binance", symbol: str = "BTCUSDT") -> list[dict[str, Any]]:
    raw = raw_bars(project)[(broker, symbol)]
    need = read_metadata(project.root / "data" / "features")["warmup_bars"] + 1
    return bar_rows(raw.tail(need))


def test_a_feature_param_changed_on_the_server_is_a_409_naming_it(sim: Project) -> None:
    """The server configured with another rsi_window would compute rsi_10 where the store has rsi_14:
    parity breaks (shown directly), so bars-in refuses, naming the param; vectors still work."""
    bars = good_window(sim)
    frame = pd.DataFrame(bars).assign(timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True))
    frame["spread"] = frame["spread"].astype("float64")
    ours = compute_feature_arrays(frame, FeatureParams(rsi_window=10))
    theirs = compute_feature_arrays(frame, FeatureParams())
    assert ours["rsi_10"][-1] != theirs["rsi_14"][-1]  # the skew the check prevents

    with client_for(sim.root / "models" / "model", feature_params={"rsi_window": 10}) as client:
        assert client.app.state.loader.wait(60)
        ready = client.get("/readyz")
        assert ready.status_code == 200  # /predict (vectors) is unaffected
        status = ready.json()["bars"]
        assert status["ready"] is False and "rsi_window (model 14, server 10)" in status["reason"]
        answer = client.post("/predict/bars", json={"bars": bars})
        assert answer.status_code == 409
        assert "rsi_window" in answer.json()["detail"] and "params_hash" in answer.json()["detail"]
    with client_for(sim.root / "models" / "model", feature_params={"rsi_window": 14}) as client:
        assert client.app.state.loader.wait(60)
        assert client.post("/predict/bars", json={"bars": bars}).status_code == 200  # the same value: served


def test_recorded_params_that_do_not_match_their_hash_are_a_409(sim: Project, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(sim.root / "models" / "model", model)
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    mlmodel["metadata"]["feature_set"]["params"]["macd"]["fast"] = 10
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with client_for(model) as client:
        assert client.app.state.loader.wait(60)
        answer = client.post("/predict/bars", json={"bars": good_window(sim)})
        assert answer.status_code == 409 and "params_hash" in answer.json()["detail"]


def test_a_model_without_recorded_params_refuses_bars_in(sim: Project, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(sim.root / "models" / "model", model)
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    del mlmodel["metadata"]["feature_set"]
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with client_for(model) as client:
        assert client.app.state.loader.wait(60)
        answer = client.post("/predict/bars", json={"bars": good_window(sim)})
        assert answer.status_code == 409 and "records no feature params" in answer.json()["detail"]


# ---------------------------------------------------------------------------------------- bad bars


def _shift(bar: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**bar, **changes}


def bad_windows(good: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(rule, body) pairs: each breaks one of the store's validation rules."""
    n = len(good)
    swapped = list(good)
    swapped[n - 3], swapped[n - 2] = swapped[n - 2], swapped[n - 3]
    duplicate = [*good[:-1], _shift(good[-1], timestamp=good[-2]["timestamp"])]
    inverted = [*good[:-1], _shift(good[-1], high=good[-1]["low"] * 0.999)]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    frozen_bar = good[-12]
    frozen = [*good[:-12], *[_shift(frozen_bar, timestamp=b["timestamp"]) for b in good[-12:]]]
    # NaN and an overflow to infinity are not JSON a client library writes: sent as raw bytes
    nan_body = json.dumps({"bars": [*good[:-1], _shift(good[-1], close=float("nan"))]}).encode()
    inf_body = json.dumps({"bars": good}).encode()
    last_close = json.dumps(good[-1]["close"])
    inf_body = (
        inf_body[: inf_body.rindex(last_close.encode())]
        + b"1e400"
        + inf_body[inf_body.rindex(last_close.encode()) + len(last_close) :]
    )
    return [
        ("increasing_timestamps", {"bars": swapped}),
        ("unique_timestamps", {"bars": duplicate}),
        ("high_ge_low", {"bars": inverted}),
        ("finite_values", nan_body),
        ("finite_values", inf_body),
        ("not_future", {"bars": [*good[:-1], _shift(good[-1], timestamp=future)]}),
        ("frozen_ohlc", {"bars": frozen}),
    ]


def online_state(client: TestClient) -> tuple[Any, str]:
    scorer = client.app.state.service.scorer
    metrics = client.get("/metrics").text
    counted = "\n".join(
        line
        for line in metrics.splitlines()
        if line.startswith(("autotrader_predictions_total", "autotrader_strategy")) and "_created" not in line
    )
    with scorer._lock:
        last = {k: (v.timestamp, v.close, v.signal) for k, v in scorer._last.items()}
    return last, counted


def test_bad_bars_are_422s_naming_the_rule_and_change_no_state(sim: Project) -> None:
    raw = raw_bars(sim)[("binance", "BTCUSDT")]
    need = read_metadata(sim.root / "data" / "features")["warmup_bars"] + 1
    first = bar_rows(raw.iloc[-need - 1 : -1])  # a window, then the next bar's window
    second = bar_rows(raw.tail(need))
    with (
        client_for(sim.root / "models" / "model") as client,
        client_for(sim.root / "models" / "model") as fresh,
    ):
        assert client.app.state.loader.wait(60) and fresh.app.state.loader.wait(60)
        for loaded in (client, fresh):  # finished either way: say why when a load failed
            state = loaded.app.state.loader.state
            assert state.status == "ready", state.reason
        assert client.post("/predict/bars", json={"bars": first}).status_code == 200
        assert fresh.post("/predict/bars", json={"bars": first}).status_code == 200
        before = online_state(client)
        for rule, body in bad_windows(second):
            if isinstance(body, bytes):
                answer = client.post(
                    "/predict/bars", content=body, headers={"content-type": "application/json"}
                )
            else:
                answer = client.post("/predict/bars", json=body)
            assert answer.status_code == 422, (rule, answer.text)
            detail = answer.json()
            assert f"rule {rule}" in detail["detail"] and "binance/BTCUSDT" in detail["detail"], detail
            assert detail["errors"][0]["rule"] == rule
            assert online_state(client) == before, f"{rule}: a rejected bar changed the online state"
        # the next good bar is scored exactly as on a server that never saw the bad ones
        good = client.post("/predict/bars", json={"bars": second})
        clean = fresh.post("/predict/bars", json={"bars": second})
        assert good.status_code == clean.status_code == 200
        assert good.json() == clean.json()
        assert online_state(client) == online_state(fresh)


def test_too_few_bars_say_how_many_are_needed(sim: Project) -> None:
    good = good_window(sim)
    with client_for(sim.root / "models" / "model") as client:
        assert client.app.state.loader.wait(60)
        answer = client.post("/predict/bars", json={"bars": good[1:]})
        assert answer.status_code == 422
        assert f"need {len(good)} per instrument" in answer.json()["detail"]
        assert answer.json()["errors"][0]["bars_required"] == len(good)
        naive = [*good[:-1], _shift(good[-1], timestamp=good[-1]["timestamp"][:19])]
        answer = client.post("/predict/bars", json={"bars": naive})
        assert answer.status_code == 422 and "timezone" in answer.text


def test_feature_params_come_from_the_environment_as_a_json_object() -> None:
    from autotrader.errors import ConfigError

    config = ServerConfig.from_env({"MODEL_URI": "models/model", "FEATURE_PARAMS": '{"rsi_window": 10}'})
    assert config.feature_params == {"rsi_window": 10}
    assert ServerConfig.from_env({"MODEL_URI": "models/model"}).feature_params is None
    for bad in ("[1]", "{rsi_window: 10}"):
        with pytest.raises(ConfigError, match="FEATURE_PARAMS"):
            ServerConfig.from_env({"MODEL_URI": "models/model", "FEATURE_PARAMS": bad})


# --- the columns form (bar_columns.py): the same bars, one list per column --------------------------------


PRICES = ("open", "high", "low", "close", "volume", "spread")


def as_windows(rows: list[dict[str, Any]], offset_for: str | None = None) -> list[dict[str, Any]]:
    """Rows → the columns form, one window per instrument in first-seen order. Timestamps of the
    instrument ``offset_for`` are written as ``+00:00`` (the per-bar parse), the rest as ``Z``."""
    windows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["broker"], row["symbol"])
        window = windows.setdefault(
            key,
            {"broker": key[0], "symbol": key[1], "timestamp": []} | {c: [] for c in PRICES},
        )
        stamp = row["timestamp"]
        if "/".join(key) != offset_for:
            stamp = stamp.replace("+00:00", "Z")
        window["timestamp"].append(stamp)
        for c in PRICES:
            window[c].append(row[c])
    return list(windows.values())


def test_the_columns_form_answers_as_the_rows_form_bit_for_bit(sim: Project) -> None:
    """The last 40 bars of every instrument, one request per timestamp holding all instruments: two
    servers, one sent rows and one sent columns, give identical answers (signals, features, scoring)."""
    raws = raw_bars(sim)
    need = read_metadata(sim.root / "data" / "features")["warmup_bars"] + 1
    keys = sorted(raws)
    with (
        client_for(sim.root / "models" / "model") as by_rows,
        client_for(sim.root / "models" / "model") as by_columns,
    ):
        assert by_rows.app.state.loader.wait(60) and by_columns.app.state.loader.wait(60)
        stamps = sorted(set(raws[keys[0]]["timestamp"].tail(40)))
        compared = 0
        for stamp in stamps:
            rows: list[dict[str, Any]] = []
            for key in keys:
                upto = raws[key][raws[key]["timestamp"] <= stamp].tail(need)
                if len(upto) == need and upto["timestamp"].iloc[-1] == stamp:
                    rows.extend(bar_rows(upto))
            windows = as_windows(rows, offset_for="/".join(keys[-1]))
            a = by_rows.post("/predict/bars", json={"bars": rows, "return_features": True})
            b = by_columns.post("/predict/bars", json={"windows": windows, "return_features": True})
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.json() == b.json()
            compared += len(a.json()["predictions"])
        assert compared >= 40
        assert online_state(by_rows) == online_state(by_columns)


def test_bad_columns_are_422s_naming_the_column_or_rule(sim: Project) -> None:
    good = good_window(sim)
    [window] = as_windows(good)
    n = len(good)
    inverted = {**window, "high": [*window["high"][:-1], window["low"][-1] * 0.999]}
    short = {**window, "volume": window["volume"][:-1]}
    naive = {**window, "timestamp": [*window["timestamp"][:-1], window["timestamp"][-1][:19]]}
    garbled = {**window, "timestamp": [*window["timestamp"][:-1], "2026-13-01T00:00:00Z"]}
    boolean = {**window, "open": [True, *window["open"][1:]]}
    cases: list[tuple[dict[str, Any], int, list[str]]] = [
        ({"windows": [inverted]}, 422, ["rule high_ge_low", f"windows[0] bar {n - 1}", "binance/BTCUSDT"]),
        ({"windows": [short]}, 422, ["column volume has", f"for {n} timestamps"]),
        ({"windows": [naive]}, 422, [f"windows[0].timestamp[{n - 1}]", "timezone"]),
        ({"windows": [garbled]}, 422, [f"windows[0].timestamp[{n - 1}]", "not an ISO 8601 time"]),
        ({"windows": [boolean]}, 422, ["windows[0].open[0]", "valid number"]),
        ({"windows": [window, window]}, 422, ["already has windows[0]"]),
        ({"windows": [window], "bars": good}, 422, ["either bars", "or windows"]),
        ({"windows": []}, 422, ["windows is empty"]),
        ({"windows": [{**window} | {c: [] for c in ("timestamp", *PRICES)}]}, 422, ["windows[0]", "no bars"]),
        (
            {
                "windows": [
                    {**window, "timestamp": window["timestamp"][1:]} | {c: window[c][1:] for c in PRICES}
                ]
            },
            422,
            [f"need {n} per instrument"],
        ),
    ]
    with client_for(sim.root / "models" / "model") as client:
        assert client.app.state.loader.wait(60)
        before = online_state(client)
        for body, status, words in cases:
            answer = client.post("/predict/bars", json=body)
            assert answer.status_code == status, (words, answer.text)
            for word in words:
                assert word in answer.text, (word, answer.text)
        assert online_state(client) == before, "a rejected window changed the online state"
        assert client.post("/predict/bars", json={"windows": [window]}).status_code == 200
