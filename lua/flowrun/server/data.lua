-- flowrun.server.data — everything the server reads about runs, behind one seam: lists with
-- filters and pages, one run with its attempts, a run's task logs, and waiting for changes.
-- The API and the SSE streams read only through here, so moving to another store changes this
-- file alone.
--
--   local d = data.new(store, {refresh = 1, sweep = 30})
--   d:start()                          background upkeep (a task); d:close() stops it
--   d:runs{workflow, state = {..}, since, before, limit, cursor} -> summaries, next_cursor | nil, msg
--   d:run(id) -> run, records | nil, msg          (flowrun.engine.replay's run, records in order)
--   d:summary(id) -> summary | nil
--   d:workflow_runs(name, n) -> the n newest summaries of a workflow
--   d:counts() -> {workflow -> {state -> n}}
--   d:logs(id, {after, task, attempt, limit}) -> lines, last_seq   lines: {seq, t, task, attempt,
--                                                                    msg, truncated}
--   d:touch(id)                        a run changed (the runner says so at once)
--   d:watch_run(id) -> w; w.state, w.log (versions, bumped on change), w.sig.state, w.sig.log
--   (flowrun.server.signal); d:unwatch_run(w)
--   d:wait_any(seen, timeout) -> version, changed ids since seen
--   d.mutations                        a counter of the index's changes (lists cached on it)
--
-- Today, over the file store on main (store:load/runs/logs and its files): the list is an
-- index in memory, built once in the background (every journal replayed) and kept fresh by
-- the runner's touch (runs of this process, at once), by a look every `refresh` seconds at the
-- runs directory (new runs) and at the runs still going or being followed (their journal and
-- log sizes), and by a sweep of every journal's size every `sweep` seconds (a finished run
-- resumed from the command line). Listing is then a walk of a sorted array: no file is read
-- per request. PostgreSQL's store answers the same questions from indexed columns, and its
-- LISTEN/NOTIFY replaces the looks (see the README's server section).
local flow = require "flow"
local sys = require "flow.sys"
local json = require "json"
local file = require "flowrun.engine.store.file"
local replay = require "flowrun.engine.replay"
local signal = require "flowrun.server.signal"
local changes = require "flowrun.server.changes"

local M = {}

M.STATES = { queued = true, running = true, interrupted = true, success = true, failed = true,
  cancelled = true, damaged = true }
M.MAX_LIMIT = 500
-- states a run leaves without its journal's directory changing: kept in d.active
local UNSETTLED = { running = true, interrupted = true, queued = true }
M.LOG_CACHE = 16 -- runs whose log lines are kept in memory

local D = {}
D.__index = D

function M.new(store, o)
  o = o or {}
  return setmetatable({
    store = store, refresh_every = o.refresh or 1, sweep_every = o.sweep or 30,
    index = {}, order = {}, active = {}, ready = false, ready_sig = signal.new(), names = {},
    dirty = {}, watches = {}, logcache = {}, log_tick = 0,
    version = 0, changes = {}, any_sig = signal.new(), closed = false, dir_mtime = nil,
    mutations = 0, -- bumped by every change of the index: what a cached list depends on
  }, D)
end

---- one run --------------------------------------------------------------------------------------

-- run(id) -> the replayed run and its records, or nil and a message. `id` is a whole id.
function D:run(id)
  if type(id) ~= "string" or id == "" or id:find("[/%z]") or id:sub(1, 1) == "." then
    return nil, "no run " .. tostring(id)
  end
  local path = self.store:journal_path(id)
  local queued_run
  if sys.stat(self.store:queue_path(id)) then
    -- submitted and not started yet, claimed a moment ago (its journal still empty), or a
    -- finished run queued again: the store's own reading of its queue entry says which
    local run, err = self.store:load(id)
    if not run then return nil, err end
    if run.state == "queued" or not sys.stat(path) then return run, self.store:records(id) end
    queued_run = run
  elseif not sys.stat(path) then
    return nil, "no run " .. id
  end
  local recs, trunc = file.read(path)
  if not recs and queued_run then return queued_run, {} end
  if not recs then return nil, trunc end
  local run = replay.replay(recs)
  run.truncated = trunc or nil
  run.live = run.state == "running" and self.store:live(id)
  if run.state == "running" and not run.live then run.state = "interrupted" end
  return run, recs
end

-- Task names of many runs of one workflow are the same list: kept once.
function D:intern(order)
  local key = table.concat(order, "\0")
  local t = self.names[key]
  if not t then
    t = order
    self.names[key] = t
  end
  return t
end

local function fill_summary(e, run)
  changes.fill_summary(e, run)
  e.error = nil
  e.text = nil -- the API's JSON of the summary, made again when next asked for
end

-- Reads run `id` into its index entry (made when missing); returns the entry and whether it
-- is new.
function D:load_entry(id, st)
  st = st or sys.stat(self.store:journal_path(id)) or sys.stat(self.store:queue_path(id))
    and { size = -1, mtime = -1 } -- queued: any journal that appears is a change
  if not st then return nil end
  local e = self.index[id]
  local new = e == nil
  e = e or { id = id }
  local run, err = self:run(id)
  if run then
    local started = e.started
    fill_summary(e, run)
    if not new and started ~= e.started then
      -- a queued run starts later than it was submitted: its place in the order moves
      self:remove(e)
      new = true
    end
    e.task_names = self:intern(run.task_order)
  else
    e.workflow, e.state, e.error, e.started = e.workflow, "damaged", err, e.started or st.mtime
    e.text = nil
    e.task_names, e.task_states = e.task_names or {}, e.task_states or {}
    e.tasks_total, e.tasks_succeeded, e.tasks_failed, e.resumed = 0, 0, 0, 0
  end
  e.size, e.mtime = st.size, st.mtime
  if new then self:insert(e) end
  -- the runs whose journal can change without the runs directory changing: looked at each turn
  self.active[id] = UNSETTLED[e.state] and e or nil
  self.mutations = self.mutations + 1
  return e, new
end

-- remove(e): takes an entry out of the order (to be inserted again).
function D:remove(e)
  local order = self.order
  for i = #order, 1, -1 do
    if order[i] == e then table.remove(order, i) return end
  end
end

local function before(a, b)
  if a.started ~= b.started then return a.started < b.started end
  return a.id < b.id
end

-- order: every entry, oldest first. A new run is almost always the newest: appended.
function D:insert(e)
  self.index[e.id] = e
  local order = self.order
  local n = #order
  if n == 0 or before(order[n], e) then
    order[n + 1] = e
    return
  end
  local lo, hi = 1, n
  while lo <= hi do
    local mid = (lo + hi) // 2
    if before(order[mid], e) then lo = mid + 1 else hi = mid - 1 end
  end
  table.insert(order, lo, e)
end

function D:changed(id) changes.record(self, id) end

-- touch(id): run `id` changed (its journal or its log). Cheap: the reading happens when someone
-- looks, after the writer's commit (the engine tells its reporter before it commits).
function D:touch(id, what)
  self.dirty[id] = true
  local w = self.watches[id]
  if w then
    if what ~= "log" then w.state = w.state + 1; w.sig.state:fire() end
    if what ~= "state" then w.log = w.log + 1; w.sig.log:fire() end
  end
  if what ~= "log" then self:changed(id) end
end

-- Brings dirty entries up to date.
function D:sync()
  if not next(self.dirty) then return end
  local dirty = self.dirty
  self.dirty = {}
  for id in pairs(dirty) do self:load_entry(id) end
end

function D:summary(id)
  self:sync()
  local e = self.index[id]
  if not e and self.ready then e = self:load_entry(id) end
  return e
end

---- the index -------------------------------------------------------------------------------------

local function journal_ids(names)
  local ids = {}
  for _, n in ipairs(names or {}) do
    local id = n:match("^(.+)%.jsonl$")
    if id and not id:match("%.log$") and id:sub(1, 1) ~= "." then ids[#ids + 1] = id end
  end
  return ids
end

-- Builds the index: every journal replayed, giving other tasks a turn every few runs.
function D:build()
  local dir = self.store.runs_dir
  local st = sys.stat(dir)
  self.dir_mtime = st and st.mtime
  for i, id in ipairs(journal_ids(sys.readdir(dir))) do
    if not self.index[id] then self:load_entry(id) end
    if i % 64 == 0 then flow.sleep(0) end
  end
  self.ready = true
  self.ready_sig:close()
end

-- ensure(): waits until the index is built.
function D:ensure()
  while not self.ready do
    if self.closed then error("data: closed", 2) end
    if not self.building then self.building = flow.spawn(function() self:build() end) end
    self.ready_sig:wait(1)
  end
  self:sync()
end

-- One look: new journals (when the directory changed), and the journals and logs of runs still
-- going or followed; with sweep, every journal (sliced).
function D:look(sweep)
  local dir = self.store.runs_dir
  local st = sys.stat(dir)
  local mt = st and st.mtime
  if mt ~= self.dir_mtime then
    self.dir_mtime = mt
    for _, id in ipairs(journal_ids(sys.readdir(dir))) do
      if not self.index[id] then
        local e = self:load_entry(id)
        if e then self:changed(id) end
      end
    end
  end
  -- runs submitted by other processes (flowrun submit, a scheduler) and not started yet
  local qst = sys.stat(self.store.queue_dir)
  local qmt = qst and qst.mtime
  if qmt ~= self.queue_mtime then
    self.queue_mtime = qmt
    for _, n in ipairs(sys.readdir(self.store.queue_dir) or {}) do
      local id = n:match("^(.+)%.json$")
      local e = id and self.index[id]
      -- new, or a finished run queued again
      if id and id:sub(1, 1) ~= "." and (not e or (e.state ~= "queued" and e.state ~= "running")) then
        if self:load_entry(id) then self:changed(id) end
      end
    end
  end
  local function check(e)
    local js = sys.stat(self.store:journal_path(e.id))
    if js and (js.size ~= e.size or js.mtime ~= e.mtime) then
      self:load_entry(e.id, js)
      local w = self.watches[e.id]
      if w then w.state = w.state + 1; w.sig.state:fire() end
      self:changed(e.id)
    end
  end
  for id, w in pairs(self.watches) do
    local e = self.index[id]
    if e then check(e) end
    local ls = sys.stat(self.store:log_path(id))
    local lsize = ls and ls.size or 0
    if lsize ~= w.log_size then
      w.log_size = lsize
      w.log = w.log + 1
      w.sig.log:fire()
    end
  end
  if sweep then
    local order = self.order
    for i = #order, 1, -1 do
      local e = order[i]
      if e then check(e) end
      if i % 256 == 0 then flow.sleep(0) end
    end
  else
    -- the unsettled runs only (a few), not the whole index: what ended is looked at by the sweep
    for _, e in pairs(self.active) do
      if e.state == "running" and not self.dirty[e.id] and not self.store:live(e.id) then
        -- its process is gone (its lock with it): interrupted
        self:load_entry(e.id)
        self:changed(e.id)
      else
        check(e)
      end
    end
  end
end

-- start(): builds the index and keeps it fresh, in a task of its own.
function D:start()
  self.task = flow.spawn(function()
    self:ensure()
    local next_sweep = flow.now() + self.sweep_every
    local tick = signal.new()
    self.tick = tick
    while not self.closed do
      tick:wait(self.refresh_every)
      if self.closed then break end
      local sweep = flow.now() >= next_sweep
      if sweep then next_sweep = flow.now() + self.sweep_every end
      local ok, err = pcall(self.look, self, sweep)
      if not ok and (flow.cancelled(err) or self.closed) then break end
      if not ok then io.stderr:write("flowrun server: reading runs: ", tostring(err), "\n") end
    end
  end)
  return self
end

function D:close()
  self.closed = true
  self.ready_sig:close()
  self.any_sig:close()
  for _, w in pairs(self.watches) do w.sig.state:close(); w.sig.log:close() end
  if self.tick then self.tick:close() end
  if self.building then self.building:cancel() end
  if self.task then
    self.task:cancel()
    flow.shield(function() if not self.task:done() then flow.wait_any({ self.task }) end end)
  end
end

---- lists -----------------------------------------------------------------------------------------

local function cursor_of(e) return string.format("%.6f_%s", e.started, e.id) end

local function parse_cursor(c)
  local t, id = c:match("^(%-?[%d%.]+)_(.+)$")
  t = tonumber(t)
  if not t then return nil end
  return { started = t, id = id }
end

-- runs(filter) -> summaries (newest first), the cursor of the next page (nil at the end); or
-- nil and a message for a bad filter. filter: workflow, state (a set of names), since, before
-- (started time, epoch seconds: since <= started < before), limit (1..MAX_LIMIT, default 50),
-- cursor (from the previous page).
function D:runs(f)
  f = f or {}
  self:ensure()
  local limit = f.limit or 50
  if math.type(limit) ~= "integer" or limit < 1 or limit > M.MAX_LIMIT then
    return nil, "limit must be an integer from 1 to " .. M.MAX_LIMIT
  end
  local from = #self.order
  local order = self.order
  -- start below the cursor or `before`, by binary search on the sorted array
  local bound
  if f.cursor then
    bound = parse_cursor(f.cursor)
    if not bound then return nil, "cursor: not one this server gave" end
  end
  if f.before and (not bound or f.before <= bound.started) then
    bound = { started = f.before, id = "" }
  end
  if bound then
    local lo, hi = 1, #order
    while lo <= hi do
      local mid = (lo + hi) // 2
      if before(order[mid], bound) then lo = mid + 1 else hi = mid - 1 end
    end
    from = lo - 1
  end
  local out = {}
  local i = from
  while i >= 1 do
    local e = order[i]
    if f.since and e.started < f.since then break end
    if (not f.workflow or e.workflow == f.workflow) and (not f.state or f.state[e.state]) then
      if #out == limit then return out, cursor_of(out[#out]) end
      out[#out + 1] = e
    end
    i = i - 1
  end
  return out, nil
end

-- workflow_runs(name, n) -> the n newest summaries of a workflow.
function D:workflow_runs(name, n)
  local out = self:runs { workflow = name, limit = n }
  return out
end

-- counts() -> {workflow -> {state -> n}}
function D:counts()
  self:ensure()
  local c = {}
  for _, e in ipairs(self.order) do
    local w = e.workflow or "?"
    c[w] = c[w] or {}
    c[w][e.state] = (c[w][e.state] or 0) + 1
  end
  return c
end

function D:size() return #self.order end

---- logs ------------------------------------------------------------------------------------------

-- The log lines of a run, read incrementally from its file and kept for the runs looked at
-- most recently.
function D:log_lines(id)
  local c = self.logcache[id]
  if not c then
    c = { lines = {}, offset = 0, partial = "" }
    self.logcache[id] = c
    local n = 0
    for _ in pairs(self.logcache) do n = n + 1 end
    if n > M.LOG_CACHE then
      local oldest, ot
      for k, v in pairs(self.logcache) do
        if k ~= id and not self.watches[k] and (not ot or v.used < ot) then oldest, ot = k, v.used end
      end
      if oldest then self.logcache[oldest] = nil end
    end
  end
  self.log_tick = self.log_tick + 1
  c.used = self.log_tick
  local f = io.open(self.store:log_path(id), "rb")
  if not f then return c.lines end
  local size = f:seek("end")
  if size < c.offset then c.lines, c.offset, c.partial = {}, 0, "" end
  if size > c.offset then
    f:seek("set", c.offset)
    local text = c.partial .. f:read(size - c.offset)
    c.offset = size
    local lines = c.lines
    local pos = 1
    while true do
      local nl = text:find("\n", pos, true)
      if not nl then break end
      local ok, rec = pcall(json.decode, text:sub(pos, nl - 1))
      if ok and type(rec) == "table" and type(rec.msg) == "string" then
        rec.seq = #lines + 1
        lines[#lines + 1] = rec
      end
      pos = nl + 1
    end
    c.partial = text:sub(pos)
  end
  f:close()
  return c.lines
end

-- logs(id, {after, task, attempt, limit}) -> lines after seq `after` (of that task and attempt),
-- at most limit, and the seq to ask after next time.
function D:logs(id, o)
  o = o or {}
  local lines = self:log_lines(id)
  local out, last = {}, o.after or 0
  local limit = o.limit or 5000
  for i = (o.after or 0) + 1, #lines do
    local l = lines[i]
    if (not o.task or l.task == o.task) and (not o.attempt or l.attempt == o.attempt) then
      if #out >= limit then break end
      out[#out + 1] = l
    end
    last = i
  end
  return out, last
end

---- waiting for changes ---------------------------------------------------------------------------

-- watch_run(id) -> w: versions of run id's state (w.state) and log (w.log), bumped on change,
-- with a signal for each (w.sig.state, w.sig.log). Release with unwatch_run(w).
function D:watch_run(id)
  local w = self.watches[id]
  if not w then
    local ls = sys.stat(self.store:log_path(id))
    w = { id = id, state = 0, log = 0, n = 0, log_size = ls and ls.size or 0,
      sig = { state = signal.new(), log = signal.new() } }
    self.watches[id] = w
  end
  w.n = w.n + 1
  return w
end

changes.mixin(D) -- unwatch_run(w); wait_any(seen, timeout) -> version, ids changed since seen

return M
