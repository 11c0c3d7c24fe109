"""The team's MLflow (deploy/mlflow): its manifests, and the same server on a real PostgreSQL with S3 artifacts.

The server runs the Deployment's own command line (``mlflow db upgrade`` and ``mlflow server
--backend-store-uri postgresql://… --artifacts-destination s3://… --serve-artifacts``) against a
throw-away PostgreSQL cluster and moto's S3 server on loopback. On it: a run logs a model, the model is
registered and aliased, two processes register at the same moment and both get their own version, and
the real pipeline (``dvc repro promote``: train → gate → ``autotrader promote``) promotes through it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from autotrader import registry
from autotrader.gitops.kustomize import render
from autotrader.gitops.policy import pod_security_violations, reference_violations
from autotrader.gitops.schemas import find_schema_dir, validate_objects
from autotrader.params import MlflowParams, Params

from .conftest import BIN, REPO, make_project, tool_env
from .pgserver import MlflowTrackingServer, Postgres, deployment_containers, postgres_fixture  # noqa: F401
from .s3server import S3Server, s3_server_fixture  # noqa: F401

pytestmark = [
    pytest.mark.xdist_group("mlflow-postgres"),
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer"),
]

NAME = "autotrader-signal-pg"
ARTIFACT_PREFIX = "mlartifacts"

# One run logs a tiny model and registers it; run as a separate process by the concurrency test.
REGISTER_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd
import mlflow
from sklearn.linear_model import LogisticRegression
from autotrader import registry
from autotrader.params import MlflowParams, Params

uri, name, seed, ready, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
params = Params(mlflow=MlflowParams(tracking_uri=uri, experiment="concurrent"))
rng = np.random.default_rng(seed)
X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
y = np.where(X["a"] > 0.3, 1, np.where(X["a"] < -0.3, -1, 0))
model = LogisticRegression().fit(X, y)
registry.connect(params)
experiment = registry.ensure_experiment(params)
with mlflow.start_run(experiment_id=experiment) as run:
    info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2), pip_requirements=[])
ready.touch()
while not go.exists():  # both processes are ready: register at the same moment
    time.sleep(0.005)
version = registry.register_model(info.model_uri, name, run_id=run.info.run_id, model_id=info.model_id)
print(json.dumps({"version": version, "run_id": run.info.run_id}))
"""


# --------------------------------------------------------------------------- manifests (no server)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (kustomize) is not installed")
    return render(REPO / "deploy" / "mlflow")


def test_manifests_validate_strictly_and_pass_pod_security(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    assert validate_objects(rendered, find_schema_dir(REPO)) == []
    assert pod_security_violations(rendered) == []
    assert reference_violations(rendered) == []
    assert all(o["metadata"]["namespace"] == "mlflow" for o in rendered)


def test_the_validators_bite_on_this_deployment(rendered: list[dict[str, Any]]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(rendered))
    deployment = next(o for o in broken if o["kind"] == "Deployment")
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    server["securityContext"]["readOnlyRootFilesystem"] = False
    server["livenessProbez"] = server.pop("livenessProbe")
    problems = [str(p) for p in validate_objects(broken, find_schema_dir(REPO))]
    assert any("livenessProbez" in p for p in problems), problems
    violations = pod_security_violations(broken)
    assert any("CKV_K8S_22" in v for v in violations) and any("CKV_K8S_8" in v for v in violations)


def test_server_command_postgres_s3_and_credentials_only_from_secrets(rendered: list[dict[str, Any]]) -> None:
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    config = next(o for o in rendered if o["kind"] == "ConfigMap")["data"]
    pod = deployment["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "server")
    args = server["args"]
    assert server["command"] == ["mlflow"] and args[0] == "server"
    assert any(
        a.startswith("--backend-store-uri=postgresql://$(MLFLOW_DB_USER):$(MLFLOW_DB_PASSWORD)@")
        for a in args
    )
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args and "--serve-artifacts" in args
    assert config["artifacts-destination"].startswith("s3://")
    for container in [*pod["initContainers"], *pod["containers"]]:
        env = {e["name"]: e for e in container["env"]}
        for secret_var in ("MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD"):
            assert env[secret_var]["valueFrom"]["secretKeyRef"]["name"] == "autotrader-mlflow-db"
        for name, var in env.items():  # nothing but HOME is a literal; no value anywhere is a credential
            assert name == "HOME" or "valueFrom" in var, name
    env = {e["name"]: e for e in server["env"]}
    for aws in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[aws]["valueFrom"]["secretKeyRef"]["name"] == "autotrader-mlflow-artifacts"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    service = next(o for o in rendered if o["kind"] == "Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == server["ports"][0]["name"]
    pdb = next(o for o in rendered if o["kind"] == "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]  # a drain can still proceed


# --------------------------------------------------------------------------- the server on Postgres


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket("mlflow")


@pytest.fixture(scope="module")
def server(
    postgres: Postgres, s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowTrackingServer]:
    tracking = MlflowTrackingServer(
        postgres, f"s3://{bucket}/{ARTIFACT_PREFIX}", s3_server.env, tmp_path_factory.mktemp("mlflow-pg")
    )
    try:
        yield tracking.start()
    finally:
        tracking.stop()


def psql(postgres: Postgres, query: str) -> list[str]:
    """Ask the database itself (not the server): what the registry wrote is really in Postgres."""
    proc = subprocess.run(
        [str(postgres.bin / "psql"), "-At", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", postgres.user,
         "-d", postgres.database, "-c", query],
        env={"PGPASSWORD": postgres.password, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.split()


def s3_keys(s3_server: S3Server, bucket: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def params_for(server: MlflowTrackingServer, experiment: str = "pg-test") -> Params:
    return Params(mlflow=MlflowParams(tracking_uri=server.url, experiment=experiment))


def test_the_server_ran_the_manifests_command_line(server: MlflowTrackingServer) -> None:
    argv = server.argv("server")
    assert argv[:2] == ["mlflow", "server"] and "--serve-artifacts" in argv
    assert any(a.startswith("--backend-store-uri=postgresql://autotrader:") for a in argv)
    assert any(a.startswith("--artifacts-destination=s3://") for a in argv)
    assert server.proc is not None and server.proc.poll() is None


def test_log_register_alias_and_load_through_postgres_and_s3(
    server: MlflowTrackingServer, postgres: Postgres, s3_server: S3Server, bucket: str, monkeypatch
) -> None:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = params_for(server)
    client = registry.connect(params)
    experiment = registry.ensure_experiment(params)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = np.where(X["a"] > 0.3, 1, np.where(X["a"] < -0.3, -1, 0))
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metric("cv_accuracy", 0.9)
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model", input_example=X.head(2))
    run_id = run.info.run_id
    # the artifacts went through the server to S3, under the destination's prefix
    keys = s3_keys(s3_server, bucket)
    assert any(k.startswith(f"{ARTIFACT_PREFIX}/") and k.endswith("MLmodel") for k in keys), keys

    first = registry.register_model(
        info.model_uri, NAME, run_id=run_id, model_id=info.model_id, tags={"k": 1}
    )
    registry.set_alias(NAME, registry.STAGING, first)
    registry.set_alias(NAME, registry.CHAMPION, first)
    assert registry.version_for_alias(NAME, registry.STAGING) == first
    assert registry.get_version(NAME, first, client=client).tags["k"] == "1"
    # ...and it is the database that holds them
    assert f"{NAME}|{first}" in psql(
        postgres, f"select name, version from model_versions where name = '{NAME}'"
    )
    assert f"staging|{first}" in psql(
        postgres, f"select alias, version from registered_model_aliases where name = '{NAME}'"
    )
    assert run_id in psql(postgres, "select run_uuid from runs")

    # a consumer loads by alias (what the model server does): the bytes come back from S3
    model = mlflow.pyfunc.load_model(registry.alias_uri(NAME, registry.CHAMPION))
    pred = model.predict(pd.DataFrame({"a": [2.0, -2.0], "b": [0.0, 0.0], "c": [0.0, 0.0]}))
    assert list(np.asarray(pred)) == [1, -1]

    with mlflow.start_run(experiment_id=experiment) as run2:
        info2 = mlflow.sklearn.log_model(LogisticRegression(C=0.5).fit(X, y), name="model")
    second = registry.register_model(info2.model_uri, NAME, run_id=run2.info.run_id, model_id=info2.model_id)
    assert int(second) == int(first) + 1
    registry.set_alias(NAME, registry.STAGING, second)
    assert registry.aliases(NAME, client=client) == {registry.STAGING: second, registry.CHAMPION: first}


def test_two_processes_registering_at_once_both_get_their_own_version(
    server: MlflowTrackingServer, postgres: Postgres, tmp_path: Path
) -> None:
    name = f"{NAME}-concurrent"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                str(BIN / "python"),
                "-c",
                REGISTER_SCRIPT,
                server.url,
                name,
                str(seed),
                str(tmp_path / f"ready{seed}"),
                str(go),
            ],
            env=tool_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (11, 12)
    ]
    # release both once each has logged its model, so that the two registrations race
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not all((tmp_path / f"ready{s}").exists() for s in (11, 12)):
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    versions = sorted(int(r["version"]) for r in results)
    assert versions == [1, 2], results
    rows = psql(
        postgres, f"select version, run_id from model_versions where name = '{name}' order by version"
    )
    assert [r.split("|")[0] for r in rows] == ["1", "2"]
    assert {r.split("|")[1] for r in rows} == {r["run_id"] for r in results}


@pytest.mark.slow
def test_the_pipeline_trains_gates_and_promotes_through_the_server(
    server: MlflowTrackingServer, postgres: Postgres, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """``dvc repro promote`` with MLFLOW_TRACKING_URI at the server: training, the gate's champion look-up
    and ``autotrader promote`` all go through Postgres and S3."""
    project = make_project(tmp_path / "project")
    env = {"MLFLOW_TRACKING_URI": server.url}
    project.dvc("repro", "promote", timeout=1200, env=env)
    promotion = json.loads((project.root / "metrics" / "promotion.json").read_text())
    assert promotion["promoted"] is True and promotion["newly_registered"] is True, promotion
    name, version, run_id = promotion["model_name"], promotion["version"], promotion["run_id"]
    assert not (project.root / "mlflow.db").exists()  # nothing went to a local sqlite store
    assert run_id in psql(postgres, "select run_uuid from runs where status = 'FINISHED'")
    assert f"{name}|{version}|{run_id}" in psql(
        postgres, f"select name, version, run_id from model_versions where name = '{name}'"
    )
    assert f"staging|{version}" in psql(
        postgres, f"select alias, version from registered_model_aliases where name = '{name}'"
    )
    keys = s3_keys(s3_server, bucket)
    assert any(run_id in k or promotion["model_id"] in k for k in keys if k.endswith("MLmodel")), keys[:20]

    # promote again by hand: the same model is found registered (idempotent), nothing new is created
    project.run(str(BIN / "autotrader"), "promote", env=env)
    again = json.loads((project.root / "metrics" / "promotion.json").read_text())
    assert again["version"] == version and again["newly_registered"] is False
    assert psql(postgres, f"select count(*) from model_versions where name = '{name}'") == ["1"]
