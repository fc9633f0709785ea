-- PUT /api/v1/users/{id} over the seeded users, a new first_name each time.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
function request()
  counter = counter + 1
  local body = string.format('{"first_name":"Put%d-%d"}', tid or 0, counter)
  return wrk.format("PUT", "/api/v1/users/" .. next_id(), json_headers, body)
end
