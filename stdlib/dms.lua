-- dms — AWS DMS operators and sensors for workflows.
--
--   local dms = require "dms"
--   dms.start_task(arn, {type = "reload-target"})   -- no-op when already starting/running
--   local task = dms.wait_task(arn, {timeout = "6h", progress = ctx.progress, stop_on_cancel = true})
--   local stats = dms.table_statistics(arn)          -- every table, all pages
--   dms.stop_task(arn)
--   local task = dms.check_cdc(arn, {max_latency = 600})  -- a streaming task is healthy, or raises
--   local seconds = dms.cdc_latency(arn)             -- CloudWatch CDCLatencySource/Target, or nil
--
-- wait_task succeeds when the full load finished (a stopped task whose StopReason says so,
-- or, with cdc = true, a running task whose full load is at 100%). Unlike Airflow's
-- DmsTaskCompletedSensor, a stopped task whose StopReason is an error, or with errored tables,
-- is a failure, and the error names the reason, LastFailureMessage and the tables in error.
local flow = require "flow"
local operator = require "flow.operator"

local M = {}

local function aws() return require "aws" end

-- StopReason values that mean the load finished; those that mean it did not. Others
-- (STOPPED_AFTER_DDL_APPLY, STOPPED_AT_SERVER_TIME, STOPPED_AT_COMMIT_TIME) are stop points a
-- user set: the load did not finish either.
M.FINISHED = {
  ["Stop Reason NORMAL"] = true,
  ["Stop Reason FULL_LOAD_ONLY_FINISHED"] = true,
  ["Stop Reason STOPPED_AFTER_FULL_LOAD"] = true,
  ["Stop Reason STOPPED_AFTER_CACHED_EVENTS"] = true,
}
M.ERRORS = {
  ["Stop Reason RECOVERABLE_ERROR"] = true,
  ["Stop Reason FATAL_ERROR"] = true,
  ["Stop Reason STOPPED_DUE_TO_LOW_MEMORY"] = true,
  ["Stop Reason STOPPED_DUE_TO_LOW_DISK"] = true,
  ["Stop Reason EXPRESS_LICENSE_LIMITS_REACHED"] = true,
}
-- botocore's ReplicationTaskStopped waiter fails on these.
local BAD_STATES = {failed = true, ["failed-move"] = true, deleting = true, modifying = true,
                    moving = true, testing = true, creating = true, ready = true}

-- botocore waiter defaults for DMS: 15 s between polls, 60 attempts.
M.WAIT_DEFAULTS = {every = 15, timeout = 15 * 60}

local log, fail = operator.log, operator.fail

-- IAM: M.iam.<operator>(args) -> the grants the operator may need on any of its paths (see
-- aws.grants), each next to its operator.
M.iam = {}
local function D() return require "aws.grants" end
local DESCRIBE_WHY = "DMS's Describe actions take no resource: they cannot be narrowed to the task"

-- describe(arn) -> the ReplicationTask table. Raises aws.ResourceNotFoundFault for an
-- unknown ARN.
function M.describe(arn)
  if type(arn) ~= "string" then
    error("dms: expected a replication task ARN (string), got " .. type(arn), 2)
  end
  local r = aws().dms.describe_replication_tasks{
    Filters = {{Name = "replication-task-arn", Values = {arn}}}, WithoutSettings = true}
  local task = r.ReplicationTasks and r.ReplicationTasks[1]
  if not task then
    error(fail("dms.not_found", "DMS task " .. arn .. " not found"), 2)
  end
  return task
end

function M.iam.describe(arn)
  return D().unscoped("DmsDescribe", "dms:DescribeReplicationTasks", DESCRIBE_WHY)
end

-- start_task(arn, {type = "start-replication" | "resume-processing" | "reload-target"})
-- -> {arn, status, started = bool, type}. Does nothing when the task is already starting or
-- running (a re-run after a crash must not restart a load in progress). Without type: a task
-- that never ran gets start-replication, any other reload-target.
function M.start_task(arn, opts)
  opts = opts or {}
  local task = M.describe(arn)
  if task.Status == "starting" or task.Status == "running" then
    log(opts, string.format("DMS task %s is already %s: not starting it again",
      task.ReplicationTaskIdentifier, task.Status))
    return {arn = arn, status = task.Status, started = false}
  end
  local kind = opts.type
  if not kind then kind = task.Status == "ready" and "start-replication" or "reload-target" end
  if kind == "start-replication" and task.Status ~= "ready" then
    -- DMS refuses start-replication for a task that ran before: say what to use instead.
    kind = "reload-target"
    log(opts, "DMS task has run before: start-replication becomes reload-target")
  end
  local ok, r = pcall(aws().dms.start_replication_task, {ReplicationTaskArn = arn,
                                                        StartReplicationTaskType = kind})
  if not ok then
    -- a retry of a start whose answer was lost finds the task already starting: that start
    -- was ours
    if flow.is_error(r, "aws.InvalidResourceStateFault") then
      local now = M.describe(arn)
      if now.Status == "starting" or now.Status == "running" then
        log(opts, "DMS task " .. task.ReplicationTaskIdentifier .. " is " .. now.Status ..
          " (the start went through)")
        return {arn = arn, status = now.Status, started = true, type = kind}
      end
    end
    error(r, 0)
  end
  local st = r.ReplicationTask and r.ReplicationTask.Status or "starting"
  log(opts, string.format("DMS task %s: %s (%s)", task.ReplicationTaskIdentifier, st, kind))
  return {arn = arn, status = st, started = true, type = kind}
end

-- a lost answer's retry describes the task again: no other action
function M.iam.start_task(arn, opts)
  return D().join(M.iam.describe(arn), D().grant("DmsTask", "dms:StartReplicationTask", arn))
end

-- table_statistics(arn, filters) -> list of TableStatistics (every page).
function M.table_statistics(arn, filters)
  local out = {}
  for page in aws().paginate("dms", "DescribeTableStatistics", {ReplicationTaskArn = arn,
                                                               Filters = filters, MaxRecords = 500}) do
    for _, s in ipairs(page.TableStatistics or {}) do out[#out + 1] = s end
  end
  return out
end

function M.iam.table_statistics(arn)
  return D().grant("DmsTask", "dms:DescribeTableStatistics", arn)
end

local function errored_tables(arn)
  local ok, stats = pcall(M.table_statistics, arn)
  if not ok then return nil end
  local names = {}
  for _, s in ipairs(stats) do
    if s.TableState == "Table error" or (s.FullLoadErrorRows or 0) > 0 then
      names[#names + 1] = s.SchemaName .. "." .. s.TableName
    end
  end
  return names
end

local function describe_progress(task)
  local s = task.ReplicationTaskStats or {}
  return string.format("%s %d%% (%d loaded, %d loading, %d queued%s)", task.Status,
    s.FullLoadProgressPercent or 0, s.TablesLoaded or 0, s.TablesLoading or 0,
    s.TablesQueued or 0, (s.TablesErrored or 0) > 0 and (", " .. s.TablesErrored .. " errored") or "")
end

local function task_failed(arn, task, why)
  local parts = {string.format("DMS task %s %s", task.ReplicationTaskIdentifier or arn, why)}
  if task.StopReason then parts[#parts + 1] = "StopReason: " .. task.StopReason end
  if task.LastFailureMessage and task.LastFailureMessage ~= "" then
    parts[#parts + 1] = "LastFailureMessage: " .. task.LastFailureMessage
  end
  local bad = errored_tables(arn)
  if bad and #bad > 0 then parts[#parts + 1] = "tables in error: " .. table.concat(bad, ", ") end
  return fail("dms.task_failed", table.concat(parts, "; "), {
    status = task.Status, stop_reason = task.StopReason, tables_errored = bad,
    last_failure_message = task.LastFailureMessage})
end

-- wait_task(arn, opts) -> the task once its load finished. opts: every, timeout (botocore's
-- 15 s x 60 by default; a real load wants e.g. "6h"), cdc (succeed when a full-load-and-cdc
-- task's full load is complete and it is running), progress (fn(pct, msg), e.g. ctx.progress),
-- log (fn(msg)), grace (seconds during which "ready" is taken as not started yet; 60),
-- stop_on_cancel (the caller started the task: cancelling the wait stops it, shielded).
-- Raises dms.task_failed with the reason, or flow.timeout naming the last status seen.
function M.wait_task(arn, opts)
  opts = opts or {}
  local grace = opts.grace or 60
  local start = flow.now()
  local function check()
    local task = M.describe(arn)
    local st, s = task.Status, task.ReplicationTaskStats or {}
    local pct = s.FullLoadProgressPercent or 0
    if opts.progress then pcall(opts.progress, pct, describe_progress(task)) end
    if st == "stopped" then
      local reason = task.StopReason or ""
      if M.ERRORS[reason] then error(task_failed(arn, task, "stopped on an error"), 0) end
      if (s.TablesErrored or 0) > 0 then
        error(task_failed(arn, task, "stopped with " .. s.TablesErrored .. " table(s) in error"), 0)
      end
      -- a finished reason with the load short of 100% is a stop by hand part way
      if (M.FINISHED[reason] or reason == "") and pct >= 100 then return task end
      error(task_failed(arn, task, "stopped before its load finished"), 0)
    elseif st == "running" and opts.cdc and pct >= 100 and (s.TablesErrored or 0) == 0 then
      return task
    elseif st == "ready" and flow.now() - start < grace then
      return nil, "ready (not started yet)"
    elseif BAD_STATES[st] then
      error(task_failed(arn, task, "is " .. st), 0)
    end
    return nil, describe_progress(task)
  end
  local ok, r = pcall(flow.poll, check, {every = opts.every or M.WAIT_DEFAULTS.every,
                                         timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
                                         name = "DMS task " .. (arn:match("[^:]+$") or arn),
                                         log = opts.log})
  if ok then return r end
  if opts.stop_on_cancel and flow.cancelled(r) then
    -- the caller started this load: a cancelled run must not leave it running (and paying).
    -- Said under the running task whatever opts.log is (a quiet poll must not hide this).
    flow.shield(function()
      local sok, serr = pcall(M.stop_task, arn, {log = function() end})
      local id = arn:match("[^:]+$") or arn
      if sok then
        log(nil, "DMS task " .. id .. ": stop requested (the run was cancelled)")
      else
        log(nil, "DMS task " .. id .. ": stop failed: " .. tostring(serr))
      end
    end)
  end
  error(r, 0)
end

-- a failure names the tables in error (table statistics); with stop_on_cancel, a cancelled wait
-- stops the task
function M.iam.wait_task(arn, opts)
  return D().join(M.iam.describe(arn), M.iam.table_statistics(arn),
    opts and opts.stop_on_cancel and M.iam.stop_task(arn) or nil)
end

-- cdc_latency(arn, opts) -> seconds, or nil when CloudWatch has no datapoint: the highest
-- CDCLatencySource and CDCLatencyTarget (the Maximum statistic) over the last opts.window
-- seconds (900). DMS publishes them per task with the dimensions ReplicationInstanceIdentifier
-- and ReplicationTaskIdentifier (the task's resource id: the last part of its ARN).
function M.cdc_latency(arn, opts)
  opts = opts or {}
  local task = opts.task or M.describe(arn)
  local r = aws().dms.describe_replication_instances{Filters = {
    {Name = "replication-instance-arn", Values = {task.ReplicationInstanceArn}}}}
  local inst = r.ReplicationInstances and r.ReplicationInstances[1]
  if not inst then
    error(fail("dms.not_found", "DMS replication instance " .. tostring(task.ReplicationInstanceArn) ..
      " not found"), 2)
  end
  local now = flow.time()
  local window = opts.window or 900
  local worst
  for _, metric in ipairs({"CDCLatencySource", "CDCLatencyTarget"}) do
    local m = aws().cloudwatch.get_metric_statistics{
      Namespace = "AWS/DMS", MetricName = metric, StartTime = math.floor(now - window),
      EndTime = math.ceil(now), Period = 60, Statistics = {"Maximum"},
      Dimensions = {{Name = "ReplicationInstanceIdentifier", Value = inst.ReplicationInstanceIdentifier},
                    {Name = "ReplicationTaskIdentifier", Value = arn:match("([^:]+)$")}}}
    for _, dp in ipairs(m.Datapoints or {}) do
      if dp.Maximum and (not worst or dp.Maximum > worst) then worst = dp.Maximum end
    end
  end
  return worst
end

function M.iam.cdc_latency(arn, opts)
  local d = D()
  return d.join(M.iam.describe(arn),
    d.unscoped("DmsDescribe", "dms:DescribeReplicationInstances", DESCRIBE_WHY),
    d.unscoped("CloudWatchMetrics", "cloudwatch:GetMetricStatistics",
      "CloudWatch's GetMetricStatistics takes no resource (nor a DMS dimension condition)"))
end

-- check_cdc(arn, opts) -> task, latency (seconds or nil) when a full-load-and-cdc task streams
-- healthily: running, no table in error, CDC latency at most opts.max_latency seconds (when
-- CloudWatch has datapoints; none is logged, not failed). Raises dms.cdc_unhealthy saying
-- which of these does not hold, with StopReason, LastFailureMessage and the tables in error.
-- opts: max_latency, window (see cdc_latency), log.
function M.check_cdc(arn, opts)
  opts = opts or {}
  local task = M.describe(arn)
  local s = task.ReplicationTaskStats or {}
  if task.Status ~= "running" then
    local why = "is " .. task.Status .. ", not streaming changes"
    local err = task_failed(arn, task, why)
    err.code = "dms.cdc_unhealthy"
    error(err, 2)
  end
  if (s.TablesErrored or 0) > 0 then
    local err = task_failed(arn, task, "has " .. s.TablesErrored .. " table(s) in error")
    err.code = "dms.cdc_unhealthy"
    error(err, 2)
  end
  local latency = M.cdc_latency(arn, {task = task, window = opts.window})
  if latency == nil then
    log(opts, "DMS task " .. task.ReplicationTaskIdentifier .. ": no CDC latency datapoints in " ..
      "CloudWatch (the check is skipped)")
  elseif opts.max_latency and latency > opts.max_latency then
    error(fail("dms.cdc_unhealthy", string.format("DMS task %s: CDC latency %.0f s is above the " ..
      "limit of %.0f s (CDCLatencySource/CDCLatencyTarget, last %d min)",
      task.ReplicationTaskIdentifier, latency, opts.max_latency, math.floor((opts.window or 900) / 60)),
      {latency = latency}), 2)
  else
    log(opts, string.format("DMS task %s streams changes: CDC latency %.0f s", task.ReplicationTaskIdentifier,
      latency))
  end
  return task, latency
end

-- an unhealthy stream names the tables in error
function M.iam.check_cdc(arn, opts)
  return D().join(M.iam.describe(arn), M.iam.table_statistics(arn), M.iam.cdc_latency(arn, opts))
end

-- stop_task(arn) -> the task as DMS answered; nothing to do when it is not running.
function M.stop_task(arn, opts)
  local task = M.describe(arn)
  if task.Status ~= "running" and task.Status ~= "starting" then
    log(opts, "DMS task is " .. task.Status .. ": nothing to stop")
    return task
  end
  return aws().dms.stop_replication_task{ReplicationTaskArn = arn}.ReplicationTask
end

function M.iam.stop_task(arn)
  return D().join(M.iam.describe(arn), D().grant("DmsTask", "dms:StopReplicationTask", arn))
end

return M
