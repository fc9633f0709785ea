-- POST /api/v1/events over the seeded users at a fixed rate, $BENCH_RATE
-- per second over all threads: each thread hands out send slots
-- $BENCH_THREADS * 1000 / $BENCH_RATE ms apart, and delay() holds each
-- request until its slot. A thread that falls behind does not burst to catch
-- up. Enough connections are needed to keep the rate when answers are slow.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = tonumber(os.getenv("BENCH_THREADS") or "2") * 1000 / tonumber(os.getenv("BENCH_RATE") or "1000")
local slot = nil
function delay()
  local t = now_ms()
  slot = (slot or t) + interval
  if slot < t then slot = t end
  return slot - t
end
function request()
  counter = counter + 1
  local body = string.format('{"user_id":"%s","type":"paced","data":"%d"}', next_id(), counter)
  return wrk.format("POST", "/api/v1/events", json_headers, body)
end
