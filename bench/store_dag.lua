-- bench/store_dag.lua — the engine's per-task overhead with each run store: the layered DAG of
-- bench/engine.lua (10,000 no-op tasks, a hub fanning out to 999 tasks that fan in to the next
-- hub) journaled to the file store (fsync, group commit) and to the PostgreSQL store (group
-- commit: one statement per commit, the server's own fsync on). Prints wall time per task,
-- commits and records. Also a chain of 200 dependent tasks, where nothing can be grouped.
--   flowrun bench/store_dag.lua CONNINFO [TASKS] [WIDTH]
local flow = require "flow"
local engine = require "flowrun.engine"
local filestore = require "flowrun.engine.store.file"
local pgstore = require "flowrun.engine.store.pg"

local conninfo = assert(arg[1], "usage: flowrun bench/store_dag.lua CONNINFO [TASKS] [WIDTH]")
local N = tonumber(arg[2]) or 10000
local W = tonumber(arg[3]) or 1000
local dir = (os.getenv("TMPDIR") or "/tmp") .. "/flowrun-bench-store-" .. require("flow.sys").getpid()

local function layered()
  local wf = flow.workflow { name = "bench" }
  local noop = function() end
  local prev, n, hub = {}, 0, 0
  while n < N do
    hub = hub + 1
    local hname = "hub" .. hub
    wf:task(hname, { after = prev }, noop)
    n = n + 1
    prev = {}
    for i = 1, math.min(W - 1, N - n) do
      local name = hname .. "_" .. i
      wf:task(name, { after = hname }, noop)
      prev[#prev + 1] = name
      n = n + 1
    end
  end
  assert(wf:validate())
  return wf
end

local function chain(n)
  local wf = flow.workflow { name = "chain" }
  for i = 1, n do wf:task("c" .. i, { after = i > 1 and ("c" .. (i - 1)) or nil }, function() end) end
  assert(wf:validate())
  return wf, n
end

local pstore = pgstore.open(conninfo)
pstore:runs { limit = 1 } -- connect and create the schema before measuring
local fstore = filestore.open(dir, { fsync = true, clock = flow.time })

local seq = 0
local function run_in(store, wf)
  seq = seq + 1
  local id = string.format("bench-%d-%d", require("flow.sys").getpid(), seq)
  local jr = assert(store:create_run({ ev = "run_started", run = id, workflow = wf.name, params = {} },
    function() error("taken") end))
  collectgarbage()
  local t0 = flow.now()
  local sum = engine.run(wf, { params = {}, journal = jr, run_id = id })
  local el = flow.now() - t0
  jr:close()
  assert(sum.state == "success", "bench run failed")
  return el, jr.commits, jr.records
end

local function best(store, wf, times)
  local b, c, r = math.huge, 0, 0
  for _ = 1, times do
    local el, commits, recs = run_in(store, wf)
    if el < b then b, c, r = el, commits, recs end
  end
  return b, c, r
end

local wf = layered()
run_in(fstore, wf) -- warm up
local rows = {}
for _, s in ipairs { { "file store (fsync, group commit)", fstore }, { "PostgreSQL store (group commit)", pstore } } do
  local el, commits, recs = best(s[2], wf, 3)
  rows[#rows + 1] = { s[1], el, commits, recs }
end
local cw, cn = chain(200)
local crows = {}
for _, s in ipairs { { "file store (fsync each)", fstore }, { "PostgreSQL store (a commit each)", pstore } } do
  local el, commits = best(s[2], cw, 2)
  crows[#crows + 1] = { s[1], el, commits }
end
pstore:close()
os.execute("rm -rf '" .. dir .. "'")

print(string.format("store: %d no-op tasks in layers of %d, journaled", N, W))
print(string.format("  %-36s %10s %12s  %s", "store", "wall", "per task", "journal"))
for _, r in ipairs(rows) do
  print(string.format("  %-36s %8.1f ms %9.1f us  %d records in %d commits", r[1], r[2] * 1000,
    r[2] / N * 1e6, r[4], r[3]))
end
print(string.format("  a chain of %d dependent tasks (one commit each, nothing to group):", cn))
for _, r in ipairs(crows) do
  print(string.format("  %-36s %8.1f ms %9.1f us  %d commits", r[1], r[2] * 1000, r[2] / cn * 1e6, r[3]))
end
