-- flowrun.server.runner — what the server does to runs, behind one seam: trigger a run with
-- parameters, cancel a run, retry a task of a finished run (with everything downstream of it),
-- pause and unpause a workflow's schedule. The API acts only through here.
--
--   local r = runner.new{store, data, catalogue, sim, vars_files, max_active, concurrency,
--     on_stop, metrics, log}
--   r:start()                        the server's own worker starts claiming
--   r:trigger(entry, vars, who) -> run_id | nil, status, err      err: {message, problems}
--   r:cancel(run_id, who) -> "cancelled" | "cancelling" | nil, status, message
--   r:retry(run_id, task, who, force) -> run_id | nil, status, message
--   r:paused(name) -> bool; r:set_paused(name, bool, who)
--   r:active() -> the number of runs this process is running; r:progress(run_id) -> {task ->
--   {pct, msg}} of a run running here; r:is_running(run_id)
--   r:close() -> stops the worker: its runs are handed back to the store (on_stop "handback")
--   or cancelled, their cleanup tasks run (on_stop "cancel"), and waited for
--
-- Every run goes through the store, as `flowrun submit` and `flowrun worker` do: a trigger
-- submits the run (the workflow's source and hash, its public parameters), a retry queues the
-- finished run again with the task to run again (store:requeue; the run is resumed as `flowrun
-- resume --rerun TASK`), and the server's own worker (flowrun.worker, on this loop, woken at
-- once) claims and runs them, beside any other worker or server sharing the store. Parameters
-- are resolved here exactly as the command line resolves them (wf:resolve_params: defaults <
-- the server's --vars-file < FLOWRUN_VAR_<NAME> < what the request gives, as --var), so a bad
-- value is the same message naming the parameter, and nothing is queued. Secret parameters
-- never reach the store: the values a trigger gave are kept in this process's memory and given
-- to its own worker (for the run and its retries; a run another process claims takes them from
-- that process's environment or --vars-file, as any worker does), and taught to the redactor,
-- so no page or answer shows them even when a task logs one.
local flow = require "flow"
local engine = require "flowrun.engine"
local catalogue = require "flowrun.server.catalogue"
local worker_mod = require "flowrun.worker"

local M = {}

M.CONCURRENCY = 8 -- runs the server's worker runs at once
M.PAUSE_TTL = 1 -- seconds a read of the schedules' pauses is reused

local R = {}
R.__index = R

function M.new(o)
  local self = setmetatable({
    store = o.store, data = o.data, catalogue = o.catalogue, sim = o.sim,
    vars_files = o.vars_files or {}, max_active = o.max_active, metrics = o.metrics,
    log = assert(o.log, "runner.new: log is required (the server's)"), secrets = {},
    progress_of = {}, workflow_of = {},
    closing = false, pauses = nil,
    -- a store shared with other workers gets the runs back; on a store of this machine the
    -- server may be the only one to run them, so a stopping server ends them (no cluster left)
    on_stop = o.on_stop or (o.store.kind == "postgresql" and "handback" or "cancel"),
  }, R)
  self.worker = worker_mod.new {
    store = o.store, concurrency = o.concurrency or M.CONCURRENCY, sim = o.sim,
    vars_files = self.vars_files, log = self.log, on_signal = self.on_stop,
    id = o.worker_id,
    reporter = function(id) return self:reporter(id) end,
    on_claim = function(c) self:timed(c) end,
    secrets = function(id) return self.secrets[id] end,
    on_finished = function(id) self:finished(id) end,
  }
  return self
end

function R:start()
  self.worker:start()
  return self
end

-- Every commit of a claimed run's journal timed (flowrun_store_commit_seconds).
function R:timed(c)
  local metrics, j = self.metrics, c.journal
  self.workflow_of[c.id] = c.workflow
  self.progress_of[c.id] = {}
  if not metrics or not j then return end
  local commit = j.commit
  j.commit = function(jj, ...)
    local t0 = flow.now()
    local r = table.pack(commit(jj, ...))
    metrics:observe("flowrun_store_commit_seconds", nil, flow.now() - t0)
    return table.unpack(r, 1, r.n)
  end
end

function R:finished(id)
  self.progress_of[id] = nil
  self.workflow_of[id] = nil
  self.data:touch(id)
end

-- A reporter (flowrun.cli.view's interface) for a run the server's worker runs: tells the data
-- seam (the pages following the run are woken at once) and the metrics.
function R:reporter(id)
  local data, metrics = self.data, self.metrics
  local function touch(what) data:touch(id, what) end
  local function wf() return self.workflow_of[id] or "?" end
  return {
    run_started = function() touch() end,
    task = function(_, st, ev)
      if metrics and (ev == "succeeded" or ev == "failed") and st.started and st.finished then
        metrics:observe("flowrun_task_duration_seconds", { workflow = wf(), state = st.state },
          st.finished - st.started)
      end
      if metrics and ev == "retry" then
        metrics:inc("flowrun_task_retries_total", { workflow = wf() })
      end
      touch("state")
    end,
    log = function() touch("log") end,
    progress = function(_, st, pct, msg)
      local p = self.progress_of[id]
      if p then p[st.name] = { pct = pct, msg = msg } end
      touch("state")
    end,
    run_finished = function(_, sum)
      if metrics then metrics:inc("flowrun_runs_finished_total", { workflow = wf(),
        state = sum.state }) end
      self.log(string.format("run %s of %s: %s", id, wf(), sum.state))
    end,
    close = function() end,
  }
end

local function secret_values(wf, params)
  local out = {}
  for k, v in pairs(params) do
    if wf.params[k] and wf.params[k].secret then out[k] = v end
  end
  return out
end

local function teach_redactor(secrets)
  local redact = require "aws.redact"
  for _, v in pairs(secrets) do redact.remember(tostring(v)) end
end

local function message(err)
  if type(err) == "table" then return tostring(err.message or err.code) end
  return tostring(err)
end

-- trigger(entry, vars, who) -> run_id, or nil, status, {message, problems}. vars: name ->
-- value as a string (as --var gives it; tables as JSON text).
function R:trigger(entry, vars, who)
  if self.closing then return nil, 503, { message = "the server is shutting down" } end
  local wf, src, hash = self.catalogue:fresh(entry)
  if not wf then
    return nil, 409, { message = "workflow " .. entry.name .. " cannot be loaded: " .. tostring(src) }
  end
  local params, problems = wf:resolve_params { vars = vars, vars_files = self.vars_files }
  if not params then
    return nil, 400, { message = "invalid parameters", problems = problems }
  end
  local public = engine.public_params(wf, params)
  local secret_names = engine.secret_names(wf)
  local names = {}
  for i, t in ipairs(wf.order) do names[i] = t.name end
  local secrets = secret_values(wf, params)
  teach_redactor(secrets)
  local options = self.max_active and { max_active = self.max_active } or nil
  -- the id is made here, and the run's secrets kept under it, before the run is queued: a
  -- worker may claim it before submit returns
  local id, err
  for _ = 1, 5 do
    local try = engine.new_run_id()
    if next(secrets) then self.secrets[try] = secrets end
    local sok, sid, serr = pcall(self.store.submit, self.store, {
      workflow = wf.name, source = src, hash = hash, file = entry.file, params = public,
      secret_params = #secret_names > 0 and secret_names or nil, tasks = names,
      sim = self.sim and { fail = self.sim.fail } or nil, run_id = try, kind = "submitted",
      options = options })
    if sok and sid then id = sid break end
    self.secrets[try] = nil
    err = sok and serr or sid
    if not (sok and type(serr) == "table" and serr.code == "store.exists") then break end
  end
  if not id then
    return nil, 503, { message = "the run could not be queued: " .. message(err) }
  end
  self.data:touch(id)
  self.worker:wake()
  if self.metrics then self.metrics:inc("flowrun_runs_triggered_total", { workflow = wf.name }) end
  self.log(string.format("run %s of %s triggered by %s", id, wf.name, who or "?"))
  return id
end

-- cancel(run_id, who) -> "cancelled" (it was queued: it ended now) | "cancelling" (its
-- cleanup tasks are running), or nil, status, message.
function R:cancel(id, who)
  local held = self.worker.runs[id]
  if held then
    local jr = held.claim.journal
    if jr.hooks and jr.hooks.cancel then
      self.log(string.format("run %s: cancel requested by %s", id, who or "?"))
      jr.hooks.cancel("cancelled by " .. (who or "the server"))
      return "cancelling"
    end
  end
  local ok, what, msg = pcall(self.store.request_cancel, self.store, id)
  if not ok then return nil, 503, "the store did not answer: " .. message(what) end
  if not what then
    local run = self.data:run(id)
    return nil, run and 409 or 404, msg
  end
  self.log(string.format("run %s: cancel requested by %s", id, who or "?"))
  self.data:touch(id)
  return what == "cancelled" and "cancelled" or "cancelling"
end

-- retry(run_id, task, who, force) -> run_id, or nil, status, message: the task and everything
-- downstream of it run again in the same run (flowrun resume --rerun TASK), by a worker.
function R:retry(id, task, who, force)
  if self.closing then return nil, 503, "the server is shutting down" end
  local prev, msg = self.data:run(id)
  if not prev then return nil, 404, msg end
  if self.worker.runs[id] or prev.state == "running" or prev.state == "queued" then
    return nil, 409, "run " .. id .. " is still running: cancel it or wait for it to finish"
  end
  if prev.state == "interrupted" then
    return nil, 409, "run " .. id .. " is interrupted (the process running it stopped): flowrun "
      .. "resume " .. id .. " continues it"
  end
  if type(task) ~= "string" or not prev.tasks[task] then
    return nil, 400, "run " .. id .. " has no task " .. tostring(task)
  end
  if not prev.file then return nil, 409, "run " .. id .. " has no workflow file recorded" end
  if prev.sim and not self.sim then
    return nil, 409, "run " .. id .. " was started in the simulator; this server talks to AWS"
  end
  if not prev.sim and self.sim then
    return nil, 409, "run " .. id .. " talked to AWS; this server answers AWS from the simulator"
  end
  local wf, src, hash = catalogue.load_text(prev.file)
  if not wf then return nil, 409, "the workflow of run " .. id .. " cannot be loaded: " .. tostring(src) end
  if hash ~= prev.hash and not force then
    return nil, 409, "the workflow file " .. prev.file .. " changed since run " .. id
      .. " started; retry with force to run the changed file"
  end
  if not wf.by_name[task] then
    return nil, 409, "the workflow file no longer has task " .. task
  end
  -- the parameters must still resolve (the worker resolves them again, with its secrets)
  local vars = {}
  for k, v in pairs(prev.params or {}) do if wf.params[k] then vars[k] = v end end
  for k, v in pairs(self.secrets[id] or {}) do vars[k] = v end
  local params, problems = wf:resolve_params { vars = vars, vars_files = self.vars_files,
    time = engine.recorded_dates(wf, prev) }
  if not params then
    return nil, 409, "the run's parameters no longer resolve: " .. table.concat(problems, "; ")
  end
  local options = { rerun = { task } }
  if self.max_active then options.max_active = self.max_active end
  local ok, done, rmsg = pcall(self.store.requeue, self.store, { id = id, options = options,
    source = src, hash = hash })
  if not ok then return nil, 503, "the store did not answer: " .. message(done) end
  if not done then return nil, 409, "run " .. id .. " cannot be retried: " .. tostring(rmsg) end
  self.data:touch(id)
  self.worker:wake()
  self.log(string.format("run %s of %s: %s retried by %s%s", id, wf.name, task, who or "?",
    hash ~= prev.hash and " (the changed workflow file)" or ""))
  return id
end

---- pause --------------------------------------------------------------------------------------

-- paused(name) -> whether the workflow's schedule is paused (the store's, as flowrun pause
-- sets it; read for every workflow of the catalogue at most once a second).
function R:paused(name)
  local p = self.pauses
  if not p or flow.now() - p.at > M.PAUSE_TTL or (p.map[name] == nil) then
    local names = {}
    for _, e in ipairs(self.catalogue:list()) do
      if e.name then names[#names + 1] = e.name end
    end
    local seen = false
    for _, n in ipairs(names) do if n == name then seen = true end end
    if not seen then names[#names + 1] = name end
    local ok, states = pcall(self.store.schedule_states, self.store, names, { last = false })
    if not ok then return false end
    p = { at = flow.now(), map = {} }
    for _, n in ipairs(names) do p.map[n] = states[n] and states[n].paused and true or false end
    self.pauses = p
  end
  return p.map[name] == true
end

-- set_paused(name, on, who): in the store, where every scheduler sharing it reads it.
function R:set_paused(name, on, who)
  self.store:set_paused(name, on, who)
  self.pauses = nil
  self.log(string.format("workflow %s %s by %s", name, on and "paused" or "unpaused", who or "?"))
end

---- state ----------------------------------------------------------------------------------------

function R:active() return self.worker.nrunning end

function R:progress(id) return self.progress_of[id] end

function R:is_running(id) return self.worker.runs[id] ~= nil end

-- close(): no new runs; the worker stops: its runs are handed back or cancelled (on_stop), and
-- waited for.
function R:close()
  if self.closing then return end
  self.closing = true
  flow.shield(function()
    self.worker:stop("the server is stopping", { cancel = self.on_stop == "cancel" })
    if self.worker.task then pcall(self.worker.wait, self.worker) end
  end)
end

return M
