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

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
  esac
done

log() { echo "iris: $*" >&2; }
die() { echo "iris: ERROR: $*" >&2; exit 1; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# the source hash is stored as an image label: edited sources rebuild the image
src_hash() {
  { printf '%s\n' "${PY_PKGS[@]}" "$BASE_IMAGE"
    cat "$HERE/build.sh" "$HERE/Dockerfile" "$HERE/server.py" "$HERE/train.py" "$HERE/example-request.json"
  } | sha256sum | cut -c1-16
}
"$HERE/../../../scripts/docker-engine.sh"
mkdir -p "$CACHE"
exec 8>"$CACHE/iris-build.lock"  # one iris build at a time
flock 8
HASH="$(src_hash)"
if [[ $FORCE == 0 ]] && have_image "$IMAGE" \
   && [[ "$(docker image inspect -f '{{index .Config.Labels "inference.src-hash"}}' "$IMAGE")" == "$HASH" ]]; then
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
site="$CACHE/iris-site/$(printf '%s\n' site-recipe-2 "${PY_PKGS[@]}" | sha256sum | cut -c1-12)"
if [[ ! -f $site/.complete ]]; then
  python3 -m pip --version >/dev/null 2>&1 || { log "installing python3-pip (apt-get)"; apt_install python3-pip || die "no pip for python3"; }
  log "pip install --target ${PY_PKGS[*]} (cp311 manylinux wheels)"
  t0=$SECONDS
  rm -rf "$site"
  mkdir -p "$site"
  python3 -m pip install -q --disable-pip-version-check --no-compile --target "$site" \
      --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
      "${PY_PKGS[@]}" >"$WORK/pip.log" 2>&1 \
    || { cat "$WORK/pip.log" >&2; die "pip install failed"; }
  # (keep the packages' tests/ folders: numpy.testing imports numpy._core.tests)
  rm -rf "${site:?}/bin"
  # byte-compile here, once (the image's non-root user cannot write .pyc files,
  # and compiling in the Dockerfile costs ~15 s per build); unchecked-hash .pyc
  # files do not depend on mtimes, and 3.11's bytecode matches bookworm's 3.11
  if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site" >/dev/null \
      || die "compileall of $site failed"
  else
    log "warning: host python3 is not 3.11: site-packages left uncompiled (slower MODEL_BACKEND=sklearn start)"
  fi
  touch "$site/.complete"
  log "cached site-packages $site in $((SECONDS - t0)) s"
fi

# ---- (c) docker build ----
ctx="$WORK/ctx"
mkdir -p "$ctx"
cp "$HERE/Dockerfile" "$HERE/requirements.txt" "$HERE/server.py" "$HERE/train.py" "$HERE/example-request.json" "$ctx/"
# hard links are enough for a build context (same file system as the cache)
mkdir -p "$ctx/prepared"
cp -al "$site" "$ctx/prepared/site-packages" 2>/dev/null || cp -a "$site" "$ctx/prepared/site-packages"
rm -f "$ctx/prepared/site-packages/.complete"
log "docker build $IMAGE"
t0=$SECONDS
DOCKER_BUILDKIT=0 docker build --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "inference.src-hash=$HASH" -t "$IMAGE" "$ctx" >"$WORK/build.log" 2>&1 \
  || { tail -n 30 "$WORK/build.log" >&2; die "docker build $IMAGE failed"; }
trained="$(grep -o 'trained iris-logreg.*accuracy [0-9.]*' "$WORK/build.log" | head -n1 || true)"
log "built $IMAGE in $((SECONDS - t0)) s${trained:+ ($trained)}"
