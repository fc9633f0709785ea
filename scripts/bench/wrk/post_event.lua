-- POST /api/v1/events for the seeded users, with a small JSON payload.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
function request()
  counter = counter + 1
  local body = string.format(
    '{"user_id":"%s","type":"bench","data":"{\\"n\\":%d,\\"ip\\":\\"10.0.0.1\\"}"}', next_id(), counter)
  return wrk.format("POST", "/api/v1/events", json_headers, body)
end
