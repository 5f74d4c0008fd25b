-- flowrun.schedule.scheduler — pipelines that run on their own: a scheduler watches a workflows
-- directory and fires each scheduled, unpaused workflow's due intervals into a run store, where
-- workers run them. An object on this process's loop, so that `flowrun scheduler`, `flowrun
-- worker --schedule` and the server host the same thing:
--
--   local scheduler = require "flowrun.schedule.scheduler"
--   local s = scheduler.new { store = store, dir = "workflows" }
--   s:start()        -- loads the directory and fires what is due, until stopped; returns at once
--   s:stop()         -- stops (a decision in flight is finished or rolled back, never half done)
--   s:wait()         -- until it has stopped
--   s:workflows()    -- what it serves: {name, path, scheduled, schedule, timezone, paused,
--                    --   next_due, waiting, error} per workflow, and {path, error} per file
--                    --   that never loaded
--   s:stats()        -- {fired, skipped, cancelled, decisions, loads, load_errors,
--                    --   lateness = {p50, p99, max, n}}: seconds from due to fired, of the
--                    --   ticks that became due while it ran (not a catch-up's)
--
-- Options of new: store (required), dir (default "workflows"), vars_files (parameters for the
-- runs, as `flowrun submit --vars-file`; secret ones are left to the workers), sim ({fail}: runs
-- for simulator workers), log (fn(line), default stderr with a UTC time), on_fire
-- (fn{workflow, run_id, logical_date, due, at, live}), clock and speed (the wall clock in epoch
-- seconds, default flow.time, and how many of its seconds pass per second of the loop: tests
-- and benchmarks run a week in a minute; virtual time works too).
--
-- Semantics (Airflow's, as flow.schedule.interval computes them): a run covers the data
-- interval [start, end) between two fire times, is due at end, and its logical date is start.
-- For each workflow, every decision is made from the run store, in one transaction under the
-- workflow's lock (store:fire): the latest interval handled is the later of the latest
-- scheduled run's and what was handled without a run (ticks skipped; dates a backfill had), so
-- a scheduler that restarts, or another one on another machine, knows what was fired without
-- keeping anything itself. Then:
--   * catchup = false: only the latest complete interval, when it is newer than that; true:
--     every interval that ended since, oldest first (from start_date when none ran).
--   * max_active_runs (default 1): at most that many of the workflow's runs queued or running
--     (any kind); what does not fit waits, oldest first, and is fired when a run ends.
--   * overlap, for the tick that is due now while the limit is reached and no older tick
--     waits ahead of it: "skip" (default) drops it (counted, never fired later) unless catchup
--     is on (catchup keeps every tick: it waits as with "queue"), "queue" fires it once a slot
--     is free, "cancel_previous" asks the oldest active scheduled run(s) to cancel (their
--     cleanup tasks run) and fires it once they have ended.
--   * data intervals never overlap: after an edit of the schedule, the first interval fired is
--     the first of the new schedule that starts at or after the end of the last one handled.
--   * paused (flowrun pause): nothing is fired; unpaused, the rules above say what is due.
--   * a date that already has a run (a backfill's) is not fired again.
-- Run ids are workflow@logical date (UTC), and the store keeps one scheduled or backfill run per
-- (workflow, logical date), so any number of schedulers on one store fire each tick once.
--
-- Waiting: the scheduler sleeps until the next due time (no polling); the kernel wakes it when a
-- file of the directory changes (flow.watch), the store's notifications when a workflow is
-- paused or unpaused or a run it waits on ends. A file that changed is loaded once it has been
-- left alone for SETTLE seconds; a file that fails to load (or defines a name another file
-- has) is reported and its last good version stays scheduled; a file removed is unscheduled.
local flow = require "flow"
local sys = require "flow.sys"
local watch = require "flow.watch"
local engine = require "flowrun.engine"
local interval = require "flow.schedule.interval"
local workflows = require "flowrun.schedule.workflows"

local M = {}

M.RECHECK = 30       -- seconds of the loop between looks at a workflow that waits for a slot, in
                     -- case the run it waits on ends without a notification
M.SETTLE = 0.1       -- seconds a changed file is left alone before it is loaded
M.BATCH = 64         -- intervals looked at per decision (a longer catch-up goes on at once)
M.SAMPLES = 100000   -- lateness samples kept
M.PARALLEL = 4       -- decisions made at once (PostgreSQL; the pool's size by default)

local Scheduler = {}
Scheduler.__index = Scheduler

local function default_log(msg)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " ", msg, "\n")
  io.stderr:flush()
end

local function errmsg(e)
  if type(e) == "table" then return tostring(e.message or e.code) end
  return tostring(e)
end

function M.new(o)
  assert(type(o) == "table" and o.store, "scheduler.new: a store is required")
  return setmetatable({
    store = o.store, dir = o.dir or workflows.DEFAULT_DIR, clock = o.clock or flow.time,
    speed = o.speed or 1, log = o.log or default_log, vars_files = o.vars_files, sim = o.sim,
    on_fire = o.on_fire,
    entries = {},      -- path -> entry {path, name, wf, tt, source, hash, error, next_at, waiting}
    by_name = {},      -- name -> entry
    broken = {},       -- path -> message: files that never loaded
    waiting_for = {},  -- run id -> entry waiting for the slot that run holds
    cancel_asked = {}, -- run id -> true: cancelled for overlap = "cancel_previous" (asked once)
    pending = {},      -- path -> loop time after which the changed file is loaded
    counts = { fired = 0, skipped = 0, cancelled = 0, decisions = 0, loads = 0, load_errors = 0 },
    lateness = {}, n_late = 0, failures = 0,
  }, Scheduler)
end

-- start(): starts the scheduler's task. Returns at once.
function Scheduler:start()
  assert(not self.task, "scheduler: already started")
  self.fsw = watch.new()
  self.task = flow.spawn(function() return self:main() end)
  return self
end

-- stop(): the scheduler stops after the decision in flight (cancelled when it does not end
-- within a few seconds: the store rolls it back).
function Scheduler:stop()
  local h = self.task
  if not h or self.stopping then return end
  self.stopping = true
  if self.fsw then pcall(self.fsw.wake, self.fsw) end
  if h == flow.current() then return end
  if not pcall(flow.timeout, 5, h.wait, h) then
    h:cancel()
    pcall(h.wait, h)
  end
end

-- wait() -> true once stopped (raises what stopped it, when it failed).
function Scheduler:wait()
  return self.task:wait()
end

function Scheduler:main()
  local ok, err = pcall(function()
    self.notes = self.store:watch { ticks = false }
    self.listener = flow.spawn(function() return self:listen() end)
    self.started_at = self.clock()
    self:watch_dir()
    self:scan(true)
    self:initial_states()
    while not self.stopping do self:turn() end
  end)
  flow.shield(function()
    if self.listener then self.listener:cancel() pcall(self.listener.wait, self.listener) end
    if self.notes then self.notes:close() end
    if self.fsw then self.fsw:close() end
  end)
  if not ok and not flow.cancelled(err) then error(err, 0) end
  self.log(string.format("scheduler: stopped; %d runs fired, %d ticks skipped", self.counts.fired,
    self.counts.skipped))
  return true
end

---- what wakes it ---------------------------------------------------------------------------------

-- The store's notifications: a pause or unpause (look again at that workflow), a run ending (a
-- workflow waiting for its slot looks again), changes that may have been missed (every waiting
-- workflow looks again).
function Scheduler:listen()
  while true do
    local notes = self.notes:wait()
    if notes then
      local any = false
      for _, n in ipairs(notes) do
        if n.kind == "paused" or n.kind == "unpaused" then
          local e = self.by_name[n.run]
          if e and e.wf.schedule then e.next_at, any = 0, true end
        elseif n.kind == "finished" then
          if n.run then self.cancel_asked[n.run] = nil end
          local e = n.run and self.waiting_for[n.run]
          if e then
            self.waiting_for[n.run] = nil
            e.next_at, any = 0, true
          end
        elseif n.kind == "released" or n.kind == "reconnected" then
          for _, e in pairs(self.by_name) do
            if e.waiting then e.next_at, any = 0, true end
          end
        end
      end
      if any then self.fsw:wake() end
    end
  end
end

function Scheduler:watch_dir()
  local ok, err = self.fsw:add(self.dir)
  self.dir_watched = ok == true
  if not ok then
    self.log(string.format("scheduler: cannot watch %s (%s): looking at it every %ds", self.dir,
      errmsg(err), M.RECHECK))
    self.rescan_at = flow.now() + M.RECHECK
  end
end

---- the workflows directory -----------------------------------------------------------------------

-- scan(initial): every file of the directory loaded (when changed), removed files unscheduled.
function Scheduler:scan(initial)
  self.rescan_at = nil
  local files, err = workflows.files(self.dir)
  if not files then
    if not self.dir_missing then
      self.log(string.format("scheduler: cannot read the workflows directory %s: %s", self.dir, err))
    end
    self.dir_missing = true
    self.dir_watched = false -- a directory made again is watched again
    self.rescan_at = flow.now() + M.RECHECK
    files = {}
  else
    if self.dir_missing then self.log("scheduler: the workflows directory " .. self.dir .. " is there") end
    self.dir_missing = false
    if not self.dir_watched then self:watch_dir() end
  end
  local present = {}
  for _, p in ipairs(files) do
    present[p] = true
    self:reload(p, initial)
  end
  for p in pairs(self.entries) do if not present[p] then self:reload(p, initial) end end
  for p in pairs(self.broken) do if not present[p] then self.broken[p] = nil end end
  if initial then
    local n, ns = 0, 0
    for _, e in pairs(self.by_name) do
      n = n + 1
      if e.wf.schedule then ns = ns + 1 end
    end
    self.log(string.format("scheduler: %d workflows in %s, %d scheduled, %d files that did not load;"
      .. " firing into %s", n, self.dir, ns, self:count_broken(), self.store:describe()))
  end
end

function Scheduler:count_broken()
  local n = 0
  for _ in pairs(self.broken) do n = n + 1 end
  for _, e in pairs(self.entries) do if e.error then n = n + 1 end end
  return n
end

local function describe(e)
  local sc = e.wf.schedule
  if not sc then return "not scheduled" end
  return string.format("%s in %s, catchup %s, max_active_runs %d, overlap %s", sc.expr,
    sc.timezone, tostring(sc.catchup), sc.max_active_runs, sc.overlap)
end

function Scheduler:unschedule(e)
  self.entries[e.path] = nil
  if self.by_name[e.name] == e then self.by_name[e.name] = nil end
  for id, w in pairs(self.waiting_for) do if w == e then self.waiting_for[id] = nil end end
end

-- reload(path, initial): the file as it is now: loaded when its text changed, unscheduled when
-- it is gone; a version that does not load is reported and the last good one kept.
function Scheduler:reload(path, initial)
  local old = self.entries[path]
  local st = sys.stat(path)
  local text = st and st.type == "file" and workflows.read(path)
  if not text then
    self.broken[path] = nil
    if old then
      self:unschedule(old)
      self.log(string.format("scheduler: %s was removed: workflow %s is no longer scheduled", path,
        old.name))
      -- a file refused for defining the same name may be served now
      for p, b in pairs(self.broken) do
        b.text = nil
        self.pending[p] = flow.now()
      end
      self.fsw:wake()
    end
    return
  end
  if old and text == old.source then
    if old.error then
      old.error = nil
      self.log(string.format("scheduler: %s is back to the version scheduled", path))
    end
    return
  end
  if not old and self.broken[path] and self.broken[path].text == text then return end
  self.counts.loads = self.counts.loads + 1
  local e, err = workflows.load(path, text)
  if e then
    local other = self.by_name[e.name]
    if other and other.path ~= path then
      e, err = nil, string.format("workflow %s is already defined by %s", e.name, other.path)
    end
  end
  if e and e.wf.schedule then
    -- a run of this version must be able to start: its parameters resolve (secret ones are
    -- the workers')
    local _, _, problems = workflows.params(e.wf, engine.dates(e.wf, { at = self.clock() }),
      { vars_files = self.vars_files })
    if problems then e, err = nil, "its runs would not start: " .. table.concat(problems, "; ") end
  end
  if not e then
    self.counts.load_errors = self.counts.load_errors + 1
    if old then
      old.error = err
      self.log(string.format("scheduler: %s: %s (its last good version stays scheduled)", path, err))
    else
      self.broken[path] = { text = text, error = err }
      self.log(string.format("scheduler: %s: %s (not scheduled)", path, err))
    end
    return
  end
  self.broken[path] = nil
  if old then self:unschedule(old) end
  self.entries[path], self.by_name[e.name] = e, e
  if e.wf.schedule then
    e.tt = e.wf.timetable
    e.next_at = not initial and 0 or nil -- decided now (the initial scan asks for all at once)
  end
  if not initial then
    self.log(string.format("scheduler: %s %s: workflow %s, %s", old and "reloaded" or "loaded", path,
      e.name, describe(e)))
  end
end

-- When each scheduled workflow is next due, from the store's state of all of them at once.
function Scheduler:initial_states()
  local names = {}
  for name, e in pairs(self.by_name) do
    if e.wf.schedule then names[#names + 1] = name end
  end
  table.sort(names)
  local states
  local delay = 0.2
  while true do
    local ok, res = pcall(self.store.schedule_states, self.store, names, { last = false })
    if ok then states = res break end
    if flow.cancelled(res) then error(res, 0) end
    if not (type(res) == "table" and res.retryable) then error(res, 0) end
    self.log(string.format("scheduler: the run store: %s (trying again in %.1fs)", errmsg(res), delay))
    flow.sleep(delay)
    delay = math.min(delay * 2, 5)
  end
  local now = self.clock()
  for _, name in ipairs(names) do
    local e, st = self.by_name[name], states[name] or {}
    if st.paused then
      e.paused, e.next_at = true, nil
    else
      local sc = e.wf.schedule
      local due = M.due(e.tt, now, st.handled_end, sc.catchup, 1)
      e.next_at = #due > 0 and now or self:next_due(e, now)
    end
  end
end

---- deciding ----------------------------------------------------------------------------------------

-- due(tt, now, handled_end, catchup [, max]) -> the intervals due now, oldest first, and true
-- when max held some back: the timetable's (flow.schedule.interval's due), but none that
-- starts before the end of the latest interval handled. Data intervals never overlap, as in
-- Airflow: after a schedule is edited, the first interval of the new schedule is the first
-- that starts at or after the end of the last one run.
function M.due(tt, now, handled_end, catchup, max)
  local list, more = tt:due(now, handled_end, catchup, max)
  if handled_end and #list > 0 and list[1].start < handled_end then
    local out = {}
    for _, iv in ipairs(list) do if iv.start >= handled_end then out[#out + 1] = iv end end
    if #out == 0 and more then
      -- all of this batch straddled the edit: the next ones start after it
      return M.due(tt, now, list[#list]["end"], catchup, max)
    end
    return out, more
  end
  return list, more
end

-- The end of the next interval to become due after now, or nil (past end_date).
function Scheduler:next_due(e, now)
  local up = e.tt:upcoming(now)
  return up and up["end"] or nil
end

-- decide(e, view, now, info) -> the plan for store:fire (see the header). info collects what
-- the scheduler learns: paused, waiting, more, fired {{iv, live}}, skipped, handled_end, active.
function Scheduler:decide(e, view, now, info)
  info.paused, info.active = view.paused, view.active
  if view.paused then return nil end
  local sc, tt = e.wf.schedule, e.tt
  local free = sc.max_active_runs - #view.active
  local cands, more = M.due(tt, now, view.handled_end, sc.catchup, M.BATCH)
  info.more = more
  if #cands == 0 then return nil end
  local taken = {}
  for _, r in ipairs(view.dated(cands[1].start, cands[#cands].start)) do taken[r.logical_date] = r end
  local latest = tt:latest(now)
  local plan = { submit = {}, cancel = {} }
  local handled_end, skipped, last_skipped = nil, 0, nil
  info.fired = {}
  for i, iv in ipairs(cands) do
    local live = latest ~= nil and iv["end"] == latest["end"]
    if taken[iv.start] then
      handled_end = iv["end"] -- a backfill made this date's run
    elseif free > 0 then
      local o = workflows.submission(e, iv, { vars_files = self.vars_files, sim = self.sim })
      plan.submit[#plan.submit + 1] = o
      info.fired[o.run_id] = { iv = iv, live = live }
      free = free - 1
    else
      -- the limit is reached: the tick due now meets the overlap policy; a catch-up waits,
      -- and with catchup no tick is dropped
      if i == 1 and live and sc.overlap == "skip" and not sc.catchup then
        skipped, last_skipped, handled_end = 1, iv.start, iv["end"]
        info.skipped = iv
      else
        if i == 1 and live and sc.overlap == "cancel_previous" then
          local need = #view.active - sc.max_active_runs + 1
          for _, r in ipairs(view.active) do
            if need <= 0 then break end
            if r.kind == "scheduled" then
              if not r.cancel_requested and not self.cancel_asked[r.id] then
                plan.cancel[#plan.cancel + 1] = r.id
              end
              need = need - 1
            end
          end
        end
        info.waiting = true
        info.more = false
      end
      break
    end
  end
  if handled_end then
    plan.handled = { handled_end = handled_end, skipped = skipped, last_skipped = last_skipped }
  end
  return plan
end

-- fire(e, now): one decision for one workflow, and what it leads to.
function Scheduler:fire(e, now)
  local info = {}
  self.counts.decisions = self.counts.decisions + 1
  local ok, res = pcall(self.store.fire, self.store, e.name, function(view)
    info = {}
    return self:decide(e, view, now, info)
  end)
  if not ok then
    if flow.cancelled(res) then error(res, 0) end
    self.failures = self.failures + 1
    if self.failures == 1 or self.failures % 100 == 0 then
      self.log(string.format("scheduler: cannot decide for %s: %s (trying again)", e.name, errmsg(res)))
    end
    e.next_at = now + math.min(5, 0.2 * 2 ^ math.min(self.failures, 5)) * self.speed
    return
  end
  if self.failures > 0 then self.log("scheduler: the run store answers again") end
  self.failures = 0
  local at = self.clock()
  for _, id in ipairs(res.submitted) do
    local f = info.fired and info.fired[id]
    if f then
      self.counts.fired = self.counts.fired + 1
      local late = at - f.iv["end"]
      -- lateness is measured on ticks that became due while this scheduler ran
      if f.live and f.iv["end"] >= self.started_at then self:sample(late) end
      self.log(string.format("scheduler: fired %s (logical date %s, due %s, %.3fs late)", id,
        interval.iso(f.iv.start, e.tt.zone), interval.iso(f.iv["end"], e.tt.zone), late))
      if self.on_fire then
        pcall(self.on_fire, { workflow = e.name, run_id = id, logical_date = f.iv.start,
          due = f.iv["end"], at = at, live = f.live })
      end
    end
  end
  if info.skipped then
    self.counts.skipped = self.counts.skipped + 1
    self.log(string.format("scheduler: skipped %s's tick of %s: %d of its runs still active "
      .. "(max_active_runs %d, overlap skip)", e.name, interval.iso(info.skipped.start, e.tt.zone),
      #info.active, e.wf.schedule.max_active_runs))
  end
  for _, id in ipairs(res.cancelled) do
    self.cancel_asked[id] = true
    self.counts.cancelled = self.counts.cancelled + 1
    self.log(string.format("scheduler: cancelling %s: the next run of %s is due (overlap "
      .. "cancel_previous)", id, e.name))
  end
  e.conflicts = #res.existed > 0 and (e.conflicts or 0) + 1 or 0
  e.waiting = info.waiting or false
  e.paused = info.paused or false
  if e.waiting then
    for _, r in ipairs(info.active or {}) do self.waiting_for[r.id] = e end
  end
  if info.paused then
    e.next_at = nil
  elseif info.more or (#res.existed > 0 and (e.conflicts or 0) < 3) then
    -- more to look at, or another scheduler was there first: at once (a few times at most,
    -- should an id be taken by a run that is not that date's)
    e.next_at = now
  elseif info.waiting then
    e.next_at = now + M.RECHECK * self.speed
  else
    e.next_at = self:next_due(e, now)
  end
end

-- fire_all(list, now): the decisions of the workflows due now, oldest due first; several at a
-- time on a store that takes them at once (PostgreSQL: one transaction per connection of its
-- pool, so that a burst at the top of the minute is not one commit after another).
function Scheduler:fire_all(list, now)
  local par = self.store.kind == "postgresql" and math.min(#list, M.PARALLEL) or 1
  if par <= 1 then
    for _, e in ipairs(list) do
      if self.stopping then return end
      self:fire(e, now)
    end
    return
  end
  local next_i = 0
  local function take()
    while not self.stopping do
      next_i = next_i + 1
      local e = list[next_i]
      if not e then return end
      self:fire(e, now)
    end
  end
  local hs = {}
  for i = 1, par do hs[i] = flow.spawn(take) end
  local ok, err = pcall(flow.all, hs)
  if not ok then error(err, 0) end
end

function Scheduler:sample(late)
  self.n_late = self.n_late + 1
  local i = (self.n_late - 1) % M.SAMPLES + 1
  self.lateness[i] = late
end

---- the loop ----------------------------------------------------------------------------------------

function Scheduler:turn()
  local lt = flow.now()
  local settled = {}
  for path, at in pairs(self.pending) do
    if at <= lt then settled[#settled + 1] = path end
  end
  table.sort(settled)
  for _, path in ipairs(settled) do
    self.pending[path] = nil
    self:reload(path, false)
  end
  if self.rescan_at and lt >= self.rescan_at then self:scan(false) end
  local now = self.clock()
  local due = {}
  for _, e in pairs(self.by_name) do
    if e.next_at and e.next_at <= now then due[#due + 1] = e end
  end
  table.sort(due, function(a, b)
    if a.next_at ~= b.next_at then return a.next_at < b.next_at end
    return a.name < b.name
  end)
  self:fire_all(due, now)
  if self.stopping then return end
  -- sleep until the next due time, a file settles or the directory is looked at again
  local next_at
  for _, e in pairs(self.by_name) do
    if e.next_at and (not next_at or e.next_at < next_at) then next_at = e.next_at end
  end
  local wait = math.huge
  if next_at then wait = math.max(0, (next_at - self.clock()) / self.speed) end
  lt = flow.now()
  for _, at in pairs(self.pending) do wait = math.min(wait, math.max(0, at - lt)) end
  if self.rescan_at then wait = math.min(wait, math.max(0, self.rescan_at - lt)) end
  local changes = self.fsw:wait(wait < math.huge and wait or nil)
  lt = flow.now()
  for _, c in ipairs(changes) do
    if c.name and c.name:match("%.lua$") then
      self.pending[self.dir .. "/" .. c.name] = lt + M.SETTLE
    elseif not c.name then
      self.rescan_at = lt + M.SETTLE
    end
  end
  if changes.overflow then self.rescan_at = lt + M.SETTLE end
end

---- what it serves ----------------------------------------------------------------------------------

-- workflows() -> list of {name, path, scheduled, schedule, timezone, catchup, max_active_runs,
-- overlap, paused, next_due (epoch), waiting, error (a newer version that did not load)} by
-- name, and the files that never loaded {path, error}.
function Scheduler:workflows()
  local out, broken = {}, {}
  for name, e in pairs(self.by_name) do
    local sc = e.wf.schedule
    out[#out + 1] = { name = name, path = e.path, scheduled = sc ~= nil,
      schedule = sc and sc.expr, timezone = sc and sc.timezone, catchup = sc and sc.catchup,
      max_active_runs = sc and sc.max_active_runs, overlap = sc and sc.overlap,
      paused = e.paused or false, next_due = e.next_at ~= 0 and e.next_at or nil,
      waiting = e.waiting or false, error = e.error }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  for path, b in pairs(self.broken) do broken[#broken + 1] = { path = path, error = b.error } end
  table.sort(broken, function(a, b) return a.path < b.path end)
  return out, broken
end

local function quantile(sorted, q)
  if #sorted == 0 then return nil end
  local i = math.max(1, math.min(#sorted, math.ceil(q * #sorted)))
  return sorted[i]
end

function Scheduler:stats()
  local s = {}
  for k, v in pairs(self.counts) do s[k] = v end
  local sorted = {}
  for i, v in ipairs(self.lateness) do sorted[i] = v end
  table.sort(sorted)
  s.lateness = { n = self.n_late, p50 = quantile(sorted, 0.5), p99 = quantile(sorted, 0.99),
    max = sorted[#sorted] }
  return s
end

-- wake(): look at everything again now (every scheduled workflow decides).
function Scheduler:wake()
  for _, e in pairs(self.by_name) do if e.wf.schedule and not e.paused then e.next_at = 0 end end
  if self.fsw then self.fsw:wake() end
end

return M
