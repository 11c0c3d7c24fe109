"""The server's Prometheus metrics: names, labels and buckets are a contract.

The Rollouts AnalysisTemplates, the alert rules and the Grafana dashboard query these exact names,
and every series carries ``model_version`` so canary and stable can be told apart. Each app gets its
own ``CollectorRegistry`` (never the process-global one), so a test can build several apps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
log = logging.getLogger("autotrader.serving")
OTHER_ROUTE = "other"  # every path the app does not serve, so a scanner cannot blow up cardinality

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServingMetrics:
    """Every series of one server, pre-bound to its ``model_version``."""

    def __init__(self, model_version: str, model_uri: str) -> None:
        self.model_version = model_version
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "autotrader_requests_total",
            "HTTP requests by route, method and status code.",
            ("route", "method", "status", "model_version"),
            registry=reg,
        )
        self.duration = Histogram(
            "autotrader_request_duration_seconds",
            "Time from request start to response end, by route.",
            ("route", "model_version"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "autotrader_predictions_total",
            "Signals returned, by signal (long, flat, short).",
            ("signal", "model_version"),
            registry=reg,
        )
        self.return_sum = Gauge(
            "autotrader_strategy_return_sum",
            "Sum of realised online returns r = signal_prev * (close / close_prev - 1).",
            ("model_version",),
            registry=reg,
        ).labels(model_version)
        self.return_sq_sum = Gauge(
            "autotrader_strategy_return_sq_sum",
            "Sum of squared realised online returns.",
            ("model_version",),
            registry=reg,
        ).labels(model_version)
        self.returns = Counter(
            "autotrader_strategy_returns",
            "Number of realised online returns scored.",
            ("model_version",),
            registry=reg,
        ).labels(model_version)
        self.skipped = Counter(
            "autotrader_online_bars_skipped",
            "Bars not scored online: a repeat of the instrument's last bar, or older than it (stale).",
            ("reason", "model_version"),
            registry=reg,
        )
        self.refused = Counter(
            "autotrader_connections_refused",
            "Connections cut before a request: headers too slow (header_timeout) or over the cap "
            "(connection_limit).",
            ("reason", "model_version"),
            registry=reg,
        )
        self.ready = Gauge(
            "autotrader_model_ready",
            "1 when the model is loaded and warm, else 0.",
            ("model_version",),
            registry=reg,
        ).labels(model_version)
        Gauge(
            "autotrader_model_info",
            "The model this server was started with (value is always 1).",
            ("model_version", "model_uri"),
            registry=reg,
        ).labels(model_version, model_uri).set(1)
        self.ready.set(0)
        # Zero-valued series from the start, so rate() and the analysis queries see them before traffic.
        for label in ("long", "flat", "short"):
            self.predictions.labels(label, model_version)
        self.returns.inc(0)
        self._skipped = {r: self.skipped.labels(r, model_version) for r in ("repeat", "stale")}
        self._refused = {
            r: self.refused.labels(r, model_version) for r in ("header_timeout", "connection_limit")
        }
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(route, method, str(status), self.model_version)
            self._request_children[key] = child
        child.inc()
        hist = self._duration_children.get(route)
        if hist is None:
            hist = self.duration.labels(route, self.model_version)
            self._duration_children[route] = hist
        hist.observe(seconds)

    def observe_signals(self, counts: dict[str, int]) -> None:
        for label, n in counts.items():
            if n:
                self.predictions.labels(label, self.model_version).inc(n)

    def observe_returns(self, returns: list[float]) -> None:
        if not returns:
            return
        self.return_sum.inc(sum(returns))
        self.return_sq_sum.inc(sum(r * r for r in returns))
        self.returns.inc(len(returns))

    def observe_skipped(self, repeats: int, stale: int) -> None:
        if repeats:
            self._skipped["repeat"].inc(repeats)
        if stale:
            self._skipped["stale"].inc(stale)

    def refused_connection(self, reason: str) -> None:
        """Called by the protocol (serving/protocol.py) on the event loop for each connection cut."""
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = self.refused.labels(reason, self.model_version)
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


CLIENT_CLOSED = 499  # nginx's code for "client closed the request": not a server error, counted apart


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request, including 404s and errors.

    Pure ASGI (not ``BaseHTTPMiddleware``) because it sits on the hot path: it only wraps ``send``
    to catch the status code, and ``receive`` to notice a client that went away. A client that
    disconnects before the answer is sent (mid-body, or while waiting) is counted as
    ``status="499"``, never as a 5xx: the canary's error-rate analysis must not roll back a healthy
    model because of flaky clients. Whatever the app raised because the client left is dropped with
    one debug line (nobody is there to read the answer); any other exception escaping the app is
    counted as a 500 and re-raised.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else OTHER_ROUTE
        status = 500
        started_response = False
        disconnected = False
        started = time.perf_counter()

        async def receive_watching() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_with_status(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
            await send(message)

        try:
            await self.app(scope, receive_watching, send_with_status)
        except Exception:
            if not disconnected:
                raise
            log.debug("client disconnected from %s %s before the answer", scope["method"], path)
        finally:
            if disconnected and not started_response:
                status = CLIENT_CLOSED
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
