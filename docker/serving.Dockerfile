# syntax=docker/dockerfile:1
# The model server image: `autotrader serve` on :8080 for the model pinned by MODEL_URI.
#
#   docker build -f docker/serving.Dockerfile -t autotrader-serving:0.1.0 .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /tmp -e MODEL_URI=models:/autotrader-signal/3 \
#     -e MLFLOW_TRACKING_URI=http://mlflow:5000 autotrader-serving:0.1.0
#
# Two stages: `build` makes a venv from requirements-serving.lock (the runtime subset of
# requirements.lock, same versions and hashes: no test, lint, DVC or data-validation packages), `runtime`
# copies that venv onto a fresh slim base: no compiler, no pip cache, no build context beyond
# .dockerignore's allow-list. Non-root (UID/GID 10001), and nothing is written outside /tmp, so the root
# filesystem can be mounted read-only with an emptyDir on /tmp. No HEALTHCHECK: Kubernetes probes
# /healthz and /readyz. The digest of the built image is what `autotrader promote --image-digest` pins in
# the overlays (see docs/delivery.md).
#
# The base is pinned by tag AND digest (the multi-architecture index of python:3.11.14-slim-bookworm on
# Docker Hub). No registry is reachable from the machine this was written on: the digest is the one
# several independent public Dockerfiles pin for this tag; check it once with
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm` before relying on it. Another base
# (a local Debian build with Python 3.11 at /usr/local/bin/python) goes in by build arg, unchanged file:
#   docker build --build-arg BASE_IMAGE=registry.local/python:3.11-bookworm@sha256:… -f docker/serving.Dockerfile .
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/venv
COPY requirements-serving.lock ./
# Wheels only, exact pins, every file checked against the lock's sha256 (--require-hashes), no resolver
# surprises (--no-deps: the lock is complete).
RUN /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: \
        -r requirements-serving.lock
# params.yaml too: src/autotrader/params.yaml links to it, the defaults every params model is built from
COPY pyproject.toml README.md params.yaml ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -c "import autotrader.serving, autotrader.cli; from autotrader.params import Params; Params()"

FROM ${BASE_IMAGE} AS runtime
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
