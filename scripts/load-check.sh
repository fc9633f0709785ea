#!/usr/bin/env bash
# A load check for any deployed URL, with thresholds (the role k6 plays for
# the Go service): wrk drives a mix of creates, lists and health checks
# (scripts/load-check/mix.lua) and the check fails when the 95th percentile
# latency or the error rate passes its threshold.
#
#   scripts/load-check.sh https://highload.example.com
#
# Settings (environment): LOAD_SECONDS (10), LOAD_CONNECTIONS (32),
# LOAD_THREADS (2), LOAD_P95_MS (500: the Go service's k6 threshold),
# LOAD_MAX_ERROR_PERCENT (1), LOAD_TOKEN (a bearer token, for a service with
# an AUTH_MODE). Errors are non-2xx/3xx answers (a 429 of a rate limit
# included) and failed connections, reads, writes and timeouts.
# Needs wrk (installed with apt-get when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${1:?usage: scripts/load-check.sh URL}
SECONDS_=${LOAD_SECONDS:-10}
CONNECTIONS=${LOAD_CONNECTIONS:-32}
THREADS=${LOAD_THREADS:-2}
P95_MS=${LOAD_P95_MS:-500}
MAX_ERRORS=${LOAD_MAX_ERROR_PERCENT:-1}

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "load-check: installing wrk with apt-get" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "load-check: wrk is missing (apt-get install wrk)" >&2; exit 2
  fi
fi

out=$(LOAD_NONCE="$(date +%s%N)" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_}s" --timeout 10s \
  -s scripts/load-check/mix.lua "$URL")
read -r requests p95_us status_errors socket_errors < <(grep '^load-check-figures' <<<"$out" | cut -d' ' -f2-)
[ "${requests:-0}" -gt 0 ] || { echo "$out"; echo "load-check: no request completed against $URL"; exit 1; }
python3 - "$requests" "$p95_us" "$status_errors" "$socket_errors" "$P95_MS" "$MAX_ERRORS" "$SECONDS_" <<'PY'
import sys
requests, p95_us, status_errors, socket_errors = map(int, sys.argv[1:5])
p95_limit, error_limit, seconds = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
p95_ms = p95_us / 1000
errors = 100 * (status_errors + socket_errors) / max(requests, 1)
ok_latency, ok_errors = p95_ms <= p95_limit, errors <= error_limit
print(f"load-check: {requests} requests in {seconds:g} s ({requests / seconds:.0f}/s); "
      f"p95 {p95_ms:.2f} ms (threshold {p95_limit:g} ms) {'ok' if ok_latency else 'FAILED'}; "
      f"errors {errors:.2f}% (threshold {error_limit:g}%) {'ok' if ok_errors else 'FAILED'}")
sys.exit(0 if ok_latency and ok_errors else 1)
PY
