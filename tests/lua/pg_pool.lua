-- pg: the pool (queueing, replacement of broken connections), many concurrent waits in one
-- thread, and cancellation of running queries (PQcancel) by task timeouts.
local t = require "tap"
local pg = require "pg"
local flow = require "flow"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end
local logfile = os.getenv("FLOWRUN_TEST_PGLOG")

local admin = pg.connect(ci)

t.test("50 tasks share a pool of 5: queued, never more than 5 at once", function()
  local pool = pg.pool { conninfo = ci, size = 5 }
  local active, max_active, pids = 0, 0, {}
  local hs = {}
  local t0 = flow.now()
  for i = 1, 50 do
    hs[i] = flow.spawn(function()
      return pool:with(function(conn)
        active = active + 1
        if active > max_active then max_active = active end
        local r = conn:query("SELECT $1::int AS i, pg_backend_pid() AS pid, pg_sleep(0.05)", i)[1]
        active = active - 1
        pids[r.pid] = true
        return r.i
      end)
    end)
  end
  local res = flow.all(hs)
  local dt = flow.now() - t0
  local ok = true
  for i = 1, 50 do ok = ok and res[i] == i end
  t.ok(ok, "each task got its own answer")
  t.eq(max_active, 5, "at most (and at some point exactly) 5 at once")
  local n = 0
  for _ in pairs(pids) do n = n + 1 end
  t.eq(n, 5, "5 server connections served them")
  t.ok(dt >= 0.45, ("they queued: 10 rounds of 50 ms took %.2fs"):format(dt))
  t.ok(dt < 3, "and did not take much longer")
  t.eq(pool:stats(), { size = 5, open = 5, idle = 5, waiting = 0 })
  -- plain pool:query from many tasks
  hs = {}
  for i = 1, 50 do hs[i] = flow.spawn(function() return pool:query("SELECT $1::int AS i", i)[1].i end) end
  res = flow.all(hs)
  t.eq(res[37], 37)
  pool:close()
  t.raises(function() pool:query("SELECT 1") end, "pool is closed")
end)

t.test("100 tasks wait on queries at once in one thread", function()
  local conns, hs = {}, {}
  for i = 1, 100 do hs[i] = flow.spawn(function() conns[i] = pg.connect(ci) end) end
  flow.all(hs)
  local t0 = flow.now()
  hs = {}
  for i = 1, 100 do
    hs[i] = flow.spawn(function() return conns[i]:query("SELECT pg_sleep(0.3), $1::int AS i", i)[1].i end)
  end
  local res = flow.all(hs)
  local dt = flow.now() - t0
  t.eq(#res, 100); t.eq(res[100], 100)
  t.ok(dt < 2.5, ("100 x 0.3 s queries overlapped: %.2fs"):format(dt))
  for i = 1, 100 do conns[i]:close() end
end)

t.test("broken connections are discarded and replaced", function()
  local pool = pg.pool { conninfo = ci, size = 3 }
  local hs = {}
  for i = 1, 3 do
    hs[i] = flow.spawn(function()
      return pool:query("SELECT pg_backend_pid() AS p, pg_sleep(0.05)")[1].p
    end)
  end
  local old = flow.all(hs)
  t.eq(pool:stats().open, 3)
  admin:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
    pg.array(old))
  flow.sleep(0.2) -- the idle connections notice the server closed them
  local pids = {}
  for i = 1, 6 do pids[i] = pool:query("SELECT pg_backend_pid() AS p")[1].p end
  for _, p in ipairs(pids) do
    t.ok(p ~= old[1] and p ~= old[2] and p ~= old[3], "served by a new connection")
  end
  t.ok(pool:stats().open <= 3, "still at most size connections")
  -- a connection that breaks while in use is not given back
  local err = t.raises(function()
    pool:with(function(conn)
      admin:query("SELECT pg_terminate_backend($1)", conn:backend_pid())
      flow.sleep(0.1)
      conn:query("SELECT 1")
    end)
  end)
  t.eq(err and err.retryable, true, "retryable: " .. tostring(err))
  t.eq(pool:query("SELECT 7 AS x")[1].x, 7, "the pool carries on")
  pool:close()
end)

t.test("a waiter cancelled just as it is woken passes its turn on", function()
  local pool = pg.pool { conninfo = ci, size = 1 }
  local c = pool:acquire()
  local a = flow.spawn(function() return pool:query("SELECT 'a' AS w")[1].w end)
  local b = flow.spawn(function() return pool:query("SELECT 'b' AS w")[1].w end)
  flow.sleep(0.05)
  t.eq(pool:stats().waiting, 2)
  -- the slot frees (a broken connection is dropped) and A, first in line, is woken; A is
  -- cancelled in the same turn, before it runs: B must get the slot
  c:close()
  pool:release(c)
  a:cancel()
  t.raises(function() a:wait() end, "flow.cancelled")
  t.eq(flow.timeout(3, function() return b:wait() end), "b", "B got the freed slot")
  -- the same when a connection is handed over
  c = pool:acquire()
  a = flow.spawn(function() return pool:query("SELECT 'a' AS w")[1].w end)
  b = flow.spawn(function() return pool:query("SELECT 'b' AS w")[1].w end)
  flow.sleep(0.05)
  pool:release(c)
  a:cancel()
  t.eq(flow.timeout(3, function() return b:wait() end), "b", "B got the handed-over connection")
  t.eq(pool:stats().open, 1)
  pool:close()
end)

t.test("on_connect runs on each new connection", function()
  local n = 0
  local pool = pg.pool { conninfo = ci, size = 2, on_connect = function(conn)
    n = n + 1
    conn:numeric("number")
    conn:exec("SET application_name = 'pooled'")
  end }
  local hs = {}
  for i = 1, 4 do
    hs[i] = flow.spawn(function()
      return pool:query("SELECT 1.5::numeric AS x, current_setting('application_name') AS a, "
        .. "pg_sleep(0.05)")[1]
    end)
  end
  local res = flow.all(hs)
  t.eq(n, 2, "once per connection")
  t.eq(res[4].x, 1.5); t.eq(res[4].a, "pooled")
  pool:close()
  local bad = pg.pool { conninfo = ci, size = 1, on_connect = function() error("hook failed") end }
  t.raises(function() bad:query("SELECT 1") end, "hook failed", "a failing hook fails the acquire")
  t.eq(bad:stats().open, 0, "and its connection is not counted")
  bad:close()
end)

t.test("a task waiting for a pooled connection can be cancelled", function()
  local pool = pg.pool { conninfo = ci, size = 1 }
  local holder = flow.spawn(function() return pool:query("SELECT pg_sleep(0.4)") end)
  flow.sleep(0.05)
  t.raises(function() flow.timeout(0.1, function() return pool:query("SELECT 1") end) end,
    "flow.timeout")
  t.eq(pool:stats().waiting, 0, "the cancelled waiter left the queue")
  holder:wait()
  t.eq(pool:query("SELECT 5 AS x")[1].x, 5, "the connection went to the next taker")
  t.eq(pool:stats().open, 1)
  pool:close()
end)

local function server_log()
  local f = assert(io.open(logfile or "", "r"), "FLOWRUN_TEST_PGLOG not readable")
  local s = f:read("a"); f:close()
  return s
end

t.test("a query cancelled by a task timeout is cancelled on the server; the connection works", function()
  local c = pg.connect(ci)
  local pid = c:backend_pid()
  local t0 = flow.now()
  local err = t.raises(function()
    flow.timeout(0.3, function() return c:query("SELECT pg_sleep(30) AS cancel_me_1") end)
  end, "flow.timeout")
  local dt = flow.now() - t0
  t.ok(dt < 1, ("the timeout fired at once (%.2fs)"):format(dt))
  -- the next query waits for the cancelled one to be gone, then runs
  local r = c:query("SELECT 1 AS x, pg_backend_pid() AS pid")
  t.eq(r[1].x, 1, "the same connection still works")
  t.eq(r[1].pid, pid, "same backend: not reconnected")
  t.ok(flow.now() - t0 < 2, "the server stopped the 30 s query right away")
  local act = admin:query("SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid)[1]
  t.eq(act.state, "idle", "the server shows the backend idle")
  local log = server_log()
  t.like(log, "%[" .. pid .. "%] ERROR:  canceling statement due to user request",
    "the server log shows the statement cancelled")
  t.like(log, "%[" .. pid .. "%] STATEMENT:  SELECT pg_sleep%(30%) AS cancel_me_1", "that statement")
  c:close()
  err = nil
end)

t.test("a cancelled pooled query: the pool's connection is usable or replaced", function()
  local pool = pg.pool { conninfo = ci, size = 2 }
  local t0 = flow.now()
  local hs = {}
  for i = 1, 2 do
    hs[i] = flow.spawn(function()
      return flow.timeout(0.2, function() return pool:query("SELECT pg_sleep(20)") end)
    end)
  end
  for i = 1, 2 do t.raises(function() hs[i]:wait() end, "flow.timeout") end
  for i = 1, 4 do t.eq(pool:query("SELECT $1::int AS i", i)[1].i, i) end
  t.ok(flow.now() - t0 < 2, "no waiting for the 20 s queries")
  -- the second connection's cancel request may still be on its way: give it a moment
  local busy, deadline = -1, flow.now() + 2
  repeat
    busy = admin:query("SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE "
      .. "'SELECT pg_sleep(20)%' AND state = 'active'")[1].n
    if busy > 0 then flow.sleep(0.05) end
  until busy == 0 or flow.now() > deadline
  t.eq(busy, 0, "nothing still running on the server")
  t.ok(pool:stats().open <= 2)
  pool:close()
end)

t.test("cancelling a task queued behind another on the same connection", function()
  local c = pg.connect(ci)
  local first = flow.spawn(function() return c:query("SELECT pg_sleep(0.3), 1 AS a")[1].a end)
  local second = flow.spawn(function() return c:query("SELECT 2 AS a")[1].a end)
  local third = flow.spawn(function() return c:query("SELECT 3 AS a")[1].a end)
  flow.sleep(0.05)
  t.eq(c:status(), "busy")
  second:cancel()
  t.eq(first:wait(), 1, "the running one finishes"); t.eq(third:wait(), 3, "the next queued one runs")
  t.raises(function() second:wait() end, "flow.cancelled")
  c:close()
end)

t.test("closing a connection with queued work fails the waiting tasks cleanly", function()
  local c = pg.connect(ci)
  local a = flow.spawn(function() return c:query("SELECT pg_sleep(5)") end)
  local b = flow.spawn(function() return c:query("SELECT 1") end)
  flow.sleep(0.05)
  c:close()
  t.raises(function() a:wait() end, "pg.08003", "the running query's task gets an error")
  t.raises(function() b:wait() end, "pg.08003", "so does the queued one")
end)

t.test("cancelling a connect in progress", function()
  -- a socket that accepts and never answers: the startup exchange hangs
  local p = io.popen([[python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True); time.sleep(3)']])
  local port = p:read("l")
  local t0 = flow.now()
  t.raises(function()
    flow.timeout(0.2, function() return pg.connect("host=127.0.0.1 dbname=x user=x port=" .. port) end)
  end, "flow.timeout", "the connect is cancelled by the timeout")
  t.ok(flow.now() - t0 < 1, "promptly")
  t0 = flow.now()
  local err = t.raises(function()
    pg.connect("host=127.0.0.1 dbname=x user=x connect_timeout=1 port=" .. port)
  end, "pg.08001", "connect_timeout is enforced")
  t.like(err and err.message, "timeout expired")
  t.ok(flow.now() - t0 < 3, ("after about 2 s, libpq's minimum (%.1fs)"):format(flow.now() - t0))
  t.eq(err and err.retryable, true)
  p:close()
end)

t.test("an unreferenced connection is closed by the garbage collector", function()
  local pid
  do
    local c = pg.connect(ci)
    pid = c:backend_pid()
  end
  collectgarbage()
  collectgarbage()
  local gone = false
  for _ = 1, 40 do
    if #admin:query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid) == 0 then
      gone = true
      break
    end
    flow.sleep(0.05)
  end
  t.ok(gone, "the server no longer has its backend")
end)

admin:close()
t.done()
