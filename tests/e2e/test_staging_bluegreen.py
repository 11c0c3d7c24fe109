"""Staging's blue/green, driven by the real controller: the preview comes up, the integration Job (the very
command of rollouts/overlays/staging, run by the harness's kubelet stand-in against the preview Service)
decides, and only a pass switches the active Service. The staging overlay is applied unmodified."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotrader.rehearsal.servers import PrometheusServer

from .cluster import Cluster, wait_for
from .environment import Environment, parse_time
from .models import GOOD, NEW_GOOD, STAGING_ERRORING

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-staging")]

ACTIVE, PREVIEW = "autotrader-serving-stable", "autotrader-serving-canary"
HASH = "rollouts-pod-template-hash"


@pytest.fixture(scope="module")
def staging(
    cluster: Cluster, prometheus: PrometheusServer, tracking_uri: str, e2e_dir: Path
) -> Iterator[Environment]:
    env = Environment(
        "staging", "rollouts/overlays/staging", cluster, prometheus, tracking_uri, e2e_dir / "staging"
    )
    try:
        env.promote(GOOD)
        env.sync()
        env.wait_healthy_on(GOOD, timeout=240)
        yield env
    finally:
        env.close()


def _selector_hash(env: Environment, service: str) -> str | None:
    return (env.service(service)["spec"].get("selector") or {}).get(HASH)


def test_preview_passes_integration_then_active_switches_and_old_stays_24h(staging: Environment) -> None:
    env = staging
    old = env.rollout()["status"]["stableRS"]
    wait_for(lambda: _selector_hash(env, ACTIVE) == old, 60, "active service on the first ReplicaSet")
    env.promote(NEW_GOOD)
    env.sync()
    new = env.wait_rollout(lambda r: r["status"].get("currentPodHash") not in (None, old), 60, "new hash")[
        "status"
    ]["currentPodHash"]
    # The preview Service points at the new ReplicaSet while the active one still serves the old.
    wait_for(lambda: _selector_hash(env, PREVIEW) == new, 60, "preview service on the new ReplicaSet")
    assert _selector_hash(env, ACTIVE) == old

    switched_at = time.time()
    env.wait_healthy_on(NEW_GOOD, timeout=300)
    assert _selector_hash(env, ACTIVE) == new

    runs = [
        r for r in env.analysis_runs(new) if r["metadata"]["labels"].get("rollout-type") == "PrePromotion"
    ]
    assert [r["status"]["phase"] for r in runs] == ["Successful"]
    # The Job really ran the integration suite, and it recorded its verdict in the registry.
    assert 0 in env.plane.job_results.values()

    # The old ReplicaSet is kept, with its scale-down deadline about 24 h out (scaleDownDelaySeconds).
    key = "scale-down-deadline"  # v1alpha1.DefaultReplicaSetScaleDownDeadlineAnnotationKey
    rs = wait_for(
        lambda: (r := env.replica_set(old))["metadata"].get("annotations", {}).get(key) and r,
        60,
        f"{key} on the old ReplicaSet",
    )
    assert rs["spec"]["replicas"] >= 1
    deadline = parse_time(rs["metadata"]["annotations"][key])
    assert 86400 - 300 < deadline - switched_at < 86400 + 300


def test_failing_pre_promotion_analysis_leaves_the_active_service_untouched(staging: Environment) -> None:
    env = staging
    stable = env.rollout()["status"]["stableRS"]
    active = wait_for(lambda: _selector_hash(env, ACTIVE), 60, "active service selector")
    assert active == stable
    env.promote(STAGING_ERRORING)
    env.sync()
    rollout = env.wait_rollout(
        lambda r: bool(r["status"].get("abort")) or r["status"].get("phase") == "Degraded",
        420,
        "staging aborted",
    )
    bad = rollout["status"]["currentPodHash"]
    runs = [
        r for r in env.analysis_runs(bad) if r["metadata"]["labels"].get("rollout-type") == "PrePromotion"
    ]
    assert [r["status"]["phase"] for r in runs] == ["Failed"]
    assert any(code != 0 for code in env.plane.job_results.values())
    assert _selector_hash(env, ACTIVE) == active
    assert env.rollout()["status"]["stableRS"] == stable
