# syntax=docker/dockerfile:1
# The model server image: `autotrader serve` on :8080 for the model pinned by MODEL_URI.
#
#   docker build -f docker/serving.Dockerfile -t autotrader-serving:0.1.0 .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp -e MODEL_URI=models:/autotrader-signal/3 \
#     -e MLFLOW_TRACKING_URI=http://mlflow:5000 autotrader-serving:0.1.0
#
# Two stages: `build` makes a venv from requirements.lock (the exact set CI tested), `runtime` copies
# that venv onto a fresh slim base: no compiler, no pip cache, no build context beyond .dockerignore's
# allow-list. Non-root (UID/GID 10001), and nothing is written outside /tmp, so the root filesystem
# can be mounted read-only with an emptyDir on /tmp. No HEALTHCHECK: Kubernetes probes /healthz and
# /readyz. CI replaces the tag below by its digest when it builds (see docs/serving.md).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/venv
COPY requirements.lock ./
# Wheels only, exact pins, no resolver surprises (--no-deps: the lock is complete). The two named
# packages publish no wheel; both are pure Python and build without a compiler.
RUN /opt/venv/bin/pip install --no-deps --only-binary=:all: \
        --no-binary=antlr4-python3-runtime,peewee \
        -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -c "import autotrader.serving, autotrader.cli"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="autotrader-serving" \
      org.opencontainers.image.description="AutoTrader model server (FastAPI + uvicorn)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 autotrader \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin autotrader
COPY --from=build /opt/venv /opt/venv
# params.yaml for the `autotrader deploy …` commands the staging integration Job runs in this image.
COPY params.yaml /etc/autotrader/params.yaml
# Read-only root filesystem: every cache and temporary directory points at /tmp (an emptyDir);
# MLflow downloads models:/ artifacts under TMPDIR. One OpenMP thread: one worker per pod.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    GIT_PYTHON_REFRESH=quiet \
    OMP_NUM_THREADS=1 \
    MODEL_THREADS=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["autotrader", "serve", "--host", "0.0.0.0", "--port", "8080"]
