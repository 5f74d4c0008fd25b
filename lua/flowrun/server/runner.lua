-- flowrun.server.runner — what the server does to runs, behind one seam: trigger a run with
-- parameters, cancel a run, retry a task of a finished run (with everything downstream of it),
-- pause and unpause a workflow's schedule. The API acts only through here, so handing runs
-- to workers elsewhere (a store's submit and request_cancel) changes this file alone.
--
--   local r = runner.new{store, data, catalogue, sim, vars_files, max_active, metrics, log}
--   r:trigger(entry, vars, who) -> run_id | nil, status, err      err: {message, problems}
--   r:cancel(run_id, who) -> "cancelling" | nil, status, message
--   r:retry(run_id, task, who, force) -> run_id | nil, status, message
--   r:paused(name) -> bool; r:set_paused(name, bool, who)
--   r:active() -> the number of runs this process is running; r:progress(run_id) -> {task ->
--   {pct, msg}} of a run running here
--   r:close() -> cancels the runs running here and waits for their cleanups (shielded)
--
-- Today (the file store on main) a run is executed in this process, on the server's own loop,
-- as `flowrun run` executes it: engine.start / engine.resume in a task of its own, the journal
-- in the store, the run's changes told to flowrun.server.data at once. Parameters are resolved
-- exactly as the command line resolves them (wf:resolve_params: defaults < the server's
-- --vars-file < FLOWRUN_VAR_<NAME> < what the request gives, as --var), so a bad value is the
-- same message naming the parameter. Secret parameters never reach the store: the values a
-- trigger gave are kept in this process's memory for a retry of that run (else they come
-- from the server's environment or vars files, as `flowrun resume` takes them), and taught to
-- the redactor, so no page or answer shows them even when a task logs one.
local flow = require "flow"
local json = require "json"
local sys = require "flow.sys"
local engine = require "flowrun.engine"
local catalogue = require "flowrun.server.catalogue"

local M = {}

local R = {}
R.__index = R

local function default_log(msg)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " ", msg, "\n")
  io.stderr:flush()
end

function M.new(o)
  local self = setmetatable({
    store = o.store, data = o.data, catalogue = o.catalogue, sim = o.sim,
    vars_files = o.vars_files or {}, max_active = o.max_active, metrics = o.metrics,
    log = o.log or default_log, state_dir = o.state_dir or o.store.dir,
    running = {}, secrets = {}, closing = false, pause = nil,
  }, R)
  return self
end

-- The store as the engine sees it, with every journal commit timed (flowrun_store_commit_seconds).
function R:journal_store()
  local store, metrics = self.store, self.metrics
  local function wrap(j)
    if not j or not metrics then return j end
    local commit = j.commit
    j.commit = function(jj)
      if jj.n == 0 then return end
      local t0 = flow.now()
      commit(jj)
      metrics:observe("flowrun_store_commit_seconds", nil, flow.now() - t0)
    end
    return j
  end
  return setmetatable({
    create_run = function(_, first, new_id)
      local j, err = store:create_run(first, new_id)
      return wrap(j), err
    end,
    resume_run = function(_, run)
      local j, err = store:resume_run(run)
      return wrap(j), err
    end,
  }, { __index = store })
end

-- A reporter (flowrun.cli.view's interface) that tells the data seam and the metrics.
function R:reporter(rec)
  local data, metrics = self.data, self.metrics
  local function touch(what) if rec.id then data:touch(rec.id, what) end end
  return {
    run_started = function(_, info)
      rec.id = info.run_id
      self.running[rec.id] = rec
      touch()
    end,
    task = function(_, st, ev)
      if metrics and (ev == "succeeded" or ev == "failed") and st.started and st.finished then
        metrics:observe("flowrun_task_duration_seconds", { workflow = rec.workflow,
          state = st.state }, st.finished - st.started)
      end
      if metrics and ev == "retry" then
        metrics:inc("flowrun_task_retries_total", { workflow = rec.workflow })
      end
      touch("state")
    end,
    log = function() touch("log") end,
    progress = function(_, st, pct, msg)
      rec.progress[st.name] = { pct = pct, msg = msg }
      touch("state")
    end,
    run_finished = function(_, sum)
      rec.state = sum.state
      if metrics then metrics:inc("flowrun_runs_finished_total", { workflow = rec.workflow,
        state = sum.state }) end
    end,
    close = function() end,
  }
end

-- Runs fn (engine.start or engine.resume) in a task of its own; returns the run's id once the
-- run has started (its first record committed), or nil and the engine's error.
function R:launch(rec, fn)
  rec.progress = {}
  rec.handle = flow.spawn(function()
    local ok, sum, err = pcall(fn, self:reporter(rec))
    if rec.id then self.running[rec.id] = nil end
    if not ok then
      rec.error = sum
      if not flow.cancelled(sum) then
        self.log(string.format("run %s of %s: the engine failed: %s", tostring(rec.id),
          rec.workflow, tostring(type(sum) == "table" and (sum.message or sum.code) or sum)))
      end
    elseif not sum then
      rec.error = err
    else
      self.log(string.format("run %s of %s: %s", sum.run_id, rec.workflow, sum.state))
    end
    if rec.id then self.data:touch(rec.id) end
    rec.done = true
  end)
  -- engine.start commits the run's first record and tells the reporter before it first waits
  for _ = 1, 1000 do
    if rec.id or rec.done then break end
    flow.sleep(0)
  end
  if rec.id then return rec.id end
  local e = rec.error
  return nil, type(e) == "table" and (e.message or e.code) or tostring(e or "the run did not start")
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
  local secrets = secret_values(wf, params)
  teach_redactor(secrets)
  local rec = { workflow = wf.name, who = who }
  local jstore = self:journal_store()
  local id, err = self:launch(rec, function(rep)
    return engine.start(wf, { store = jstore, params = params, file = entry.file, hash = hash,
      sim = self.sim, reporter = rep, max_active = self.max_active })
  end)
  if not id then return nil, 500, { message = "the run did not start: " .. tostring(err) } end
  if next(secrets) then self.secrets[id] = secrets end
  self.log(string.format("run %s of %s triggered by %s", id, wf.name, who or "?"))
  return id
end

-- cancel(run_id, who) -> "cancelling", or nil, status, message.
function R:cancel(id, who)
  local rec = self.running[id]
  if rec then
    if not rec.cancelling then
      rec.cancelling = who or true
      self.log(string.format("run %s of %s: cancel requested by %s", id, rec.workflow, who or "?"))
      rec.handle:cancel()
    end
    return "cancelling"
  end
  local run, msg = self.data:run(id)
  if not run then return nil, 404, msg end
  if run.state == "running" then
    return nil, 409, string.format("run %s is being run by another process (pid %s), not by this "
      .. "server: cancel it there", id, tostring(run.pid))
  end
  return nil, 409, string.format("run %s is not running (it is %s)", id, run.state)
end

-- retry(run_id, task, who, force) -> run_id, or nil, status, message: the task and everything
-- downstream of it run again in the same run (flowrun resume --rerun TASK).
function R:retry(id, task, who, force)
  if self.closing then return nil, 503, "the server is shutting down" end
  local prev, msg = self.data:run(id)
  if not prev then return nil, 404, msg end
  if self.running[id] or prev.state == "running" then
    return nil, 409, "run " .. id .. " is still running: cancel it or wait for it to finish"
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
  local vars = {}
  for k, v in pairs(prev.params or {}) do if wf.params[k] then vars[k] = v end end
  for k, v in pairs(self.secrets[id] or {}) do vars[k] = v end
  local params, problems = wf:resolve_params { vars = vars, vars_files = self.vars_files }
  if not params then
    return nil, 409, "the run's parameters no longer resolve: " .. table.concat(problems, "; ")
  end
  local rec = { workflow = wf.name, who = who }
  local jstore = self:journal_store()
  local rid, err = self:launch(rec, function(rep)
    return engine.resume(wf, prev, { store = jstore, params = params, file = prev.file,
      hash = hash, sim = self.sim, reporter = rep, max_active = self.max_active,
      rerun = { task }, forced = (hash ~= prev.hash) or nil })
  end)
  if not rid then return nil, 409, "run " .. id .. " cannot be retried: " .. tostring(err) end
  self.log(string.format("run %s of %s: %s retried by %s", id, wf.name, task, who or "?"))
  return rid
end

---- pause --------------------------------------------------------------------------------------

function R:pause_file() return self.state_dir .. "/server/paused.json" end

function R:pauses()
  if not self.pause then
    local f = io.open(self:pause_file(), "rb")
    local t = {}
    if f then
      local ok, v = pcall(json.decode, f:read("a"))
      f:close()
      if ok and type(v) == "table" then t = v end
    end
    self.pause = t
  end
  return self.pause
end

function R:paused(name)
  return self:pauses()[name] ~= nil
end

-- set_paused(name, on, who): kept in <state dir>/server/paused.json (written whole, renamed),
-- where the scheduler reads it.
function R:set_paused(name, on, who)
  local p = self:pauses()
  if on then
    p[name] = p[name] or { by = who, at = flow.time() }
  else
    p[name] = nil
  end
  local dir = self.state_dir .. "/server"
  assert(sys.mkdir_p(dir))
  local tmp = self:pause_file() .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(json.encode(json.object(p)))
  f:close()
  assert(os.rename(tmp, self:pause_file()))
  self.log(string.format("workflow %s %s by %s", name, on and "paused" or "unpaused", who or "?"))
end

---- state ----------------------------------------------------------------------------------------

function R:active()
  local n = 0
  for _ in pairs(self.running) do n = n + 1 end
  return n
end

function R:progress(id)
  local rec = self.running[id]
  return rec and rec.progress
end

function R:is_running(id) return self.running[id] ~= nil end

-- close(): no new runs; the runs running here are cancelled (their cleanup tasks run) and
-- waited for.
function R:close()
  self.closing = true
  local hs = {}
  for _, rec in pairs(self.running) do
    rec.handle:cancel()
    hs[#hs + 1] = rec.handle
  end
  flow.shield(function()
    for _, h in ipairs(hs) do if not h:done() then flow.wait_any({ h }) end end
  end)
end

return M
