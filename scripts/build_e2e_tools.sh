#!/usr/bin/env bash
# Build the cluster harness's upstream programs from their pinned Go modules (e2e/, e2e/kwok/,
# e2e/argo-cli/) into a cache OUTSIDE the repo, keyed by the modules' go.mod/go.sum: a warm cache is a no-op.
#   scripts/build_e2e_tools.sh              build what is missing, print the bin folder
#   scripts/build_e2e_tools.sh --print-dir  only print the bin folder (exit 1 if anything is missing)
# Needs Go (go.mod names the minimum version) and the Go module proxy. Cache root: $AUTOTRADER_E2E_CACHE,
# else $XDG_CACHE_HOME/autotrader-e2e, else ~/.cache/autotrader-e2e.
set -euo pipefail
cd "$(dirname "$0")/../e2e"

TOOLS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl rollouts-controller
  kubectl-argo-rollouts kwok argo experiment-crd.yaml)
key=$(cat go.mod go.sum kwok/go.mod kwok/go.sum argo-cli/go.mod argo-cli/go.sum cmd/etcd/main.go |
  sha256sum | cut -c1-16)
root="${AUTOTRADER_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autotrader-e2e}"
bin="$root/$key/bin"

missing=()
for tool in "${TOOLS[@]}"; do
  [[ -e "$bin/$tool" ]] || missing+=("$tool")
done
if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bin"
  [[ ${#missing[@]} -eq 0 ]]
  exit
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "go not found: the cluster harness needs Go >= 1.24 (see README)" >&2; exit 3; }

build() {  # module-dir packages...
  local dir=$1
  shift
  echo "building in e2e/$dir: $*" >&2
  (cd "$dir" && go build -trimpath -ldflags="-s -w" -o "$bin.partial/" "$@")
}
rm -rf "$bin.partial"
mkdir -p "$bin.partial"
start=$(date +%s)
build . ./cmd/etcd \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
  github.com/argoproj/argo-rollouts/cmd/rollouts-controller \
  github.com/argoproj/argo-rollouts/cmd/kubectl-argo-rollouts
build kwok sigs.k8s.io/kwok/cmd/kwok
# The controller waits for its Experiment informer; ../shared/schemas has no Experiment CRD, so take the one
# Argo Rollouts ships in the very module version the controller is built from.
moddir() {  # module-dir module: the module's source folder, downloaded first (go list -m alone does not)
  (cd "$1" && go mod download "$2" && go list -m -f '{{.Dir}}' "$2")
}
cp "$(moddir . github.com/argoproj/argo-rollouts)/manifests/crds/experiment-crd.yaml" "$bin.partial/"
# The argo CLI embeds the web UI's built assets (ui/dist/app), which the Go module does not carry. Upstream's
# CLI-only build puts a placeholder page there; do the same in a writable copy of the module, selected by an
# alternate go.mod (-modfile), so neither the module cache nor e2e/argo-cli/go.mod is touched.
src="$root/argo-workflows-src"
if [[ ! -f "$src/ui/dist/app/index.html" ]]; then
  rm -rf "$src"
  cp -r "$(moddir argo-cli github.com/argoproj/argo-workflows/v4)" "$src"
  chmod -R u+w "$src"
  mkdir -p "$src/ui/dist/app"
  echo "Built without static files" >"$src/ui/dist/app/index.html"
fi
cp argo-cli/go.mod "$root/argo-cli.mod"
cp argo-cli/go.sum "$root/argo-cli.sum"
echo "replace github.com/argoproj/argo-workflows/v4 => $src" >>"$root/argo-cli.mod"
build argo-cli -modfile="$root/argo-cli.mod" github.com/argoproj/argo-workflows/v4/cmd/argo
# Publish all at once: a killed build leaves only the .partial folder, never a half-filled bin.
rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "built ${#TOOLS[@]} programs in $(( $(date +%s) - start )) s" >&2
echo "$bin"
