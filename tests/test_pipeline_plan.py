"""``autotrader pipeline plan``: the DVC stages each Argo workflow runs, and parity with dvc.yaml.

The parity check must fail when dvc.yaml and the workflows drift apart: a stage deleted from a copy of
dvc.yaml, a stage misspelt in a copy of a workflow, a stage nobody runs, a step out of order or one
that would start without the data it needs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotrader.orchestration.plan import ancestors, load_dvc_stages, plan_from_files, upstream

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC_STAGES = [
    "extract",
    "validate",
    "features",
    "archive",
    "health",
    "prepare",
    "train",
    "evaluate",
    "gate",
    "promote",
]


def copy_layout(tmp: Path) -> Path:
    """argo/, dvc.yaml and params.yaml in a temporary folder, to break on purpose."""
    shutil.copytree(REPO / "argo", tmp / "argo")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp / name)
    return tmp


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real `autotrader` entry point, in a subprocess (slow: use ``run_cli`` for most checks)."""
    return subprocess.run(
        [str(BIN / "autotrader"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``autotrader …`` in this process from folder ``cwd``: (exit code, stdout, stderr)."""
    from autotrader.cli import main

    def run(*args: str, cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_dvc_yaml_is_read_with_its_interpolations() -> None:
    stages = load_dvc_stages(REPO / "dvc.yaml")
    assert list(stages) == DVC_STAGES
    assert "data/raw" in stages["validate"].deps
    features_out = {o.path: o for o in stages["features"].outs}
    assert features_out["data/features"].persist and features_out["data/features"].cache
    assert not features_out["metrics/features.json"].cache
    assert set(upstream(stages, "features")) == {"extract", "validate"}
    assert upstream(stages, "features")["validate"] == [("metrics/validation.json", False)]
    assert ancestors(stages, "promote") == {
        "extract",
        "validate",
        "features",
        "prepare",
        "train",
        "evaluate",
        "gate",
    }


def test_the_repository_has_parity() -> None:
    plans, stages, problems = plan_from_files(REPO / "argo", REPO / "dvc.yaml")
    assert problems == []
    by_name = {p.name: p for p in plans}
    assert set(by_name) == {"data-pipeline", "training-pipeline", "feature-health", "deployment"}
    order = {name: [s for _, s in p.stage_order()] for name, p in by_name.items()}
    assert order["data-pipeline"] == ["extract", "validate", "features", "archive", "health"]
    assert order["training-pipeline"] == ["prepare", "train", "evaluate", "gate", "promote"]
    assert order["feature-health"] == ["health"]
    assert order["deployment"] == []
    assert {s for stages_run in order.values() for s in stages_run} == set(stages)
    extract = next(s for s in by_name["data-pipeline"].steps if s.stages == ("extract",))
    assert extract.mode == "commit"
    fanout = by_name["data-pipeline"].steps[0]
    assert (
        fanout.kind == "fetch"
        and fanout.items == ("binance", "oanda", "ibkr")
        and fanout.order < extract.order
    )
    submit = by_name["training-pipeline"].steps[-1]
    assert submit.kind == "submit" and submit.detail == "submits deployment" and "promote" in submit.when


def test_plan_command_prints_every_workflow_in_order() -> None:
    proc = cli("pipeline", "plan", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "data-pipeline  (CronWorkflow in argo/data-pipeline.yaml; 0 2 * * * UTC; deadline 2 h)" in out
    assert "DVC stages: extract → validate → features → archive → health" in out
    assert "DVC stages: prepare → train → evaluate → gate → promote" in out
    assert "extract-broker ×[binance, oanda, ibkr]" in out and "dvc commit extract" in out
    assert (
        "training-pipeline  (CronWorkflow in argo/training-pipeline.yaml; 0 3 * * 0 UTC; deadline 6 h)" in out
    )
    assert "NOT RUN" not in out


def test_plan_json_is_machine_readable(run_cli) -> None:
    code, out, err = run_cli("pipeline", "plan", "--json", cwd=REPO)
    assert code == 0, err
    data = json.loads(out)
    assert data["problems"] == [] and data["dvc_stages"] == sorted(DVC_STAGES)
    flows = {w["name"]: w for w in data["workflows"]}
    assert flows["feature-health"]["stages"] == ["health"] and flows["feature-health"]["schedules"] == [
        "0 * * * *"
    ]


def test_deleting_a_stage_from_dvc_yaml_fails_the_plan(tmp_path: Path, run_cli) -> None:
    root = copy_layout(tmp_path)
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    del dvc["stages"]["archive"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    code, _, err = run_cli("pipeline", "plan", cwd=root)
    assert code != 0
    assert (
        "data-pipeline: step main/archive runs DVC stage 'archive', which is not in dvc.yaml"
        in err.replace("\n", " ")
    )


def test_a_misspelt_stage_in_a_workflow_fails_the_plan(tmp_path: Path, run_cli) -> None:
    root = copy_layout(tmp_path)
    path = root / "argo" / "data-pipeline.yaml"
    path.write_text(
        path.read_text().replace("{name: stages, value: validate}", "{name: stages, value: valdate}")
    )
    _, _, problems = plan_from_files(root / "argo", root / "dvc.yaml")
    assert any("step main/validate runs DVC stage 'valdate', which is not in dvc.yaml" in p for p in problems)
    assert any("stage 'validate' is run by no Argo workflow" in p for p in problems)
    assert run_cli("pipeline", "plan", cwd=root)[0] != 0


def test_a_new_stage_that_no_workflow_runs_fails_the_plan(tmp_path: Path) -> None:
    root = copy_layout(tmp_path)
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    dvc["stages"]["explain"] = {
        "cmd": "python stages/explain.py",
        "deps": ["models/model"],
        "outs": ["reports/shap"],
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    _, _, problems = plan_from_files(root / "argo", root / "dvc.yaml")
    assert problems == ["dvc.yaml: stage 'explain' is run by no Argo workflow"]


def test_a_step_that_does_not_pull_what_its_stage_needs_fails(tmp_path: Path) -> None:
    root = copy_layout(tmp_path)
    path = root / "argo" / "training-pipeline.yaml"
    path.write_text(
        path.read_text().replace(
            "{name: stages, value: evaluate}\n                  - {name: pull, value: prepare train}",
            "{name: stages, value: evaluate}\n                  - {name: pull, value: train}",
            1,
        )
    )
    _, _, problems = plan_from_files(root / "argo", root / "dvc.yaml")
    assert problems == [
        "training-pipeline.yaml: CronWorkflow/training-pipeline: step main/evaluate runs 'evaluate', which needs "
        "data/prepared (a cached output of 'prepare'), but does not pull 'prepare'"
    ]


def test_a_persisted_store_that_is_not_pulled_fails(tmp_path: Path) -> None:
    root = copy_layout(tmp_path)
    path = root / "argo" / "data-pipeline.yaml"
    path.write_text(
        path.read_text().replace(
            '- {name: pull, value: extract features}\n                artifacts:\n                  - {name: state, from: "{{steps.validate',
            '- {name: pull, value: extract}\n                artifacts:\n                  - {name: state, from: "{{steps.validate',
        )
    )
    _, _, problems = plan_from_files(root / "argo", root / "dvc.yaml")
    assert any(
        "runs 'features', whose outputs persist across runs, but does not pull its previous ones" in p
        for p in problems
    ), problems


def test_steps_out_of_order_fail(tmp_path: Path) -> None:
    root = copy_layout(tmp_path)
    path = root / "argo" / "training-pipeline.yaml"
    doc = yaml.safe_load(path.read_text())
    steps = doc["spec"]["workflowSpec"]["templates"][0]["steps"]
    steps[2], steps[3] = steps[3], steps[2]  # evaluate before train
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _, _, problems = plan_from_files(root / "argo", root / "dvc.yaml")
    assert any("runs 'evaluate' before (or beside) 'train'" in p for p in problems), problems


def test_an_uncached_input_no_earlier_step_made_fails(tmp_path: Path) -> None:
    """gate reads metrics/evaluate.json, which only the state of an earlier step can carry."""
    root = copy_layout(tmp_path)
    path = root / "argo" / "training-pipeline.yaml"
    doc = yaml.safe_load(path.read_text())
    steps = doc["spec"]["workflowSpec"]["templates"][0]["steps"]
    del steps[3]  # no evaluate step (the parity check reads stages and pulls, not artifact wiring)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _, _, problems = plan_from_files(root / "argo", root / "dvc.yaml")
    assert any(
        "step main/gate runs 'gate', which needs metrics/evaluate.json" in p
        and "no earlier step runs 'evaluate'" in p
        for p in problems
    ), problems
    assert "dvc.yaml: stage 'evaluate' is run by no Argo workflow" in problems


@pytest.mark.parametrize("bad", ["dvc.yaml", "argo"])
def test_plan_names_the_missing_file(tmp_path: Path, bad: str, run_cli) -> None:
    root = copy_layout(tmp_path)
    target = root / bad
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    code, _, err = run_cli("pipeline", "plan", cwd=root)
    assert code == 2
    assert bad in err
