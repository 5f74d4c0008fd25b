-- The run journal: JSON lines, group commit with fsync, replay, a last line cut by a crash,
-- damage elsewhere, resume keeping succeeded tasks' results.
local t = require "tap"
local flow = require "flow"
local core = require "flow.core"
local engine = require "flow.engine"
local journal = require "flow.journal"
local progress = require "flow.progress"
local json = require "json"

core.set_virtual_time(true)

local dir = os.tmpname()
os.remove(dir)
journal.mkdir_p(dir)

local function slurp(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function start_journal(id, wf)
  local path = journal.path(dir, id)
  local jr = journal.open(path, { clock = flow.time })
  jr:append { ev = "run_started", run = id, workflow = wf.name, params = {}, v = 1 }
  jr:commit()
  return jr, path
end

t.test("a run's journal replays to the run's final states and results", function()
  local wf = flow.workflow { name = "j" }
  wf:task("a", function() return { n = 1, list = { 1, 2, 3 }, big = 9007199254740993 } end)
  wf:task("b", { after = "a", retries = 1, retry_delay = 5 }, function(ctx)
    if ctx.attempt == 1 then error("first try fails", 0) end
    return ctx.results.a.n + 1
  end)
  wf:task("c", { after = "a" }, function() error(flow.error("x.bad", "c is broken")) end)
  wf:task("d", { after = "c" }, function() return 1 end)
  wf:task("e", { after = "c", trigger = "all_done", cleanup = true }, function() return "e" end)
  local jr, path = start_journal("r1", wf)
  local sum = engine.run(wf, { params = {}, journal = jr, run_id = "r1" })
  jr:close()
  local run = assert(journal.load(path))
  for _, x in ipairs(sum.tasks) do
    t.eq(run.tasks[x.name].state, x.state, "state of " .. x.name)
    t.eq(run.tasks[x.name].attempts, x.attempts, "attempts of " .. x.name)
  end
  t.eq(run.tasks.a.result, sum.results.a, "table result round-trips")
  t.eq(math.type(run.tasks.a.result.big), "integer", "int64 exact")
  t.eq(run.tasks.a.result.big, 9007199254740993, "int64 value")
  t.eq(run.tasks.c.error.code, "x.bad", "error code journaled")
  t.eq(run.tasks.b.history, { { attempt = 1, delay = 5, error = { message = "first try fails" } } },
    "failed attempts are kept in the task's history")
  t.eq(run.state, "failed", "run state")
  t.eq(run.exit, 1, "exit recorded")
  t.ok(run.finished and run.finished >= run.started, "finished time")
  t.ok(jr.syncs > 0 and jr.syncs == jr.commits, "every commit fsynced")
end)

t.test("group commit: one fsync for changes that happen together", function()
  local wf = flow.workflow { name = "layers" }
  local prev = {}
  for layer = 1, 4 do
    local cur = {}
    for i = 1, 50 do
      local name = string.format("l%d_%d", layer, i)
      wf:task(name, { after = prev }, function() return i end)
      cur[#cur + 1] = name
    end
    prev = cur
  end
  local jr = start_journal("r2", wf)
  local c0 = jr.commits
  local sum = engine.run(wf, { params = {}, journal = jr })
  jr:close()
  t.eq(sum.state, "success", "ran")
  t.ok(jr.records >= 400, "400+ records written (" .. jr.records .. ")")
  t.ok(jr.commits - c0 <= 10, "in at most 10 commits (" .. (jr.commits - c0) .. ")")
end)

t.test("a last line cut by a crash is ignored; other damage is an error", function()
  local path = journal.path(dir, "cut")
  local lines = {
    json.encode { ev = "run_started", run = "cut", workflow = "w", t = 1 },
    json.encode { ev = "task_started", task = "a", attempt = 1, t = 2 },
    json.encode { ev = "task_succeeded", task = "a", attempt = 1, result = 5, t = 3 },
  }
  spit(path, table.concat(lines, "\n") .. '\n{"ev":"task_started","ta')
  local run, err = journal.load(path)
  t.ok(run, "loaded: " .. tostring(err))
  t.ok(run and run.truncated, "marked truncated")
  t.eq(run and run.tasks.a.state, "success", "lines before the cut are read")
  t.eq(run and run.state, "running", "no run_finished: still 'running' (interrupted)")

  spit(path, lines[1] .. "\n" .. "garbage{\n" .. lines[3] .. "\n")
  local bad, msg = journal.load(path)
  t.ok(bad == nil, "damage in the middle refused")
  t.like(msg, "cut%.jsonl:2: damaged journal line", "message names the file and line")

  spit(path, lines[2] .. "\n")
  local _, msg2 = journal.load(path)
  t.like(msg2 or "", "expected a run_started record", "must start with run_started")
  os.remove(path)
end)

t.test("resume: succeeded tasks keep results and do not run again", function()
  local runs = {}
  local fail_b = true
  local wf = flow.workflow { name = "res" }
  wf:task("a", function() runs.a = (runs.a or 0) + 1 return "A" end)
  wf:task("b", { after = "a" }, function(ctx)
    runs.b = (runs.b or 0) + 1
    if fail_b then error("b broke", 0) end
    return ctx.results.a .. "B"
  end)
  wf:task("c", { after = "b" }, function(ctx)
    runs.c = (runs.c or 0) + 1
    return ctx.results.b .. "C"
  end)
  wf:task("z", { after = "c", cleanup = true }, function() runs.z = (runs.z or 0) + 1 end)
  local jr, path = start_journal("r3", wf)
  local sum1 = engine.run(wf, { params = {}, journal = jr, run_id = "r3" })
  jr:close()
  t.eq(sum1.state, "failed", "first run failed")
  fail_b = false
  local prev = assert(journal.load(path))
  local jr2 = journal.open(path, { clock = flow.time })
  jr2:append { ev = "run_resumed" }
  local sum2 = engine.run(wf, { params = {}, journal = jr2, run_id = "r3", resume = prev })
  jr2:close()
  t.eq(sum2.state, "success", "resumed run succeeded")
  t.eq(runs, { a = 1, b = 2, c = 1, z = 2 }, "a not run again; b, c and the cleanup ran")
  t.eq(sum2.results.c, "ABC", "the kept result of a reached b")
  t.eq(sum2.tasks[2].attempts, 2, "attempt numbers continue across the resume")
  local again = assert(journal.load(path))
  t.eq(again.state, "success", "journal says success")
  t.eq(again.resumed, 1, "one resume recorded")
  t.eq(again.tasks.c.result, "ABC", "c's result journaled")
end)

t.test("interrupted journal: running tasks replay as running and run again on resume", function()
  local path = journal.path(dir, "crash")
  spit(path, table.concat({
    json.encode { ev = "run_started", run = "crash", workflow = "w", t = 1, pid = 999999999 },
    json.encode { ev = "task_started", task = "a", attempt = 1, t = 2 },
    json.encode { ev = "task_succeeded", task = "a", attempt = 1, result = "ra", t = 3 },
    json.encode { ev = "task_started", task = "b", attempt = 1, t = 4 },
  }, "\n") .. "\n")
  local run = assert(journal.load(path))
  t.eq(run.tasks.b.state, "running", "b was running at the crash")
  t.ok(not journal.pid_alive(run.pid), "its process is gone")
  local ran = {}
  local wf = flow.workflow { name = "w" }
  wf:task("a", function() ran.a = true end)
  wf:task("b", { after = "a" }, function(ctx) ran.b = ctx.results.a return "rb" end)
  local jr = journal.open(path, { clock = flow.time })
  jr:append { ev = "run_resumed" }
  local sum = engine.run(wf, { params = {}, journal = jr, resume = run, run_id = "crash" })
  jr:close()
  t.eq(ran, { b = "ra" }, "only b ran, with a's recorded result")
  t.eq(sum.tasks[2].attempts, 2, "b's second attempt")
  os.remove(path)
end)

t.test("journal.list orders runs and reports damaged ones", function()
  spit(journal.path(dir, "zzz-damaged"), "{{{\n{}\n")
  local runs = journal.list(dir)
  local ids, damaged = {}, nil
  for _, r in ipairs(runs) do
    ids[#ids + 1] = r.id
    if r.state == "damaged" then damaged = r end
  end
  t.ok(#runs >= 3, "runs listed: " .. table.concat(ids, ","))
  t.ok(damaged and damaged.error:find("zzz%-damaged%.jsonl:1"), "damaged journal named")
  t.eq(journal.hash_text("abc"), journal.hash_text("abc"), "hash stable")
  t.ok(journal.hash_text("abc") ~= journal.hash_text("abd"), "hash changes with content")
end)

os.execute("rm -rf '" .. dir .. "'")
t.test("one process at a time holds a run's lock; a dead holder holds nothing", function()
  local jl = require "flow.journal"
  local path = os.tmpname() .. ".jsonl"
  local a = assert(jl.lock(path))
  local b, err = jl.lock(path)
  t.eq(b, nil, "a second lock is refused")
  t.like(err, "another flowrun process", "and says why")
  a:close()
  local c = jl.lock(path)
  t.ok(c, "free again once closed")
  c:close()
  -- another process holds it, then ends (cancelling flow.exec terminates it)
  local flowrun = assert(os.getenv("FLOWRUN"), "FLOWRUN is set by scripts/test.sh")
  local started = path .. ".started"
  local holder = flow.spawn(flow.exec, { flowrun, "-e", ([[
    local l = assert(require("flow.journal").lock(%q))
    io.open(%q, "w"):close()
    flow.sleep(30)]]):format(path, started) })
  for _ = 1, 200 do
    if io.open(started) then break end
    flow.sleep(0.02)
  end
  local d, derr = jl.lock(path)
  t.eq(d, nil, "refused while another process holds it")
  t.like(derr, "is held", "named")
  holder:cancel()
  pcall(holder.wait, holder)
  local e = jl.lock(path)
  t.ok(e, "free once that process is gone")
  if e then e:close() end
  os.remove(path .. ".lock"); os.remove(started)
end)

t.done()
