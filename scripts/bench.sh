#!/usr/bin/env bash
# Benchmarks the release binary on both stacks and prints a markdown table.
#
#   scripts/bench.sh                    full run: 10 s per line, lists at 10k and 1M rows
#   scripts/bench.sh --quick            2 s per line, 1k rows, no 1M lists (what CI runs)
#   scripts/bench.sh --baseline REF     also builds REF and runs it the same way:
#                                       each line shows new/baseline
#   scripts/bench.sh --stack embedded   one stack only (real or embedded)
#   scripts/bench.sh --only writes,pipeline
#                                       some groups of scenarios only: reads,
#                                       lists, writes, pipeline (drain and
#                                       end-to-end; it drains what writes left)
#
# What it does:
#   1. builds the release binary (`cargo build --release --locked`, in
#      $CARGO_TARGET_DIR); with --baseline, REF too (in its baseline/
#      subdirectory, which the first such run fills), from a git worktree in a
#      temporary directory;
#   2. measures the ceilings the targets are ratios of: pgbench running the
#      transaction of a user create (a user and its outbox row) at -c64 -j2
#      on a scratch database with the service's schema, and SQLite's
#      one-row-per-transaction rate (scripts/bench/sqlite_ceiling.py);
#   3. for each binary and stack, starts the binary on a fresh database
#      (embedded: a new temporary directory; real: a new PostgreSQL database,
#      Redis key prefix, Kafka topic and consumer group, all removed after),
#      records the time from exec to the first 200 on /health/ready and the
#      idle RSS, seeds users and events with SQL (scripts/bench/sql/), and
#      drives every scenario with `wrk -t2` (scripts/bench/wrk/*.lua);
#      /health/live of the same binary is the ceiling of the GETs. In full
#      mode the tables are then grown to 1M rows and the lists run again.
#      Peak RSS is VmHWM of the process at the end; each scenario's record
#      also carries VmHWM after it (peak_rss_kb), to tell which one set it.
#   4. prints the table, writes bench-results/<timestamp>.json and .png
#      (scripts/bench/report.py, matplotlib).
#
# Needs: wrk, psql, pgbench, sqlite3, curl, jq, python3 with venv (the
# Debian packages are installed with apt-get when missing and running as
# root); matplotlib goes into a virtualenv under
# ${HIGHLOAD_TOOLS_DIR:-~/.cache/highload-tools}. The real stack expects
# PostgreSQL, Redis and Apache Kafka on localhost, as
# scripts/dev-services.sh provides them.
#
# Settings (environment): BENCH_SECONDS (per line), BENCH_SMALL_ROWS,
# BENCH_LARGE_ROWS (0 skips the large lists), BENCH_BINARY (run this binary
# instead of building the checkout), BENCH_BASELINE_BINARY (with --baseline:
# REF's release binary, built beforehand), BENCH_PORT, BENCH_LOG_LEVEL
# (the service's LOG_LEVEL, default warn: a log line per request would be
# measured too), BENCH_OUT (output directory), BENCH_PG_URL (a server URL
# without database), BENCH_REDIS_URL, BENCH_KAFKA_BROKERS, BENCH_PROFILE
# (scenario names as in the JSON, or e2e for the end-to-end probe;
# comma-separated, or "all": a system-wide `perf record` during each, its
# report in BENCH_OUT as <time>-<binary>-<stack>-<scenario>[-<rows>].perf.txt;
# the profiler takes a share of the cores, so that run's figures are lower),
# BENCH_READ_URL (a streaming replica's server URL without database, such
# as postgres://postgres:postgres@127.0.0.1:5433 from dev-services.sh: the
# real stack reads from it, DATABASE_READ_URL), BENCH_KAFKA_JMX (the first
# broker's JMX host:port, for its request
# counts; 10000 above its client port by default, as dev-services.sh opens
# it). Any KAFKA_*, OUTBOX_* or WORKER_* variable of the caller's (but the
# broker list, topic and group) is passed to the service, for experiments.
#
# On the real stack it also reports the broker's share of a core during
# each line (broker_cpu) and, after the pipeline, what two idle instances
# cost it: its CPU share and the consumer fetches per second of each. Each
# line records the share of a core the service, PostgreSQL (its primary,
# and apart the replica dev-services.sh runs), Redis and the broker took
# during it (cpu), from which scripts/bench/capacity.py derives
# the capacity model (docs/capacity.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BENCH=$ROOT/scripts/bench

say() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 2; }
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

QUICK=${BENCH_QUICK:-0}
BASELINE=
STACKS="real embedded"
ONLY=${BENCH_ONLY:-}
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --baseline) [ $# -ge 2 ] || die "--baseline needs a git revision"; BASELINE=$2; shift ;;
    --baseline=*) BASELINE=${1#--baseline=} ;;
    --stack) [ $# -ge 2 ] || die "--stack needs real or embedded"; STACKS=$2; shift ;;
    --only) [ $# -ge 2 ] || die "--only needs groups of scenarios (reads,lists,writes,pipeline)"; ONLY=$2; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    -h | --help) usage 0 ;;
    *) echo "bench: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
for s in $STACKS; do
  case $s in real | embedded) ;; *) die "unknown stack $s (real or embedded)" ;; esac
done
for g in ${ONLY//,/ }; do
  case $g in reads | lists | writes | pipeline) ;; *) die "unknown group $g in --only (reads, lists, writes, pipeline)" ;; esac
done
# wants GROUP: whether the run includes that group of scenarios.
wants() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# BENCH_SECONDS=2 alone also means the quick run (small data).
if [ "${BENCH_SECONDS:-10}" -le 3 ]; then QUICK=1; fi
if [ "$QUICK" = 1 ]; then
  DURATION=${BENCH_SECONDS:-2}
  SMALL_ROWS=${BENCH_SMALL_ROWS:-1000}
  LARGE_ROWS=${BENCH_LARGE_ROWS:-0}
  E2E_SAMPLES=10
  DRAIN_TIMEOUT=60
  IDLE_SETTLE=5 IDLE_SECONDS=5
  MODE=quick
else
  DURATION=${BENCH_SECONDS:-10}
  SMALL_ROWS=${BENCH_SMALL_ROWS:-10000}
  LARGE_ROWS=${BENCH_LARGE_ROWS:-1000000}
  E2E_SAMPLES=100
  DRAIN_TIMEOUT=600
  IDLE_SETTLE=15 IDLE_SECONDS=20
  MODE=full
fi
[ "$SMALL_ROWS" -ge 1000 ] || die "BENCH_SMALL_ROWS must be at least 1000 (page 100 of 10)"
E2E_RATE=${BENCH_E2E_RATE:-1000}
PORT=${BENCH_PORT:-18090}
LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
PROFILE=${BENCH_PROFILE:-}
if [ -n "$PROFILE" ]; then
  command -v perf >/dev/null || die "BENCH_PROFILE needs perf (apt-get install linux-perf)"
fi
PG_URL=${BENCH_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432}
READ_URL=${BENCH_READ_URL:-}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
KAFKA_BROKERS=${BENCH_KAFKA_BROKERS:-127.0.0.1:9092}
TOOLS=${HIGHLOAD_TOOLS_DIR:-$HOME/.cache/highload-tools}
MATPLOTLIB=matplotlib==3.9.2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$CARGO_TARGET_DIR" && CARGO_TARGET_DIR=$(cd "$CARGO_TARGET_DIR" && pwd)
OUT_DIR=${BENCH_OUT:-$ROOT/bench-results}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# Names of this run's databases, key prefix, topics and groups.
RUN_ID=$(date -u +%H%M%S)$$
WORK=$(mktemp -d)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
SERVICE_PID=
IDLE_PID= # an instance left idle while another one is measured
PERF_PID= # a profile being recorded (BENCH_PROFILE)
SERVICE_LOG=
CLEANUP=() # commands run at exit, newest first

cleanup() {
  local status=$?
  if [ "$status" != 0 ] && [ -n "$SERVICE_LOG" ] && [ -s "$SERVICE_LOG" ]; then
    echo "bench: the service's last log lines ($SERVICE_LOG):" >&2
    tail -n 20 "$SERVICE_LOG" >&2
  fi
  local pid
  # A profile records the whole machine until stopped: a run that fails
  # mid-scenario must not leave it writing.
  for pid in $SERVICE_PID $IDLE_PID $PERF_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------

# Debian packages providing each command the run needs.
need=(wrk:wrk curl:curl jq:jq sqlite3:sqlite3 python3:python3)
case " $STACKS " in *" real "*) need+=(psql:postgresql-client pgbench:postgresql-client redis-cli:redis-tools) ;; esac
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  else
    die "missing: ${missing[*]} (Debian packages; install them, e.g. sudo apt-get install ${missing[*]})"
  fi
fi

# venv NAME SPEC: a virtualenv in $TOOLS/NAME with SPEC installed, (re)built
# when missing or when SPEC changed since it was built (as
# scripts/check-deploy.sh keeps its tools).
venv() {
  local name=$1 spec=$2 dir=$TOOLS/$1
  if [ -f "$dir/.spec" ] && [ "$(cat "$dir/.spec")" = "$spec" ]; then return 0; fi
  say "installing $spec into $dir"
  mkdir -p "$TOOLS"
  rm -rf "$dir"
  python3 -m venv "$dir" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$dir/bin/pip" install -q --upgrade pip >"$TOOLS/$name.log" 2>&1 || true
  if ! "$dir/bin/pip" install -q "$spec" >>"$TOOLS/$name.log" 2>&1; then
    tail -n 30 "$TOOLS/$name.log" >&2
    rm -rf "$dir"
    die "could not install $spec (log: $TOOLS/$name.log)"
  fi
  echo "$spec" >"$dir/.spec"
}
venv bench "$MATPLOTLIB"
PY=$TOOLS/bench/bin/python

# --- binaries ------------------------------------------------------------

# build SRC DEST [TARGET_DIR]: builds the release binary of the checkout SRC
# in TARGET_DIR (default CARGO_TARGET_DIR) and copies it to DEST. A
# baseline has a target dir of its own: in a shared one, the crate of two
# checkouts is one unit to cargo, and after the baseline's build cargo takes
# the checkout's for fresh and hands back the baseline's binary.
build() {
  local src=$1 dest=$2 target=${3:-$CARGO_TARGET_DIR}
  say "building $(git -C "$src" rev-parse --short HEAD) in $src (CARGO_TARGET_DIR=$target)"
  (cd "$src" && CARGO_TARGET_DIR=$target cargo build --release --locked --quiet) \
    || die "cargo build --release failed in $src"
  cp "$target/release/highload" "$dest"
}

COMMIT=$(git rev-parse HEAD)
DIRTY=$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock migrations build.rs | head -c1)
BINARIES=(new)
BASELINE_COMMIT=
if [ -n "$BASELINE" ]; then
  BASELINE_COMMIT=$(git rev-parse --verify --quiet "$BASELINE^{commit}") \
    || die "--baseline $BASELINE is not a commit of this repository"
  if [ -n "${BENCH_BASELINE_BINARY:-}" ]; then
    # Built beforehand (e.g. while something else ran); the caller vouches
    # that it is REF's release build.
    [ -x "$BENCH_BASELINE_BINARY" ] || die "BENCH_BASELINE_BINARY=$BENCH_BASELINE_BINARY is not an executable"
    say "using $BENCH_BASELINE_BINARY as the build of $BASELINE"
    cp "$BENCH_BASELINE_BINARY" "$WORK/highload-baseline"
  else
    git worktree add --detach --quiet "$WORK/baseline-src" "$BASELINE_COMMIT"
    CLEANUP+=("git -C '$ROOT' worktree remove --force '$WORK/baseline-src'")
    build "$WORK/baseline-src" "$WORK/highload-baseline" "$CARGO_TARGET_DIR/baseline"
  fi
  BINARIES+=(baseline)
fi
if [ -n "${BENCH_BINARY:-}" ]; then
  [ -x "$BENCH_BINARY" ] || die "BENCH_BINARY=$BENCH_BINARY is not an executable"
  say "using $BENCH_BINARY instead of building"
  cp "$BENCH_BINARY" "$WORK/highload-new"
else
  build "$ROOT" "$WORK/highload-new"
fi

# --- ceilings ------------------------------------------------------------

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$PG_URL/postgres" "$@"; }

# record JSON: appends a record to the results.
record() { echo "$1" >>"$RESULTS"; }

# The broker's side of the real stack: the first broker of KAFKA_BROKERS,
# its process (when it runs on this machine) and its request metrics (JMX,
# where scripts/dev-services.sh opens it: 10000 above the client port).
BROKER_PORT=${KAFKA_BROKERS%%,*}; BROKER_PORT=${BROKER_PORT##*:}
BROKER_JMX=${BENCH_KAFKA_JMX:-127.0.0.1:$((BROKER_PORT + 10000))}
CLK_TCK=$(getconf CLK_TCK)
broker_pid() { ss -ltnpH "sport = :$BROKER_PORT" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1; }
# cpu_ticks PID: the process's CPU time so far, user and system, in ticks.
cpu_ticks() { [ -n "$1" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# group_ticks NAME: the CPU time so far of every process called NAME (all
# of PostgreSQL's backends, say), in ticks. A backend that exits during a
# run takes its time with it: the service's pools keep theirs open.
group_ticks() {
  local total=0 pid
  for pid in $(pgrep -x "$1"); do total=$((total + $(cpu_ticks "$pid"))); done
  echo "$total"
}
# replica_ticks: the CPU time so far of the streaming replica that
# scripts/dev-services.sh runs (its postmaster and every process under it:
# WAL replay, and the backends of reads sent there), in ticks; 0 without.
REPLICA_PID_FILE=${HIGHLOAD_DEV_DIR:-$ROOT/.dev}/pg-replica/postmaster.pid
replica_ticks() {
  local total=0 pid postmaster
  postmaster=$(head -n 1 "$REPLICA_PID_FILE" 2>/dev/null) || { echo 0; return; }
  for pid in $postmaster $(pgrep -P "$postmaster"); do total=$((total + $(cpu_ticks "$pid"))); done
  echo "$total"
}
# component_ticks BROKER_PID: the CPU ticks so far of the service,
# PostgreSQL's primary, Redis, the broker and PostgreSQL's replica (the
# last four 0 on the embedded stack), on one line.
component_ticks() {
  if [ "$STACK" = real ]; then
    local replica
    replica=$(replica_ticks)
    echo "$(cpu_ticks "$SERVICE_PID") $(($(group_ticks postgres) - replica)) $(group_ticks redis-server) $(cpu_ticks "$1") $replica"
  else
    echo "$(cpu_ticks "$SERVICE_PID") 0 0 0 0"
  fi
}
# broker_fetches: consumer fetch requests the broker has answered since it
# started (every request version summed), or nothing if JMX is closed.
broker_fetches() {
  scripts/kafka.sh tool org.apache.kafka.tools.JmxTool --one-time true \
    --jmx-url "service:jmx:rmi:///jndi/rmi://$BROKER_JMX/jmxrmi" \
    --object-name 'kafka.network:type=RequestMetrics,name=RequestsPerSec,request=FetchConsumer,*' \
    --attributes Count 2>/dev/null \
    | awk -F, '/^"time"/ { header = 1; next } header { for (i = 2; i <= NF; i++) n += $i; print n + 0; exit }'
}

if [[ " $STACKS " == *" real "* ]]; then
  psql_admin -tAc 'SELECT 1' >/dev/null 2>&1 \
    || die "PostgreSQL does not answer at $PG_URL (scripts/dev-services.sh starts it)"
  redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 \
    || die "Redis does not answer at $REDIS_URL (scripts/dev-services.sh starts it)"
  (exec 3<>"/dev/tcp/${KAFKA_BROKERS%%:*}/${KAFKA_BROKERS##*:}") 2>/dev/null \
    || die "no Kafka broker at $KAFKA_BROKERS (scripts/dev-services.sh starts one)"
fi
# The ceilings of the writes. Before any service runs: pgbench's 64
# connections plus a service's pool would come near PostgreSQL's default
# max_connections (100).
if [[ " $STACKS " == *" real "* ]] && wants writes; then
  db=bench_${RUN_ID}_pgbench
  psql_admin -c "CREATE DATABASE $db"
  CLEANUP+=("psql -X -q '$PG_URL/postgres' -c 'DROP DATABASE IF EXISTS $db WITH (FORCE)'")
  for f in migrations/postgres/*.sql; do psql -X -q -v ON_ERROR_STOP=1 "$PG_URL/$db" -f "$f" >/dev/null; done
  say "ceiling: pgbench -c64 -j2 -T $DURATION, user + outbox row per transaction"
  pgbench -n -c64 -j2 -T "$DURATION" -f "$BENCH/sql/pgbench_user.sql" "$PG_URL/$db" >"$WORK/pgbench.log" 2>&1 \
    || { cat "$WORK/pgbench.log" >&2; die "pgbench failed"; }
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.log" | tail -n 1)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$WORK/pgbench.log")
  [ -n "$tps" ] || { cat "$WORK/pgbench.log" >&2; die "no tps in pgbench's output"; }
  record "{\"kind\":\"ceiling\",\"stack\":\"real\",\"name\":\"pgbench\",\"tps\":$tps,\"mean_ms\":${lat:-null},\"connections\":64}"
  psql_admin -c "DROP DATABASE $db WITH (FORCE)"
fi
if [[ " $STACKS " == *" embedded "* ]] && wants writes; then
  say "ceiling: SQLite, user + outbox row per transaction, $DURATION s"
  out=$("$PY" "$BENCH/sqlite_ceiling.py" "$WORK/ceiling.db" migrations/sqlite "$DURATION")
  record "$(jq -c '. + {kind: "ceiling", stack: "embedded", name: "sqlite"}' <<<"$out")"
  rm -f "$WORK"/ceiling.db*
fi

# --- one binary on one stack ---------------------------------------------

BASE_URL=http://127.0.0.1:$PORT
PASSED_ENV=()
while IFS='=' read -r name value; do
  case $name in
    KAFKA_BROKERS | KAFKA_TOPIC | KAFKA_GROUP_ID) ;;
    KAFKA_* | OUTBOX_* | WORKER_*) PASSED_ENV+=("$name=$value") ;;
  esac
done < <(env)

rss_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# start_service BIN STACK DIR: starts BIN with DIR as its working directory
# (so no .env is read) and only the settings given here; waits for
# /health/ready. Sets SERVICE_PID and STARTUP_MS.
start_service() {
  local bin=$1 stack=$2 dir=$3 t0 code
  local env=(PATH="$PATH" HOME="$HOME" SERVER_HOST=127.0.0.1 SERVER_PORT="$PORT" LOG_LEVEL="$LOG_LEVEL")
  if [ "$stack" = real ]; then
    # Loopback, and comparable with baselines built without TLS: a URL
    # without sslmode would mean prefer, TLS where the server offers it.
    env+=(DATABASE_URL="$PG_URL/$DB" DB_SSLMODE=disable REDIS_URL="$REDIS_URL" CACHE_PREFIX="$PREFIX"
      KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$TOPIC" KAFKA_GROUP_ID="${GROUP:-$TOPIC}")
    [ -z "$READ_URL" ] || env+=(DATABASE_READ_URL="$READ_URL/$DB?sslmode=disable")
  else
    env+=(SQLITE_PATH="$dir/highload.db")
  fi
  # Tuning from the caller's environment (KAFKA_FETCH_WAIT=..., say), for
  # experiments; the run's metadata lists what was passed.
  env+=("${PASSED_ENV[@]}")
  if curl -s -o /dev/null "$BASE_URL/health/live"; then die "port $PORT is taken (set BENCH_PORT)"; fi
  SERVICE_LOG=$dir/log
  t0=$(date +%s%N)
  (cd "$dir" && exec env -i "${env[@]}" "$bin" >"$dir/log" 2>&1) &
  SERVICE_PID=$!
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE_URL/health/ready" || true)
    [ "$code" = 200 ] && break
    if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
      die "the service exited before it was ready"
    fi
    if [ $(($(date +%s%N) - t0)) -gt 120000000000 ]; then
      die "the service was not ready within 120 s"
    fi
  done
  STARTUP_MS=$((($(date +%s%N) - t0) / 1000000))
  # Ready serves requests; the bus may still be preparing its topics, and
  # /health says 503 until it has. The scenarios start once it is 200.
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE_URL/health" || true)" = 200 ] && break
    sleep 0.1
  done
}

stop_service() {
  kill -TERM "$SERVICE_PID"
  local status=0
  wait "$SERVICE_PID" || status=$?
  SERVICE_PID=
  [ "$status" = 0 ] || say "warning: the service exited with status $status after SIGTERM"
}

# seed STACK DIR FROM TO: users and events number FROM..TO, by SQL, into
# the service's own (migrated, idle) database.
seed() {
  local stack=$1 dir=$2 from=$3 to=$4 t0=$SECONDS
  if [ "$stack" = real ]; then
    psql -X -q -v from="$from" -v to="$to" "$PG_URL/$DB" -f "$BENCH/sql/seed_postgres.sql" >/dev/null
    # A build that keeps list totals (a baseline may not) counts the seed too.
    if [ "$(psql -X -tA "$PG_URL/$DB" -c "SELECT to_regclass('row_counts') IS NOT NULL")" = t ]; then
      psql -X -q "$PG_URL/$DB" -f "$BENCH/sql/recount_postgres.sql" >/dev/null
    fi
  else
    printf '.parameter set @from %d\n.parameter set @to %d\n.read %s\n' "$from" "$to" "$BENCH/sql/seed_sqlite.sql" \
      | sqlite3 "$dir/highload.db" >/dev/null
    if [ -n "$(sqlite3 "$dir/highload.db" "SELECT 1 FROM sqlite_master WHERE name = 'row_counts'")" ]; then
      sqlite3 "$dir/highload.db" <"$BENCH/sql/recount_sqlite.sql" >/dev/null
    fi
  fi
  say "  seeded rows $from..$to in $((SECONDS - t0)) s"
}

# write_ids STACK DIR: the ids of the first 1000 seeded users, one a line,
# into $IDS (for the Lua scripts), and one seeded event's id into EVENT_ID.
write_ids() {
  local stack=$1 dir=$2 n=1000
  if [ "$stack" = real ]; then
    psql -X -tA "$PG_URL/$DB" -c "SELECT md5('seed-user-' || i)::uuid FROM generate_series(1, $n) AS i" >"$IDS"
    EVENT_ID=$(psql -X -tA "$PG_URL/$DB" -c "SELECT md5('seed-event-1')::uuid")
  else
    local uuid="lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || substr(h, 17, 4) || '-' || substr(h, 21))"
    sqlite3 "$dir/highload.db" "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $n)
      SELECT $uuid FROM (SELECT s.i, hex(users.id) AS h FROM s JOIN users ON users.email = 'seed-' || s.i || '@bench.example') ORDER BY i" >"$IDS"
    EVENT_ID=$(sqlite3 "$dir/highload.db" "SELECT $uuid FROM (SELECT hex(id) AS h FROM events LIMIT 1)")
  fi
  [ "$(wc -l <"$IDS")" -eq "$n" ] || die "expected $n seeded user ids, found $(wc -l <"$IDS")"
  OWNER_ID=$(head -n 1 "$IDS")
}

# profile_start SCENARIO: when BENCH_PROFILE names SCENARIO (or is "all"),
# starts a system-wide perf profile (every process: the service, wrk, the
# database, the broker) and sets PERF_PID; profile_stop ends it and writes
# its report beside the results.
profile_start() {
  [[ ",$PROFILE," == *",$1,"* || "$PROFILE" == all ]] || return 0
  PERF_DATA=$OUT_DIR/$STAMP-$BINARY-$STACK-$1$([ "$ROWS" = null ] || echo "-$ROWS").perf
  # cpu-clock: a virtual machine may lack hardware counters.
  perf record -q -e cpu-clock -F 499 -a -g -o "$PERF_DATA" >/dev/null 2>&1 &
  PERF_PID=$!
}
profile_stop() {
  [ -n "$PERF_PID" ] || return 0
  kill -INT "$PERF_PID" && wait "$PERF_PID" || true
  PERF_PID=
  {
    # Threads are named by their runtime (tokio-rt-worker, or Java's own
    # names in the broker), so processes are named by their main thread, read
    # while they run (a process that has exited keeps its thread's name).
    echo "# share of the machine's samples by process"
    perf script -i "$PERF_DATA" -F comm,pid 2>/dev/null \
      | awk '{ pid = $NF; $NF = ""; comm[pid] = $0; n[pid]++ } END { for (p in n) print p, n[p], comm[p] }' \
      | while read -r pid n comm; do
        if [ "$pid" = 0 ]; then comm=idle; else comm=$(cat "/proc/$pid/comm" 2>/dev/null || echo "$comm"); fi
        echo "$n ${comm// /_}"
      done \
      | awk '{ s[$2] += $1; t += $1 } END { for (k in s) printf "%6.2f%%  %s\n", 100 * s[k] / t, k }' \
      | sort -rn | awk 'n++ < 12'
    echo "# by command and object"
    perf report -i "$PERF_DATA" --no-children --sort comm,dso --stdio -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 30'
    echo "# by command and symbol"
    perf report -i "$PERF_DATA" --no-children --sort comm,sym --stdio -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 60'
  } >"$PERF_DATA.txt"
  say "  profile: $PERF_DATA.txt (perf report -i $PERF_DATA for the call graphs)"
}

# load SCENARIO LABEL CONNECTIONS PATH [LUA]: one wrk run, recorded.
load() {
  local scenario=$1 label=$2 conns=$3 path=$4 lua=${5:-report.lua} line broker t0 before cpu
  rm -f "$WORK/wrk.json"
  profile_start "$scenario"
  broker=$([ "$STACK" = real ] && broker_pid || true)
  before=$(component_ticks "$broker") t0=$(date +%s%N)
  BENCH_RESULT=$WORK/wrk.json BENCH_LUA=$BENCH/wrk BENCH_IDS=$IDS BENCH_NONCE="$RUN_ID$BINARY${STACK:0:1}" \
    wrk -t2 -c"$conns" -d"${DURATION}s" --timeout 10s -s "$BENCH/wrk/$lua" "$BASE_URL$path" >"$WORK/wrk.log" 2>&1 \
    || { cat "$WORK/wrk.log" >&2; die "wrk failed on $label"; }
  # Each component's share of a core during the run (the capacity model's
  # CPU per request: docs/capacity.md); broker_cpu is the broker's, null
  # when it does not run on this machine.
  cpu=$(printf '%s\n%s\n' "$before" "$(component_ticks "$broker")" | awk -v hz="$CLK_TCK" -v ns=$(($(date +%s%N) - t0)) '
    NR == 1 { for (i = 1; i <= 5; i++) b[i] = $i }
    NR == 2 { s = ns / 1e9; printf "{\"service\": %.3f, \"postgres\": %.3f, \"redis\": %.3f, \"broker\": %.3f, \"replica\": %.3f}",
      ($1 - b[1]) / hz / s, ($2 - b[2]) / hz / s, ($3 - b[3]) / hz / s, ($4 - b[4]) / hz / s, ($5 - b[5]) / hz / s }')
  profile_stop
  [ -s "$WORK/wrk.json" ] || { cat "$WORK/wrk.log" >&2; die "wrk reported nothing on $label"; }
  line=$(jq -c --arg b "$BINARY" --arg s "$STACK" --arg sc "$scenario" --arg l "$label" \
    --argjson c "$conns" --argjson rows "$ROWS" --argjson large "$LARGE" --argjson hwm "$(rss_kb "$SERVICE_PID" VmHWM)" \
    --argjson cpu "$cpu" --arg broker "$broker" \
    '. + {kind: "wrk", binary: $b, stack: $s, scenario: $sc, label: $l, connections: $c, rows: $rows, large: $large, peak_rss_kb: $hwm, broker_cpu: (if $broker == "" then null else $cpu.broker end), cpu: $cpu}' \
    "$WORK/wrk.json")
  record "$line"
  jq -r '"  \(.label) c\(.connections)\(if .rows then ", \(.rows) rows" else "" end): \(.rps | floor) rps, p50 \(.p50_us) µs, p99 \(.p99_us) µs, peak RSS so far \(.peak_rss_kb / 1024 | floor) MB\(if ([.errors[]] | add) > 0 then ", \([.errors[]] | add) errors" else "" end)"' <<<"$line" >&2
}

# e2e: end-to-end latency probe (scripts/bench/e2e.py) while wrk posts
# events at E2E_RATE per second (scripts/bench/wrk/post_event_rate.lua);
# wrk is stopped with SIGINT once the probe is done and reports the rate it
# achieved.
e2e() {
  local conns=32 wrk_pid status=0
  say "  end-to-end latency, $E2E_SAMPLES samples, at $E2E_RATE events/s"
  rm -f "$WORK/paced.json"
  BENCH_RESULT=$WORK/paced.json BENCH_LUA=$BENCH/wrk BENCH_IDS=$IDS BENCH_RATE=$E2E_RATE BENCH_THREADS=2 \
    wrk -t2 -c"$conns" -d600s --timeout 10s -s "$BENCH/wrk/post_event_rate.lua" "$BASE_URL/api/v1/events" \
    >"$WORK/paced.log" 2>&1 &
  wrk_pid=$!
  profile_start e2e
  "$PY" "$BENCH/e2e.py" "$BASE_URL" "$E2E_SAMPLES" >"$WORK/e2e.json" || status=$?
  profile_stop
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" || true
  # Status 3 (see e2e.py): an event was not counted in time, the pipeline
  # fell behind the paced writes. That is a finding to report (the
  # baseline, with its 500 ms fetch wait, does on a slow machine), not a
  # reason to drop every other figure; the record says how many samples
  # came through.
  if [ "$status" = 3 ]; then
    say "  WARNING: the end-to-end probe gave up: $(jq -r .failed "$WORK/e2e.json")"
  elif [ "$status" != 0 ]; then
    [ "$QUICK" = 1 ] || die "the end-to-end latency probe failed"
    say "  WARNING: the end-to-end latency probe failed (no e2e figure for $BINARY on $STACK)"
    tail -n 5 "$SERVICE_LOG" 2>/dev/null || true
    return 0
  fi
  local paced=null
  [ -s "$WORK/paced.json" ] && paced=$(jq -c . "$WORK/paced.json")
  record "$(jq -c --arg b "$BINARY" --arg s "$STACK" --argjson rate "$E2E_RATE" --argjson paced "$paced" \
    '. + {kind: "e2e", binary: $b, stack: $s, target_rate: $rate, background: $paced}' "$WORK/e2e.json")"
}

# replay_drain BIN: the consumer's drain rate from a backlog on the broker.
# While the writes run, the instance keeps up with them, and what is left
# when they stop is no backlog. So a second instance of BIN, on a fresh
# database and with a consumer group of its own, consumes the topic the
# writes filled from its start; the rate counts from its first processed
# message. The first instance keeps running (for the end-to-end probe).
replay_drain() {
  local bin=$1 dir hwm_kb
  local main_pid=$SERVICE_PID main_log=$SERVICE_LOG main_db=$DB main_port=$PORT
  dir=$(mktemp -d "$WORK/$BINARY-replay.XXXX")
  IDLE_PID=$main_pid
  DB=${main_db}_replay GROUP=$TOPIC-replay PORT=$((main_port + 1))
  BASE_URL=http://127.0.0.1:$PORT
  psql_admin -c "CREATE DATABASE $DB"
  CLEANUP+=("psql -X -q '$PG_URL/postgres' -c 'DROP DATABASE IF EXISTS $DB WITH (FORCE)'")
  say "  a second instance consumes the topic from its start"
  start_service "$bin" real "$dir"
  "$PY" "$BENCH/drain.py" --from-first "$BASE_URL" "$DRAIN_TIMEOUT" >"$WORK/drain.json" || die "the drain probe failed"
  hwm_kb=$(rss_kb "$SERVICE_PID" VmHWM)
  stop_service
  psql_admin -c "DROP DATABASE $DB WITH (FORCE)"
  SERVICE_PID=$main_pid IDLE_PID= SERVICE_LOG=$main_log DB=$main_db GROUP= PORT=$main_port
  BASE_URL=http://127.0.0.1:$PORT
  record "$(jq -c --arg b "$BINARY" --arg s "$STACK" --argjson hwm "$hwm_kb" \
    '. + {kind: "drain", binary: $b, stack: $s, replayed: true, replay_peak_rss_kb: $hwm}' "$WORK/drain.json")"
  say "  replayed $(jq -r '"\(.processed) messages at \(.rate | floor) msg/s"' "$WORK/drain.json"); its peak RSS $((hwm_kb / 1024)) MB"
}

# idle BIN: what idle instances cost the broker. A second instance of BIN
# joins the first one's consumer group (two replicas of one deployment);
# once the group has settled and nothing is written, the broker's CPU time
# and the consumer fetches it answered are counted over IDLE_SECONDS.
idle() {
  local bin=$1 dir broker before after ticks t0 ns
  local main_pid=$SERVICE_PID main_log=$SERVICE_LOG main_port=$PORT
  broker=$(broker_pid)
  [ -n "$broker" ] || { say "  idle: the broker on port $BROKER_PORT is not a process of this machine; skipped"; return 0; }
  dir=$(mktemp -d "$WORK/$BINARY-idle.XXXX")
  IDLE_PID=$main_pid PORT=$((main_port + 1)) BASE_URL=http://127.0.0.1:$((main_port + 1))
  start_service "$bin" real "$dir"
  sleep "$IDLE_SETTLE"
  before=$(broker_fetches) ticks=$(cpu_ticks "$broker") t0=$(date +%s%N)
  sleep "$IDLE_SECONDS"
  after=$(broker_fetches) ns=$(($(date +%s%N) - t0))
  record "$(jq -cn --arg b "$BINARY" --argjson ticks $(($(cpu_ticks "$broker") - ticks)) --argjson hz "$CLK_TCK" \
    --argjson ns "$ns" --arg before "$before" --arg after "$after" \
    '{kind: "idle", binary: $b, stack: "real", instances: 2, seconds: ($ns / 1e9),
      broker_cpu: ($ticks / $hz / ($ns / 1e9)),
      fetches_per_s_per_instance: (if $before == "" or $after == "" then null
        else (($after | tonumber) - ($before | tonumber)) / ($ns / 1e9) / 2 end)}')"
  say "  idle, two instances: $(tail -n 1 "$RESULTS" | jq -r '"broker \(.broker_cpu * 100 | . * 10 | round / 10)% of a core, \(.fetches_per_s_per_instance // "?" | if type == "number" then . * 10 | round / 10 else . end) consumer fetches/s per instance"')"
  stop_service
  SERVICE_PID=$main_pid IDLE_PID= SERVICE_LOG=$main_log PORT=$main_port BASE_URL=http://127.0.0.1:$main_port
}

lists() {
  load list_users_p1 "GET /api/v1/users page 1" 64 "/api/v1/users?page=1&limit=10"
  load list_users_p100 "GET /api/v1/users page 100" 64 "/api/v1/users?page=100&limit=10"
  load list_events_p1 "GET /api/v1/events page 1" 64 "/api/v1/events?page=1&limit=10"
  load list_events_p100 "GET /api/v1/events page 100" 64 "/api/v1/events?page=100&limit=10"
  load list_events_user "GET /api/v1/events?user_id" 64 "/api/v1/events?user_id=$OWNER_ID&page=1&limit=10"
  load list_events_type "GET /api/v1/events?type" 64 "/api/v1/events?type=type3&page=1&limit=10"
  load list_events_user_type "GET /api/v1/events?user_id&type" 64 "/api/v1/events?user_id=$OWNER_ID&type=type0&page=1&limit=10"
  cursor_lists
}

# cursor_lists: deep paging by keyset cursor, from halfway down each list
# (the cursor comes from the page before, asked for by number once). A
# binary without cursors (an older baseline) skips these lines.
cursor_lists() {
  local list cursor page=$((ROWS / 20))
  for list in users events; do
    cursor=$(curl -sf "$BASE_URL/api/v1/$list?page=$page&limit=10" | jq -r '.next_cursor // empty') || cursor=
    if [ -z "$cursor" ]; then
      say "  no cursor from /api/v1/$list: its cursor line is skipped"
      continue
    fi
    load "list_${list}_cursor" "GET /api/v1/$list by cursor, halfway down" 64 "/api/v1/$list?limit=10&cursor=$cursor"
  done
}

# bench_one BINARY STACK: every scenario for one binary on one stack.
bench_one() {
  BINARY=$1 STACK=$2
  local bin=$WORK/highload-$BINARY dir
  dir=$(mktemp -d "$WORK/$BINARY-$STACK.XXXX")
  IDS=$dir/ids
  DB=bench_${RUN_ID}_$BINARY
  PREFIX=bench-$RUN_ID-$BINARY:
  TOPIC=bench-$RUN_ID-$BINARY
  say "$BINARY binary on the $STACK stack"
  if [ "$STACK" = real ]; then
    psql_admin -c "CREATE DATABASE $DB"
    CLEANUP+=("psql -X -q '$PG_URL/postgres' -c 'DROP DATABASE IF EXISTS $DB WITH (FORCE)'")
    CLEANUP+=("redis-cli -u '$REDIS_URL' --scan --pattern '$PREFIX*' | xargs -r -n 500 redis-cli -u '$REDIS_URL' del")
    CLEANUP+=("scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server '$KAFKA_BROKERS' --delete --if-exists --topic '$TOPIC(\\.dlq)?'")
  fi
  start_service "$bin" "$STACK" "$dir"
  local startup_ms=$STARTUP_MS
  sleep 1
  local idle_kb
  idle_kb=$(rss_kb "$SERVICE_PID" VmRSS)
  say "  ready in $startup_ms ms, idle RSS $((idle_kb / 1024)) MB"

  seed "$STACK" "$dir" 1 "$SMALL_ROWS"
  write_ids "$STACK" "$dir"
  curl -sf -o /dev/null "$BASE_URL/api/v1/users/$OWNER_ID" || die "GET of a seeded user failed"
  curl -sf -o /dev/null "$BASE_URL/api/v1/events/$EVENT_ID" || die "GET of a seeded event failed"

  ROWS=null LARGE=false
  if wants reads; then
    load health "GET /health" 64 /health
    load live "GET /health/live" 64 /health/live
    load live_c256 "GET /health/live" 256 /health/live
    load get_user "GET /api/v1/users/{id} (cached)" 64 "/api/v1/users/$OWNER_ID"
    load get_user_c256 "GET /api/v1/users/{id} (cached)" 256 "/api/v1/users/$OWNER_ID"
    load get_event "GET /api/v1/events/{id} (cached)" 64 "/api/v1/events/$EVENT_ID"
    load get_event_c256 "GET /api/v1/events/{id} (cached)" 256 "/api/v1/events/$EVENT_ID"
  fi
  # Lists before the writes, so that they see the seeded size.
  ROWS=$SMALL_ROWS
  if wants lists; then lists; fi
  ROWS=null
  if wants writes; then
    load post_user "POST /api/v1/users" 64 /api/v1/users post_user.lua
    load put_user "PUT /api/v1/users/{id}" 64 /api/v1/users put_user.lua
    load post_event "POST /api/v1/events" 64 /api/v1/events post_event.lua
    load mix "90% GET / 10% PUT user" 64 /api/v1/users mix.lua
  fi

  if wants pipeline; then
    # The messages the writes left behind, processed as fast as the consumer goes.
    say "  draining the messages of the write scenarios"
    "$PY" "$BENCH/drain.py" "$BASE_URL" "$DRAIN_TIMEOUT" >"$WORK/drain.json" || die "the drain probe failed"
    local hwm_kb
    hwm_kb=$(rss_kb "$SERVICE_PID" VmHWM)
    say "  drained $(jq -r '"\(.processed) messages at \(.rate | floor) msg/s"' "$WORK/drain.json"); peak RSS so far $((hwm_kb / 1024)) MB"
    if [ "$STACK" = real ]; then
      replay_drain "$bin"
    else
      record "$(jq -c --arg b "$BINARY" --arg s "$STACK" --argjson hwm "$hwm_kb" \
        '. + {kind: "drain", binary: $b, stack: $s, peak_rss_kb: $hwm}' "$WORK/drain.json")"
    fi
    e2e
    if [ "$STACK" = real ]; then idle "$bin"; fi
  fi
  if [ "$LARGE_ROWS" -gt "$SMALL_ROWS" ] && wants lists; then
    seed "$STACK" "$dir" $((SMALL_ROWS + 1)) "$LARGE_ROWS"
    ROWS=$LARGE_ROWS LARGE=true
    lists
    LARGE=false
  fi

  local peak_kb
  peak_kb=$(rss_kb "$SERVICE_PID" VmHWM)
  stop_service
  record "{\"kind\":\"process\",\"binary\":\"$BINARY\",\"stack\":\"$STACK\",\"startup_ms\":$startup_ms,\"idle_rss_kb\":$idle_kb,\"peak_rss_kb\":$peak_kb}"
  if [ "$STACK" = real ]; then psql_admin -c "DROP DATABASE $DB WITH (FORCE)"; fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$SECONDS
for stack in $STACKS; do
  for binary in "${BINARIES[@]}"; do bench_one "$binary" "$stack"; done
done

# --- report --------------------------------------------------------------

jq -n --arg commit "$COMMIT" --arg dirty "$DIRTY" --arg base "$BASELINE_COMMIT" --arg mode "$MODE" \
  --argjson seconds "$DURATION" --argjson cpus "$(nproc)" --arg cpu "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)" \
  --arg stamp "$STAMP" --arg load_before "$LOAD_BEFORE" --arg load_after "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson small "$SMALL_ROWS" --argjson large "$LARGE_ROWS" --arg log_level "$LOG_LEVEL" \
  --arg binary "${BENCH_BINARY:-cargo build --release --locked}" --arg only "${ONLY:-all}" \
  --arg passed "${PASSED_ENV[*]}" --arg read_url "${READ_URL##*@}" \
  '{commit: $commit, scenarios: $only, uncommitted_changes: ($dirty != ""), baseline_commit: (if $base == "" then null else $base end),
    mode: $mode, seconds: $seconds, cpus: $cpus, cpu: $cpu, started_at: $stamp,
    loadavg_before: $load_before, loadavg_after: $load_after, small_rows: $small, large_rows: $large,
    service_log_level: $log_level, service_env: $passed, read_replica: (if $read_url == "" then null else $read_url end), load_generator: "wrk -t2", new_binary_from: $binary}' >"$WORK/meta.json"
"$PY" "$BENCH/report.py" "$RESULTS" "$WORK/meta.json" "$OUT_DIR/$STAMP.json" "$OUT_DIR/$STAMP.png"
echo
echo "commit ${COMMIT:0:12}${DIRTY:+ (with uncommitted changes)}${BASELINE_COMMIT:+, baseline ${BASELINE_COMMIT:0:12}}," \
  "$MODE run${ONLY:+ of $ONLY only}, $DURATION s per line, $(nproc) cores, load average before $LOAD_BEFORE, $((SECONDS - START)) s"
echo "results: $OUT_DIR/$STAMP.json, plot: $OUT_DIR/$STAMP.png"
