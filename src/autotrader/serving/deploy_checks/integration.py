"""``autotrader deploy integration``: does the server with this model behave?

It starts ``autotrader serve`` with the candidate on a free loopback port (``autotrader.processes``),
replays the last bars of the feature store through it
(one request per bar in time order, then the same bars in batches), and checks statuses, the response
schema, signals, the ``model_version`` label, latency, online-return bookkeeping (recomputed here
and compared with /metrics), and that malformed requests get 4xx while the server stays ready.
Each request contributes checks; the run passes when ≥ ``min_pass_rate`` of them pass and every
critical one does. With ``record`` the verdict is written to the registry version as the tags
``integration_passed`` and ``integration_pass_rate`` (production promotion requires "true").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotrader.atomic import write_json
from autotrader.console import progress
from autotrader.errors import DeployError
from autotrader.params import Params
from autotrader.processes import AUTOTRADER, ServerProcess, free_port, poll_until
from autotrader.schema import BAR_COLUMNS
from autotrader.serving.deploy_checks.candidate import Candidate, Check, resolve_candidate
from autotrader.serving.deploy_checks.inputs import instances_from_frame, replay_from_run, replay_slice
from autotrader.serving.deploy_checks.report import failure_message, summarize
from autotrader.serving.online import realised_return
from autotrader.serving.schemas import (
    LABEL_SIGNALS,
    MAX_BATCH,
    PredictResponse,
)


@dataclass
class RemoteServer:
    """A server that is already running (e.g. the staging preview Service): nothing to start or stop."""

    url: str
    proc: None = None

    def log_tail(self, chars: int = 3000) -> str:
        return ""


@contextlib.contextmanager
def running_server(
    model_uri: str, version: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """``autotrader serve`` with ``model_uri`` on a free loopback port (output to a temporary file)."""
    port = free_port()
    with ServerProcess(
        [*AUTOTRADER, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "MODEL_URI": model_uri, "MODEL_VERSION": version, **(env or {})},
        url=f"http://127.0.0.1:{port}",
    ) as server:
        yield server


def wait_until_ready(
    server: ServerProcess | RemoteServer, client: Any, timeout: float
) -> tuple[bool, dict[str, Any], float]:
    """Poll /readyz until 200, the process dies, or ``timeout``; returns (ready, last body, seconds).

    The last body's ``reason`` (e.g. why the model did not load) is kept when the server answered;
    otherwise the reason is why it never did (exit code and log, or the connection error).
    """
    last: dict[str, Any] | None = None

    def ready() -> bool:
        nonlocal last
        response = client.get(f"{server.url}/readyz", timeout=2.0)
        last = response.json()
        return bool(response.status_code == 200)

    result = poll_until(ready, timeout, server.proc, lambda: server.log_tail(800))
    exited = server.proc is not None and server.proc.poll() is not None
    if result.ready and last is not None:
        return True, last, result.seconds
    if last is None or exited:
        last = {"reason": f"server {result.reason}"}
    return False, last, result.seconds


def malformed_requests(
    columns: Sequence[str], good: dict[str, Any], max_batch: int
) -> list[tuple[str, bytes, int]]:
    """(name, body, expected status) for the bad inputs every server must refuse without a 500."""
    first = columns[0]
    missing = {**good, "features": {c: v for c, v in good["features"].items() if c != first}}
    unknown = {**good, "features": {**good["features"], "not_a_feature": 0.0}}
    text_value = {**good, "features": {**good["features"], first: "0.1"}}
    naive = {**good, "timestamp": good["timestamp"].rstrip("Z")}
    broker = {**good, "broker": "nasdaq"}
    # Python's json writes (and reads) NaN/Infinity tokens; the server must refuse them.
    nan_close = {**good, "close": float("nan")}
    inf_feature = {**good, "features": {**good["features"], first: float("inf")}}
    return [
        ("not JSON", b"this is not json", 422),
        ("NaN token", json.dumps({"instances": [nan_close]}).encode(), 422),
        ("Infinity feature", json.dumps({"instances": [inf_feature]}).encode(), 422),
        ("missing feature", json.dumps({"instances": [missing]}).encode(), 422),
        ("unknown feature", json.dumps({"instances": [unknown]}).encode(), 422),
        ("string feature value", json.dumps({"instances": [text_value]}).encode(), 422),
        ("timestamp without zone", json.dumps({"instances": [naive]}).encode(), 422),
        ("unknown broker", json.dumps({"instances": [broker]}).encode(), 422),
        ("empty batch", b'{"instances": []}', 422),
        ("batch over the limit", json.dumps({"instances": [good] * (max_batch + 1)}).encode(), 413),
    ]


@dataclass
class _Tally:
    checks: list[Check] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, name: str, passed: bool, detail: str = "", critical: bool = False) -> bool:
        self.checks.append(Check(name, bool(passed), detail, critical))
        return bool(passed)


def _check_prediction_response(
    tally: _Tally, what: str, response: Any, sent: list[dict[str, Any]], label: str
) -> list[int] | None:
    # A 5xx on a valid replayed bar is the server or model failing, never noise: critical, so a model that
    # errors on one call in five cannot pass on the other checks' pass rate (the e2e staging scenario).
    if not tally.add(
        f"{what}: status 200",
        response.status_code == 200,
        f"got {response.status_code}",
        critical=response.status_code >= 500,
    ):
        return None
    try:
        parsed = PredictResponse.model_validate_json(response.content)
    except Exception as exc:  # pydantic ValidationError or bad JSON: the schema check fails either way
        tally.add(f"{what}: response schema", False, str(exc)[:300])
        return None
    tally.add(f"{what}: response schema", True)
    tally.add(
        f"{what}: model_version", parsed.model_version == label, f"{parsed.model_version!r} vs {label!r}"
    )
    preds = parsed.predictions
    echo = len(preds) == len(sent) and all(
        p.broker == s["broker"] and p.symbol == s["symbol"] and p.timestamp == s["timestamp"]
        for p, s in zip(preds, sent, strict=False)
    )
    tally.add(f"{what}: one prediction per instance, in order", echo)
    tally.add(
        f"{what}: signal in {{-1,0,1}} and label matches",
        all(LABEL_SIGNALS[p.label] == p.signal for p in preds),
    )
    return [p.signal for p in preds]


def _metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
    ]


def _sum(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def run_integration(
    params: Params,
    model_uri: str,
    *,
    record: bool = False,
    bars: int = 24,
    batch_size: int = 32,
    max_latency_ms: float = 200.0,
    min_pass_rate: float = 0.95,
    features_root: Path | None = None,
    report_path: Path | None = None,
    startup_timeout: float = 120.0,
    url: str | None = None,
) -> dict[str, Any]:
    """Start a server with the candidate (or use the one at ``url``), replay recorded bars, check;
    report and (optionally) record.

    With ``url`` (a running server, e.g. the staging preview) the replayed bars carry symbols with a
    per-run suffix, so the server's online state for real instruments is neither read nor changed,
    and every metric check compares the server's counters before and after the replay.
    """
    import httpx

    features_root = Path(features_root or params.paths.features)
    report_path = Path(report_path or Path(params.paths.reports) / "deploy" / "integration.json")
    if record and not model_uri.startswith("models:/"):
        raise DeployError(f"--record needs a registry model (models:/<name>/<version>), not {model_uri}")
    candidate = resolve_candidate(params, model_uri)
    if (features_root / "_metadata.json").is_file():
        replay = replay_slice(features_root, bars)
    else:
        replay = replay_from_run(candidate, bars)
    if url is not None:
        suffix = f".itest-{os.urandom(3).hex()}"
        replay = replay.assign(symbol=replay["symbol"].astype(str) + suffix)
    env = {"MODEL_LOAD_ATTEMPTS": "1", "OMP_NUM_THREADS": "1"}
    if candidate.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = candidate.tracking_uri
    tally = _Tally()
    expected_returns: list[float] = []
    started = time.perf_counter()
    server_log = ""
    target = (
        contextlib.nullcontext(RemoteServer(url.rstrip("/")))
        if url is not None
        else running_server(candidate.uri, candidate.label, env)
    )
    with target as server, httpx.Client() as client:
        ready, ready_body, ready_s = wait_until_ready(server, client, startup_timeout)
        tally.add(
            "server ready (/readyz 200)",
            ready,
            f"after {ready_s:.1f}s: {ready_body.get('reason', 'ok')}",
            True,
        )
        if ready:
            _exercise(
                server,
                client,
                tally,
                candidate,
                replay,
                ready_body,
                batch_size,
                max_latency_ms,
                expected_returns,
            )
        else:
            server_log = server.log_tail()
    checks = tally.checks
    critical_ok = all(c.passed for c in checks if c.critical)
    summary = summarize(checks)
    passed = critical_ok and summary["pass_rate"] >= min_pass_rate
    lat = np.array(tally.latencies_ms) if tally.latencies_ms else np.array([np.nan])
    report = {
        "kind": "deploy-integration",
        "model_uri": candidate.uri,
        "model_version": candidate.label,
        "server": url or "started by the run",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bars_replayed": len(replay),
        "instruments": sorted({f"{b}/{s}" for b, s in zip(replay["broker"], replay["symbol"], strict=True)}),
        "online_returns_expected": len(expected_returns),
        "latency_ms": {
            "p50": _round(np.nanpercentile(lat, 50)),
            "p95": _round(np.nanpercentile(lat, 95)),
            "p99": _round(np.nanpercentile(lat, 99)),
            "max": _round(np.nanmax(lat)),
            "threshold": max_latency_ms,
        },
        "min_pass_rate": min_pass_rate,
        "critical_passed": critical_ok,
        "seconds": round(time.perf_counter() - started, 2),
        **summary,
        "integration_passed": passed,
        "recorded": False,
    }
    if server_log:
        report["server_log_tail"] = server_log
    if record and candidate.name is not None and candidate.version is not None:
        from autotrader import registry

        registry.set_version_tags(
            candidate.name,
            candidate.version,
            {
                "integration_passed": "true" if passed else "false",
                "integration_pass_rate": f"{summary['pass_rate']:.4f}",
            },
        )
        report["recorded"] = True
    write_json(report_path, report)
    if not passed:
        why = (
            "a critical check failed"
            if not critical_ok
            else f"pass rate {summary['pass_rate']:.2%} < {min_pass_rate:.0%}"
        )
        raise DeployError(failure_message(f"integration tests of {candidate.uri} failed ({why})", checks))
    return report


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 3)


def _exercise(
    server: ServerProcess | RemoteServer,
    client: Any,
    tally: _Tally,
    candidate: Candidate,
    replay: pd.DataFrame,
    ready_body: dict[str, Any],
    batch_size: int,
    max_latency_ms: float,
    expected_returns: list[float],
) -> None:
    """The checks against a ready server (split out of run_integration to keep each part readable)."""
    url = server.url
    columns = ready_body.get("features")
    if columns is None:
        columns = [c for c in replay.columns if c not in BAR_COLUMNS]
    missing = [c for c in columns if c not in replay.columns]
    if not tally.add("replay has the model's features", not missing, f"missing: {', '.join(missing)}", True):
        return
    instances = instances_from_frame(replay, columns)
    before = _metrics_snapshot(client, url)
    # One request per bar, in time order: what a live client does.
    singles: list[int | None] = []
    last: dict[tuple[str, str], tuple[float, int]] = {}
    with progress() as bar:
        task = bar.add_task("integration: replaying bars", total=len(instances))
        for i, inst in enumerate(instances):
            t0 = time.perf_counter()
            response = client.post(f"{url}/predict", json={"instances": [inst]}, timeout=10.0)
            ms = (time.perf_counter() - t0) * 1000
            tally.latencies_ms.append(ms)
            tally.add(f"bar {i}: latency ≤ {max_latency_ms:g} ms", ms <= max_latency_ms, f"{ms:.1f} ms")
            signals = _check_prediction_response(tally, f"bar {i}", response, [inst], candidate.label)
            signal = signals[0] if signals else None
            singles.append(signal)
            key = (inst["broker"], inst["symbol"])
            if signal is not None:
                if key in last:
                    prev_close, prev_signal = last[key]
                    expected_returns.append(realised_return(prev_signal, prev_close, inst["close"]))
                last[key] = (inst["close"], signal)
            bar.advance(task)
    # The same bars again in batches: same answers, and no online return counted twice.
    for start in range(0, len(instances), batch_size):
        chunk = instances[start : start + batch_size]
        response = client.post(f"{url}/predict", json={"instances": chunk}, timeout=30.0)
        got = _check_prediction_response(tally, f"batch at {start}", response, chunk, candidate.label)
        if got is not None:
            want = singles[start : start + len(chunk)]
            tally.add(f"batch at {start}: same signals as one by one", got == want)
    # Bad input: 4xx with a reason, never 500, and the server stays ready.
    for name, body, status in malformed_requests(columns, instances[-1], MAX_BATCH):
        response = client.post(
            f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=30.0
        )
        reason = _reason(response)
        tally.add(
            f"malformed ({name}) → {status}",
            response.status_code == status,
            f"got {response.status_code}: {reason}",
            True,
        )
    tally.add("healthz 200 after bad input", client.get(f"{url}/healthz").status_code == 200, critical=True)
    tally.add("readyz 200 after bad input", client.get(f"{url}/readyz").status_code == 200, critical=True)
    _check_metrics(client, url, tally, candidate, len(instances), expected_returns, before)


def _reason(response: Any) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]


def _metrics_snapshot(client: Any, url: str) -> list[tuple[str, dict[str, str], float]]:
    """The server's samples now (empty if /metrics does not answer: the later check reports that)."""
    try:
        response = client.get(f"{url}/metrics")
        return _metric_samples(response.text) if response.status_code == 200 else []
    except Exception:  # a broken exposition is reported by _check_metrics, not here
        return []


def _check_metrics(
    client: Any,
    url: str,
    tally: _Tally,
    candidate: Candidate,
    n_bars: int,
    expected_returns: list[float],
    before: list[tuple[str, dict[str, str], float]],
) -> None:
    """Labels, and the counters' increase over the replay (so a server with history checks the same)."""
    response = client.get(f"{url}/metrics")
    if not tally.add(
        "metrics: /metrics 200", response.status_code == 200, f"got {response.status_code}", True
    ):
        return
    try:
        samples = _metric_samples(response.text)
    except Exception as exc:  # the parser raises ValueError and friends on malformed exposition
        tally.add("metrics: exposition parses", False, str(exc)[:300], True)
        return
    label = candidate.label

    def delta(name: str, **labels: str) -> float:
        return _sum(samples, name, model_version=label, **labels) - _sum(
            before, name, model_version=label, **labels
        )

    info = [lab for n, lab, _ in samples if n == "autotrader_model_info"]
    tally.add(
        "metrics: model_info carries model_version",
        any(lab.get("model_version") == label for lab in info),
        f"labels {info}",
        True,
    )
    tally.add(
        "metrics: model_ready = 1",
        _sum(samples, "autotrader_model_ready", model_version=label) == 1,
        critical=True,
    )
    ok_requests = delta("autotrader_requests_total", route="/predict", status="200")
    tally.add(
        "metrics: /predict 200s counted", ok_requests >= n_bars, f"{ok_requests:g} counted, ≥ {n_bars} sent"
    )
    bad = delta("autotrader_requests_total", route="/predict", status="422")
    tally.add("metrics: 422s counted", bad >= 1, f"{bad:g}")
    n = delta("autotrader_strategy_returns_total")
    tally.add(
        "metrics: online returns counted",
        n == len(expected_returns),
        f"server counted {n:g}, replay expects {len(expected_returns)}",
        True,
    )
    total = delta("autotrader_strategy_return_sum")
    want = math.fsum(expected_returns)
    tally.add(
        "metrics: online return sum matches the replay",
        math.isclose(total, want, rel_tol=1e-6, abs_tol=1e-12),
        f"server {total:.6e}, replay {want:.6e}",
    )
    predictions = delta("autotrader_predictions_total")
    tally.add("metrics: predictions counted", predictions >= n_bars, f"{predictions:g}")
