"""Fault figures: what misbehaving clients, a missing registry and a trickling broker cost, measured.

    nice .venv/bin/python bench/serving_faults.py              # every figure, default settings
    nice .venv/bin/python bench/serving_faults.py --only disconnects,broker

Everything runs on loopback against a real ``autotrader serve`` process (uvicorn, 1 worker) with the
bench's quick HGB model (bench/serving.py), or a real ``JsonClient`` for the broker:

- ``disconnects``: 100 clients send the headers and half the body of a /predict, then hang up;
  reported: the server's ``autotrader_requests_total{route="/predict"}`` by status, and the number
  of traceback lines in its log.
- ``slow_senders``: 2,000 connections trickle their headers a byte a second; reported: how many
  were answered 408 (header deadline) or 503 (connection cap) or still held, and when.
- ``slow_body``: 20 connections send complete headers, then trickle the body; the 408 times.
- ``registry``: the model is ``models:/autotrader-signal/1`` on a tracking server that accepts and
  never answers ("stalls"), and on a port where nothing listens ("down"); reported: seconds until
  /readyz says ``failed``, and its reason.
- ``broker``: ``JsonClient`` against a broker that trickles its body; seconds until it gives up.

Server settings are the defaults unless ``--header-timeout`` and friends say otherwise. Run it with
``PYTHONPATH=<an older checkout>/src`` to measure an older server the same way (``--give-up`` bounds
each wait). JSON: bench/results/serving_faults.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import serving as bench_serving  # noqa: E402 - bench/serving.py: the model and request rows

from autotrader.processes import ServerProcess, free_port, http_ok  # noqa: E402
from tests.stalling import StallingServer, slow_client  # noqa: E402 - loopback stalling peers

RESULTS = REPO / "bench" / "results" / "serving_faults.json"
BIN = Path(sys.executable).parent
ALL = ("disconnects", "slow_senders", "slow_body", "registry", "broker")


@contextlib.contextmanager
def server(model_uri: str, env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    full = {**os.environ, "MODEL_URI": model_uri, **env}
    if "MLFLOW_TRACKING_URI" not in env:
        full.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "autotrader"), "serve", "--port", str(port), "--log-level", "warning"]
    with ServerProcess(argv, env=full, log=log, url=url) as process:
        process.wait_until(http_ok(f"{url}/healthz", timeout=1), 60)
        yield url


def _ready(url: str, give_up: float) -> dict[str, Any]:
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/readyz", timeout=5).json()
        if body.get("ready") or body.get("status") == "failed":
            return body
        time.sleep(0.1)
    return httpx.get(f"{url}/readyz", timeout=5).json()


def _predict_counts(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for s in family.samples:
            if s.name == "autotrader_requests_total" and s.labels["route"] == "/predict":
                out[s.labels["status"]] = out.get(s.labels["status"], 0) + s.value
    return out


def _head(length: int) -> bytes:
    return (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _outcome(data: bytes | None) -> str:
    if data is None:
        return "held"
    return data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def _times(results: list[tuple[bytes | None, float]], outcome: str) -> dict[str, float] | None:
    seconds = sorted(s for d, s in results if _outcome(d) == outcome)
    if not seconds:
        return None
    return {
        "min_s": round(seconds[0], 2),
        "median_s": round(seconds[len(seconds) // 2], 2),
        "max_s": round(seconds[-1], 2),
    }


def disconnects(model: str, body: bytes, tmp: Path, env: dict[str, str], give_up: float) -> dict[str, Any]:
    log = tmp / "disconnects.log"
    with server(model, env, log) as url:
        _ready(url, give_up)
        port = int(url.rsplit(":", 1)[1])
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(_head(len(body)) + body[: len(body) // 2])
                time.sleep(0.005)
        deadline = time.monotonic() + 30
        while sum(_predict_counts(url).values()) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        counts = _predict_counts(url)
    text = log.read_text(errors="replace")
    return {
        "requests_total_by_status": counts,
        "traceback_blocks": text.count("Traceback (most recent call last)"),
        "log_lines": len(text.splitlines()),
    }


def slow_senders(model: str, tmp: Path, env: dict[str, str], give_up: float, n: int = 2000) -> dict[str, Any]:
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200 + b"\r\n\r\n"

    async def flood(port: int) -> list[tuple[bytes | None, float]]:
        return await asyncio.gather(*(slow_client(port, payload, 1.0, give_up=give_up) for _ in range(n)))

    with server(model, env, tmp / "slow_senders.log") as url:
        _ready(url, give_up)
        results = asyncio.run(flood(int(url.rsplit(":", 1)[1])))
        healthy = httpx.get(f"{url}/healthz", timeout=5).status_code
    outcomes = [_outcome(d) for d, _ in results]
    return {
        "connections": n,
        "outcomes": {k: outcomes.count(k) for k in sorted(set(outcomes))},
        "408_times": _times(results, "408"),
        "503_times": _times(results, "503"),
        "healthz_after": healthy,
    }


def slow_body(model: str, body: bytes, tmp: Path, env: dict[str, str], give_up: float) -> dict[str, Any]:
    payload = _head(len(body)) + body

    async def trickle(port: int) -> list[tuple[bytes | None, float]]:
        return await asyncio.gather(
            *(
                slow_client(port, payload, 0.25, give_up=give_up, head=len(payload) - len(body))
                for _ in range(20)
            )
        )

    with server(model, env, tmp / "slow_body.log") as url:
        _ready(url, give_up)
        results = asyncio.run(trickle(int(url.rsplit(":", 1)[1])))
        counts = _predict_counts(url)
    outcomes = [_outcome(d) for d, _ in results]
    return {
        "outcomes": {k: outcomes.count(k) for k in sorted(set(outcomes))},
        "408_times": _times(results, "408"),
        "requests_total_by_status": counts,
    }


def registry(tmp: Path, env: dict[str, str], give_up: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("stalls", "down"):
        with contextlib.ExitStack() as stack:
            if kind == "stalls":
                tracking = stack.enter_context(
                    StallingServer(b"", interval=None, max_seconds=give_up + 30)
                ).url
            else:
                tracking = f"http://127.0.0.1:{free_port()}"
            run_env = {**env, "MLFLOW_TRACKING_URI": tracking}
            with server("models:/autotrader-signal/1", run_env, tmp / f"registry_{kind}.log") as url:
                started = time.monotonic()
                body = _ready(url, give_up)
                seconds = time.monotonic() - started
        out[kind] = {
            "status": body.get("status"),
            "seconds_to_failed": round(seconds, 1) if body.get("status") == "failed" else None,
            "gave_up_waiting_after_s": None if body.get("status") == "failed" else give_up,
            "reason": body.get("reason"),
        }
    return out


def broker(timeout_s: float, deadline_s: float | None, attempts: int) -> dict[str, Any]:
    import threading

    from autotrader.sources.http import JsonClient

    body = b"[" + b" " * 1_000_000 + b"]"
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with StallingServer(head, body, interval=0.05, max_seconds=600) as trickling:
        kwargs: dict[str, Any] = {"timeout_s": timeout_s, "max_attempts": attempts, "backoff_s": 0.001}
        if deadline_s is not None:
            kwargs["deadline_s"] = deadline_s
        client = JsonClient("binance", trickling.url, **kwargs)
        result: dict[str, Any] = {}

        def call() -> None:
            started = time.monotonic()
            try:
                client.get_json("/api/v3/klines", {}, symbol="BTCUSDT", parse=list)
            except Exception as exc:  # the point: which error, and when
                result["error"] = str(exc)
            result["seconds"] = round(time.monotonic() - started, 2)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(120)
    return {
        "timeout_s": timeout_s,
        "deadline_s": deadline_s,
        "attempts": attempts,
        "seconds": result.get("seconds"),
        "still_waiting_after_s": 120 if thread.is_alive() else None,
        "error": result.get("error"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--give-up", type=float, default=60.0, help="longest wait for any one outcome (s)")
    parser.add_argument("--broker-deadline", type=float, default=5.0, help="deadline_s for the broker run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="serving-faults-") as tmp_name:
        tmp = Path(tmp_name)
        model = body = None
        if set(only) & {"disconnects", "slow_senders", "slow_body"}:
            frame = bench_serving.simulated_rows(days=4)
            model = str(bench_serving.train_quick_model(frame, tmp / "model"))
            from autotrader.schema import BAR_COLUMNS

            columns = [c for c in frame.columns if c not in BAR_COLUMNS]
            body = bench_serving.payloads(frame, columns)[-1]
        env: dict[str, str] = {}
        if "disconnects" in only:
            results["disconnects"] = disconnects(model, body, tmp, env, args.give_up)
        if "slow_senders" in only:
            results["slow_senders"] = slow_senders(model, tmp, env, args.give_up)
        if "slow_body" in only:
            results["slow_body"] = slow_body(model, body, tmp, env, args.give_up)
        if "registry" in only:
            results["registry"] = registry(tmp, env, args.give_up)
        if "broker" in only:
            results["broker"] = broker(10.0, args.broker_deadline, 1)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
