-- POST /api/v1/users with a unique email each time.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
function request()
  local body = string.format('{"email":"%s","first_name":"Bench","last_name":"User"}', next_email())
  return wrk.format("POST", "/api/v1/users", json_headers, body)
end
