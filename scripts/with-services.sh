#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster and Redis server on free local ports,
# exporting DATABASE_URL, REDIS_URL and CELERY_BROKER_URL for it, and stops both afterwards.
# Installs Debian's redis-server, postgresql and chromium first if they are missing (needs root).
set -euo pipefail

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v chromium >/dev/null 2>&1 || need_install+=(chromium)  # the browser tests (Playwright)
# make bench-tracking and bench-api: the load generator (only when asked: the tests do not need it)
if [ "${NEED_WRK:-0}" = 1 ] && ! command -v wrk >/dev/null 2>&1; then need_install+=(wrk); fi
command -v pg_ctl >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need_install+=(postgresql)
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Missing ${need_install[*]}: install them (apt-get install ${need_install[*]})." >&2
    exit 1
  fi
  echo "Installing ${need_install[*]} from Debian…" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi
PG_BIN=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")")

work=$(mktemp -d "${TMPDIR:-/tmp}/mailwright-services.XXXXXX")
chmod 755 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# PostgreSQL refuses to run as root: as root, run it as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_port=$(free_port)
redis_port=$(free_port)
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"

cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

as_pg "$PG_BIN/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
# Durability is pointless for a throwaway test cluster: fsync off makes it several times faster.
as_pg "$PG_BIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o \
  "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" --dir "$work" --logfile "$work/redis.log"
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/mailwright"
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export CELERY_BROKER_URL="$REDIS_URL"
echo "services: postgres on $pg_port, redis on $redis_port" >&2
"$@"
