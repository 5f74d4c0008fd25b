-- The PostgreSQL run store's own promises: its schema created and migrated by flowrun (and a
-- newer one refused), fencing (a holder whose run was claimed by another writes nothing more:
-- records, log lines, heartbeats; and is told), claims with SKIP LOCKED (two workers never get
-- the same run), takeover of an expired lease, a commit retried after its answer was lost,
-- duplicate ids and scheduled runs refused, cancel requests (queued, held, unheld), NOTIFY,
-- listing 10,000 runs on an index, secrets kept out, an unreachable store and a wrong password
-- named without the password. Two store objects stand for two processes (each its own pool
-- and holder name): fencing is the database's doing, so that is what is tested.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local pg = require "pg"
local engine = require "flowrun.engine"
local pgstore = require "flowrun.engine.store.pg"
local helper = require "pgstore"

local conninfo, db = helper.fresh("store_pg")
local admin = pg.connect(conninfo)

local function open(o)
  o = o or {}
  o.clock = o.clock or flow.time
  return pgstore.open(conninfo, o)
end

local function first(id, wf)
  return { ev = "run_started", run = id, workflow = wf or "w", params = {}, v = 1 }
end

local function noid() error("the id is taken") end

local function count(sql, ...) return admin:query(sql, ...)[1].n end

t.test("the schema is created on first use, recorded, and migrated once under a lock", function()
  -- five processes meet an empty database at once
  local hs = {}
  for i = 1, 5 do
    hs[i] = flow.spawn(function()
      local s = open()
      local runs = s:runs()
      s:close()
      return #runs
    end)
  end
  t.eq(flow.all(hs), { 0, 0, 0, 0, 0 }, "every one of them reads the store")
  local rows = admin:query("SELECT version, name FROM flowrun.schema_version ORDER BY version")
  t.eq(#rows, #pgstore.migrations(), "each migration recorded once")
  t.eq(rows[1].name, "001_init", "by its name")
  local s = open()
  local from, to = s:init()
  t.eq({ from, to }, { #rows, #rows }, "store init on a current schema changes nothing")
  s:close()
end)

t.test("a schema newer than this flowrun is refused with a clear message", function()
  admin:query("INSERT INTO flowrun.schema_version (version, name) VALUES (99, '099_future')")
  local s = open()
  local err = t.raises(function() s:runs() end, "store.schema", "refused")
  t.like(err and err.message or "", "schema version 99, newer than this flowrun knows %("
    .. #pgstore.migrations() .. "%): upgrade flowrun",
    "says which versions and what to do")
  t.unlike(err and err.message or "", "flowrun%-test%-pw", "without the password")
  s:close()
  admin:query("DELETE FROM flowrun.schema_version WHERE version = 99")
end)

t.test("an unreachable store and a wrong password: named, never with the password", function()
  local s = pgstore.open("postgresql://flowrun:hunter2-Secret@127.0.0.1:1/flowrun?connect_timeout=2")
  local err = t.raises(function() s:runs() end, "store.unavailable", "unreachable store")
  t.like(err and err.message or "", "postgresql://flowrun@127%.0%.0%.1:1/flowrun", "names the store")
  t.unlike(err and err.message or "", "hunter2", "not the password")
  local bad = conninfo:gsub("password=%S+", "password=wrong-Pass-42")
  local s2 = pgstore.open(bad)
  local err2 = t.raises(function() s2:runs() end, nil, "a wrong password is refused")
  t.like(tostring(err2 and err2.message), "password authentication failed", "says why")
  t.unlike(tostring(err2 and err2.message), "wrong%-Pass%-42", "without the password")
  t.eq(pgstore.redact("postgresql://u:p%40ss@h:5/d?sslmode=require&password=x"),
    "postgresql://u@h:5/d?sslmode=require&password=***", "redact: URL user:password and ?password=")
  t.eq(pgstore.redact("host=h password='a b' user=u"), "host=h password=*** user=u",
    "redact: key/value, quoted")
end)

t.test("fencing: once another holder claims the run, the old one writes nothing and is told", function()
  local a, b = open { owner = "A" }, open { owner = "B" }
  local lost
  local ja = assert(a:create_run(first("f1"), noid))
  ja:watch { lost = function(err) lost = err end }
  ja:append { ev = "task_started", task = "x", attempt = 1 }
  ja:commit()
  ja:log("x", 1, "a line from A")
  ja:drain_logs()
  t.eq(count("SELECT count(*) AS n FROM flowrun.events WHERE run_id = 'f1'"), 2, "A wrote 2 records")
  -- A is stopped longer than its lease: it expires, B takes the run
  admin:query("UPDATE flowrun.runs SET lease_until = now() - interval '1 second' WHERE id = 'f1'")
  local prev = assert(b:load("f1"))
  t.eq(prev.state, "interrupted", "an expired lease reads as interrupted")
  local jb = assert(b:resume_run(prev))
  t.eq(jb.epoch, 2, "B's epoch is the next one")
  -- A wakes up
  ja:append { ev = "task_succeeded", task = "x", attempt = 1, result = "from A" }
  local err = t.raises(function() ja:commit() end, "store.lost", "A's commit is refused")
  t.like(err and err.message or "", "claimed by B with epoch 2; ours was 1", "and says by whom")
  t.ok(lost ~= nil, "A's lost hook was called (the engine stops the run's tasks)")
  t.eq(count("SELECT count(*) AS n FROM flowrun.events WHERE run_id = 'f1' AND epoch = 1"), 2,
    "no record of A's after the takeover")
  ja:log("x", 1, "a late line from A")
  t.raises(function() a:guard("f1") end, "store.lost", "A's AWS calls for the run are refused")
  ja:close()
  t.eq(count("SELECT count(*) AS n FROM flowrun.logs WHERE run_id = 'f1'"), 1, "nor any log line")
  jb:append { ev = "run_resumed" }
  jb:commit()
  t.eq(count("SELECT count(*) AS n FROM flowrun.events WHERE run_id = 'f1'"), 3, "B writes on")
  -- a log line that a writer with a stale epoch sends is refused by the statement itself
  local stale = a:q("append_logs", "f1", 1, json.encode(json.array { { t = 1, msg = "stale" } }))
  t.eq(stale.affected, 0, "append_logs with an old epoch writes nothing")
  jb:close()
  a:close(); b:close()
end)

t.test("a heartbeat that finds the run taken over marks it lost", function()
  local a, b = open { owner = "A", lease = 3 }, open { owner = "B" }
  local lost
  local ja = assert(a:create_run(first("hb1"), noid))
  ja:watch { lost = function(err) lost = err end }
  admin:query("UPDATE flowrun.runs SET lease_until = now() - interval '1 second' WHERE id = 'hb1'")
  local jb = assert(b:resume_run(assert(b:load("hb1"))))
  a:heartbeat()
  t.ok(lost and lost.code == "store.lost", "the heartbeat noticed (" .. tostring(lost and lost.message) .. ")")
  ja:close(); jb:close()
  a:close(); b:close()
end)

t.test("a commit whose answer was lost is retried without writing twice", function()
  local s = open()
  local j = assert(s:create_run(first("rt1"), noid))
  j:append { ev = "task_started", task = "x", attempt = 1 }
  -- the statement reached the server and committed, but its answer never came back
  local payload = "[" .. table.concat(j.buf, ",") .. "]"
  local r = s:q("commit", "rt1", j.epoch, j.seq, 1, payload, "running", j.tally.started, pg.null,
    j.tally.last_t, pg.null, pg.null, 1, 0, 0, 0, s.lease)
  t.eq(r[1].written, 1, "the first try wrote it")
  j:commit()
  t.eq(j.seq, 2, "the retry finds its own commit and goes on")
  t.eq(count("SELECT count(*) AS n FROM flowrun.events WHERE run_id = 'rt1'"), 2, "written once")
  j:close()
  s:close()
end)

t.test("ids: a duplicate is refused, so is a second scheduled run for one logical date", function()
  local s = open()
  local base = { workflow = "nightly", source = "return 1", params = {}, tasks = { "a" } }
  local function sub(o) local x = {} for k, v in pairs(base) do x[k] = v end for k, v in pairs(o) do x[k] = v end return s:submit(x) end
  t.eq(sub { run_id = "dup1" }, "dup1", "submitted")
  local id, err = sub { run_id = "dup1" }
  t.eq(id, nil, "the same id again is refused")
  t.eq(err and err.code, "store.exists", "store.exists")
  t.eq(sub { run_id = "nightly@2026-01-01", kind = "scheduled", logical_date = 1767225600 },
    "nightly@2026-01-01", "a scheduled run")
  local id2, err2 = sub { run_id = "nightly@2026-01-01b", kind = "scheduled", logical_date = 1767225600 }
  t.eq(id2, nil, "another id for the same workflow and logical date is refused too")
  t.eq(err2 and err2.code, "store.exists", "store.exists")
  t.eq(sub { run_id = "nightly-manual", kind = "submitted", logical_date = 1767225600 },
    "nightly-manual", "a manual run for that date is not a scheduled one")
  local r = assert(s:load("nightly@2026-01-01"))
  t.eq({ r.state, r.kind, r.logical_date }, { "queued", "scheduled", 1767225600 },
    "a queued run loads, with its kind and logical date")
  for _, x in ipairs { "dup1", "nightly@2026-01-01", "nightly-manual" } do s:request_cancel(x) end
  s:close()
end)

t.test("claims: FOR UPDATE SKIP LOCKED hands each run to one worker, oldest first", function()
  local s = open()
  for i = 1, 30 do
    assert(s:submit { run_id = string.format("q%02d", i), workflow = "w", source = "x",
      tasks = { "a" }, created = 1000 + i })
  end
  local workers = {}
  for i = 1, 3 do workers[i] = open { owner = "W" .. i } end
  local got, hs, held = {}, {}, {}
  for i, w in ipairs(workers) do
    hs[i] = flow.spawn(function()
      local mine = {}
      while true do
        local cs = w:claim("W" .. i, 4)
        if #cs == 0 then break end
        for _, c in ipairs(cs) do
          mine[#mine + 1] = c.id
          got[c.id] = (got[c.id] or 0) + 1
          held[#held + 1] = c.journal
        end
      end
      return #mine
    end)
  end
  local per = flow.all(hs)
  for _, j in ipairs(held) do j:close() end
  local n, twice = 0, 0
  for _, k in pairs(got) do n = n + 1; if k > 1 then twice = twice + 1 end end
  t.eq(n, 30, "every queued run claimed")
  t.eq(twice, 0, "none twice (" .. table.concat(per, "+") .. ")")
  -- closed without finishing: each is left with an expired lease, for a takeover
  local again = workers[1]:claim("W1", 100)
  t.eq(#again, 30, "runs let go unfinished are taken over")
  t.eq(again[1].was, "running", "as takeovers")
  t.eq(again[1].takeovers, 0, "not counted against the run: it was handed back, its holder did not die")
  for _, c in ipairs(again) do
    c.journal:append { ev = "run_finished", state = "cancelled", exit = 130 }
    c.journal:close()
  end
  local order = workers[2]:claim("W2", 5)
  t.eq(#order, 0, "finished runs are not claimed")
  for _, w in ipairs(workers) do w:close() end
  -- oldest first
  for i = 1, 3 do
    assert(s:submit { run_id = "o" .. i, workflow = "w", source = "x", created = 3000 - i })
  end
  local c1 = s:claim("W", 1)
  t.eq(c1[1] and c1[1].id, "o3", "the oldest queued run first")
  c1[1].journal:append { ev = "run_finished", state = "cancelled", exit = 130 }
  c1[1].journal:close()
  s:request_cancel("o1"); s:request_cancel("o2")
  s:close()
end)

t.test("a claimed run whose holder vanished is taken over after its lease, epoch bumped", function()
  local s1, s2 = open { owner = "W1", lease = 1 }, open { owner = "W2", lease = 1 }
  assert(s1:submit { run_id = "tk1", workflow = "w", source = "x", tasks = { "a" } })
  local c = s1:claim("W1", 1)[1]
  c.journal:append { ev = "run_started", run = "tk1", workflow = "w", tasks = { "a" } }
  c.journal:append { ev = "task_started", task = "a", attempt = 1 }
  c.journal:commit()
  s1:stop_background() -- W1 freezes: no more heartbeats
  t.eq(#s2:claim("W2", 1), 0, "not while its lease holds")
  flow.sleep(1.3)
  local c2 = s2:claim("W2", 1)[1]
  t.eq(c2 and c2.id, "tk1", "taken over once the lease expired")
  t.eq(c2 and c2.was, "running", "as a takeover")
  t.eq(c2 and c2.epoch, c.epoch + 1, "with the next epoch")
  t.eq(c2 and c2.takeovers, 1, "counted: its holder's lease ran out")
  t.eq(c2 and c2.run and c2.run.tasks.a.state, "running", "its journal replayed for the resume")
  c.journal:append { ev = "task_succeeded", task = "a", attempt = 1 }
  t.raises(function() c.journal:commit() end, "store.lost", "the old holder's commit is refused")
  c2.journal:append { ev = "run_finished", state = "failed", exit = 1 }
  c2.journal:close()
  c.journal:close()
  s1:close(); s2:close()
end)

t.test("cancel: a queued run ends at once; a held one is told at once (NOTIFY)", function()
  local s, w = open(), open { owner = "W" }
  assert(s:submit { run_id = "cq1", workflow = "w", source = "x", tasks = { "a", "b" } })
  t.eq(s:request_cancel("cq1"), "cancelled", "queued: cancelled")
  local r = assert(s:load("cq1"))
  t.eq({ r.state, r.exit, r.tasks.a.state }, { "cancelled", 130, "cancelled" }, "and loads so")
  t.eq(#w:claim("W", 5), 0, "nobody claims it")
  local st, msg = s:request_cancel("cq1")
  t.eq(st, nil, "a second cancel")
  t.like(msg or "", "already ended %(cancelled%)", "says it already ended")

  assert(s:submit { run_id = "cr1", workflow = "w", source = "x", tasks = { "a" } })
  local c = w:claim("W", 1)[1]
  local told
  c.journal:watch { cancel = function(reason) told = reason end }
  c.journal:append { ev = "run_started", run = "cr1", workflow = "w" }
  c.journal:commit()
  local t0 = flow.now()
  local what, owner = s:request_cancel("cr1")
  t.eq({ what, owner }, { "requested", "W" }, "held: the request is recorded, naming the holder")
  for _ = 1, 200 do
    if told then break end
    flow.sleep(0.01)
  end
  t.eq(told, "cancelled by flowrun cancel", "the holder is told")
  t.ok(flow.now() - t0 < 1, string.format("at once, by NOTIFY (%.0f ms)", (flow.now() - t0) * 1000))
  c.journal:append { ev = "run_finished", state = "cancelled", exit = 130 }
  c.journal:close()

  -- nobody holds it (its worker died): the next worker is asked to cancel it
  assert(s:submit { run_id = "cu1", workflow = "w", source = "x", tasks = { "a" } })
  local c1 = w:claim("W", 1)[1]
  c1.journal:append { ev = "run_started", run = "cu1", workflow = "w" }
  c1.journal:commit()
  w:stop_background()
  admin:query("UPDATE flowrun.runs SET lease_until = now() - interval '1 second' WHERE id = 'cu1'")
  t.eq(s:request_cancel("cu1"), "requested-unheld", "unheld: recorded for whoever takes it over")
  local w2 = open { owner = "W2" }
  local c2 = w2:claim("W2", 1)[1]
  local told2
  c2.journal:watch { cancel = function(reason) told2 = reason end }
  t.eq(told2, "cancelled by flowrun cancel", "the worker taking it over is told when it holds it")
  c2.journal:append { ev = "run_finished", state = "cancelled", exit = 130 }
  c2.journal:close()
  c1.journal:close()
  w:close(); w2:close(); s:close()
end)

t.test("watch: a submit wakes a watcher at once (LISTEN/NOTIFY)", function()
  local s, w = open(), open()
  local watcher = w:watch()
  watcher:wait(0.5) -- the first wait is told to look (listener starting)
  local seen
  local h = flow.spawn(function()
    local t0 = flow.now()
    while flow.now() - t0 < 5 do
      local evs = watcher:wait(5)
      for _, e in ipairs(evs or {}) do
        if e.kind == "queued" and e.run == "wq1" then seen = flow.now() return end
      end
    end
  end)
  flow.sleep(0.3)
  local t0 = flow.now()
  assert(s:submit { run_id = "wq1", workflow = "w", source = "x" })
  h:wait()
  t.ok(seen and seen - t0 < 0.5, string.format("woken %.1f ms after the submit",
    ((seen or math.huge) - t0) * 1000))
  watcher:close()
  s:request_cancel("wq1")
  s:close(); w:close()
end)

t.test("secret parameters never reach the store", function()
  local s = open()
  local wf = flow.workflow { name = "sec", params = { token = { secret = true, required = true },
    region = "eu-west-1" } }
  wf:task("a", function(ctx) return #ctx.params.token end)
  local sum = assert(engine.start(wf, { store = s, params = { token = "tok-SECRET-9f2", region = "eu-west-1" },
    run_id = "sec1", source = "-- the workflow's source" }))
  t.eq(sum.state, "success", "ran with the secret")
  local dump = admin:query([[SELECT (SELECT string_agg(r::text, ' ') FROM flowrun.runs r) ||
    (SELECT string_agg(e.rec::text, ' ') FROM flowrun.events e) AS all_text]])[1].all_text
  t.unlike(dump, "tok%-SECRET%-9f2", "not in any row of runs or events")
  t.like(dump, "eu%-west%-1", "(the public parameter is)")
  local r = s:load("sec1")
  t.eq(r.secret_params, { "token" }, "its name is kept, for resume to ask for it")
  s:close()
end)

t.test("listing 10,000 runs reads an index, never the journals", function()
  local s = open()
  s:runs() -- the schema
  admin:exec("DELETE FROM flowrun.runs")
  local rows = {}
  for i = 1, 10000 do
    local wfn = "wf" .. (i % 20)
    local state = (i % 7 == 0) and "failed" or "success"
    rows[i] = { string.format("bulk-%05d", i), wfn, state, 1e9 + i, 1e9 + i, 1e9 + i + 5, 3,
      state == "success" and 3 or 2 }
  end
  admin:copy_from("COPY flowrun.runs (id, workflow, state, created, started, finished, tasks_total, "
    .. "tasks_succeeded) FROM STDIN", rows)
  admin:exec("ANALYZE flowrun.runs")
  local shapes = {
    { {}, "desc" }, { { workflow = "wf3" }, "desc" }, { { state = "failed" }, "desc" },
    { { workflow = "wf3", state = "failed" }, "desc" }, { { since = 1e9 + 5000, before = 1e9 + 6000 }, "asc" },
  }
  for _, sh in ipairs(shapes) do
    local f = sh[1]
    f.order, f.limit = sh[2], 50
    local t0 = flow.now()
    local page, cursor = s:runs(f)
    local p2 = s:runs { workflow = f.workflow, state = f.state, since = f.since, before = f.before,
      order = f.order, limit = 50, cursor = cursor }
    local el = flow.now() - t0
    t.ok(#page == 50 and #p2 > 0 and p2[1].id ~= page[1].id, "a page of 50 and the next: " .. json.encode(sh[1]))
    t.ok(el < 0.2, string.format("  in %.1f ms", el * 1000))
  end
  -- the plans of the statements the store sends: index scans, never a scan of the table
  local plans = {
    { {}, {}, "runs_created" }, { { workflow = "wf3" }, { "wf3" }, "runs_workflow_created" },
    { { states = { "failed" } }, { pg.array { "failed" } }, "Index Scan" },
  }
  for _, p in ipairs(plans) do
    local sql = pgstore.list_sql(p[1], true)
    local plan = admin:query("EXPLAIN (FORMAT JSON) " .. sql, 51, table.unpack(p[2]))[1]["QUERY PLAN"]
    local text = json.encode(plan)
    t.like(text, p[3], "the newest 50 " .. json.encode(p[1]) .. ": " .. p[3])
    t.unlike(text, "Seq Scan", "  not a sequential scan")
  end
  local newest = s:runs { order = "desc", limit = 1 }
  t.eq(newest[1].id, "bulk-10000", "the newest first")
  local found = s:find("bulk-0999")
  t.eq(found and found.id, nil, "a prefix matching several is refused")
  local one = s:find("bulk-09999")
  t.eq(one and one.id, "bulk-09999", "an id")
  admin:exec("DELETE FROM flowrun.runs")
  s:close()
end)

admin:close()
helper.drop(db)
t.done()
