"""``autotrader.processes``: a real child server is started, found ready, stopped; a dying one is reported."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from autotrader.errors import DeployError
from autotrader.processes import ServerProcess, free_port, http_ok, poll_until


def test_a_real_http_server_is_ready_then_stopped(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    with ServerProcess(argv, log=tmp_path / "server.log", url=url) as server:
        server.wait_until(http_ok(f"{url}/"), 30)
        assert server.running
        assert httpx.get(f"{url}/", timeout=2).status_code == 200
    assert not server.running
    assert server.proc is not None and server.proc.returncode is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/", timeout=2)


def test_a_process_that_dies_is_reported_at_once_with_its_log() -> None:
    argv = [sys.executable, "-c", "import sys; print('cannot bind: boom'); sys.exit(3)"]
    with ServerProcess(argv, name="doomed") as server:
        result = server.poll_until(lambda: False, timeout=60)
        assert not result.ready
        assert result.seconds < 30  # it stopped waiting when the child exited, not at the timeout
        assert "exited with code 3" in result.reason
        assert "cannot bind: boom" in result.reason
        with pytest.raises(DeployError, match="doomed exited with code 3"):
            server.wait_until(lambda: False, 60)


def test_a_timeout_names_the_last_probe_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}/"  # nothing listens
    result = poll_until(http_ok(dead, timeout=0.5), timeout=0.5)
    assert not result.ready
    assert "not ready after" in result.reason and "ConnectError" in result.reason
