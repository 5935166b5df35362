#!/usr/bin/env bash
# Ensure a Docker engine answers.
#  - DOCKER_HOST set: only check that it answers.
#  - else /var/run/docker.sock answers: done.
#  - else (root) install docker.io if dockerd is missing, start dockerd in the
#    background (log in $CACHE/dockerd.log) and wait up to 30 s for the socket.
set -euo pipefail

CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
SOCK=/var/run/docker.sock
log() { echo "docker-engine: $*" >&2; }
die() { echo "docker-engine: ERROR: $*" >&2; exit 1; }

answers() { timeout 10 docker version >/dev/null 2>&1; }

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

if [[ -n "${DOCKER_HOST:-}" ]]; then
  command -v docker >/dev/null 2>&1 || die "DOCKER_HOST=$DOCKER_HOST is set but no docker client is on PATH"
  answers || die "DOCKER_HOST=$DOCKER_HOST does not answer (docker version failed)"
  exit 0
fi

if command -v docker >/dev/null 2>&1 && [[ -S $SOCK ]] \
   && DOCKER_HOST="unix://$SOCK" answers; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  [[ $(id -u) -eq 0 ]] || die "dockerd is not installed and not root: install docker.io or set DOCKER_HOST"
  log "installing docker.io (apt-get)"
  apt_install docker.io || die "apt-get install docker.io failed"
fi

if [[ $(id -u) -ne 0 ]]; then
  die "no Docker engine answers at $SOCK and not root to start dockerd (set DOCKER_HOST)"
fi

mkdir -p "$CACHE"
started=0
for _ in $(seq 1 60); do
  if [[ -S $SOCK ]] && DOCKER_HOST="unix://$SOCK" answers; then
    [[ $started == 1 ]] && log "dockerd is up"
    exit 0
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    if [[ $started == 1 ]]; then
      die "dockerd exited; see $CACHE/dockerd.log: $(tail -n 1 "$CACHE/dockerd.log" 2>/dev/null || true)"
    fi
    log "starting dockerd (log: $CACHE/dockerd.log)"
    # close the callers' lock fds (8, 9): a daemon holding them would block later runs
    setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null 8>&- 9>&- &
    started=1
  fi
  sleep 0.5
done
die "dockerd did not answer on $SOCK within 30 s; see $CACHE/dockerd.log: $(tail -n 1 "$CACHE/dockerd.log" 2>/dev/null || true)"
