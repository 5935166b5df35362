#!/usr/bin/env bash
# `make run`: the service on its embedded defaults (SQLite, the local Docker engine, the
# example model registered), served by gunicorn on http://localhost:${PORT:-8002}/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if ! bash scripts/docker-engine.sh; then
  echo "make run: no Docker engine is reachable: start one (or set DOCKER_HOST) and run make run again" >&2
  exit 1
fi
if [[ "${EXAMPLE_MODEL:-true}" != "false" ]]; then
  bash examples/models/iris/build.sh
fi

export FLASK_APP=wsgi
"$BIN/flask" db upgrade
"$BIN/flask" tokens ensure-admin   # prints an admin token on the very first start only
if [[ "${EXAMPLE_MODEL:-true}" != "false" ]]; then
  "$BIN/flask" seed-example
fi

worker_pid=""
if [[ "${DATABASE_URL:-sqlite}" == postgresql* && "${RUN_BACKGROUND:-auto}" != "web" ]]; then
  # PostgreSQL: the background jobs run in their own process role.
  "$BIN/flask" worker &
  worker_pid=$!
  trap '[[ -n "$worker_pid" ]] && kill "$worker_pid" 2>/dev/null || true' EXIT INT TERM
fi

echo "make run: serving on http://localhost:${PORT:-8002}/ (Ctrl-C stops)" >&2
"$BIN/gunicorn" -c gunicorn.conf.py wsgi:app
