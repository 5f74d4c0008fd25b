-- bench/store_latency.lua — submit-to-start latency of an idle worker on the PostgreSQL store:
-- a worker (the object `flowrun worker` runs) waits on this process's loop; N times, a run is
-- submitted through another store connection and the time from the submit call to its first
-- task's body starting is taken (NOTIFY wakes the worker: no polling). Prints one JSON line
-- with p50, p99, mean and max in ms. bench/peers/graphile_latency.mjs does the same with
-- graphile-worker (addJob to the task handler starting).
--   flowrun bench/store_latency.lua CONNINFO [N]
local flow = require "flow"
local json = require "json"
local engine = require "flowrun.engine"
local pgstore = require "flowrun.engine.store.pg"
local worker = require "flowrun.worker"

local conninfo = assert(arg[1], "usage: flowrun bench/store_latency.lua CONNINFO [N]")
local N = tonumber(arg[2]) or 200

local source = [[
local flow = require "flow"
local wf = flow.workflow { name = "latency" }
wf:task("first", function(ctx) bench_started(ctx.run_id) end)
return wf
]]
local started, waiter = {}, nil
-- the workflow's task calls this global (workflows run with this process's globals)
function bench_started(run_id) -- luacheck: ignore
  started[run_id] = flow.time()
  if waiter then waiter:wake() end
end

local wf = assert(engine.load(load(source, "=latency.lua"), "latency.lua"))
assert(wf:validate())
local wstore, sstore = pgstore.open(conninfo), pgstore.open(conninfo)
sstore:runs { limit = 1 }
local w = worker.new { store = wstore, concurrency = 4, log = function() end }
w:start()
flow.sleep(0.5) -- the worker is up and idle, listening
local lat = {}
for i = 1, N + 5 do
  local id = string.format("lat-%d-%05d", require("flow.sys").getpid(), i)
  waiter = require("pg").core.waiter()
  local t0 = flow.time()
  assert(sstore:submit { workflow = "latency", source = source, hash = engine.hash_text(source),
    file = "latency.lua", params = {}, tasks = { "first" }, run_id = id })
  if not started[id] then waiter:wait(10) end
  assert(started[id], "run " .. id .. " did not start within 10 s")
  if i > 5 then lat[#lat + 1] = (started[id] - t0) * 1000 end -- the first ones warm up
  flow.sleep(0.01) -- the worker is idle again
end
w:stop("done")
w:wait()
sstore:close()
wstore:close()
table.sort(lat)
local sum = 0
for _, v in ipairs(lat) do sum = sum + v end
local function pct(p) return lat[math.max(1, math.ceil(#lat * p))] end
print(json.encode { n = #lat, p50_ms = pct(0.5), p99_ms = pct(0.99), mean_ms = sum / #lat,
  max_ms = lat[#lat] })
