"""``autotrader serve`` as a real process (uvicorn on a loopback port), as Kubernetes runs it.

A healthy model served by a real process is exercised end to end by the deploy integration tests
(tests/test_deploy_checks.py); here: the failure modes of the process itself.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.test_serving_support import (
    BIN,
    serve,
    server_env,
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
