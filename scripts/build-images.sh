#!/usr/bin/env bash
# Build the images the tests run (no registry needed):
#   inference-test/{echo,never-healthy,crash,slow}:1  FROM scratch + a static busybox
#   inference-examples/iris:1                        examples/models/iris/build.sh
# An image is built only when `docker image inspect` fails or its sources
# changed (hash label inference.src-hash), or with --force.
# Usage: scripts/build-images.sh [--force] [--verify] [NAME...]
#   NAME: echo never-healthy crash slow iris (default: all)
#   --verify: run each test image once and check its HTTP behaviour with curl
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
TEST_IMAGES=(echo never-healthy crash slow)

LOG_NAME=build-images
# shellcheck source=prepared-image.sh
source "$ROOT/scripts/prepared-image.sh"  # log, die, apt_install, image_current

FORCE=0 VERIFY=0 NAMES=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --verify) VERIFY=1 ;;
    echo|never-healthy|crash|slow|iris) NAMES+=("$arg") ;;
    *) echo "usage: $0 [--force] [--verify] [echo|never-healthy|crash|slow|iris ...]" >&2; exit 2 ;;
  esac
done
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=("${TEST_IMAGES[@]}" iris)

"$ROOT/scripts/docker-engine.sh"
mkdir -p "$CACHE"
# one build at a time per cache (a second run waits, then finds the images built)
exec 9>"$CACHE/build-images.lock"
flock 9

is_static() { # no ELF interpreter => statically linked
  if command -v ldd >/dev/null 2>&1; then
    if ldd "$1" >/dev/null 2>&1; then return 1; fi
  else
    if grep -q 'ld-linux' "$1"; then return 1; fi
  fi
  return 0
}

# A static busybox from Debian's busybox-static package, cached in $CACHE/busybox.
busybox_bin() {
  local bb="$CACHE/busybox/busybox" tmp
  if [[ -x $bb ]]; then echo "$bb"; return; fi
  mkdir -p "$CACHE/busybox"
  if [[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" == "install ok installed" ]] \
     && [[ -x /bin/busybox ]] && is_static /bin/busybox; then
    cp /bin/busybox "$bb.tmp"
  else
    log "fetching Debian busybox-static (apt-get download)"
    tmp="$(mktemp -d)"
    ( cd "$tmp" && { apt-get download busybox-static >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get download busybox-static >/dev/null 2>&1; }; } ) \
      || { rm -rf "$tmp"; die "apt-get download busybox-static failed"; }
    dpkg -x "$tmp"/busybox-static_*.deb "$tmp/x"
    cp "$tmp/x/bin/busybox" "$bb.tmp"
    rm -rf "$tmp"
  fi
  is_static "$bb.tmp" || die "busybox from busybox-static is not statically linked"
  chmod 755 "$bb.tmp"
  mv "$bb.tmp" "$bb"
  echo "$bb"
}

src_hash() { # over the image's sources, the shared gateway and the busybox binary
  local dir="$ROOT/tests/images/$1"
  { (cd "$dir" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    (cd "$dir" && find . -type f -perm -u+x | LC_ALL=C sort)
    sha256sum <"$ROOT/tests/images/common/serve.sh"
    sha256sum <"$BUSYBOX"
  } | sha256sum | cut -c1-16
}

build_test_image() {
  local name=$1 image="inference-test/$1:1" hash ctx t0
  hash="$(src_hash "$name")"
  if [[ $FORCE == 0 ]] && image_current "$image" "$hash"; then
    return 0
  fi
  t0=$(date +%s%N)
  ctx="$(mktemp -d)"
  cp -a "$ROOT/tests/images/$name/." "$ctx/"
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp"
  chmod 1777 "$ctx/rootfs/tmp"
  cp "$BUSYBOX" "$ctx/rootfs/bin/busybox"
  local applet
  for applet in $("$BUSYBOX" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$ctx/rootfs/bin/$applet"
  done
  install -m 755 "$ROOT/tests/images/common/serve.sh" "$ctx/rootfs/bin/serve"
  if ! DOCKER_BUILDKIT=0 docker build --force-rm --label "inference.src-hash=$hash" -t "$image" "$ctx" >"$ctx.log" 2>&1; then
    tail -n 20 "$ctx.log" >&2
    rm -rf "$ctx" "$ctx.log"
    die "docker build $image failed"
  fi
  rm -rf "$ctx" "$ctx.log"
  log "built $image in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

# ---- verification (--verify) ----
CIDS=()
cleanup() { [[ ${#CIDS[@]} -eq 0 ]] || docker rm -f "${CIDS[@]}" >/dev/null 2>&1 || true; }
trap cleanup EXIT

PORT=""
run_published() { # image [docker run args...] -> sets PORT (no subshell: CIDS must grow here)
  local image=$1 cid; shift
  cid="$(docker run -d -p 127.0.0.1::8080 "$@" "$image")"
  CIDS+=("$cid")
  PORT="$(docker port "$cid" 8080/tcp | head -n1 | sed 's/.*://')"
}
wait_http() { # url expected-code
  for _ in $(seq 1 100); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" == "$2" ]] && return 0
    sleep 0.05
  done
  return 1
}
expect() { # description actual expected
  [[ "$2" == "$3" ]] || die "verify: $1: got [$2], want [$3]"
}

need_curl() { command -v curl >/dev/null 2>&1 || apt_install curl || die "curl is needed for --verify"; }

verify_echo() {
  local p out
  run_published inference-test/echo:1 -e MODEL_LABEL=lbl
  p=$PORT
  wait_http "http://127.0.0.1:$p/health" 200 || die "verify: echo /health never answered 200"
  expect "echo /health" "$(curl -s "http://127.0.0.1:$p/health")" '{"status":"ok"}'
  expect "echo /v2/health/ready" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v2/health/ready")" 200
  out="$(curl -s -D - -H 'Content-Type: application/json' -d '{"x": [1, 2]}' "http://127.0.0.1:$p/predict" | tr -d '\r')"
  expect "echo /predict" "$(tail -n1 <<<"$out")" '{"echo": {"x": [1, 2]}, "model": "lbl"}'
  grep -qi '^Content-Type: application/json$' <<<"$out" || die "verify: echo /predict: no JSON content type"
  expect "echo /v2/models/echo/infer" "$(curl -s -d '[1]' "http://127.0.0.1:$p/v2/models/echo/infer")" '{"echo": [1], "model": "lbl"}'
  curl -s -H 'X-Request-ID: verify-123' "http://127.0.0.1:$p/headers" | grep -qx 'HTTP_X_REQUEST_ID=verify-123' \
    || die "verify: echo /headers does not show X-Request-ID"
  expect "echo unknown path" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/nope")" 404
  log "verified inference-test/echo:1"
}

verify_never-healthy() {
  local p
  run_published inference-test/never-healthy:1
  p=$PORT
  wait_http "http://127.0.0.1:$p/health" 503 || die "verify: never-healthy /health did not answer 503"
  log "verified inference-test/never-healthy:1"
}

verify_slow() {
  local p t0
  run_published inference-test/slow:1
  p=$PORT
  wait_http "http://127.0.0.1:$p/health" 200 || die "verify: slow /health never answered 200"
  t0=$(date +%s%N)
  expect "slow /predict?seconds=1" "$(curl -s -X POST -d '{}' "http://127.0.0.1:$p/predict?seconds=1")" '{"slept": 1}'
  (( $(date +%s%N) - t0 >= 1000000000 )) || die "verify: slow /predict did not sleep"
  log "verified inference-test/slow:1"
}

verify_crash() {
  local cid rc
  cid="$(docker run -d inference-test/crash:1)"
  CIDS+=("$cid")
  rc="$(timeout 10 docker wait "$cid")"
  expect "crash exit code" "$rc" 3
  docker logs "$cid" 2>&1 | grep -q '^fatal: model weights missing at /models/w.bin$' \
    || die "verify: crash did not log the fatal line"
  log "verified inference-test/crash:1"
}

verify_iris() {
  local p out t0 ms
  t0=$(date +%s%N)
  run_published inference-examples/iris:1
  p=$PORT
  wait_http "http://127.0.0.1:$p/health" 200 || die "verify: iris /health never answered 200"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  out="$(curl -s -H 'Content-Type: application/json' \
         --data-binary @"$ROOT/examples/models/iris/example-request.json" "http://127.0.0.1:$p/predict")"
  [[ $out == '{"predictions": ["setosa", "versicolor"], '* ]] || die "verify: iris /predict answered $out"
  expect "iris bad input" "$(curl -s -o /dev/null -w '%{http_code}' -d '{"instances": [[1, 2]]}' "http://127.0.0.1:$p/predict")" 400
  log "verified inference-examples/iris:1 (docker run to healthy: $ms ms)"
}

BUSYBOX=""
for name in "${NAMES[@]}"; do
  if [[ $name == iris ]]; then
    if [[ $FORCE == 1 ]]; then "$ROOT/examples/models/iris/build.sh" --force
    else "$ROOT/examples/models/iris/build.sh"; fi
  else
    [[ -n $BUSYBOX ]] || BUSYBOX="$(busybox_bin)"
    build_test_image "$name"
  fi
done
if [[ $VERIFY == 1 ]]; then
  need_curl
  for name in "${NAMES[@]}"; do "verify_$name"; done
fi
