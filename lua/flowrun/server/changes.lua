-- flowrun.server.changes — what the two read seams (flowrun.server.data over the file store,
-- flowrun.server.data_store over PostgreSQL) keep alike: a version bumped by every change of a
-- run, the recent changes (so that a stream asks "what changed since version v"), releasing a
-- run someone followed, and a run's summary. A seam has the fields version, changes, any_sig, closed and watches.
local flow = require "flow"

local M = {}

M.CHANGES = 512 -- recent changes kept for wait_any

-- record(seam, id): run id changed (nil: something did, look at everything).
function M.record(self, id)
  self.version = self.version + 1
  local c = self.changes
  c[#c + 1] = { v = self.version, id = id }
  if #c > M.CHANGES then table.remove(c, 1) end
  self.any_sig:fire()
end

-- wait_any(seen, timeout) -> the current version and the ids of runs changed since `seen`
-- (nil: too many to list, or a change of everything), waiting up to timeout for a change.
function M.wait_any(self, seen, timeout)
  local deadline = flow.now() + timeout
  while self.version == seen do
    local left = deadline - flow.now()
    if left <= 0 or self.closed then return self.version, {} end
    self.any_sig:wait(left)
  end
  local ids, set = {}, {}
  local c = self.changes
  if #c > 0 and c[1].v > seen + 1 then return self.version, nil end
  for i = #c, 1, -1 do
    if c[i].v <= seen then break end
    local id = c[i].id
    if id == nil then return self.version, nil end
    if not set[id] then set[id] = true; ids[#ids + 1] = id end
  end
  return self.version, ids
end

-- unwatch_run(w): one follower fewer; the last one gone, the watch and its signals are closed.
function M.unwatch_run(self, w)
  w.n = w.n - 1
  if w.n <= 0 and self.watches[w.id] == w then
    self.watches[w.id] = nil
    w.sig.state:close()
    w.sig.log:close()
  end
end

-- fill_summary(e, run) -> e with the summary fields the API shows, from a replayed run: its
-- state and times, task counts, and the per-task states of the grid (task_states, in
-- run.task_order).
function M.fill_summary(e, run)
  local states, ok, failed = {}, 0, 0
  for i, name in ipairs(run.task_order) do
    local s = run.tasks[name].state
    states[i] = s
    if s == "success" then ok = ok + 1 elseif s == "failed" then failed = failed + 1 end
  end
  e.workflow, e.state, e.started, e.finished = run.workflow, run.state, run.started, run.finished
  e.last_t, e.exit, e.reason, e.resumed = run.last_t, run.exit, run.reason, run.resumed or 0
  e.tasks_total, e.tasks_succeeded, e.tasks_failed = #run.task_order, ok, failed
  e.task_states = states
  return e
end

-- mixin(D): the seam's methods wait_any and unwatch_run.
function M.mixin(D)
  D.wait_any, D.unwatch_run = M.wait_any, M.unwatch_run
end

return M
