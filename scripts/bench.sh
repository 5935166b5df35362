#!/usr/bin/env bash
# `make bench`: provision the real parts like `make test` does (Docker engine, PostgreSQL, the
# example model image, a Kafka broker), plus wrk, nginx-light and the bench model image, then
# run the benchmark suite, which prints a Markdown table and writes docs/benchmarks.md.
# Arguments go to `python -m bench` (e.g. --only warm,cold --reps 3; --help lists them).
# Already-running services are used when their addresses are given: TEST_DATABASE_URL,
# DOCKER_HOST, KAFKA_BOOTSTRAP_SERVERS. BENCH_DATABASE names the bench's database
# (default inference_bench).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

eval "$(bash scripts/provision.sh --env)"
bash scripts/kafka.sh start >&2
BENCH_KAFKA_BOOTSTRAP_SERVERS="$(bash scripts/kafka.sh bootstrap)"
export BENCH_KAFKA_BOOTSTRAP_SERVERS
unset KAFKA_BOOTSTRAP_SERVERS

# apt_install PACKAGE: from Debian, without starting the service a package may bring (nginx)
apt_install() {
  echo "bench: installing $1 (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d added=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
  fi
  apt-get install -y -qq "$1" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "$1" >/dev/null; }
  local rc=$?
  [[ $added == 0 ]] || rm -f "$policy"
  return $rc
}
command -v wrk >/dev/null 2>&1 || apt_install wrk
# the warm path's anchor in front of the model: nginx with a keep-alive upstream
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || apt_install nginx-light
bash bench/images/build.sh >&2
# --profile samples the web workers with py-spy (PyPI), installed into the venv on demand
if [[ " $* " == *" --profile "* ]] && [[ ! -x $BIN/py-spy ]]; then
  echo "bench: installing py-spy (pip)" >&2
  "$BIN/pip" install -q --disable-pip-version-check py-spy
fi

exec "$BIN/python" -m bench "$@"
