#!/bin/sh
# The image's entrypoint.
#   web (default)  wait for the database, migrate once, then gunicorn as PID 1
#   worker         the same, then the background role (`flask worker`) as PID 1
#   anything else  run as given (e.g. `flask shell`, `sh`)
# MIGRATE_ON_START=false skips the migration step; DATABASE_WAIT_SECONDS (default 60) bounds
# the wait for the database.
set -eu

role="${1:-web}"
case "$role" in
  web|worker) ;;
  *) exec "$@" ;;
esac

if [ "${MIGRATE_ON_START:-true}" != "false" ]; then
  # every container may do this at once: an advisory lock lets one migrate, the rest wait
  flask migrate-once --wait "${DATABASE_WAIT_SECONDS:-60}"
fi

if [ "$role" = worker ]; then
  exec flask worker
fi
# /dev/shm: the workers' heartbeat files stay off the overlay file system
exec gunicorn --worker-tmp-dir /dev/shm -c gunicorn.conf.py wsgi:app
