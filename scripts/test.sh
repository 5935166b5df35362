#!/usr/bin/env bash
# `make test`: provision the real parts (Docker engine, PostgreSQL, test images, Kafka broker,
# Chromium), then run the whole suite. Already-running services are used when their
# addresses are given: TEST_DATABASE_URL, DOCKER_HOST, KAFKA_BOOTSTRAP_SERVERS.
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash scripts/provision.sh --env)"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$DATABASE_URL}"
unset DATABASE_URL  # the suite builds its own apps; nothing may fall back to a developer's database

mkdir -p test-artifacts
.venv/bin/python -m pytest tests -p no:cacheprovider -q -ra --timeout=600 "$@"
