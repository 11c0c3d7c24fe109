#!/usr/bin/env bash
# Build the project's two images here, with no container registry: a Debian bookworm base with Python 3.11
# (debootstrap, minbase), then docker/serving.Dockerfile and docker/pipeline.Dockerfile on it, with buildah.
#   scripts/build_images.sh          build what is missing; stdout: BASE_IMAGE=…, SERVING_IMAGE=…, PIPELINE_IMAGE=…
#   scripts/build_images.sh --check  exit 0 if buildah, debootstrap and root are here, else 3 with the reason
# Progress and sizes go to stderr. Every image is tagged with a content hash of what it is built from
# (recipe, Dockerfile, .dockerignore, locks, src, …): a second run with nothing changed is a no-op, and
# older tags of the same image are removed. Exit 3: a tool this needs is missing (the reason on stderr).
#
# Why these flags: buildah's storage is vfs (needs no overlay or fuse support) and RUN steps use chroot
# isolation (the OCI runtime fails on this machine's cgroups). The Dockerfiles are used unchanged, through
# their build args only: BASE_IMAGE (the local base), ROLLOUTS_IMAGE (a local image holding the
# kubectl-argo-rollouts the e2e harness built), KUBECTL_RELEASE_URL (a file:// mirror of dl.k8s.io's
# layout holding the harness's kubectl and its sha256) and SCHEMAS_FROM (../shared/schemas, mounted):
# nothing is downloaded from outside PyPI and Debian. The host's CA bundle is mounted into RUN steps (not
# copied into any image) so pip, uv and apt trust what this machine trusts (its egress re-signs TLS).
# Cache root: $AUTOTRADER_IMAGES_CACHE, else $XDG_CACHE_HOME/autotrader-images, else ~/.cache/….
set -euo pipefail
trap 'echo "build_images.sh: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."

S=(--storage-driver vfs)
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3.11,python3.11-venv,python3-venv,ca-certificates
BASE_RECIPE="r1 $SUITE minbase $BASE_PACKAGES /usr/local/bin/python->python3.11 no-docs"
root="${AUTOTRADER_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autotrader-images}"
started=$(date +%s)

say() { echo "[images +$(($(date +%s) - started))s] $*" >&2; }
missing() { echo "$*" >&2; exit 3; }

command -v buildah >/dev/null || missing "buildah not found: apt-get install buildah (Debian) to build the images"
command -v debootstrap >/dev/null || missing "debootstrap not found: apt-get install debootstrap (Debian)"
[[ $(id -u) -eq 0 ]] || missing "building the base image with debootstrap needs root"
[[ "${1:-}" == "--check" ]] && exit 0

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9 # one build at a time (make images and the test may overlap)

hash_of() { # paths… → 16 hex digits over file names and contents (bytecode and egg-info left out)
  { find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 2>/dev/null || true; } |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
exists() { buildah "${S[@]}" inspect --type image "$1" >/dev/null 2>&1; }
size_of() { buildah "${S[@]}" images --format '{{.Size}}' "$1" | head -1; }
drop_other_tags() { # repository keep-tag: older builds of the same image (vfs keeps full copies)
  local old
  for old in $(buildah "${S[@]}" images --format '{{.Name}}:{{.Tag}}'); do
    [[ $old == "$1:"* && $old != "$1:$2" ]] && { buildah "${S[@]}" rmi "$old" >/dev/null 2>&1 || true; }
  done
  return 0
}

# 1. The base: what python:3.11-slim-bookworm offers the Dockerfiles (python on PATH, venv, pip's bundled
#    wheel, groupadd/useradd, apt, CA certificates), from Debian's own packages.
base_key=$(echo "$BASE_RECIPE" | sha256sum | cut -c1-16)
BASE_IMAGE="localhost/autotrader-base:$SUITE-py311-$base_key"
if exists "$BASE_IMAGE"; then
  say "base $BASE_IMAGE cached"
else
  say "base: debootstrap $SUITE (minbase + $BASE_PACKAGES) from $MIRROR"
  work="$root/rootfs.partial"
  rm -rf "$work"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work" "$MIRROR" >"$root/debootstrap.log" 2>&1 ||
    { tail -20 "$root/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/* \
    "$work"/usr/share/doc/* "$work"/usr/share/man/* "$work"/usr/share/info/*
  ln -sf /usr/bin/python3.11 "$work/usr/local/bin/python"
  ln -sf /usr/bin/python3.11 "$work/usr/local/bin/python3"
  chroot "$work" python -c "import ensurepip, venv, ssl, sqlite3" # what the Dockerfiles' venvs need
  say "base: importing the root filesystem"
  ctr=$(buildah "${S[@]}" from scratch)
  mnt=$(buildah "${S[@]}" mount "$ctr")
  cp -a "$work"/. "$mnt"/
  buildah "${S[@]}" umount "$ctr" >/dev/null
  buildah "${S[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python --label "org.opencontainers.image.description=Debian $SUITE minbase with Python 3.11 ($BASE_RECIPE)" "$ctr"
  buildah "${S[@]}" commit -q "$ctr" "$BASE_IMAGE" >/dev/null
  buildah "${S[@]}" rm "$ctr" >/dev/null
  rm -rf "$work"
  drop_other_tags localhost/autotrader-base "$SUITE-py311-$base_key"
  say "base $BASE_IMAGE built"
fi

# What every RUN step may read: the host's CA bundle, and uv told to use it (uv bundles its own roots).
mounts=()
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  printf 'native-tls = true\n' >"$root/uv.toml"
  mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro -v "$root/uv.toml:/etc/uv/uv.toml:ro")
fi
need_space() { # GiB: vfs keeps a full copy of the files per layer and per working container
  local store=/var/lib/containers/storage free
  mkdir -p "$store"
  free=$(($(df --output=avail -k "$store" | tail -1) / 1048576))
  ((free >= $1)) || { echo "building needs about $1 GiB free under $store (vfs copies every layer); $free GiB free" >&2; exit 1; }
}
bud() { # tag dockerfile build-args…
  local tag=$1 file=$2
  shift 2
  need_space 6
  nice -n 10 buildah "${S[@]}" bud --isolation chroot --no-cache --force-rm --quiet "${mounts[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" "$@" -f "$file" -t "$tag" . >"$root/build-$(basename "$file").log" 2>&1 ||
    { tail -30 "$root/build-$(basename "$file").log" >&2; echo "build of $file failed: $root/build-$(basename "$file").log" >&2; exit 1; }
}

# 2. The model server image (requirements-serving.lock only).
serving_key=$(hash_of docker/serving.Dockerfile .dockerignore requirements-serving.lock pyproject.toml README.md \
  params.yaml src | { cat; echo "$base_key"; } | sha256sum | cut -c1-16)
SERVING_IMAGE="localhost/autotrader-serving:$serving_key"
if exists "$SERVING_IMAGE"; then
  say "serving $SERVING_IMAGE cached"
else
  say "serving: buildah bud docker/serving.Dockerfile"
  bud "$SERVING_IMAGE" docker/serving.Dockerfile
  drop_other_tags localhost/autotrader-serving "$serving_key"
  say "serving $SERVING_IMAGE built"
fi

# 3. The pipeline image. kubectl and the Rollouts plugin: the ones the e2e harness builds from e2e/go.mod.
tools=$(bash scripts/build_e2e_tools.sh) || { code=$?; [[ $code -eq 3 ]] && missing "the pipeline image takes kubectl and kubectl-argo-rollouts from the e2e harness, which needs Go"; exit $code; }
kube_version=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' e2e/go.mod)
schemas=""
for dir in "${AUTOTRADER_SCHEMA_DIR:-}" ../shared/schemas .schemas; do
  [[ -n "$dir" && -f "$dir/argo-rollouts/rollout-crd.yaml" ]] && { schemas=$(cd "$dir" && pwd); break; }
done
[[ -n "$schemas" ]] || missing "no upstream schemas (../shared/schemas, .schemas or \$AUTOTRADER_SCHEMA_DIR) for the pipeline image"
plugin_key=$(sha256sum "$tools/kubectl-argo-rollouts" | cut -c1-16)
ROLLOUTS_IMAGE="localhost/autotrader-rollouts-plugin:$plugin_key"
if ! exists "$ROLLOUTS_IMAGE"; then
  ctr=$(buildah "${S[@]}" from scratch)
  buildah "${S[@]}" copy --chmod 0755 "$ctr" "$tools/kubectl-argo-rollouts" /bin/kubectl-argo-rollouts >/dev/null
  buildah "${S[@]}" commit -q "$ctr" "$ROLLOUTS_IMAGE" >/dev/null
  buildah "${S[@]}" rm "$ctr" >/dev/null
  drop_other_tags localhost/autotrader-rollouts-plugin "$plugin_key"
fi
release="$root/kubectl-release"
arch_dir="$release/$kube_version/bin/linux/amd64"
if ! cmp -s "$tools/kubectl" "$arch_dir/kubectl" 2>/dev/null; then
  rm -rf "$release"
  mkdir -p "$arch_dir"
  cp "$tools/kubectl" "$arch_dir/kubectl"
  sha256sum "$arch_dir/kubectl" | cut -d' ' -f1 >"$arch_dir/kubectl.sha256"
fi
pipeline_key=$(hash_of docker/pipeline.Dockerfile docker/pipeline.Dockerfile.dockerignore requirements.lock \
  requirements-bootstrap.lock pyproject.toml README.md src stages dvc.yaml dvc.lock params.yaml .dvcignore \
  .dvc/config data/external scripts/fetch_schemas.sh scripts/split_istio_crds.py "$schemas" |
  { cat; echo "$base_key $plugin_key $(cat "$arch_dir/kubectl.sha256")"; } | sha256sum | cut -c1-16)
PIPELINE_IMAGE="localhost/autotrader-pipeline:$pipeline_key"
if exists "$PIPELINE_IMAGE"; then
  say "pipeline $PIPELINE_IMAGE cached"
else
  say "pipeline: buildah bud docker/pipeline.Dockerfile (kubectl $kube_version and the Rollouts plugin from $tools)"
  mounts+=(-v "$release:/mnt/kubectl-release:ro" -v "$schemas:/mnt/schemas:ro")
  bud "$PIPELINE_IMAGE" docker/pipeline.Dockerfile --build-arg ROLLOUTS_IMAGE="$ROLLOUTS_IMAGE" \
    --build-arg KUBECTL_RELEASE_URL=file:///mnt/kubectl-release --build-arg KUBECTL_VERSION="$kube_version" \
    --build-arg SCHEMAS_FROM=/mnt/schemas
  drop_other_tags localhost/autotrader-pipeline "$pipeline_key"
  say "pipeline $PIPELINE_IMAGE built"
fi

for image in "$BASE_IMAGE" "$SERVING_IMAGE" "$PIPELINE_IMAGE"; do
  say "size $(size_of "$image")  $image"
done
say "done"
echo "BASE_IMAGE=$BASE_IMAGE"
echo "SERVING_IMAGE=$SERVING_IMAGE"
echo "PIPELINE_IMAGE=$PIPELINE_IMAGE"
