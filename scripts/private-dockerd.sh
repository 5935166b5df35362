#!/usr/bin/env bash
# A private Docker engine, for tests that stop an engine on purpose: never the shared one.
#
#   private-dockerd.sh start NAME [OWNER_PID]  start (or find running) instance NAME; print its DOCKER_HOST
#   private-dockerd.sh stop NAME               stop its dockerd (and the containerd it runs); data is kept,
#                                              `start` brings the same engine back
#   private-dockerd.sh clean NAME              stop it and remove all it made: processes, mounts, bridge, files
#
# An instance has its own dockerd with its own socket, data root, exec root, pidfile and
# daemon.json, the containerd that dockerd starts under its exec root, and its own bridge
# (pdocker<N>, 10.231.<N>.1/24, made here: never docker0). It writes no iptables rules and
# changes no sysctl: ports are published on loopback by docker-proxy, which reaches the
# containers over the bridge. Everything lives under $CACHE/dockerd/NAME.
# OWNER_PID (default: the caller's parent) is the process the instance belongs to: once that
# process is gone, the next `start` of any instance cleans it up (after a crashed test run).
# Root only.
set -euo pipefail

CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
INSTANCES="$CACHE/dockerd"
SUBNET_PREFIX=10.231
log() { echo "private-dockerd: $*" >&2; }
die() { echo "private-dockerd: ERROR: $*" >&2; exit 1; }

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
command=$1 name=$2 owner=${3:-$PPID}
[[ $name =~ ^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$ && ${#name} -le 40 ]] \
  || die "instance name must be letters and digits, joined by single . _ or -, at most 40, got '$name'"
[[ $(id -u) -eq 0 ]] || die "a private dockerd needs root"
command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 \
  || die "dockerd and docker are needed (bash scripts/docker-engine.sh installs them)"
if ! command -v ip >/dev/null 2>&1 || ! command -v ps >/dev/null 2>&1; then  # not in slim images
  log "installing iproute2 and procps (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq iproute2 procps >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq iproute2 procps >/dev/null; }
fi

home_of() { echo "$INSTANCES/$1"; }

# -- processes of an instance, found by its own paths in their command lines --------------------------
pids_of() {  # pids of program $1 (its comm, as the kernel cuts it) whose command line contains $2
  local comm=$1 needle=$2 entry
  for entry in /proc/[0-9]*; do
    [[ $(cat "$entry/comm" 2>/dev/null) == "$comm" ]] || continue
    if tr '\0' ' ' 2>/dev/null <"$entry/cmdline" | grep -qF -- "$needle"; then
      echo "${entry#/proc/}"
    fi
  done
}

daemon_pid() {  # the running dockerd of instance home $1, if any
  local home=$1 pid
  pid=$(cat "$home/docker.pid" 2>/dev/null || true)
  [[ -n $pid ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--exec-root $home/exec" \
    && echo "$pid"
  return 0
}

running() {  # pid $1 exists and is not a zombie
  [[ -r /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]
}

answers() { timeout 10 docker -H "unix://$1/docker.sock" version >/dev/null 2>&1; }

wait_gone() {  # pid, seconds
  local _
  for _ in $(seq 1 $(($2 * 10))); do running "$1" || return 0; sleep 0.1; done
  return 1
}

stop_daemon() {
  local home=$1 pid
  pid=$(daemon_pid "$home")
  if [[ -n $pid ]]; then
    kill -TERM "$pid"
    wait_gone "$pid" 60 || { log "dockerd $pid ignored SIGTERM for 60 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  # the containerd it ran, if dockerd did not take it along
  for pid in $(pids_of containerd "$home/exec/containerd/containerd.toml"); do
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  done
}

kill_leftovers() {  # container shims (and so their containers) of a dead instance
  local home=$1 shim child
  for shim in $(pids_of containerd-shim "-address $home/exec/containerd/containerd.sock"); do
    for child in $(ps -o pid= --ppid "$shim"); do
      kill -KILL "$child" 2>/dev/null || true  # a container's init: its whole pid namespace goes with it
    done
    kill -KILL "$shim" 2>/dev/null || true
  done
}

unmount_all() {  # every mount below the instance home, deepest first
  local home=$1 point
  while read -r point; do
    umount "$point" 2>/dev/null || umount -l "$point" 2>/dev/null || true
  done < <(awk -v h="$home/" 'index($5, h) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  if awk -v h="$home/" 'index($5, h) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    die "mounts below $home remain; not removing it"
  fi
}

remove_bridge() {
  local home=$1 bridge
  bridge=$(cat "$home/bridge" 2>/dev/null || true)
  if [[ -n $bridge ]] && ip link show "$bridge" >/dev/null 2>&1; then
    ip link delete "$bridge" type bridge
  fi
  rm -f "$home/bridge"
}

clean() {
  local home=$1
  [[ -d $home ]] || return 0
  stop_daemon "$home"
  kill_leftovers "$home"
  unmount_all "$home"
  remove_bridge "$home"
  rm -rf --one-file-system "$home"
}

sweep_orphans() {  # instances whose owner process is gone (a crashed or killed test run)
  local home owner_pid
  for home in "$INSTANCES"/*/; do
    home=${home%/}
    [[ -f $home/owner ]] || continue
    owner_pid=$(cat "$home/owner")
    if ! running "$owner_pid"; then
      log "cleaning up instance $(basename "$home") (its owner $owner_pid is gone)"
      clean "$home"
    fi
  done
}

# -- its bridge: the first free 10.231.N.0/24 ----------------------------------------------------------
ensure_bridge() {
  local home=$1 bridge n
  bridge=$(cat "$home/bridge" 2>/dev/null || true)
  if [[ -n $bridge ]] && ip link show "$bridge" >/dev/null 2>&1; then
    ip link set "$bridge" up
    return 0
  fi
  for n in $(seq 1 254); do
    bridge="pdocker$n"
    ip link show "$bridge" >/dev/null 2>&1 && continue
    ip -4 -o addr show | grep -qF " $SUBNET_PREFIX.$n." && continue
    ip route show | grep -qF "$SUBNET_PREFIX.$n." && continue
    ip link add name "$bridge" type bridge
    ip addr add "$SUBNET_PREFIX.$n.1/24" dev "$bridge"
    ip link set "$bridge" up
    echo "$bridge" >"$home/bridge"
    return 0
  done
  die "no free subnet $SUBNET_PREFIX.N.0/24 for a bridge"
}

start() {
  local home=$1 pid
  mkdir -p "$INSTANCES"
  exec 9>"$INSTANCES/.lock"
  flock 9  # one start at a time: the choice of a free subnet, the sweep
  sweep_orphans
  mkdir -p "$home"
  echo "$owner" >"$home/owner"
  pid=$(daemon_pid "$home")
  if [[ -z $pid ]]; then
    # what a dead dockerd of this instance left: its containers' shims, mounts, pidfile, socket
    stop_daemon "$home"
    kill_leftovers "$home"
    unmount_all "$home"
    rm -f "$home/docker.pid" "$home/docker.sock"
    ensure_bridge "$home"
    [[ -f $home/daemon.json ]] || echo "{\"deprecated-key-path\": \"$home/key.json\"}" >"$home/daemon.json"
    # close the lock (9) and the callers' lock fd (8): a daemon holding them would block later runs
    setsid dockerd \
      --config-file "$home/daemon.json" \
      --host "unix://$home/docker.sock" \
      --data-root "$home/data" \
      --exec-root "$home/exec" \
      --pidfile "$home/docker.pid" \
      --bridge "$(cat "$home/bridge")" \
      --iptables=false --ip-masq=false --ip-forward=false \
      --containerd-namespace "private-$name" --containerd-plugins-namespace "private-$name-plugins" \
      >>"$home/dockerd.log" 2>&1 </dev/null 8>&- 9>&- &
  fi
  local _
  for _ in $(seq 1 60); do
    if answers "$home"; then
      echo "unix://$home/docker.sock"
      return 0
    fi
    sleep 0.5
  done
  die "instance $name did not answer within 30 s; see $home/dockerd.log: $(tail -n 1 "$home/dockerd.log" 2>/dev/null || true)"
}

home=$(home_of "$name")
case $command in
  start) start "$home" ;;
  stop) stop_daemon "$home" ;;
  clean) clean "$home" ;;
  *) usage ;;
esac
