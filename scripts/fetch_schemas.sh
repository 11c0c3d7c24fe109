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
ISTIO_COMMIT="86c9f01fd735fb01d8192f5bcaf0d424afb7f14c"
PROMOP_COMMIT="6adcebc5076c34f4f55f8f5f7b1e528929373ac7"

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

# Istio publishes all its CRDs in one file; keep the four the manifests use, each document in its own file.
fetch istio/istio "$ISTIO_COMMIT" manifests/charts/base/files/crd-all.gen.yaml istio/crd-all.gen.yaml
python3 "$(dirname "$0")/split_istio_crds.py" "$DEST/istio/crd-all.gen.yaml"
P=prometheus-operator/prometheus-operator
for file in monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml \
  monitoring.coreos.com_prometheusrules.yaml; do
  fetch $P "$PROMOP_COMMIT" "example/prometheus-operator-crd/$file" "prometheus-operator/$file"
done

cat > "$DEST/SOURCES.md" <<SOURCES
# Upstream schemas (fetched by scripts/fetch_schemas.sh, unmodified, Apache-2.0)

| folder | upstream repository | commit |
| --- | --- | --- |
| argo-rollouts/ | argoproj/argo-rollouts | $ROLLOUTS_COMMIT |
| argo-workflows/ | argoproj/argo-workflows | $WORKFLOWS_COMMIT |
| argo-cd/ | argoproj/argo-cd | $ARGOCD_COMMIT |
| istio/ | istio/istio (crd-all.gen.yaml, split per kind) | $ISTIO_COMMIT |
| prometheus-operator/ | prometheus-operator/prometheus-operator | $PROMOP_COMMIT |
SOURCES
echo "schemas in $DEST"
