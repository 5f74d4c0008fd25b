-- pg: cancellation at random moments across every kind of operation (pooled queries,
-- transactions, COPY both ways, a shared connection, pipeline mode, a binary string whose
-- parameter type the server is asked for first). Afterwards every
-- connection must answer and nothing may be left alive. Deterministic seeds; about 1 s each.
local t = require "tap"
local pg = require "pg"
local flow = require "flow"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end

local setup = pg.connect(ci)
setup:exec("DROP TABLE IF EXISTS pg_stress_t; CREATE TABLE pg_stress_t (x int)")
setup:close()

local function run(seed, max_timeout_ms)
  local seed0 = seed
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
  local pool = pg.pool { conninfo = ci, size = 6 }
  local shared = pg.connect(ci)
  local piped = pg.connect(ci)
  piped:pipeline(true)
  local ok_n, timeout_n, other = 0, 0, {}
  local hs = {}
  for i = 1, 300 do
    local kind, delay, to = rnd(7), rnd(30) / 1000, rnd(max_timeout_ms) / 1000
    hs[i] = flow.spawn(function()
      local ok, err = pcall(flow.timeout, to, function()
        if kind == 0 then
          return pool:query("SELECT pg_sleep($1)", delay)
        elseif kind == 1 then
          return shared:query("SELECT pg_sleep($1), $2::int", delay, i)
        elseif kind == 2 then
          return piped:query("SELECT pg_sleep($1), $2::int", delay, i)
        elseif kind == 3 then
          return pool:transaction(function(c) c:query("SELECT pg_sleep($1)", delay) end)
        elseif kind == 4 then
          return shared:copy_to("COPY (SELECT generate_series(1, 20000)) TO STDOUT",
            function() end)
        elseif kind == 5 then -- Parse, Describe, Execute: cancelled at any of them
          return shared:query("SELECT pg_sleep($1), length($2::bytea), $3::int", delay,
            "\255binary\0" .. i % 3, i % 5)
        end
        local n = 0
        return pool:with(function(c)
          return c:copy_from("COPY pg_stress_t FROM STDIN", function()
            n = n + 1
            if n % 500 == 0 then flow.sleep(0.001) end
            if n < 5000 then return { n } end
          end)
        end)
      end)
      if ok then
        ok_n = ok_n + 1
      elseif flow.is_error(err, "flow.timeout") then
        timeout_n = timeout_n + 1
      else
        other[#other + 1] = tostring(err)
      end
    end)
    if i % 20 == 0 then flow.sleep(0.005) end
  end
  for _, h in ipairs(hs) do h:wait() end
  t.eq(ok_n + timeout_n, 300, ("seed %d: each task succeeded or timed out (%d ok, %d timed "
    .. "out) %s"):format(seed0, ok_n, timeout_n, other[1] or ""))
  local function answers(fn)
    local ok, v = pcall(flow.timeout, 5, fn)
    return ok and v
  end
  t.eq(answers(function() return shared:query("SELECT 1 AS x")[1].x end), 1,
    "the shared connection answers")
  t.eq(answers(function() return piped:query("SELECT 2 AS x")[1].x end), 2,
    "the pipelined connection answers")
  t.eq(answers(function() return pool:query("SELECT 3 AS x")[1].x end), 3, "the pool answers")
  local st = pool:stats()
  t.ok(st.open <= 6 and st.waiting == 0, ("pool within bounds (open %d, waiting %d)")
    :format(st.open, st.waiting))
  pool:close()
  shared:close()
  piped:close()
end

run(3, 150)
run(18, 326)
run(7, 60)
t.done()
