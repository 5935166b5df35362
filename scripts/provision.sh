#!/usr/bin/env bash
# Everything the tests need, started or built: Docker engine, a throwaway
# PostgreSQL, the test model images. Idempotent; a re-run takes about a second.
# Usage:
#   scripts/provision.sh [--force]          status on stderr, export lines last on stdout
#   eval "$(scripts/provision.sh --env)"    stdout has only the export lines
#   --force rebuilds the images (the base rootfs and wheels stay cached)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_ONLY=0
BUILD_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --env) ENV_ONLY=1 ;;
    --force) BUILD_ARGS+=(--force) ;;
    *) echo "usage: $0 [--env] [--force]" >&2; exit 2 ;;
  esac
done

log() { echo "provision: $*" >&2; }
t0=$(date +%s%N)
ms() { echo "$(( ($(date +%s%N) - t0) / 1000000 ))"; }

# every step reports on stderr; stdout stays for the export lines
"$ROOT/scripts/docker-engine.sh" >&2
"$ROOT/scripts/postgres.sh" start >&2
"$ROOT/scripts/build-images.sh" "${BUILD_ARGS[@]}" >&2
db_url="$("$ROOT/scripts/postgres.sh" url)"
log "ready in $(ms) ms: docker engine, postgres ($db_url), images inference-test/{echo,never-healthy,crash,slow}:1 inference-examples/iris:1"

[[ $ENV_ONLY == 1 ]] || echo "# environment for the tests (eval \"\$(scripts/provision.sh --env)\"):"
printf 'export DATABASE_URL=%q\n' "$db_url"
printf 'export TEST_DATABASE_URL=%q\n' "$db_url"
printf 'export DOCKER_HOST=%q\n' "${DOCKER_HOST:-unix:///var/run/docker.sock}"
