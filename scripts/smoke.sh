#!/usr/bin/env bash
# Walks through every endpoint of a running highload instance and checks the
# answers. Exits non-zero at the first mismatch.
#
#   scripts/smoke.sh [BASE_URL]        (default http://localhost:8080)
#
# Needs curl and jq. Creates its own user (unique email) and deletes it.
set -euo pipefail

BASE=${1:-http://localhost:8080}
BASE=${BASE%/}
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is required" >&2; exit 2; }
done

STATUS= BODY=
step() { printf '%-58s' "$1"; }
ok() { echo "ok"; }
fail() { echo "FAIL"; echo "smoke: $1" >&2; echo "body: $BODY" >&2; exit 1; }

# call METHOD PATH [JSON [CONTENT_TYPE]] -> sets STATUS and BODY
call() {
  local method=$1 path=$2 data=${3-} type=${4:-application/json} out
  out=$(mktemp)
  if [ -n "$data" ]; then
    STATUS=$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$BASE$path" \
      -H "Content-Type: $type" --data-binary "$data")
  else
    STATUS=$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$BASE$path")
  fi
  BODY=$(cat "$out"); rm -f "$out"
}
expect_status() { [ "$STATUS" = "$1" ] || fail "expected HTTP $1, got $STATUS"; }
expect_jq() { # expect_jq FILTER EXPECTED
  local got
  got=$(jq -r "$1" <<<"$BODY" 2>/dev/null) || fail "response is not JSON"
  [ "$got" = "$2" ] || fail "expected $1 = $2, got $got"
}
expect_problem() { # expect_problem STATUS [FIELD]
  expect_status "$1"
  expect_jq '.status' "$1"
  expect_jq '.error | length > 0' true
  [ -z "${2-}" ] || expect_jq '.field' "$2"
}

step "GET /health"
# A service that has just started serves (/health/ready) before its bus has
# created its topics, and /health says 503 until it has: up to 30 s.
for _ in $(seq 300); do
  call GET /health
  [ "$STATUS" = 200 ] && break
  sleep 0.1
done
expect_status 200; expect_jq .status healthy; ok
step "GET /health/live"
call GET /health/live; expect_status 200; ok
step "GET /health/ready"
call GET /health/ready; expect_status 200; ok

EMAIL="smoke-$(date +%s)-$RANDOM@example.com"
step "POST /api/v1/users"
call POST /api/v1/users "{\"email\":\"$EMAIL\",\"first_name\":\"Smoke\",\"last_name\":\"Test\"}"
expect_status 201; expect_jq .email "$EMAIL"
USER_ID=$(jq -r .id <<<"$BODY"); ok

for n in 1 2; do
  step "GET /api/v1/users/{id} ($n)"
  call GET "/api/v1/users/$USER_ID"; expect_status 200; expect_jq .first_name Smoke; ok
done

step "PUT /api/v1/users/{id}"
call PUT "/api/v1/users/$USER_ID" '{"first_name":"Smoky"}'
expect_status 200; expect_jq .first_name Smoky; expect_jq .last_name Test; ok
step "GET /api/v1/users/{id} sees the update"
call GET "/api/v1/users/$USER_ID"; expect_status 200; expect_jq .first_name Smoky; ok

step "GET /api/v1/users?page=1&limit=5"
call GET "/api/v1/users?page=1&limit=5"
expect_status 200; expect_jq .page 1; expect_jq .limit 5; expect_jq '.total >= 1' true; ok
step "GET /api/v1/users/ (trailing slash)"
call GET "/api/v1/users/"; expect_status 200; expect_jq '.users | type' array; ok

EVENTS=3
for n in $(seq $EVENTS); do
  step "POST /api/v1/events ($n)"
  call POST /api/v1/events "{\"user_id\":\"$USER_ID\",\"type\":\"smoke.click\",\"data\":\"{\\\"n\\\":$n}\"}"
  expect_status 201; expect_jq .type smoke.click
  EVENT_ID=$(jq -r .id <<<"$BODY"); ok
done
step "GET /api/v1/events/{id}"
call GET "/api/v1/events/$EVENT_ID"; expect_status 200; expect_jq .user_id "$USER_ID"; ok
step "GET /api/v1/events?user_id=...&type=smoke.click"
call GET "/api/v1/events?user_id=$USER_ID&type=smoke.click"
expect_status 200; expect_jq .total "$EVENTS"; ok

step "GET /api/v1/users/{id}/activity (waiting)"
for _ in $(seq 100); do
  call GET "/api/v1/users/$USER_ID/activity"
  [ "$STATUS" = 200 ] && [ "$(jq -r '.events_by_type["smoke.click"] // 0' <<<"$BODY")" = "$EVENTS" ] && break
  sleep 0.1
done
expect_status 200; expect_jq '.events_by_type["smoke.click"]' "$EVENTS"
expect_jq '.events_by_type.user_created' 1; expect_jq '.events_by_type.user_updated' 1; ok

step "POST /api/v1/users duplicate email -> 409"
call POST /api/v1/users "{\"email\":\"$EMAIL\",\"first_name\":\"A\",\"last_name\":\"B\"}"
expect_problem 409 email; ok
step "POST /api/v1/users invalid email -> 400"
call POST /api/v1/users '{"email":"nope","first_name":"A","last_name":"B"}'
expect_problem 400 email; ok
step "POST /api/v1/users malformed JSON -> 400"
call POST /api/v1/users '{"email":'; expect_problem 400; ok
step "POST /api/v1/users form body -> 415"
call POST /api/v1/users 'email=a' application/x-www-form-urlencoded; expect_problem 415; ok
step "POST /api/v1/events unknown user -> 404"
call POST /api/v1/events '{"user_id":"00000000-0000-4000-8000-000000000000","type":"x","data":""}'
expect_problem 404; ok
step "GET /api/v1/users/not-a-uuid -> 400"
call GET /api/v1/users/not-a-uuid; expect_problem 400; ok
step "GET /api/v1/events?limit=1000 -> 400"
call GET "/api/v1/events?limit=1000"; expect_problem 400 limit; ok

step "DELETE /api/v1/users/{id}"
call DELETE "/api/v1/users/$USER_ID"; expect_status 204; ok
step "GET /api/v1/users/{id} after delete -> 404"
call GET "/api/v1/users/$USER_ID"; expect_problem 404; ok
step "GET /api/v1/events/{id} after delete -> 404"
call GET "/api/v1/events/$EVENT_ID"; expect_problem 404; ok

step "GET /metrics"
call GET /metrics; expect_status 200
grep -q '^http_requests_total{method="POST",route="/api/v1/users",status="201"} ' <<<"$BODY" \
  || fail "no http_requests_total sample for POST /api/v1/users"
grep -q '^events_published_total ' <<<"$BODY" || fail "no events_published_total"; ok
step "GET /openapi.json"
call GET /openapi.json; expect_status 200; expect_jq '.openapi | startswith("3.1")' true; ok
step "GET /docs (Swagger UI, assets served by the service)"
call GET /docs; expect_status 200
grep -q 'swagger-ui' <<<"$BODY" || fail "/docs is not Swagger UI"
call GET /docs/swagger-initializer.js; expect_status 200
grep -q '"/openapi.json"' <<<"$BODY" || fail "the docs page does not load /openapi.json"
call GET /docs/swagger-ui-bundle.js; expect_status 200; ok

echo "smoke: all checks passed against $BASE"
