-- The run stores: what both keep alike (replay, group commit, resume keeping succeeded tasks'
-- results, a cleanup that undid a task, task logs bounded per attempt, listing), run against the
-- file store and against PostgreSQL; then the file store's own (JSON lines with fsync, a last
-- line cut by a crash repaired in place, damage named by file and line, the run's lock with no
-- lock files). tests/lua/store_pg.lua has the PostgreSQL store's own.
local t = require "tap"
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local engine = require "flowrun.engine"
local filestore = require "flowrun.engine.store.file"
local pgstore = require "flowrun.engine.store.pg"
local json = require "json"

core.set_virtual_time(true)

local dir = os.tmpname()
os.remove(dir)
assert(sys.mkdir_p(dir .. "/runs"))
local store = filestore.open(dir, { clock = flow.time })
local function jpath(id) return store:journal_path(id) end

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
  local jr = assert(store:create_run({ ev = "run_started", run = id, workflow = wf.name,
    params = {}, v = 1 }, function() error("run id " .. id .. " is taken") end))
  return jr
end

-- The cases both stores share; `store` and `backend` (the store's module) are set before each
-- round, and `label` names it.
local backend, label = filestore, "file store"
local function shared_cases()

t.test(label .. ": a run's journal replays to the run's final states and results", function()
  local wf = flow.workflow { name = "j" }
  wf:task("a", function() return { n = 1, list = { 1, 2, 3 }, big = 9007199254740993 } end)
  wf:task("b", { after = "a", retries = 1, retry_delay = 5 }, function(ctx)
    if ctx.attempt == 1 then error("first try fails", 0) end
    return ctx.results.a.n + 1
  end)
  wf:task("c", { after = "a" }, function() error(flow.error("x.bad", "c is broken")) end)
  wf:task("d", { after = "c" }, function() return 1 end)
  wf:task("e", { after = "c", trigger = "all_done", cleanup = true }, function() return "e" end)
  local jr = start_journal("r1", wf)
  local sum = engine.run(wf, { params = {}, journal = jr, run_id = "r1" })
  jr:close()
  local run = assert(store:load("r1"))
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

t.test(label .. ": group commit: one commit for changes that happen together", function()
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

t.test(label .. ": resume: succeeded tasks keep results and do not run again", function()
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
  local jr = start_journal("r3", wf)
  local sum1 = engine.run(wf, { params = {}, journal = jr, run_id = "r3" })
  jr:close()
  t.eq(sum1.state, "failed", "first run failed")
  fail_b = false
  local prev = assert(store:load("r3"))
  local jr2 = assert(store:resume_run(prev))
  jr2:append { ev = "run_resumed" }
  local sum2 = engine.run(wf, { params = {}, journal = jr2, run_id = "r3", resume = prev })
  jr2:close()
  t.eq(sum2.state, "success", "resumed run succeeded")
  t.eq(runs, { a = 1, b = 2, c = 1, z = 2 }, "a not run again; b, c and the cleanup ran")
  t.eq(sum2.results.c, "ABC", "the kept result of a reached b")
  t.eq(sum2.tasks[2].attempts, 2, "attempt numbers continue across the resume")
  local again = assert(store:load("r3"))
  t.eq(again.state, "success", "journal says success")
  t.eq(again.resumed, 1, "one resume recorded")
  t.eq(again.tasks.c.result, "ABC", "c's result journaled")
end)

t.test(label .. ": resume after a cleanup undid a task: that task and what follows run again", function()
  local made, alive = 0, {}
  local fail_use = true
  local wf = flow.workflow { name = "undo" }
  wf:task("prep", function() return "p" end)
  wf:task("make", { after = "prep" }, function()
    made = made + 1
    alive[made] = true
    return { id = made }
  end)
  wf:task("use", { after = "make" }, function(ctx)
    if not alive[ctx.results.make.id] then error("resource " .. ctx.results.make.id .. " is gone", 0) end
    if fail_use then error("use failed", 0) end
    return "used " .. ctx.results.make.id
  end)
  wf:task("teardown", { after = { "make", "use" }, cleanup = true, undoes = "make" }, function(ctx)
    local m = ctx.results.make
    if m then alive[m.id] = nil end
  end)
  local jr = start_journal("u1", wf)
  t.eq(engine.run(wf, { params = {}, journal = jr, run_id = "u1" }).state, "failed", "first run failed")
  jr:close()
  fail_use = false
  local prev = assert(store:load("u1"))
  local jr2 = assert(store:resume_run(prev))
  local sum = engine.run(wf, { params = {}, journal = jr2, run_id = "u1", resume = prev })
  jr2:close()
  t.eq(sum.state, "success", "the resumed run succeeds (it did not hand use a dead resource)")
  t.eq(made, 2, "make ran again")
  t.eq(sum.results.use, "used 2", "use got the new resource")
  local kept = {}
  for _, st in ipairs(sum.tasks) do if st.resumed then kept[#kept + 1] = st.name end end
  t.eq(kept, { "prep" }, "prep kept; make undone by the cleanup")
  -- a task outside the cleanup (it does not use what was torn down) fails: resuming runs it
  -- alone, the torn-down resource is not made again
  local made2, fail_check = 0, true
  local wf3 = flow.workflow { name = "outside" }
  wf3:task("make", function() made2 = made2 + 1 return { id = made2 } end)
  wf3:task("use", { after = "make" }, function(ctx) return "used " .. ctx.results.make.id end)
  wf3:task("teardown", { after = { "make", "use" }, cleanup = true, undoes = "make" }, function() end)
  wf3:task("check", { after = "use" }, function()
    if fail_check then error("check failed", 0) end
    return "checked"
  end)
  local j3 = start_journal("u2", wf3)
  t.eq(engine.run(wf3, { params = {}, journal = j3, run_id = "u2" }).state, "failed", "check failed")
  j3:close()
  fail_check = false
  local prev3 = assert(store:load("u2"))
  local j4 = assert(store:resume_run(prev3))
  local sum3 = engine.run(wf3, { params = {}, journal = j4, run_id = "u2", resume = prev3 })
  j4:close()
  t.eq(sum3.state, "success", "resumed")
  t.eq(made2, 1, "make did not run again: check does not use what teardown tore down")
  local wf2 = flow.workflow { name = "bad" }
  wf2:task("a", function() end)
  wf2:task("b", { after = "a", undoes = "a" }, function() end)
  wf2:task("c", { after = "a", cleanup = true, undoes = "zz" }, function() end)
  local ok, problems = wf2:validate()
  t.ok(not ok, "undoes is checked")
  t.like(table.concat(problems or {}, "\n"), "only a cleanup task can undo", "only on cleanup tasks")
  t.like(table.concat(problems or {}, "\n"), 'undoes unknown task "zz"', "names must exist")
end)

t.test(label .. ": a run interrupted after every task succeeded finishes on resume, running nothing", function()
  local made = 0
  local wf = flow.workflow { name = "alldone" }
  wf:task("make", function() made = made + 1 return { id = made } end)
  wf:task("use", { after = "make" }, function(ctx) return ctx.results.make.id end)
  wf:task("teardown", { after = { "make", "use" }, cleanup = true, undoes = "make" }, function() end)
  local jr = start_journal("ad1", wf)
  -- its process dies after the last task's success, before the run's end is recorded
  local cut = setmetatable({ append = function(_, r) if r.ev ~= "run_finished" then return jr:append(r) end end },
    { __index = function(_, k) return function(_, ...) return jr[k](jr, ...) end end })
  t.eq(engine.run(wf, { params = {}, journal = cut, run_id = "ad1" }).state, "success", "ran")
  jr:close()
  local prev = assert(store:load("ad1"))
  t.eq(prev.state, "interrupted", "its end is missing: interrupted")
  local jr2 = assert(store:resume_run(prev))
  local sum = engine.run(wf, { params = {}, journal = jr2, run_id = "ad1", resume = prev })
  jr2:close()
  t.eq(sum.state, "success", "the resumed run succeeds")
  t.eq(made, 1, "nothing ran again: the cleanup's undo does not start a second resource")
end)

-- task logs: kept per task and attempt, bounded, with a truncated mark (both stores)
t.test(label .. ": task logs are kept per task and attempt, bounded", function()
  local wf = flow.workflow { name = "logs" }
  wf:task("a", { retries = 1 }, function(ctx)
    ctx.log("hello from", ctx.attempt)
    if ctx.attempt == 1 then error("again", 0) end
    ctx.log("caf\xe9 bytes")
  end)
  local jr = start_journal("lg", wf)
  local sum = engine.run(wf, { params = {}, journal = jr, run_id = "lg" })
  jr:close()
  t.eq(sum.state, "success", "ran")
  local got = {}
  for _, l in ipairs(store:logs("lg")) do got[#got + 1] = { l.task, l.attempt, l.msg } end
  t.eq(got, { { "a", 1, "hello from 1" }, { "a", 2, "hello from 2" }, { "a", 2, "caf\\xE9 bytes" } },
    "each line with its task and attempt; bytes that are not UTF-8 escaped")
  local old = backend.LOG_LIMIT
  backend.LOG_LIMIT = 100
  local wf2 = flow.workflow { name = "many" }
  wf2:task("chatty", function(ctx) for i = 1, 50 do ctx.log("line " .. i) end end)
  local jr2 = start_journal("lg2", wf2)
  engine.run(wf2, { params = {}, journal = jr2, run_id = "lg2" })
  jr2:close()
  backend.LOG_LIMIT = old
  local l2 = store:logs("lg2")
  t.ok(#l2 < 20, "bounded per attempt (" .. #l2 .. " lines kept)")
  t.ok(l2[#l2] and l2[#l2].truncated and l2[#l2].msg:match("truncated"), "with a clear truncated mark")
  local later, upto = store:logs("lg2", { after = l2[3].id })
  t.eq(#later, #l2 - 3, "logs after a line: only what came later (for logs -f)")
  t.eq(upto, l2[#l2].id, "and the id to go on from")
end)

t.test(label .. ": a secret parameter's value is never kept: logs, progress, errors", function()
  local secret = "s3cr3t-Pa55word-0042"
  local wf = flow.workflow { name = "secrets", params = {
    password = { secret = true, default = "" }, user = { default = "app" } } }
  wf:task("talk", function(ctx)
    ctx.log("connecting as", ctx.params.user, "with", ctx.params.password)
    ctx.progress(10, "password=" .. ctx.params.password)
    return { user = ctx.params.user }
  end)
  wf:task("fail", { after = "talk" }, function(ctx)
    error(flow.error("test.auth", "login refused for " .. ctx.params.password .. "\nsecond line "
      .. ctx.params.password, { retryable = false }))
  end)
  local jr = start_journal("sec", wf)
  local progress = {}
  local sum = engine.run(wf, { params = { password = secret, user = "app" }, journal = jr,
    run_id = "sec", reporter = setmetatable({ progress = function(_, _, _, msg)
      progress[#progress + 1] = msg end }, { __index = function() return function() end end }) })
  jr:close()
  t.eq(sum.state, "failed", "the run failed as its task did")
  local lines = {}
  for _, l in ipairs(store:logs("sec")) do lines[#lines + 1] = l.msg end
  t.like(table.concat(lines, "\n"), "with <redacted>", "the log line is kept, the value masked")
  t.eq(progress, { "password=<redacted>" }, "progress messages masked")
  local run = assert(store:load("sec"))
  t.eq(run.tasks.fail.error.message, "login refused for <redacted>\nsecond line <redacted>",
    "the error kept whole, every occurrence masked")
  local all = json.encode(store:records("sec")) .. table.concat(lines, "\n")
  t.ok(not all:find(secret, 1, true), "the value is nowhere in the journal or the logs")
end)

t.test(label .. ": listing reads summaries: filters, order, pages", function()
  local wf = flow.workflow { name = "listed" }
  wf:task("a", function() return 1 end)
  local bad = flow.workflow { name = "listed_bad" }
  bad:task("a", function() error("no", 0) end)
  for i = 1, 7 do
    local w = (i % 3 == 0) and bad or wf
    local id = string.format("list-%02d", i)
    local jr = start_journal(id, w)
    engine.run(w, { params = {}, journal = jr, run_id = id })
    jr:close()
    flow.sleep(1)
  end
  local ids = function(list)
    local out = {}
    for _, r in ipairs(list) do if r.id:match("^list%-") then out[#out + 1] = r.id end end
    return out
  end
  t.eq(ids(store:runs { workflow = "listed_bad" }), { "list-03", "list-06" }, "by workflow, oldest first")
  t.eq(ids(store:runs { workflow = "listed", state = "success" }),
    { "list-01", "list-02", "list-04", "list-05", "list-07" }, "by workflow and state")
  local page1, cur = store:runs { workflow = "listed", order = "desc", limit = 2 }
  t.eq(ids(page1), { "list-07", "list-05" }, "newest first, a page of 2")
  local page2, cur2 = store:runs { workflow = "listed", order = "desc", limit = 2, cursor = cur }
  t.eq(ids(page2), { "list-04", "list-02" }, "the next page starts after the cursor")
  local page3, cur3 = store:runs { workflow = "listed", order = "desc", limit = 2, cursor = cur2 }
  t.eq(ids(page3), { "list-01" }, "the last page")
  t.eq(cur3, nil, "and no cursor after it")
  local r3 = store:runs { workflow = "listed_bad" }
  t.eq({ r3[1].state, r3[1].tasks_failed, r3[1].tasks_total, r3[1].exit }, { "failed", 1, 1, 1 },
    "a summary: state, task counts, exit")
  local mid = store:runs { workflow = "listed", since = page1[2].created, before = page1[1].created }
  t.eq(ids(mid), { "list-05" }, "a time range: since <= created < before")
end)

end

shared_cases()

t.test("a last line cut by a crash is ignored and repaired; other damage is an error", function()
  local path = jpath("cut")
  local lines = {
    json.encode { ev = "run_started", run = "cut", workflow = "w", t = 1 },
    json.encode { ev = "task_started", task = "a", attempt = 1, t = 2 },
    json.encode { ev = "task_succeeded", task = "a", attempt = 1, result = 5, t = 3 },
  }
  spit(path, table.concat(lines, "\n") .. '\n{"ev":"task_started","ta')
  local run, err = store:load("cut")
  t.ok(run, "loaded: " .. tostring(err))
  t.ok(run and run.truncated, "marked truncated")
  t.eq(run and run.tasks.a.state, "success", "lines before the cut are read")
  t.eq(run and run.state, "interrupted", "no run_finished and nobody holds it: interrupted")
  -- the next writer truncates the cut line away instead of gluing a record to it
  local jw = assert(store:resume_run(run))
  jw:append { ev = "run_resumed", t = 4 }
  jw:close()
  t.eq(slurp(path), table.concat(lines, "\n") .. "\n" .. '{"ev":"run_resumed","t":4}\n',
    "the cut line is gone, the new record on a line of its own")

  spit(path, lines[1] .. "\n" .. "garbage{\n" .. lines[3] .. "\n")
  local bad, msg = store:load("cut")
  t.ok(bad == nil, "damage in the middle refused")
  t.like(msg, "cut%.jsonl:2: damaged journal line", "message names the file and line")

  spit(path, lines[2] .. "\n")
  local _, msg2 = store:load("cut")
  t.like(msg2 or "", "expected a run_started record", "must start with run_started")
  os.remove(path)
end)

t.test("interrupted journal: running tasks replay as running and run again on resume", function()
  local path = jpath("crash")
  spit(path, table.concat({
    json.encode { ev = "run_started", run = "crash", workflow = "w", t = 1, pid = 999999999 },
    json.encode { ev = "task_started", task = "a", attempt = 1, t = 2 },
    json.encode { ev = "task_succeeded", task = "a", attempt = 1, result = "ra", t = 3 },
    json.encode { ev = "task_started", task = "b", attempt = 1, t = 4 },
  }, "\n") .. "\n")
  local run = assert(store:load("crash"))
  t.eq(run.tasks.b.state, "running", "b was running at the crash")
  t.eq(run.state, "interrupted", "its process is gone (nobody holds the run)")
  local ran = {}
  local wf = flow.workflow { name = "w" }
  wf:task("a", function() ran.a = true end)
  wf:task("b", { after = "a" }, function(ctx) ran.b = ctx.results.a return "rb" end)
  local jr = assert(store:resume_run(run))
  jr:append { ev = "run_resumed" }
  local sum = engine.run(wf, { params = {}, journal = jr, resume = run, run_id = "crash" })
  jr:close()
  t.eq(ran, { b = "ra" }, "only b ran, with a's recorded result")
  t.eq(sum.tasks[2].attempts, 2, "b's second attempt")
  os.remove(path)
end)

t.test("store:runs() orders runs and reports damaged ones", function()
  spit(jpath("zzz-damaged"), "{{{\n{}\n")
  local runs = store:runs()
  local ids, damaged = {}, nil
  for _, r in ipairs(runs) do
    ids[#ids + 1] = r.id
    if r.state == "damaged" then damaged = r end
  end
  t.ok(#runs >= 3, "runs listed: " .. table.concat(ids, ","))
  t.ok(damaged and damaged.error:find("zzz%-damaged%.jsonl:1"), "damaged journal named")
  t.eq(engine.hash_text("abc"), engine.hash_text("abc"), "hash stable")
  t.ok(engine.hash_text("abc") ~= engine.hash_text("abd"), "hash changes with content")
  os.remove(jpath("zzz-damaged"))
end)

t.test("damaged records are named by file and line, whatever field is missing", function()
  local head = '{"ev":"run_started","t":1,"run":"x","workflow":"w"}\n'
  local cases = {
    { '{"ev":"run_started"}', '"t" must be a number' },
    { '{"ev":"run_started","t":1}', '"run" must be a string' },
    { '{"ev":"run_started","t":1,"run":"x","workflow":"w","tasks":[1]}', '"tasks" must be a list' },
    { head .. '{"ev":"task_started","t":2,"task":"a","attempt":{}}', '"attempt" must be an attempt number' },
    { head .. '{"ev":"task_failed","t":2,"task":"a","attempt":1,"error":"x"}', '"error" must be an error' },
    { head .. '{"ev":"run_finished","t":2,"state":"weird","exit":0}', '"state" must be success, failed or cancelled' },
    { head .. '{"ev":"task_exploded","t":2}', "unknown record" },
  }
  for i, c in ipairs(cases) do
    spit(jpath("dmg"), c[1] .. "\n")
    local r, msg = store:load("dmg")
    t.eq(r, nil, "case " .. i .. " refused")
    t.like(msg or "", "dmg%.jsonl:%d+: damaged journal line", "case " .. i .. " names file and line")
    t.like(msg or "", (c[2]:gsub("%p", "%%%0")), "case " .. i .. " says what is wrong")
  end
  local found
  for _, r in ipairs(store:runs()) do if r.id == "dmg" then found = r end end
  t.eq(found and found.state, "damaged", "listed as damaged, not an internal error")
  os.remove(jpath("dmg"))
end)

t.test("one process at a time holds a run; a dead holder holds nothing; no lock files", function()
  local a = assert(store:create_run({ ev = "run_started", run = "lk", workflow = "lk" }))
  local prev = assert(store:load("lk"))
  t.eq(prev.state, "running", "held by us: running")
  local b, err = store:resume_run(prev)
  t.eq(b, nil, "a second writer is refused")
  t.eq(err and err.code, "store.busy", "store.busy")
  t.like(err and err.message or "", "another flowrun process", "and says why")
  a:close()
  t.eq(store:load("lk").state, "interrupted", "released once closed")
  local c = assert(store:resume_run(prev), "free again once closed")
  c:close()
  -- another process holds it, then ends (cancelling flow.exec terminates it)
  local flowrun = assert(os.getenv("FLOWRUN"), "FLOWRUN is set by scripts/test.sh")
  local started = dir .. "/started"
  local holder = flow.spawn(flow.exec, { flowrun, "-e", ([[
    local st = require("flowrun.engine.store.file").open(%q)
    local j = assert(st:resume_run(assert(st:load("lk"))))
    io.open(%q, "w"):close()
    flow.sleep(30)]]):format(dir, started) })
  for _ = 1, 200 do
    if io.open(started) then break end
    flow.sleep(0.02)
  end
  local d, derr = store:resume_run(prev)
  t.eq(d, nil, "refused while another process holds it")
  t.like(derr and derr.message or "", "is locked", "named")
  t.eq(store:load("lk").state, "running", "and the run shows as running")
  holder:cancel()
  pcall(holder.wait, holder)
  -- the kernel releases the lock when the process has exited
  for _ = 1, 300 do
    if not store:live("lk") then break end
    flow.sleep(0.01)
  end
  local e = store:resume_run(prev)
  t.ok(e, "free once that process is gone")
  if e then e:close() end
  os.remove(started)
  local locks = {}
  for _, n in ipairs(assert(sys.readdir(dir .. "/runs"))) do
    if n:match("lock") then locks[#locks + 1] = n end
  end
  t.eq(locks, {}, "no lock files are left behind")
end)

-- the same cases against PostgreSQL
do
  local conninfo, db = require("pgstore").fresh("engine_journal")
  backend, label = pgstore, "PostgreSQL store"
  store = pgstore.open(conninfo, { clock = flow.time })
  shared_cases()
  store:close()
  require("pgstore").drop(db)
end

local function rm_rf(p)
  local st = sys.stat(p)
  if st and st.type == "directory" then
    for _, n in ipairs(sys.readdir(p) or {}) do rm_rf(p .. "/" .. n) end
  end
  os.remove(p)
end
rm_rf(dir)

t.done()
