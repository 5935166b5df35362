#!/usr/bin/env bash
# Build inference-examples/iris:1 without any container registry:
#  (a) base image inference-base/python:3.11-bookworm: debootstrap (minbase +
#      python3) -> rootfs tarball cached in $CACHE/base -> docker import
#  (b) numpy/scipy/scikit-learn/joblib/threadpoolctl wheels (cp311, manylinux)
#      pip-installed with --target into a cached folder
#  (c) docker build of this directory + that folder (as prepared/site-packages)
# Elsewhere, with a registry and PyPI: docker build --build-arg BASE_IMAGE=python:3.11-slim .
# Usage: examples/models/iris/build.sh [--force]   (--force rebuilds the iris
# image; it reuses the cached base rootfs and site-packages)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
IMAGE="${IRIS_IMAGE:-inference-examples/iris:1}"
BASE_IMAGE="${BASE_IMAGE:-inference-base/python:3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# pinned in requirements.txt (shared with the Dockerfile's pip path)
mapfile -t PY_PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/requirements.txt" | grep -v '^$')

SCRIPTS="$HERE/../../../scripts"
LOG_NAME=iris
# shellcheck source=../../../scripts/prepared-image.sh
source "$SCRIPTS/prepared-image.sh"
force_flag "$@"

# the source hash is stored as an image label: edited sources rebuild the image
src_hash() {
  { printf '%s\n' "${PY_PKGS[@]}" "$BASE_IMAGE"
    cat "$HERE/build.sh" "$SCRIPTS/prepared-image.sh" "$HERE/Dockerfile" "$HERE/server.py" "$HERE/train.py" "$HERE/example-request.json"
  } | sha256sum | cut -c1-16
}
"$SCRIPTS/docker-engine.sh"
mkdir -p "$CACHE"
exec 8>"$CACHE/iris-build.lock"  # one iris build at a time
flock 8
HASH="$(src_hash)"
if [[ $FORCE == 0 ]] && image_current "$IMAGE" "$HASH"; then
  exit 0
fi

WORK="$(mktemp -d "$CACHE/iris-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ---- (a) base image ----
if ! have_image "$BASE_IMAGE"; then
  tarball="$CACHE/base/python-3.11-bookworm.tar"
  if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null 2>&1 || { log "installing debootstrap (apt-get)"; apt_install debootstrap || die "apt-get install debootstrap failed"; }
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
    mkdir -p "$CACHE/base"
    rootfs="$CACHE/base/rootfs.tmp"
    rm -rf "$rootfs"
    log "debootstrap bookworm minbase+python3 from $MIRROR (about a minute, log: $CACHE/base/debootstrap.log)"
    t0=$SECONDS
    debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$MIRROR" \
        >"$CACHE/base/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $CACHE/base/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    log "cached base rootfs $tarball ($(du -m "$tarball" | cut -f1) MB) in $((SECONDS - t0)) s"
  fi
  log "importing $BASE_IMAGE from $tarball"
  docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      - "$BASE_IMAGE" <"$tarball" >/dev/null \
    || die "docker import of $tarball failed"
fi

# ---- (b) site-packages ----
# the folder name changes with the pins and with this recipe's version
site="$(prepared_site "$CACHE/iris-site" site-recipe-2 1 "${PY_PKGS[@]}")"

# ---- (c) docker build ----
ctx="$WORK/ctx"
mkdir -p "$ctx"
cp "$HERE/Dockerfile" "$HERE/requirements.txt" "$HERE/server.py" "$HERE/train.py" "$HERE/example-request.json" "$ctx/"
log "docker build $IMAGE"
t0=$SECONDS
build_prepared "$IMAGE" "$BASE_IMAGE" "$HASH" "$site" "$ctx"
trained="$(grep -o 'trained iris-logreg.*accuracy [0-9.]*' "$ctx.log" | head -n1 || true)"
log "built $IMAGE in $((SECONDS - t0)) s${trained:+ ($trained)}"
