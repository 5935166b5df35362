#!/usr/bin/env bash
# `make test`: provision the real parts (Docker engine, PostgreSQL, test images, Kafka broker,
# Chromium), then run the whole suite. Already-running services are used when their
# addresses are given: TEST_DATABASE_URL, DOCKER_HOST, KAFKA_BOOTSTRAP_SERVERS.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash scripts/provision.sh --env)"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$DATABASE_URL}"
unset DATABASE_URL  # the suite builds its own apps; nothing may fall back to a developer's database

# The shared broker; tests that stop a broker or need one with SASL start private ones of their
# own on free ports (tests/kafka_support.py PrivateBroker), stopped when pytest exits, even by a crash.
bash scripts/kafka.sh start >&2
TEST_KAFKA_BOOTSTRAP_SERVERS="$(bash scripts/kafka.sh bootstrap)"
export TEST_KAFKA_BOOTSTRAP_SERVERS
unset KAFKA_BOOTSTRAP_SERVERS

# a one-node Kubernetes (built once, cached) with the test images, for RUNTIME=kubernetes
bash scripts/kubernetes.sh up >&2
bash scripts/kubernetes.sh import inference-test/{echo,crash,never-healthy,slow}:1 inference-examples/iris:1 >&2
TEST_KUBECONFIG="$(bash scripts/kubernetes.sh env | sed -n 's/^KUBECONFIG=//p')"
export TEST_KUBECONFIG

bash scripts/chromium.sh >&2
bash scripts/compose-tool.sh >&2

mkdir -p test-artifacts
exec .venv/bin/python -m pytest tests -p no:cacheprovider -q -ra --timeout=900 -W ignore::DeprecationWarning "$@"
