-- sim/emr.lua — EMR clusters and steps in the simulator. Clusters go STARTING ->
-- BOOTSTRAPPING -> WAITING (RUNNING while a step runs) -> TERMINATING -> TERMINATED; steps run
-- one at a time, PENDING -> RUNNING -> COMPLETED. A step that runs the Iceberg job
-- (spark-submit ... --database D --config C --table schema.name[:pk]) does, as it completes,
-- what the job does (sim.job: the batch in its config applied to the Iceberg tables); when the
-- job fails, the step fails with its stderr. Failures: fail "emr.cluster" (bootstrap failure,
-- TERMINATED_WITH_ERRORS) and "emr.step" (the step fails with FailureDetails; its stderr is
-- written, gzipped, under the cluster's LogUri, where EMR puts it). ActionOnFailure is honoured.
local util = require "sim.util"
local state = require "sim.state"
local sim = require "sim"
local job = require "sim.job"

local M = {ops = {}}

M.required = {
  RunJobFlow = {"Name", "Instances"},
  DescribeCluster = {"ClusterId"},
  ListClusters = {},
  AddJobFlowSteps = {"JobFlowId", "Steps"},
  DescribeStep = {"ClusterId", "StepId"},
  ListSteps = {"ClusterId"},
  CancelSteps = {"ClusterId", "StepIds"},
  TerminateJobFlows = {"JobFlowIds"},
  AddTags = {"ResourceId", "Tags"},
}

local FINAL_STEP = {COMPLETED = true, CANCELLED = true, FAILED = true, INTERRUPTED = true}
local DONE_CLUSTER = {TERMINATED = true, TERMINATED_WITH_ERRORS = true}

local function invalid(msg) return util.fault("InvalidRequestException", msg) end

local function set_state(c, st, t, code, msg)
  c.Status.State = st
  c.sim_since = t
  if code then c.Status.StateChangeReason = {Code = code, Message = msg} end
  local tl = c.Status.Timeline
  if st == "WAITING" or st == "RUNNING" then tl.ReadyDateTime = tl.ReadyDateTime or t end
  if DONE_CLUSTER[st] then tl.EndDateTime = t end
end

local function step_state(s, st, t, details)
  s.Status.State = st
  s.sim_since = t
  local tl = s.Status.Timeline
  if st == "RUNNING" then tl.StartDateTime = t end
  if FINAL_STEP[st] then tl.EndDateTime = t end
  if details then s.Status.FailureDetails = details end
end

local function step_args(s)
  local cfg = s.Config or {}
  return cfg.Args or {}
end

-- The Iceberg job's tables: --database D and each --table schema.name[:pk,...].
local function job_tables(s)
  local args = step_args(s)
  local db, tables, warehouse = nil, {}, nil
  for i = 1, #args do
    if args[i] == "--database" then db = args[i + 1]
    elseif args[i] == "--table" then tables[#tables + 1] = args[i + 1]
    elseif args[i] == "--warehouse" then warehouse = args[i + 1] end
  end
  return db, tables, warehouse
end

local function write_stderr(w, c, s, t, text)
  if not c.LogUri then return nil end
  local bucket, prefix = c.LogUri:match("^s3n?://([^/]+)/?(.*)$")
  if not bucket or not w.s3.buckets[bucket] then return nil end
  if prefix ~= "" and not prefix:match("/$") then prefix = prefix .. "/" end
  local dir = string.format("%s%s/steps/%s/", prefix, c.Id, s.Id)
  local body = util.gzip_stored(text)
  w.s3.buckets[bucket].objects[dir .. "stderr.gz"] = {body = body, etag = util.etag(body),
    mtime = t, ctype = "application/x-gzip"}
  return string.format("s3://%s/%s", bucket, dir)
end

local function fail_text(s)
  local db, tables = job_tables(s)
  local args, raw = step_args(s), "s3://raw"
  for i = 1, #args do if args[i] == "--raw-uri" then raw = args[i + 1] end end
  local src = (tables[1] or "public.table"):match("^[^:]+")
  local path = raw:gsub("/$", "") .. "/" .. src:gsub("%.", "/") .. "/"
  return table.concat({
    "SLF4J: Class path contains multiple SLF4J bindings.",
    "24/01/01 00:00:00 INFO SparkContext: Running Spark version 3.5.0-amzn-0",
    "24/01/01 00:00:05 INFO GlueCatalog: catalog glue_catalog database " .. tostring(db),
    "Traceback (most recent call last):",
    '  File "raw_to_iceberg.py", line 1, in <module>',
    "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: "
      .. path .. " (simulated failure: emr.step)",
    "24/01/01 00:00:07 INFO ShutdownHookManager: Shutdown hook called",
  }, "\n") .. "\n"
end

local function step_duration(w, s)
  local _, tables = job_tables(s)
  return w.durations.emr_step + (w.durations.emr_step_per_table or 20) * math.max(0, #tables - 1)
end

-- Bring a cluster and its steps up to time now, one transition at a time, each at the moment
-- it happened (not at now), so a long gap between calls still gives the right history.
local function advance(w, c, now)
  local d = w.durations
  for _ = 1, 200 do
    local st = c.Status.State
    if st == "STARTING" then
      if now < c.sim_since + d.emr_starting then break end
      set_state(c, "BOOTSTRAPPING", c.sim_since + d.emr_starting, nil)
    elseif st == "BOOTSTRAPPING" then
      local t = c.sim_since + d.emr_bootstrapping
      if now < t then break end
      if c.sim_fail_cluster then
        set_state(c, "TERMINATING", t, "BOOTSTRAP_FAILURE",
          "On the master instance (i-0sim00000000000001), bootstrap action 1 returned a " ..
          "non-zero return code (simulated failure: emr.cluster)")
        for _, s in ipairs(c.steps) do
          if not FINAL_STEP[s.Status.State] then step_state(s, "CANCELLED", t) end
        end
      else
        set_state(c, "WAITING", t, nil)
        c.Status.StateChangeReason = {Code = "", Message = "Cluster ready to run steps."}
      end
    elseif st == "WAITING" or st == "RUNNING" then
      -- the first step not final
      local s
      for _, x in ipairs(c.steps) do
        if not FINAL_STEP[x.Status.State] then s = x; break end
      end
      if not s then
        if st == "RUNNING" then set_state(c, "WAITING", c.sim_since, nil) end
        if not c.AutoTerminate then break end
        set_state(c, "TERMINATING", c.sim_since, "ALL_STEPS_COMPLETED", "Steps completed")
      elseif s.Status.State == "PENDING" then
        local t = math.max(c.sim_since, s.sim_since) + d.emr_step_pending
        if now < t then break end
        step_state(s, "RUNNING", t)
        set_state(c, "RUNNING", t, nil)
        c.Status.StateChangeReason = {Code = "", Message = "Running step"}
      elseif s.Status.State == "CANCEL_PENDING" then
        local t = s.sim_since + d.emr_cancel
        if now < t then break end
        step_state(s, "CANCELLED", t)
        set_state(c, "WAITING", t, nil)
      elseif s.Status.State == "RUNNING" then
        local t = s.sim_since + step_duration(w, s)
        if now < t then break end
        local job_ok, job_stderr = true, nil
        if not c.sim_fail_step then job_ok, job_stderr = job.run(w, step_args(s), t) end
        if c.sim_fail_step or not job_ok then
          local logdir = write_stderr(w, c, s, t, job_stderr or fail_text(s))
          step_state(s, "FAILED", t, {
            Reason = "Unknown Error.",
            Message = "Exception in thread \"main\" org.apache.spark.SparkException: " ..
              "Application application_1700000000000_0001 finished with failed status",
            LogFile = logdir and (logdir .. "stderr.gz") or nil,
          })
          local action = s.ActionOnFailure or "CONTINUE"
          if action == "TERMINATE_CLUSTER" or action == "TERMINATE_JOB_FLOW" then
            set_state(c, "TERMINATING", t, "STEP_FAILURE", "Shut down as step failed")
          else
            if action == "CANCEL_AND_WAIT" then
              for _, x in ipairs(c.steps) do
                if x.Status.State == "PENDING" then step_state(x, "CANCELLED", t) end
              end
            end
            set_state(c, "WAITING", t, nil)
          end
        else
          step_state(s, "COMPLETED", t)
          set_state(c, "WAITING", t, nil)
        end
      else
        break
      end
    elseif st == "TERMINATING" then
      local t = c.sim_since + d.emr_terminating
      if now < t then break end
      local code = c.Status.StateChangeReason and c.Status.StateChangeReason.Code
      local errs = code == "BOOTSTRAP_FAILURE" or code == "STEP_FAILURE"
        or code == "INTERNAL_ERROR" or code == "INSTANCE_FAILURE"
      set_state(c, errs and "TERMINATED_WITH_ERRORS" or "TERMINATED", t, nil)
    else
      break
    end
  end
end

local function get_cluster(w, id)
  local c = w.emr.clusters[id or ""]
  if not c then
    error(invalid("Cluster id '" .. tostring(id) .. "' is not valid."))
  end
  advance(w, c, sim.now())
  return c
end

local public = util.public

local function cluster_view(c)
  local out = public(c)
  out.steps = nil
  out.Tags = util.map_to_tags(c.Tags)
  out.AutoTerminate = c.AutoTerminate
  return out
end

local function step_view(s)
  return public(s)
end

function M.ops.RunJobFlow(w, p)
  local now = sim.now()
  local inst = p.Instances or {}
  local id = state.next_id(w, "j-", 13)
  local c = {
    Id = id, Name = p.Name,
    ClusterArn = string.format("arn:aws:elasticmapreduce:%s:%s:cluster/%s", w.region, w.account, id),
    Status = {State = "STARTING", StateChangeReason = {Code = "", Message = "Provisioning"},
              Timeline = {CreationDateTime = now}},
    ReleaseLabel = p.ReleaseLabel, LogUri = p.LogUri, ServiceRole = p.ServiceRole,
    Applications = util.array(),
    Configurations = p.Configurations or util.array(),
    Tags = util.tags_to_map(p.Tags),
    AutoTerminate = not inst.KeepJobFlowAliveWhenNoSteps,
    TerminationProtected = inst.TerminationProtected or false,
    VisibleToAllUsers = true,
    Ec2InstanceAttributes = {Ec2SubnetId = inst.Ec2SubnetId, IamInstanceProfile = p.JobFlowRole},
    MasterPublicDnsName = "ip-10-0-0-10.ec2.internal",
    NormalizedInstanceHours = 0,
    sim_since = now,
    sim_fail_cluster = sim.failing("emr.cluster") and true or nil,
    sim_fail_step = sim.failing("emr.step") and true or nil,
    steps = {},
  }
  for _, a in ipairs(p.Applications or {}) do
    c.Applications[#c.Applications + 1] = {Name = a.Name, Version = a.Version}
  end
  w.emr.clusters[id] = c
  if p.Steps then M.add_steps(w, c, p.Steps, now) end
  return {JobFlowId = id, ClusterArn = c.ClusterArn}
end

function M.add_steps(w, c, steps, now)
  local ids = util.array()
  for _, sc in ipairs(steps) do
    if not sc.Name or not sc.HadoopJarStep or not sc.HadoopJarStep.Jar then
      error(util.fault("ValidationException",
        "1 validation error detected: a step needs Name and HadoopJarStep.Jar"))
    end
    local s = {
      Id = state.next_id(w, "s-", 13), Name = sc.Name,
      Config = {Jar = sc.HadoopJarStep.Jar, Args = sc.HadoopJarStep.Args or util.array(),
                MainClass = sc.HadoopJarStep.MainClass, Properties = {}},
      ActionOnFailure = sc.ActionOnFailure or "CONTINUE",
      Status = {State = "PENDING", StateChangeReason = {}, Timeline = {CreationDateTime = now}},
      sim_since = now,
    }
    c.steps[#c.steps + 1] = s
    ids[#ids + 1] = s.Id
  end
  return ids
end

function M.ops.DescribeCluster(w, p)
  return {Cluster = cluster_view(get_cluster(w, p.ClusterId))}
end

local function page(list, marker, size)
  local start = tonumber(marker or "0") or 0
  local out = util.array()
  for i = start + 1, math.min(#list, start + size) do out[#out + 1] = list[i] end
  return out, (start + size < #list) and tostring(start + size) or nil
end

function M.ops.ListClusters(w, p)
  local now = sim.now()
  local want
  if p.ClusterStates and #p.ClusterStates > 0 then
    want = {}
    for _, s in ipairs(p.ClusterStates) do want[s] = true end
  end
  local list = {}
  local ids = util.sorted_keys(w.emr.clusters)
  table.sort(ids, function(a, b)
    local ta = w.emr.clusters[a].Status.Timeline.CreationDateTime
    local tb = w.emr.clusters[b].Status.Timeline.CreationDateTime
    if ta ~= tb then return ta > tb end
    return a > b
  end)
  for _, id in ipairs(ids) do
    local c = w.emr.clusters[id]
    advance(w, c, now)
    local created = c.Status.Timeline.CreationDateTime
    if (not want or want[c.Status.State])
      and (not p.CreatedAfter or created >= p.CreatedAfter)
      and (not p.CreatedBefore or created <= p.CreatedBefore) then
      list[#list + 1] = {Id = c.Id, Name = c.Name, Status = public(c.Status),
                         NormalizedInstanceHours = 0, ClusterArn = c.ClusterArn}
    end
  end
  local items, marker = page(list, p.Marker, 50)
  return {Clusters = items, Marker = marker}
end

function M.ops.AddJobFlowSteps(w, p)
  local c = get_cluster(w, p.JobFlowId)
  if DONE_CLUSTER[c.Status.State] or c.Status.State == "TERMINATING" then
    error(util.fault("ValidationException",
      "A job flow that is shutting down, terminated, or finished may not be modified."))
  end
  return {StepIds = M.add_steps(w, c, p.Steps, sim.now())}
end

local function get_step(c, id)
  for _, s in ipairs(c.steps) do if s.Id == id then return s end end
  error(invalid("Step id '" .. tostring(id) .. "' is not valid."))
end

function M.ops.DescribeStep(w, p)
  local c = get_cluster(w, p.ClusterId)
  return {Step = step_view(get_step(c, p.StepId))}
end

function M.ops.ListSteps(w, p)
  local c = get_cluster(w, p.ClusterId)
  local want, ids
  if p.StepStates and #p.StepStates > 0 then
    want = {}
    for _, s in ipairs(p.StepStates) do want[s] = true end
  end
  if p.StepIds and #p.StepIds > 0 then
    ids = {}
    for _, s in ipairs(p.StepIds) do ids[s] = true end
  end
  local list = {}
  for i = #c.steps, 1, -1 do   -- newest first, as EMR lists them
    local s = c.steps[i]
    if (not want or want[s.Status.State]) and (not ids or ids[s.Id]) then
      list[#list + 1] = {Id = s.Id, Name = s.Name, Config = public(s.Config),
                         ActionOnFailure = s.ActionOnFailure, Status = public(s.Status)}
    end
  end
  local items, marker = page(list, p.Marker, 50)
  return {Steps = items, Marker = marker}
end

function M.ops.CancelSteps(w, p)
  local c = get_cluster(w, p.ClusterId)
  local now = sim.now()
  local out = util.array()
  for _, id in ipairs(p.StepIds) do
    local ok, s = pcall(get_step, c, id)
    if not ok then
      out[#out + 1] = {StepId = id, Status = "FAILED", Reason = "Step id is not valid."}
    elseif s.Status.State == "PENDING" then
      step_state(s, "CANCELLED", now)
      out[#out + 1] = {StepId = id, Status = "SUBMITTED", Reason = ""}
    elseif s.Status.State == "RUNNING" then
      step_state(s, "CANCEL_PENDING", now)
      out[#out + 1] = {StepId = id, Status = "SUBMITTED", Reason = ""}
    else
      out[#out + 1] = {StepId = id, Status = "FAILED",
                       Reason = "Step is in state " .. s.Status.State .. " and cannot be cancelled."}
    end
  end
  return {CancelStepsInfoList = out}
end

function M.ops.TerminateJobFlows(w, p)
  local now = sim.now()
  for _, id in ipairs(p.JobFlowIds) do
    local c = get_cluster(w, id)
    if c.TerminationProtected then
      error(util.fault("ValidationException", "Could not shut down one or more job flows " ..
        "since they are termination protected."))
    end
    if not DONE_CLUSTER[c.Status.State] and c.Status.State ~= "TERMINATING" then
      for _, s in ipairs(c.steps) do
        if not FINAL_STEP[s.Status.State] then step_state(s, "CANCELLED", now) end
      end
      set_state(c, "TERMINATING", now, "USER_REQUEST", "Terminated by user request")
      c.sim_terminate_calls = (c.sim_terminate_calls or 0) + 1
    end
  end
  return util.object()
end

function M.ops.AddTags(w, p)
  local c = get_cluster(w, p.ResourceId)
  for _, kv in ipairs(p.Tags) do c.Tags[kv.Key] = kv.Value end
  return util.object()
end

return M
