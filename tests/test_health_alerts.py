"""Health alerts: promtool unit tests (fresh, stale, drifted), runbooks, the series the stage writes.

(The feature-health CronWorkflow's failure notice is checked with the other manifests, in
tests/test_argo_manifests.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autotrader.health.prometheus import PREFIX, SERIES, textfile

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "prometheus" / "rules" / "health.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "tests" / "health_test.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: apt-get install prometheus (Debian), as .ci/run does"
)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.prometheus
@needs_promtool
def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0 and "SUCCESS: 4 rules found" in proc.stdout, proc.stdout + proc.stderr
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_unit_tests_cover_a_fresh_a_stale_and_a_drifted_case() -> None:
    names = [t["name"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]]
    assert any(n.startswith("fresh") for n in names)
    assert any("stale" in n and "HealthStaleData" in n for n in names)
    assert any("drifted" in n and "HealthDrift" in n for n in names)


@pytest.mark.prometheus
@needs_promtool
@pytest.mark.parametrize(
    ("before", "after", "alert"),
    [
        ("autotrader_health_instrument_stale) == 1", "autotrader_health_instrument_stale) == 2", "HealthStaleData"),
        ("autotrader_health_instrument_drift) == 1\n        for: 1h", "autotrader_health_instrument_drift) == 1\n        for: 3h", "HealthDrift"),
    ],
)  # fmt: skip
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, before: str, after: str, alert: str) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = RULES.read_text()
    assert before in text
    (tmp_path / "rules" / "health.yml").write_text(text.replace(before, after))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "health_test.yml")
    proc = promtool("test", "rules", str(tmp_path / "tests" / "health_test.yml"))
    assert proc.returncode != 0
    assert alert in proc.stdout + proc.stderr


def test_every_alert_has_a_runbook_and_every_health_runbook_an_alert() -> None:
    linked = set()
    for rule in rules():
        name = rule["annotations"]["runbook_url"].rsplit("/", 1)[-1]
        assert name.startswith("health-"), name
        page = RUNBOOKS / name
        assert page.is_file(), f"{rule['alert']}: {page} is missing"
        assert f"# Runbook: {rule['alert']}" in page.read_text()
        assert rule["labels"]["severity"] in ("warning", "critical")
        linked.add(name)
    assert {p.name for p in RUNBOOKS.glob("health-*.md")} == linked
    assert {r["alert"] for r in rules()} >= {"HealthStaleData", "HealthDrift"}


def test_the_rules_read_only_series_the_stage_writes() -> None:
    used = {m for r in rules() for m in re.findall(rf"\b{PREFIX}([a-z_]+)\b", r["expr"])}
    assert used and used <= set(SERIES), sorted(used - set(SERIES))
    # ...and with the labels the stage gives them.
    text = textfile([("instrument_stale", {"instrument": "binance/BTCUSDT"}, 1.0)])
    assert 'autotrader_health_instrument_stale{instrument="binance/BTCUSDT"} 1.0' in text
    assert "# TYPE autotrader_health_instrument_stale gauge" in text


def test_textfile_escapes_label_values_and_refuses_unknown_series() -> None:
    text = textfile(
        [("instrument_drift", {"instrument": 'a"b\\c'}, 0.0), ("signal_psi", {"signal": "x"}, float("nan"))]
    )
    assert 'instrument="a\\"b\\\\c"' in text and 'signal_psi{signal="x"} NaN' in text
    with pytest.raises(ValueError, match="unknown health series"):
        textfile([("not_a_series", {}, 1.0)])
