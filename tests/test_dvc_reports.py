"""What a reviewer sees through DVC: headline metrics that fit a terminal, plots that render.

The plot files are written by the evaluate stage's own writer (``autotrader.modeling.plots``) from a
seeded random walk, into a scratch copy of the project; ``dvc plots show --json`` must then give a
temporal x for equity and drawdown with data in it, and the PNGs as image plots. The headline files
are checked against dvc.yaml (only headlines are metrics; details are plain outs) and through
``dvc metrics diff`` between two commits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from autotrader.atomic import write_json
from autotrader.metrics_files import HEADLINES, MAX_KEYS, headline, headline_path
from autotrader.modeling.gates import evaluate_gates
from autotrader.modeling.plots import plot_frames, write_all
from autotrader.params import GateParams

from .conftest import REPO, Project

pytestmark = pytest.mark.xdist_group("dvc-reports")


def write_plots(project: Project, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-11-01", periods=600, freq="5min", tz="UTC")
    bars = pd.Series(rng.normal(0.0002, 0.003, len(index)), index=index)
    actual = rng.integers(-1, 2, 300)
    predicted = np.where(rng.random(300) < 0.6, actual, rng.integers(-1, 2, 300))
    importance = pd.DataFrame({"feature": ["rsi_14", "vol_12", "ret_3"], "importance": [0.2, 0.1, -0.01]})
    folder = project.root / "reports" / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    write_all(folder, plot_frames(bars, actual, predicted, importance))


def test_equity_and_drawdown_render_over_time_and_the_images_are_plots(project: Project) -> None:
    write_plots(project)
    shown: dict[str, list[dict[str, Any]]] = json.loads(project.dvc("plots", "show", "--json").stdout)
    shown = shown.get("data", shown)  # DVC ≥ 3 wraps the plots in "data"
    for title in ("Equity curve", "Drawdown"):
        (plot,) = shown[title]
        spec = plot["content"]
        assert spec["encoding"]["x"]["type"] == "temporal", spec["encoding"]["x"]
        values = spec["data"]["values"]
        assert len(values) == 600, title
        assert {"timestamp"} <= set(values[0]) and values[0]["timestamp"].startswith("2026-11-01T00:00")
    for image in ("reports/plots/importance.png", "reports/plots/confusion.png"):
        (plot,) = shown[image]
        assert plot["type"] == "image" and Path(plot["url"]).read_bytes()[:4] == b"\x89PNG"


def test_only_headlines_are_metrics_and_details_are_plain_outs() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    metric_files = [next(iter(m)) for s in stages.values() for m in s.get("metrics", [])]
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])]
    assert metric_files, "no metrics declared"
    for path in metric_files:
        assert "/headline/" in path, f"{path}: a detail file declared as metric"
    for name in HEADLINES:
        assert f"${{paths.metrics}}/headline/{name}.json" in metric_files, name
        assert f"${{paths.metrics}}/{name}.json" in outs, f"{name}.json: the detail must stay an out"


def gates_record(sharpe: float) -> dict[str, Any]:
    portfolio = {
        "sharpe": sharpe,
        "max_drawdown": 0.05,
        "win_rate": 0.6,
        "n_trades": 150,
        "sharpe_ci": [1.0, 9.0],
    }
    results = evaluate_gates(portfolio, GateParams(), None, dsr={"dsr": 0.99, "n_trials": 2})
    return {
        "promote": all(g["passed"] for g in results),
        "verdict": "x",
        "gates": results,
        "run_id": "r" * 32,
    }


def test_a_headline_is_a_few_scalars_with_one_column_per_gate() -> None:
    head = headline("gates", gates_record(3.0))
    assert len(head) <= MAX_KEYS and all(isinstance(v, bool | int | float | str) for v in head.values())
    assert head["gate_sharpe"] == "pass" and "run_id" not in head
    assert headline("gates", gates_record(1.0))["gate_sharpe"] == "fail"


def test_metrics_diff_between_two_runs_is_a_short_table(project: Project) -> None:
    metrics = project.root / "metrics"
    details = {
        "evaluate": lambda s: {"portfolio": {"sharpe": s, "max_drawdown": 0.1, "win_rate": 0.6, "n_trades": 120,
                                             "sharpe_ci": [s - 1, s + 1]}, "dsr": {"dsr": 0.97}, "ic": 0.05,
                               "instruments": {f"b/s{i}": {"sharpe": i} for i in range(40)}, "run_id": str(s)},
        "gates": lambda s: gates_record(s),
    }  # fmt: skip
    for sharpe in (2.5, 1.5):
        for name, detail in details.items():
            full = detail(sharpe)
            write_json(metrics / f"{name}.json", full)
            headline_path(metrics, name).parent.mkdir(parents=True, exist_ok=True)
            write_json(headline_path(metrics, name), headline(name, full))
        if sharpe == 2.5:
            project.run("git", "add", "-A")
            project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    diff = project.dvc("metrics", "diff", "--targets", "metrics/headline", "--md").stdout
    rows = [line for line in diff.splitlines() if line.startswith("|")]
    assert any("sharpe " in r or "| sharpe" in r for r in rows), diff
    assert any("gate_sharpe" in r and "pass" in r and "fail" in r for r in rows), diff
    assert 3 <= len(rows) <= 14, diff  # a header, a rule and the numbers that moved: not 40 instruments
