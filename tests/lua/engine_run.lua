-- Running workflows under virtual time: trigger rules, cleanup tasks, retries with backoff and
-- jitter, timeouts, hooks, max_active, run timeout, cancellation, flow.poll.
local t = require "tap"
local flow = require "flow"
local core = require "flow.core"
local engine = require "flowrun.engine"
local progress = require "flowrun.cli.view"

core.set_virtual_time(true)

local function boom(msg) return function() error(msg or "boom", 0) end end
local function ok_fn(v) return function() return v end end

local function run(wf, o)
  o = o or {}
  o.params = o.params or {}
  o.reporter = o.reporter or progress.quiet({})
  return engine.run(wf, o), o.reporter
end

local function states(sum)
  local r = {}
  for _, x in ipairs(sum.tasks) do r[x.name] = x.state end
  return r
end

t.test("trigger rules: evaluate() table", function()
  local S, F, K, U = { state = "success" }, { state = "failed" }, { state = "skipped" },
    { state = "upstream_failed" }
  local cases = {
    { "all_success", { S, S }, "run" }, { "all_success", { S, F }, "upstream_failed" },
    { "all_success", { S, K }, "skipped" }, { "all_success", { U }, "upstream_failed" },
    { "all_done", { F, K }, "run" },
    { "all_failed", { F, U }, "run" }, { "all_failed", { F, S }, "skipped" },
    { "one_success", { F, S }, "run" }, { "one_success", { F, F }, "upstream_failed" },
    { "one_success", { K, K }, "skipped" },
    { "one_failed", { S, F }, "run" }, { "one_failed", { S, K }, "skipped" },
    { "none_failed", { S, K }, "run" }, { "none_failed", { S, F }, "upstream_failed" },
    { "none_failed", { U, S }, "upstream_failed" },
  }
  for _, c in ipairs(cases) do
    local names = {}
    for _, u in ipairs(c[2]) do names[#names + 1] = u.state end
    t.eq(engine.evaluate(c[1], c[2]), c[3], c[1] .. " with " .. table.concat(names, ","))
  end
end)

t.test("trigger rules in a run", function()
  local wf = flow.workflow { name = "rules" }
  wf:task("good", ok_fn(1))
  wf:task("bad", boom())
  wf:task("after_bad", { after = "bad" }, ok_fn(1))          -- all_success -> upstream_failed
  wf:task("done", { after = { "good", "bad" }, trigger = "all_done" }, ok_fn(2))
  wf:task("alert", { after = { "good", "bad" }, trigger = "one_failed" }, ok_fn(3))
  wf:task("no_alert", { after = "good", trigger = "one_failed" }, ok_fn(4)) -- skipped
  wf:task("branch", { after = "no_alert" }, ok_fn(5))       -- skipped propagates
  wf:task("nf", { after = "no_alert", trigger = "none_failed" }, ok_fn(6)) -- runs
  wf:task("allf", { after = { "bad", "after_bad" }, trigger = "all_failed" }, ok_fn(7))
  wf:task("ones", { after = { "good", "bad" }, trigger = "one_success" }, ok_fn(8))
  local sum = run(wf)
  local s = states(sum)
  t.eq(s, { good = "success", bad = "failed", after_bad = "upstream_failed", done = "success",
    alert = "success", no_alert = "skipped", branch = "skipped", nf = "success",
    allf = "success", ones = "success" }, "final states")
  t.eq(sum.state, "failed", "run failed: a task failed")
  t.eq(sum.exit, 1, "exit 1")
  t.eq(sum.results.done, 2, "results kept")
end)

t.test("skipped branches do not fail a run", function()
  local wf = flow.workflow { name = "skip" }
  wf:task("a", ok_fn(1))
  wf:task("only_on_failure", { after = "a", trigger = "one_failed" }, boom())
  local sum = run(wf)
  t.eq(states(sum).only_on_failure, "skipped", "skipped")
  t.eq(sum.state, "success", "run succeeded")
  t.eq(sum.exit, 0, "exit 0")
end)

t.test("cleanup tasks: run after failure, never turn a failed run into success", function()
  local ran = {}
  local wf = flow.workflow { name = "cleanup" }
  wf:task("create", function() ran.create = true return { id = "c-1" } end)
  wf:task("work", { after = "create" }, boom("work failed"))
  wf:task("report", { after = "work" }, ok_fn(1))
  wf:task("terminate", { after = { "create", "work", "report" }, cleanup = true }, function(ctx)
    ran.terminate = ctx.results.create.id
    return "terminated"
  end)
  local sum = run(wf)
  local s = states(sum)
  t.eq(s.terminate, "success", "cleanup ran and succeeded")
  t.eq(ran.terminate, "c-1", "cleanup saw the upstream result")
  t.eq(s.report, "upstream_failed", "report not run")
  t.eq(sum.state, "failed", "run still failed (Airflow #15468)")
  t.eq(sum.exit, 1, "exit 1")
end)

t.test("a failing cleanup task fails a run whose work succeeded", function()
  local wf = flow.workflow { name = "cleanup2" }
  wf:task("work", ok_fn(1))
  wf:task("terminate", { after = "work", cleanup = true }, boom("cannot terminate"))
  local sum = run(wf)
  t.eq(states(sum).terminate, "failed", "cleanup failed")
  t.eq(sum.state, "failed", "run failed")
end)

t.test("retries: backoff, max delay, attempts in ctx", function()
  local starts, attempts = {}, {}
  local wf = flow.workflow { name = "retry" }
  wf:task("flaky", { retries = 4, retry_delay = "10s", retry_backoff = 2,
    max_retry_delay = "30s" }, function(ctx)
    starts[#starts + 1] = flow.now()
    attempts[#attempts + 1] = ctx.attempt
    if ctx.attempt < 5 then error("not yet", 0) end
    return "done"
  end)
  local sum = run(wf)
  t.eq(states(sum).flaky, "success", "succeeded on the 5th attempt")
  t.eq(attempts, { 1, 2, 3, 4, 5 }, "ctx.attempt counts")
  local gaps = {}
  for i = 2, #starts do gaps[#gaps + 1] = math.floor(starts[i] - starts[i - 1] + 0.5) end
  t.eq(gaps, { 10, 20, 30, 30 }, "10s, x2, capped at 30s")
  t.eq(sum.tasks[1].attempts, 5, "summary attempts")
end)

t.test("retries exhausted: failed with the last error; retry_if stops early", function()
  local n = 0
  local wf = flow.workflow { name = "retry2" }
  wf:task("always", { retries = 2, retry_delay = 1 }, function() n = n + 1 error("bad " .. n, 0) end)
  local calls = 0
  wf:task("fatal", { retries = 5, retry_delay = 1, retry_if = function(err)
    return type(err) == "table" and err.retryable end }, function()
    calls = calls + 1
    error(flow.error("aws.AccessDenied", "denied", { retryable = false }))
  end)
  local sum = run(wf)
  t.eq(n, 3, "1 + 2 retries")
  t.eq(sum.tasks[1].error.message, "bad 3", "last error kept")
  t.eq(calls, 1, "retry_if false: no retry")
  t.eq(sum.tasks[2].error.code, "aws.AccessDenied", "error code kept")
end)

t.test("jitter stays within [delay*(1-j), delay]", function()
  local task = { retry_delay = 100, jitter = 0.5 }
  local lo, hi = math.huge, 0
  for _ = 1, 200 do
    local d = engine.retry_delay(task, 1)
    lo, hi = math.min(lo, d), math.max(hi, d)
  end
  t.ok(lo >= 50 and hi <= 100, "bounds " .. lo .. " " .. hi)
  t.ok(hi - lo > 20, "actually random")
  t.eq(engine.retry_delay({ retry_delay = 100, jitter = 1 }, 1, function() return 0.25 end), 75,
    "full jitter with a fixed random")
  t.eq(engine.retry_delay({ retry_delay = 5, retry_backoff = 3, max_retry_delay = 100 }, 3), 45,
    "5 * 3^2")
end)

t.test("timeout cancels the attempt and counts as a failure", function()
  local cancelled_seen, tries = 0, 0
  local wf = flow.workflow { name = "to" }
  wf:task("slow", { timeout = "5m", retries = 1, retry_delay = "1m" }, function()
    tries = tries + 1
    local ok, err = pcall(flow.sleep, 3600)
    if not ok and flow.cancelled(err) then cancelled_seen = cancelled_seen + 1 end
    error(err, 0)
  end)
  local t0 = flow.now()
  local sum = run(wf)
  t.eq(tries, 2, "retried once after the timeout")
  t.eq(cancelled_seen, 2, "the body saw its cancellation each time")
  t.eq(sum.tasks[1].state, "failed", "failed")
  t.eq(sum.tasks[1].error.code, "flow.timeout", "with flow.timeout")
  t.ok(math.abs((flow.now() - t0) - (300 + 60 + 300)) < 1, "5m + 1m + 5m of virtual time")
end)

t.test("hooks: task and workflow level", function()
  local log = {}
  local function rec(name) return function(ctx, x)
    log[#log + 1] = name .. ":" .. ctx.task .. ":" .. (type(x) == "table" and (x.message or "?")
      or tostring(x))
  end end
  local wf = flow.workflow { name = "hooks", on_failure = rec("wf_fail"),
    on_success = rec("wf_ok"), on_retry = rec("wf_retry"),
    on_finish = function(sum) log[#log + 1] = "finish:" .. sum.state end }
  wf:task("a", { on_success = rec("ok") }, ok_fn("ra"))
  wf:task("b", { retries = 1, on_retry = rec("retry"), on_failure = rec("fail") }, boom("eb"))
  wf:task("c", { on_success = function() error("hook broken") end }, ok_fn("rc"))
  local sum = run(wf)
  table.sort(log)
  t.eq(log, { "fail:b:eb", "finish:failed", "ok:a:ra", "retry:b:eb", "wf_fail:b:eb",
    "wf_ok:a:ra", "wf_ok:c:rc", "wf_retry:b:eb" }, "every hook called once, in its place")
  t.eq(states(sum).c, "success", "a failing hook does not change the task's state")
end)

t.test("max_active caps concurrency", function()
  local cur, peak = 0, 0
  local wf = flow.workflow { name = "cap", max_active = 3 }
  for i = 1, 10 do
    wf:task("t" .. i, function()
      cur = cur + 1
      peak = math.max(peak, cur)
      flow.sleep(10)
      cur = cur - 1
    end)
  end
  local t0 = flow.now()
  local sum = run(wf)
  t.eq(peak, 3, "never more than 3 at once")
  t.eq(sum.state, "success", "all ran")
  t.ok(math.abs(flow.now() - t0 - 40) < 0.5, "4 waves of 10s")
  peak = 0
  local sum2 = run(wf, { max_active = 5 })
  t.eq(peak, 5, "max_active from the run options wins")
  t.eq(sum2.state, "success", "ok")
end)

t.test("upstreams run in parallel; downstream starts when they are done", function()
  local log = {}
  local wf = flow.workflow { name = "par" }
  wf:task("a", function() flow.sleep(10) log[#log + 1] = "a" .. flow.now() end)
  wf:task("b", function() flow.sleep(20) log[#log + 1] = "b" end)
  local t0 = flow.now()
  local started
  wf:task("c", { after = { "a", "b" } }, function() started = flow.now() - t0 end)
  run(wf)
  t.ok(math.abs(started - 20) < 0.01, "c started at 20s, when the slower upstream ended")
end)

t.test("run timeout: running tasks cancelled, cleanup runs, run failed", function()
  local cleaned = false
  local wf = flow.workflow { name = "rto" }
  wf:task("long", function() flow.sleep(3600) end)
  wf:task("never", { after = "long" }, ok_fn(1))
  wf:task("swallow", function() pcall(flow.sleep, 3600) return "pretends to be done" end)
  wf:task("cleanup", { after = { "long", "swallow" }, cleanup = true }, function()
    flow.sleep(5) -- cleanup can wait
    cleaned = true
  end)
  local sum = run(wf, { timeout = 60 })
  local s = states(sum)
  t.eq(s.long, "cancelled", "long cancelled")
  t.eq(s.never, "cancelled", "never did not run")
  t.eq(s.swallow, "cancelled", "a body that swallows its cancellation still ends cancelled")
  t.eq(s.cleanup, "success", "cleanup ran")
  t.ok(cleaned, "cleanup finished its wait")
  t.eq(sum.state, "failed", "run failed")
  t.eq(sum.exit, 1, "exit 1")
  t.like(sum.reason, "timed out after 1m00s", "reason")
end)

t.test("cancelling the engine's task: cleanup still runs, run cancelled", function()
  local cleaned, second_cleanup = false, false
  local wf = flow.workflow { name = "cancel" }
  wf:task("wait", function() flow.sleep(3600) end)
  wf:task("cleanup", { after = "wait", cleanup = true }, function()
    flow.sleep(30)
    cleaned = true
  end)
  wf:task("cleanup2", { after = "cleanup", cleanup = true }, function()
    second_cleanup = true
  end)
  local hung_timed_out = false
  wf:task("hung_cleanup", { after = "wait", cleanup = true, timeout = 5 }, function()
    local ok, err = pcall(flow.sleep, 3600)
    hung_timed_out = not ok and flow.cancelled(err)
    error(err, 0)
  end)
  local sum
  local h = flow.spawn(function() sum = run(wf) return sum end)
  flow.sleep(100)
  local t_cancel = flow.now()
  h:cancel()
  core.wait_any({ h })
  local ok = h:result()
  t.ok(flow.now() - t_cancel < 31, "the run ended once its cleanups did (30 s), not after an hour")
  t.ok(hung_timed_out, "a cleanup task's own timeout still applies while the run is cancelled")
  t.eq(sum and states(sum), { wait = "cancelled", cleanup = "success", cleanup2 = "success",
    hung_cleanup = "failed" }, "states")
  t.eq(sum and sum.state, "cancelled", "run cancelled")
  -- the task itself ends cancelled; the engine finished its work before that
  t.ok(cleaned, "cleanup task ran to completion after the cancel")
  t.ok(second_cleanup, "a cleanup after a cleanup ran too")
  t.eq(h:status(), "cancelled", "the engine's task ends cancelled")
  t.ok(not ok, "result is the cancellation")
end)

t.test("ctx.log and ctx.progress reach the reporter; flow.poll logs its status", function()
  local events = {}
  local wf = flow.workflow { name = "log" }
  wf:task("p", function(ctx)
    ctx.log("hello", 42)
    ctx.progress(50, "half")
    local n = 0
    return flow.poll(function()
      n = n + 1
      if n == 3 then return "ready" end
      return nil, "state " .. (n < 2 and "A" or "B")
    end, { every = "30s", name = "sensor" })
  end)
  local sum = run(wf, { reporter = progress.quiet(events) })
  t.eq(sum.results.p, "ready", "poll result becomes the task result")
  local logs = {}
  for _, e in ipairs(events) do
    if e[1] == "log" then logs[#logs + 1] = e[2] .. "|" .. e[3] end
    if e[1] == "progress" then logs[#logs + 1] = "progress|" .. e[3] .. "|" .. e[4] end
  end
  t.eq(logs, { "p|hello 42", "progress|50|half", "p|sensor: state A", "p|sensor: state B" },
    "log lines")
end)

t.test("flow.poll: interval, backoff, timeout, errors", function()
  local times = {}
  local t0 = flow.now()
  local v = flow.poll(function()
    times[#times + 1] = math.floor(flow.now() - t0 + 0.5)
    return #times == 5 and "x"
  end, { every = 10, backoff = 2, max_every = 50, log = function() end })
  t.eq(v, "x", "value")
  t.eq(times, { 0, 10, 30, 70, 120 }, "10, 20, 40, then capped at 50")

  t0 = flow.now()
  local err = t.raises(function()
    flow.poll(function() return nil, "RUNNING" end,
      { every = "30s", timeout = "6h", log = function() end })
  end, "flow.timeout", "timeout raises flow.timeout")
  t.ok(math.abs(flow.now() - t0 - 6 * 3600) < 1, "after six virtual hours")
  t.like(err and err.message or "", "last status: RUNNING", "message names the last status")
  t.ok(err and err.retryable, "retryable")

  local n = 0
  local r = flow.poll(function()
    n = n + 1
    if n < 3 then error(flow.error("aws.ThrottlingException", "slow down", { retryable = true })) end
    return n
  end, { every = 1, log = function() end })
  t.eq(r, 3, "retryable check errors are retried")

  t.raises(function()
    flow.poll(function() error(flow.error("aws.ValidationException", "bad", { retryable = false })) end,
      { every = 1, log = function() end })
  end, "aws.ValidationException", "non-retryable errors raise at once")
  t.raises(function() flow.poll(function() end, { evry = 1 }) end, "unknown option", "bad option")
  local many = {}
  flow.poll(function() many[#many + 1] = 1 return #many > 1, "s" end,
    { every = 1, log = function(m) many.msg = m end })
  t.eq(many.msg, "poll: s", "default name")
end)

t.test("results that cannot be journaled fail the task", function()
  local dir = os.tmpname()
  os.remove(dir)
  local store = require("flowrun.engine.store.file").open(dir, { fsync = false })
  local jr = assert(store:create_run { ev = "run_started", run = "r", workflow = "w" })
  local wf = flow.workflow { name = "w" }
  wf:task("fn", function() return function() end end)
  local sum = run(wf, { journal = jr })
  jr:close()
  os.remove(store:journal_path("r")); os.remove(dir .. "/runs"); os.remove(dir)
  t.eq(sum.tasks[1].state, "failed", "failed")
  t.eq(sum.tasks[1].error.code, "flow.result", "flow.result error")
end)

t.test("an invalid workflow is refused by engine.run", function()
  local wf = flow.workflow { name = "w" }
  wf:task("a", { after = "zz" }, ok_fn(1))
  t.raises(function() engine.run(wf, { params = {} }) end, "unknown task", "raises")
end)

t.test("a runner that dies outside the task's body fails that task, the run goes on", function()
  local rep = progress.quiet({})
  function rep:task(st, event)
    if event == "retry" then error("reporter broke") end
  end
  local wf = flow.workflow { name = "dies" }
  wf:task("flaky", { retries = 1 }, boom("first"))
  wf:task("other", ok_fn(1))
  wf:task("after", { after = "flaky", trigger = "all_done" }, ok_fn(2))
  local sum = run(wf, { reporter = rep })
  local s = states(sum)
  t.eq(s, { flaky = "failed", other = "success", after = "success" }, "states")
  t.like(sum.tasks[1].error.message, "reporter broke", "the runner's error is kept")
end)

t.test("flow.context.current() finds the running workflow task's ctx", function()
  local seen = {}
  local wf = flow.workflow { name = "ctxwf" }
  wf:task("a", function(ctx)
    local c = require("flow.context").current()
    seen.same = rawequal(c, ctx)
    seen.task, seen.run_id = c and c.task, c and c.run_id
  end)
  local sum = run(wf, { run_id = "run-ctx-1" })
  t.eq(sum.state, "success", "the run succeeds")
  t.ok(seen.same, "the task's own ctx")
  t.eq({ seen.task, seen.run_id }, { "a", "run-ctx-1" }, "with its task and run id")
  t.eq(require("flow.context").current(), nil, "nil outside a workflow task")
end)

t.done()
