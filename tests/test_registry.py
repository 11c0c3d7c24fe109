"""The registry API on both backends: a sqlite store, and a real ``mlflow server`` on loopback.

Versions and aliases only (never the deprecated stages); an unreachable server fails fast with the
URI in the message.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from autotrader import registry
from autotrader.errors import RegistryError
from autotrader.params import MlflowParams, Params
from autotrader.processes import free_port, stop_process, wait_until

from .conftest import BIN, tool_env

pytestmark = [
    pytest.mark.xdist_group("registry"),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer"),
]

NAME = "autotrader-signal-test"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend, proxied artifacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'server.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=root,
            env=tool_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{uri}/health", timeout=1).status_code == 200, 120, "mlflow server", proc, log
        )
        yield uri
    finally:
        stop_process(proc)


def params_for(uri: str, artifacts: Path) -> Params:
    return Params(
        mlflow=MlflowParams(tracking_uri=uri, artifact_location=str(artifacts), experiment="reg-test")
    )


@pytest.fixture(scope="module", params=["sqlite", "server"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Params:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if request.param == "sqlite":
        root = tmp_path_factory.mktemp("sqlite-registry")
        return params_for(f"sqlite:///{root / 'mlflow.db'}", root / "mlartifacts")
    uri = request.getfixturevalue("mlflow_server")
    return params_for(uri, Path("unused"))


def log_tiny_model(params: Params, seed: int) -> tuple[str, str]:
    """Log a small classifier into a new run; returns (run_id, model_uri)."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = np.where(X["a"] > 0.3, 1, np.where(X["a"] < -0.3, -1, 0))
    model = LogisticRegression().fit(X, y)
    registry.connect(params)
    experiment = registry.ensure_experiment(params)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2), pip_requirements=[])
    return run.info.run_id, info.model_uri


def test_register_alias_and_read_back(backend: Params) -> None:
    client = registry.connect(backend)
    before = registry.snapshot(NAME, client=client)
    run_id, uri = log_tiny_model(backend, seed=1)
    version = registry.register_model(
        uri, NAME, run_id=run_id, model_id=uri.split("/")[-1], tags={"sharpe": 2.5}
    )
    assert version == str(int(before["versions"][-1]) + 1 if before["versions"] else 1)
    registry.set_alias(NAME, registry.STAGING, version)
    assert registry.version_for_alias(NAME, registry.STAGING) == version
    got = registry.get_version(NAME, version)
    assert got.run_id == run_id and got.tags["sharpe"] == "2.5"
    assert registry.STAGING in got.aliases
    assert got.current_stage in (None, "None")  # no deprecated stage was ever set
    registry.set_version_tags(NAME, version, {"integration_passed": True})
    assert registry.get_version(NAME, version).tags["integration_passed"] == "True"
    assert registry.model_uri(NAME, version) == f"models:/{NAME}/{version}"

    # the alias resolves for a consumer that loads by URI (what the model server does)
    import mlflow

    model = mlflow.pyfunc.load_model(registry.alias_uri(NAME, registry.STAGING))
    pred = model.predict(pd.DataFrame({"a": [2.0, -2.0], "b": [0.0, 0.0], "c": [0.0, 0.0]}))
    assert list(np.asarray(pred)) == [1, -1]


def test_alias_moves_and_versions_are_immutable(backend: Params) -> None:
    client = registry.connect(backend)
    run_a, uri_a = log_tiny_model(backend, seed=2)
    run_b, uri_b = log_tiny_model(backend, seed=3)
    first = registry.register_model(uri_a, NAME, run_id=run_a, model_id=uri_a.split("/")[-1])
    second = registry.register_model(uri_b, NAME, run_id=run_b, model_id=uri_b.split("/")[-1])
    assert int(second) == int(first) + 1
    registry.set_alias(NAME, registry.CHAMPION, first)
    registry.set_alias(NAME, registry.CHAMPION, second)
    assert registry.aliases(NAME, client=client)[registry.CHAMPION] == second
    assert registry.get_version(NAME, first).run_id == run_a  # the old version is untouched
    snap = registry.snapshot(NAME, client=client)
    assert first in snap["versions"] and second in snap["versions"]


def test_missing_model_or_alias_is_none_not_an_error(backend: Params) -> None:
    registry.connect(backend)
    assert registry.version_for_alias("no-such-model", registry.STAGING) is None
    assert registry.snapshot("no-such-model") == {"versions": [], "aliases": {}}
    with pytest.raises(RegistryError, match="no-such-model"):
        registry.get_version("no-such-model", "1")


def test_unreachable_server_fails_fast_naming_the_uri() -> None:
    params = params_for("http://127.0.0.1:1", Path("unused"))
    with pytest.raises(RegistryError, match=r"http://127\.0\.0\.1:1 is unreachable"):
        registry.connect(params)


def test_environment_tracking_uri_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert registry.tracking_uri(Params()) == "http://127.0.0.1:1"
    with pytest.raises(RegistryError, match=r"127\.0\.0\.1:1"):
        registry.connect(Params())
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert registry.tracking_uri(Params()) == "sqlite:///mlflow.db"


def test_local_artifact_location_is_absolute(tmp_path: Path) -> None:
    params = params_for(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "art")
    assert registry.artifact_location(params) == (tmp_path / "art").resolve().as_uri()
    assert registry.artifact_location(params_for("http://127.0.0.1:5000", Path("art"))) is None
