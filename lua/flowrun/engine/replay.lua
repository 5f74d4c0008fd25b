-- flowrun.engine.replay — a run's journal records turned back into the run's state, for
-- `runs`, `show`, `resume` and `graph --run`, whatever store kept them. Each record is checked
-- as it is read: a record that lacks a field or carries one of the wrong type is damage, named
-- by where it was read (file and line, or run and sequence number), never an internal error.
--
-- Record shapes ("ev" field); every record has "t" (wall-clock seconds, following virtual time):
--   run_started  {run, workflow, file, hash, params, secret_params, pid, v, tasks = {names},
--                 sim = {fail = {specs}} when the run answers AWS from the simulator,
--                 logical_date, data_interval = {start, end} (epoch seconds), manual}
--   run_resumed  {hash, pid, forced, rerun = {names} when tasks were asked to run again}
--   task_started {task, attempt}
--   task_succeeded {task, attempt, result}
--   task_failed  {task, attempt, error = {code, message, ...}, state = "failed" | "cancelled"}
--   task_retry   {task, attempt, delay, error}
--   task_skipped {task, state = "skipped" | "upstream_failed" | "cancelled", rule}
--   run_finished {state = "success" | "failed" | "cancelled", exit, reason}
local json = require "json"
local rules = require "flowrun.engine.rules"

local M = {}
M.VERSION = 1

local function is_int(v, min) return math.type(v) == "integer" and v >= (min or 0) end
local function opt(check) return function(v) return v == nil or check(v) end end
local function str(v) return type(v) == "string" end
local function num(v) return type(v) == "number" and v == v end
local function tbl(v) return type(v) == "table" and v ~= json.null end
local function attempt(v) return is_int(v, 1) end
local function one_of(set) return function(v) return set[v] == true end end
local function strings(v)
  if not tbl(v) then return false end
  for _, s in ipairs(v) do if type(s) ~= "string" then return false end end
  return true
end
local function pair(v)
  return tbl(v) and num(v[1]) and num(v[2]) and v[1] <= v[2]
end
local function err_rec(v)
  return tbl(v) and (v.code == nil or str(v.code)) and (v.message == nil or str(v.message))
end

-- {field, check, what was expected}, per record kind, in the order they are checked
local SHAPES = {
  run_started = { { "run", str, "a string" }, { "workflow", str, "a string" },
    { "file", opt(str), "a string" }, { "hash", opt(str), "a string" },
    { "params", opt(tbl), "an object" }, { "secret_params", opt(strings), "a list of names" },
    { "tasks", opt(strings), "a list of task names" }, { "pid", opt(num), "a number" },
    { "v", opt(num), "a number" }, { "sim", opt(tbl), "an object" },
    { "logical_date", opt(num), "epoch seconds" },
    { "data_interval", opt(pair), "[start, end] in epoch seconds" } },
  run_resumed = { { "hash", opt(str), "a string" }, { "pid", opt(num), "a number" },
    { "rerun", opt(strings), "a list of task names" } },
  task_started = { { "task", str, "a task name" }, { "attempt", attempt, "an attempt number" } },
  task_succeeded = { { "task", str, "a task name" }, { "attempt", attempt, "an attempt number" } },
  task_failed = { { "task", str, "a task name" }, { "attempt", attempt, "an attempt number" },
    { "state", opt(one_of { failed = true, cancelled = true }), "failed or cancelled" },
    { "error", err_rec, "an error {code, message}" } },
  task_retry = { { "task", str, "a task name" }, { "attempt", attempt, "an attempt number" },
    { "delay", num, "a number of seconds" }, { "error", err_rec, "an error {code, message}" } },
  task_skipped = { { "task", str, "a task name" },
    { "state", one_of { skipped = true, upstream_failed = true, cancelled = true },
      "skipped, upstream_failed or cancelled" }, { "rule", opt(str), "a string" } },
  run_finished = { { "state", one_of { success = true, failed = true, cancelled = true },
    "success, failed or cancelled" }, { "exit", function(v) return is_int(v) end, "an exit status" },
    { "reason", opt(str), "a string" } },
}

-- check(rec) -> true, or nil and what is wrong with it.
function M.check(rec)
  if not tbl(rec) then return nil, "not a journal record (expected an object)" end
  if type(rec.ev) ~= "string" then return nil, "not a journal record (no \"ev\")" end
  local shape = SHAPES[rec.ev]
  if not shape then return nil, string.format("unknown record %q", rec.ev) end
  if not num(rec.t) then return nil, string.format("%s: \"t\" must be a number", rec.ev) end
  for _, spec in ipairs(shape) do
    local k = spec[1]
    if not spec[2](rec[k]) then
      local got = rec[k] == nil and "nothing" or (rec[k] == json.null and "null")
        or (type(rec[k]) == "table" and "an object or list") or json.encode(rec[k])
      return nil, string.format("%s: %q must be %s, got %s", rec.ev, k, spec[3], got)
    end
  end
  return true
end

-- replay(records) -> run: {id, workflow, file, hash, params, started, finished, state, exit,
-- tasks = {name -> {state, attempts, result, error, started, finished, duration,
-- history = {{attempt, error, delay | state}} (failed attempts, across resumes)}},
-- task_order, resumed = count, pid}. The records must have passed check(). Tasks that were
-- started and not finished replay as "running"; a run with no run_finished after its last start
-- is "running" (the store tells a live run from an interrupted one).
function M.replay(recs)
  local first = recs[1]
  local run = {
    id = first.run, workflow = first.workflow, file = first.file, hash = first.hash,
    params = first.params or {}, secret_params = first.secret_params, started = first.t,
    pid = first.pid, tasks = {}, state = "running", resumed = 0, last_t = first.t,
    task_order = {}, sim = first.sim, logical_date = first.logical_date,
    data_interval = first.data_interval, manual = first.manual,
  }
  local function task(name)
    local t = run.tasks[name]
    if not t then
      t = { state = "pending", attempts = 0 }
      run.tasks[name] = t
      run.task_order[#run.task_order + 1] = name
    end
    return t
  end
  -- the task list (in dependency order) when the run recorded it: tasks that never started
  -- are shown as pending
  for _, name in ipairs(first.tasks or {}) do task(name) end
  for i = 2, #recs do
    local r = recs[i]
    local ev = r.ev
    run.last_t = r.t
    if ev == "task_started" then
      local t = task(r.task)
      t.state, t.attempts, t.error = "running", r.attempt, nil
      if not t.started or t.state_reset then t.started, t.state_reset = r.t, nil end
      t.attempt_started = r.t
      t.finished = nil
    elseif ev == "task_succeeded" then
      local t = task(r.task)
      t.state, t.result, t.finished, t.error = "success", r.result, r.t, nil
      t.attempts = r.attempt
    elseif ev == "task_failed" then
      local t = task(r.task)
      t.state, t.error, t.finished = r.state or "failed", r.error, r.t
      t.history = t.history or {}
      t.history[#t.history + 1] = { attempt = r.attempt, error = r.error, state = t.state }
      t.attempts = r.attempt
    elseif ev == "task_retry" then
      local t = task(r.task)
      t.state, t.error = "up_for_retry", r.error
      t.retries = (t.retries or 0) + 1
      t.history = t.history or {}
      t.history[#t.history + 1] = { attempt = r.attempt, error = r.error, delay = r.delay }
    elseif ev == "task_skipped" then
      local t = task(r.task)
      t.state, t.finished = r.state, r.t
      t.started = t.started or r.t
    elseif ev == "run_resumed" then
      run.resumed = run.resumed + 1
      run.state, run.exit, run.finished, run.reason = "running", nil, nil, nil
      run.hash_now = r.hash
      run.pid = r.pid or run.pid
      -- states of unfinished tasks are decided again by the resumed run
      for _, t in pairs(run.tasks) do
        if t.state ~= "success" then t.state, t.state_reset = "pending", true end
      end
    elseif ev == "run_finished" then
      run.state, run.exit, run.finished, run.reason = r.state, r.exit, r.t, r.reason
    end
  end
  for _, t in pairs(run.tasks) do
    if t.started and t.finished then t.duration = t.finished - t.started end
  end
  return run
end

-- Does the run have anything left that `resume` would run? (a finished run that failed or was
-- cancelled, or an interrupted one)
function M.resumable(run)
  return run.state ~= "success" and run.state ~= "damaged"
end

M.FINAL = rules.FINAL
return M
