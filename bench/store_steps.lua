-- bench/store_steps.lua — workers' throughput on the PostgreSQL store: RUNS submitted runs of a
-- workflow of 10 sequential no-op steps (each step's success committed before the next starts),
-- queued first, then run by WORKERS `flowrun worker` processes taking CONCURRENCY runs each.
-- Prints one JSON line: runs, seconds (from the first run's start to the last one's end, from
-- the store's own columns), runs/s, steps/s. bench/peers/dbos_steps.mjs does the same with DBOS.
--   flowrun bench/store_steps.lua FLOWRUN CONNINFO RUNS WORKERS CONCURRENCY
local flow = require "flow"
local json = require "json"
local pg = require "pg"
local engine = require "flowrun.engine"
local pgstore = require "flowrun.engine.store.pg"

local bin, conninfo = assert(arg[1]), assert(arg[2])
local RUNS, WORKERS, CONC = tonumber(arg[3]) or 1000, tonumber(arg[4]) or 1, tonumber(arg[5]) or 16
local STEPS = 10

local source = [[
local flow = require "flow"
local wf = flow.workflow { name = "ten_steps" }
local prev
for i = 1, 10 do
  local name = "s" .. i
  wf:task(name, { after = prev }, function() return i end)
  prev = name
end
return wf
]]
local wf = assert(engine.load(load(source, "=ten_steps.lua"), "ten_steps.lua"))
assert(wf:validate())
local names = {}
for i, t in ipairs(wf.order) do names[i] = t.name end

local store = pgstore.open(conninfo)
local admin = pg.connect(conninfo)
store:runs { limit = 1 } -- the schema
admin:exec("DELETE FROM flowrun.runs WHERE workflow = 'ten_steps'")
for i = 1, RUNS do
  assert(store:submit { workflow = wf.name, source = source, hash = engine.hash_text(source),
    file = "ten_steps.lua", params = {}, tasks = names, run_id = string.format("steps-%05d", i) })
end
store:close()

local procs = {}
for w = 1, WORKERS do
  procs[w] = flow.spawn(flow.exec, { bin, "worker", "--store", conninfo, "--concurrency",
    tostring(CONC), "--log-format", "json" }, { max_output = 1 })
end
local t0 = flow.now()
local done = 0
while flow.now() - t0 < 600 do
  done = admin:query("SELECT count(*)::int AS n FROM flowrun.runs WHERE workflow = 'ten_steps' "
    .. "AND state = 'success'")[1].n
  if done >= RUNS then break end
  flow.sleep(0.05)
end
local span = admin:query("SELECT min(started) AS a, max(finished) AS b FROM flowrun.runs "
  .. "WHERE workflow = 'ten_steps' AND state = 'success'")[1]
for _, h in ipairs(procs) do h:cancel() end
for _, h in ipairs(procs) do pcall(h.wait, h) end
admin:close()
local secs = span.b - span.a
print(json.encode { runs = done, workers = WORKERS, concurrency = CONC, seconds = secs,
  runs_per_s = done / secs, steps_per_s = done * STEPS / secs })
