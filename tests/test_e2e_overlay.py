"""The cluster harness's overlay (e2e/overlays/production) changes only what a test cannot wait for or
reach; production keeps its real durations. Runs without the harness (no Go needed)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from autotrader.gitops.kustomize import render

REPO = Path(__file__).resolve().parents[1]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_production_keeps_its_real_durations() -> None:
    objects = render(REPO / "rollouts" / "overlays" / "production")
    rollout = _by_kind(objects, "Rollout")[0]
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert [s["pause"]["duration"] for s in steps if "pause" in s] == ["1h"]
    counts = {}
    for template in _by_kind(objects, "AnalysisTemplate"):
        for metric in template["spec"]["metrics"]:
            assert metric["interval"] == metric["initialDelay"] == "5m"
            assert metric["provider"]["prometheus"]["address"].startswith(
                "http://prometheus-operated.monitoring"
            )
            counts.setdefault(template["metadata"]["name"], set()).add(metric.get("count"))
    assert counts == {
        "autotrader-canary-background": {None},
        "autotrader-canary-step": {6},
        "autotrader-canary-sharpe": {12},
    }
    assert rollout["spec"]["replicas"] == 4
    staging = _by_kind(render(REPO / "rollouts" / "overlays" / "staging"), "Rollout")[0]
    assert staging["spec"]["strategy"]["blueGreen"]["scaleDownDelaySeconds"] == 86400


def _normalised(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Production's objects with the e2e overlay's five substitutions undone."""
    out = copy.deepcopy(objects)
    for obj in out:
        if obj["kind"] == "AnalysisTemplate":
            for metric in obj["spec"]["metrics"]:
                metric["interval"] = metric["initialDelay"] = "*"
                metric["provider"]["prometheus"]["address"] = "*"
                if "count" in metric:
                    metric["count"] = "*"
        if obj["kind"] == "Rollout":
            obj["spec"]["replicas"] = "*"
            for step in obj["spec"]["strategy"]["canary"]["steps"]:
                if "pause" in step:
                    step["pause"]["duration"] = "*"
    return out


def test_the_e2e_overlay_differs_from_production_only_in_durations_replicas_and_address() -> None:
    production = render(REPO / "rollouts" / "overlays" / "production")
    e2e = render(REPO / "e2e" / "overlays" / "production")
    assert _normalised(e2e) == _normalised(production)
    rollout = _by_kind(e2e, "Rollout")[0]
    assert [
        s["pause"]["duration"] for s in rollout["spec"]["strategy"]["canary"]["steps"] if "pause" in s
    ] == ["10s"]
    metrics = [m for t in _by_kind(e2e, "AnalysisTemplate") for m in t["spec"]["metrics"]]
    assert {(m["interval"], m["initialDelay"]) for m in metrics} == {("5s", "5s")}
