-- The scheduler under virtual time, with a worker on the same loop running what it fires, over
-- the file store (the PostgreSQL store: tests/py/test_scheduler_chaos.py and test_scheduler_cli.py):
--   * a month of `0 2 * * *` in Europe/Paris fires 31 runs with the right logical dates and data
--     intervals across the spring and the autumn DST changes, each at its due time, and the runs
--     see those dates (ctx, parameter defaults);
--   * catch-up after the scheduler was down three days: catchup off fires the latest tick only,
--     on fires every missed tick oldest first, never more than max_active_runs at once;
--   * max_active_runs with each overlap policy (skip: dropped and never fired later; queue:
--     fired when the slot frees; cancel_previous: the previous run cancelled, its cleanup run);
--   * a schedule edited, paused and unpaused (catchup off and on) without a restart;
--   * a broken file next to good ones, a good one broken then fixed, a duplicate name, a file
--     whose runs could not start, a file removed;
--   * a date a backfill already had is not fired again;
--   * three schedulers on one store, stopped and restarted at random for a simulated week: each
--     tick fired once.
local t = require "tap"
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local json = require "json"
local filestore = require "flowrun.engine.store.file"
local worker = require "flowrun.worker"
local scheduler = require "flowrun.schedule.scheduler"
local interval = require "flow.schedule.interval"
local tz = require "flow.schedule.tz"

core.set_virtual_time(true)

local base = (os.getenv("FLOWRUN_TEST_TMP") or "/tmp") .. "/schedule_scheduler." .. sys.getpid()
assert(sys.mkdir_p(base))

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local PARIS = assert(tz.load("Europe/Paris"))
local function at(iso, zone) return assert(interval.parse_time(iso, zone or tz.utc)) end
local function iso(e, zone) return interval.iso(e, zone or tz.utc) end

-- A world: a workflows directory, a file store, a worker and a scheduler on one virtual clock
-- that starts at t0. Workflow bodies call _G.sched_note(ctx) to say they ran.
local notes = {}
_G.sched_note = function(ctx, what)
  notes[#notes + 1] = { run = ctx.run_id, task = ctx.task, what = what, t = flow.time() }
end

local World = {}
World.__index = World

local n_worlds = 0
local function world(files, o)
  o = o or {}
  n_worlds = n_worlds + 1
  local root = base .. "/w" .. n_worlds
  assert(sys.mkdir_p(root .. "/wf"))
  for name, src in pairs(files) do write(root .. "/wf/" .. name, src) end
  local n0, t0 = flow.now(), o.t0
  local w = setmetatable({ root = root, dir = root .. "/wf", fired = {}, logs = {}, schedulers = {} }, World)
  w.clock = function() return t0 + (flow.now() - n0) end
  w.store = filestore.open(root .. "/state", { clock = w.clock, fsync = false })
  if o.worker ~= false then
    local ws = filestore.open(root .. "/state", { clock = w.clock, fsync = false })
    -- the worker's heartbeat (its registry file) every 20 virtual minutes, not every 5 s: a
    -- month of virtual time then takes a moment
    ws.lease = 3600
    w.worker = worker.new { store = ws, concurrency = o.concurrency or 8, poll = 3600,
      log = function(l) w.logs[#w.logs + 1] = l end }
    w.worker:start()
  end
  return w
end

-- A scheduler of the world (several may run at once).
function World:scheduler(name)
  local s = scheduler.new { store = filestore.open(self.root .. "/state", { clock = self.clock,
      fsync = false }), dir = self.dir, clock = self.clock,
    log = function(l) self.logs[#self.logs + 1] = (name or "s") .. ": " .. l end,
    on_fire = function(ev)
      ev.by = name
      self.fired[#self.fired + 1] = ev
    end }
  s:start()
  self.schedulers[#self.schedulers + 1] = s
  return s
end

-- Waits until the world's clock reaches epoch e.
function World:until_(e)
  local d = e - self.clock()
  if d > 0 then flow.sleep(d) end
end

function World:stop()
  for _, s in ipairs(self.schedulers) do
    s:stop()
    local ok, err = s.task:result()
    if not ok and not flow.cancelled(err) then t.ok(false, "a scheduler failed: " .. tostring(err)) end
  end
  if self.worker then self.worker:stop("the test ends") pcall(self.worker.wait, self.worker) end
end

function World:run(id) return self.store:load(id) end

function World:fired_dates(zone)
  local out = {}
  for i, ev in ipairs(self.fired) do out[i] = iso(ev.logical_date, zone) end
  return out
end

function World:grep(pat)
  local n = 0
  for _, l in ipairs(self.logs) do if l:find(pat) then n = n + 1 end end
  return n
end

-- The most runs of a workflow that ran at once, from their journals.
function World:max_concurrent(ids)
  local evs = {}
  for _, id in ipairs(ids) do
    local r = self:run(id)
    if r and r.started then
      evs[#evs + 1] = { r.started, 1 }
      evs[#evs + 1] = { r.finished or math.huge, -1 }
    end
  end
  table.sort(evs, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
  local cur, max = 0, 0
  for _, e in ipairs(evs) do
    cur = cur + e[2]
    if cur > max then max = cur end
  end
  return max
end

local function fired_ids(w)
  local out = {}
  for i, ev in ipairs(w.fired) do out[i] = ev.run_id end
  return out
end

local NIGHTLY = [[
local flow = require "flow"
local wf = flow.workflow { name = "nightly", schedule = "0 2 * * *", timezone = "Europe/Paris",
  start_date = "%s",
  params = { prefix = { default = function(d) return "raw/" .. d.ds .. "/" end } } }
wf:task("load", function(ctx)
  flow.sleep(300)
  return { ld = ctx.logical_date, s = ctx.data_interval.start, e = ctx.data_interval["end"],
    prefix = ctx.params.prefix, manual = ctx.manual }
end)
return wf
]]

-- The expected 02:00 of each day in Paris, from the offsets the tz database gives (a day whose
-- 02:00 does not exist fires at 03:00 of the new time; a repeated 02:00 fires at its first).
local function paris_2am(y, m, d)
  local cands = PARIS:from_local(y, m, d, 2, 0, 0)
  if #cands == 0 then return PARIS:instant(y, m, d, 2, 0, 0) end
  return cands[1]
end

for _, month in ipairs { { 2026, 3, "spring forward on the 29th" }, { 2026, 10, "fall back on the 25th" } } do
  local y, m = month[1], month[2]
  t.test(string.format("a month of 0 2 * * * in Europe/Paris: %04d-%02d (%s)", y, m, month[3]), function()
    local first = string.format("%04d-%02d-01", y, m)
    local w = world({ ["nightly.lua"] = NIGHTLY:format(first) }, { t0 = at(first .. "T00:00", PARIS) })
    w:scheduler()
    local days = tz.days_in_month(y, m)
    local ny, nm = y, m + 1
    w:until_(paris_2am(ny, nm, 1) + 3600)
    w:stop()
    t.eq(#w.fired, days, days .. " runs fired")
    local want_ld, want_ids, wrong_late = {}, {}, 0
    for d = 1, days do
      want_ld[d] = iso(paris_2am(y, m, d), PARIS)
      want_ids[d] = "nightly@" .. os.date("!%Y%m%dT%H%M%SZ", paris_2am(y, m, d))
    end
    t.eq(w:fired_dates(PARIS), want_ld, "their logical dates: every day's 02:00 in Paris")
    t.eq(fired_ids(w), want_ids, "ids from the workflow and the logical date (UTC)")
    local changed = m == 3 and "2026-03-29T03:00:00+02:00" or "2026-10-25T02:00:00+02:00"
    t.eq(want_ld[m == 3 and 29 or 25], changed, "the day of the change: " .. changed)
    local runs_ok, seen_ok = 0, 0
    for d, ev in ipairs(w.fired) do
      local due = d < days and paris_2am(y, m, d + 1) or paris_2am(ny, nm, 1)
      if ev.due ~= due or math.abs(ev.at - due) > 1 or not ev.live then
        wrong_late = wrong_late + 1
        t.diag("fired " .. ev.run_id .. " at " .. iso(ev.at, PARIS) .. ", due " .. iso(due, PARIS))
      end
      local r = w:run(ev.run_id)
      if r and r.state == "success" then runs_ok = runs_ok + 1 end
      local res = r and r.tasks.load.result
      local want = { ld = want_ld[d], s = want_ld[d], e = iso(due, PARIS),
        prefix = "raw/" .. want_ld[d]:sub(1, 10) .. "/", manual = false }
      if t.deep_eq(res, want) then seen_ok = seen_ok + 1 else t.diag(t.show(res), " ~= ", t.show(want)) end
    end
    t.eq(wrong_late, 0, "each fired at its due time (the end of its interval), within a second")
    t.eq(runs_ok, days, "the worker ran each run")
    t.eq(seen_ok, days, "each run saw its logical date, data interval and date-made parameter")
  end)
end

local DAILY = [[
local flow = require "flow"
local wf = flow.workflow { name = "daily", schedule = "0 2 * * *", start_date = "2026-05-01",
  catchup = %s, max_active_runs = 2 }
wf:task("work", function(ctx) flow.sleep(1800) return ctx.logical_date end)
return wf
]]

for _, catchup in ipairs { false, true } do
  t.test("down for three days, catchup " .. tostring(catchup), function()
    local w = world({ ["daily.lua"] = DAILY:format(tostring(catchup)) }, { t0 = at("2026-05-10T00:00") })
    local s1 = w:scheduler("first")
    w:until_(at("2026-05-10T03:00"))
    t.eq(w:fired_dates(), catchup and {
      "2026-05-01T02:00:00+00:00", "2026-05-02T02:00:00+00:00", "2026-05-03T02:00:00+00:00",
      "2026-05-04T02:00:00+00:00", "2026-05-05T02:00:00+00:00", "2026-05-06T02:00:00+00:00",
      "2026-05-07T02:00:00+00:00", "2026-05-08T02:00:00+00:00", "2026-05-09T02:00:00+00:00",
    } or { "2026-05-08T02:00:00+00:00", "2026-05-09T02:00:00+00:00" },
      catchup and "from start_date, every interval, oldest first (two at a time; the one due at "
        .. "02:00 waits for them: catchup drops no tick)" or "the latest at start, then the one due")
    s1:stop()
    local before = #w.fired
    w:until_(at("2026-05-13T05:00")) -- down: the 10th, 11th and 12th are missed
    t.eq(#w.fired, before, "nothing fired while no scheduler ran")
    local restart = w.clock()
    w:scheduler("second")
    w:until_(at("2026-05-13T06:00"))
    local after = {}
    for i = before + 1, #w.fired do after[#after + 1] = w.fired[i] end
    if not catchup then
      t.eq(#after, 1, "one run: only the latest missed tick")
      t.eq(after[1] and iso(after[1].logical_date), "2026-05-12T02:00:00+00:00", "the latest one")
      t.ok(after[1] and after[1].at - restart < 1, "fired at once")
    else
      local lds, ats = {}, {}
      for i, ev in ipairs(after) do lds[i], ats[i] = iso(ev.logical_date), ev.at - restart end
      t.eq(lds, { "2026-05-10T02:00:00+00:00", "2026-05-11T02:00:00+00:00",
        "2026-05-12T02:00:00+00:00" }, "every missed tick, oldest first")
      t.ok(ats[1] < 1 and ats[2] < 1, "two at once (max_active_runs 2)")
      t.ok(ats[3] and ats[3] >= 1800 and ats[3] < 1801, "the third when a run ended (30 min later)")
      t.eq(w:max_concurrent(fired_ids(w)), 2, "never more than 2 runs at once")
    end
    w:stop()
  end)
end

local OVERLAP = [[
local flow = require "flow"
local wf = flow.workflow { name = "ten", schedule = "*/10 * * * *", start_date = "2026-06-01",
  catchup = %s, max_active_runs = %d, overlap = %q }
wf:task("work", function(ctx) sched_note(ctx, "work") flow.sleep(1500) end)
wf:task("cleanup", { after = "work", cleanup = true }, function(ctx) sched_note(ctx, "cleanup") flow.sleep(60) end)
return wf
]]

local function overlap_world(catchup, max, policy)
  return world({ ["ten.lua"] = OVERLAP:format(tostring(catchup), max, policy) },
    { t0 = at("2026-06-01T00:00") })
end

local function hm(list)
  local out = {}
  for i, ev in ipairs(list) do out[i] = os.date("!%H:%M", ev.logical_date) .. "@" .. os.date("!%H:%M", math.floor(ev.at)) end
  return out
end

t.test("overlap skip, max_active_runs 1: ticks due while a run goes are dropped, for good", function()
  local w = overlap_world(false, 1, "skip")
  local s1 = w:scheduler()
  w:until_(at("2026-06-01T02:05"))
  -- runs last 25 min (+1 min of cleanup): due 00:10 fires, 00:20 and 00:30 are skipped ...
  t.eq(hm(w.fired), { "00:00@00:10", "00:30@00:40", "01:00@01:10", "01:30@01:40" },
    "fired: one tick in three (logical date @ fired)")
  t.eq(w.store:schedule_states({ "ten" }).ten.skipped, 8, "8 ticks skipped, counted in the store")
  t.eq(w:grep("skipped ten's tick"), 8, "and said")
  t.eq(w:max_concurrent(fired_ids(w)), 1, "never two at once")
  s1:stop()
  -- a new scheduler does not fire a skipped tick late: 02:00's was skipped
  w:until_(at("2026-06-01T02:07"))
  w:scheduler()
  w:until_(at("2026-06-01T02:15"))
  t.eq(hm(w.fired)[5], "02:00@02:10", "the next one fired is due 02:10 (02:00's stays skipped)")
  w:stop()
end)

t.test("overlap queue: the tick waits for the slot and fires when it frees", function()
  local w = overlap_world(false, 1, "queue")
  w:scheduler()
  w:until_(at("2026-06-01T01:05"))
  -- catchup off: the latest tick waits, older waiting ones give way to it
  t.eq(hm(w.fired), { "00:00@00:10", "00:20@00:36", "00:50@01:02" },
    "fired when the previous run ended (its cleanup done), the latest tick each time")
  t.eq(w.store:schedule_states({ "ten" }).ten.skipped, 0, "nothing recorded as skipped")
  t.eq(w:max_concurrent(fired_ids(w)), 1, "never two at once")
  w:stop()
end)

t.test("overlap queue with catchup: every tick, in order, one at a time", function()
  local w = overlap_world(true, 1, "queue")
  w:scheduler()
  w:until_(at("2026-06-01T02:00"))
  t.eq(hm(w.fired), { "00:00@00:10", "00:10@00:36", "00:20@01:02", "00:30@01:28", "00:40@01:54" },
    "consecutive logical dates, each when the previous ended")
  t.eq(w:max_concurrent(fired_ids(w)), 1, "never two at once")
  w:stop()
end)

t.test("overlap cancel_previous: the running run is cancelled, its cleanup runs, then the next", function()
  local w = overlap_world(false, 1, "cancel_previous")
  w:scheduler()
  w:until_(at("2026-06-01T00:45"))
  t.eq(hm(w.fired), { "00:00@00:10", "00:10@00:21", "00:20@00:31", "00:30@00:41" },
    "each due tick fires once its predecessor's cleanup ended (1 min)")
  local ids = fired_ids(w)
  for i = 1, 3 do
    local r = w:run(ids[i])
    t.eq(r and r.state, "cancelled", ids[i] .. " was cancelled")
    t.eq(r and r.tasks.cleanup.state, "success", "  and its cleanup task ran")
  end
  t.eq(w:grep("cancelling ten@"), 3, "the scheduler said so, once per run")
  t.eq(w:max_concurrent(ids), 1, "never two at once")
  w:stop()
end)

t.test("max_active_runs 2 with skip: two at once, the third skipped", function()
  local w = overlap_world(false, 2, "skip")
  w:scheduler()
  w:until_(at("2026-06-01T01:25"))
  t.eq(hm(w.fired), { "00:00@00:10", "00:10@00:20", "00:30@00:40", "00:40@00:50", "01:00@01:10",
    "01:10@01:20" }, "two fire, one is skipped, and again")
  t.eq(w.store:schedule_states({ "ten" }).ten.skipped, 2, "2 skipped")
  t.eq(w:max_concurrent(fired_ids(w)), 2, "at most 2 at once")
  w:stop()
end)

local HOURLY = [[
local flow = require "flow"
local wf = flow.workflow { name = "%s", schedule = "%s", start_date = "2026-07-01", catchup = %s,
  max_active_runs = 5 }
wf:task("a", function(ctx) flow.sleep(60) end)
return wf
]]

t.test("a schedule edited, paused and unpaused, without a restart", function()
  local w = world({ ["h.lua"] = HOURLY:format("h", "0 * * * *", "false") }, { t0 = at("2026-07-01T00:00") })
  local s = w:scheduler()
  w:until_(at("2026-07-01T03:30"))
  t.eq(hm(w.fired), { "00:00@01:00", "01:00@02:00", "02:00@03:00" }, "hourly")
  write(w.dir .. "/h.lua", HOURLY:format("h", "15,45 * * * *", "false"))
  w:until_(at("2026-07-01T04:20"))
  t.eq(hm(w.fired), { "00:00@01:00", "01:00@02:00", "02:00@03:00", "03:15@03:45", "03:45@04:15" },
    "the edited schedule takes effect at once (03:15 and 03:45)")
  t.eq(w:grep("reloaded .*h.lua: workflow h, 15,45"), 1, "the reload is said")
  -- paused: nothing fires
  t.eq(w.store:set_paused("h", true, "tester"), false, "pause (it was not paused)")
  w:until_(at("2026-07-01T07:00"))
  t.eq(#w.fired, 5, "nothing fired while paused")
  local list = s:workflows()
  t.eq(list[1] and list[1].paused, true, "the scheduler knows it is paused")
  -- unpaused, catchup off: the latest tick only, at once
  local un = w.clock()
  t.eq(w.store:set_paused("h", false), true, "unpause (it was paused)")
  w:until_(at("2026-07-01T07:05"))
  t.eq(hm(w.fired)[6], "06:15@" .. os.date("!%H:%M", math.floor(un)), "the latest missed tick, at once")
  t.eq(#w.fired, 6, "only that one")
  -- catchup on, paused for two hours: every missed tick on unpause
  write(w.dir .. "/h.lua", HOURLY:format("h", "15,45 * * * *", "true"))
  w:until_(at("2026-07-01T07:10"))
  w.store:set_paused("h", true)
  w:until_(at("2026-07-01T09:00"))
  t.eq(#w.fired, 6, "nothing fired while paused")
  w.store:set_paused("h", false)
  w:until_(at("2026-07-01T09:01"))
  local tail = {}
  for i = 7, #w.fired do tail[#tail + 1] = os.date("!%H:%M", w.fired[i].logical_date) end
  t.eq(tail, { "06:45", "07:15", "07:45", "08:15" },
    "catchup on: each tick missed while paused, oldest first")
  w:stop()
end)

t.test("a broken file next to good ones; a good one broken keeps its last good version", function()
  local w = world({
    ["good.lua"] = HOURLY:format("good", "0 * * * *", "false"),
    ["other.lua"] = HOURLY:format("other", "30 * * * *", "false"),
    ["bad.lua"] = "local flow = require 'flow'\nreturn flow.workflow { name = ",
    ["zdup.lua"] = HOURLY:format("good", "5 * * * *", "false"),
    ["cron.lua"] = HOURLY:format("cron", "0 25 * * *", "false"),
    ["needs.lua"] = [[
local flow = require "flow"
local wf = flow.workflow { name = "needs", schedule = "@hourly", params = { bucket = { required = true } } }
wf:task("a", function() end)
return wf
]],
    ["notes.txt"] = "not a workflow",
  }, { t0 = at("2026-07-01T00:10") })
  local s = w:scheduler()
  w:until_(at("2026-07-01T01:40"))
  local by = {}
  for _, ev in ipairs(w.fired) do by[ev.workflow] = (by[ev.workflow] or 0) + 1 end
  t.eq(by, { good = 1, other = 1 }, "the good ones fire (their first intervals: 00:00 and 00:30)")
  local list, broken = s:workflows()
  local names = {}
  for i, e in ipairs(list) do names[i] = e.name end
  t.eq(names, { "good", "other" }, "served: the good ones")
  local why = {}
  for _, b in ipairs(broken) do why[b.path:match("[^/]*$")] = b.error end
  t.like(why["bad.lua"] or "", "bad.lua:2:", "a syntax error, with file and line")
  t.like(why["zdup.lua"] or "", "workflow good is already defined by .*good.lua", "a duplicate name")
  t.like(why["cron.lua"] or "", "hour: 25 is out of range 0%-23", "a bad cron expression")
  t.like(why["needs.lua"] or "", "its runs would not start: parameter bucket is required",
    "a required parameter no one gives")
  t.eq(why["notes.txt"], nil, "other files are not workflows")
  t.ok(w:grep("bad.lua:2:.*%(not scheduled%)") == 1, "each reported once")
  -- the good one broken: its last good version stays scheduled
  write(w.dir .. "/good.lua", "return 42")
  w:until_(at("2026-07-01T02:05"))
  local function last(n)
    local ev = w.fired[#w.fired - (n or 0)]
    return ev and (ev.workflow .. os.date("!@%H:%M", math.floor(ev.at)))
  end
  t.eq(last(), "good@02:00", "still fired at 02:00")
  t.eq(w:grep("good.lua: good.lua did not return a workflow.*its last good version stays scheduled"), 1,
    "the broken version reported")
  list = s:workflows()
  t.like(list[1].error or "", "did not return a workflow", "and shown with the workflow")
  -- fixed with another schedule: its intervals start after the last one run (02:00)
  write(w.dir .. "/good.lua", HOURLY:format("good", "50 * * * *", "false"))
  w:until_(at("2026-07-01T03:55"))
  t.eq({ last(1), last() }, { "other@03:30", "good@03:50" },
    "fixed: the new schedule (its [01:50, 02:50) overlaps what ran: the first is [02:50, 03:50))")
  t.eq(w.fired[#w.fired].logical_date, at("2026-07-01T02:50"), "logical date 02:50")
  os.remove(w.dir .. "/good.lua")
  local n = #w.fired
  w:until_(at("2026-07-01T05:00"))
  local later = {}
  for i = n + 1, #w.fired do later[#later + 1] = w.fired[i].workflow end
  t.eq(later, { "other" }, "removed: no longer fired, the others go on")
  t.eq(w:grep("good.lua was removed"), 1, "said")
  -- the file refused for defining "good" a second time is served now
  w:until_(at("2026-07-01T05:10"))
  t.eq(last(), "good@05:05", "the other file defining the name is served once the first is gone")
  w:stop()
end)

t.test("a date that already has a run (a backfill's) is not fired again", function()
  local w = world({ ["h.lua"] = HOURLY:format("h", "0 * * * *", "false") }, { t0 = at("2026-07-01T00:30") })
  local src = HOURLY:format("h", "0 * * * *", "false")
  assert(w.store:submit { workflow = "h", source = src, kind = "backfill", run_id = "h@backfilled",
    logical_date = at("2026-07-01T01:00"), interval_start = at("2026-07-01T01:00"),
    interval_end = at("2026-07-01T02:00"), tasks = { "a" } })
  local s = w:scheduler()
  w:until_(at("2026-07-01T03:30"))
  t.eq(hm(w.fired), { "00:00@01:00", "02:00@03:00" }, "01:00 was the backfill's: not fired")
  t.eq(w.store:dated_runs("h", at("2026-07-01T01:00"), at("2026-07-01T01:00"))[1].id, "h@backfilled",
    "its run is the backfill's")
  t.eq(s:stats().fired, 2, "two fired")
  w:stop()
end)

t.test("three schedulers on one store, stopped and restarted at random for a week: each tick once", function()
  local seed = tonumber(os.getenv("FLOWRUN_TEST_SEED") or "") or os.time()
  math.randomseed(seed)
  t.diag("seed " .. seed .. " (FLOWRUN_TEST_SEED)")
  local files = {
    ["a.lua"] = [[
local flow = require "flow"
local wf = flow.workflow { name = "a", schedule = "0 * * * *", timezone = "Europe/Paris",
  start_date = "2026-03-25", catchup = true, max_active_runs = 1000 }
wf:task("x", function() end)
return wf
]],
    ["b.lua"] = [[
local flow = require "flow"
local wf = flow.workflow { name = "b", schedule = "30 2 * * *", timezone = "Europe/Paris",
  start_date = "2026-03-25", catchup = true, max_active_runs = 1000 }
wf:task("x", function() end)
return wf
]],
    ["c.lua"] = [[
local flow = require "flow"
local wf = flow.workflow { name = "c", schedule = "90m", start_date = "2026-03-25T00:00Z",
  catchup = true, max_active_runs = 1000 }
wf:task("x", function() end)
return wf
]],
  }
  local t0 = at("2026-03-25T00:00", PARIS)
  local w = world(files, { t0 = t0, worker = false })
  local live = {}
  for i = 1, 3 do live[i] = w:scheduler("s" .. i) end
  local stop_at = t0 + 7 * 86400
  local kills = 0
  while w.clock() < stop_at do
    flow.sleep(math.min(math.random(600, 6 * 3600), stop_at - w.clock()))
    local i = math.random(1, 3)
    if live[i] then
      live[i]:stop()
      live[i] = nil
      kills = kills + 1
    else
      live[i] = w:scheduler("s" .. i)
    end
  end
  for i = 1, 3 do if not live[i] then live[i] = w:scheduler("s" .. i) end end
  w:until_(stop_at + 1)
  w:stop()
  t.ok(kills >= 5, kills .. " schedulers stopped on the way")
  local want = 0
  local expect = {}
  local loader = require "flowrun.schedule.workflows"
  for name in pairs { a = 1, b = 1, c = 1 } do
    local e = assert(loader.load(w.dir .. "/" .. name .. ".lua"))
    local ivs = e.wf.timetable:between(t0, stop_at)
    expect[name] = #ivs
    want = want + #ivs
  end
  t.eq(expect.b, 6, "b: 6 ticks have ended in the week (the 29th's 02:30 does not exist: 03:30)")
  t.eq(expect.a, 7 * 24, "a: hourly: 168 (a week of real hours, across the change)")
  local per, dup = {}, 0
  for _, ev in ipairs(w.fired) do
    if per[ev.run_id] then dup = dup + 1 end
    per[ev.run_id] = (per[ev.run_id] or 0) + 1
  end
  t.eq(dup, 0, "no tick fired twice")
  t.eq(#w.fired, want, want .. " ticks, each fired once")
  local by = {}
  for _, ev in ipairs(w.fired) do by[ev.by] = (by[ev.by] or 0) + 1 end
  t.ok((by.s1 or 0) > 0 and (by.s2 or 0) > 0 and (by.s3 or 0) > 0, "by all three: " .. t.show(by))
  local queued = 0
  for _ in pairs(sys.readdir(w.root .. "/state/queue") or {}) do queued = queued + 1 end
  t.eq(queued, want, "the store holds exactly those runs")
end)

flow.exec { "rm", "-rf", base }
t.done()
