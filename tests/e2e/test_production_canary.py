"""Production's canary, driven by the real Argo Rollouts controller against a real API server.

Every assertion reads the API server's objects (Rollout, AnalysisRuns, ReplicaSets, VirtualService) or
Prometheus; none reads our own logs. Traffic is routed from the live VirtualService (tests/e2e/dataplane.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autotrader.params import Instrument
from autotrader.rehearsal.analysis import query_prometheus
from autotrader.rehearsal.servers import PrometheusServer
from autotrader.rehearsal.traffic import HEADER, TrafficDriver

from .cluster import Cluster, wait_for
from .dataplane import MeshRouter, header_match
from .environment import ROLLOUT, Environment, RouteState, parse_time, route_state
from .models import ERRORING, GOOD, LOSING, NEW_GOOD, SLOW, STRENGTH

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-production")]

CANARY_INSTRUMENTS = {"binance/BTCUSDT", "oanda/EUR_USD"}
INSTRUMENTS = [
    Instrument(broker="binance", symbol="BTCUSDT"),
    Instrument(broker="oanda", symbol="EUR_USD"),
    Instrument(broker="binance", symbol="ETHUSDT"),
    Instrument(broker="oanda", symbol="GBP_USD"),
    Instrument(broker="oanda", symbol="USD_JPY"),
]


@pytest.fixture(scope="module")
def production(
    cluster: Cluster, prometheus: PrometheusServer, tracking_uri: str, e2e_dir: Path
) -> Iterator[Environment]:
    """Production on version 1 (the first sync: no canary), with live traffic routed by the VirtualService."""
    env = Environment(
        "production", "e2e/overlays/production", cluster, prometheus, tracking_uri, e2e_dir / "production"
    )
    driver = router = None
    try:
        env.promote(GOOD)
        env.sync()
        env.wait_healthy_on(GOOD, timeout=240)
        router = MeshRouter(env.plane, ROLLOUT, ROLLOUT, seed=3)
        # the canary instruments are live clients (bars in, the server computes the features), the
        # rest batch clients (feature vectors): the analysis measures the live path
        driver = TrafficDriver(
            router,
            INSTRUMENTS,
            signal_strength=STRENGTH,
            seed=7,
            tick_s=0.1,
            bars_per_request=8,
            bars_in=sorted(CANARY_INSTRUMENTS),
            # 2 years: the FX batch clients (8 bars a request at 10 requests/s) last ~31 min, well past
            # the module even under CI load (365 days ran out after ~15 min)
            days=730,
        ).start()
        env.traffic = driver
        yield env
    finally:
        if driver is not None:
            driver.stop()
        if router is not None:
            router.close()
        env.close()


def _hashes(env: Environment) -> tuple[str, str]:
    status = env.rollout()["status"]
    return status["stableRS"], status["currentPodHash"]


def _start_canary(env: Environment, version: str) -> tuple[str, str]:
    stable, _ = _hashes(env)
    env.promote(version)
    env.sync()
    rollout = env.wait_rollout(
        lambda r: r.get("status", {}).get("currentPodHash") not in (None, stable), 60, "new pod-template hash"
    )
    return stable, rollout["status"]["currentPodHash"]


def test_good_canary_walks_every_step_to_100_percent(production: Environment, report_dir: Path) -> None:
    env = production
    before = env.pinned()
    with env.route_recorder() as states:
        stable, canary = _start_canary(env, NEW_GOOD)
        assert env.pinned() == NEW_GOOD != before
        env.wait_healthy_on(NEW_GOOD, timeout=420)

    # The controller managed the header route for exactly the two canary instruments, then 25/50/100.
    regexes = {s.header_regex for s in states if s.header_regex}
    assert len(regexes) == 1, [s.__dict__ for s in states]
    regex = regexes.pop()
    routed = {
        i.key for i in INSTRUMENTS if header_match({"headers": {HEADER: {"regex": regex}}}, {HEADER: i.key})
    }
    assert routed == CANARY_INSTRUMENTS
    weights = [s.canary for s in states]
    for step in (25, 50, 100):
        assert step in weights, weights
    assert weights.index(25) < weights.index(50) < weights.index(100)
    header_at = next(i for i, s in enumerate(states) if s.header_regex)
    assert header_at < weights.index(25), "the header route comes before any weight"

    # Every AnalysisRun of this revision succeeded; the new ReplicaSet is stable. (The background run is
    # terminated, as Successful, just after the Rollout turns Healthy: wait for every run to finish.)
    done = ("Successful", "Failed", "Error", "Inconclusive")
    runs = wait_for(
        lambda: (
            (found := env.analysis_runs(canary))
            and all(r.get("status", {}).get("phase") in done for r in found)
            and found
        ),
        60,
        "every AnalysisRun of the canary finished",
    )
    assert {r["metadata"]["labels"].get("rollout-type") for r in runs} >= {"Step", "Background"}
    assert {
        r["metadata"]["name"]: r["status"]["phase"] for r in runs if r["status"]["phase"] != "Successful"
    } == {}
    status = env.rollout()["status"]
    assert status["phase"] == "Healthy" and status["stableRS"] == canary != stable
    final = env.virtual_service()
    assert [h["name"] for h in final["spec"]["http"]] == ["primary"]

    # The canary really served the canary instruments (Prometheus, from the canary pods' own metrics).
    served = query_prometheus(
        env.prometheus.url,
        f'sum(autotrader_predictions_total{{rollouts_pod_template_hash="{canary}"}}) > 0',
    )
    assert served, "the canary pods served nothing"
    live = query_prometheus(
        env.prometheus.url,
        f'sum(autotrader_requests_total{{rollouts_pod_template_hash="{canary}",route="/predict/bars",'
        f'status="200"}}) > 0',
    )
    assert live, "the canary pods computed no features from bars (the live path was not measured)"
    (report_dir / "good-canary.json").write_text(
        json.dumps(
            {
                "stable": stable,
                "canary": canary,
                "routes": [s.__dict__ for s in states],
                "runs": [r["metadata"]["name"] for r in runs],
            },
            indent=2,
        )
    )


def _failed_measurement_time(runs: list[dict[str, Any]]) -> tuple[float | None, list[str]]:
    """The time of the first Failed measurement over the runs, and the names of the failed metrics."""
    first = None
    failed = []
    for run in runs:
        for metric in run.get("status", {}).get("metricResults") or []:
            for m in metric.get("measurements") or []:
                if m.get("phase") == "Failed":
                    at = parse_time(m.get("finishedAt") or m["startedAt"])
                    first = at if first is None else min(first, at)
                    failed.append(metric["name"])
    return first, sorted(set(failed))


def _back_on_stable(states: list[RouteState]) -> float | None:
    """When the VirtualService was first seen sending everything to stable after the canary LAST had any
    traffic (removing the header route before setWeight 25 is not a return to stable)."""
    last = max((i for i, s in enumerate(states) if s.header_regex or s.canary > 0), default=None)
    if last is None:
        return None
    for s in states[last + 1 :]:
        if s.header_regex is None and s.canary == 0 and s.stable == 100:
            return s.at
    return None


def _all_on_stable(env: Environment) -> bool:
    state = route_state(env.virtual_service())
    return state.header_regex is None and state.canary == 0 and state.stable == 100


@pytest.mark.parametrize(
    ("version", "kind", "metric"),
    [(ERRORING, "erroring", "error-rate"), (SLOW, "slow", "latency-p99"), (LOSING, "losing", "sharpe")],
)
def test_bad_canary_is_aborted_by_its_analysis_and_rolled_back(
    production: Environment, report_dir: Path, version: str, kind: str, metric: str
) -> None:
    env = production
    previous = env.pinned()
    started = time.time() - 1
    with env.route_recorder() as states:
        stable, canary = _start_canary(env, version)
        aborted = env.wait_rollout(
            lambda r: (
                bool(r.get("status", {}).get("abort")) or r.get("status", {}).get("phase") == "Degraded"
            ),
            300,
            f"{kind} canary aborted",
        )
        wait_for(lambda: _all_on_stable(env) and _back_on_stable(states), 60, "traffic back on stable")
    status = aborted["status"]
    assert status["stableRS"] == stable

    # The analysis failed, on the metric that watches this fault.
    runs = env.analysis_runs(canary)
    phases = {r["metadata"]["name"]: r["status"].get("phase") for r in runs}
    assert "Failed" in phases.values(), phases
    bad_at, failed_metrics = _failed_measurement_time(runs)
    assert any(metric in m for m in failed_metrics), failed_metrics

    # Traffic is back on stable: weights 100/0, no header route.
    vs = env.virtual_service()
    assert [h["name"] for h in vs["spec"]["http"]] == ["primary"]
    weights = {d["destination"]["subset"]: d.get("weight", 0) for d in vs["spec"]["http"][0]["route"]}
    assert weights == {"stable": 100, "canary": 0}
    # …and the canary ReplicaSet goes to zero (after abortScaleDownDelaySeconds).
    wait_for(
        lambda: env.replica_set(canary)["spec"].get("replicas") == 0, 90, "canary ReplicaSet scaled to 0"
    )
    events = env.cluster.events(env.namespace, ROLLOUT, since=started)

    # The person on call: `autotrader rollback`, then the sync applies the restoring commit.
    env.rollback()
    assert env.pinned() == previous
    env.sync()
    healthy = env.wait_healthy_on(previous, timeout=240)
    assert healthy["status"]["stableRS"] == stable == healthy["status"]["currentPodHash"]

    back_at = _back_on_stable(states)
    record = {
        "kind": kind,
        "version": version,
        "analysis_runs": phases,
        "failed_metrics": failed_metrics,
        "abort_message": status.get("message"),
        "seconds_bad_metric_to_stable": round(back_at - bad_at, 1) if back_at and bad_at else None,
        # the controller's own decision time (status.abortedAt, 1 s resolution) to the route on stable
        "seconds_abort_to_stable": (
            round(back_at - parse_time(status["abortedAt"]), 1)
            if back_at and status.get("abortedAt")
            else None
        ),
        "events": events[-20:],
    }
    (report_dir / f"bad-canary-{kind}.json").write_text(json.dumps(record, indent=2))
    assert record["seconds_bad_metric_to_stable"] is not None
    # the abort is what took the traffic back (abortedAt has 1 s resolution, floored): a route already on
    # stable before it means something else removed the canary's routes
    assert record["seconds_abort_to_stable"] is None or record["seconds_abort_to_stable"] >= 0, record


def test_first_sync_of_a_release_never_leaves_unrouted_instruments(production: Environment) -> None:
    """Between scenarios, every instrument's requests land on a server (no 503 from a missing subset)."""
    time.sleep(2)
    router = MeshRouter(production.plane, ROLLOUT, ROLLOUT)
    try:
        for inst in INSTRUMENTS:
            subset, url = router.route(inst.key)
            assert subset == "stable" and url is not None and re.match(r"http://127\.0\.0\.1:\d+", url)
    finally:
        router.close()


def _broken_background_arg(objects: list[dict[str, Any]]) -> str:
    rollout = next(o for o in objects if o["kind"] == "Rollout")
    args = rollout["spec"]["strategy"]["canary"]["analysis"]["args"]
    next(a for a in args if a["name"] == "canary-hash")["name"] = "canary-hsah"
    return "canary-hash"  # the template arg that no longer has a value


def _weight_over_100(objects: list[dict[str, Any]]) -> str:
    rollout = next(o for o in objects if o["kind"] == "Rollout")
    next(s for s in rollout["spec"]["strategy"]["canary"]["steps"] if "setWeight" in s)["setWeight"] = 150
    return "SetWeight"


@pytest.mark.parametrize("break_it", [_broken_background_arg, _weight_over_100])
def test_the_controller_refuses_a_broken_manifest(cluster: Cluster, break_it: Any, e2e_dir: Path) -> None:
    """A step the controller rejects, or an analysis arg that names no template arg: InvalidSpec, no pods."""
    import yaml

    from autotrader.gitops.kustomize import render

    namespace = f"broken-{break_it.__name__.strip('_').replace('_', '-')}"
    objects = render(Path(__file__).resolve().parents[2] / "e2e" / "overlays" / "production")
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    expected = break_it(objects)
    cluster.api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    # What the Rollout references first (as Argo CD's sync waves would order it), then the Rollout.
    cluster.apply(yaml.safe_dump_all([o for o in objects if o["kind"] != "Rollout"], sort_keys=False))
    cluster.apply(yaml.safe_dump_all([o for o in objects if o["kind"] == "Rollout"], sort_keys=False))
    seen: list[str] = []

    def invalid() -> str | None:
        rollout = cluster.api.get(f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts/{ROLLOUT}")
        for cond in rollout.get("status", {}).get("conditions") or []:
            if cond["type"] == "InvalidSpec" and cond["status"] == "True":
                seen.append(str(cond["message"]))
                return str(cond["message"]) if expected in cond["message"] else None
        return None

    try:
        wait_for(invalid, 60, f"InvalidSpec naming {expected!r}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; InvalidSpec messages seen: {sorted(set(seen))}") from exc
    assert cluster.api.items(f"/apis/apps/v1/namespaces/{namespace}/replicasets") == []
