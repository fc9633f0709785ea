-- Loaded by every scenario script (and used alone for plain GETs): when wrk
-- finishes, appends one JSON line with the run's figures to the file named
-- by $BENCH_RESULT. Latencies are in microseconds, as wrk measures them.
function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local line = string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d}}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout)
  local path = os.getenv("BENCH_RESULT")
  if path then
    local f = assert(io.open(path, "a"))
    f:write(line)
    f:close()
  else
    io.write(line)
  end
end
