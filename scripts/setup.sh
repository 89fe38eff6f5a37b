#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Python venv with the project, Redis and PostgreSQL running.
# Installs Debian packages only when something is missing (needs root or sudo for that).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=0
apt_install() {
  if [ $apt_updated -eq 0 ]; then $SUDO apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- Python -------------------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { log "Python >= 3.11 is required"; exit 1; }
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PY"
  "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv; "$PY" -m venv .venv; }
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  log "installing the project and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v -i 'warning' || true
  .venv/bin/python -c 'import shared, msgspec, redis, polars, psycopg, supervisor' || { log "pip install failed"; exit 1; }
  rm -f .venv/.installed-*; touch "$stamp"
fi

# --- Redis --------------------------------------------------------------------------------
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
redis_up() { .venv/bin/python -c "import redis,sys; redis.Redis.from_url('$REDIS_URL', socket_timeout=2).ping()" 2>/dev/null; }
if ! redis_up; then
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p "$ROOT/run/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$ROOT/run/redis" \
    --appendonly yes --logfile "$ROOT/run/redis/redis.log" >/dev/null
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  redis_up || { log "redis did not come up"; exit 1; }
fi

# --- PostgreSQL ---------------------------------------------------------------------------
pg_up() { .venv/bin/python -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=3).close()" 2>/dev/null; }
if ! pg_up; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then log "installing postgresql"; apt_install postgresql; fi
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if ! ls /etc/postgresql/"$ver"/main >/dev/null 2>&1; then $SUDO pg_createcluster "$ver" main >/dev/null; fi
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if ! grep -q 'algo-scalper trust' "$hba"; then
    log "allowing trust auth on loopback for local development ($hba)"
    $SUDO sh -c "printf 'host all all 127.0.0.1/32 trust # algo-scalper trust\nhost all all ::1/128 trust # algo-scalper trust\nlocal all all trust # algo-scalper trust\n' | cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba' && chown postgres:postgres '$hba'"
  fi
  log "starting PostgreSQL $ver"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || $SUDO pg_ctlcluster "$ver" main start
  for _ in $(seq 1 100); do pg_up && break; sleep 0.1; done
  pg_up || { log "postgresql did not come up"; exit 1; }
fi
.venv/bin/python - <<'PY'
import psycopg
with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
    have = {r[0] for r in c.execute("select datname from pg_database")}
    for db in ("test",):
        if db not in have:
            c.execute(f'create database "{db}"')
PY
log "ready: redis and postgresql are up, .venv is installed"
