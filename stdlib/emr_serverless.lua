-- emr_serverless — Amazon EMR Serverless operators and sensors for workflows.
--
--   local es = require "emr_serverless"
--   local app = es.ensure_application{name = "etl", release_label = "emr-7.1.0"}  -- or {id = "00f..."}
--   es.start_application(app.id)                          -- true when this call started it
--   local run = es.start_job_run(app.id, {name = "job", execution_role = "arn:aws:iam::...",
--     entry_point = "s3://b/job.py", args = {...}, conf = {["spark.x"] = "y"}, log_uri = "s3://b/logs/"},
--     {token = es.client_token(ctx.run_id, ctx.task)})
--   es.wait_job_run(app.id, run.job_run_id, {timeout = "3h"})   -- SUCCESS, or raises with details
--   es.stop_application(app.id)                           -- waits for STOPPED
--
-- Idempotent for re-runs: StartJobRun carries a client token derived from the run and the task,
-- and before submitting, a job run of the same name that is not failed or cancelled is looked
-- for and reused, so a retried or resumed task never starts a second job (and never pays
-- twice). Cancelling a waiting wait_job_run cancels the job run (CancelJobRun, shielded). A
-- failed job run's error carries its stateDetails and the tail of the driver's stderr from the
-- job's S3 log location (<log_uri>/applications/<app>/jobs/<run>/SPARK_DRIVER/stderr.gz).
local flow = require "flow"
local operator = require "flow.operator"

local M = {}

local function aws() return require "aws" end
local function svc() return aws()["emr-serverless"] end

local log, fail = operator.log, operator.fail

M.JOB_DONE = {SUCCESS = true, FAILED = true, CANCELLED = true}
M.JOB_REUSABLE = {SUBMITTED = true, PENDING = true, SCHEDULED = true, RUNNING = true, QUEUED = true,
                  SUCCESS = true}
M.APP_GONE = {TERMINATED = true}
-- botocore has no waiters for EMR Serverless; the console polls every 30 s
M.WAIT_DEFAULTS = {every = 30, timeout = 60 * 60}
M.TAG_RUN, M.TAG_TASK, M.TAG_WORKFLOW = "flowrun:run-id", "flowrun:task", "flowrun:workflow"

-- IAM: M.iam.<operator>(args) -> the grants the operator may need on any of its paths (see
-- aws.grants). An application id that is nil (found by name or created during the run)
-- is any application; job runs are those a workflow started (opts.workflow: the
-- flowrun:workflow tag start_job_run puts on them), or any.
M.iam = {}
local function D() return require "aws.grants" end
local APP_WHY = "the application is found by name or created during the run: its id is not " ..
  "known before, and one found by name carries no flowrun tag"

local function on_app(actions, id)
  local d = D()
  if id and id ~= "" then
    return d.grant("EmrServerlessApplication", actions, d.arn("emr-serverless", "/applications/" .. id))
  end
  return d.grant("EmrServerlessApplications", actions, d.arn("emr-serverless", "/applications/*"),
    {why = APP_WHY})
end

local function on_job_runs(actions, app_id, opts)
  local d = D()
  local res = d.arn("emr-serverless", "/applications/" .. ((app_id and app_id ~= "") and app_id or "*") ..
    "/jobruns/*")
  if opts and opts.workflow then
    return d.grant("EmrServerlessJobRunsOfThisWorkflow", actions, res,
      {condition = {StringEquals = {["aws:ResourceTag/" .. M.TAG_WORKFLOW] = opts.workflow}}})
  end
  return d.grant("EmrServerlessJobRuns", actions, res, {why = "job runs are made during the run"})
end

-- client_token(run_id, task) -> a token StartJobRun accepts ([A-Za-z0-9._-], at most 64):
-- the same for every attempt of a task in a run, and only for it.
function M.client_token(run_id, task)
  if type(run_id) ~= "string" or type(task) ~= "string" then
    error("emr_serverless.client_token: expected a run id and a task name (strings)", 2)
  end
  return "flowrun-" .. require("aws.sigv4").sha256_hex(run_id .. "\0" .. task):sub(1, 48)
end

function M.get_application(id)
  if type(id) ~= "string" or id == "" then
    error("emr_serverless: expected an application id (string), got " .. type(id), 2)
  end
  return svc().get_application{applicationId = id}.application
end

function M.iam.get_application(id) return on_app("emr-serverless:GetApplication", id) end

-- ensure_application{id | name, release_label, type = "SPARK", idle_minutes = 15, tags}
-- -> {id, name, state, created = bool}. A given id must exist (and not be terminated); a name
-- finds the newest application of that name that is not terminated, or creates one (with
-- auto-start, and auto-stop after idle_minutes).
function M.ensure_application(spec, opts)
  if type(spec) ~= "table" or not (spec.id or spec.name) then
    error("emr_serverless.ensure_application: expected {id = ...} or {name = ..., release_label = ...}", 2)
  end
  if spec.id and spec.id ~= "" then
    local app = M.get_application(spec.id)
    if M.APP_GONE[app.state] then
      error(fail("emr_serverless.application", "EMR Serverless application " .. spec.id ..
        " is " .. app.state), 2)
    end
    return {id = app.applicationId, name = app.name, state = app.state, created = false}
  end
  local best
  for page in aws().paginate("emr-serverless", "ListApplications", {}) do
    for _, a in ipairs(page.applications or {}) do
      if a.name == spec.name and not M.APP_GONE[a.state]
        and (not best or (a.createdAt or 0) > (best.createdAt or 0)) then
        best = a
      end
    end
  end
  if best then
    log(opts, string.format("EMR Serverless application %s (%s) is %s: using it", best.name,
      best.id, best.state))
    return {id = best.id, name = best.name, state = best.state, created = false}
  end
  if not spec.release_label then
    error("emr_serverless.ensure_application: release_label is needed to create " .. spec.name, 2)
  end
  local r = svc().create_application{
    name = spec.name, releaseLabel = spec.release_label, type = spec.type or "SPARK",
    clientToken = "flowrun-app-" .. require("aws.sigv4").sha256_hex(spec.name):sub(1, 40),
    autoStartConfiguration = {enabled = true},
    autoStopConfiguration = {enabled = true, idleTimeoutMinutes = spec.idle_minutes or 15},
    tags = spec.tags,
  }
  log(opts, "EMR Serverless application " .. spec.name .. " created: " .. r.applicationId)
  return {id = r.applicationId, name = spec.name, state = "CREATING", created = true}
end

function M.iam.ensure_application(spec)
  if spec.id and spec.id ~= "" then return M.iam.get_application(spec.id) end
  return D().join(D().unscoped("EmrServerlessCreate",
    {"emr-serverless:ListApplications", "emr-serverless:CreateApplication"},
    "ListApplications and CreateApplication take no resource (the application does not exist yet)"))
end

-- start_application(id, opts) -> true when this call started it (it was CREATED or STOPPED),
-- false when it was already starting or started. Does not wait (job runs queue meanwhile);
-- opts.wait = true waits for STARTED.
function M.start_application(id, opts)
  opts = opts or {}
  local app = M.get_application(id)
  local started = false
  if app.state == "CREATED" or app.state == "STOPPED" then
    svc().start_application{applicationId = id}
    log(opts, "EMR Serverless application " .. id .. ": start requested (was " .. app.state .. ")")
    started = true
  elseif app.state == "CREATING" then
    -- a new application: wait until it can be started
    flow.poll(function()
      local a = M.get_application(id)
      if a.state ~= "CREATING" then return a end
      return nil, a.state
    end, {every = opts.every or 10, timeout = opts.timeout or 600, name = "EMR Serverless application " .. id,
          log = opts.log})
    return M.start_application(id, opts)
  elseif M.APP_GONE[app.state] then
    error(fail("emr_serverless.application", "EMR Serverless application " .. id .. " is " .. app.state), 2)
  end
  if opts.wait then M.wait_application(id, "STARTED", opts) end
  return started
end

function M.iam.start_application(id)
  return on_app({"emr-serverless:GetApplication", "emr-serverless:StartApplication"}, id)
end

-- wait_application(id, state, opts) -> the application once in state. Fails when it is
-- terminated. opts: every, timeout, log.
function M.wait_application(id, want, opts)
  opts = opts or {}
  return flow.poll(function()
    local a = M.get_application(id)
    if a.state == want then return a end
    if M.APP_GONE[a.state] then
      error(fail("emr_serverless.application", string.format("EMR Serverless application %s is %s%s",
        id, a.state, a.stateDetails and (" (" .. a.stateDetails .. ")") or "")), 0)
    end
    return nil, a.state
  end, {every = opts.every or M.WAIT_DEFAULTS.every, timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
        name = "EMR Serverless application " .. id, log = opts.log})
end

function M.iam.wait_application(id) return M.iam.get_application(id) end

-- stop_application(id, opts) -> final state. Waits for the application's job runs named in
-- opts.job_runs to end first (StopApplication refuses while they run), then for STOPPED unless
-- opts.wait == false. A stopped application is left as it is.
function M.stop_application(id, opts)
  opts = opts or {}
  for _, jr in ipairs(opts.job_runs or {}) do M.wait_job_run_done(id, jr, opts) end
  local app = M.get_application(id)
  if app.state == "STOPPED" or app.state == "CREATED" or M.APP_GONE[app.state] then
    return app.state
  end
  if app.state ~= "STOPPING" then
    svc().stop_application{applicationId = id}
    log(opts, "EMR Serverless application " .. id .. ": stop requested (was " .. app.state .. ")")
  end
  if opts.wait == false then return "STOPPING" end
  return M.wait_application(id, "STOPPED", opts).state
end

-- opts.job_runs: true when job runs are waited for (and cancelled with opts.cancel) first
function M.iam.stop_application(id, opts)
  opts = opts or {}
  return D().join(on_app({"emr-serverless:GetApplication", "emr-serverless:StopApplication"}, id),
    opts.job_runs and M.iam.wait_job_run_done(id, nil, opts) or nil)
end

local function job_name_matches(run, name)
  return run.name == name and M.JOB_REUSABLE[run.state]
end

-- find_job_run(app_id, name) -> the newest job run of that name that did not fail or get
-- cancelled, or nil.
function M.find_job_run(app_id, name)
  local best
  local states = {}
  for st in pairs(M.JOB_REUSABLE) do states[#states + 1] = st end
  table.sort(states)
  for page in aws().paginate("emr-serverless", "ListJobRuns", {applicationId = app_id,
                                                               states = states}) do
    for _, r in ipairs(page.jobRuns or {}) do
      if job_name_matches(r, name) and (not best or (r.createdAt or 0) > (best.createdAt or 0)) then
        best = r
      end
    end
  end
  return best
end

function M.iam.find_job_run(app_id) return on_app("emr-serverless:ListJobRuns", app_id) end

-- start_job_run(app_id, job, opts) -> {job_run_id, application_id, started = bool}.
-- job: name, execution_role, entry_point, args, conf (spark --conf pairs), submit (more
-- sparkSubmitParameters), log_uri (S3 monitoring), timeout_minutes, tags. opts: token (the
-- client token; default: derived from the calling workflow task's run and name), log.
function M.start_job_run(app_id, job, opts)
  opts = opts or {}
  if type(job) ~= "table" or not job.name or not job.entry_point or not job.execution_role then
    error("emr_serverless.start_job_run: expected {name, entry_point, execution_role, ...}", 2)
  end
  local ctx = require("flow.context").current() or {}
  local token = opts.token or (ctx.run_id and M.client_token(ctx.run_id, ctx.task or ""))
  if not token then
    error("emr_serverless.start_job_run: a client token is needed outside a workflow task (opts.token)", 2)
  end
  local found = M.find_job_run(app_id, job.name)
  if found then
    log(opts, string.format("EMR Serverless job run %q is already %s as %s: reusing it", job.name,
      found.state, found.id))
    return {job_run_id = found.id, application_id = app_id, started = false}
  end
  local keys = {}
  for k in pairs(job.conf or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local params = {}
  for _, k in ipairs(keys) do params[#params + 1] = "--conf " .. k .. "=" .. tostring(job.conf[k]) end
  if job.submit then params[#params + 1] = job.submit end
  local args = {}
  for i, a in ipairs(job.args or {}) do args[i] = tostring(a) end
  local tags = {}
  for k, v in pairs(job.tags or {}) do tags[k] = v end
  if ctx.run_id then tags[M.TAG_RUN] = ctx.run_id end
  if ctx.task then tags[M.TAG_TASK] = ctx.task end
  if ctx.workflow then tags[M.TAG_WORKFLOW] = ctx.workflow end
  local req = {
    applicationId = app_id, clientToken = token, executionRoleArn = job.execution_role,
    name = job.name, tags = next(tags) and tags or nil,
    executionTimeoutMinutes = job.timeout_minutes,
    jobDriver = {sparkSubmit = {entryPoint = job.entry_point, entryPointArguments = args,
                                sparkSubmitParameters = #params > 0 and table.concat(params, " ") or nil}},
  }
  if job.log_uri then
    req.configurationOverrides = {monitoringConfiguration = {
      s3MonitoringConfiguration = {logUri = job.log_uri}}}
  end
  -- the token makes the client's own retries (a lost answer) land on the same job run
  local r = svc().start_job_run(req)
  log(opts, string.format("EMR Serverless job run %s started on %s", r.jobRunId, app_id))
  return {job_run_id = r.jobRunId, application_id = app_id, started = true}
end

function M.iam.start_job_run(app_id, job)
  return D().join(M.iam.find_job_run(app_id), on_app("emr-serverless:StartJobRun", app_id),
    D().pass_role("PassRoleToEmrServerless", job and job.execution_role, "emr-serverless.amazonaws.com"))
end

function M.get_job_run(app_id, run_id)
  return svc().get_job_run{applicationId = app_id, jobRunId = run_id}.jobRun
end

function M.iam.get_job_run(app_id, run_id, opts)
  return on_job_runs("emr-serverless:GetJobRun", app_id, opts)
end

-- The tail of a job run's driver stderr, from its S3 log location, or nil.
function M.stderr_tail(app_id, run, opts, run_id)
  local mc = run.configurationOverrides and run.configurationOverrides.monitoringConfiguration
  local base = mc and mc.s3MonitoringConfiguration and mc.s3MonitoringConfiguration.logUri
  if not base then return nil end
  base = base:gsub("^s3n://", "s3://"):gsub("/?$", "/")
  return require("emr").log_tail({string.format("%sapplications/%s/jobs/%s/SPARK_DRIVER/stderr.gz",
    base, app_id, run_id or run.jobRunId)}, opts)
end

local function job_failed(app_id, run_id, run, opts)
  local parts = {string.format("EMR Serverless job run %q (%s) on %s %s", run.name or "?",
    run_id, app_id, run.state)}
  if run.stateDetails and run.stateDetails ~= "" then parts[#parts + 1] = run.stateDetails end
  local text
  if run.state == "FAILED" then
    local ok, t = pcall(M.stderr_tail, app_id, run, opts, run_id)
    if ok then text = t elseif flow.cancelled(t) then error(t, 0) end
  end
  local msg = table.concat(parts, "; ")
  if text then msg = msg .. "\n--- driver stderr (last lines) ---\n" .. text end
  return fail("emr_serverless.job_failed", msg, {state = run.state, state_details = run.stateDetails,
    stderr_tail = text, job_run_id = run_id, application_id = app_id})
end

function M.cancel_job_run(app_id, run_id, opts)
  local ok, err = pcall(function()
    svc().cancel_job_run{applicationId = app_id, jobRunId = run_id}
  end)
  if ok then
    log(opts, "EMR Serverless job run " .. run_id .. ": cancel requested")
  else
    log(opts, "EMR Serverless job run " .. run_id .. ": cancel failed: " .. tostring(err))
  end
  return ok
end

function M.iam.cancel_job_run(app_id, run_id, opts)
  return on_job_runs("emr-serverless:CancelJobRun", app_id, opts)
end

-- wait_job_run(app_id, run_id, opts) -> the job run once SUCCESS. FAILED and CANCELLED raise
-- emr_serverless.job_failed with stateDetails and, for FAILED, the tail of the driver's stderr
-- (opts.log_wait: how long to wait for it to reach S3). Cancelling the waiting task cancels
-- the job run (shielded). opts: every, timeout, log, log_wait, tail_lines,
-- cancel_on_cancel (default true).
function M.wait_job_run(app_id, run_id, opts)
  opts = opts or {}
  local res = table.pack(pcall(flow.poll, function()
    local run = M.get_job_run(app_id, run_id)
    if run.state == "SUCCESS" then return run end
    if run.state == "FAILED" or run.state == "CANCELLED" then
      error(job_failed(app_id, run_id, run, opts), 0)
    end
    return nil, run.state
  end, {every = opts.every or M.WAIT_DEFAULTS.every, timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
        name = "EMR Serverless job run " .. run_id, log = opts.log}))
  if res[1] then return res[2] end
  local err = res[2]
  if flow.cancelled(err) and opts.cancel_on_cancel ~= false then
    flow.shield(M.cancel_job_run, app_id, run_id, {log = function(m) log(nil, m) end})
  end
  error(err, 0)
end

-- a failure reads the driver's stderr below opts.log_uri; a cancelled wait cancels the job run
function M.iam.wait_job_run(app_id, run_id, opts)
  opts = opts or {}
  local actions = {"emr-serverless:GetJobRun"}
  if opts.cancel_on_cancel ~= false then actions[2] = "emr-serverless:CancelJobRun" end
  return D().join(on_job_runs(actions, app_id, opts),
    require("emr").iam.log_tail({D().under(opts.log_uri)}))
end

-- wait_job_run_done(app_id, run_id, opts) -> final state; cancels the run first when
-- opts.cancel is true and it has not ended.
function M.wait_job_run_done(app_id, run_id, opts)
  opts = opts or {}
  local run = M.get_job_run(app_id, run_id)
  if M.JOB_DONE[run.state] then return run.state end
  if opts.cancel and run.state ~= "CANCELLING" then M.cancel_job_run(app_id, run_id, opts) end
  return flow.poll(function()
    local r = M.get_job_run(app_id, run_id)
    if M.JOB_DONE[r.state] then return r.state end
    return nil, r.state
  end, {every = opts.every or M.WAIT_DEFAULTS.every, timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
        name = "EMR Serverless job run " .. run_id, log = opts.log})
end

function M.iam.wait_job_run_done(app_id, run_id, opts)
  local actions = {"emr-serverless:GetJobRun"}
  if opts and opts.cancel then actions[2] = "emr-serverless:CancelJobRun" end
  return on_job_runs(actions, app_id, opts)
end

return M
