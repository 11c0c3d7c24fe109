#!/usr/bin/env bash
# Download the upstream schemas the manifest validation uses (autotrader.gitops.schemas), at the same
# files and commits as ../shared/schemas/SOURCES.md, into DEST (default: .schemas).
# For users outside CI; the test suite never runs this (it reads ../shared/schemas or $AUTOTRADER_SCHEMA_DIR).
# Usage: scripts/fetch_schemas.sh [DEST]      (make schemas SCHEMA_DIR=.schemas)
set -euo pipefail

DEST="${1:-.schemas}"
RAW="https://raw.githubusercontent.com"

ROLLOUTS_COMMIT="9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d"
WORKFLOWS_COMMIT="f016ad89eb269d282aec06dc491c29f396a38df4"
ARGOCD_COMMIT="37ee0097cf851bc2dd7665fc081bbce61a7e836e"

fetch() {  # repo commit path target
  local url="$RAW/$1/$2/$3" target="$DEST/$4"
  mkdir -p "$(dirname "$target")"
  echo "fetching $url"
  curl --fail --silent --show-error --location --retry 3 --output "$target.tmp" "$url"
  mv "$target.tmp" "$target"
}

R=argoproj/argo-rollouts
fetch $R "$ROLLOUTS_COMMIT" manifests/crds/rollout-crd.yaml argo-rollouts/rollout-crd.yaml
fetch $R "$ROLLOUTS_COMMIT" manifests/crds/analysis-template-crd.yaml argo-rollouts/analysis-template-crd.yaml
fetch $R "$ROLLOUTS_COMMIT" manifests/crds/cluster-analysis-template-crd.yaml argo-rollouts/cluster-analysis-template-crd.yaml
fetch $R "$ROLLOUTS_COMMIT" manifests/crds/analysis-run-crd.yaml argo-rollouts/analysis-run-crd.yaml
fetch argoproj/argo-workflows "$WORKFLOWS_COMMIT" api/jsonschema/schema.json argo-workflows/schema.json
fetch argoproj/argo-cd "$ARGOCD_COMMIT" manifests/crds/application-crd.yaml argo-cd/application-crd.yaml
fetch argoproj/argo-cd "$ARGOCD_COMMIT" manifests/crds/appproject-crd.yaml argo-cd/appproject-crd.yaml

cat > "$DEST/SOURCES.md" <<SOURCES
# Upstream schemas (fetched by scripts/fetch_schemas.sh, unmodified, Apache-2.0)

| folder | upstream repository | commit |
| --- | --- | --- |
| argo-rollouts/ | argoproj/argo-rollouts | $ROLLOUTS_COMMIT |
| argo-workflows/ | argoproj/argo-workflows | $WORKFLOWS_COMMIT |
| argo-cd/ | argoproj/argo-cd | $ARGOCD_COMMIT |
SOURCES
echo "schemas in $DEST"
