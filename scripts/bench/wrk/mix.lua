-- 90/10 read/write mix over the seeded users: nine GET /api/v1/users/{id}
-- for one PUT /api/v1/users/{id} (which invalidates what the GETs cache).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
function request()
  counter = counter + 1
  local id = next_id()
  if counter % 10 == 0 then
    local body = string.format('{"last_name":"Mix%d-%d"}', tid or 0, counter)
    return wrk.format("PUT", "/api/v1/users/" .. id, json_headers, body)
  end
  return wrk.format("GET", "/api/v1/users/" .. id)
end
