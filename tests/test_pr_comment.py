"""The pull-request comment: every gate with its value, threshold and verdict; the diffs; the plots."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from autotrader.atomic import write_json
from autotrader.errors import ConfigError
from autotrader.modeling.gates import decide, evaluate_gates, failures, verdict
from autotrader.orchestration.prcomment import render
from autotrader.params import GateParams

from .conftest import BIN, REPO, tool_env


def gates_file(tmp_path: Path, sharpe: float) -> Path:
    portfolio = {
        "sharpe": sharpe,
        "max_drawdown": 0.05,
        "win_rate": 0.6,
        "n_trades": 150,
        "sharpe_ci": [1.0, 9.0],
    }
    results = evaluate_gates(portfolio, GateParams(), None, dsr={"dsr": 0.99, "n_trials": 2})
    record = {
        "promote": decide(results),
        "verdict": verdict(results),
        "gates": results,
        "failed": failures(results),
    }
    path = tmp_path / "gates.json"
    write_json(path, record)
    return path


def test_the_comment_shows_every_gate_with_value_threshold_and_verdict(tmp_path: Path) -> None:
    path = gates_file(tmp_path, sharpe=1.2)
    (tmp_path / "metrics.md").write_text(
        "| Path | Metric | base | head | Change |\n|--|--|--|--|--|\n| x | sharpe | 2 | 1.2 | -0.8 |\n"
    )
    text = render(path, metrics_diff=tmp_path / "metrics.md", plots_url="https://ci.example/run/1#artifacts")
    assert "**Decision: not promoted** (fail)" in text
    assert "| sharpe | 1.2 | > 2 | ❌ fail |" in text
    assert "| max_drawdown | 0.05 | < 0.15 | ✅ pass |" in text
    assert "| win_rate | 0.6 | > 0.55 | ✅ pass |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "|---" not in line]
    assert len([r for r in rows if "pass" in r or "fail" in r]) == 5  # one row per gate in the list
    assert "| x | sharpe | 2 | 1.2 | -0.8 |" in text and "(https://ci.example/run/1#artifacts)" in text


def test_a_passing_run_says_promote(tmp_path: Path) -> None:
    text = render(gates_file(tmp_path, sharpe=3.0))
    assert "**Decision: promote**" in text and "❌" not in text


def test_no_gates_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gates\.json: not found"):
        render(tmp_path / "gates.json")
    (tmp_path / "gates.json").write_text('{"promote": true}')
    with pytest.raises(ConfigError, match='"gates" list'):
        render(tmp_path / "gates.json")


def test_the_cli_writes_the_comment_and_the_workflow_uses_it(tmp_path: Path) -> None:
    path = gates_file(tmp_path, sharpe=3.0)
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [str(BIN / "autotrader"), "reports", "pr-comment", "--gates", str(path), "--out", str(out)],
        capture_output=True, text=True, env=tool_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| dsr | 0.99 | >= 0.95 | ✅ pass |" in out.read_text()
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pr.yml").read_text())
    script = "\n".join(s.get("run", "") for s in workflow["jobs"]["pipeline"]["steps"])
    assert "autotrader reports pr-comment --gates metrics/gates.json" in script
    assert "dvc metrics diff base head --md --targets metrics/headline" in script
