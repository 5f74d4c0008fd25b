-- The async core: spawn, wait, all, any, timeout, sleep, clocks, cancellation, shield.
local t = require "tap"
local flow = require "flow"
local core = flow.core

t.test("spawn runs the function with its arguments; wait returns every result", function()
  local h = flow.spawn(function(a, b) return a + b, "two", nil end, 40, 2)
  local r = table.pack(h:wait())
  t.eq(r.n, 3, "three results (a trailing nil kept)")
  t.eq(r[1], 42, "first result")
  t.eq(r[2], "two", "second result")
  t.eq(h:status(), "ok", "status ok")
  t.ok(h:done(), "done")
  t.eq(table.pack(h:wait())[1], 42, "wait on a finished task returns again")
  t.like(tostring(h), "^task %d+ %(ok%)$", "tostring")
  t.eq(math.type(h.id), "integer", "h.id")
end)

t.test("a spawned task does not start before the spawner waits", function()
  local started = false
  local h = flow.spawn(function() started = true end)
  t.eq(h:status(), "pending", "pending right after spawn")
  t.ok(not started, "not started yet")
  h:wait()
  t.ok(started, "ran once waited for")
end)

t.test("wait re-raises the task's error object unchanged", function()
  local e = flow.error("test.boom", "it broke", { retryable = true, extra = 7 })
  local h = flow.spawn(function() error(e) end)
  local err = t.raises(function() h:wait() end, "test.boom", "raises the code")
  t.ok(rawequal(err, e), "the same error object")
  t.eq(tostring(err), "test.boom: it broke", "__tostring is code: message")
  t.eq(err.extra, 7, "fields kept")
  t.eq(h:status(), "error", "status error")
  t.like(h:traceback(), "core_tasks.lua:%d+", "traceback names the file and line")
  local h2 = flow.spawn(function() error("plain message") end)
  t.raises(function() h2:wait() end, "core_tasks.lua:%d+: plain message", "string errors keep file:line")
end)

t.test("sleeps wake in deadline order and not early", function()
  local order = {}
  local t0 = flow.now()
  local hs = {}
  for _, d in ipairs({ 0.05, 0.01, 0.03, 0.02, 0.04 }) do
    hs[#hs + 1] = flow.spawn(function() flow.sleep(d); order[#order + 1] = d; return flow.now() - t0 end)
  end
  local woke = flow.all(hs)
  t.eq(order, { 0.01, 0.02, 0.03, 0.04, 0.05 }, "woke in order")
  local ok = true
  for i, d in ipairs({ 0.05, 0.01, 0.03, 0.02, 0.04 }) do
    if woke[i] < d - 0.001 then ok = false end
  end
  t.ok(ok, "nobody woke before its deadline")
  t.ok(flow.now() - t0 < 0.5, "and not much later")
end)

t.test("sleep(0) lets other tasks run", function()
  local log = {}
  local a = flow.spawn(function() for i = 1, 3 do log[#log + 1] = "a" .. i; flow.sleep(0) end end)
  local b = flow.spawn(function() for i = 1, 3 do log[#log + 1] = "b" .. i; flow.sleep(0) end end)
  flow.all({ a, b })
  t.eq(table.concat(log, " "), "a1 b1 a2 b2 a3 b3", "interleaved")
  local c = flow.spawn(function() for i = 1, 2 do log[#log + 1] = "y" .. i; coroutine.yield() end end)
  c:wait()
  t.eq(log[#log], "y2", "a bare coroutine.yield() in a task is a turn, not an error")
end)

t.test("bad arguments are usage errors", function()
  t.raises(function() flow.sleep(-1) end, "duration >= 0", "negative sleep")
  t.raises(function() flow.sleep("x") end, "number expected", "non-number sleep")
  t.raises(function() flow.spawn(42) end, "function expected", "spawn needs a function")
  t.raises(function() flow.all(3) end, "list of task handles", "all needs a list")
  t.raises(function() flow.timeout(-1, print) end, "seconds >= 0", "timeout needs seconds")
  t.raises(function() flow.wait_any({ 1 }) end, "not a task", "wait_any checks elements")
  t.raises(function() flow.current():wait() end, "cannot wait for itself", "self wait")
end)

t.test("flow.all returns results in order and fails fast, cancelling the rest", function()
  local hs = {}
  for i = 1, 5 do hs[i] = flow.spawn(function() flow.sleep(0.01 * (6 - i)); return i * 10 end) end
  t.eq(flow.all(hs), { 10, 20, 30, 40, 50 }, "results by position")
  local slow_cleanup = false
  local slow = flow.spawn(function()
    local ok = pcall(flow.sleep, 5)
    slow_cleanup = not ok
  end)
  local bad = flow.spawn(function() flow.sleep(0.01); error(flow.error("x.bad", "bad one")) end)
  local t0 = flow.now()
  t.raises(function() flow.all({ slow, bad }) end, "x.bad", "the first error is raised")
  t.ok(flow.now() - t0 < 1, "without waiting for the slow one")
  t.eq(slow:status(), "cancelled", "the slow one was cancelled")
  t.ok(slow_cleanup, "and its cleanup ran before all returned")
  t.eq(flow.all({}), {}, "all of nothing is nothing")
end)

t.test("flow.any returns the first success and cancels the rest", function()
  local a = flow.spawn(function() flow.sleep(0.05); return "slow" end)
  local b = flow.spawn(function() flow.sleep(0.01); return "fast", 2 end)
  local c = flow.spawn(function() error("fails first") end)
  local i, v, w = flow.any({ a, b, c })
  t.eq({ i, v, w }, { 2, "fast", 2 }, "index and results of the first success")
  t.eq(a:status(), "cancelled", "the others are cancelled")
  local e1 = flow.spawn(function() error(flow.error("e.one", "1")) end)
  local e2 = flow.spawn(function() flow.sleep(0.01); error(flow.error("e.two", "2")) end)
  t.raises(function() flow.any({ e1, e2 }) end, "e.two", "when all fail, the last error")
end)

t.test("flow.timeout returns in time or raises flow.timeout after cancelling", function()
  t.eq(flow.timeout(1, function(x) flow.sleep(0.01); return x end, "ok"), "ok", "in time")
  local cleaned = false
  local t0 = flow.now()
  local err = t.raises(function()
    flow.timeout(0.05, function()
      local ok, e = pcall(flow.sleep, 10)
      cleaned = flow.cancelled(e)
    end)
  end, "flow.timeout", "timed out")
  t.ok(err.retryable, "a timeout is retryable")
  t.ok(flow.now() - t0 >= 0.05 and flow.now() - t0 < 1, "after the time given")
  t.ok(cleaned, "the body saw the cancellation and cleaned up first")
  t.raises(function() flow.timeout(1, function() error(flow.error("inner.err", "x")) end) end,
    "inner.err", "the body's own error passes through")
  -- nested: the inner timeout fires first
  t.raises(function()
    flow.timeout(1, function() flow.timeout(0.01, flow.sleep, 5) end)
  end, "flow.timeout", "nested timeouts")
end)

t.test("now is monotonic seconds, time is the wall clock", function()
  local a = flow.now()
  flow.sleep(0.02)
  local b = flow.now()
  t.ok(b - a >= 0.02 and b - a < 0.5, "now advanced by the sleep")
  t.ok(math.abs(flow.time() - os.time()) <= 2, "time is near os.time()")
end)

t.test("cancellation reaches the task at each kind of wait", function()
  local function cancelled_at(body)
    local h = flow.spawn(body)
    flow.sleep(0.01)
    t.ok(h:cancel(), "cancel accepted")
    local err = t.raises(function() h:wait() end, "flow.cancelled")
    t.eq(h:status(), "cancelled", "status cancelled")
    return err
  end
  cancelled_at(function() flow.sleep(10) end)
  local other = flow.spawn(flow.sleep, 10)
  cancelled_at(function() other:wait() end)
  cancelled_at(function() flow.wait_any({ other }, 10) end)
  cancelled_at(function() flow.all({ other }) end)
  cancelled_at(function() flow.timeout(10, flow.sleep, 10) end)
  other:cancel()
  local ran = false
  local h = flow.spawn(function() ran = true end)
  t.ok(h:cancel(), "cancelling a task that never ran")
  t.eq(h:status(), "cancelled", "status cancelled at once")
  t.raises(function() h:wait() end, "flow.cancelled", "waiting for it raises")
  t.ok(not ran, "its body never runs")
  h = flow.spawn(function() end)
  h:wait()
  t.ok(not h:cancel(), "cancelling a finished task returns false")
end)

t.test("a pcall cannot swallow a cancellation", function()
  local steps = {}
  local h = flow.spawn(function()
    local ok, e = pcall(flow.sleep, 10)
    steps[#steps + 1] = flow.cancelled(e) and "caught" or "?"
    ok, e = pcall(flow.sleep, 0)
    steps[#steps + 1] = flow.cancelled(e) and "raised again" or "carried on"
    return "pretends to succeed"
  end)
  flow.sleep(0.01)
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the task still ends cancelled")
  t.eq(steps, { "caught", "raised again" }, "every later wait raises again")
end)

t.test("flow.shield lets cleanup wait after a cancellation", function()
  local log = {}
  local h = flow.spawn(function()
    local ok, e = pcall(flow.sleep, 10)
    flow.shield(function()
      flow.sleep(0.02)
      log[#log + 1] = "cleanup waited"
    end)
    error(e, 0)
  end)
  flow.sleep(0.01)
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled")
  t.eq(log, { "cleanup waited" }, "the shielded wait completed")
  -- a cancel that arrives during the shield is delivered after it
  local after = {}
  local h2 = flow.spawn(function()
    flow.shield(function() flow.sleep(0.05); after[#after + 1] = "shield done" end)
    flow.sleep(5)
    after[#after + 1] = "not reached"
  end)
  flow.sleep(0.01)
  h2:cancel()
  t.raises(function() h2:wait() end, "flow.cancelled")
  t.eq(after, { "shield done" }, "deferred, then delivered")
  t.eq(table.pack(flow.shield(function(a, b) return a, b end, 1, 2)), { n = 2, 1, 2 }, "results pass through")
  t.raises(function() flow.shield(function() error("in shield") end) end, "in shield", "errors pass through")
end)

t.test("<close> variables are closed when a task fails or is cancelled", function()
  local closed = {}
  local function closer(name)
    return setmetatable({}, { __close = function(_, e) closed[#closed + 1] = name .. ":" .. tostring(e and (e.code or e)) end })
  end
  local h = flow.spawn(function()
    local a <close> = closer("a")
    flow.sleep(10)
  end)
  flow.sleep(0.01)
  h:cancel()
  pcall(h.wait, h)
  local h2 = flow.spawn(function()
    local b <close> = closer("b")
    error("fail")
  end)
  pcall(h2.wait, h2)
  local h3 = flow.spawn(function()
    local c <close> = closer("c")
    return 1
  end)
  h3:wait()
  t.eq(closed[1], "a:flow.cancelled", "closed on cancel with the cancellation error")
  t.like(closed[2], "^b:.*fail", "closed on error")
  t.eq(closed[3], "c:nil", "closed on success")
end)

t.test("a task handle in a <close> variable is cancelled when its scope ends", function()
  local h
  do
    local bg <close> = flow.spawn(flow.sleep, 10)
    h = bg
    flow.sleep(0.01)
  end
  t.raises(function() h:wait() end, "flow.cancelled", "cancelled on leaving the scope")
  local done
  do
    local fin <close> = flow.spawn(function() return "done" end)
    done = fin
    fin:wait()
  end
  t.eq(done:status(), "ok", "a finished task is left as it was")
end)

t.test("waiting where nothing can wait is a clear error", function()
  t.raises(function() table.sort({ 3, 2, 1 }, function(a, b) flow.sleep(0); return a < b end) end,
    "C boundary", "inside a table.sort comparator")
  t.raises(function() coroutine.wrap(function() flow.sleep(0) end)() end,
    "inside a flowrun task", "inside a plain coroutine")
end)

t.test("wait_any: the first to finish, or nil at the timeout", function()
  local a = flow.spawn(flow.sleep, 0.05)
  local b = flow.spawn(flow.sleep, 0.01)
  t.eq(flow.wait_any({ a, b }), 2, "the quicker one")
  t.eq(flow.wait_any({ a }, 0.001), nil, "nil when the time is up")
  t.eq(flow.wait_any({ b }), 1, "immediately for a finished task")
  t.eq(flow.wait_any({}, 0.01), nil, "a plain timed wait with no tasks")
  a:wait()
end)

t.test("many tasks, many waiters on one task", function()
  local gate = flow.spawn(flow.sleep, 0.02)
  local hs = {}
  for i = 1, 200 do hs[i] = flow.spawn(function() gate:wait(); return i end) end
  local r = flow.all(hs)
  t.eq(#r, 200, "all 200 woke")
  t.eq(r[200], 200, "with their own results")
end)

t.test("virtual time jumps over waits on timers only", function()
  core.set_virtual_time(true)
  local t0, w0 = flow.now(), flow.time()
  local hs = {}
  for i = 1, 100 do hs[i] = flow.spawn(function() flow.sleep(3600 * i); return flow.now() end) end
  local r = flow.all(hs)
  local elapsed = flow.now() - t0
  t.ok(elapsed >= 3600 * 100 and elapsed < 3600 * 100 + 1, "100 hours passed on the flow clock")
  t.ok(r[1] - t0 >= 3600 and r[1] - t0 < 3601, "each woke at its own time")
  t.ok(flow.time() - w0 >= 3600 * 100, "flow.time follows")
  t.raises(function() flow.timeout(60, flow.sleep, 7200) end, "flow.timeout", "timeouts follow too")
  core.set_virtual_time(false)
  t.ok(core.stats().timers == 0, "no timers left")
end)

t.test("durations: one rule for every call that takes seconds", function()
  local d = core.duration
  t.eq(d(1.5), 1.5, "a number is seconds")
  t.eq(math.type(d(2)), "integer", "an integer stays one")
  t.eq(d(0), 0, "0")
  t.eq(d("3"), 3, "a numeric string, as Lua converts it")
  t.eq(d(math.huge), math.huge, "math.huge is forever")
  t.eq(d(1e308), math.huge, "so is anything beyond the loop's clock")
  t.eq(d(4e15), math.huge, "from about 127 million years on")
  t.eq(d(3.9e15), 3.9e15, "below that a number stays itself")
  t.raises(function() d(0 / 0, "my timeout") end, "my timeout: .*got NaN", "NaN raises, naming what")
  t.raises(function() d(-1, "my timeout") end, "my timeout: .*>= 0.*got %-1", "negative raises")
  t.raises(function() d(-math.huge) end, "duration: .*got %-inf", "-inf raises")
  t.raises(function() d("soon") end, "number expected", "not a number raises")
  local h = flow.spawn(function() return 1 end)
  for _, bad in ipairs({ 0 / 0, -1 }) do
    local what = tostring(bad)
    t.raises(function() flow.sleep(bad) end, "flow.sleep: expected a duration", "sleep(" .. what .. ")")
    t.raises(function() flow.wait_any({ h }, bad) end, "wait_any timeout", "wait_any(hs, " .. what .. ")")
    t.raises(function() flow.wait_all({ h }, bad) end, "wait_all timeout", "wait_all(hs, " .. what .. ")")
    t.raises(function() flow.timeout(bad, function() end) end, "timeout", "flow.timeout(" .. what .. ")")
    t.raises(function() flow.exec("true", { timeout = bad }) end, "timeout",
      "flow.exec timeout " .. what)
    local http = require "http"
    t.raises(function() http.request { url = "http://127.0.0.1:9/", timeout = bad } end,
      "http.request timeout: expected a duration", "http.request timeout " .. what)
    t.raises(function() http.request { url = "http://127.0.0.1:9/", connect_timeout = bad } end,
      "http.request connect_timeout: expected a duration", "http.request connect_timeout " .. what)
  end
  h:wait()
end)

t.test("durations: forever waits until cancelled, without a timer and without spinning", function()
  local c0 = os.clock()
  local inner = flow.spawn(flow.sleep, math.huge)
  local hs = {
    flow.spawn(flow.sleep, math.huge),
    flow.spawn(flow.sleep, 1e308),
    flow.spawn(flow.wait_any, { inner }, math.huge),
    flow.spawn(flow.timeout, 1e300, flow.sleep, math.huge),
    inner,
  }
  flow.sleep(0.3)
  local cpu = os.clock() - c0
  for i, h in ipairs(hs) do t.eq(h:status(), "waiting", "forever wait " .. i .. " still waits") end
  t.ok(cpu < 0.1, ("the process idles meanwhile (%.3f s of CPU in 0.3 s)"):format(cpu))
  for _, h in ipairs(hs) do h:cancel() end
  for _, h in ipairs(hs) do flow.wait_any({ h }) end
  for i, h in ipairs(hs) do t.eq(h:status(), "cancelled", "forever wait " .. i .. " cancelled") end
  t.eq(flow.timeout(math.huge, function() flow.sleep(0.01); return "done" end), "done",
    "flow.timeout(math.huge, fn) returns fn's result")
  local w = flow.spawn(flow.sleep, 0.02)
  t.eq(flow.wait_any({ w }, 1e308), 1, "wait_any with a forever timeout returns when a task ends")
  local r, err = require("http").request { url = "http://127.0.0.1:9/", timeout = math.huge,
    connect_timeout = math.huge }
  t.ok(r == nil and err.code == "http.connect", "http.request takes forever timeouts (no limit)")
  t.eq(core.stats().timers, 0, "no timer left behind")
end)

t.done()
