# syntax=docker/dockerfile:1
# The image every Argo pipeline step runs in (argo/*.yaml): the project at one commit, DVC and the
# rest of requirements.lock (exactly what CI tested), kubectl and the Argo Rollouts plugin for the
# deployment steps, running as a non-root user. No credentials are baked in: the DVC remote, MLflow,
# brokers, git and the webhook all come from Kubernetes Secrets as environment variables at run time.
#
#   docker build -f docker/pipeline.Dockerfile -t ghcr.io/autotrader/autotrader-pipeline:$(git rev-parse --short HEAD) .
#
# The build context is the repository root; only the paths copied below enter the image (no .git, no
# .venv, no data). DVC runs without git in the image (`core.no_scm`): the workflow hands dvc.lock from
# step to step itself (see argo/dvc-stage.yaml).

# The base is pinned by tag AND digest, the same as docker/serving.Dockerfile (where the digest comes
# from is said there); another base, e.g. a local Debian build with Python 3.11, goes in by build arg:
#   docker build --build-arg BASE_IMAGE=registry.local/python:3.11-bookworm@sha256:… -f docker/pipeline.Dockerfile .
# The Argo Rollouts image only lends one binary (COPY --from below). It stays pinned by release tag: no
# trustworthy digest for it could be found from here; add `@sha256:…` (`docker buildx imagetools inspect
# quay.io/argoproj/kubectl-argo-rollouts:v1.8.3`) when building.
#
# Three more build args let a machine without those upstream hosts build the same file unchanged
# (scripts/build_images.sh does, with buildah): ROLLOUTS_IMAGE may be any image holding
# /bin/kubectl-argo-rollouts; KUBECTL_RELEASE_URL a mirror of dl.k8s.io/release's layout (file:// works,
# with the folder mounted into the build), still checked against its kubectl.sha256; SCHEMAS_FROM a folder
# of already-fetched schemas (the layout scripts/fetch_schemas.sh writes) instead of downloading them.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ARG ROLLOUTS_IMAGE=quay.io/argoproj/kubectl-argo-rollouts:v1.8.3

FROM ${ROLLOUTS_IMAGE} AS rollouts

FROM ${BASE_IMAGE}
ARG KUBECTL_VERSION=v1.32.0
ARG KUBECTL_RELEASE_URL=https://dl.k8s.io/release
ARG TARGETARCH=amd64
ARG SCHEMAS_FROM=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    DVC_NO_ANALYTICS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/autotrader

RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# kubectl, checked against the release's published SHA-256; the Argo Rollouts plugin from its image.
RUN curl -fsSLo /usr/local/bin/kubectl "${KUBECTL_RELEASE_URL}/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && echo "$(curl -fsSL "${KUBECTL_RELEASE_URL}/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256")  /usr/local/bin/kubectl" \
    | sha256sum --check --strict \
 && chmod 0755 /usr/local/bin/kubectl
COPY --from=rollouts /bin/kubectl-argo-rollouts /usr/local/bin/kubectl-argo-rollouts

# The upstream schemas `autotrader promote|rollback` check rendered overlays against (pinned commits).
COPY scripts/fetch_schemas.sh scripts/split_istio_crds.py /tmp/schemas/
RUN if [ -n "${SCHEMAS_FROM}" ]; then cp -r "${SCHEMAS_FROM}" /opt/schemas; \
    else bash /tmp/schemas/fetch_schemas.sh /opt/schemas; fi \
 && test -f /opt/schemas/argo-rollouts/rollout-crd.yaml \
 && rm -rf /tmp/schemas
ENV AUTOTRADER_SCHEMA_DIR=/opt/schemas

RUN groupadd --gid 10001 autotrader \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/autotrader autotrader

WORKDIR /app
# Dependencies first (cached while only the code changes), pinned by the lock file and checked against
# its sha256 hashes (--require-hashes).
COPY requirements-bootstrap.lock requirements.lock pyproject.toml README.md ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes -r requirements-bootstrap.lock \
 && /opt/venv/bin/uv pip sync --python /opt/venv/bin/python --no-cache --require-hashes requirements.lock

# The project: library, stages, the DVC pipeline and its params, the DVC config (the remote itself is
# added per step from the Secret, in .dvc/config.local).
COPY src ./src
COPY stages ./stages
COPY dvc.yaml dvc.lock* params.yaml .dvcignore ./
COPY .dvc/config ./.dvc/config
COPY data/external ./data/external
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-cache --no-deps -e . \
 && dvc config --local core.no_scm true \
 && dvc config --local core.analytics false \
 && mkdir -p /work \
 && chown -R 10001:10001 /app /work /home/autotrader

USER 10001:10001
ENTRYPOINT []
CMD ["autotrader", "--help"]
