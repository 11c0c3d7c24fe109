"""``autotrader deploy check`` / ``deploy integration`` against real models, a real feature store and a
real MLflow registry (sqlite in a tmp dir), with the server started as a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
import yaml

from autotrader import registry
from autotrader.errors import DeployError
from autotrader.params import Params
from autotrader.serving.deploy_checks import (
    check_signature,
    compare_requirement,
    deploy_check,
    model_requirements,
    run_integration,
)
from autotrader.store import feature_columns, load_features
from tests.test_serving_support import (
    BIN,
    HGB_TRUSTED,
    build_store,
    pins,
    save_custom_model,
    serve,
    server_env,
    train_model,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("deploy")]
NAME = "autotrader-signal"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def store(workdir: Path) -> Path:
    return build_store(workdir, days=4)


@pytest.fixture(scope="module")
def params(workdir: Path, store: Path) -> Params:
    raw = {
        "paths": {"features": str(store), "reports": str(workdir / "reports")},
        "mlflow": {
            "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
            "artifact_location": str(workdir / "mlartifacts"),
        },
    }
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    return Params.model_validate(raw)


@pytest.fixture(scope="module")
def model_dir(workdir: Path, store: Path) -> Path:
    return train_model(workdir / "model", load_features(None, None, root=store))


@pytest.fixture(scope="module")
def registered(params: Params, model_dir: Path) -> str:
    """Version 1 of the registered model: the folder model logged through a run."""
    assert register_folder_model(params, model_dir) == "1"
    return "1"


def register_folder_model(params: Params, model_dir: Path, replay: pd.DataFrame | None = None) -> str:
    """Log the folder model through a run (with a recorded replay slice, if given) and register it."""
    from autotrader.modeling.tracking import log_replay_rows

    client = registry.connect(params)
    experiment = registry.ensure_experiment(params, client=client)
    estimator = mlflow.sklearn.load_model(str(model_dir))
    signature = mlflow.models.Model.load(str(model_dir)).signature
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=signature,
            registered_model_name=NAME,
            skops_trusted_types=HGB_TRUSTED,
            pip_requirements=pins("mlflow", "scikit-learn", "numpy", "pandas", "skops"),
        )
        if replay is not None:
            log_replay_rows(replay)
    return str(info.registered_model_version)


# ------------------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("package", "spec", "installed", "ok"),
    [
        ("scikit-learn", "==1.9.1", "1.9.1", True),
        ("scikit-learn", "==1.9.0", "1.9.1", False),  # estimators are pickled per exact version
        ("numpy", "==2.3.4", "2.3.5", True),  # same major.minor
        ("numpy", "==2.2.5", "2.3.5", False),
        ("pandas", ">=2.2,<3", "2.3.3", True),
        ("pandas", ">=3", "2.3.3", False),
        ("mlflow", None, "3.17.2", True),  # not pinned: nothing to compare
        ("mlflow", "==3.17.2", None, False),  # not installed
    ],
)
def test_requirement_rules(package: str, spec: str | None, installed: str | None, ok: bool) -> None:
    check = compare_requirement(package, spec, installed)
    assert check.passed is ok, check.detail
    assert package in check.name


def test_signature_rules() -> None:
    assert check_signature(["a", "b"], ["a", "b"]).passed
    assert check_signature(["b", "a"], ["a", "b"]).passed
    missing = check_signature(["a", "z"], ["a"])
    assert not missing.passed and "z" in missing.detail and "does not produce" in missing.detail
    extra = check_signature(["a"], ["a", "y"])
    assert not extra.passed and "y" in extra.detail
    assert not check_signature(None, ["a"]).passed


def test_requirements_come_from_requirements_txt_or_conda(tmp_path: Path) -> None:
    (tmp_path / "conda.yaml").write_text(
        yaml.safe_dump({"dependencies": ["python=3.11", {"pip": ["mlflow==3.17.2", "scikit_learn==1.9.1"]}]})
    )
    assert model_requirements(tmp_path) == {"mlflow": "==3.17.2", "scikit-learn": "==1.9.1"}
    (tmp_path / "requirements.txt").write_text("# pins\nnumpy==2.3.5\n-r other.txt\npandas>=2.2  # range\n")
    assert model_requirements(tmp_path) == {"numpy": "==2.3.5", "pandas": ">=2.2"}


# ------------------------------------------------------------------------------------- deploy check


def test_check_passes_and_a_recorded_golden_file_replays(
    params: Params, model_dir: Path, workdir: Path
) -> None:
    golden = workdir / "golden.json"
    report = deploy_check(params, str(model_dir), write_golden_path=golden)
    assert report["ok"] and report["pass_rate"] == 1.0
    names = {c["name"] for c in report["checks"]}
    assert {
        "model loads",
        "signature matches feature store",
        "deterministic",
        "requirement scikit-learn",
    } <= names
    on_disk = json.loads((workdir / "reports" / "deploy" / "check.json").read_text())
    assert on_disk["ok"] is True
    recorded = json.loads(golden.read_text())
    assert len(recorded["instances"]) == len(recorded["predictions"]) > 0
    assert set(recorded["predictions"]) <= {-1, 0, 1}
    again = deploy_check(params, str(model_dir), golden_path=golden)
    assert any(c["name"] == "golden outputs" and c["passed"] for c in again["checks"])


def test_check_fails_when_outputs_differ_from_the_golden_file(
    params: Params, model_dir: Path, workdir: Path
) -> None:
    golden = workdir / "golden-tampered.json"
    deploy_check(params, str(model_dir), write_golden_path=golden)
    data = json.loads(golden.read_text())
    data["predictions"][0] = 1 if data["predictions"][0] != 1 else -1
    golden.write_text(json.dumps(data))
    with pytest.raises(DeployError, match="golden outputs: 1 of"):
        deploy_check(params, str(model_dir), golden_path=golden)
    assert json.loads((workdir / "reports" / "deploy" / "check.json").read_text())["ok"] is False


def test_check_fails_on_a_requirement_the_server_cannot_meet(
    params: Params, model_dir: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    text = (copy / "requirements.txt").read_text()
    (copy / "requirements.txt").write_text(
        "\n".join(
            "scikit-learn==1.0.2" if line.startswith("scikit-learn") else line for line in text.splitlines()
        )
    )
    with pytest.raises(DeployError, match=r"requirement scikit-learn: model pins scikit-learn==1.0.2"):
        deploy_check(params, str(copy), report_path=tmp_path / "check.json")


def test_check_fails_when_the_signature_is_not_the_store_schema(
    params: Params, tmp_path: Path, store: Path
) -> None:
    folder = save_custom_model(tmp_path / "sign", "sign", ["momentum"])
    with pytest.raises(DeployError, match="momentum") as err:
        deploy_check(params, str(folder), report_path=tmp_path / "check.json")
    assert feature_columns(store)[0] in str(err.value)  # the store's features the model lacks


def test_check_without_a_feature_store_says_where_it_looked(
    params: Params, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="no feature store"):
        deploy_check(
            params, str(model_dir), features_root=tmp_path / "nowhere", report_path=tmp_path / "c.json"
        )


def test_not_a_model_is_refused_before_anything_runs(params: Params, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="not an MLflow model folder"):
        deploy_check(params, str(tmp_path), report_path=tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_check_through_the_registry_by_version_and_alias(
    params: Params, registered: str, tmp_path: Path
) -> None:
    report = deploy_check(params, f"models:/{NAME}/{registered}", report_path=tmp_path / "c.json")
    assert report["ok"] and report["model_version"] == registered
    registry.set_alias(NAME, "staging", registered)
    by_alias = deploy_check(params, f"models:/{NAME}@staging", report_path=tmp_path / "c.json")
    assert by_alias["model_uri"] == f"models:/{NAME}/{registered}"
    with pytest.raises(Exception, match="99"):
        deploy_check(params, f"models:/{NAME}/99", report_path=tmp_path / "c.json")


# -------------------------------------------------------------------------------------- integration


def test_integration_of_a_local_model_passes(params: Params, model_dir: Path, tmp_path: Path) -> None:
    report = run_integration(params, str(model_dir), bars=12, report_path=tmp_path / "integration.json")
    assert report["integration_passed"] and report["critical_passed"]
    assert report["pass_rate"] >= 0.95
    assert report["bars_replayed"] == 24 and len(report["instruments"]) == 2
    assert report["online_returns_expected"] == 24 - 2  # every bar after each instrument's first
    names = {c["name"] for c in report["checks"]}
    for expected in (
        "server ready (/readyz 200)",
        "metrics: online returns counted",
        "metrics: model_info carries model_version",
        "malformed (NaN token) → 422",
        "malformed (batch over the limit) → 413",
        "readyz 200 after bad input",
    ):
        assert expected in names
    assert json.loads((tmp_path / "integration.json").read_text())["integration_passed"] is True


def test_integration_record_needs_a_registry_model(params: Params, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="--record needs a registry model"):
        run_integration(params, str(model_dir), record=True, report_path=tmp_path / "i.json")


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "autotrader"), "--params", str(workdir / "params.yaml"), *args],
        cwd=workdir,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_integration_records_the_verdict_in_the_registry(
    params: Params, registered: str, workdir: Path
) -> None:
    proc = _cli(
        workdir,
        "deploy",
        "integration",
        "--model-uri",
        f"models:/{NAME}/{registered}",
        "--bars",
        "8",
        "--record",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tags = registry.get_version(NAME, registered).tags
    assert tags["integration_passed"] == "true"
    assert float(tags["integration_pass_rate"]) >= 0.95
    report = json.loads((workdir / "reports" / "deploy" / "integration.json").read_text())
    assert report["recorded"] is True and report["model_version"] == registered


def test_a_model_that_fails_under_traffic_fails_integration_and_is_recorded(
    params: Params, registered: str, workdir: Path, store: Path, tmp_path: Path
) -> None:
    folder = save_custom_model(tmp_path / "flaky", "raises_on_live", feature_columns(store))
    client = registry.connect(params)
    version = registry.register_model(folder.resolve().as_uri(), NAME, client=client)
    with pytest.raises(DeployError, match=r"integration tests of .* failed"):
        run_integration(
            params,
            f"models:/{NAME}/{version}",
            record=True,
            bars=6,
            report_path=tmp_path / "integration.json",
        )
    report: dict[str, Any] = json.loads((tmp_path / "integration.json").read_text())
    assert report["integration_passed"] is False
    assert any(c["name"].endswith("status 200") and not c["passed"] for c in report["checks"])
    assert registry.get_version(NAME, version).tags["integration_passed"] == "false"


def test_cli_check_reports_a_failure_with_a_clear_message(workdir: Path, tmp_path: Path) -> None:
    proc = _cli(workdir, "deploy", "check", "--model-uri", str(tmp_path))
    assert proc.returncode != 0
    assert "not an MLflow model folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_golden_inputs_come_from_the_store(
    params: Params, model_dir: Path, workdir: Path, store: Path
) -> None:
    golden = workdir / "golden-store.json"
    deploy_check(params, str(model_dir), write_golden_path=golden)
    instances = json.loads(golden.read_text())["instances"]
    last = pd.Timestamp(max(i["timestamp"] for i in instances))
    stored = load_features(None, None, root=store)
    assert last == stored["timestamp"].max()
    assert {i["symbol"] for i in instances} == set(stored["symbol"])


def test_integration_against_a_running_server_twice(params: Params, model_dir: Path, tmp_path: Path) -> None:
    """``--url``: the staging preview case. A second run sees a server with history and still passes,
    because replayed symbols are per run and the metric checks compare before/after."""
    with serve(str(model_dir)) as (url, _proc):
        assert wait_ready(url).status_code == 200
        for run in range(2):
            report = run_integration(
                params, str(model_dir), bars=6, url=url, report_path=tmp_path / f"i{run}.json"
            )
            assert report["integration_passed"], [c for c in report["checks"] if not c["passed"]]
            assert report["server"] == url
            assert all(".itest-" in i for i in {i.split("/", 1)[1] for i in report["instruments"]})


def test_without_a_feature_store_integration_replays_the_bars_recorded_with_the_run(
    params: Params, model_dir: Path, store: Path, registered: str, tmp_path: Path
) -> None:
    """The staging Job's case: the serving image has the registry but no feature store."""
    from autotrader.modeling.tracking import replay_rows

    frame = load_features(None, None, root=store)
    version = register_folder_model(params, model_dir, replay_rows(frame, feature_columns(store), bars=5))
    no_store = tmp_path / "no-store"
    with serve(str(model_dir), version=version) as (url, _proc):  # the preview pods run that version
        assert wait_ready(url).status_code == 200
        report = run_integration(
            params,
            f"models:/{NAME}/{version}",
            bars=5,
            url=url,
            features_root=no_store,
            report_path=tmp_path / "i.json",
        )
    assert report["integration_passed"], [c for c in report["checks"] if not c["passed"]]
    assert len(report["instruments"]) == frame.groupby(["broker", "symbol"]).ngroups
    # A version whose run recorded no bars cannot be replayed without a store: a clear refusal.
    with pytest.raises(DeployError, match=r"replay/bars\.parquet"):
        run_integration(params, f"models:/{NAME}/{registered}", bars=5, url=url, features_root=no_store)
