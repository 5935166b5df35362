#!/usr/bin/env bash
# `make bench`: provision the real parts like `make test` does (Docker engine, PostgreSQL, the
# example model image, a Kafka broker), plus wrk and the fast echo model image, then run the
# benchmark suite, which prints a Markdown table and writes docs/benchmarks.md.
# Arguments go to `python -m bench` (e.g. --only warm,cold --reps 3).
# Already-running services are used when their addresses are given: TEST_DATABASE_URL,
# DOCKER_HOST, KAFKA_BOOTSTRAP_SERVERS.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

eval "$(bash scripts/provision.sh --env)"
bash scripts/kafka.sh start >&2
BENCH_KAFKA_BOOTSTRAP_SERVERS="$(bash scripts/kafka.sh bootstrap)"
export BENCH_KAFKA_BOOTSTRAP_SERVERS
unset KAFKA_BOOTSTRAP_SERVERS

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench: installing wrk (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null; }
fi
bash bench/images/build.sh >&2

exec "$BIN/python" -m bench "$@"
