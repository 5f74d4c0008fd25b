-- flowrun.server.data_store — the server's reads (the interface of flowrun.server.data) answered
-- by the run store itself, for a store that several servers share (PostgreSQL): lists from its
-- indexed summaries (store:runs), one run from its journal (store:load, store:records), logs
-- (store:logs), and changes from its notifications (store:watch: a run queued, handed back,
-- cancelled, finished) plus a look at the runs someone follows (store:state's journal length),
-- since task-level changes are not notified. flowrun.server.data keeps an index in memory over
-- the file store instead (one machine, no server to ask).
local flow = require "flow"
local signal = require "flowrun.server.signal"
local changes = require "flowrun.server.changes"

local M = {}

M.MAX_LIMIT = 500
M.FOLLOW_EVERY = 0.5 -- seconds between looks at followed runs

local D = {}
D.__index = D

function M.new(store, o)
  o = o or {}
  return setmetatable({
    store = store, follow_every = o.refresh or M.FOLLOW_EVERY, watches = {}, cache = {}, ready = true,
    version = 0, changes = {}, any_sig = signal.new(), closed = false, mutations = 0,
  }, D)
end

-- The summary the API shows, with the per-task states of the grid, from a replayed run.
local function summary_of(run)
  return changes.fill_summary({ id = run.id, task_names = run.task_order }, run)
end

function D:changed(id)
  self.mutations = self.mutations + 1
  if id then self.cache[id] = nil else self.cache = {} end
  local w = id and self.watches[id]
  if w then
    w.state = w.state + 1
    w.sig.state:fire()
  end
  changes.record(self, id)
end

-- run(id) -> the replayed run and its records, or nil and a message.
function D:run(id)
  if type(id) ~= "string" or id == "" then return nil, "no run " .. tostring(id) end
  local run, err = self.store:load(id)
  if not run then return nil, err end
  return run, self.store:records(id)
end

-- summary(id) -> the run's summary with its task states (kept until the run changes).
function D:summary(id)
  local e = self.cache[id]
  if e then return e end
  local run = self.store:load(id)
  if not run then return nil end
  e = summary_of(run)
  self.cache[id] = e
  return e
end

function D:touch(id, what)
  if what == "log" then
    local w = self.watches[id]
    if w then w.log = w.log + 1; w.sig.log:fire() end
    return
  end
  self:changed(id)
end

-- runs(filter) -> summaries (newest first), the cursor of the next page; or nil and a message.
function D:runs(f)
  f = f or {}
  local limit = f.limit or 50
  if math.type(limit) ~= "integer" or limit < 1 or limit > M.MAX_LIMIT then
    return nil, "limit must be an integer from 1 to " .. M.MAX_LIMIT
  end
  local states
  if f.state then
    states = {}
    for s in pairs(f.state) do states[#states + 1] = s end
  end
  local ok, list, cursor = pcall(self.store.runs, self.store, { workflow = f.workflow,
    state = states, since = f.since, before = f.before, order = "desc", limit = limit,
    cursor = f.cursor })
  if not ok then return nil, tostring(type(list) == "table" and list.message or list) end
  return list, cursor
end

-- workflow_runs(name, n) -> the n newest summaries of a workflow, with their task states.
function D:workflow_runs(name, n)
  local list = self:runs { workflow = name, limit = n } or {}
  local out = {}
  for i, s in ipairs(list) do out[i] = self:summary(s.id) or s end
  return out
end

-- counts() -> {workflow -> {state -> n}}
function D:counts()
  if self.store.counts then return self.store:counts() end
  local c, cursor = {}, nil
  repeat
    local page
    page, cursor = self.store:runs { limit = 1000, cursor = cursor }
    for _, r in ipairs(page) do
      local w = r.workflow or "?"
      c[w] = c[w] or {}
      c[w][r.state] = (c[w][r.state] or 0) + 1
    end
  until not cursor
  return c
end

function D:size()
  local n = 0
  for _, states in pairs(self:counts()) do
    for _, k in pairs(states) do n = n + k end
  end
  return n
end

-- logs(id, {after, task, attempt, limit}) -> lines after `after`, and the position to ask after
-- next time (the store's line ids).
function D:logs(id, o)
  o = o or {}
  local lines, last = self.store:logs(id, { after = o.after or 0 })
  local out, limit = {}, o.limit or 5000
  for _, l in ipairs(lines) do
    if (not o.task or l.task == o.task) and (not o.attempt or l.attempt == o.attempt) then
      if #out >= limit then break end
      l.seq = l.id
      out[#out + 1] = l
    end
  end
  return out, last or o.after or 0
end

function D:watch_run(id)
  local w = self.watches[id]
  if not w then
    local _, seq = self.store:state(id)
    local _, last = self.store:logs(id, { after = 0 })
    w = { id = id, state = 0, log = 0, n = 0, seq = seq, log_id = last or 0,
      sig = { state = signal.new(), log = signal.new() } }
    self.watches[id] = w
  end
  w.n = w.n + 1
  return w
end

changes.mixin(D)

-- A look at the runs someone follows: a journal that grew is a state change, new log lines a
-- log change.
function D:look()
  for id, w in pairs(self.watches) do
    local _, seq = self.store:state(id)
    if seq ~= w.seq then
      w.seq = seq
      self:changed(id)
    end
    local lines, last = self.store:logs(id, { after = w.log_id })
    if #lines > 0 then
      w.log_id = last or w.log_id
      w.log = w.log + 1
      w.sig.log:fire()
    end
  end
end

function D:start()
  self.watcher = self.store:watch()
  self.task = flow.spawn(function()
    local next_look = flow.now() + self.follow_every
    while not self.closed do
      local events = self.watcher:wait(math.max(0, next_look - flow.now()))
      if self.closed then break end
      for _, ev in ipairs(events or {}) do
        if ev.run then self:changed(ev.run) else self:changed(nil) end
      end
      if flow.now() >= next_look then
        local ok, err = pcall(self.look, self)
        if not ok and (flow.cancelled(err) or self.closed) then break end
        if not ok then io.stderr:write("flowrun server: reading runs: ", tostring(err), "\n") end
        next_look = flow.now() + self.follow_every
      end
    end
  end)
  return self
end

-- ensure(): nothing to build (the store answers)
function D:ensure() end

function D:close()
  self.closed = true
  self.any_sig:close()
  for _, w in pairs(self.watches) do w.sig.state:close(); w.sig.log:close() end
  if self.watcher then self.watcher:push("close") end
  if self.task then
    self.task:cancel()
    flow.shield(function() if not self.task:done() then flow.wait_any({ self.task }) end end)
  end
  if self.watcher then self.watcher:close() end
end

return M
