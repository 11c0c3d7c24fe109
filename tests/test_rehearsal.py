"""The canary analysis rehearsal: real model servers, a real Prometheus, the rendered manifests' own
queries and conditions. A good canary is promoted; an erroring, a slow and a losing one are each
aborted at the first analysis and traffic goes back to stable."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from autotrader.errors import DeployError
from autotrader.params import Instrument
from autotrader.rehearsal import rehearse as rh
from autotrader.rehearsal.expr import ExprError, evaluate

REPO = Path(__file__).resolve().parents[1]
OVERLAY = REPO / "rollouts" / "overlays" / "production"
INSTRUMENTS = [
    Instrument(broker="binance", symbol="BTCUSDT"),
    Instrument(broker="oanda", symbol="EUR_USD"),
    Instrument(broker="binance", symbol="ETHUSDT"),
    Instrument(broker="oanda", symbol="GBP_USD"),
    Instrument(broker="oanda", symbol="USD_JPY"),
]
SCALE = rh.TimeScale(seconds_per_minute=0.6)


# --- pure parts (no servers) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("!(len(result) == 0 || isNaN(result[0])) && result[0] < 0.01", [0.001], True),
        ("!(len(result) == 0 || isNaN(result[0])) && result[0] < 0.01", [], False),
        ("!(len(result) == 0 || isNaN(result[0])) && result[0] < 0.01", [math.nan], False),
        ("!(len(result) == 0 || isNaN(result[0])) && result[0] >= 0.01", [0.5], True),
        ("result[0] >= 0.95 and not (result[0] > 2)", [1.0], True),
        ("len(result) == 0 || result[0] > 1", [], True),  # short-circuit: result[0] never read
        ("-result * 2 + 1 < 0", 3.0, True),
        ("isInf(result) || abs(result) > 10", -11.0, True),
        ("result[1] == 2", [1.0, 2.0], True),
    ],
)
def test_condition_language(condition, result, expected) -> None:
    assert evaluate(condition, result) is expected


@pytest.mark.parametrize(
    "condition",
    ["result[0] > 1", "__import__('os')", "result.x > 1", "len(result) >", "result > 1 ;", "result + 1"],
)
def test_condition_language_refuses_what_it_cannot_do_safely(condition) -> None:
    with pytest.raises(ExprError):
        evaluate(condition, [])


def test_assess_follows_argo_rules() -> None:
    assert rh.assess("result[0] < 1", "", [0.5]) == "Successful"
    assert rh.assess("result[0] < 1", "", [2.0]) == "Failed"  # success only: not success = failure
    assert rh.assess("", "result[0] > 1", [0.5]) == "Successful"
    assert rh.assess("result[0] < 1", "result[0] > 2", [1.5]) == "Inconclusive"


def test_time_scale_compresses_every_duration_alike() -> None:
    assert SCALE.seconds("5m") == pytest.approx(3.0) and SCALE.seconds("1h") == pytest.approx(36.0)
    query = "rate(x[5m]) / increase(y[1h]) + max_over_time(z[10m:1m])"
    assert (
        SCALE.compress_query(query)
        == "rate(x[3000ms]) / increase(y[36000ms]) + max_over_time(z[6000ms:600ms])"
    )
    with pytest.raises(DeployError, match="time scale too small"):
        rh.TimeScale(seconds_per_minute=0.1).compress_query("rate(x[5m])")
    assert rh.parse_duration("1h30m") == 5400 and rh.parse_duration(30) == 30
    with pytest.raises(DeployError):
        rh.parse_duration("soon")


def test_plan_is_read_from_the_rendered_overlay() -> None:
    plan = rh.RolloutPlan.from_objects(rh.render(OVERLAY))
    routed = rh.rehearsal_instruments(plan, INSTRUMENTS)
    assert [i.key for i in routed[:2]] == ["binance/BTCUSDT", "oanda/EUR_USD"]
    assert plan.background is not None
    assert {m.name for m in plan.background.metrics} == {"error-rate", "latency-p99", "sharpe-not-negative"}
    first = next(iter(plan.step_analyses.values()))
    assert [m.name for m in first.metrics] == ["sharpe-vs-stable"]
    args = first.resolve_args({"Latest": "abc", "Stable": "def"})
    assert args == {"service": "autotrader-serving", "canary-hash": "abc", "stable-hash": "def"}


def test_prometheus_unreachable_is_an_error_that_cannot_promote() -> None:
    plan = rh.RolloutPlan.from_objects(rh.render(OVERLAY))
    run = rh.start_run("background", plan.background, {"Latest": "c", "Stable": "s"}, SCALE, 10, 0.0)
    dead = f"http://127.0.0.1:{rh.free_port()}"
    for _ in range(3):
        measured = run.measure_due(dead, run.next_due_s())
        assert {m.phase for m in measured} == {"Error"}
        assert "unreachable" in measured[0].message
    assert run.phase == "Error"  # 3 errors in a row > consecutiveErrorLimit 2
    assert all(m.phase == "Error" for m in run.metrics)


# --- the rehearsal with real servers ----------------------------------------------------------------

prometheus_missing = shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    if prometheus_missing:
        pytest.skip("Prometheus is missing: apt-get install prometheus")
    work = tmp_path_factory.mktemp("rehearsal")
    config = rh.RehearsalConfig(overlay=OVERLAY, scale=SCALE, max_measurements=3)
    with (
        rh.demo_models(work / "models") as models,
        rh.Rehearsal(config, models["good"], INSTRUMENTS, work) as r,
    ):
        canaries = {
            name: r.canary(models[name], str(v))
            for v, name in enumerate(("good", "losing", "slow", "erroring"), 2)
        }
        try:
            for server in canaries.values():
                server.wait_ready()
            r.canaries = canaries
            r.results = []
            yield r
        finally:
            for server in canaries.values():
                server.stop()
            rh.write_reports(r.results, work / "reports")
            assert (work / "reports" / "index.md").is_file()


def _run(rehearsal, name: str, stop_first: bool) -> rh.RehearsalResult:
    cap = 4 if stop_first else 3  # a bad canary runs to the first analysis' verdict
    result = rehearsal.run(
        name, rehearsal.canaries[name], stop_after_first_analysis=stop_first, max_measurements=cap
    )
    rehearsal.results.append(result)
    rehearsal.canaries[name].stop()
    return result


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.xdist_group("rehearsal")
def test_no_traffic_is_inconclusive_never_a_pass(rehearsal) -> None:
    plan = rehearsal.plan
    run = rh.start_run(
        "background", plan.background, {"Latest": "nobody", "Stable": rehearsal.stable_hash}, SCALE, 4, 0
    )
    assert run.measure_due(rehearsal.prometheus.url, 0.0) == []  # initialDelay: nothing judged at once
    due = run.next_due_s()
    assert due == pytest.approx(SCALE.seconds("5m"))
    measured = run.measure_due(rehearsal.prometheus.url, due)
    assert {m.phase for m in measured} == {"Inconclusive"}
    assert run.running  # within inconclusiveLimit: the run waits, it does not pass


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.xdist_group("rehearsal")
def test_good_canary_passes_every_step(rehearsal) -> None:
    result = _run(rehearsal, "good", stop_first=False)
    assert result.outcome == "promoted", result.to_markdown()
    details = " ".join(e.detail for e in result.events)
    assert "canary gets ['binance/BTCUSDT', 'oanda/EUR_USD']" in details
    for weight in (25, 50, 100):
        assert f"setWeight {weight}" in details
    # initialDelay: the first measurement waits one interval, so it judges the header route's own traffic
    # instead of spending an Inconclusive on a canary that has served nothing yet
    first_at = min(m.at_s for m in result.measurements)
    assert first_at >= SCALE.seconds("5m") - 0.1, first_at
    judged = {m.metric for m in result.measurements if m.phase == "Successful"}
    assert judged == {"error-rate", "latency-p99", "sharpe-not-negative", "sharpe-vs-stable"}
    traffic = result.traffic["good"]
    assert traffic["canary"].get("200", 0) > 50 and traffic["stable"].get("200", 0) > 50
    # the canary instruments are live clients: the canary computed their features from bars itself
    assert result.bars_in == ("binance/BTCUSDT", "oanda/EUR_USD")
    live = rehearsal.driver.by_path()["/predict/bars"]
    assert live["canary"].get("200", 0) > 50, live
    assert set(live["canary"]) == {"200"}, live  # no 409/422: the demo models' feature set is served


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.xdist_group("rehearsal")
@pytest.mark.parametrize(
    ("name", "metric"),
    [("erroring", "error-rate"), ("slow", "latency-p99"), ("losing", "sharpe")],
)
def test_bad_canary_fails_the_first_analysis_and_rolls_back(rehearsal, name, metric) -> None:
    result = _run(rehearsal, name, stop_first=True)
    assert result.outcome == "aborted", result.to_markdown()
    assert any(f.startswith(metric) for f in result.failed_metrics()), result.failed_metrics()
    assert "setWeight" not in " ".join(e.detail for e in result.events)  # aborted at the first analysis
    after = result.traffic[f"{name}/after-abort"]
    assert "canary" not in after and after["stable"].get("200", 0) > 0
