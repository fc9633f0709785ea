#!/usr/bin/env bash
# Overload: does the service keep its goodput when far more clients come
# than it can serve? Prints, for GET of a cached user and POST of a user, at
# 64 and at 5,000 connections: goodput (2xx/s), p99 of the admitted (2xx)
# requests, the share shed (503), and the ratio of goodput at 5,000 to 64;
# and whether /health/live answered 200 throughout the 5,000-connection runs.
# It also gives the service's CPU time per 2xx response (user + system, from
# /proc): wrk shares the cores, so this tells the service's own cost per
# request at each concurrency apart from the load generator's.
#
#   scripts/overload.sh                   release binary of this checkout, real stack
#   scripts/overload.sh --stack embedded  SQLite, in-process cache and bus
#
# Targets: goodput at 5,000 >= 80% of goodput at 64; p99 of admitted <= 1 s;
# /health/live 200 throughout (polled every 200 ms, 1 s timeout each, as a
# liveness probe would). Wall-clock throughput on a shared machine moves by
# a fifth between identical runs, so the runs are repeated in rounds (each
# round runs every scenario at every concurrency, one after the other) and
# the verdict is on the median round's ratio and p99; every round is printed.
#
# Settings (environment): OVERLOAD_SECONDS (per run, default 10),
# OVERLOAD_CONNECTIONS (default "64 5000"), OVERLOAD_ROUNDS (default 3),
# OVERLOAD_BINARY (run this binary instead of building the checkout),
# OVERLOAD_PORT (default 18095),
# OVERLOAD_LOG_LEVEL (the service's LOG_LEVEL, default info, as in
# production: the bytes it logs are reported), OVERLOAD_PG_URL (a server URL
# without database), OVERLOAD_REDIS_URL, OVERLOAD_KAFKA_BROKERS; any other
# variable the service reads (e.g. ADMISSION_QUEUE_TIMEOUT) is passed on.
# Needs wrk (built with LuaJIT, as Debian's is), curl, jq; psql and
# redis-cli for the real stack (scripts/dev-services.sh starts its services).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

say() { echo "overload: $*" >&2; }
die() { echo "overload: $*" >&2; exit 2; }

STACK=real
while [ $# -gt 0 ]; do
  case $1 in
    --stack) [ $# -ge 2 ] || die "--stack needs real or embedded"; STACK=$2; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
case $STACK in real | embedded) ;; *) die "unknown stack $STACK (real or embedded)" ;; esac

SECONDS_PER_RUN=${OVERLOAD_SECONDS:-10}
CONNECTIONS=${OVERLOAD_CONNECTIONS:-64 5000}
ROUNDS=${OVERLOAD_ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "OVERLOAD_ROUNDS must be a positive number, not $ROUNDS"
PORT=${OVERLOAD_PORT:-18095}
LOG_LEVEL=${OVERLOAD_LOG_LEVEL:-info}
PG_URL=${OVERLOAD_PG_URL:-postgres://postgres:postgres@127.0.0.1:5432}
REDIS_URL=${OVERLOAD_REDIS_URL:-redis://127.0.0.1:6379}
KAFKA_BROKERS=${OVERLOAD_KAFKA_BROKERS:-127.0.0.1:9092}
BASE_URL=http://127.0.0.1:$PORT
LUA=$ROOT/scripts/overload/admitted.lua

for tool in wrk curl jq; do command -v $tool >/dev/null || die "missing: $tool"; done
if [ "$STACK" = real ]; then
  for tool in psql redis-cli; do command -v $tool >/dev/null || die "missing: $tool"; done
fi

# Each of wrk and the service holds one descriptor per connection.
max_conns=0
for c in $CONNECTIONS; do [ "$c" -gt "$max_conns" ] && max_conns=$c; done
want=$((max_conns * 2 + 1024))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge "$want" ] || die "ulimit -n is $(ulimit -n); $max_conns connections need $want"

WORK=$(mktemp -d)
RUN_ID=overload_$(date -u +%H%M%S)_$$
SERVICE_PID=
CLEANUP=()
cleanup() {
  local status=$?
  if [ -n "$SERVICE_PID" ] && kill -0 "$SERVICE_PID" 2>/dev/null; then
    kill -TERM "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
  fi
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" >/dev/null 2>&1 || true; done
  if [ "$status" != 0 ] && [ -s "$WORK/service.log" ]; then
    say "the service's last log lines:"
    tail -n 20 "$WORK/service.log" >&2
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${OVERLOAD_BINARY:-}" ]; then
  [ -x "$OVERLOAD_BINARY" ] || die "OVERLOAD_BINARY=$OVERLOAD_BINARY is not an executable"
  BIN=$OVERLOAD_BINARY
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  say "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  cargo build --release --locked --quiet || die "cargo build --release failed"
  BIN=$CARGO_TARGET_DIR/release/highload
fi

# --- the service ---------------------------------------------------------

# Settings of the service: the stack's, plus any ADMISSION_*, HTTP_*, DB_*
# or WRITE_* variable of the caller's environment.
env_vars=(PATH="$PATH" HOME="$HOME" SERVER_HOST=127.0.0.1 SERVER_PORT="$PORT" LOG_LEVEL="$LOG_LEVEL")
while IFS='=' read -r name value; do
  case $name in ADMISSION_* | HTTP_* | DB_MAX_CONNECTIONS | DB_ACQUIRE_TIMEOUT | WRITE_BATCH_*) env_vars+=("$name=$value") ;; esac
done < <(env)
if [ "$STACK" = real ]; then
  psql -X -q -v ON_ERROR_STOP=1 "$PG_URL/postgres" -c "CREATE DATABASE $RUN_ID" \
    || die "PostgreSQL does not answer at $PG_URL (scripts/dev-services.sh starts it)"
  CLEANUP+=("psql -X -q '$PG_URL/postgres' -c 'DROP DATABASE IF EXISTS $RUN_ID WITH (FORCE)'")
  CLEANUP+=("redis-cli -u '$REDIS_URL' --scan --pattern '$RUN_ID:*' | xargs -r -n 500 redis-cli -u '$REDIS_URL' del")
  CLEANUP+=("scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server '$KAFKA_BROKERS' --delete --if-exists --topic '$RUN_ID(\\.dlq)?'")
  # Loopback: no TLS (a URL without sslmode would mean prefer).
  env_vars+=(DATABASE_URL="$PG_URL/$RUN_ID" DB_SSLMODE=disable REDIS_URL="$REDIS_URL" CACHE_PREFIX="$RUN_ID:"
    KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$RUN_ID" KAFKA_GROUP_ID="$RUN_ID")
else
  env_vars+=(SQLITE_PATH="$WORK/highload.db")
fi
if curl -s -o /dev/null "$BASE_URL/health/live"; then die "port $PORT is taken (set OVERLOAD_PORT)"; fi
(cd "$WORK" && ulimit -n "$want" && exec env -i "${env_vars[@]}" "$BIN" >"$WORK/service.log" 2>&1) &
SERVICE_PID=$!
t0=$SECONDS
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE_URL/health/ready" || true)" = 200 ]; do
  kill -0 "$SERVICE_PID" 2>/dev/null || die "the service exited before it was ready"
  [ $((SECONDS - t0)) -lt 120 ] || die "the service was not ready within 120 s"
  sleep 0.2
done
say "$STACK stack ready ($BIN)"

USER_ID=$(curl -sf -H 'Content-Type: application/json' \
  -d '{"email":"overload-seed@overload.example","first_name":"Seed","last_name":"User"}' \
  "$BASE_URL/api/v1/users" | jq -r .id)
curl -sf -o /dev/null "$BASE_URL/api/v1/users/$USER_ID" || die "GET of the seeded user failed"

# --- runs ----------------------------------------------------------------

# poll_live FILE: polls /health/live until FILE.stop exists; writes
# "polls failures" to FILE.
poll_live() {
  local out=$1 polls=0 failures=0 code
  while [ ! -e "$out.stop" ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$BASE_URL/health/live" || true)
    polls=$((polls + 1))
    [ "$code" = 200 ] || failures=$((failures + 1))
    sleep 0.2
  done
  echo "$polls $failures" >"$out"
}

# cpu_ticks: CPU time the service has used (user + system), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVICE_PID/stat"; }

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
LIVE_POLLS=0 LIVE_FAILURES=0
# run ROUND NAME METHOD PATH CONNECTIONS
run() {
  local round=$1 name=$2 method=$3 path=$4 conns=$5 poller= live=$WORK/live-$1-$3-$5
  local log_before cpu_before
  log_before=$(stat -c %s "$WORK/service.log")
  cpu_before=$(cpu_ticks)
  if [ "$conns" -gt 64 ]; then
    poll_live "$live" &
    poller=$!
  fi
  OVERLOAD_RESULT=$WORK/wrk.json OVERLOAD_METHOD=$method OVERLOAD_NONCE="$RUN_ID-$round-$method-$conns" \
    wrk -t2 -c"$conns" -d"${SECONDS_PER_RUN}s" --timeout 10s -s "$LUA" "$BASE_URL$path" >"$WORK/wrk.log" 2>&1 \
    || { cat "$WORK/wrk.log" >&2; die "wrk failed on $name at $conns connections"; }
  local polls=0 failures=0
  if [ -n "$poller" ]; then
    touch "$live.stop"
    wait "$poller"
    read -r polls failures <"$live"
    LIVE_POLLS=$((LIVE_POLLS + polls))
    LIVE_FAILURES=$((LIVE_FAILURES + failures))
  fi
  local logged=$(($(stat -c %s "$WORK/service.log") - log_before))
  local cpu_s
  cpu_s=$(jq -n --argjson t "$(($(cpu_ticks) - cpu_before))" --argjson hz "$(getconf CLK_TCK)" '$t / $hz')
  jq -c --argjson r "$round" --arg n "$name" --argjson c "$conns" --argjson p "$polls" --argjson f "$failures" --argjson l "$logged" \
    --argjson cpu "$cpu_s" \
    '. + {round: $r, name: $n, connections: $c, live_polls: $p, live_failures: $f, log_bytes: $l, cpu_seconds: $cpu,
          cpu_us_per_2xx: (if .ok > 0 then ($cpu * 1e7 / .ok | floor) / 10 else null end)}' "$WORK/wrk.json" >>"$RESULTS"
  tail -n 1 "$RESULTS" | jq -r '"  round \(.round), \(.name) c\(.connections): \(.goodput | floor) 2xx/s, p99 \(.p99_ms) ms, \(.shed) shed, \(.other) other, \(.socket_errors) socket errors, \(.cpu_seconds) s of the service'"'"'s CPU"' >&2
  sleep 2 # let the backlog of the run drain
}

for round in $(seq "$ROUNDS"); do
  for conns in $CONNECTIONS; do run "$round" "GET user (cached)" GET "/api/v1/users/$USER_ID" "$conns"; done
  for conns in $CONNECTIONS; do run "$round" "POST user" POST /api/v1/users "$conns"; done
done

# --- report --------------------------------------------------------------

LOW=${CONNECTIONS%% *}
HIGH=${CONNECTIONS##* }
echo
echo "| round | scenario | connections | goodput (2xx/s) | p99 admitted (ms) | shed (503) share | other | log bytes | service CPU per 2xx (µs) |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
jq -r '"| \(.round) | \(.name) | \(.connections) | \(.goodput | floor) | \(.p99_ms) | \(if (.ok + .shed + .other) > 0 then (100 * .shed / (.ok + .shed + .other) | floor | tostring) + "%" else "-" end) | \(.other + .socket_errors) | \(.log_bytes) | \(.cpu_us_per_2xx // "-") |"' "$RESULTS"
echo
verdict=0
for name in "GET user (cached)" "POST user"; do
  # Per round: goodput at HIGH over goodput at LOW (%), p99 at HIGH, and the
  # service's CPU per 2xx at both; then their medians.
  summary=$(jq -s --arg n "$name" --argjson lo "$LOW" --argjson hi "$HIGH" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def at(c): map(select(.connections == c)) | first;
    map(select(.name == $n)) | group_by(.round) | map(at($lo) as $l | at($hi) as $h | {
      ratio: (if $l.goodput > 0 then $h.goodput / $l.goodput * 100 | floor else 0 end),
      p99: $h.p99_ms, cpu_lo: $l.cpu_us_per_2xx, cpu_hi: $h.cpu_us_per_2xx})
    | {ratios: map(.ratio), p99s: map(.p99), ratio: (map(.ratio) | median | floor), p99: (map(.p99) | median * 100 | round / 100),
       cpu_lo: (map(.cpu_lo // empty) | median), cpu_hi: (map(.cpu_hi // empty) | median)}' "$RESULTS")
  ratio=$(jq -r .ratio <<<"$summary")
  p99=$(jq -r .p99 <<<"$summary")
  ok=yes
  if [ "$ratio" -lt 80 ] || jq -e --argjson p "$p99" -n '$p > 1000' >/dev/null; then ok=no verdict=1; fi
  echo "$name: goodput $HIGH/$LOW = $ratio% (target >= 80%), p99 admitted at $HIGH = $p99 ms (target <= 1000), medians of $ROUNDS rounds: $ok"
  jq -r '"  per round: \(.ratios | map("\(.)%") | join(", ")); p99 \(.p99s | map("\(.) ms") | join(", "))"' <<<"$summary"
  jq -r --argjson lo "$LOW" --argjson hi "$HIGH" \
    'if .cpu_lo and .cpu_hi then "  the service'"'"'s CPU per 2xx (median): \(.cpu_lo) µs at \($lo), \(.cpu_hi) µs at \($hi) (\(.cpu_hi / .cpu_lo * 100 | floor)%)" else "  the service'"'"'s CPU per 2xx: -" end' <<<"$summary"
done
if [ "$LIVE_FAILURES" = 0 ] && [ "$LIVE_POLLS" -gt 0 ]; then
  echo "/health/live: 200 on all $LIVE_POLLS polls during the $HIGH-connection runs: yes"
else
  echo "/health/live: $LIVE_FAILURES of $LIVE_POLLS polls failed during the $HIGH-connection runs: no"
  verdict=1
fi
echo "shed, as the service counts them:"
curl -s "$BASE_URL/metrics" | grep '^http_requests_shed_total' | sed 's/^/  /' || echo "  (none)"
exit "$verdict"
