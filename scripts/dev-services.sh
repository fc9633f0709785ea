#!/usr/bin/env bash
# Brings up the real stack on its usual local ports, for development and for
# the real-stack tests, on a fresh machine as on one where it already runs:
#
#   PostgreSQL  127.0.0.1:5432  Debian's package, installed when missing;
#                               user postgres, password postgres, and the
#                               database highload_db (env.example's)
#   replica     127.0.0.1:5433  a streaming replica of that PostgreSQL (hot
#                               standby, copied with pg_basebackup into
#                               .dev/pg-replica), for reads from a replica
#   Redis       127.0.0.1:6379  Debian's package, installed when missing
#   Kafka       127.0.0.1:9092  Apache Kafka in KRaft mode (scripts/kafka.sh:
#                               the version in scripts/kafka/pom.xml, fetched
#                               once from Maven Central with Maven); its
#                               controller on :9093, JMX on :19092
#
# What already answers on a port is left alone. A first run on a new machine
# takes a minute or two (apt-get, about 55 MB of jars); later ones seconds.
#
#   scripts/dev-services.sh          start what is not running, then report
#   scripts/dev-services.sh stop     stop what this script started
#   KAFKA_NODES=3 scripts/dev-services.sh
#                                    a three-node Kafka cluster instead, on
#                                    127.0.0.1:9092, :9094 and :9096 (JMX
#                                    10000 above each)
#                                    (replication factor 3,
#                                    min.insync.replicas=2)
#   PG_REPLICA=0 scripts/dev-services.sh
#                                    no replica
#
# Redis and Kafka keep their data and logs in .dev/ (HIGHLOAD_DEV_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEV_DIR=${HIGHLOAD_DEV_DIR:-$ROOT/.dev}
KAFKA_DIR=$DEV_DIR/kafka
KAFKA_PORT=9092
KAFKA_NODES=${KAFKA_NODES:-1}
DATABASE=highload_db
PG_REPLICA=${PG_REPLICA:-1}
REPLICA_PORT=5433
REPLICA_DIR=$DEV_DIR/pg-replica

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

APT_UPDATED=
apt_install() { # apt_install PACKAGE...: Debian's packages, as root
  [ "$(id -u)" = 0 ] || die "$* missing: install them (apt-get install $*), or run this as root"
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
  if port_open 5432; then log "PostgreSQL is up on 127.0.0.1:5432"; return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(pg_version)" ]; then
    apt_install postgresql
  fi
  local version
  version=$(pg_version)
  [ -n "$version" ] || die "PostgreSQL is installed but has no cluster (pg_createcluster)"
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for_port 5432 PostgreSQL 30
}

as_postgres() { # runs a command as the postgres user (peer authentication)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The tests, the benchmark and env.example connect as postgres/postgres over
# TCP. A fresh Debian cluster has no password for postgres, so it is set,
# through the local socket, when that login fails. Other clusters are left
# as they are (PGPASSWORD tells this script theirs).
prepare_postgres() {
  export PGPASSWORD=${PGPASSWORD:-postgres}
  local login=(psql -X -w -h 127.0.0.1 -U "${PGUSER:-postgres}" -d postgres -tAq)
  if ! "${login[@]}" -c 'SELECT 1' >/dev/null 2>&1; then
    if [ "${PGUSER:-postgres}" = postgres ] && [ "$PGPASSWORD" = postgres ] \
      && as_postgres psql -X -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1; then
      log "set the password of PostgreSQL's user postgres to postgres (as env.example has it)"
    fi
    "${login[@]}" -c 'SELECT 1' >/dev/null 2>&1 \
      || die "cannot log in to PostgreSQL on 127.0.0.1 as ${PGUSER:-postgres}: set PGPASSWORD (the same value as DB_PASSWORD in .env)"
  fi
  if [ -z "$("${login[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" ]; then
    "${login[@]}" -c "CREATE DATABASE $DATABASE" && log "created database $DATABASE"
  fi
}

# A hot standby of the primary on REPLICA_PORT: a copy of its data
# directory (pg_basebackup -R: streaming from 127.0.0.1:5432 as postgres),
# run by the same binaries with a configuration of its own (Debian keeps
# the primary's in /etc, which the copy lacks).
# psql on the primary (pg_primary SQL) and on the replica (pg_replica SQL).
pg_primary() { psql -X -w -h 127.0.0.1 -p 5432 -U "${PGUSER:-postgres}" -d postgres -tAq -c "$1"; }
pg_replica() { psql -X -w -h 127.0.0.1 -p $REPLICA_PORT -U "${PGUSER:-postgres}" -d postgres -tAq -c "$1"; }

# The replica streams from the primary through a replication slot, so that
# the primary keeps the WAL it has not received yet (without one, a replica
# stopped for a while finds that WAL gone and never catches up again).
REPLICA_SLOT=highload_replica

copy_replica() {
  local bin=$1
  rm -rf "$REPLICA_DIR"
  mkdir -p "$REPLICA_DIR"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$REPLICA_DIR"
  chmod 700 "$REPLICA_DIR"
  pg_primary "SELECT pg_drop_replication_slot('$REPLICA_SLOT') FROM pg_replication_slots \
              WHERE slot_name = '$REPLICA_SLOT' AND NOT active" >/dev/null
  log "copying the primary into $REPLICA_DIR (pg_basebackup)"
  as_postgres env PGPASSWORD="$PGPASSWORD" "$bin/pg_basebackup" -h 127.0.0.1 -p 5432 \
    -U "${PGUSER:-postgres}" -D "$REPLICA_DIR" -R -X stream -c fast -C -S "$REPLICA_SLOT"
  as_postgres sh -c "printf '%s\n' \
    'local all all peer' 'host all all 127.0.0.1/32 scram-sha-256' >'$REPLICA_DIR/pg_hba.conf'
    : >'$REPLICA_DIR/pg_ident.conf'
    printf '%s\n' \"port = $REPLICA_PORT\" \"listen_addresses = '127.0.0.1'\" \
      \"unix_socket_directories = '$REPLICA_DIR'\" 'hot_standby = on' \
      'hot_standby_feedback = on' >'$REPLICA_DIR/postgresql.conf'"
}

# Whether the replica streams from the primary within 10 s.
replica_streams() {
  for _ in $(seq 50); do
    [ "$(pg_replica "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")" = 1 ] \
      && return 0
    sleep 0.2
  done
  return 1
}

start_replica() {
  if port_open $REPLICA_PORT; then log "a PostgreSQL replica is up on 127.0.0.1:$REPLICA_PORT"; return; fi
  local bin
  bin=/usr/lib/postgresql/$(pg_version)/bin
  [ -f "$REPLICA_DIR/standby.signal" ] || copy_replica "$bin"
  log "starting a streaming replica on 127.0.0.1:$REPLICA_PORT (log in $REPLICA_DIR/replica.log)"
  as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/replica.log" -w -t 60 start >/dev/null
  wait_for_port $REPLICA_PORT "the PostgreSQL replica" 30
  [ "$(pg_replica 'SELECT pg_is_in_recovery()')" = t ] || die "127.0.0.1:$REPLICA_PORT is not a standby"
  if ! replica_streams; then
    # A copy of another primary, or one whose WAL the primary no longer has.
    log "the replica in $REPLICA_DIR does not stream from the primary; copying it again"
    as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -w -t 60 stop -m fast >/dev/null
    copy_replica "$bin"
    as_postgres "$bin/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_DIR/replica.log" -w -t 60 start >/dev/null
    wait_for_port $REPLICA_PORT "the PostgreSQL replica" 30
    replica_streams || die "the replica on 127.0.0.1:$REPLICA_PORT does not stream (see $REPLICA_DIR/replica.log)"
  fi
}

start_redis() {
  if port_open 6379; then log "Redis is up on 127.0.0.1:6379"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  mkdir -p "$DEV_DIR"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$DEV_DIR" --logfile "$DEV_DIR/redis.log" --pidfile "$DEV_DIR/redis.pid"
  wait_for_port 6379 Redis 10
}

# Node N (1-based) listens on 9092 + 2(N-1) for clients, the next port for
# its controller.
node_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }

# The port answers Kafka's protocol (a port can be open on something else,
# or on a broker that has not finished starting).
kafka_answers() { # kafka_answers PORT
  timeout 30 "$ROOT/scripts/kafka.sh" tool org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$1" --list >/dev/null 2>&1
}

start_kafka() {
  if port_open $KAFKA_PORT; then
    kafka_answers $KAFKA_PORT || die "something on port $KAFKA_PORT does not answer Kafka requests"
    log "a Kafka broker is up on 127.0.0.1:$KAFKA_PORT"
    return
  fi
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  "$ROOT/scripts/kafka.sh" install >/dev/null
  local version voters='' cluster_id n port
  version=$("$ROOT/scripts/kafka.sh" version)
  for n in $(seq "$KAFKA_NODES"); do
    port=$(node_port "$n")
    voters+="${voters:+,}$n@127.0.0.1:$((port + 1))"
  done
  # A cluster's nodes share one id, and keep it across restarts (each
  # node's storage is formatted with it once).
  mkdir -p "$KAFKA_DIR"
  [ -f "$KAFKA_DIR/cluster-id" ] && [ "$(cat "$KAFKA_DIR/nodes" 2>/dev/null)" = "$KAFKA_NODES" ] \
    || { rm -rf "$KAFKA_DIR"/node-*; mkdir -p "$KAFKA_DIR"
         "$ROOT/scripts/kafka.sh" cluster-id >"$KAFKA_DIR/cluster-id"
         echo "$KAFKA_NODES" >"$KAFKA_DIR/nodes"; }
  cluster_id=$(cat "$KAFKA_DIR/cluster-id")
  for n in $(seq "$KAFKA_NODES"); do
    port=$(node_port "$n")
    log "starting Apache Kafka $version, node $n of $KAFKA_NODES, on 127.0.0.1:$port (logs in $KAFKA_DIR/node-$n.log)"
    nohup setsid "$ROOT/scripts/kafka.sh" node "$KAFKA_DIR/node-$n" --id "$n" --port "$port" \
      --voters "$voters" --cluster-id "$cluster_id" --jmx-port $((port + 10000)) >"$KAFKA_DIR/node-$n.log" 2>&1 &
    echo $! >"$KAFKA_DIR/node-$n.pid"
  done
  for n in $(seq "$KAFKA_NODES"); do
    port=$(node_port "$n")
    wait_for_port "$port" "Kafka node $n" 60
    kafka_answers "$port" || die "Kafka node $n does not answer; see $KAFKA_DIR/node-$n.log"
  done
}

stop_pid_file() { # stop_pid_file FILE NAME
  [ -f "$1" ] || return 1
  local pid
  pid=$(cat "$1")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "$2 stopped"
  fi
  rm -f "$1"
}

stop() {
  local stopped=0 file
  for file in "$KAFKA_DIR"/node-*.pid; do
    [ -e "$file" ] || continue
    stop_pid_file "$file" "Kafka $(basename "$file" .pid)" && stopped=1
  done
  stop_pid_file "$DEV_DIR/redis.pid" Redis && stopped=1
  if [ -f "$REPLICA_DIR/postmaster.pid" ]; then
    as_postgres "/usr/lib/postgresql/$(pg_version)/bin/pg_ctl" -D "$REPLICA_DIR" -m fast -w stop >/dev/null \
      && log "the PostgreSQL replica stopped" && stopped=1
  fi
  [ $stopped = 1 ] || log "nothing started by this script is running"
  log "PostgreSQL is left running (pg_ctlcluster VERSION main stop stops it)"
}

case "${1:-start}" in
  start)
    start_postgres
    prepare_postgres
    [ "$PG_REPLICA" = 0 ] || start_replica
    start_redis
    start_kafka
    brokers=$(for n in $(seq "$KAFKA_NODES"); do printf '%s127.0.0.1:%s' "${sep:-}" "$(node_port "$n")"; sep=,; done)
    cat <<MSG
dev-services: ready. Run the service on this stack with
  DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/$DATABASE \\
  REDIS_URL=redis://127.0.0.1:6379/0 KAFKA_BROKERS=$brokers cargo run --release
or copy env.example to .env.
MSG
    [ "$PG_REPLICA" = 0 ] || echo "dev-services: the replica: postgres://postgres:postgres@127.0.0.1:$REPLICA_PORT/$DATABASE (read-only)"
    ;;
  stop) stop ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [start|stop|--help]" ;;
esac
