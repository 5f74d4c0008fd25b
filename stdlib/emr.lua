-- emr — Amazon EMR operators and sensors for workflows.
--
--   local emr = require "emr"
--   local c = emr.create_cluster(spec, {run_id = ctx.run_id, task = ctx.task})
--   emr.wait_cluster(c.cluster_id)                  -- WAITING or RUNNING
--   local step = emr.spark_step{name = "job", script = "s3://b/job.py", args = {...},
--                               conf = {["spark.sql.catalog.glue"] = "..."}}
--   local ids = emr.add_steps(c.cluster_id, {step})
--   emr.wait_step(c.cluster_id, ids[1])             -- COMPLETED, or raises with the details
--   emr.terminate(c.cluster_id)                     -- waits for TERMINATED
--
-- Idempotent for re-runs: a cluster is tagged with its run and task (flowrun:run-id,
-- flowrun:task) and found again (any state short of terminating) instead of created twice;
-- a step is found again by name on its cluster unless it failed or was cancelled. A waiting
-- wait_step that is cancelled (Ctrl-C, a timeout of its task) cancels the step on the
-- cluster. A failed step's error carries FailureDetails and the tail of its stderr.
local flow = require "flow"
local operator = require "flow.operator"

local M = {}

local function aws() return require "aws" end

M.ACTIVE = {"STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"}
M.TAG_RUN, M.TAG_TASK, M.TAG_WORKFLOW = "flowrun:run-id", "flowrun:task", "flowrun:workflow"
-- botocore waiter defaults for EMR: 30 s between polls, 60 attempts.
M.WAIT_DEFAULTS = {every = 30, timeout = 30 * 60}

local log, fail = operator.log, operator.fail

-- IAM: M.iam.<operator>(args) -> the grants the operator may need on any of its paths (see
-- aws.grants). A cluster argument is a cluster id, or declare.tagged(workflow): the
-- clusters that workflow creates, found by the flowrun:workflow tag create_cluster puts on them
-- (the actions on them are conditioned on it), or nil: any cluster.
M.iam = {}
local function D() return require "aws.grants" end

local function on_cluster(actions, c)
  local d = D()
  if type(c) == "string" then
    return d.grant("EmrCluster", actions, d.arn("elasticmapreduce", "cluster/" .. c))
  elseif type(c) == "table" and c.workflow then
    return d.grant("EmrClustersOfThisWorkflow", actions, d.arn("elasticmapreduce", "cluster/*"),
      {condition = {StringEquals = {["aws:ResourceTag/" .. M.TAG_WORKFLOW] = c.workflow}}})
  end
  return d.grant("EmrAnyCluster", actions, d.arn("elasticmapreduce", "cluster/*"),
    {why = "the cluster is not known before the run and is not one flowrun tags"})
end

local function reason_text(status)
  local r = status and status.StateChangeReason
  if not r or ((r.Code or "") == "" and (r.Message or "") == "") then return "" end
  return string.format(" (%s%s%s)", r.Code or "", (r.Code and r.Message) and ": " or "",
    r.Message or "")
end

function M.describe(id)
  if type(id) ~= "string" then
    error("emr: expected a cluster id (string), got " .. type(id), 2)
  end
  return aws().emr.describe_cluster{ClusterId = id}.Cluster
end

function M.iam.describe(c) return on_cluster("elasticmapreduce:DescribeCluster", c) end

local function tags_of(cluster)
  local m = {}
  for _, kv in ipairs(cluster.Tags or {}) do m[kv.Key] = kv.Value end
  return m
end

-- find_cluster{run_id, task, name, states} -> cluster (DescribeCluster shape) or nil: the
-- newest cluster in one of states (default: not terminating) tagged with run_id (and task).
-- A cluster the caller may not describe (a policy scoped to the clusters flowrun tags) is not
-- ours: it is passed over.
function M.find_cluster(q)
  assert(q.run_id, "emr.find_cluster: run_id is required")
  for page in aws().paginate("emr", "ListClusters", {ClusterStates = q.states or M.ACTIVE}) do
    for _, c in ipairs(page.Clusters or {}) do
      if not q.name or c.Name == q.name then
        local ok, full = pcall(M.describe, c.Id)
        if not ok and not (type(full) == "table" and (full.code == "aws.AccessDeniedException"
                                                   or full.code == "aws.AccessDenied")) then
          error(full, 0)
        end
        local tags = ok and tags_of(full) or {}
        if tags[M.TAG_RUN] == q.run_id and (not q.task or tags[M.TAG_TASK] == q.task) then
          return full
        end
      end
    end
  end
  return nil
end

-- q.cluster: the clusters looked at (declare.tagged(workflow))
function M.iam.find_cluster(q)
  return D().join(D().unscoped("EmrList", "elasticmapreduce:ListClusters",
    "ListClusters takes no resource"), M.iam.describe(q and q.cluster))
end

local function ctx_of(opts)
  opts = opts or {}
  local ctx = opts.ctx
  if not ctx then ctx = require("flow.context").current() or {} end
  return opts.run_id or ctx.run_id, opts.task or ctx.task, opts.workflow or ctx.workflow
end

-- create_cluster(spec, opts) -> {cluster_id, cluster_arn, created = bool}.
-- spec: RunJobFlow parameters as boto3 takes them (Name, ReleaseLabel, Instances, ...).
-- opts: run_id, task, workflow (or ctx = the task's ctx) for the tags that make a re-run find
-- this cluster again; log.
function M.create_cluster(spec, opts)
  if type(spec) ~= "table" or not spec.Name then
    error("emr.create_cluster: expected RunJobFlow parameters with a Name", 2)
  end
  local run_id, task, workflow = ctx_of(opts)
  if run_id then
    local found = M.find_cluster{run_id = run_id, task = task, name = spec.Name}
    if found then
      log(opts, string.format("EMR cluster %s (%s) already exists for this run: reusing it",
        found.Id, found.Status.State))
      return {cluster_id = found.Id, cluster_arn = found.ClusterArn, created = false}
    end
  end
  local params = {}
  for k, v in pairs(spec) do params[k] = v end
  local tags = {}
  for _, kv in ipairs(spec.Tags or {}) do tags[#tags + 1] = kv end
  if run_id then tags[#tags + 1] = {Key = M.TAG_RUN, Value = run_id} end
  if task then tags[#tags + 1] = {Key = M.TAG_TASK, Value = task} end
  if workflow then tags[#tags + 1] = {Key = M.TAG_WORKFLOW, Value = workflow} end
  if #tags > 0 then params.Tags = tags end
  if not run_id then
    local r = aws().emr.run_job_flow(params)
    log(opts, "EMR cluster " .. r.JobFlowId .. " created")
    return {cluster_id = r.JobFlowId, cluster_arn = r.ClusterArn, created = true}
  end
  -- RunJobFlow has no idempotency token: a retry after a lost answer (timeout, 5xx) would start
  -- a second cluster. So each attempt is a single try, and before trying again the tagged
  -- cluster is looked for: the lost call may have created it.
  local attempts = opts and opts.attempts or 3
  for attempt = 1, attempts do
    local ok, r = pcall(aws().emr.run_job_flow, params, {max_attempts = 1})
    if ok then
      log(opts, "EMR cluster " .. r.JobFlowId .. " created")
      return {cluster_id = r.JobFlowId, cluster_arn = r.ClusterArn, created = true}
    end
    if flow.cancelled(r) or type(r) ~= "table" or not r.retryable or attempt == attempts then
      error(r, 0)
    end
    log(opts, "RunJobFlow failed (" .. tostring(r.code) .. "), looking for the cluster before retrying")
    flow.sleep(math.random() * math.min(2 ^ (attempt - 1), 20))
    local found = M.find_cluster{run_id = run_id, task = task, name = spec.Name}
    if found then
      log(opts, "EMR cluster " .. found.Id .. " was created by the call whose answer was lost")
      return {cluster_id = found.Id, cluster_arn = found.ClusterArn, created = true}
    end
  end
end

-- opts.workflow: the tag value the cluster gets (create_cluster's workflow), which the actions
-- on it are then conditioned on; opts.instance_profile_role: the role in spec.JobFlowRole's
-- instance profile (default: the role of the profile's name, as EMR_EC2_DefaultRole is made).
function M.iam.create_cluster(spec, opts)
  opts = opts or {}
  local d = D()
  local tag = opts.workflow and {StringEquals = {["aws:RequestTag/" .. M.TAG_WORKFLOW] = opts.workflow}}
  local profile = spec.JobFlowRole and (spec.JobFlowRole:match("instance%-profile/(.+)$") or spec.JobFlowRole)
  return d.join(M.iam.find_cluster{cluster = opts.workflow and d.tagged(opts.workflow)},
    d.grant("EmrCreateCluster", "elasticmapreduce:RunJobFlow", "*", {condition = tag,
      why = "RunJobFlow takes no resource: the cluster does not exist yet" ..
        (tag and "; it must carry the flowrun:workflow tag" or "")}),
    d.pass_role("PassRolesToEmr", spec.ServiceRole, "elasticmapreduce.amazonaws.com"),
    d.pass_role("PassRolesToEmrInstances", opts.instance_profile_role or profile, "ec2.amazonaws.com"))
end

-- wait_cluster(id, opts) -> cluster once WAITING or RUNNING. Fails (emr.cluster_failed) when
-- the cluster terminates, with its StateChangeReason. opts: every, timeout, log.
function M.wait_cluster(id, opts)
  opts = opts or {}
  return flow.poll(function()
    local c = M.describe(id)
    local st = c.Status.State
    if st == "WAITING" or st == "RUNNING" then return c end
    if st == "TERMINATING" or st == "TERMINATED" or st == "TERMINATED_WITH_ERRORS" then
      error(fail("emr.cluster_failed", string.format("EMR cluster %s is %s%s", id, st,
        reason_text(c.Status)), {state = st, reason = c.Status.StateChangeReason}), 0)
    end
    return nil, st
  end, {every = opts.every or M.WAIT_DEFAULTS.every,
        timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
        name = "EMR cluster " .. id, log = opts.log})
end

function M.iam.wait_cluster(c) return M.iam.describe(c) end

-- spark_step{name, script, args, conf, deploy_mode = "cluster", action_on_failure =
-- "CONTINUE", submit_args} -> a step for add_steps: command-runner.jar running spark-submit.
function M.spark_step(s)
  if type(s) ~= "table" or not s.name or not s.script then
    error("emr.spark_step: expected {name = ..., script = ..., args = {...}, conf = {...}}", 2)
  end
  local args = {"spark-submit", "--deploy-mode", s.deploy_mode or "cluster"}
  for _, a in ipairs(s.submit_args or {}) do args[#args + 1] = a end
  local keys = {}
  for k in pairs(s.conf or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    args[#args + 1] = "--conf"
    args[#args + 1] = k .. "=" .. tostring(s.conf[k])
  end
  args[#args + 1] = s.script
  for _, a in ipairs(s.args or {}) do args[#args + 1] = tostring(a) end
  return {Name = s.name, ActionOnFailure = s.action_on_failure or "CONTINUE",
          HadoopJarStep = {Jar = "command-runner.jar", Args = args}}
end

local REUSABLE = {PENDING = true, RUNNING = true, COMPLETED = true, CANCEL_PENDING = true}

local function list_steps(id)
  local out = {}
  for page in aws().paginate("emr", "ListSteps", {ClusterId = id}) do
    for _, s in ipairs(page.Steps or {}) do out[#out + 1] = s end
  end
  return out
end

-- add_steps(id, steps, opts) -> step ids, in order. A step whose name is already on the
-- cluster (pending, running or completed) is not added again: its id is returned.
function M.add_steps(id, steps, opts)
  if type(steps) ~= "table" or #steps == 0 then
    error("emr.add_steps: expected a non-empty list of steps", 2)
  end
  -- AddJobFlowSteps has no idempotency token either: single tries, and the steps already on
  -- the cluster are listed again before each one.
  local attempts = opts and opts.attempts or 3
  for attempt = 1, attempts do
    local ok, ids = pcall(M._add_steps_once, id, steps, opts)
    if ok then return ids end
    if flow.cancelled(ids) or type(ids) ~= "table" or not ids.retryable or attempt == attempts then
      error(ids, 0)
    end
    log(opts, "AddJobFlowSteps failed (" .. tostring(ids.code) .. "), checking the cluster's steps")
    flow.sleep(math.random() * math.min(2 ^ (attempt - 1), 20))
  end
end

function M.iam.add_steps(c)
  return on_cluster({"elasticmapreduce:ListSteps", "elasticmapreduce:AddJobFlowSteps"}, c)
end

function M._add_steps_once(id, steps, opts)
  local existing = {}
  for _, s in ipairs(list_steps(id)) do   -- newest first: keep the newest per name
    if REUSABLE[s.Status.State] and not existing[s.Name] then existing[s.Name] = s.Id end
  end
  local ids, new, where = {}, {}, {}
  for i, s in ipairs(steps) do
    if existing[s.Name] then
      ids[i] = existing[s.Name]
      log(opts, string.format("EMR step %q is already on %s as %s: reusing it", s.Name, id,
        existing[s.Name]))
    else
      new[#new + 1] = s
      where[#new] = i
    end
  end
  if #new > 0 then
    local r = aws().emr.add_job_flow_steps({JobFlowId = id, Steps = new}, {max_attempts = 1})
    for k, sid in ipairs(r.StepIds or {}) do ids[where[k]] = sid end
  end
  return ids
end

-- gunzip when the text is gzip (EMR writes its logs gzipped); nil when it cannot.
local function maybe_gunzip(body)
  if body:sub(1, 2) ~= "\31\139" then return body end
  return (require("zlib").gunzip(body, 16 << 20))
end

local function tail(text, n)
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "\n", from)
end

-- The tail of a step's stderr from S3 (FailureDetails.LogFile, or LogUri/<id>/steps/<sid>/),
-- or nil. Logs reach S3 minutes after the step ends: opts.log_wait polls for that long.
function M.step_stderr_tail(cluster, step, opts)
  local candidates = {}
  local fd = step.Status and step.Status.FailureDetails
  local lf = fd and fd.LogFile
  if lf and lf:match("^s3n?://") then
    lf = lf:gsub("^s3n://", "s3://")
    if lf:match("/$") then candidates[#candidates + 1] = lf .. "stderr.gz"
    elseif lf:match("stderr") then candidates[#candidates + 1] = lf
    else candidates[#candidates + 1] = lf:gsub("[^/]*$", "") .. "stderr.gz" end
  end
  if cluster and cluster.LogUri then
    local base = cluster.LogUri:gsub("^s3n://", "s3://"):gsub("/?$", "/")
    candidates[#candidates + 1] = string.format("%s%s/steps/%s/stderr.gz", base, cluster.Id, step.Id)
  end
  return M.log_tail(candidates, opts)
end

-- the cluster is described for its LogUri; the logs are read below opts.log_uri
function M.iam.step_stderr_tail(c, opts)
  return D().join(M.iam.describe(c), M.iam.log_tail({D().under(opts and opts.log_uri)}))
end

-- log_tail(uris, opts) -> the last lines of the first of uris that exists in S3 (gunzipped when
-- gzip), and its uri; or nil. opts.log_wait: seconds to poll for it (logs reach S3 minutes
-- after the end), every 15 s; tail_lines (20); log. Cancellation propagates.
function M.log_tail(candidates, opts)
  opts = opts or {}
  local s3 = require "s3"
  if #candidates == 0 then return nil end
  -- a log not there yet is NoSuchKey (or AccessDenied for a caller who may not list the
  -- bucket: S3 hides missing keys from those); the last other refusal is said at the end
  local refused
  local function try()
    for _, uri in ipairs(candidates) do
      local ok, body = pcall(s3.get, uri)
      if ok and body then return body, uri end
      if not ok and flow.cancelled(body) then error(body, 0) end
      if not ok and type(body) == "table" and body.code ~= "aws.NoSuchKey" then
        refused = uri .. ": " .. tostring(body)
      end
    end
    return nil, "no stderr yet"
  end
  local body, uri
  if (opts.log_wait or 0) > 0 then
    local ok, b, u = pcall(flow.poll, try, {every = 15, timeout = opts.log_wait,
                                           name = "step log", log = opts.log})
    if ok then body, uri = b, u elseif flow.cancelled(b) then error(b, 0) end
  else
    body, uri = try()
  end
  if not body then
    if refused then log(opts, "step log not read: " .. refused) end
    return nil
  end
  local text = maybe_gunzip(body)
  if not text then return nil, uri end
  return tail(text, opts.tail_lines or 20), uri
end

-- locations: s3:// patterns the logs are read from (declare.under(log_uri))
function M.iam.log_tail(locations)
  local out = {}
  for _, l in ipairs(locations or {}) do out = D().join(out, require("s3").iam.get(l)) end
  return out
end

local function step_failed(id, step, opts)
  local st = step.Status.State
  local fd = step.Status.FailureDetails or {}
  local parts = {string.format("EMR step %q (%s) on %s %s", step.Name or "?", step.Id, id, st)}
  if fd.Reason and fd.Reason ~= "" then parts[#parts + 1] = "reason: " .. fd.Reason end
  if fd.Message and fd.Message ~= "" then parts[#parts + 1] = "message: " .. fd.Message end
  if fd.LogFile and fd.LogFile ~= "" then parts[#parts + 1] = "log: " .. fd.LogFile end
  local cluster
  local okc, c = pcall(M.describe, id)
  if okc then cluster = c elseif flow.cancelled(c) then error(c, 0) end
  local text
  if st == "FAILED" then
    local ok, t = pcall(M.step_stderr_tail, cluster, step, opts)
    if ok then text = t elseif flow.cancelled(t) then error(t, 0) end
  end
  local msg = table.concat(parts, "; ")
  if text then msg = msg .. "\n--- stderr (last lines) ---\n" .. text end
  return fail("emr.step_failed", msg, {state = st, failure_details = step.Status.FailureDetails,
                                       stderr_tail = text, step_id = step.Id, cluster_id = id})
end

local function cancel_step(id, step_id, opts)
  local ok, err = pcall(function()
    local r = aws().emr.cancel_steps{ClusterId = id, StepIds = {step_id},
                                     StepCancellationOption = "SEND_INTERRUPT"}
    local info = r.CancelStepsInfoList and r.CancelStepsInfoList[1] or {}
    log(opts, string.format("EMR step %s: cancel %s%s", step_id, info.Status or "sent",
      (info.Reason and info.Reason ~= "") and (" (" .. info.Reason .. ")") or ""))
  end)
  if not ok then log(opts, "EMR step " .. step_id .. ": cancel failed: " .. tostring(err)) end
end

-- wait_step(id, step_id, opts) -> the step once COMPLETED. FAILED, CANCELLED and INTERRUPTED
-- raise emr.step_failed with FailureDetails (reason, message, log file) and, for FAILED, the
-- tail of stderr (opts.log_wait: how long to wait for the log to reach S3, 0 by default).
-- Cancelling the waiting task cancels the step (CancelSteps, shielded). opts: every, timeout,
-- log, log_wait, tail_lines, cancel_on_cancel (default true).
function M.wait_step(id, step_id, opts)
  opts = opts or {}
  local function check()
    local step = aws().emr.describe_step{ClusterId = id, StepId = step_id}.Step
    local st = step.Status.State
    if st == "COMPLETED" then return step end
    if st == "FAILED" or st == "CANCELLED" or st == "INTERRUPTED" then
      error(step_failed(id, step, opts), 0)
    end
    return nil, st
  end
  local res = table.pack(pcall(flow.poll, check, {
    every = opts.every or M.WAIT_DEFAULTS.every,
    timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
    name = "EMR step " .. step_id, log = opts.log}))
  if res[1] then return table.unpack(res, 2, res.n) end
  local err = res[2]
  if flow.cancelled(err) and opts.cancel_on_cancel ~= false then
    flow.shield(cancel_step, id, step_id, opts)
  end
  error(err, 0)
end

-- a failure describes the cluster (its LogUri) and reads the step's stderr below opts.log_uri;
-- a cancelled wait cancels the step
function M.iam.wait_step(c, step_id, opts)
  opts = opts or {}
  local actions = {"elasticmapreduce:DescribeStep", "elasticmapreduce:DescribeCluster"}
  if opts.cancel_on_cancel ~= false then actions[#actions + 1] = "elasticmapreduce:CancelSteps" end
  return D().join(on_cluster(actions, c), M.iam.log_tail({D().under(opts.log_uri)}))
end

-- terminate(id, opts) -> final state ("TERMINATED" or "TERMINATED_WITH_ERRORS"). Idempotent:
-- a cluster already terminating is only waited for. Waits for the end (opts.wait = false does
-- not). opts: every, timeout, log.
function M.terminate(id, opts)
  opts = opts or {}
  local c = M.describe(id)
  local st = c.Status.State
  if st ~= "TERMINATED" and st ~= "TERMINATED_WITH_ERRORS" and st ~= "TERMINATING" then
    aws().emr.terminate_job_flows{JobFlowIds = {id}}
    log(opts, "EMR cluster " .. id .. ": terminate requested (was " .. st .. ")")
  end
  if opts.wait == false then return st end
  return flow.poll(function()
    local cc = M.describe(id)
    local s = cc.Status.State
    if s == "TERMINATED" or s == "TERMINATED_WITH_ERRORS" then
      log(opts, "EMR cluster " .. id .. " " .. s .. reason_text(cc.Status))
      return s
    end
    return nil, s
  end, {every = opts.every or M.WAIT_DEFAULTS.every,
        timeout = opts.timeout or M.WAIT_DEFAULTS.timeout,
        name = "EMR cluster " .. id .. " termination", log = opts.log})
end

function M.iam.terminate(c)
  return on_cluster({"elasticmapreduce:DescribeCluster", "elasticmapreduce:TerminateJobFlows"}, c)
end

return M
