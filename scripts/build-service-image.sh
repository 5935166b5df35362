#!/usr/bin/env bash
# Build the service image without any registry or PyPI access from inside a container:
#  (a) the base image: inference-base/python:3.11-bookworm, made by examples/models/iris/build.sh
#      (debootstrap minbase + python3, docker import) when it is missing
#  (b) requirements.txt pip-installed on the host (cp311 manylinux wheels) into a cached folder
#  (c) docker build of a context holding the service's files and prepared/site-packages
# The image is rebuilt only when its inputs changed (hash label inference.src-hash) or with --force.
# Usage: scripts/build-service-image.sh [--force]       prints the image name on stdout
# Environment: SERVICE_IMAGE (default inference-service:dev), BASE_IMAGE (default the local base),
#              INFERENCE_CACHE_DIR (default $HOME/.cache/inference-service).
# With a registry and PyPI, plain `docker build -t inference-service .` does the same (Dockerfile).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
IMAGE="${SERVICE_IMAGE:-inference-service:dev}"
LOCAL_BASE=inference-base/python:3.11-bookworm
BASE_IMAGE="${BASE_IMAGE:-$LOCAL_BASE}"
# what goes into the image (the Dockerfile's COPY lines)
SOURCES=(Dockerfile requirements.txt wsgi.py gunicorn.conf.py migrations templates static inference_app docker)

LOG_NAME=service-image
# shellcheck source=prepared-image.sh
source "$ROOT/scripts/prepared-image.sh"
force_flag "$@"

"$ROOT/scripts/docker-engine.sh"
mkdir -p "$CACHE"
exec 8>"$CACHE/service-image.lock"  # one build at a time
flock 8

# ---- (a) base image ----
if ! have_image "$BASE_IMAGE"; then
  [[ $BASE_IMAGE == "$LOCAL_BASE" ]] || die "base image $BASE_IMAGE is not on this Docker host"
  log "making the base image $BASE_IMAGE (examples/models/iris/build.sh)"
  "$ROOT/examples/models/iris/build.sh" 8>&-
  have_image "$BASE_IMAGE" || die "examples/models/iris/build.sh did not make $BASE_IMAGE"
fi

src_hash() { # the image's files, this script and the base image's id
  { (cd "$ROOT" && find "${SOURCES[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
       | LC_ALL=C sort -z | xargs -0 sha256sum)
    cat "$ROOT/scripts/build-service-image.sh" "$ROOT/scripts/prepared-image.sh" | sha256sum
    docker image inspect -f '{{.Id}}' "$BASE_IMAGE"
  } | sha256sum | cut -c1-16
}
HASH="$(src_hash)"
if [[ $FORCE == 0 ]] && image_current "$IMAGE" "$HASH"; then
  echo "$IMAGE"
  exit 0
fi

# ---- (b) site-packages ----
# the folder name changes with requirements.txt and with this recipe's version (the Dockerfile's
# deps stage drops bin/ and byte-compiles)
site="$(prepared_site "$CACHE/service-site" site-recipe-1 0 "$ROOT/requirements.txt")"

# ---- (c) docker build ----
WORK="$(mktemp -d "$CACHE/service-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ctx="$WORK/ctx"
mkdir -p "$ctx"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - "${SOURCES[@]}" | tar -C "$ctx" -xf -
log "docker build $IMAGE from $BASE_IMAGE"
t0=$SECONDS
previous="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
build_prepared "$IMAGE" "$BASE_IMAGE" "$HASH" "$site" "$ctx"
# the image this one replaces is left untagged: remove it (kept if a container still uses it)
if [[ -n $previous && $previous != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
log "built $IMAGE in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$IMAGE"
