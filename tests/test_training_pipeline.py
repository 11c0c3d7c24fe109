"""The training pipeline end to end with default params: ``dvc repro promote`` on the simulated market.

One module-scoped run of the real pipeline (extract → validate → features → prepare → train →
evaluate → gate → promote, sqlite MLflow) is the baseline; every test that breaks something works on
its own copy of that project, and checks the failure is clear, non-zero and changes nothing (outputs
byte-identical, registry versions and aliases as before).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotrader import registry
from autotrader.params import MlflowParams, Params

from .conftest import BIN, Project, make_project

pytestmark = [pytest.mark.xdist_group("training-pipeline"), pytest.mark.slow]

MODEL_NAME = "autotrader-signal"


def registry_params(project: Project) -> Params:
    return Params(
        mlflow=MlflowParams(
            tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}",
            artifact_location=str(project.root / "mlartifacts"),
        )
    )


def registry_state(project: Project) -> dict:
    registry.connect(registry_params(project))
    return registry.snapshot(MODEL_NAME)


def tree_hash(path: Path) -> str:
    """Content of a file or a folder (relative names + bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def read_json(project: Project, rel: str) -> dict:
    return json.loads((project.root / rel).read_text())


def promote(project: Project, *args: str, env: dict[str, str] | None = None):
    return project.run(str(BIN / "autotrader"), "promote", *args, check=False, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(tmp_path_factory.mktemp("training") / "project")
    # Write bytecode as a developer's machine does: __pycache__ beside the code must not count as a change.
    project.dvc("repro", "promote", timeout=900, env={"PYTHONDONTWRITEBYTECODE": ""})
    return project


@pytest.fixture
def copy(built: Project, tmp_path: Path) -> Project:
    """A private copy of the built project (its sqlite registry included) to break things in."""
    dest = tmp_path / "copy"
    shutil.copytree(built.root, dest, symlinks=True)
    return Project(dest)


def test_default_pipeline_passes_every_gate_and_promotes_to_staging(built: Project) -> None:
    gates = read_json(built, "metrics/gates.json")
    assert gates["promote"] is True and gates["verdict"] == "pass", gates["failed"]
    assert {g["name"] for g in gates["gates"]} == {"sharpe", "max_drawdown", "win_rate", "trades", "dsr"}
    evaluation = read_json(built, "metrics/evaluate.json")
    portfolio = evaluation["portfolio"]
    assert portfolio["sharpe"] > 2.0 and portfolio["max_drawdown"] < 0.15
    assert portfolio["win_rate"] > 0.55 and portfolio["n_trades"] >= 100
    # four walk-forward windows, pooled; each with a bootstrap interval around its Sharpe
    windows = evaluation["windows"]
    assert [w["model"] for w in windows] == ["refitted", "refitted", "refitted", "shipped"]
    assert all(w["sharpe_ci"][0] <= w["sharpe"] <= w["sharpe_ci"][1] for w in windows)
    assert portfolio["sharpe_ci"][0] <= portfolio["sharpe"] <= portfolio["sharpe_ci"][1]
    # a fresh, local registry: the deflated Sharpe counts this run's two candidates, and says so
    trials = evaluation["dsr"]["trials"]
    assert trials["total"] == evaluation["dsr"]["n_trials"] == 2 and trials["prior_runs"] == 0
    assert "only" in trials["source"]
    dsr_gate = next(g for g in gates["gates"] if g["name"] == "dsr")
    assert dsr_gate["value"] == evaluation["dsr"]["dsr"] and dsr_gate["threshold"] == 0.95
    card = (built.root / "reports" / "model_card.md").read_text()
    assert "Synthetic data" in card and "Implausible Sharpe" in card  # strength 4: Sharpe in the tens
    assert "Deflated Sharpe ratio" in card and "2 trials" in card and "Profit factor" in card
    promotion = read_json(built, "metrics/promotion.json")
    assert promotion["promoted"] is True and promotion["alias"] == "staging"
    assert promotion["uri"] == f"models:/{MODEL_NAME}/{promotion['version']}"
    state = registry_state(built)
    assert state["aliases"] == {"staging": promotion["version"]}
    version = registry.get_version(MODEL_NAME, promotion["version"])
    train = read_json(built, "metrics/train.json")
    assert version.run_id == train["run_id"]
    for tag in ("git_commit", "data_version", "model_hash", "metric.sharpe", "gate.win_rate", "gate.sharpe"):
        assert tag in version.tags, tag
    assert version.tags["data_version"] == train["data_version"]
    assert train["data_version_source"] == "dvc.lock"  # DVC's own hash of the feature store


def test_a_second_repro_is_a_no_op(built: Project) -> None:
    proc = built.dvc("repro", "promote", env={"PYTHONDONTWRITEBYTECODE": ""})
    assert "Running stage" not in proc.stdout, proc.stdout
    for stage in ("extract", "validate", "features", "prepare", "train", "evaluate", "gate", "promote"):
        assert f"Stage '{stage}' didn't change" in proc.stdout, proc.stdout


def test_outputs_are_there_and_readable(built: Project) -> None:
    plots = built.root / "reports" / "plots"
    assert list(pd.read_csv(plots / "equity.csv").columns) == ["timestamp", "equity"]
    assert list(pd.read_csv(plots / "drawdown.csv").columns) == ["timestamp", "drawdown"]
    assert list(pd.read_csv(plots / "confusion.csv").columns) == ["actual", "predicted"]
    assert list(pd.read_csv(plots / "importance.csv").columns) == ["feature", "importance"]
    for name in ("equity", "drawdown", "confusion", "importance"):
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (built.root / "reports" / "model_card.md").read_text()
    for heading in (
        "## Intended use",
        "## Data",
        "## Walk-forward backtest (out of sample)",
        "## Gates",
        "## Limitations",
    ):
        assert heading in card
    splits = read_json(built, "data/prepared/splits.json")
    # data.end − oos_windows × test_days, cut into four 20-day walk-forward windows
    assert splits["boundaries"]["test_start"] == "2026-09-01T00:00:00+00:00"
    assert [w["start"][:10] for w in splits["oos_windows"]] == [
        "2026-09-01",
        "2026-09-21",
        "2026-10-11",
        "2026-10-31",
    ]
    # dvc sees the plot files where dvc.yaml's top-level plots point
    shown = built.dvc("plots", "show", "--json").stdout
    assert "equity" in shown and "importance" in shown


def test_the_model_serves_as_the_contract_says(built: Project) -> None:
    import mlflow

    from autotrader.store import feature_columns

    features = feature_columns(built.root / "data" / "features")
    info = mlflow.models.get_model_info(str(built.root / "models" / "model"))
    assert info.signature.inputs.input_names() == features
    assert all(spec.type.name == "double" for spec in info.signature.inputs.inputs)
    model = mlflow.pyfunc.load_model(str(built.root / "models" / "model"))
    test = pd.read_parquet(built.root / "data" / "prepared" / "test.parquet")
    pred = np.asarray(model.predict(test[features].head(500)))
    assert set(np.unique(pred)) <= {-1, 0, 1} and len(set(pred)) > 1


def test_training_run_is_logged_with_lineage(built: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(built.root)  # artifact locations are relative to the repository (registry.py)
    registry.connect(registry_params(built))
    train = read_json(built, "metrics/train.json")
    run = mlflow.MlflowClient().get_run(train["run_id"])
    assert run.data.tags["data_version"] == train["data_version"]
    assert run.data.params["chosen"] == train["chosen"]
    assert run.data.params["train.horizon"] == "36"
    assert "cv.hgb.log_loss" in run.data.metrics and "cv.logreg.log_loss" in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "cv.hgb.log_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]  # one per fold
    assert "test.sharpe" in run.data.metrics  # evaluate logged to the same run
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"model_card.md", "plots", "evaluate.json", "replay"} <= artifacts
    replay = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="replay/bars.parquet")
    rows = pd.read_parquet(replay)
    test_start = read_json(built, "data/prepared/splits.json")["boundaries"]["test_start"]
    # recorded from the validation split, never the test window
    assert rows["timestamp"].max() < pd.Timestamp(test_start)


def test_champion_is_backtested_on_the_same_window(copy: Project) -> None:
    version = read_json(copy, "metrics/promotion.json")["version"]
    registry.connect(registry_params(copy))
    registry.set_alias(MODEL_NAME, registry.CHAMPION, version)
    copy.stage("gate")
    gates = read_json(copy, "metrics/gates.json")
    regression = next(g for g in gates["gates"] if g["name"] == "champion_regression")
    # the champion is this very model: same (last) window, same costs → same Sharpe; it may not regress
    assert gates["champion"]["sharpe"] == pytest.approx(gates["champion"]["candidate_sharpe"])
    assert regression["value"] == gates["champion"]["candidate_sharpe"]
    assert regression["passed"] and gates["promote"] is True


def test_a_second_training_run_counts_the_first_as_trials(copy: Project) -> None:
    copy.stage("train")
    trials = read_json(copy, "metrics/train.json")["trials"]
    # the first run's two candidates are in the experiment's history now: 2 + 2
    assert trials == {**trials, "total": 4, "prior_runs": 1, "prior_candidates": 2, "this_run": 2}
    assert "MLflow experiment history" in trials["source"]


def test_failed_gates_refuse_promotion_and_if_approved_records_why(copy: Project) -> None:
    copy.set_params(**{"gates.min_sharpe": 1000.0})
    copy.stage("gate")  # a failed gate is an outcome: exit 0
    gates = read_json(copy, "metrics/gates.json")
    assert gates["promote"] is False and any(f.startswith("sharpe") for f in gates["failed"])
    before = registry_state(copy)
    proc = promote(copy)
    assert proc.returncode != 0 and "gates failed" in proc.stderr
    proc = promote(copy, "--if-approved")
    assert proc.returncode == 0, proc.stderr
    record = read_json(copy, "metrics/promotion.json")
    assert record["promoted"] is False and "sharpe" in record["reason"]
    assert registry_state(copy) == before


def test_promote_refuses_a_model_changed_after_the_gates(copy: Project) -> None:
    mlmodel = copy.root / "models" / "model" / "MLmodel"
    mlmodel.write_text(mlmodel.read_text() + "\n")
    before, record = registry_state(copy), tree_hash(copy.root / "metrics" / "promotion.json")
    proc = promote(copy)
    assert proc.returncode != 0
    assert "judged another model" in proc.stderr and "models/model" in proc.stderr
    assert registry_state(copy) == before
    assert tree_hash(copy.root / "metrics" / "promotion.json") == record


def test_promote_refuses_a_signature_that_does_not_match_the_store(copy: Project) -> None:
    copy.set_params(**{"features.return_horizons": [1, 3, 12]})  # the store loses ret_48
    copy.stage("features")
    before = registry_state(copy)
    proc = promote(copy)
    assert proc.returncode != 0 and "input signature does not match the feature store" in proc.stderr
    assert "ret_48" in proc.stderr
    assert registry_state(copy) == before


def test_a_corrupted_model_fails_evaluate_clearly_and_changes_nothing(copy: Project) -> None:
    weights = copy.root / "models" / "model" / "model.skops"
    weights.write_bytes(weights.read_bytes()[:200])
    outputs = [copy.root / p for p in ("metrics/evaluate.json", "reports/plots", "reports/model_card.md")]
    before = [tree_hash(p) for p in outputs]
    state = registry_state(copy)
    proc = copy.stage("evaluate", check=False)
    assert proc.returncode != 0
    assert "models/model: cannot load the model" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [tree_hash(p) for p in outputs] == before
    proc = copy.stage("gate", check=False)  # gates.json would be for another model now
    assert proc.returncode != 0 and "model hash differs" in proc.stderr
    assert registry_state(copy) == state


def test_an_unreachable_tracking_server_fails_fast_and_changes_nothing(copy: Project) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    outputs = [copy.root / p for p in ("models/model", "metrics/train.json", "metrics/promotion.json")]
    before, state = [tree_hash(p) for p in outputs], registry_state(copy)
    proc = copy.stage("train", check=False, env=env)
    assert proc.returncode != 0
    assert "http://127.0.0.1:1 is unreachable" in proc.stderr, proc.stderr
    proc = promote(copy, env=env)
    assert proc.returncode != 0 and "http://127.0.0.1:1 is unreachable" in proc.stderr
    assert [tree_hash(p) for p in outputs] == before
    assert registry_state(copy) == state


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.end": "2031-01-01"}, "no feature rows in the training window"),
        ({"train.lookback_days": 200}, "train.lookback_days=200 reaches back"),
        ({"train.cost_threshold_bps": 1_000_000.0}, "single class [0]"),
    ],
    ids=["empty-window", "lookback-longer-than-data", "single-class"],
)
def test_bad_training_windows_fail_clearly(copy: Project, overrides: dict, message: str) -> None:
    before = tree_hash(copy.root / "data" / "prepared")
    copy.set_params(**overrides)
    proc = copy.stage("prepare", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_hash(copy.root / "data" / "prepared") == before


def test_promoting_the_same_model_again_reuses_its_version(copy: Project) -> None:
    first = read_json(copy, "metrics/promotion.json")
    before = registry_state(copy)
    proc = promote(copy)
    assert proc.returncode == 0, proc.stderr
    again = read_json(copy, "metrics/promotion.json")
    assert again["version"] == first["version"] and again["newly_registered"] is False
    assert registry_state(copy) == before
