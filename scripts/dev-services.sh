#!/usr/bin/env bash
# Makes the real stack available on its usual local ports, for development
# and for the real-stack tests:
#   PostgreSQL 127.0.0.1:5432, Redis 127.0.0.1:6379 (started if installed
#   but stopped), and a Kafka-compatible broker on 127.0.0.1:9092: tansu,
#   installed with cargo if missing (about 15 minutes of compiling, once).
#
#   scripts/dev-services.sh          start what is not running, then report
#   scripts/dev-services.sh stop     stop the broker this script started
#
# The broker keeps its data in .dev/tansu/ (override with HIGHLOAD_DEV_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEV_DIR=${HIGHLOAD_DEV_DIR:-$ROOT/.dev}
TANSU_DIR=$DEV_DIR/tansu
KAFKA_PORT=9092

log() { echo "dev-services: $*"; }
die() { echo "dev-services: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # wait_for_port PORT NAME SECONDS
  for _ in $(seq $(($3 * 10))); do
    port_open "$1" && return 0
    sleep 0.1
  done
  die "$2 did not open port $1 within $3 s"
}

start_postgres() {
  if port_open 5432; then log "PostgreSQL is up on 127.0.0.1:5432"; return; fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for_port 5432 PostgreSQL 30
  else
    die "PostgreSQL is not running on 127.0.0.1:5432 and not installed here (apt-get install postgresql)"
  fi
}

create_database() { # the database env.example names, if missing
  command -v psql >/dev/null || return 0
  local db=highload_db out
  # -w: never prompt. psql reads PGPASSWORD (or ~/.pgpass) like the service
  # reads DB_PASSWORD; a stock PostgreSQL install asks for a password on
  # 127.0.0.1, where this machine's CI trusts local connections.
  if ! out=$(psql -w -h 127.0.0.1 -U "${PGUSER:-postgres}" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>&1); then
    if grep -qi "password" <<<"$out"; then
      die "PostgreSQL on 127.0.0.1 wants a password for user ${PGUSER:-postgres}: run with PGPASSWORD=... (the same value as DB_PASSWORD in .env)"
    fi
    log "could not ask PostgreSQL for database $db: $out"
    return 0
  fi
  if ! grep -q 1 <<<"$out"; then
    psql -w -h 127.0.0.1 -U "${PGUSER:-postgres}" -d postgres -qc "CREATE DATABASE $db" >/dev/null \
      && log "created database $db" \
      || log "could not create database $db (create it, or point DATABASE_URL elsewhere)"
  fi
}

start_redis() {
  if port_open 6379; then log "Redis is up on 127.0.0.1:6379"; return; fi
  command -v redis-server >/dev/null \
    || die "Redis is not running on 127.0.0.1:6379 and not installed here (apt-get install redis-server)"
  log "starting Redis"
  mkdir -p "$DEV_DIR"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$DEV_DIR" --logfile "$DEV_DIR/redis.log"
  wait_for_port 6379 Redis 10
}

install_tansu() {
  command -v tansu >/dev/null && return
  [ -x "$HOME/.cargo/bin/tansu" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return; }
  log "installing tansu (a Kafka-compatible broker) with cargo; this compiles for about 15 minutes, once"
  cargo install tansu --locked --features libsql
}

# A broker answers metadata requests (an open port is not enough: a tansu
# whose storage failed keeps its port open).
kafka_answers() {
  command -v tansu >/dev/null || return 0 # another client would be needed; trust the port
  timeout 10 tansu topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1
}

start_kafka() {
  install_tansu
  if port_open $KAFKA_PORT; then
    if kafka_answers; then log "a Kafka broker is up on 127.0.0.1:$KAFKA_PORT"; return; fi
    if pgrep -f "tansu broker.*:$KAFKA_PORT" >/dev/null; then
      log "the tansu broker on port $KAFKA_PORT does not answer; restarting it"
      pkill -f "tansu broker.*:$KAFKA_PORT" || true
      for _ in $(seq 50); do port_open $KAFKA_PORT || break; sleep 0.1; done
    else
      die "something on port $KAFKA_PORT does not answer Kafka requests"
    fi
  fi
  mkdir -p "$TANSU_DIR"
  log "starting tansu on 127.0.0.1:$KAFKA_PORT (data in $TANSU_DIR)"
  (
    cd "$TANSU_DIR"
    nohup setsid tansu broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" \
      >"$TANSU_DIR/tansu.log" 2>&1 &
    echo $! >"$TANSU_DIR/tansu.pid"
  )
  wait_for_port $KAFKA_PORT tansu 30
  kafka_answers || die "tansu started but does not answer; see $TANSU_DIR/tansu.log"
}

stop_kafka() {
  if [ -f "$TANSU_DIR/tansu.pid" ]; then
    kill "$(cat "$TANSU_DIR/tansu.pid")" 2>/dev/null || true
    rm -f "$TANSU_DIR/tansu.pid"
    log "tansu stopped"
  else
    log "no broker started by this script"
  fi
}

case "${1:-start}" in
  start)
    start_postgres
    create_database
    start_redis
    start_kafka
    cat <<MSG
dev-services: ready. Run the service on this stack with
  DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/highload_db \\
  REDIS_URL=redis://127.0.0.1:6379/0 KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT cargo run --release
or copy env.example to .env.
MSG
    ;;
  stop) stop_kafka ;;
  *) die "usage: $0 [start|stop]" ;;
esac
