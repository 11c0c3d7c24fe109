"""``autotrader serve`` as a real process (uvicorn on a loopback port), as Kubernetes runs it.

A healthy model served by a real process is exercised end to end by the deploy integration tests
(tests/test_deploy_checks.py); here: the failure modes of the process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stalling import StallingServer, slow_client
from tests.test_serving_support import (
    BIN,
    feature_columns,
    free_port,
    instance,
    serve,
    server_env,
    simulated_features,
    train_model,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving-server")]


def test_model_that_fails_to_load_leaves_the_process_up_and_not_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {}\n")  # a model folder with no loadable flavour
    with serve(str(broken)) as (url, proc):
        deadline = time.monotonic() + 60
        body = httpx.get(f"{url}/readyz").json()
        while body.get("status") != "failed" and time.monotonic() < deadline:
            time.sleep(0.2)
            body = httpx.get(f"{url}/readyz").json()
        assert body["status"] == "failed" and body["ready"] is False
        assert str(broken) in body["reason"]
        assert httpx.get(f"{url}/readyz").status_code == 503
        time.sleep(0.5)
        assert proc.poll() is None, "the process must stay up"
        assert httpx.get(f"{url}/healthz").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'autotrader_model_ready{model_version="local"} 0.0' in metrics


def test_serve_without_model_uri_is_a_config_error() -> None:
    env = server_env()
    env.pop("MODEL_URI", None)
    proc = subprocess.run(
        [str(BIN / "autotrader"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "MODEL_URI" in proc.stderr


# ------------------------------------------------------------------ misbehaving clients on real sockets


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model(tmp_path_factory.mktemp("model") / "model", simulated_features(days=4))


@pytest.fixture(scope="module")
def good_body() -> bytes:
    frame = simulated_features(days=2)
    cols = feature_columns(frame)
    return json.dumps({"instances": [instance(frame.dropna(subset=cols).iloc[-1], cols)]}).encode()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _head(length: int, path: str = "/predict") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _requests(url: str, route: str = "/predict") -> dict[str, float]:
    """``autotrader_requests_total`` of one route by status, parsed with prometheus_client's parser."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for s in family.samples:
            if s.name == "autotrader_requests_total" and s.labels["route"] == route:
                out[s.labels["status"]] = out.get(s.labels["status"], 0) + s.value
    return out


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _wait_for(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_clients_disconnecting_mid_body_are_499_not_server_errors(
    model_dir: Path, good_body: bytes, tmp_path: Path
) -> None:
    """100 clients send the headers and half the body, then hang up: 100 × 499, no 5xx, no traceback."""
    log = tmp_path / "server.log"
    with serve(str(model_dir), log_path=log) as (url, _proc):
        assert wait_ready(url).status_code == 200
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as sock:
                sock.sendall(_head(len(good_body)) + good_body[: len(good_body) // 2])
                time.sleep(0.005)  # the server has started reading the body when the client leaves
        assert _wait_for(lambda: sum(_requests(url).values()) >= 100), _requests(url)
        counts = _requests(url)
        assert counts == {"499": 100}, counts
        # The server is fine, and a complete request is a plain 200.
        response = httpx.post(f"{url}/predict", content=good_body, timeout=10)
        assert response.status_code == 200, response.text
        assert _requests(url) == {"499": 100, "200": 1}
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


def _outcome(data: bytes | None) -> str:
    if data is None:
        return "held"
    return data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def _enough_file_descriptors(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``wanted`` (within the hard limit), or skip saying why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_two_thousand_slow_senders_are_cut_off(model_dir: Path) -> None:
    """2,000 loopback connections trickle their headers a byte a second: the cap answers 503 at once,
    the header deadline answers 408; none is held, and the server still answers afterwards."""
    header_timeout, cap, n = 2.0, 500, 2000
    _enough_file_descriptors(n + 512)  # this process holds n client sockets; the server inherits it
    env = {"REQUEST_HEADER_TIMEOUT_S": str(header_timeout), "MAX_CONNECTIONS": str(cap)}
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200 + b"\r\n\r\n"

    async def flood(port: int) -> list[tuple[bytes | None, float]]:
        return await asyncio.gather(
            *(slow_client(port, payload, 1.0, give_up=header_timeout + 20) for _ in range(n))
        )

    with serve(str(model_dir), env=env) as (url, proc):
        assert wait_ready(url).status_code == 200
        results = asyncio.run(flood(_port(url)))
        outcomes = [_outcome(d) for d, _ in results]
        tally = {k: outcomes.count(k) for k in sorted(set(outcomes))}
        assert tally.get("held", 0) == 0, tally
        assert set(tally) <= {"408", "503"}, tally
        assert tally.get("408", 0) >= 1 and tally.get("503", 0) >= 1, tally
        cut = [s for (d, s), o in zip(results, outcomes, strict=True) if o == "408"]
        assert min(cut) >= header_timeout * 0.9  # cut by the deadline, not by accident
        assert proc.poll() is None
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert _metric(url, "autotrader_connections_refused_total", reason="header_timeout") == tally["408"]
        assert _metric(url, "autotrader_connections_refused_total", reason="connection_limit") == tally["503"]


def test_a_body_trickled_slower_than_its_deadline_is_a_counted_408(model_dir: Path, good_body: bytes) -> None:
    env = {"REQUEST_BODY_TIMEOUT_S": "1.5", "REQUEST_HEADER_TIMEOUT_S": "30"}

    async def trickle(port: int) -> list[tuple[bytes | None, float]]:
        payload = _head(len(good_body)) + good_body
        # headers at once, then the body a byte every 0.25 s (it would take minutes)
        return await asyncio.gather(
            *(
                slow_client(port, payload, 0.25, give_up=20, head=len(payload) - len(good_body))
                for _ in range(20)
            )
        )

    with serve(str(model_dir), env=env) as (url, _proc):
        assert wait_ready(url).status_code == 200
        results = asyncio.run(trickle(_port(url)))
        assert [_outcome(d) for d, _ in results] == ["408"] * 20
        assert all(s >= 1.5 for _, s in results)
        assert _requests(url) == {"408": 20}
        assert httpx.post(f"{url}/predict", content=good_body, timeout=10).status_code == 200


# ------------------------------------------------------------------------ a registry that is not there


@pytest.mark.parametrize("registry", ["stalls", "down"])
def test_a_registry_that_stalls_or_is_down_fails_the_load_in_bounded_time(registry: str) -> None:
    """Before: MLflow's own retries (7, exponential) and 120 s reads kept the server "loading" for
    minutes with no reason given. Now every registry call has MODEL_LOAD_TIMEOUT_S, the server's
    own attempts retry, and /readyz says why it is not ready while it tries and after it gives up."""
    with contextlib.ExitStack() as stack:
        if registry == "stalls":
            stalled = stack.enter_context(StallingServer(b"", interval=None))  # accepts, never answers
            tracking = stalled.url
        else:
            tracking = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
        env = {
            "MLFLOW_TRACKING_URI": tracking,
            "MODEL_LOAD_ATTEMPTS": "2",
            "MODEL_LOAD_BACKOFF_S": "0.2",
            "MODEL_LOAD_TIMEOUT_S": "1",
        }
        with serve("models:/autotrader-signal/1", env=env) as (url, proc):
            first = httpx.get(f"{url}/readyz", timeout=5)
            assert first.status_code == 503 and "elapsed_s" in first.json()
            assert _wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).json()["status"] == "failed", 90)
            body = httpx.get(f"{url}/readyz", timeout=5).json()
            assert body["ready"] is False
            assert "models:/autotrader-signal/1" in body["reason"]
            assert "gave up after 2 attempt(s)" in body["reason"], body["reason"]
            if registry == "stalls":
                assert "timed out" in body["reason"].lower() or "timeout" in body["reason"].lower(), body
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            assert proc.poll() is None


def test_serve_options_override_the_environment(model_dir: Path) -> None:
    """``--header-timeout`` wins over REQUEST_HEADER_TIMEOUT_S; a bad value is refused at the command line."""
    env = {"REQUEST_HEADER_TIMEOUT_S": "300"}
    with serve(str(model_dir), env=env, args=("--header-timeout", "1", "--max-connections", "50")) as (
        url,
        _p,
    ):
        data, seconds = asyncio.run(
            slow_client(_port(url), b"GET /healthz HTTP/1.1\r\n" + b"x" * 100, 0.5, 30)
        )
        assert _outcome(data) == "408" and seconds >= 1.0
    proc = subprocess.run(
        [str(BIN / "autotrader"), "serve", "--header-timeout", "0"],
        env=server_env({"MODEL_URI": str(model_dir)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--header-timeout" in proc.stderr and "must be > 0" in proc.stderr
