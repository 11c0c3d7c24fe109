"""Start a server process, poll it until it is ready, stop it: the one helper every caller uses.

Why one module: deploy checks (``autotrader serve`` for the integration run), the rollout rehearsal
(model servers, Prometheus), the serving bench and the tests' MLflow/Postgres servers all need the same
three things, and each copy had drifted (one polled a dead process until its timeout, one lost the
log). Here a start sends the output to a file (a chatty child never blocks on a full pipe), a poll stops
as soon as the process has exited and quotes the end of its log, and a stop is SIGTERM, then SIGKILL
after a grace period. A foundation module (layer 0): it knows nothing of models or manifests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from autotrader.errors import DeployError

# ``autotrader …`` in a child of this very interpreter (no dependence on the venv's console script).
AUTOTRADER = (sys.executable, "-c", "import sys; from autotrader.cli import main; sys.exit(main())")


def free_port() -> int:
    """A loopback TCP port that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; a no-op for no process or one that has exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


@dataclass(frozen=True)
class Readiness:
    """How a poll ended: ``ready``, else why not (the process exited, or the last failed probe)."""

    ready: bool
    reason: str
    seconds: float


def _file_tail(log: Path | None, chars: int) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:]


def poll_until(
    predicate: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_tail: Callable[[], str] = lambda: "",
    interval: float = 0.1,
) -> Readiness:
    """Call ``predicate`` every ``interval`` s until it is true, ``proc`` exits, or ``timeout`` passes.

    A probe that raises (connection refused while the server binds) counts as "not yet"; its error
    becomes the reason when the time runs out, so a timeout still says what was last seen.
    """
    started = time.monotonic()
    reason = "no answer yet"
    while True:
        if proc is not None and proc.poll() is not None:
            return Readiness(
                False, f"exited with code {proc.returncode}:\n{log_tail()}", time.monotonic() - started
            )
        try:
            if predicate():
                return Readiness(True, "ready", time.monotonic() - started)
            reason = "not ready"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started >= timeout:
            return Readiness(False, f"not ready after {timeout:.0f}s ({reason})", time.monotonic() - started)
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """``poll_until``, or a DeployError naming ``what``, the reason and the log."""
    result = poll_until(predicate, timeout, proc, lambda: _file_tail(log, 3000))
    if not result.ready:
        where = f" (log: {log})" if log is not None else ""
        raise DeployError(f"{what} {result.reason}{where}")


class ServerProcess:
    """A child process whose output goes to ``log`` (a path) or to an anonymous temporary file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str = "server",
        url: str = "",
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.url = url  # where it answers, when it is a server (the caller chose the port)
        self.env = dict(env) if env is not None else None
        self.log = log
        self.cwd = cwd
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self) -> ServerProcess:
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.log.open("wb")
        else:
            self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=self._out, stderr=subprocess.STDOUT
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is not None:
            return _file_tail(self.log, chars)
        if self._out is None:
            return ""
        self._out.flush()
        self._out.seek(0)
        return self._out.read().decode(errors="replace")[-chars:]

    def poll_until(self, predicate: Callable[[], bool], timeout: float) -> Readiness:
        return poll_until(predicate, timeout, self.proc, self.log_tail)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str | None = None) -> None:
        """Until ``predicate``; a DeployError with the log's tail if the process exits or time runs out."""
        result = self.poll_until(predicate, timeout)
        if not result.ready:
            where = f" (log: {self.log})" if self.log is not None else ""
            raise DeployError(f"{what or self.name} {result.reason}{where}")

    def stop(self, grace: float = 10.0) -> None:
        stop_process(self.proc, grace)
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def http_ok(url: str, timeout: float = 2.0) -> Callable[[], bool]:
    """A probe: does GET ``url`` answer 200? (httpx is imported when the probe first runs.)"""

    def probe() -> bool:
        import httpx

        return httpx.get(url, timeout=timeout).status_code == 200

    return probe


__all__ = [
    "AUTOTRADER",
    "Readiness",
    "ServerProcess",
    "free_port",
    "http_ok",
    "poll_until",
    "stop_process",
    "wait_until",
]
