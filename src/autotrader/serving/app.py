"""The model server: a FastAPI app factory.

``create_app(config)`` builds an app around one model (``MODEL_URI``). Loading runs on a background
thread started by the app's lifespan, so ``/healthz`` answers at once and ``/readyz`` turns 200 only
once the model is loaded and has made one warm-up prediction. A model that fails to load leaves the
process up and ``/readyz`` at 503 with the reason (also logged): Kubernetes keeps the pod out of the
Service and the Rollout's analysis sees it, instead of a crash loop that hides the cause.

Request handling never turns bad input into a 500: the body is read with a size cap, parsed and
validated (``schemas.parse_request``), checked against the model's feature columns, and only then
given to the model on a small pool of worker threads, so a slow model cannot stall ``/metrics``
or the probes.
A model that raises or returns something other than {-1, 0, 1} is the server's fault: 500.

What is not the server's fault never counts as a 5xx either: a body that does not arrive within
``REQUEST_BODY_TIMEOUT_S`` is a 408, a client that hangs up mid-body a 499 (``metrics.py``), a bar
dated beyond ``PREDICT_MAX_CLOCK_SKEW_S`` into the future a 422 (it would freeze online scoring,
``online.py``), and a feature value outside what the model accepts a 422 naming it (``model.py``).
Headers have their own deadline and connections a cap, in the HTTP protocol (``protocol.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from autotrader.errors import ConfigError
from autotrader.serving.bars import BarsService
from autotrader.serving.metrics import CLIENT_CLOSED, CONTENT_TYPE, MetricsMiddleware, ServingMetrics
from autotrader.serving.model import (
    DEFAULT_BOUNDS_MARGIN,
    LoadedModel,
    ModelLoader,
    ModelOutputError,
    limit_threads,
    version_label,
)
from autotrader.serving.online import OnlineScorer
from autotrader.serving.schemas import (
    MAX_BATCH,
    PredictResponse,
    RequestError,
    iso_utc,
    parse_request,
)

log = logging.getLogger("autotrader.serving")

ROUTES = frozenset({"/", "/predict", "/predict/bars", "/healthz", "/readyz", "/metrics"})
_LABELS = ("short", "flat", "long")  # index = signal + 1


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server reads from its environment, resolved once at start."""

    model_uri: str | None
    model_version: str
    max_batch: int = MAX_BATCH
    max_body_bytes: int = 8 * 1024 * 1024
    load_attempts: int = 3
    load_backoff_s: float = 1.0
    load_timeout_s: float = 10.0  # per MLflow HTTP call while loading (registry, artifacts); see serve.py
    max_instruments: int = 10_000
    threads: int = 1  # OpenMP/BLAS threads per prediction (see model.limit_threads); 0 = library default
    predict_workers: int = 4  # predictions running at once (worker threads), beside the event loop
    inline_max_bytes: int = 16 * 1024  # smaller bodies for a fast-path model run on the event loop; 0 = never
    bars_inline_max_bytes: int = 128 * 1024  # the same for /predict/bars (one or two instruments' windows)
    header_timeout_s: float = 10.0  # request line + headers must arrive within this (protocol.py): else 408
    body_timeout_s: float = 10.0  # the body must arrive within this once the headers are in: else 408
    max_connections: int = 1024  # open connections beyond this are answered 503 and closed (protocol.py)
    max_clock_skew_s: float = 120.0  # a bar dated further than this into the future is refused (422)
    bounds_margin: float = DEFAULT_BOUNDS_MARGIN  # feature values beyond training range ± this × span: 422
    # feature params this deployment expects (JSON object); each must equal the model's recorded one,
    # else /predict/bars is a 409 naming it (bars.py). None: the model's recorded params are used.
    feature_params: Mapping[str, Any] | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        model_uri: str | None = None,
        model_version: str | None = None,
    ) -> ServerConfig:
        """``MODEL_URI``, ``MODEL_VERSION``, ``MODEL_LOAD_ATTEMPTS``, ``MODEL_LOAD_BACKOFF_S``, ``MODEL_LOAD_TIMEOUT_S``,
        ``MODEL_THREADS``, ``PREDICT_WORKERS``, ``PREDICT_INLINE_MAX_BYTES``,
        ``REQUEST_HEADER_TIMEOUT_S``, ``REQUEST_BODY_TIMEOUT_S``, ``MAX_CONNECTIONS``,
        ``PREDICT_MAX_CLOCK_SKEW_S``, ``FEATURE_BOUNDS_MARGIN``, ``FEATURE_PARAMS`` (arguments win over the
        environment)."""
        env = os.environ if env is None else env
        uri = model_uri or env.get("MODEL_URI") or None
        version = version_label(uri or "", model_version or env.get("MODEL_VERSION") or None)
        return cls(
            model_uri=uri,
            model_version=version,
            load_attempts=int(_number(env, "MODEL_LOAD_ATTEMPTS", 3)),
            load_backoff_s=_number(env, "MODEL_LOAD_BACKOFF_S", 1.0),
            load_timeout_s=_positive(env, "MODEL_LOAD_TIMEOUT_S", 10.0),
            threads=int(_number(env, "MODEL_THREADS", 1)),
            predict_workers=max(1, int(_number(env, "PREDICT_WORKERS", 4))),
            inline_max_bytes=max(0, int(_number(env, "PREDICT_INLINE_MAX_BYTES", 16 * 1024))),
            header_timeout_s=_positive(env, "REQUEST_HEADER_TIMEOUT_S", 10.0),
            body_timeout_s=_positive(env, "REQUEST_BODY_TIMEOUT_S", 10.0),
            max_connections=int(_positive(env, "MAX_CONNECTIONS", 1024)),
            max_clock_skew_s=_number(env, "PREDICT_MAX_CLOCK_SKEW_S", 120.0),
            bounds_margin=_number(env, "FEATURE_BOUNDS_MARGIN", DEFAULT_BOUNDS_MARGIN),
            feature_params=_json_object(env, "FEATURE_PARAMS"),
        )


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    """A numeric environment variable; a ConfigError naming it when it is not a number ≥ 0."""
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {key}={raw!r} is not a number") from exc
    if value < 0 or value != value:
        raise ConfigError(f"environment variable {key}={raw!r} must be ≥ 0")
    return value


def _json_object(env: Mapping[str, str], key: str) -> dict[str, Any] | None:
    """A JSON-object environment variable (e.g. ``FEATURE_PARAMS='{"rsi_window": 14}'``), or None."""
    raw = env.get(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {key} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"environment variable {key} must be a JSON object, got {type(value).__name__}")
    return value


def _positive(env: Mapping[str, str], key: str, default: float) -> float:
    """Like ``_number`` but 0 is refused too: a zero deadline or cap would refuse every request."""
    value = _number(env, key, default)
    if value <= 0:
        raise ConfigError(f"environment variable {key}={env.get(key)!r} must be > 0")
    return value


def _json(status: int, body: Any) -> Response:
    return Response(
        content=json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


class PredictionService:
    """The /predict pipeline without HTTP: bytes in, (status, body) out.

    Runs on a worker thread, or on the event loop for a small request to a fast-path model (see
    ``inline``); everything it touches (metrics, the online scorer) is thread-safe.
    """

    def __init__(self, config: ServerConfig, loader: ModelLoader, metrics: ServingMetrics) -> None:
        self.config = config
        self.loader = loader
        self.metrics = metrics
        self.scorer = OnlineScorer(config.max_instruments)
        self.executor = ThreadPoolExecutor(max_workers=config.predict_workers, thread_name_prefix="predict")
        self._local = threading.local()

    def inline(self, body: bytes, limit: int | None = None) -> bool:
        """Run this request on the event loop? Only a small body for an sklearn fast-path model.

        A single-row prediction of an sklearn model here costs ~0.2 ms of CPU (flat HGB walk) to
        ~2 ms; handing it to a worker thread and back costs a thread wake-up and GIL hand-offs on
        every request (measured: ~11 % of a request's CPU). A model of unknown
        speed (any other pyfunc, e.g. one that sleeps) and large batches always go to the workers,
        so they can never stall /metrics or the probes.
        """
        model = self.loader.state.model
        limit = self.config.inline_max_bytes if limit is None else limit
        return model is not None and model.estimator is not None and len(body) <= limit

    def handle(self, body: bytes) -> tuple[int, dict[str, Any]]:
        model = self.loader.state.model
        if model is None:
            return 503, {"detail": f"model not ready: {self.loader.state.reason}"}
        try:
            instances = parse_request(body, self.config.max_batch)
            self._check_clock(instances)
            frame = model.frame(instances)
        except RequestError as exc:
            return exc.status, exc.body()
        return self.predict_inputs(model, instances, frame)

    def predict_inputs(
        self, model: LoadedModel, instances: list[Any], frame: Any
    ) -> tuple[int, dict[str, Any]]:
        """Checked model inputs → signals, counted and scored (shared with /predict/bars)."""
        if not getattr(self._local, "limited", False):
            limit_threads(self.config.threads)  # once per worker thread: OpenMP's setting is per thread
            self._local.limited = True
        try:
            signals = model.predict(frame)
        except RequestError as exc:  # the model's input transform overflowed on this input (model.py)
            return exc.status, exc.body()
        except ModelOutputError as exc:
            log.error("model %s returned a bad prediction: %s", model.uri, exc)
            return 500, {"detail": f"model returned a bad prediction: {exc}"}
        except Exception as exc:  # the model's own failure: a 500 the error-rate analysis must see
            log.exception("model %s failed to predict", model.uri)
            return 500, {"detail": f"model failed to predict: {type(exc).__name__}: {exc}"}
        return 200, self._respond(model, instances, signals)

    def _check_clock(self, instances: list[Any]) -> None:
        """A 422 for a bar dated beyond the allowed clock skew into the future (see online.py)."""
        now = datetime.now(UTC)
        limit = now + timedelta(seconds=self.config.max_clock_skew_s)
        for i, inst in enumerate(instances):
            if inst.timestamp > limit:
                ahead = (inst.timestamp - now).total_seconds()
                raise RequestError(
                    422,
                    f"instances[{i}].timestamp ({inst.broker}/{inst.symbol}): {iso_utc(inst.timestamp)} "
                    f"is {ahead:.0f} s ahead of the server clock ({iso_utc(now)}); at most "
                    f"{self.config.max_clock_skew_s:g} s of clock skew is allowed",
                )

    def _respond(self, model: LoadedModel, instances: list[Any], signals: np.ndarray) -> dict[str, Any]:
        keys = [(i.broker, i.symbol) for i in instances]
        stamps = [i.timestamp for i in instances]
        sig = signals.tolist()
        predictions = [
            {
                "broker": inst.broker,
                "symbol": inst.symbol,
                "timestamp": iso_utc(inst.timestamp),
                "signal": s,
                "label": _LABELS[s + 1],
            }
            for inst, s in zip(instances, sig, strict=True)
        ]
        counts = np.bincount(signals.astype(np.int64) + 1, minlength=3)
        self.metrics.observe_signals(dict(zip(_LABELS, counts.tolist(), strict=True)))
        returns, repeats, stale = self.scorer.observe_counted(keys, stamps, [i.close for i in instances], sig)
        self.metrics.observe_returns(returns)
        self.metrics.observe_skipped(repeats, stale)
        return {"model_version": self.config.model_version, "predictions": predictions}


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all.

    The whole body must arrive within ``timeout_s`` (408, and the connection is closed: the rest of
    the body is never read); a client that disconnects mid-body is a 499 for the metrics.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise RequestError(422, f"bad Content-Length header {declared!r}") from exc
        if size > limit:
            raise RequestError(413, f"body of {size} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise RequestError(413, f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestError(
            408, f"request body not received within {timeout_s:g} s ({total} bytes arrived)"
        ) from exc
    except ClientDisconnect as exc:
        raise RequestError(CLIENT_CLOSED, f"client disconnected after {total} bytes of the body") from exc
    return b"".join(chunks)


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """A new app with its own metrics registry, model loader and online scorer."""
    config = config or ServerConfig.from_env()
    metrics = ServingMetrics(config.model_version, config.model_uri or "")
    loader = ModelLoader(
        config.model_uri,
        attempts=config.load_attempts,
        backoff_s=config.load_backoff_s,
        threads=config.threads,
        bounds_margin=config.bounds_margin,
    )
    loader.on_ready.append(lambda _model: metrics.ready.set(1))
    service = PredictionService(config, loader, metrics)
    bars = BarsService(service, config.feature_params)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loader.start()
        yield
        service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="AutoTrader model server",
        description="Signals (-1 short, 0 flat, 1 long) from the model pinned by MODEL_URI.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.loader = loader
    app.state.metrics = metrics
    app.state.service = service
    app.state.bars = bars

    @app.get("/")
    async def index() -> Response:
        return _json(
            200,
            {
                "service": "autotrader-serving",
                "model_uri": config.model_uri,
                "model_version": config.model_version,
                "endpoints": sorted(ROUTES),
            },
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        """Alive: the process answers. Says nothing about the model (that is /readyz)."""
        return _json(200, {"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> Response:
        state = loader.state
        if state.model is None:
            elapsed = None if state.started is None else round(time.monotonic() - state.started, 1)
            body = {"ready": False, "status": state.status, "reason": state.reason, "elapsed_s": elapsed}
            return _json(503, body)
        columns = state.model.columns
        return _json(
            200,
            {
                "ready": True,
                "model_uri": config.model_uri,
                "model_version": config.model_version,
                "load_seconds": round(state.seconds or 0.0, 3),
                "features": list(columns) if columns is not None else None,
                "bars": bars.status(),
            },
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(content=metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post(
        "/predict",
        responses={
            200: {"model": PredictResponse, "description": "one signal per instance"},
            413: {"description": "more than the batch limit, or body too large"},
            422: {"description": "not JSON, or an invalid instance: the reason names the field"},
            503: {"description": "model not loaded yet, or failed to load"},
        },
    )
    async def predict(request: Request) -> Response:
        """``{"instances": [{broker, symbol, timestamp, close, features: {...}}, ...]}`` → signals."""
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
        except RequestError as exc:
            response = _json(exc.status, exc.body())
            if exc.status in (408, 413):
                response.headers["connection"] = "close"  # the rest of the body is never read
            return response
        if service.inline(body):
            status, payload = service.handle(body)
        else:
            loop = asyncio.get_running_loop()
            status, payload = await loop.run_in_executor(service.executor, service.handle, body)
        return _json(status, payload)

    @app.post(
        "/predict/bars",
        responses={
            200: {"description": "one signal per instrument, for its newest bar"},
            409: {"description": "the model's recorded feature params cannot be served exactly (named)"},
            413: {"description": "too many instruments or bars, or body too large"},
            422: {"description": "bad bars: the validation rule, instrument and bar; or too few bars"},
            503: {"description": "model not loaded yet, or failed to load"},
        },
    )
    async def predict_bars(request: Request) -> Response:
        """``{"bars": [{timestamp, broker, symbol, open, high, low, close, volume, spread}, ...]}`` → signals;
        or the same bars as columns: ``{"windows": [{broker, symbol, timestamp: [...], open: [...], ...}]}``.

        Each instrument's bars oldest first: the newest and the warm-up before it (bars.py, bar_columns.py)."""
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
        except RequestError as exc:
            response = _json(exc.status, exc.body())
            if exc.status in (408, 413):
                response.headers["connection"] = "close"
            return response
        if service.inline(body, config.bars_inline_max_bytes):
            status, payload = bars.handle(body)
        else:
            loop = asyncio.get_running_loop()
            status, payload = await loop.run_in_executor(service.executor, bars.handle, body)
        return _json(status, payload)

    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=ROUTES)
    return app
