-- Helpers for the scenario scripts that send bodies: a per-thread counter
-- for unique values, and the pool of seeded ids ($BENCH_IDS: one UUID a
-- line, written by scripts/bench.sh after seeding).
dofile(os.getenv("BENCH_LUA") .. "/report.lua")

local threads = 0
-- Runs in wrk's main state once per thread: gives each thread its number so
-- that generated emails never collide across threads.
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

-- Unique per run ($BENCH_NONCE), per thread and per request.
nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
counter = 0
function next_email()
  counter = counter + 1
  return string.format("w%s-%d-%d@bench.example", nonce, tid or 0, counter)
end

-- The seeded ids, loaded in each thread; requests walk them in turn,
-- each thread from its own offset.
function load_ids(path)
  local ids = {}
  for line in io.lines(path) do
    if line ~= "" then ids[#ids + 1] = line end
  end
  assert(#ids > 0, "no ids in " .. path)
  return ids
end
ids = nil
cursor = 0
function next_id()
  if ids == nil then
    ids = load_ids(assert(os.getenv("BENCH_IDS"), "BENCH_IDS is not set"))
    cursor = ((tid or 1) * 7919) % #ids
  end
  cursor = cursor % #ids + 1
  return ids[cursor]
end

json_headers = { ["Content-Type"] = "application/json" }
