-- sim/emr_serverless.lua — EMR Serverless (rest-json) in the simulator: applications CREATING ->
-- CREATED -> STARTING -> STARTED -> STOPPING -> STOPPED (auto-start when a job is submitted,
-- auto-stop after the idle timeout), and job runs SUBMITTED -> PENDING (until the application is
-- started) -> SCHEDULED -> RUNNING -> SUCCESS | FAILED, CANCELLING -> CANCELLED. StartJobRun is
-- idempotent by clientToken, as EMR Serverless is. A job run that runs the Iceberg job does what
-- the job does as it ends (sim.job), and fails with the job's stderr written, gzipped, to
-- <logUri>/applications/<app>/jobs/<run>/SPARK_DRIVER/stderr.gz when the job fails, or when
-- fail "serverless.job" is set. StopApplication is refused while a job run is active.
local json = require "json"
local util = require "sim.util"
local state = require "sim.state"
local sim = require "sim"
local job = require "sim.job"

local M = {}

local ACTIVE = {SUBMITTED = true, PENDING = true, SCHEDULED = true, RUNNING = true,
                CANCELLING = true, QUEUED = true}
local DONE = {SUCCESS = true, FAILED = true, CANCELLED = true}

local function ok(tbl)
  return {status = 200, headers = {["Content-Type"] = "application/json",
                                   ["x-amzn-RequestId"] = util.request_id()},
          body = json.encode(tbl or json.object({}))}
end

function M.error_answer(f)
  local r = util.json_error("com.amazonaws.emrserverless", f)
  r.headers["Content-Type"] = "application/json"
  return r
end

local function not_found(what) return util.fault("ResourceNotFoundException", what, 404) end
local function invalid(msg) return util.fault("ValidationException", msg, 400) end

local function ids(w, n) return state.next_id(w, "", n, "0123456789abcdefghijklmnopqrstuvwxyz") end

local function world(w)
  w.emr_serverless = w.emr_serverless or {applications = {}}
  return w.emr_serverless
end

local function set_app(a, st, t) a.state, a.updatedAt, a.sim_since = st, t, t end

local function set_run(r, st, t, details)
  r.state, r.updatedAt, r.sim_since = st, t, t
  if details then r.stateDetails = details end
end

local function active_runs(a)
  local n = 0
  for _, r in pairs(a.runs) do if ACTIVE[r.state] then n = n + 1 end end
  return n
end

local function duration(w, r)
  local d = w.durations
  local args = r.jobDriver and r.jobDriver.sparkSubmit and r.jobDriver.sparkSubmit.entryPointArguments or {}
  local tables = 0
  for _, a in ipairs(args) do if a == "--table" then tables = tables + 1 end end
  return d.serverless_job + d.serverless_job_per_table * math.max(0, tables - 1)
end

local function write_stderr(w, a, r, t, text)
  local mc = r.configurationOverrides and r.configurationOverrides.monitoringConfiguration
  local base = mc and mc.s3MonitoringConfiguration and mc.s3MonitoringConfiguration.logUri
  local bucket, prefix = (base or ""):match("^s3n?://([^/]+)/?(.*)$")
  if not bucket or not w.s3.buckets[bucket] then return end
  if prefix ~= "" and not prefix:match("/$") then prefix = prefix .. "/" end
  local body = util.gzip_stored(text)
  w.s3.buckets[bucket].objects[string.format("%sapplications/%s/jobs/%s/SPARK_DRIVER/stderr.gz",
    prefix, a.applicationId, r.jobRunId)] = {body = body, etag = util.etag(body), mtime = t,
    ctype = "application/x-gzip"}
end

-- Bring an application and its job runs up to now, each transition at the time it happened.
local function advance(w, a, now)
  local d = w.durations
  for _ = 1, 100 do
    local moved = false
    if a.state == "CREATING" and now >= a.sim_since + 5 then
      set_app(a, "CREATED", a.sim_since + 5); moved = true
    elseif a.state == "STARTING" and now >= a.sim_since + d.serverless_app_start then
      set_app(a, "STARTED", a.sim_since + d.serverless_app_start); moved = true
    elseif a.state == "STOPPING" and now >= a.sim_since + d.serverless_app_stop then
      set_app(a, "STOPPED", a.sim_since + d.serverless_app_stop); moved = true
    elseif (a.state == "CREATED" or a.state == "STOPPED") and active_runs(a) > 0
      and a.autoStartConfiguration.enabled then
      set_app(a, "STARTING", math.max(a.sim_since, a.sim_last_submit or a.sim_since)); moved = true
    end
    for _, id in ipairs(util.sorted_keys(a.runs)) do
      local r = a.runs[id]
      if r.state == "SUBMITTED" then
        set_run(r, "PENDING", r.sim_since); moved = true
      elseif r.state == "PENDING" and a.state == "STARTED" then
        set_run(r, "SCHEDULED", math.max(r.sim_since, a.sim_since)); moved = true
      elseif r.state == "SCHEDULED" and now >= r.sim_since + d.serverless_scheduling then
        set_run(r, "RUNNING", r.sim_since + d.serverless_scheduling)
        r.sim_started = r.sim_since
        moved = true
      elseif r.state == "RUNNING" and now >= r.sim_since + duration(w, r) then
        local t = r.sim_since + duration(w, r)
        local args = r.jobDriver.sparkSubmit.entryPointArguments or {}
        local job_ok, stderr, msg = true, nil, nil
        if sim.failing("serverless.job") then
          job_ok, msg = false, "simulated failure: serverless.job"
          stderr = "Traceback (most recent call last):\n  File \"raw_to_iceberg.py\", line 1, in <module>\n" ..
            "pyspark.errors.exceptions.captured.AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] " ..
            "(simulated failure: serverless.job)\n"
        else
          job_ok, stderr, msg = job.run(w, args, t)
        end
        if job_ok then
          set_run(r, "SUCCESS", t)
        else
          write_stderr(w, a, r, t, stderr or "")
          set_run(r, "FAILED", t, "Job failed, please check complete logs in configured logging " ..
            "destination. ExitCode: 1. Last few exceptions: " .. tostring(msg):sub(1, 200))
        end
        r.totalExecutionDurationSeconds = math.floor(t - r.sim_started)
        a.sim_idle_since = t
        moved = true
      elseif r.state == "CANCELLING" and now >= r.sim_since + d.serverless_cancel then
        set_run(r, "CANCELLED", r.sim_since + d.serverless_cancel, "Job run cancelled by user")
        a.sim_idle_since = r.sim_since
        moved = true
      end
    end
    if a.state == "STARTED" and active_runs(a) == 0 and a.autoStopConfiguration.enabled then
      local idle = (a.autoStopConfiguration.idleTimeoutMinutes or 15) * 60
      local since = math.max(a.sim_since, a.sim_idle_since or a.sim_since)
      if now >= since + idle then set_app(a, "STOPPING", since + idle); moved = true end
    end
    if not moved then break end
  end
end

local public = util.public

local function app_view(a)
  local v = public(a)
  v.runs, v.tokens = nil, nil
  return v
end

local function get_app(w, id)
  local a = world(w).applications[id or ""]
  if not a then error(not_found("Application " .. tostring(id) .. " does not exist")) end
  advance(w, a, sim.now())
  return a
end

local function get_run(a, id)
  local r = a.runs[id or ""]
  if not r then error(not_found("Job run " .. tostring(id) .. " does not exist")) end
  return r
end

local function create(w, p, now)
  if p.type ~= "SPARK" and p.type ~= "HIVE" and p.type ~= "Spark" and p.type ~= "Hive" then
    error(invalid("Unsupported engine " .. tostring(p.type)))
  end
  local apps = world(w).applications
  for _, a in pairs(apps) do
    if p.clientToken and a.sim_token == p.clientToken then return a end
  end
  local id = "00" .. ids(w, 14)
  local a = {applicationId = id, name = p.name, releaseLabel = p.releaseLabel,
             type = p.type:sub(1, 1):upper() .. p.type:sub(2):lower(),
             arn = string.format("arn:aws:emr-serverless:%s:%s:/applications/%s", w.region, w.account, id),
             state = "CREATING", createdAt = now, updatedAt = now, tags = p.tags,
             autoStartConfiguration = p.autoStartConfiguration or {enabled = true},
             autoStopConfiguration = p.autoStopConfiguration or {enabled = true, idleTimeoutMinutes = 15},
             architecture = p.architecture or "X86_64",
             sim_since = now, sim_token = p.clientToken, runs = {}, tokens = {}}
  apps[id] = a
  return a
end

function M.seed_application(w, spec)
  local a = create(w, {name = spec.name, releaseLabel = spec.releaseLabel or "emr-7.1.0",
                       type = spec.type or "SPARK"}, 1700000000)
  set_app(a, spec.state or "CREATED", 1700000000)
  return a
end

local function query_list(qs, name)
  local out = {}
  for pair in (qs or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if k and util.url_decode(k, true) == name then out[#out + 1] = util.url_decode(v, true) end
  end
  return out
end

local function paged(list, q)
  local max = tonumber(q.maxResults or "50") or 50
  local start = tonumber(q.nextToken or "0") or 0
  local out = util.array()
  for i = start + 1, math.min(#list, start + max) do out[#out + 1] = list[i] end
  return out, (start + max < #list) and tostring(start + max) or nil
end

function M.handle(w, req)
  local method = (req.method or "GET"):upper()
  local _, _, path, qs = util.parse_url(req.url)
  local q = util.parse_query(qs)
  local p = {}
  if req.body and req.body ~= "" then
    local okj, v = pcall(json.decode, req.body)
    if not okj or type(v) ~= "table" then error(invalid("Could not parse the request body as JSON")) end
    p = v
  end
  local now = sim.now()
  local seg = {}
  for s in path:gmatch("[^/]+") do seg[#seg + 1] = util.url_decode(s) end
  if seg[1] ~= "applications" then error(util.fault("UnknownOperationException", "No route for " .. path, 404)) end
  local app_id, sub, run_id = seg[2], seg[3], seg[4]
  if not app_id then
    if method == "POST" then
      util.require_params(p, {"releaseLabel", "type", "clientToken"})
      local a = create(w, p, now)
      return ok({applicationId = a.applicationId, name = a.name, arn = a.arn})
    end
    local states = query_list(qs, "states")
    local want = {}
    for _, s in ipairs(states) do want[s] = true end
    local list = {}
    for _, id in ipairs(util.sorted_keys(world(w).applications)) do
      local a = world(w).applications[id]
      advance(w, a, now)
      if #states == 0 or want[a.state] then
        list[#list + 1] = {id = a.applicationId, name = a.name, arn = a.arn, releaseLabel = a.releaseLabel,
                           type = a.type, state = a.state, createdAt = a.createdAt, updatedAt = a.updatedAt,
                           architecture = a.architecture}
      end
    end
    local items, token = paged(list, q)
    return ok({applications = items, nextToken = token})
  end
  local a = get_app(w, app_id)
  if not sub and method == "GET" then return ok({application = app_view(a)}) end
  if sub == "start" and method == "POST" then
    if a.state == "CREATED" or a.state == "STOPPED" then set_app(a, "STARTING", now)
    elseif a.state == "CREATING" or a.state == "TERMINATED" then
      error(invalid("Application " .. app_id .. " is in " .. a.state .. " state and cannot be started"))
    end
    return ok({})
  end
  if sub == "stop" and method == "POST" then
    if active_runs(a) > 0 then
      error(invalid("Application " .. app_id .. " has running jobs: cancel or wait for them " ..
        "before stopping it"))
    end
    if a.state == "STARTED" or a.state == "STARTING" then set_app(a, "STOPPING", now) end
    return ok({})
  end
  if sub == "jobruns" and not run_id and method == "POST" then
    util.require_params(p, {"clientToken", "executionRoleArn"})
    if a.state == "TERMINATED" then error(invalid("Application " .. app_id .. " is terminated")) end
    local earlier = a.tokens[p.clientToken]
    if earlier then   -- idempotent, as EMR Serverless is
      return ok({applicationId = app_id, jobRunId = earlier, arn = a.runs[earlier].arn})
    end
    if p.executionTimeoutMinutes and p.executionTimeoutMinutes < 5 and p.executionTimeoutMinutes ~= 0 then
      error(invalid("RunTimeout must be at least 5 minutes."))
    end
    local id = "00" .. ids(w, 14)
    local r = {applicationId = app_id, jobRunId = id, name = p.name,
               arn = a.arn .. "/jobruns/" .. id, createdBy = "arn:aws:sts::" .. w.account .. ":assumed-role/flowrun",
               createdAt = now, updatedAt = now, executionRole = p.executionRoleArn, state = "SUBMITTED",
               stateDetails = "", releaseLabel = a.releaseLabel, jobDriver = p.jobDriver,
               configurationOverrides = p.configurationOverrides, tags = p.tags,
               executionTimeoutMinutes = p.executionTimeoutMinutes or 720, sim_since = now}
    a.runs[id] = r
    a.tokens[p.clientToken] = id
    a.sim_last_submit = now
    w.emr_serverless.started_runs = (w.emr_serverless.started_runs or 0) + 1
    return ok({applicationId = app_id, jobRunId = id, arn = r.arn})
  end
  if sub == "jobruns" and not run_id and method == "GET" then
    local states = query_list(qs, "states")
    local want = {}
    for _, s in ipairs(states) do want[s] = true end
    local list = {}
    local order = util.sorted_keys(a.runs)
    table.sort(order, function(x, y) return a.runs[x].createdAt > a.runs[y].createdAt end)
    for _, id in ipairs(order) do
      local r = a.runs[id]
      if #states == 0 or want[r.state] then
        list[#list + 1] = {applicationId = app_id, id = id, name = r.name, arn = r.arn,
                           createdBy = r.createdBy, createdAt = r.createdAt, updatedAt = r.updatedAt,
                           executionRole = r.executionRole, state = r.state,
                           stateDetails = r.stateDetails, releaseLabel = r.releaseLabel, type = a.type}
      end
    end
    local items, token = paged(list, q)
    return ok({jobRuns = items, nextToken = token})
  end
  if sub == "jobruns" and run_id and method == "GET" then
    return ok({jobRun = public(get_run(a, run_id))})
  end
  if sub == "jobruns" and run_id and method == "DELETE" then
    local r = get_run(a, run_id)
    if DONE[r.state] then
      error(invalid("Job run " .. run_id .. " is in " .. r.state .. " state and cannot be cancelled"))
    end
    if r.state ~= "CANCELLING" then set_run(r, "CANCELLING", now) end
    return ok({applicationId = app_id, jobRunId = run_id})
  end
  error(util.fault("UnknownOperationException", method .. " " .. path .. " is not an operation", 404))
end

return M
