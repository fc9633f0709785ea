-- The load check's traffic against a deployed service: a quarter creates
-- users (unique emails), the rest lists them and asks for health, as a
-- client of the API would. $LOAD_TOKEN, when set, goes in Authorization.
-- At the end one line of figures: requests, p95 in microseconds, errors.
local token = os.getenv("LOAD_TOKEN")
local nonce = os.getenv("LOAD_NONCE") or tostring(os.time())
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
function request()
  counter = counter + 1
  local headers = {}
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  if counter % 4 == 0 then
    headers["Content-Type"] = "application/json"
    local body = string.format(
      '{"email":"load-%s-%d-%d@load.example","first_name":"Load","last_name":"Check"}',
      nonce, tid or 0, counter)
    return wrk.format("POST", "/api/v1/users", headers, body)
  elseif counter % 4 == 1 then
    return wrk.format("GET", "/health/live", headers)
  end
  return wrk.format("GET", "/api/v1/users?limit=10", headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("load-check-figures %d %d %d %d\n", summary.requests,
    latency:percentile(95), e.status, e.connect + e.read + e.write + e.timeout))
end
