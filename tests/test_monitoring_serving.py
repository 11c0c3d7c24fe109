"""Serving monitoring: the alert rules pass `promtool check rules` and their `promtool test rules` unit
tests; every alert links an existing runbook; the Grafana dashboard's PromQL parses; and every metric
name the rules, the dashboard and the canary analysis use is one the model server really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "prometheus" / "rules" / "serving.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "tests" / "serving_test.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "serving.json"
RUNBOOK_URL = "https://github.com/autotrader/autotrader/blob/main/"
NAME = re.compile(r"\b(autotrader_[a-z0-9_]+|autotrader:[a-z0-9_:]+)\b")

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: apt-get install prometheus")


def exported_names() -> set[str]:
    """Sample names the server's metrics registry exposes (counters as _total, histograms as _bucket…)."""
    from autotrader.serving.metrics import ServingMetrics

    metrics = ServingMetrics("1", "models:/autotrader-signal/1")
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {
                f"{family.name}_bucket",
                f"{family.name}_sum",
                f"{family.name}_count",
                f"{family.name}_created",
            }
        else:
            names.add(family.name)
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(panel["title"], t["expr"]) for panel in dash["panels"] for t in panel.get("targets", [])]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=120)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_rules_unit_tests_pass() -> None:
    proc = _promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_a_broken_expectation_fails_the_unit_tests(tmp_path) -> None:
    """The promtool harness bites: a wrong threshold in the rules makes the tests fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "serving.yml").write_text(RULES.read_text().replace("> 0.01", "> 0.05"))
    (tmp_path / "tests" / "serving_test.yml").write_text(RULE_TESTS.read_text())
    proc = _promtool("test", "rules", str(tmp_path / "tests" / "serving_test.yml"))
    assert proc.returncode != 0 and "AutoTraderServingErrorRate" in proc.stdout + proc.stderr


def test_the_alerts_cover_the_serving_contract() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert {
        "AutoTraderServingErrorRate",
        "AutoTraderServingLatencyP99",
        "AutoTraderServingNotReady",
        "AutoTraderChampionSharpeDecay",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), name
        runbook = REPO / url.removeprefix(RUNBOOK_URL)
        assert runbook.is_file() and runbook.name.startswith("serving-"), url
        assert name in runbook.read_text(), f"{runbook} does not name {name}"


def test_rollback_runbook_exists_and_gives_the_commands() -> None:
    text = (REPO / "docs" / "runbooks" / "rollback.md").read_text()
    assert "autotrader rollback --env production" in text and "kubectl argo rollouts abort" in text


def test_every_metric_the_rules_use_is_exported_by_the_server() -> None:
    exported, records = exported_names(), recorded()
    for rule in rules():
        for name in NAME.findall(rule["expr"]):
            assert name in exported or name in records, f"{rule.get('alert') or rule.get('record')}: {name}"


def test_every_metric_the_canary_analysis_uses_is_exported_by_the_server() -> None:
    exported = exported_names()
    text = (REPO / "rollouts" / "base" / "analysis-templates.yaml").read_text()
    names = set(NAME.findall(text))
    assert names and names <= exported, names - exported


@needs_promtool
def test_every_dashboard_query_parses(tmp_path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    rules_doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:panel_{i}",
                        "expr": expr.replace("$service", "autotrader-serving").replace(
                            "$__rate_interval", "5m"
                        ),
                    }
                    for i, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules_doc))
    proc = _promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_broken_dashboard_query_would_be_caught(tmp_path) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool missing: apt-get install prometheus")
    path = tmp_path / "bad.rules.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum by (role (up)"}]}]})
    )
    assert _promtool("check", "rules", str(path)).returncode != 0


def test_every_dashboard_metric_is_exported_or_recorded() -> None:
    exported, records = exported_names(), recorded()
    for title, expr in dashboard_exprs():
        names = NAME.findall(expr)
        assert names, title
        for name in names:
            assert name in exported or name in records, f"panel {title!r}: {name}"


def test_dashboard_covers_latency_errors_canary_sharpe_and_prediction_mix() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    text = json.dumps(dash["panels"])
    for needle in (
        "autotrader_request_duration_seconds_bucket",
        "autotrader:predict_error_ratio:rate5m",
        "autotrader:online_sharpe:1h",
        "autotrader_predictions_total",
        "by (role)",
        "autotrader_model_ready",
    ):
        assert needle in text, needle
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "service"}
