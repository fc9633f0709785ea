-- One wrk run of scripts/overload.sh: counts answers by kind and measures
-- the latency of admitted (2xx) requests only. Every request carries an
-- X-Request-ID unique in its wrk thread, which the service echoes; the time
-- it was sent is kept until the answer with that id arrives (wrk's own
-- latency figures mix in the 503s). Writes one JSON line to
-- $OVERLOAD_RESULT when done.
--
-- Environment: OVERLOAD_METHOD (GET or POST), OVERLOAD_NONCE (unique per
-- run: POST bodies carry unique emails).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } overload_timespec;
int clock_gettime(int clock, overload_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("overload_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

-- The load generator shares the cores with the service, so what it spends
-- per request is taken from the service: ids are the thread's request
-- numbers (each thread sees only its own answers), integer keys of `sent`
-- rather than a formatted string each, and a GET is one concatenation
-- around a head built once.
local method = os.getenv("OVERLOAD_METHOD") or "GET"
local nonce = os.getenv("OVERLOAD_NONCE") or tostring(os.time())
local counter = 0
local sent = {}
local head_before_id, head_after_id
-- Read by done() through thread:get, so global.
latencies = {}
ok, shed, other = 0, 0, 0

function init(args)
  local head = wrk.format("GET", nil, { ["X-Request-ID"] = "\0" })
  local at = head:find("\0", 1, true)
  head_before_id, head_after_id = head:sub(1, at - 1), head:sub(at + 1)
end

function request()
  counter = counter + 1
  sent[counter] = now_us()
  if method ~= "POST" then
    return head_before_id .. counter .. head_after_id
  end
  local headers = { ["X-Request-ID"] = tostring(counter), ["Content-Type"] = "application/json" }
  local body = string.format('{"email":"o%d-%d-%s@overload.example","first_name":"Over","last_name":"Load"}',
    tid, counter, nonce)
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  local id = tonumber(headers["x-request-id"] or headers["X-Request-ID"])
  local started = id and sent[id]
  if started then sent[id] = nil end
  if status >= 200 and status < 300 then
    ok = ok + 1
    if started then latencies[#latencies + 1] = now_us() - started end
  elseif status == 503 then
    shed = shed + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local all, n_ok, n_shed, n_other = {}, 0, 0, 0
  for _, thread in ipairs(threads) do
    local l = thread:get("latencies")
    for i = 1, #l do all[#all + 1] = l[i] end
    n_ok = n_ok + thread:get("ok")
    n_shed = n_shed + thread:get("shed")
    n_other = n_other + thread:get("other")
  end
  table.sort(all)
  local function pct(p)
    if #all == 0 then return 0 end
    return all[math.max(1, math.ceil(#all * p))] / 1e3
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local line = string.format(
    '{"ok":%d,"shed":%d,"other":%d,"seconds":%.3f,"goodput":%.1f,"rps":%.1f,' ..
      '"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,"socket_errors":%d}\n',
    n_ok, n_shed, n_other, seconds, n_ok / seconds, summary.requests / seconds,
    pct(0.50), pct(0.99), pct(1.0), e.connect + e.read + e.write + e.timeout)
  local path = os.getenv("OVERLOAD_RESULT")
  if path then
    local f = assert(io.open(path, "w"))
    f:write(line)
    f:close()
  else
    io.write(line)
  end
end
