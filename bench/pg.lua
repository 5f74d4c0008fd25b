-- bench/pg.lua — single-row SELECT by primary key through pg: N queries spread over T tasks
-- sharing a pool of T connections (T = 1: one task, sequential). Prints "queries/s".
--   flowrun bench/pg.lua CONNINFO [N] [TASKS] [MODE]
-- MODE: pool (default): each query through pool:query; conn: each task keeps one pooled
-- connection; pipeline: all tasks share ONE connection in libpq pipeline mode.
local flow = require "flow"
local pg = require "pg"

local conninfo = assert(arg[1], "usage: bench/pg.lua CONNINFO [N] [TASKS]")
local n = tonumber(arg[2] or 20000)
local tasks = tonumber(arg[3] or 16)
local mode = arg[4] or "pool"
local naccounts = 100000 -- pgbench -i -s 1

local pool = pg.pool { conninfo = conninfo, size = mode == "pipeline" and 1 or tasks }
-- open the connections before timing, as pgbench and psycopg2 do
local warm = {}
for i = 1, pool.size do warm[i] = pool:acquire() end
for i = 1, pool.size do pool:release(warm[i]) end
local shared
if mode == "pipeline" then
  shared = pool:acquire()
  shared:pipeline(true)
end

local sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
local per = n // tasks
local seed = 12345
local t0 = flow.now()
local hs = {}
for t = 1, tasks do
  hs[t] = flow.spawn(function()
    local rnd = seed + t
    local sum = 0
    if mode == "pipeline" then
      for _ = 1, per do
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        sum = sum + shared:query(sql, rnd % naccounts + 1)[1].abalance
      end
    elseif mode == "conn" then
      local c = pool:acquire()
      for _ = 1, per do
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        sum = sum + c:query(sql, rnd % naccounts + 1)[1].abalance
      end
      pool:release(c)
    else
      for _ = 1, per do
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        sum = sum + pool:query(sql, rnd % naccounts + 1)[1].abalance
      end
    end
    return sum
  end)
end
flow.all(hs)
local dt = flow.now() - t0
print(("%.0f"):format(per * tasks / dt))
if shared then shared:pipeline(false); pool:release(shared) end
pool:close()
