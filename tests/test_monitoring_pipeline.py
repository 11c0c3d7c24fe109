"""Pipeline monitoring: the alert rules (promtool unit tests), their runbooks, the metrics they read
(every one emitted by an Argo manifest), and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autotrader.params import load_params

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "prometheus" / "rules" / "pipeline.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "tests" / "pipeline_test.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "pipeline.json"
RUNBOOKS = REPO / "docs" / "runbooks"
PROMTOOL = shutil.which("promtool")
_skip = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus (Debian), as .ci/run does"
)


def needs_promtool(test):
    """Marked `prometheus`, and skipped with an install hint where promtool is missing."""
    return pytest.mark.prometheus(_skip(test))


ARGO_METRIC = re.compile(r"\bargo_workflows_(autotrader_[a-z_]+)\b")


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def emitted_metrics() -> set[str]:
    """Names of every custom metric the Argo manifests declare (Argo prefixes them argo_workflows_)."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            prometheus = node.get("prometheus")
            if isinstance(prometheus, list):
                names.update(m["name"] for m in prometheus if isinstance(m, dict) and "name" in m)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in (REPO / "argo").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            walk(doc)
    return names


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_rules_are_valid() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_rule_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """Loosen the nightly window from 26 h to 30 h in a copy: the unit tests must fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "pipeline.yml").write_text(RULES.read_text().replace("> 26 * 3600", "> 30 * 3600"))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "pipeline_test.yml")
    proc = promtool("test", "rules", str(tmp_path / "tests" / "pipeline_test.yml"))
    assert proc.returncode != 0
    assert "PipelineNightlyRunMissed" in proc.stdout + proc.stderr


def test_the_alerts_the_brief_asks_for_exist() -> None:
    assert [r["alert"] for r in rules()] == [
        "PipelineNightlyRunMissed",  # missed nightly run
        "PipelineRunFailed",  # failed run
        "PipelineSLABreach",
        "PipelineStaleData",
        "PipelineFeatureDrift",  # drift above threshold
        "PipelineTrainingNoDecision",  # a training run that produced no decision
    ]


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    linked = set()
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        name = url.rsplit("/", 1)[-1]
        assert url.endswith(f"docs/runbooks/{name}") and name.startswith("pipeline-"), url
        page = RUNBOOKS / name
        assert page.is_file(), f"{rule['alert']}: {page} is missing"
        assert f"# Runbook: {rule['alert']}" in page.read_text()
        assert rule["labels"]["severity"] in ("warning", "critical")
        linked.add(name)
    assert {p.name for p in RUNBOOKS.glob("pipeline-*.md")} == linked


def test_every_metric_the_rules_read_is_emitted_by_a_workflow() -> None:
    emitted = emitted_metrics()
    used = {m for rule in rules() for m in ARGO_METRIC.findall(rule["expr"])}
    assert used and used <= emitted, f"not emitted by argo/: {sorted(used - emitted)}"


def test_the_drift_threshold_is_the_params_threshold() -> None:
    drift = next(r for r in rules() if r["alert"] == "PipelineFeatureDrift")
    threshold = float(re.search(r">\s*([0-9.]+)\s*$", drift["expr"].strip()).group(1))
    assert threshold == load_params(REPO / "params.yaml").health.psi_threshold


def test_dashboard_reads_only_emitted_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "autotrader-pipeline" and dashboard["title"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    used = {m for e in exprs for m in ARGO_METRIC.findall(e)}
    assert used <= emitted_metrics(), sorted(used - emitted_metrics())
    # The panels cover runs/SLA, steps, freshness, drift and gate decisions.
    for metric in ("pipeline_duration_seconds", "stage_duration_seconds", "data_max_psi", "data_stale_instruments",
                   "gate_decisions_total", "extract_runs_total"):  # fmt: skip
        assert f"autotrader_{metric}" in used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
