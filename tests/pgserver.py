"""A real PostgreSQL and the team's MLflow tracking server on loopback, for tests.

Import the fixtures you use explicitly in a test module (as with ``tests/s3server.py``)::

    from tests.pgserver import postgres_fixture  # noqa: F401

``postgres`` (module scope) makes a throw-away cluster with Debian's binaries
(``/usr/lib/postgresql/<v>/bin``): ``initdb`` with a password (scram), ``pg_ctl start`` on 127.0.0.1 and a
free port, one database. PostgreSQL refuses to run as root, so as root the cluster belongs to the
``postgres`` user the Debian package creates (``subprocess``'s ``user=``), in a ``/tmp`` folder that user
can enter. Without the binaries (or the Python driver the server needs) the tests skip with the
install step, except under CI (``CI=true``), where that is a failure: CI must test the real thing.

``MlflowTrackingServer`` runs the command line of ``deploy/mlflow/deployment.yaml`` (init container,
then server), with the ``$(VAR)`` references expanded as the kubelet would, from local values. Starting
and stopping go through ``autotrader.processes`` (``wait_until``/``stop_process``), the helper every server in
the tests uses.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotrader.processes import free_port, stop_process, wait_until

from .conftest import BIN, REPO, tool_env

DEPLOYMENT = REPO / "deploy" / "mlflow" / "deployment.yaml"
INSTALL_HINT = "install PostgreSQL (Debian: apt-get install -y postgresql; .ci/run does)"
DRIVER_HINT = "the MLflow server needs a Postgres driver: add psycopg[binary] to requirements.lock (SQLAlchemy 2.1 maps postgresql:// to psycopg 3)"


def missing(reason: str) -> None:
    """Skip locally, fail under CI: there the real database is part of what is tested."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with ``initdb`` and ``pg_ctl``, else ``pg_config``'s."""
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def driver_available() -> bool:
    """Whether the Python that runs ``mlflow server`` (this one, with the subprocess environment) has psycopg (3)."""
    proc = subprocess.run(
        [str(BIN / "python"), "-c", "import psycopg"],
        env=tool_env(),
        capture_output=True,
    )
    return proc.returncode == 0


@dataclass
class Postgres:
    """A running throw-away cluster: one database, one password-protected role, TCP on loopback."""

    bin: Path
    root: Path
    port: int
    user: str = "autotrader"
    password: str = ""
    database: str = "mlflow"
    run_as: str | None = None  # the OS user the server runs as (``postgres`` when we are root)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def uri(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "PGPASSWORD": self.password}
        proc = subprocess.run(
            list(args), env=env, capture_output=True, text=True, user=self.run_as, cwd=self.root, timeout=120
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} exited {proc.returncode}: {proc.stderr[-2000:]}\n{log}")
        return proc

    def start(self) -> Postgres:
        self.password = secrets.token_hex(12)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "start",
        )
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            self.database,
        )
        return self

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                user=self.run_as,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster for the module; skipped (failed under CI) without the binaries."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        missing(f"no PostgreSQL binaries (initdb, pg_ctl): {INSTALL_HINT}")
    if not driver_available():
        missing(f"psycopg (3) is not importable: {DRIVER_HINT}")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing(
                "running as root and there is no 'postgres' user to own the cluster (Debian's package makes it)"
            )
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="autotrader-pg-"))  # /tmp: the postgres user can enter it
    server = Postgres(bin=pg_bin, root=root, port=free_port(), run_as=run_as)
    try:
        yield server.start()
    finally:
        server.stop()


# --------------------------------------------------------------------------- the tracking server

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def deployment_containers() -> dict[str, dict[str, Any]]:
    """The Deployment's containers and init containers by name, as written in the manifest."""
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def expand(container: dict[str, Any], values: dict[str, str]) -> list[str]:
    """``command + args`` with ``$(VAR)`` replaced as the kubelet does; every VAR must be a declared env var."""
    declared = {e["name"] for e in container.get("env", [])}
    argv = [*container["command"], *container.get("args", [])]
    out = []
    for arg in argv:
        for name in _REF.findall(arg):
            assert name in declared, f"{container['name']}: $({name}) is not one of its env vars"
            assert name in values, f"no local value for $({name})"
        out.append(_REF.sub(lambda m: values[m.group(1)], arg))
    return out


class MlflowTrackingServer:
    """The manifest's ``mlflow db upgrade`` then ``mlflow server`` on 127.0.0.1:<free port>."""

    def __init__(self, postgres: Postgres, artifacts_destination: str, s3_env: dict[str, str], workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "mlflow-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.values = {
            "HOME": str(workdir),
            "MLFLOW_DB_USER": postgres.user,
            "MLFLOW_DB_PASSWORD": postgres.password,
            "MLFLOW_DB_HOST": "127.0.0.1",
            "MLFLOW_DB_PORT": str(postgres.port),
            "MLFLOW_DB_NAME": postgres.database,
            "MLFLOW_DB_SSLMODE": "disable",  # loopback; RDS gets "require" from the ConfigMap
            "MLFLOW_ARTIFACTS_DESTINATION": artifacts_destination,
            "MLFLOW_ALLOWED_HOSTS": f"127.0.0.1:{self.port},localhost:{self.port}",
            "AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
            "MLFLOW_S3_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL_S3"],
        }
        self.env = tool_env({**s3_env, **self.values})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, name: str) -> list[str]:
        """The manifest's command line for container ``name``, bound to loopback and this port."""
        argv = expand(deployment_containers()[name], self.values)
        local = {"--host": "127.0.0.1", "--port": str(self.port), "--workers": "2"}
        return [
            f"{a.split('=', 1)[0]}={local[a.split('=', 1)[0]]}" if a.split("=", 1)[0] in local else a
            for a in argv
        ]

    def start(self, timeout: float = 180.0) -> MlflowTrackingServer:
        import httpx

        self.workdir.mkdir(parents=True, exist_ok=True)
        upgrade = subprocess.run(
            self.argv("db-upgrade"),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if upgrade.returncode != 0:
            raise RuntimeError(
                f"mlflow db upgrade failed:\n{upgrade.stdout[-2000:]}\n{upgrade.stderr[-3000:]}"
            )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv("server"), env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: httpx.get(f"{self.url}/health", timeout=2).status_code == 200,
            timeout,
            "mlflow server (postgres)",
            self.proc,
            self.log,
        )
        return self

    def stop(self) -> None:
        stop_process(self.proc)
