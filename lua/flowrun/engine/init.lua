-- flowrun.engine — running workflows against a run store: what the command line, workers and
-- the server share. A workflow file is loaded (load_file), a run is started in a store (start)
-- or an earlier one continued (resume); flowrun.engine.run does the running.
local sys = require "flow.sys"
local run = require "flowrun.engine.run"
local rules = require "flowrun.engine.rules"
local replay = require "flowrun.engine.replay"
local workflow = require "flow.workflow"

local M = {}

local floor = math.floor

M.evaluate = rules.evaluate
M.retry_delay = run.retry_delay
M.new_run_id = run.new_run_id

-- run(wf, o) -> summary: a run with no store (see flowrun.engine.run for o).
function M.run(wf, o)
  return run.new(wf, o):execute()
end

local function describe(v)
  if type(v) == "table" then return "a table that is not a workflow" end
  if v == nil then return "nothing" end
  return "a " .. type(v)
end

-- load(chunk, name) -> workflow, or nil and a message. Runs the chunk (a workflow file's code)
-- and checks it returned a workflow: every command refuses anything else the same way.
function M.load(chunk, name)
  local ok, wf = pcall(chunk)
  if not ok then
    return nil, require("flowrun.engine.errors").render(wf)
  end
  if not workflow.is_workflow(wf) then
    return nil, string.format("%s did not return a workflow (flow.workflow{...}); it returned %s",
      name, describe(wf))
  end
  return wf
end

-- load_file(path) -> workflow, or nil and a message.
function M.load_file(path)
  local st = sys.stat(path)
  if not st then return nil, "cannot open " .. path .. ": no such file" end
  if st.type == "directory" then return nil, path .. " is a directory, not a workflow file" end
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  return M.load(chunk, path)
end

-- The parameters a store may keep: secret ones are left out (they come back from --var,
-- --vars-file or the environment on resume), and their names listed.
function M.public_params(wf, params)
  local out, secret = {}, {}
  for k, v in pairs(params) do
    if wf.params[k] and wf.params[k].secret then secret[#secret + 1] = k
    else out[k] = v end
  end
  table.sort(secret)
  return out, secret
end

-- A value that converts to the parameter's type: stands for a required secret parameter that a
-- worker will be given, so that the others can be resolved where a run is queued.
local PLACEHOLDER = { number = "0", integer = "0", boolean = "false", table = "{}" }

-- queued_params(wf, o) -> public params, secret names; or nil, nil, problems. The parameters of
-- a run queued for a worker (flowrun submit, a scheduler, a backfill): resolved as the run would
-- resolve them (o.vars, o.vars_files, FLOWRUN_VAR_<NAME>, defaults, functions of o.time), except
-- that required secret ones are the worker's to give; secret values are never returned, only
-- the names of every secret parameter (the worker takes their values from its environment).
function M.queued_params(wf, o)
  local vars = {}
  for k, v in pairs(o.vars or {}) do vars[k] = v end
  local params, problems = wf:resolve_params { vars = vars, vars_files = o.vars_files, time = o.time }
  if not params then
    local placeholders = {}
    for name, p in pairs(wf.params) do
      if p.secret and p.required and vars[name] == nil then
        local kind = p.type or (p.default ~= nil and type(p.default)) or "string"
        vars[name] = PLACEHOLDER[kind] or "x"
        placeholders[name] = true
      end
    end
    params, problems = wf:resolve_params { vars = vars, vars_files = o.vars_files, time = o.time }
    if not params then return nil, nil, problems end
    for name in pairs(placeholders) do params[name] = nil end
  end
  return (M.public_params(wf, params)), M.secret_names(wf)
end

-- secret_names(wf) -> the names of the workflow's secret parameters, sorted.
function M.secret_names(wf)
  local out = {}
  for name, p in pairs(wf.params) do if p.secret then out[#out + 1] = name end end
  table.sort(out)
  return out
end

-- dates(wf, o) -> the run's dates as tasks and parameter defaults see them: {logical_date (ISO
-- 8601 in the schedule's zone), logical_date_epoch, data_interval = {start, ["end"], start_epoch,
-- end_epoch}, data_interval_start, data_interval_end, ds ("YYYY-MM-DD" of the logical date),
-- ds_nodash, timezone, manual}, and the interval {start, ["end"], logical_date}. o: interval (a
-- scheduled run's), logical_date (epoch: --logical-date; for a scheduled workflow the interval
-- that starts at the first fire time at or after it), at (a manual run's start, default now).
function M.dates(wf, o)
  o = o or {}
  local interval = require "flow.schedule.interval"
  local tt = wf.timetable
  local iv = o.interval
  if not iv then
    if tt and o.logical_date then
      local start = tt:next(floor(o.logical_date) - 1)
      iv = { start = start, ["end"] = tt:next(start), logical_date = start }
    elseif tt then
      iv = tt:manual(o.at or require("flow").time())
    else
      local at = floor(o.logical_date or o.at or require("flow").time())
      iv = { start = at, ["end"] = at, logical_date = at, manual = o.logical_date == nil }
    end
  end
  tt = tt or assert(interval.timetable { schedule = "@daily" })
  local d = tt:context(iv)
  d.ds = d.logical_date:sub(1, 10)
  d.ds_nodash = d.ds:gsub("-", "")
  return d, iv
end

-- The dates a run recorded (run_started's logical_date, data_interval), as dates() gives them.
function M.recorded_dates(wf, run)
  if not run.logical_date then return M.dates(wf, { at = run.started }) end
  return M.dates(wf, { interval = { start = run.data_interval and run.data_interval[1]
    or run.logical_date, ["end"] = run.data_interval and run.data_interval[2] or run.logical_date,
    logical_date = run.logical_date, manual = run.manual } })
end

-- Runs r with journal jr, which the store may tell things while the run is held: a cancel
-- request (flowrun cancel: the run is cancelled, its cleanup tasks run) and the run lost to
-- another holder (its tasks are stopped at once, nothing more is written; execute raises
-- store.lost). The journal is closed whatever happens.
local function execute(r, jr, o)
  if jr.watch then
    jr:watch { cancel = function(reason) r:start_cancelling(reason) end,
      lost = function(err) r:abandon(err) end }
  end
  if o.cancel_reason then r:start_cancelling(o.cancel_reason) end
  local ok, sum = pcall(r.execute, r)
  jr:close()
  if not ok then error(sum, 0) end
  return sum
end

-- start(wf, o) -> summary, or nil and an error (the store refused the run). o: store, params,
-- dates (M.dates: its logical date and data interval; default: a manual run now), file, hash
-- (of the workflow file), source (its text: the PostgreSQL store keeps it, so the run can be
-- resumed elsewhere), sim (the simulator's settings when it answers AWS), reporter, max_active,
-- timeout, on_signal (see flowrun.engine.run); journal: a run already held (a worker's claim:
-- the run_started record is appended to it), run_id; extra: fields added to the run_started
-- record (worker, epoch).
function M.start(wf, o)
  local ok, problems = wf:validate()
  if not ok then return nil, "invalid workflow: " .. table.concat(problems, "; ") end
  local params, secret = M.public_params(wf, o.params)
  local names = {}
  for i, t in ipairs(wf.order) do names[i] = t.name end
  local d = o.dates or M.dates(wf)
  local first = { ev = "run_started", v = replay.VERSION,
    run = o.run_id or run.new_run_id(), workflow = wf.name, file = o.file, hash = o.hash,
    params = params, secret_params = #secret > 0 and secret or nil, pid = sys.getpid(),
    tasks = names, sim = o.sim and { fail = o.sim.fail } or nil,
    logical_date = d.logical_date_epoch,
    data_interval = { d.data_interval.start_epoch, d.data_interval.end_epoch },
    manual = d.manual or nil }
  for k, v in pairs(o.extra or {}) do first[k] = v end
  local jr, err
  if o.journal then
    jr = o.journal
    first.run = jr.run_id
    -- committed with the run's first tasks (nothing is acted on before that commit)
    local cok, cerr = pcall(jr.append, jr, first)
    if not cok then jr:close() error(cerr, 0) end
  else
    jr, err = o.store:create_run(first, run.new_run_id, { source = o.source })
    if not jr then return nil, err end
  end
  local r = run.new(wf, { params = o.params, run_id = jr.run_id, journal = jr, dates = d,
    reporter = o.reporter, max_active = o.max_active, timeout = o.timeout,
    on_signal = o.on_signal })
  return execute(r, jr, o)
end

-- resume(wf, prev, o) -> summary, or nil and an error (another process holds the run). prev: the
-- replayed run; o as for start, plus forced (the workflow file changed since), rerun (names of
-- tasks to run again although they succeeded, with everything downstream of them: Airflow's
-- "clear") and journal (a worker's takeover: the run already held).
function M.resume(wf, prev, o)
  for _, name in ipairs(o.rerun or {}) do
    if not wf.by_name[name] then
      return nil, { code = "engine.unknown_task", message = "run " .. prev.id .. " has no task "
        .. tostring(name) }
    end
  end
  local jr, err = o.journal, nil
  if not jr then
    jr, err = o.store:resume_run(prev)
    if not jr then return nil, err end
  end
  local rec = { ev = "run_resumed", hash = o.hash, pid = sys.getpid(), forced = o.forced,
    rerun = o.rerun and #o.rerun > 0 and o.rerun or nil }
  for k, v in pairs(o.extra or {}) do rec[k] = v end
  local cok, cerr = pcall(jr.append, jr, rec)
  if not cok then jr:close() error(cerr, 0) end
  local r = run.new(wf, { params = o.params, run_id = prev.id, journal = jr,
    dates = M.recorded_dates(wf, prev), reporter = o.reporter, max_active = o.max_active,
    timeout = o.timeout, resume = prev, rerun = o.rerun, on_signal = o.on_signal })
  return execute(r, jr, o)
end

-- A cheap change detector for the workflow file (FNV-1a, 64 bits, hex). Not a security hash:
-- it only tells `resume` whether the file was edited since the run started.
function M.hash_text(s)
  local h = -3750763034362895579 -- 0xcbf29ce484222325
  local prime = 1099511628211
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    h = (h ~ a) * prime
    if b then h = (h ~ b) * prime end
    if c then h = (h ~ c) * prime end
    if d then h = (h ~ d) * prime end
  end
  return string.format("fnv1a64:%016x", h)
end

function M.hash_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return M.hash_text(s)
end

return M
