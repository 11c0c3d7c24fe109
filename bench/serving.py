"""Serving benchmark: one `autotrader serve` process (uvicorn, 1 worker) under a steady open-loop load.

    .venv/bin/python bench/serving.py                 # headline: 200 req/s for 60 s, 3 runs, + batches
    .venv/bin/python bench/serving.py --quick         # 10 s runs, for a smoke test
    .venv/bin/python bench/serving.py --model models/model
    .venv/bin/python bench/serving.py --peer          # vs `mlflow models serve`: bench/serving_peer.py

The model: ``--model`` (an MLflow model folder such as models/model) or, by default, a quick
HistGradientBoosting classifier trained here on the project's own features (``autotrader.features``)
of 10 days of the simulated market (BTCUSDT + EUR_USD, 5-minute bars). Requests carry real feature
rows of that market (single-row /predict, instruments interleaved in time order).

The load runs in a SEPARATE process (multiprocessing, spawn): an asyncio client on raw keep-alive
HTTP/1.1 connections, open loop — request i is sent at t0 + i/rate whatever happened to earlier
ones, so a slow server shows as latency, not as a lower request rate. Latency is measured from the
moment a request is written to the moment its whole response is read ("latency"), and also from the
moment it was scheduled ("from schedule", which adds the client's own lag: coordinated omission).
Times come from ``time.perf_counter`` (uvloop's ``loop.time()`` only has millisecond resolution).

Batch throughput: /predict with 256 and 1024 instances, back to back, predictions per second.
Every figure is the median over ``--runs`` runs. Results: bench/results/serving.json + a rich table.
Targets (this 2-core machine): p99 ≤ 10 ms at 200 req/s, zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "serving.json"
BARS_RESULTS = REPO / "bench" / "results" / "serving_bars.json"
BIN = Path(sys.executable).parent
TARGET_P99_MS = 10.0


# ------------------------------------------------------------------------------------------- model


def simulated_rows(days: int = 10) -> Any:
    import pandas as pd

    from autotrader.features import compute_features
    from autotrader.params import FeatureParams, Instrument
    from autotrader.sources.sim import SimulatedMarket

    end = pd.Timestamp("2026-11-20", tz="UTC")
    market = SimulatedMarket(seed=7, signal_strength=1.0)
    frames = [
        compute_features(
            market.fetch(inst, end - pd.Timedelta(days=days), end, pd.Timedelta(minutes=5)), FeatureParams()
        )
        for inst in (
            Instrument(broker="binance", symbol="BTCUSDT"),
            Instrument(broker="oanda", symbol="EUR_USD"),
        )
    ]
    return pd.concat(frames, ignore_index=True)


def train_quick_model(frame: Any, dest: Path) -> Path:
    """A small but real signal model: HGB on the feature set, label = sign of the 12-bar forward return."""
    import importlib.metadata

    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from autotrader.schema import BAR_COLUMNS

    columns = [c for c in frame.columns if c not in BAR_COLUMNS]
    fwd = frame.groupby(["broker", "symbol"])["close"].transform(lambda s: np.log(s.shift(-12) / s))
    data = frame.assign(_fwd=fwd).dropna(subset=["_fwd"])
    label = np.where(data["_fwd"] > 5e-4, 1, np.where(data["_fwd"] < -5e-4, -1, 0))
    X = data[columns].astype("float64")
    with threadpool_limits(1):
        model = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=31, random_state=0).fit(X, label)
    pins = [
        f"{p}=={importlib.metadata.version(p)}"
        for p in ("mlflow", "scikit-learn", "numpy", "pandas", "skops")
    ]
    mlflow.sklearn.save_model(
        model,
        str(dest),
        signature=infer_signature(X.head(20), model.predict(X.head(20))),
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
        pip_requirements=pins,
    )
    return dest


def payloads(frame: Any, columns: list[str]) -> list[bytes]:
    """One request body per feature row, rows in time order across instruments."""
    from autotrader.serving.deploy_checks import instances_from_frame

    frame = frame.sort_values(["timestamp", "broker", "symbol"], kind="stable")
    return [json.dumps({"instances": [i]}).encode() for i in instances_from_frame(frame, columns)]


# ------------------------------------------------------------------------------------------ server


class Server:
    """``autotrader serve`` on a free port (``autotrader.processes``: the helper every caller uses)."""

    def __init__(self, model_uri: str) -> None:
        from autotrader.processes import ServerProcess, free_port

        self.port = free_port()
        env = dict(os.environ, MODEL_URI=model_uri, MODEL_VERSION="bench")
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = ServerProcess(
            [str(BIN / "autotrader"), "serve", "--port", str(self.port), "--log-level", "warning"],
            env=env,
            url=f"http://127.0.0.1:{self.port}",
        ).start()
        assert self.process.proc is not None
        self.proc = self.process.proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        import httpx

        from autotrader.processes import http_ok

        self.process.wait_until(http_ok(f"{self.url}/readyz"), timeout)
        return dict(httpx.get(f"{self.url}/readyz", timeout=2).json())

    def stop(self) -> None:
        self.process.stop(grace=15)


# -------------------------------------------------------------------------------------- load (child)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class _Closed(Exception):
    """The server closed an idle keep-alive connection before our request reached it."""


async def _request(conn: _Conn, head: bytes, body: bytes) -> int:
    conn.writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await conn.reader.readline()
    if not status_line:
        raise _Closed
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while True:
        line = await conn.reader.readline()
        if line in (b"\r\n", b""):
            break
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    await conn.reader.readexactly(length)
    return status


async def _open_loop(
    port: int, bodies: list[bytes], rate: float, duration: float, path: str = "/predict"
) -> dict[str, Any]:
    head = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: keep-alive\r\nContent-Length: "
    )
    idle: list[_Conn] = []
    n = int(rate * duration)
    latency = np.full(n, np.nan)
    from_schedule = np.full(n, np.nan)
    statuses: dict[str, int] = {}
    errors: list[str] = []

    async def fire(i: int, scheduled: float) -> None:
        reused = bool(idle)
        conn = idle.pop() if reused else _Conn(*await asyncio.open_connection("127.0.0.1", port))
        sent = time.perf_counter()
        try:
            try:
                status = await _request(conn, head, bodies[i % len(bodies)])
            # uvloop raises RuntimeError ("the handler is closed") writing to a connection the
            # server has already closed: the same stale connection as _Closed
            except (_Closed, ConnectionResetError, RuntimeError):
                if not reused:
                    raise
                # A stale keep-alive connection (the server's idle timeout): reconnect once, as
                # every HTTP client does; the request never reached the server.
                conn.writer.close()
                conn = _Conn(*await asyncio.open_connection("127.0.0.1", port))
                sent = time.perf_counter()
                status = await _request(conn, head, bodies[i % len(bodies)])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError, RuntimeError, _Closed) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            conn.writer.close()
            return
        done = time.perf_counter()
        latency[i] = done - sent
        from_schedule[i] = done - scheduled
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        idle.append(conn)

    tasks = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(i, scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    elapsed = time.perf_counter() - t0
    for conn in idle:
        conn.writer.close()
    ok = ~np.isnan(latency)
    return {
        "requests": n,
        "completed": int(ok.sum()),
        "elapsed_s": elapsed,
        "achieved_rps": n / elapsed,
        "statuses": statuses,
        "errors": len(errors) + sum(v for k, v in statuses.items() if k != "200"),
        "error_samples": errors[:5],
        "latency_ms": latency[ok] * 1000,
        "from_schedule_ms": from_schedule[ok] * 1000,
    }


def _load_child(port: int, bodies: list[bytes], rate: float, duration: float, out: Any, path: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_open_loop(port, bodies, rate, duration, path))
    result["latency_ms"] = result["latency_ms"].tolist()
    result["from_schedule_ms"] = result["from_schedule_ms"].tolist()
    out.put(result)


def run_load(
    port: int, bodies: list[bytes], rate: float, duration: float, path: str = "/predict"
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_child, args=(port, bodies, rate, duration, queue, path))
    proc.start()
    result = queue.get(timeout=duration + 120)
    proc.join(timeout=30)
    lat = np.array(result["latency_ms"])
    sched = np.array(result["from_schedule_ms"])
    summary = {k: v for k, v in result.items() if k not in ("latency_ms", "from_schedule_ms")}
    for name, arr in (("latency_ms", lat), ("from_schedule_ms", sched)):
        summary[name] = {
            q: round(float(np.percentile(arr, p)), 3) if len(arr) else None
            for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        }
    return summary


# ------------------------------------------------------------------------------------------- batch


def batch_throughput(url: str, instances: list[dict[str, Any]], size: int, seconds: float) -> dict[str, Any]:
    import httpx

    body = json.dumps({"instances": (instances * (size // len(instances) + 1))[:size]}).encode()
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}/predict", content=body, headers=headers)  # warm
        n, errors, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds or n < 3:
            response = client.post(f"{url}/predict", content=body, headers=headers)
            errors += response.status_code != 200
            n += 1
        elapsed = time.perf_counter() - started
    return {
        "batch": size,
        "requests": n,
        "errors": errors,
        "predictions_per_s": round(n * size / elapsed, 1),
        "ms_per_batch": round(elapsed / n * 1000, 2),
    }


def server_histogram_share(url: str, le: str = "0.01") -> float | None:
    """Share of /predict requests the server itself timed at ≤ ``le`` seconds (its own histogram)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    count = bucket = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("route") != "/predict":
                continue
            if s.name == "autotrader_request_duration_seconds_count":
                count = s.value
            if s.name == "autotrader_request_duration_seconds_bucket" and float(s.labels["le"]) == float(le):
                bucket = s.value
    return None if not count or bucket is None else round(bucket / count, 5)


# ------------------------------------------------------------------------------------ CPU breakdown


def cpu_breakdown(model_uri: str, bodies: list[bytes], n: int = 400) -> dict[str, float]:
    """CPU milliseconds per single-row request, in-process, by layer (robust to a busy machine).

    ``time.process_time`` counts CPU, not waiting, so these figures hold even when other processes
    share the cores — unlike the latencies above, which include the wait for a core.
    """
    from autotrader.serving import ServerConfig, create_app
    from autotrader.serving.model import limit_threads
    from autotrader.serving.schemas import parse_request

    app = create_app(ServerConfig(model_uri=model_uri, model_version="bench"))
    loader = app.state.loader
    loader.start()
    loader.wait(300)
    model = loader.state.model
    if model is None:
        raise SystemExit(f"model did not load in-process: {loader.state.reason}")
    limit_threads(1)
    sample = bodies[-n:]
    inputs = [model.frame(parse_request(b)) for b in sample]

    def per_call(fn: Any) -> float:
        start = time.process_time()
        for i in range(n):
            fn(i % len(sample))
        return round((time.process_time() - start) / n * 1000, 3)

    async def asgi(i: int) -> None:
        body = sample[i]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(_message: dict[str, Any]) -> None:
            return None

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        await app(scope, receive, send)

    async def asgi_all() -> float:
        start = time.process_time()
        for i in range(n):
            await asgi(i % len(sample))
        return round((time.process_time() - start) / n * 1000, 3)

    out = {
        "model_predict_ms": per_call(lambda i: model.predict(inputs[i])),
        "validate_and_matrix_ms": per_call(lambda i: model.frame(parse_request(sample[i]))),
        "predict_service_ms": per_call(lambda i: app.state.service.handle(sample[i])),
        "asgi_app_ms": asyncio.run(asgi_all()),
    }
    app.state.service.executor.shutdown(wait=True)
    return out


# -------------------------------------------------------------------------------------------- main


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        node: Any = run
        for key in path:
            node = node[key]
        if node is not None:
            values.append(node)
    return round(statistics.median(values), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-seconds", type=float, default=5.0)
    parser.add_argument("--model", help="an MLflow model folder (default: train a quick one)")
    parser.add_argument("--quick", action="store_true", help="10 s runs")
    parser.add_argument("--out", default=None, help=f"default {RESULTS} ({BARS_RESULTS} with --bars)")
    parser.add_argument(
        "--bars",
        action="store_true",
        help="bars-in (/predict/bars, full warm-up window) vs vectors: bench/serving_bars.py",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="ours vs `mlflow models serve` on the same model, fixed rates + saturation: bench/serving_peer.py",
    )
    parser.add_argument(
        "--peer-rates", default="50,100,1000", help="--peer: fixed rates (req/s), comma-separated"
    )
    parser.add_argument("--connections", type=int, default=8, help="--peer: closed-loop connections")
    args = parser.parse_args(argv)
    if args.peer:
        from serving_peer import peer_main  # bench/ is on sys.path when run as a script

        return peer_main(args, argv)
    if args.quick:
        args.duration = 10.0
    if args.bars:
        from serving_bars import bars_main  # bench/ is on sys.path when run as a script

        return bars_main(args, argv)
    args.out = args.out or str(RESULTS)

    from rich.table import Table

    from autotrader.console import console, progress
    from autotrader.schema import BAR_COLUMNS

    load_start = os.getloadavg()
    console.print("[bold]serving bench[/]: preparing the model and request bodies")
    frame = simulated_rows()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model_uri = args.model or str(train_quick_model(frame, Path(tmp) / "model"))
        server = Server(model_uri)
        try:
            ready = server.wait_ready()
            columns = ready["features"] or [c for c in frame.columns if c not in BAR_COLUMNS]
            bodies = payloads(frame, columns)
            import psutil

            sproc = psutil.Process(server.proc.pid)
            runs: list[dict[str, Any]] = []
            with progress() as bar:
                task = bar.add_task(f"{args.rate:g} req/s × {args.duration:g} s", total=args.runs)
                for _ in range(args.runs):
                    sproc.cpu_percent(None)
                    cpu0 = sum(sproc.cpu_times()[:2])
                    result = run_load(server.port, bodies, args.rate, args.duration)
                    result["server_cpu_percent"] = round(sproc.cpu_percent(None), 1)
                    cpu_ms = (sum(sproc.cpu_times()[:2]) - cpu0) * 1000
                    result["server_cpu_ms_per_request"] = round(cpu_ms / max(result["completed"], 1), 3)
                    result["server_rss_mb"] = round(sproc.memory_info().rss / 2**20, 1)
                    runs.append(result)
                    bar.advance(task)
            server_share = server_histogram_share(server.url)  # single-row traffic only, before batches
            instances = [json.loads(b)["instances"][0] for b in bodies[-256:]]
            batches = []
            for size in (256, 1024):
                trials = [
                    batch_throughput(server.url, instances, size, args.batch_seconds)
                    for _ in range(args.runs)
                ]
                batches.append(
                    {
                        "batch": size,
                        "predictions_per_s": _median(trials, "predictions_per_s"),
                        "ms_per_batch": _median(trials, "ms_per_batch"),
                        "errors": sum(t["errors"] for t in trials),
                        "trials": trials,
                    }
                )
        finally:
            server.stop()
        console.print("CPU per request, in-process, by layer")
        cpu = cpu_breakdown(model_uri, bodies)

    headline = {
        "rate_target": args.rate,
        "duration_s": args.duration,
        "runs": args.runs,
        "achieved_rps": _median(runs, "achieved_rps"),
        "errors_total": sum(r["errors"] for r in runs),
        "p50_ms": _median(runs, "latency_ms", "p50"),
        "p95_ms": _median(runs, "latency_ms", "p95"),
        "p99_ms": _median(runs, "latency_ms", "p99"),
        "max_ms": _median(runs, "latency_ms", "max"),
        "p99_from_schedule_ms": _median(runs, "from_schedule_ms", "p99"),
        "server_cpu_percent": _median(runs, "server_cpu_percent"),
        "server_cpu_ms_per_request": _median(runs, "server_cpu_ms_per_request"),
        "server_rss_mb": _median(runs, "server_rss_mb"),
        "server_share_predict_le_10ms": server_share,
    }
    headline["meets_target"] = bool(
        headline["p99_ms"] is not None
        and headline["p99_ms"] <= TARGET_P99_MS
        and headline["errors_total"] == 0
    )
    result = {
        "benchmark": "serving",
        "command": "python " + " ".join(["bench/serving.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model
        or "quick HGB (100 iterations, 22 features) trained on 10 days of the simulated market",
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "target": {"p99_ms": TARGET_P99_MS, "errors": 0},
        "single_row": headline,
        "single_row_runs": runs,
        "batches": batches,
        "cpu_ms_per_request": cpu,
    }
    from autotrader.atomic import write_json

    write_json(args.out, result)

    table = Table(title=f"serving: {args.rate:g} req/s for {args.duration:g} s (median of {args.runs})")
    for col in ("metric", "value"):
        table.add_column(col)
    rows = [
        ("achieved rate (req/s)", headline["achieved_rps"]),
        ("errors", headline["errors_total"]),
        ("p50 latency (ms)", headline["p50_ms"]),
        ("p95 latency (ms)", headline["p95_ms"]),
        ("p99 latency (ms)", headline["p99_ms"]),
        ("p99 from schedule (ms)", headline["p99_from_schedule_ms"]),
        ("server CPU (%)", headline["server_cpu_percent"]),
        ("server CPU per request (ms)", headline["server_cpu_ms_per_request"]),
        ("server RSS (MB)", headline["server_rss_mb"]),
        ("server-side share ≤ 10 ms", headline["server_share_predict_le_10ms"]),
        *((f"batch {b['batch']}: predictions/s", b["predictions_per_s"]) for b in batches),
        *((f"batch {b['batch']}: ms per batch", b["ms_per_batch"]) for b in batches),
        *((f"CPU per request: {k.removesuffix('_ms')} (ms)", v) for k, v in cpu.items()),
        ("load average (start → end)", f"{load_start[0]:.2f} → {os.getloadavg()[0]:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    verdict = "[green]meets[/]" if headline["meets_target"] else "[red]misses[/]"
    console.print(f"{verdict} the target (p99 ≤ {TARGET_P99_MS:g} ms, zero errors); JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
