-- pg: libpq pipeline mode — many tasks' statements in flight on one connection.
local t = require "tap"
local pg = require "pg"
local flow = require "flow"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end

local c = pg.connect(ci)
local admin = pg.connect(ci)

t.test("100 tasks share one connection in pipeline mode", function()
  t.eq(c:pipeline(true), false, "returns the previous setting")
  local pid = c:backend_pid()
  local hs = {}
  for i = 1, 100 do
    hs[i] = flow.spawn(function()
      local r = c:query("SELECT $1::int AS i, pg_backend_pid() AS pid", i)[1]
      return r.pid == pid and r.i or -1
    end)
  end
  flow.sleep(0)
  t.eq(c:status(), "busy", "statements in flight")
  local res = flow.all(hs)
  local good = 0
  for i = 1, 100 do if res[i] == i then good = good + 1 end end
  t.eq(good, 100, "each task got its own row, all from the one backend")
  t.eq(c:status(), "ready")
end)

t.test("an error fails only its own statement", function()
  local hs = {}
  for i = 1, 10 do
    hs[i] = flow.spawn(function()
      if i == 5 then return c:query("SELECT 1 / $1::int AS x", 0) end
      if i == 7 then return c:query("SELEC broken") end
      return c:query("SELECT $1::int AS x", i)[1].x
    end)
  end
  for i = 1, 10 do
    if i == 5 then t.raises(function() hs[i]:wait() end, "pg.22012", "division by zero")
    elseif i == 7 then t.raises(function() hs[i]:wait() end, "pg.42601",
      "a syntax error in the Parse of a new statement")
    else t.eq(hs[i]:wait(), i) end
  end
  t.raises(function() c:query("SELEC broken") end, "pg.42601", "the same again: still the real error")
end)

t.test("a cancelled task's pipelined statement is dropped; the others carry on", function()
  local slow = flow.spawn(function()
    return flow.timeout(0.1, function() return c:query("SELECT pg_sleep(0.4) AS s") end)
  end)
  local after = flow.spawn(function() return c:query("SELECT 42 AS x")[1].x end)
  t.raises(function() slow:wait() end, "flow.timeout")
  t.eq(after:wait(), 42, "the statement behind it completes")
  t.eq(c:query("SELECT 1 AS x")[1].x, 1, "the connection is usable")
end)

t.test("exec, COPY and transactions need pipeline mode off", function()
  t.raises(function() c:exec("SELECT 1") end, "not available in pipeline mode")
  t.raises(function() c:transaction(function() end) end, "not available in pipeline mode")
  t.raises(function() c:copy_to("COPY (SELECT 1) TO STDOUT", print) end, "not available in pipeline mode")
  t.eq(c:pipeline(false), true)
  t.eq(c:exec("SELECT 3 AS x")[1].x, 3, "exec works again")
  c:transaction(function(conn) conn:query("SELECT 1") end)
  t.eq(c:transaction_status(), "idle")
end)

t.test("pipeline mode on a broken connection", function()
  local v = pg.connect(ci)
  v:pipeline(true)
  local h = flow.spawn(function() return v:query("SELECT pg_sleep(2)") end)
  flow.sleep(0.1)
  admin:query("SELECT pg_terminate_backend($1)", v:backend_pid())
  local ok, err = pcall(h.wait, h)
  t.ok(not ok and err.retryable, "the in-flight statement fails retryable: " .. tostring(err))
  t.eq(v:status(), "broken")
  v:close()
end)

c:close()
admin:close()
t.done()
