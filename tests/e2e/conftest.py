"""Fixtures of the cluster harness: built tools, one cluster and one Prometheus per test process, the registry.

The tools are built by ``make e2e-tools`` (``make test`` and ``make e2e`` run it first). A machine without Go
skips these tests with the reason; under CI (``CI=true``) a missing tool is a failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotrader.rehearsal.servers import PrometheusServer

from .cluster import REPO, Cluster, ToolsMissing, tools_dir


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI requires the cluster harness: run `make e2e-tools`)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def e2e_bin() -> Path:
    try:
        return tools_dir(build=False)
    except ToolsMissing as exc:
        _missing(str(exc))
    except RuntimeError:
        _missing("the cluster harness's programs are not built: run `make e2e-tools` (needs Go >= 1.24)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def report_dir(e2e_dir: Path) -> Path:
    """Where the scenarios write what they measured (``make e2e`` points it into build/e2e)."""
    folder = Path(os.environ.get("AUTOTRADER_E2E_REPORT_DIR") or e2e_dir / "report")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def tracking_uri(e2e_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.models", str(e2e_dir / "registry")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cluster(e2e_bin: Path, e2e_dir: Path) -> Iterator[Cluster]:
    cluster = Cluster(e2e_dir / "cluster", e2e_bin).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def prometheus(e2e_dir: Path) -> Iterator[PrometheusServer]:
    server = PrometheusServer(e2e_dir / "prometheus", scrape_interval_s=1.0).start()
    try:
        yield server
    finally:
        server.stop()
