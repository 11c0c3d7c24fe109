"""What an Argo step calls inside its pod: params overrides, the state hand-off, outputs, notify."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Response

from autotrader.errors import ConfigError
from autotrader.orchestration import state
from autotrader.orchestration.notify import NotifyError, build_payload, failed_nodes, send
from autotrader.orchestration.overrides import apply_overrides, relative_day
from autotrader.params import load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    return path


# ------------------------------------------------------------------------------------ overrides


def test_overrides_are_typed_like_dvc_and_strings_stay_strings(params_file: Path) -> None:
    changes = apply_overrides(
        params_file,
        ["data.end=2026-12-01", "data.lookback_days=5", "train.candidates=[logreg]", "data.source=live"],
    )
    assert changes == {
        "data.end": "2026-12-01",
        "data.lookback_days": 5,
        "train.candidates": ["logreg"],
        "data.source": "live",
    }
    params = load_params(params_file)
    assert params.data.end == "2026-12-01" and params.data.lookback_days == 5
    assert params.train.candidates == ("logreg",) and params.data.source == "live"
    assert params.gates.min_sharpe == 2.0  # untouched


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("data.lookbak_days=3", "data.lookbak_days"),
        ("data.lookback_days=-3", "data.lookback_days"),
        ("data.source=ftp", "data.source"),
        ("nope.end=1", "'nope' is not a section"),
        ("data.end", "expected KEY=VALUE"),
    ],
)
def test_a_bad_override_is_refused_and_leaves_params_as_they_were(
    params_file: Path, assignment: str, message: str
) -> None:
    before = params_file.read_bytes()
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        apply_overrides(params_file, ["data.end=2026-12-01", assignment])
    assert params_file.read_bytes() == before


def test_relative_days_resolve_against_the_clock(params_file: Path) -> None:
    now = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    assert relative_day("today", now) == "2026-11-20"
    assert relative_day("today-4h", now) == "2026-11-19"  # before 04:00 UTC the SLA promises yesterday
    assert relative_day("today-4h", datetime(2026, 11, 20, 4, 0, tzinfo=UTC)) == "2026-11-20"
    assert relative_day("2026-11-20", now) is None
    apply_overrides(params_file, ["data.end=today-4h"], now=now)
    assert load_params(params_file).data.end == "2026-11-19"


# ------------------------------------------------------------------------------------ state


HEALTH = {  # the shape stages/health.py writes (autotrader.health.HealthReport.as_metrics)
    "status": "warn",
    "interval": "5min",
    "stale_instruments": ["oanda/EUR_USD", "ibkr/SPY"],
    "drift": {"method": "psi", "threshold": 0.2, "max_psi": 0.31, "max_psi_feature": "binance/BTCUSDT:ret_1"},
    "instruments": {
        "binance/BTCUSDT": {"freshness": {"lag_bars": 0, "stale": False}, "drift": {"max_psi": 0.31}},
        "oanda/EUR_USD": {"freshness": {"lag_bars": 12, "stale": True}, "drift": {"max_psi": 0.05}},
        "ibkr/SPY": {"freshness": {"lag_bars": None, "stale": True}},
    },
}


def test_health_outputs_read_what_the_health_stage_writes() -> None:
    """Built with the health area's own writer (HealthReport.as_metrics), not a hand-made copy."""
    import pandas as pd

    from autotrader.health import Freshness, HealthReport
    from autotrader.params import HealthParams

    at = pd.Timestamp("2026-11-20", tz="UTC")
    fresh = Freshness("binance", "BTCUSDT", at - pd.Timedelta("5min"), at - pd.Timedelta("5min"), 0, 3, False)
    stale = Freshness("oanda", "EUR_USD", at - pd.Timedelta("65min"), at - pd.Timedelta("5min"), 12, 3, True)
    report = HealthReport(
        at,
        "5min",
        [fresh, stale],
        integrity={},
        drift=None,
        drift_error="too few rows",
        health=HealthParams(),
    )
    max_psi, stale_count, lag = state.health_outputs(report.as_metrics())
    assert math.isnan(max_psi)  # no drift computed: no PSI to report
    assert (stale_count, lag) == (1.0, 12 * 300.0)


def test_health_outputs_are_read_from_the_health_metrics() -> None:
    max_psi, stale, lag = state.health_outputs(HEALTH)
    assert (max_psi, stale, lag) == (0.31, 2.0, 12 * 300.0)
    assert all(math.isnan(x) for x in state.health_outputs(None))


@pytest.mark.parametrize(
    ("gates", "decision"),
    [({"decision": "promote"}, "promote"), ({"decision": "Reject"}, "reject"), ({"promote": False}, "reject"),
     ({"passed": True}, "promote"), ({}, "none"), (None, "none")],
)  # fmt: skip
def test_gate_decision(gates: object, decision: str) -> None:
    assert state.gate_decision(gates) == decision


@pytest.mark.parametrize(
    ("promotion", "version"),
    [({"promoted": True, "version": "7"}, "7"), ({"promoted": False, "reason": "gates"}, "none"),
     ({"model_version": 3}, "3"), (None, "none")],
)  # fmt: skip
def test_promoted_version(promotion: object, version: str) -> None:
    assert state.promoted_version(promotion) == version


def test_state_round_trip_between_two_workspaces(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    first, second = tmp_path / "pod1", tmp_path / "pod2"
    (first / "metrics").mkdir(parents=True)
    (first / "reports" / "drift").mkdir(parents=True)
    (first / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (first / "metrics" / "health.json").write_text(json.dumps(HEALTH))
    (first / "metrics" / "gates.json").write_text(json.dumps({"decision": "promote"}))
    (first / "reports" / "drift" / "index.html").write_text("<html></html>")
    outputs = tmp_path / "outputs"
    info = state.save(params, tmp_path / "state", ["health"], root=first, outputs=outputs)
    assert info == {"data_end": params.data.end, "stages": ["health"]}
    assert {p.name: p.read_text() for p in outputs.iterdir()} == {
        "max-psi": "0.31\n", "stale-instruments": "2\n", "freshness-lag-seconds": "3600\n",
        "decision": "promote\n", "model-version": "none\n", "data-end": f"{params.data.end}\n",
    }  # fmt: skip

    second.mkdir()
    (second / "metrics").mkdir()
    (second / "metrics" / "stale.json").write_text("{}")  # whatever was there is replaced, not merged
    assert state.restore(params, tmp_path / "state", root=second)["stages"] == ["health"]
    assert (second / "dvc.lock").read_text() == (first / "dvc.lock").read_text()
    assert sorted(p.name for p in (second / "metrics").iterdir()) == ["gates.json", "health.json"]
    assert (second / "reports" / "drift" / "index.html").exists()
    # The history carries on to the next save.
    assert state.save(params, tmp_path / "state2", ["gate"], root=second)["stages"] == ["health", "gate"]


def test_restore_of_nothing_is_a_first_run(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    assert state.restore(params, tmp_path / "missing", root=tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_check_waits_for_the_state_of_the_day(tmp_path: Path) -> None:
    with pytest.raises(state.StateError, match="no published pipeline state yet"):
        state.check(tmp_path / "missing", "2026-11-22")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "state.json").write_text(json.dumps({"data_end": "2026-11-21", "stages": []}))
    with pytest.raises(state.StateError, match=r"is for data\.end=2026-11-21, not 2026-11-22"):
        state.check(tmp_path / "s", "2026-11-22")
    assert state.check(tmp_path / "s", "2026-11-21")["data_end"] == "2026-11-21"


# ------------------------------------------------------------------------------------ notify


FAILURES = json.dumps(
    [
        {
            "displayName": "extract-broker(1:oanda)",
            "message": "oanda/EUR_USD: HTTP 503 after 5 attempts",
            "phase": "Failed",
        }
    ]
)


def test_failed_nodes_are_named() -> None:
    assert failed_nodes(FAILURES) == [
        {"node": "extract-broker(1:oanda)", "message": "oanda/EUR_USD: HTTP 503 after 5 attempts"}
    ]
    assert failed_nodes("[]") == [] and failed_nodes(None) == []
    assert failed_nodes("not json") == [{"node": "?", "message": "not json"}]


def test_notify_posts_the_failure_to_the_webhook(httpserver: HTTPServer) -> None:
    payload = build_payload("Failed", "data-pipeline x did not finish", FAILURES, "data-pipeline-123")
    httpserver.expect_oneshot_request("/hook", method="POST", json=payload).respond_with_data("ok")
    send(payload, url=httpserver.url_for("/hook"))
    httpserver.check_assertions()
    assert "`extract-broker(1:oanda)`: oanda/EUR_USD: HTTP 503" in payload["text"]


def test_notify_errors_never_print_the_webhook_url(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpserver.expect_request("/secret-token-path").respond_with_response(Response("no", status=500))
    url = httpserver.url_for("/secret-token-path")
    with pytest.raises(NotifyError, match="HTTP 500") as err:
        send(build_payload("Failed", "m"), url=url)
    assert "secret-token-path" not in str(err.value)
    monkeypatch.delenv("AUTOTRADER_NOTIFY_WEBHOOK_URL", raising=False)
    with pytest.raises(ConfigError, match="AUTOTRADER_NOTIFY_WEBHOOK_URL is not set"):
        send(build_payload("Failed", "m"))


def test_notify_cli_reads_the_argo_inputs_from_the_environment(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotrader.cli import main

    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("ok")
    monkeypatch.setenv("AUTOTRADER_NOTIFY_WEBHOOK_URL", httpserver.url_for("/hook"))
    monkeypatch.setenv("NOTIFY_STATUS", "Failed")
    monkeypatch.setenv("NOTIFY_MESSAGE", 'it\'s "quoted"; and $(not run)')
    monkeypatch.setenv("NOTIFY_FAILURES", FAILURES)
    monkeypatch.setenv("NOTIFY_WORKFLOW", "data-pipeline-1")
    assert main(["pipeline", "notify"]) == 0
    request, _ = httpserver.log[0]
    body = request.get_json()
    assert body["workflow"] == "data-pipeline-1" and body["failures"][0]["node"] == "extract-broker(1:oanda)"
    assert 'it\'s "quoted"; and $(not run)' in body["text"]


def test_extract_step_narrows_params_to_one_broker() -> None:
    from autotrader.orchestration.extract import broker_data

    data = load_params(REPO / "params.yaml").data
    oanda = broker_data(data, "oanda")
    assert {i.broker for i in oanda.active_instruments()} == {"oanda"}
    assert len(oanda.active_instruments()) == sum(i.broker == "oanda" for i in data.instruments)
    with pytest.raises(ConfigError, match="'kraken' is not one of"):
        broker_data(data, "kraken")
    assert yaml.safe_load((REPO / "params.yaml").read_text())["data"]["instruments"]  # params unchanged
