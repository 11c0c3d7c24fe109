"""``autotrader serve``: run the model server (uvicorn, one worker) for the model in ``MODEL_URI``."""

from __future__ import annotations

import argparse
import logging
import os

from autotrader.errors import ConfigError


def _serve(args: argparse.Namespace) -> int:
    # One OpenMP thread per prediction unless told otherwise; read when OpenMP first loads, so set it
    # before the model's libraries are imported (the server also caps it per thread at run time).
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("MODEL_THREADS", "1"))
    import uvicorn

    from autotrader.serving import ServerConfig, create_app

    config = ServerConfig.from_env(model_uri=args.model_uri, model_version=args.model_version)
    if not config.model_uri:
        raise ConfigError("no model to serve: set MODEL_URI (models:/<name>/<version> or a model folder)")
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(config)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
        # Longer than a proxy's idle timeout (Istio/Envoy, load balancers), so the proxy closes first
        # and never sends a request down a connection uvicorn is closing.
        timeout_keep_alive=args.keep_alive,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the model server for MODEL_URI (FastAPI + uvicorn)",
        description="Serve the model pinned by MODEL_URI (env) on /predict, with /healthz, /readyz, /metrics.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--model-uri", default=None, help="overrides MODEL_URI")
    parser.add_argument("--model-version", default=None, help="overrides MODEL_VERSION (the metrics label)")
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs latency)")
    parser.add_argument("--keep-alive", type=int, default=75, help="idle keep-alive timeout in seconds (75)")
    parser.set_defaults(func=_serve)
