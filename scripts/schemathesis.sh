#!/usr/bin/env bash
# Property-based API tests with schemathesis (from PyPI) against a running
# service: every operation of its OpenAPI document, examples, coverage,
# fuzzing and stateful phases (links between operations: create a user, then
# read, update, list and delete it, post its events, ...). Fails on any 5xx
# or any response that does not match the document, and when fewer than
# MIN_CASES test cases ran.
#
#   scripts/schemathesis.sh http://127.0.0.1:8080 [MAX_EXAMPLES]
#
# AUTH_HEADER (say "Authorization: Bearer <token>") is sent with every
# request, for a service with an AUTH_MODE.
#
# schemathesis is installed into ${HIGHLOAD_TOOLS_DIR:-~/.cache/highload-tools}
# the first time. One worker: hypothesis describes strategies by parsing
# source with Python's ast module, which is not safe across threads on 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: scripts/schemathesis.sh BASE_URL [MAX_EXAMPLES]}
MAX_EXAMPLES=${2:-80}
MIN_CASES=${MIN_CASES:-1000}
SPEC=schemathesis==4.32.5
TOOLS=${HIGHLOAD_TOOLS_DIR:-$HOME/.cache/highload-tools}
dir=$TOOLS/schemathesis
if ! [ -f "$dir/.spec" ] || [ "$(cat "$dir/.spec")" != "$SPEC" ]; then
  echo "schemathesis: installing $SPEC into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q "$SPEC" >"$TOOLS/schemathesis.log" 2>&1 \
    || { tail -n 20 "$TOOLS/schemathesis.log" >&2; exit 2; }
  echo "$SPEC" >"$dir/.spec"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
headers=()
[ -z "${AUTH_HEADER:-}" ] || headers=(--header "$AUTH_HEADER")
"$dir/bin/st" run "$BASE/openapi.json" "${headers[@]}" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$MAX_EXAMPLES" --seed 1 --workers 1 \
  --request-timeout 10 --no-color | tee "$out" || status=$?
# The summary says "Test cases:" then "N generated, M passed, ...".
cases=$(grep -A1 '^Test cases:' "$out" | grep -o '[0-9]* generated' | grep -o '[0-9]*' || true)
echo "schemathesis: exit $status, $cases test cases (need at least $MIN_CASES)"
[ "$status" = 0 ] || exit "$status"
[ "${cases:-0}" -ge "$MIN_CASES" ] || { echo "schemathesis: too few test cases"; exit 1; }
