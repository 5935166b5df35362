#!/usr/bin/env bash
# Throwaway PostgreSQL for tests.
#   scripts/postgres.sh start   # ensure it runs and database inference_test exists
#   scripts/postgres.sh stop    # stop the throwaway cluster (keeps its data dir)
#   scripts/postgres.sh url     # print the SQLAlchemy URL
# If TEST_DATABASE_URL is set, that server is used instead: start only checks
# it with psql, stop does nothing, url prints it.
set -euo pipefail

CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
PGDIR="$CACHE/pg"
PORT="${PGPORT_TEST:-55432}"
DBNAME=inference_test
URL="postgresql+psycopg2://postgres@127.0.0.1:${PORT}/${DBNAME}"

log() { echo "postgres: $*" >&2; }
die() { echo "postgres: ERROR: $*" >&2; exit 1; }
usage() { echo "usage: $0 start|stop|url" >&2; exit 2; }

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

find_bindir() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/pg_ctl ]] || continue
    # keep the highest major version (glob sorts 10 < 9, so compare numerically)
    if [[ -z $best ]] || (( $(basename "$(dirname "$d")") > $(basename "$(dirname "$best")") )); then
      best=$d
    fi
  done
  [[ -n $best ]] && echo "$best"
}

as_pg() { runuser -u postgres -- "$@"; }

cmd="${1:-}"
[[ $# -eq 1 ]] || usage

if [[ -n "${TEST_DATABASE_URL:-}" ]]; then
  case "$cmd" in
    url) echo "$TEST_DATABASE_URL" ;;
    stop) log "TEST_DATABASE_URL is set; nothing to stop" ;;
    start)
      command -v psql >/dev/null 2>&1 || die "psql not found (apt-get install -y postgresql-client)"
      # psql does not understand the SQLAlchemy driver suffix (+psycopg2)
      libpq_url="$(echo "$TEST_DATABASE_URL" | sed -E 's#^postgres(ql)?\+[a-z0-9_]+://#postgresql://#')"
      psql "$libpq_url" -qAtc 'select 1' >/dev/null 2>&1 \
        || die "cannot connect to TEST_DATABASE_URL with psql"
      log "TEST_DATABASE_URL answers"
      ;;
    *) usage ;;
  esac
  exit 0
fi

case "$cmd" in
  url) echo "$URL"; exit 0 ;;
  start|stop) ;;
  *) usage ;;
esac

BIN="$(find_bindir || true)"

if [[ $cmd == stop ]]; then
  if [[ -n $BIN && -f $PGDIR/postmaster.pid ]] && as_pg "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$PGDIR" -m fast -w stop >/dev/null
    log "stopped cluster in $PGDIR"
  else
    log "not running"
  fi
  exit 0
fi

# ---- start ----
[[ $(id -u) -eq 0 ]] || die "must run as root (uses runuser -u postgres); or set TEST_DATABASE_URL"

if [[ -z $BIN ]]; then
  log "installing postgresql (apt-get)"
  apt_install postgresql || die "apt-get install postgresql failed"
  BIN="$(find_bindir || true)"
  [[ -n $BIN ]] || die "no /usr/lib/postgresql/*/bin/initdb after installing postgresql"
fi
command -v psql >/dev/null 2>&1 || PSQL="$BIN/psql"
PSQL="${PSQL:-psql}"

if ! id -u postgres >/dev/null 2>&1; then
  log "creating system user postgres"
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# one start at a time (initdb must not race)
mkdir -p "$CACHE"
exec 9>"$CACHE/postgres.lock"
flock 9

# the postgres user must be able to reach $PGDIR: make every parent traversable
d="$CACHE"
while [[ $d != / ]]; do
  if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then chmod o+x "$d"; fi
  d="$(dirname "$d")"
done

if [[ ! -s $PGDIR/PG_VERSION ]]; then
  log "initdb $PGDIR ($("$BIN/initdb" --version | awk '{print $3}'))"
  rm -rf "$PGDIR"
  mkdir -p "$PGDIR"
  chown postgres: "$PGDIR"
  chmod 700 "$PGDIR"
  as_pg "$BIN/initdb" -D "$PGDIR" -U postgres --auth=trust -E UTF8 --no-locale >"$CACHE/initdb.log" 2>&1 \
    || die "initdb failed; see $CACHE/initdb.log"
  cat >>"$PGDIR/postgresql.conf" <<CONF
# --- inference-service test tuning (not for production) ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi

if as_pg "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
  log "already running on 127.0.0.1:$PORT"
else
  # the port/socket options are also given on the command line so that a
  # changed PGPORT_TEST applies to an existing cluster
  # 9>&-: the server must not inherit (and hold forever) the lock on fd 9
  as_pg "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w -t 30 \
      -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null 9>&- \
    || die "pg_ctl start failed; see $PGDIR/server.log: $(tail -n 2 "$PGDIR/server.log" 2>/dev/null | tr '\n' ' ')"
  log "started on 127.0.0.1:$PORT (data $PGDIR)"
fi

q() { "$PSQL" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAtX "$@"; }
if [[ "$(q -c "select 1 from pg_database where datname='$DBNAME'")" != 1 ]]; then
  q -c "create database $DBNAME" >/dev/null
  log "created database $DBNAME"
fi
