-- pg: transactions (commit, rollback, nesting, cancellation) and LISTEN/NOTIFY.
local t = require "tap"
local pg = require "pg"
local flow = require "flow"

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then
  error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)")
end

local c = pg.connect(ci)
local other = pg.connect(ci) -- sees only committed data
c:exec("DROP TABLE IF EXISTS pg_tx_t; CREATE TABLE pg_tx_t (id int PRIMARY KEY, v text)")

local function count(where)
  return other:query("SELECT count(*) AS n FROM pg_tx_t WHERE " .. (where or "true"))[1].n
end

t.test("transaction commits when fn returns, passing its results", function()
  local a, b = c:transaction(function(conn, x)
    conn:query("INSERT INTO pg_tx_t VALUES ($1, $2)", 1, x)
    t.eq(count("id = 1"), 0, "not visible to another connection before COMMIT")
    return "r1", 2
  end, "one")
  t.eq({ a, b }, { "r1", 2 }, "fn's results")
  t.eq(count("id = 1"), 1, "visible after COMMIT")
  t.eq(c:transaction_status(), "idle")
end)

t.test("transaction rolls back when fn raises, then re-raises the same error", function()
  local err = t.raises(function()
    c:transaction(function(conn)
      conn:query("INSERT INTO pg_tx_t VALUES ($1, $2)", 2, "two")
      conn:query("INSERT INTO pg_tx_t VALUES ($1, $2)", 1, "dup") -- 23505
    end)
  end, "pg.23505", "the server error comes out")
  t.eq(count("id = 2"), 0, "the first insert was rolled back")
  t.eq(c:transaction_status(), "idle", "no transaction left open")
  local e2 = t.raises(function()
    c:transaction(function(conn)
      conn:query("INSERT INTO pg_tx_t VALUES (3, 'x')")
      error({ code = "mine" })
    end)
  end)
  t.eq(e2 and e2.code, "mine", "a Lua error value passes through unchanged")
  t.eq(count("id = 3"), 0)
end)

t.test("nested transaction raises a clear error; the outer one rolls back", function()
  local err = t.raises(function()
    c:transaction(function(conn)
      conn:query("INSERT INTO pg_tx_t VALUES (4, 'outer')")
      conn:transaction(function() end)
    end)
  end, "already in a transaction")
  t.like(tostring(err), "nested transactions are not supported")
  t.eq(count("id = 4"), 0, "outer rolled back")
  c:exec("BEGIN")
  t.raises(function() c:transaction(function() end) end, "already in a transaction",
    "a manual BEGIN counts too")
  c:exec("ROLLBACK")
end)

t.test("an error caught inside the transaction makes COMMIT fail, not silently roll back", function()
  local err = t.raises(function()
    c:transaction(function(conn)
      conn:query("INSERT INTO pg_tx_t VALUES (5, 'x')")
      pcall(conn.query, conn, "SELECT 1/0")
    end)
  end, "pg.25P02")
  t.like(err and err.message, "rolled back")
  t.eq(count("id = 5"), 0)
  t.eq(c:transaction_status(), "idle")
end)

t.test("savepoints work inside a transaction", function()
  c:transaction(function(conn)
    conn:query("INSERT INTO pg_tx_t VALUES (6, 'kept')")
    conn:exec("SAVEPOINT s1")
    pcall(conn.query, conn, "INSERT INTO pg_tx_t VALUES (6, 'dup')")
    conn:exec("ROLLBACK TO SAVEPOINT s1")
    conn:query("INSERT INTO pg_tx_t VALUES (7, 'after')")
  end)
  t.eq(count("id IN (6, 7)"), 2)
end)

t.test("a transaction cancelled by a timeout rolls back; the connection is usable", function()
  local t0 = flow.now()
  t.raises(function()
    flow.timeout(0.3, function()
      c:transaction(function(conn)
        conn:query("INSERT INTO pg_tx_t VALUES (8, 'x')")
        conn:query("SELECT pg_sleep(20)")
      end)
    end)
  end, "flow.timeout")
  t.ok(flow.now() - t0 < 3, "returned promptly")
  t.eq(c:transaction_status(), "idle", "rolled back, not left open")
  t.eq(count("id = 8"), 0, "nothing committed")
  t.eq(c:query("SELECT 1 AS x")[1].x, 1, "the connection works")
end)

t.test("a transaction can start while a cancelled statement still drains", function()
  local conn = pg.connect(ci)
  t.raises(function() flow.timeout(0.1, function() return conn:query("SELECT pg_sleep(5)") end) end,
    "flow.timeout")
  local v = conn:transaction(function(cc) return cc:query("SELECT 11 AS v")[1].v end)
  t.eq(v, 11, "BEGIN waited behind the drain instead of calling it nesting")
  conn:close()
end)

t.test("pool:transaction", function()
  local pool = pg.pool { conninfo = ci, size = 2 }
  pool:transaction(function(conn) conn:query("INSERT INTO pg_tx_t VALUES (9, 'p')") end)
  t.eq(count("id = 9"), 1)
  t.raises(function()
    pool:transaction(function(conn)
      conn:query("INSERT INTO pg_tx_t VALUES (10, 'p')")
      error("nope")
    end)
  end, "nope")
  t.eq(count("id = 10"), 0)
  t.eq(pool:stats().idle, 1, "the connection went back to the pool")
  pool:close()
end)

-- ---- LISTEN / NOTIFY --------------------------------------------------------------------

t.test("LISTEN and a NOTIFY from another connection", function()
  local l = pg.connect(ci)
  l:listen("pg_tx_chan")
  local h = flow.spawn(function()
    flow.sleep(0.1)
    other:notify("pg_tx_chan", "hello")
  end)
  local t0 = flow.now()
  local n = l:wait_notify(5)
  t.ok(n, "a notification came")
  t.eq(n and n.channel, "pg_tx_chan"); t.eq(n and n.payload, "hello")
  t.eq(n and n.pid, other:backend_pid(), "pid of the sender")
  t.ok(flow.now() - t0 >= 0.09 and flow.now() - t0 < 2, "waited for it, not polled")
  h:wait()
  l:close()
end)

t.test("wait_notify times out with nil; queued notifications keep their order", function()
  local l = pg.connect(ci)
  l:listen('weird "chan"')
  local t0 = flow.now()
  t.eq(l:wait_notify(0.2), nil, "nil on timeout")
  local dt = flow.now() - t0
  t.ok(dt >= 0.19 and dt < 1.5, ("waited the timeout (%.2fs)"):format(dt))
  for i = 1, 3 do other:notify('weird "chan"', "m" .. i) end
  -- notifications in a transaction arrive at COMMIT only
  other:transaction(function(o)
    o:notify('weird "chan"', "in-tx")
    local early = l:wait_notify(0.2)
    t.ok(early and early.payload == "m1", "committed ones arrive")
  end)
  local got = {}
  for _ = 1, 3 do got[#got + 1] = (l:wait_notify(2) or {}).payload end
  t.eq(got, { "m2", "m3", "in-tx" }, "in order, the transaction's at its commit")
  l:unlisten('weird "chan"')
  other:notify('weird "chan"', "after")
  t.eq(l:wait_notify(0.2), nil, "nothing after UNLISTEN")
  -- durations are checked as everywhere: NaN and negative raise, math.huge waits until cancelled
  t.raises(function() l:wait_notify(0 / 0) end, "conn:wait_notify", "NaN raises")
  t.raises(function() l:wait_notify(-1) end, "conn:wait_notify", "a negative timeout raises")
  t.raises(function() l:cancel_timeout(0 / 0) end, "conn:cancel_timeout", "NaN cancel_timeout raises")
  local prev = l:cancel_timeout(math.huge)
  t.eq(l:cancel_timeout(prev), math.huge, "math.huge is accepted (forever)")
  local h = flow.spawn(function() return l:wait_notify(math.huge) end)
  flow.sleep(0.2)
  t.eq(h:status(), "waiting", "math.huge: still waiting, no spin, no instant timeout")
  h:cancel()
  pcall(h.wait, h)
  t.eq(h:status(), "cancelled", "until cancelled")
  l:close()
end)

t.test("waiting for a notification is an async wait: other tasks run; it can be cancelled", function()
  local l = pg.connect(ci)
  l:listen("pg_tx_async")
  local ticks = 0
  local ticker = flow.spawn(function()
    for _ = 1, 5 do flow.sleep(0.02); ticks = ticks + 1 end
  end)
  local waiter = flow.spawn(function() return l:wait_notify() end)
  ticker:wait()
  t.eq(ticks, 5, "other tasks ran while one waited for NOTIFY")
  t.eq(waiter:status(), "waiting")
  waiter:cancel()
  t.raises(function() waiter:wait() end, "flow.cancelled")
  -- and the connection still receives
  other:notify("pg_tx_async", "later")
  t.eq((l:wait_notify(2) or {}).payload, "later")
  t.raises(function() flow.timeout(0.1, function() return l:wait_notify() end) end, "flow.timeout")
  t.eq(l:query("SELECT 1 AS x")[1].x, 1)
  l:close()
end)

c:close()
other:close()
t.done()
