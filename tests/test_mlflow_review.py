"""What a reviewer sees in MLflow after a pipeline run, against a real (sqlite) tracking store.

One small pipeline (``dvc repro promote``: two instruments, 30 days, one candidate, lenient gates) is
the baseline. Checked on it: the fit runs inside the training run and a crashed fit leaves a FAILED
run carrying the error; the run's input dataset is the feature store with DVC's own hash as digest;
the registered version's description is the model card's summary and the model has a description;
tag numbers are rounded; and the whole repository still works after it is moved to another folder
(artifact locations are relative to it, not absolute paths into the old place).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autotrader import registry
from autotrader.errors import ModelError
from autotrader.modeling.lineage import data_version, dvc_dir_md5
from autotrader.modeling.model_card import card_summary, model_description
from autotrader.modeling.tracking import (
    ERROR_ARTIFACT,
    ERROR_TAG,
    FEATURE_STORE_DATASET,
    NOTE_TAG,
    TEST_SPLIT_DATASET,
)
from autotrader.modeling.trials import FIT_PENDING, FIT_STARTED, FIT_TAG, MODEL_TAG, STAGE_TAG, count_trials
from autotrader.params import MlflowParams, Params

from .conftest import BIN, SMALL_PIPELINE, Project, make_project, tool_env

pytestmark = [
    pytest.mark.xdist_group("mlflow-review"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer"),
]

MODEL_NAME = "autotrader-signal"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(tmp_path_factory.mktemp("mlflow-review") / "project")
    project.set_params(**SMALL_PIPELINE)
    project.dvc("repro", "promote", timeout=1200)
    return project


def client_for(project: Project):
    """A client on the project's sqlite store (artifacts resolve from the project root: chdir there)."""
    import mlflow

    params = Params(mlflow=MlflowParams(tracking_uri=f"sqlite:///{project.root / 'mlflow.db'}"))
    registry.connect(params)
    return mlflow.MlflowClient()


def read_json(project: Project, rel: str) -> dict:
    return json.loads((project.root / rel).read_text())


def locked_md5(project: Project, path: str) -> str:
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    return next(
        out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] == path
    )


def test_dvc_dir_md5_is_dvcs_own_hash_of_a_folder(tmp_path: Path) -> None:
    """Same bytes as ``dvc add`` records, for a partitioned folder with text, CRLF and binary files."""
    root = tmp_path / "repo"
    root.mkdir()

    def run(*args: str) -> None:
        subprocess.run(args, cwd=root, env=tool_env(), check=True, capture_output=True)

    run("git", "init", "-q")
    run(str(BIN / "dvc"), "init", "-q")
    store = root / "store"
    (store / "broker=x" / "symbol=A" / "date=2026-01-01").mkdir(parents=True)
    (store / "broker=x" / "symbol=A" / "date=2026-01-01" / "features.parquet").write_bytes(
        b"a\r\nb\n\x00\xff"
    )
    (store / "_metadata.json").write_text('{"version": 1}\n')
    (store / "b").mkdir()
    (store / "b" / "z.bin").write_bytes(bytes(range(256)) * 7)
    run(str(BIN / "dvc"), "add", "-q", "store")
    recorded = yaml.safe_load((root / "store.dvc").read_text())["outs"][0]["md5"]
    assert dvc_dir_md5(store) == recorded
    (store / "b" / "z.bin").write_bytes(b"changed")
    assert dvc_dir_md5(store) != recorded


def test_data_version_without_the_store_is_the_lock_record_and_without_both_an_error(tmp_path: Path) -> None:
    store = tmp_path / "data" / "features"
    store.mkdir(parents=True)
    (store / "_metadata.json").write_text("{}")
    lock = tmp_path / "dvc.lock"
    assert data_version(str(store), lock)["data_version_source"] == "computed (no dvc.lock entry)"
    lock.write_text(
        yaml.safe_dump({"stages": {"features": {"outs": [{"path": str(store), "md5": "x.dir"}]}}})
    )
    here = data_version(str(store), lock)
    assert (
        here["data_version"] == dvc_dir_md5(store)
        and "the store changed outside DVC" in here["data_version_source"]
    )
    shutil.rmtree(store)  # a training step that pulled only data/prepared
    assert data_version(str(store), lock) == {
        "data_version": "x.dir",
        "data_version_source": "dvc.lock (store not present to check)",
    }
    lock.unlink()
    with pytest.raises(ModelError, match="no feature store here and no md5 for it"):
        data_version(str(store), lock)


def test_the_run_logs_the_feature_store_with_its_dvc_hash(built: Project) -> None:
    client = client_for(built)
    train = read_json(built, "metrics/train.json")
    run = client.get_run(train["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags[FIT_TAG] == FIT_STARTED
    assert run.info.run_name == f"train-{train['chosen']}"
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == sorted([FEATURE_STORE_DATASET, TEST_SPLIT_DATASET])
    store = inputs[FEATURE_STORE_DATASET]
    dataset, tags = store.dataset, {t.key: t.value for t in store.tags}
    digest = locked_md5(built, "data/features")
    assert dataset.digest == digest == train["data_version"] == run.data.tags["data_version"]
    assert tags["mlflow.data.context"] == "training" and tags["digest_source"] == "dvc.lock"
    assert json.loads(dataset.source) == {"uri": "data/features"}  # relative: valid in every clone
    features = read_json(built, "data/prepared/splits.json")["features"]
    assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == features
    # evaluate adds the test split it backtests, digest = the md5 DVC lists for that file
    test = inputs[TEST_SPLIT_DATASET]
    test_tags = {t.key: t.value for t in test.tags}
    assert test_tags["mlflow.data.context"] == "evaluation"
    assert int(test_tags["rows"]) == len(pd.read_parquet(built.root / "data" / "prepared" / "test.parquet"))
    assert json.loads(test.dataset.source) == {"uri": "data/prepared/test.parquet"}
    listing = built.root / ".dvc" / "cache" / "files" / "md5"
    prepared = locked_md5(built, "data/prepared")
    entries = json.loads((listing / prepared[:2] / prepared[2:]).read_text())
    assert test.dataset.digest == next(e["md5"] for e in entries if e["relpath"] == "test.parquet")


def test_the_version_description_is_the_model_card_summary(built: Project) -> None:
    client = client_for(built)
    promotion = read_json(built, "metrics/promotion.json")
    assert promotion["promoted"] is True
    version = client.get_model_version(MODEL_NAME, promotion["version"])
    summary = card_summary((built.root / "reports" / "model_card.md").read_text())
    assert (
        summary and "Sharpe" in summary and read_json(built, "metrics/train.json")["data_version"] in summary
    )
    assert version.description == summary
    assert client.get_registered_model(MODEL_NAME).description == model_description()
    # the run's description in the UI is the same summary (evaluate's final one)
    assert client.get_run(promotion["run_id"]).data.tags[NOTE_TAG] == summary


def test_version_tags_are_rounded_to_four_significant_digits(built: Project) -> None:
    client = client_for(built)
    promotion = read_json(built, "metrics/promotion.json")
    tags = client.get_model_version(MODEL_NAME, promotion["version"]).tags
    portfolio = read_json(built, "metrics/evaluate.json")["portfolio"]
    gates = {g["name"]: g for g in read_json(built, "metrics/gates.json")["gates"]}
    numbers = [
        n
        for key, v in tags.items()
        if key.startswith(("gate.", "metric."))
        for n in re.findall(r"-?[\d.]+(?:e[-+]\d+)?", v)
    ]
    assert numbers and all(len(re.sub(r"e.*|[-.]", "", n).lstrip("0")) <= 4 for n in numbers), numbers
    assert float(tags["metric.max_drawdown"]) == pytest.approx(portfolio["max_drawdown"], rel=1e-3)
    assert tags["metric.n_trades"] == str(portfolio["n_trades"])  # integers stay exact
    dsr = gates["dsr"]
    assert tags["gate.dsr"] == f"{dsr['verdict']} ({dsr['value']:.4g} {dsr['op']} {dsr['threshold']:.4g})"


def test_tag_number_rounds_floats_only() -> None:
    assert registry.tag_number(0.047923456) == "0.04792"
    assert registry.tag_number(20.7123) == "20.71"
    assert registry.tag_number(123456.7) == "1.235e+05"
    assert registry.tag_number(75) == "75" and registry.tag_number(True) == "True"
    assert registry.tag_number("pass") == "pass"


def test_a_crashed_fit_leaves_a_failed_run_with_the_error(built: Project, tmp_path: Path) -> None:
    dest = tmp_path / "crash"
    shutil.copytree(built.root, dest, symlinks=True)
    project = Project(dest)
    model_before = (dest / "models" / "model" / "MLmodel").read_bytes()
    train_path = dest / "data" / "prepared" / "train.parquet"
    frame = pd.read_parquet(train_path)
    frame["label"] = 0  # one class: the fit refuses it (modeling.train.check_labels)
    frame.to_parquet(train_path, index=False)

    proc = project.stage("train", check=False)
    assert proc.returncode != 0 and "single class" in proc.stdout + proc.stderr

    client = client_for(project)
    experiment = client.get_experiment_by_name("autotrader")
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    run = runs[0]
    assert run.info.run_id != read_json(built, "metrics/train.json")["run_id"]
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG].startswith(
        "ModelError: labels in data/prepared/train.parquet have a single class"
    )
    assert run.data.tags[NOTE_TAG].startswith("**Training failed.** ModelError")
    assert run.data.tags[FIT_TAG] == FIT_STARTED  # it failed in the fit, so it counts as a trial
    assert run.data.params["train.candidates"] == "logreg"  # the failed run says what it tried
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == [FEATURE_STORE_DATASET]
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(dest)  # the artifact location is relative to the project
        trace = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{ERROR_ARTIFACT}")
    assert "Traceback" in trace and "check_labels" in trace
    assert (dest / "models" / "model" / "MLmodel").read_bytes() == model_before  # the last good model stays


def test_a_run_that_failed_before_its_fit_counts_no_trial(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("autotrader", artifact_location=str(tmp_path / "artifacts"))
    for fit, status in ((FIT_PENDING, "FAILED"), (FIT_STARTED, "FAILED"), (FIT_STARTED, "FINISHED")):
        run = client.create_run(experiment, tags={STAGE_TAG: "train", MODEL_TAG: "signal", FIT_TAG: fit})
        client.log_param(run.info.run_id, "train.candidates", "hgb,logreg")
        client.set_terminated(run.info.run_id, status=status)
    trials = count_trials(client, experiment, "signal", 2)
    assert trials["prior_runs"] == 2 and trials["total"] == 6


def test_a_moved_repository_still_loads_its_registered_model(built: Project, tmp_path: Path) -> None:
    """Move the whole project away (the old folder is gone) and load the staging model from the new place."""
    client = client_for(built)
    experiment = client.get_experiment_by_name("autotrader")
    assert experiment.artifact_location == "mlartifacts"  # relative to the repository, as params say
    run = client.get_run(read_json(built, "metrics/train.json")["run_id"])
    assert not Path(run.info.artifact_uri).is_absolute()

    moved = tmp_path / "elsewhere" / "autotrader"
    moved.parent.mkdir()
    shutil.move(built.root, moved)
    try:
        script = (
            "from autotrader import registry\n"
            "from autotrader.params import load_params\n"
            "from autotrader.modeling.dataset import read_prepared\n"
            "from autotrader.modeling.tracking import card_of_run, load_registered_model\n"
            "registry.connect(load_params())\n"
            f"m = load_registered_model(registry.alias_uri({MODEL_NAME!r}, registry.STAGING))\n"
            "test = read_prepared('data/prepared', names=('test',)).parts['test']\n"
            "print(len(m.model.predict(test[m.inputs].head(5))), bool(card_of_run(m.run_id)))\n"
        )
        proc = subprocess.run(
            [str(BIN / "python"), "-c", script], cwd=moved, env=tool_env(), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["5", "True"]
    finally:
        shutil.move(moved, built.root)


def test_a_relative_artifact_location_stays_relative_in_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow stores the absolute path it resolves; ensure_experiment keeps params' relative one."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def params(experiment: str) -> Params:
        return Params(
            mlflow=MlflowParams(
                tracking_uri="sqlite:///mlflow.db", artifact_location="mlartifacts", experiment=experiment
            )
        )

    client = registry.connect(params("fresh"))
    fresh = registry.ensure_experiment(params("fresh"))
    assert client.get_experiment(fresh).artifact_location == "mlartifacts"
    # an experiment an older version created with this repository's absolute path is switched over
    old = client.create_experiment("old", artifact_location="mlartifacts")
    assert Path(client.get_experiment(old).artifact_location).is_absolute()
    assert registry.ensure_experiment(params("old")) == old
    assert client.get_experiment(old).artifact_location == "mlartifacts"
    # one that points somewhere else is the operator's choice: left alone
    foreign = client.create_experiment("foreign", artifact_location=str(tmp_path / "elsewhere"))
    registry.ensure_experiment(params("foreign"))
    assert client.get_experiment(foreign).artifact_location == str(tmp_path / "elsewhere")
    with mlflow.start_run(experiment_id=fresh) as run:
        mlflow.log_text("hello", "note.txt")
    assert run.info.artifact_uri == f"mlartifacts/{run.info.run_id}/artifacts"
    assert (tmp_path / "mlartifacts" / run.info.run_id / "artifacts" / "note.txt").read_text() == "hello"


def test_against_a_server_artifacts_live_behind_mlflow_artifacts_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deploy/mlflow server proxies artifacts (--serve-artifacts): URIs that hold wherever it is reached."""
    import httpx
    import mlflow

    from autotrader.processes import free_port, stop_process, wait_until

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=tmp_path, env=tool_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{uri}/health", timeout=1).status_code == 200, 120, "mlflow server", proc, log
        )
        params = Params(mlflow=MlflowParams(tracking_uri=uri, experiment="served"))
        client = registry.connect(params)
        experiment = registry.ensure_experiment(params)
        assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("hello", "note.txt")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt") == "hello"
    finally:
        stop_process(proc)
