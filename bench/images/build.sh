#!/usr/bin/env bash
# Build inference-bench/fast-echo:1 FROM the locally made base image (examples/models/iris/build.sh
# makes it), when it is missing or its sources changed (image label inference.src-hash).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="inference-bench/fast-echo:1"
BASE_IMAGE="${BASE_IMAGE:-inference-base/python:3.11-bookworm}"

docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || bash "$HERE/../../examples/models/iris/build.sh"
hash="$( { echo "$BASE_IMAGE"; cat "$HERE/fast-echo/Dockerfile" "$HERE/fast-echo/server.py"; } | sha256sum | cut -c1-16)"
if docker image inspect "$IMAGE" >/dev/null 2>&1 \
   && [[ "$(docker image inspect -f '{{index .Config.Labels "inference.src-hash"}}' "$IMAGE")" == "$hash" ]]; then
  exit 0
fi
log="$(mktemp)"
if ! DOCKER_BUILDKIT=0 docker build --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" \
     --label "inference.src-hash=$hash" -t "$IMAGE" "$HERE/fast-echo" >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  rm -f "$log"
  echo "bench: docker build $IMAGE failed" >&2
  exit 1
fi
rm -f "$log"
echo "bench: built $IMAGE" >&2
