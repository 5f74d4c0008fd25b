-- stdlib emr: create_cluster (idempotent by tags), wait_cluster, spark_step, add_steps
-- (idempotent by name), wait_step (failure details, stderr tail, cancellation), terminate.
local t = require "tap"
local flow = require "flow"
require("aws").use_transport(require("sim").handle)
local sim = require "sim"
local emr = require "emr"
local aws = require "aws"

flow.core.set_virtual_time(true)
local quiet = function() end

local SPEC = {Name = "flowrun-test", ReleaseLabel = "emr-7.1.0", LogUri = "s3://flowrun-demo-logs/emr/",
  Applications = {{Name = "Spark"}}, ServiceRole = "EMR_DefaultRole", JobFlowRole = "EMR_EC2_DefaultRole",
  Instances = {KeepJobFlowAliveWhenNoSteps = true, InstanceGroups = {
    {InstanceRole = "MASTER", InstanceType = "m5.xlarge", InstanceCount = 1}}}}

local function clusters_created()
  local n = 0
  for _ in pairs(sim.world().emr.clusters) do n = n + 1 end
  return n
end

local STEP = emr.spark_step{name = "raw_to_iceberg", script = "s3://flowrun-demo-artifacts/jobs/raw_to_iceberg.py",
  args = {"--database", "lake", "--table", "public.orders:id", "--warehouse", "s3://flowrun-demo-lake/wh"},
  conf = {["spark.b"] = "2", ["spark.a"] = "1"}}

t.test("spark_step builds a command-runner spark-submit step", function()
  t.eq(STEP.HadoopJarStep.Jar, "command-runner.jar", "command-runner.jar")
  t.eq(STEP.HadoopJarStep.Args, {"spark-submit", "--deploy-mode", "cluster", "--conf", "spark.a=1",
    "--conf", "spark.b=2", "s3://flowrun-demo-artifacts/jobs/raw_to_iceberg.py", "--database", "lake",
    "--table", "public.orders:id", "--warehouse", "s3://flowrun-demo-lake/wh"}, "args in order, conf sorted")
  t.eq(STEP.ActionOnFailure, "CONTINUE", "CONTINUE by default")
  t.raises(function() emr.spark_step{name = "x"} end, "script", "script is required")
end)

t.test("create, wait, step, terminate; re-runs find what exists", function()
  sim.configure{}
  local c = emr.create_cluster(SPEC, {run_id = "run-1", task = "create_cluster", log = quiet})
  t.eq(c.created, true, "created")
  local c2 = emr.create_cluster(SPEC, {run_id = "run-1", task = "create_cluster", log = quiet})
  t.eq(c2.cluster_id, c.cluster_id, "same run: the same cluster")
  t.eq(c2.created, false, "not created again")
  t.eq(clusters_created(), 1, "one RunJobFlow")
  local other = emr.create_cluster(SPEC, {run_id = "run-2", task = "create_cluster", log = quiet})
  t.ok(other.cluster_id ~= c.cluster_id, "another run: another cluster")
  emr.terminate(other.cluster_id, {log = quiet})
  local tags = {}
  for _, kv in ipairs(emr.describe(c.cluster_id).Tags) do tags[kv.Key] = kv.Value end
  t.eq(tags["flowrun:run-id"], "run-1", "tagged with the run")
  t.eq(tags["flowrun:task"], "create_cluster", "tagged with the task")

  local cl = emr.wait_cluster(c.cluster_id, {log = quiet})
  t.eq(cl.Status.State, "WAITING", "WAITING")
  local tl = cl.Status.Timeline
  t.eq(tl.ReadyDateTime - tl.CreationDateTime, 450, "ready after starting + bootstrapping")
  t.ok(flow.time() >= tl.ReadyDateTime, "wait_cluster returned once it was ready")
  local ids = emr.add_steps(c.cluster_id, {STEP}, {log = quiet})
  t.like(ids[1], "^s%-", "a step id")
  local ids2 = emr.add_steps(c.cluster_id, {STEP}, {log = quiet})
  t.eq(ids2, ids, "re-run: the same step")
  local step = emr.wait_step(c.cluster_id, ids[1], {log = quiet})
  t.eq(step.Status.State, "COMPLETED", "COMPLETED")
  t.eq(emr.add_steps(c.cluster_id, {STEP}, {log = quiet}), ids, "a completed step is not run again")
  local st = emr.terminate(c.cluster_id, {log = quiet})
  t.eq(st, "TERMINATED", "terminate waits for TERMINATED")
  t.eq(emr.describe(c.cluster_id).Status.State, "TERMINATED", "and it is")
  t.eq(emr.terminate(c.cluster_id, {log = quiet}), "TERMINATED", "terminate again: no-op")
  t.eq(sim.world().emr.clusters[c.cluster_id].sim_terminate_calls, 1, "one TerminateJobFlows")
  local c3 = emr.create_cluster(SPEC, {run_id = "run-1", task = "create_cluster", log = quiet})
  t.ok(c3.cluster_id ~= c.cluster_id, "a terminated cluster is not reused")
end)

t.test("failures: cluster bootstrap, step with details and stderr tail", function()
  sim.configure{fail = "emr.cluster"}
  local c = emr.create_cluster(SPEC, {run_id = "r", task = "c", log = quiet})
  local err = t.raises(function() emr.wait_cluster(c.cluster_id, {log = quiet}) end,
    "emr.cluster_failed", "cluster failure raises")
  t.like(tostring(err and err.message), "BOOTSTRAP_FAILURE", "with the StateChangeReason")

  sim.configure{fail = "emr.step"}
  c = emr.create_cluster(SPEC, {run_id = "r2", task = "c", log = quiet})
  emr.wait_cluster(c.cluster_id, {log = quiet})
  local ids = emr.add_steps(c.cluster_id, {STEP}, {log = quiet})
  err = t.raises(function() emr.wait_step(c.cluster_id, ids[1], {log = quiet}) end,
    "emr.step_failed", "step failure raises")
  local msg = tostring(err and err.message)
  t.like(msg, "reason: Unknown Error", "FailureDetails.Reason")
  t.like(msg, "message: Exception in thread", "FailureDetails.Message")
  t.like(msg, "log: s3://flowrun%-demo%-logs/emr/j%-", "FailureDetails.LogFile")
  t.like(msg, "stderr %(last lines%)", "stderr tail section")
  t.like(msg, "PATH_NOT_FOUND", "stderr text (gunzipped from S3)")
  t.ok(err and err.stderr_tail, "stderr_tail field")
  local ids2 = emr.add_steps(c.cluster_id, {STEP}, {log = quiet})
  t.ok(ids2[1] ~= ids[1], "a failed step is added anew on retry")
  emr.terminate(c.cluster_id, {log = quiet})
end)

t.test("timeouts and cancellation", function()
  sim.configure{}
  local c = emr.create_cluster(SPEC, {run_id = "r3", task = "c", log = quiet})
  local err = t.raises(function() emr.wait_cluster(c.cluster_id, {timeout = 60, log = quiet}) end,
    "flow.timeout", "wait_cluster timeout")
  t.like(tostring(err and err.message), "last status: STARTING", "says what it saw")
  emr.wait_cluster(c.cluster_id, {log = quiet})
  local ids = emr.add_steps(c.cluster_id, {STEP}, {log = quiet})
  err = t.raises(function() emr.wait_step(c.cluster_id, ids[1], {timeout = 60, log = quiet}) end,
    "flow.timeout", "wait_step timeout")
  local st = aws.emr.describe_step{ClusterId = c.cluster_id, StepId = ids[1]}.Step.Status.State
  t.eq(st, "RUNNING", "a timeout leaves the step running (a retry finds it again)")
  local h = flow.spawn(emr.wait_step, c.cluster_id, ids[1], {log = quiet})
  flow.sleep(40)
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the waiting task is cancelled")
  st = aws.emr.describe_step{ClusterId = c.cluster_id, StepId = ids[1]}.Step.Status.State
  t.ok(st == "CANCEL_PENDING" or st == "CANCELLED", "cancelling the wait cancelled the step (" .. st .. ")")
  emr.terminate(c.cluster_id, {log = quiet})
  t.eq(emr.find_cluster{run_id = "r3"}, nil, "find_cluster ignores terminated clusters")
end)

t.test("find_cluster pages through ListClusters", function()
  sim.configure{}
  local first = emr.create_cluster(SPEC, {run_id = "page-0", task = "c", log = quiet})
  for i = 1, 60 do
    flow.sleep(1)   -- newer clusters are listed first: the first one ends up on the second page
    emr.create_cluster(SPEC, {run_id = "page-" .. i, task = "c", log = quiet})
  end
  local found = emr.find_cluster{run_id = "page-0", task = "c"}
  t.eq(found and found.Id, first.cluster_id, "the oldest of 61 clusters (page 2 of ListClusters)")
end)

t.test("a lost RunJobFlow or AddJobFlowSteps answer does not make a second one", function()
  sim.configure{fail = "lost=emr.RunJobFlow"}
  local c = emr.create_cluster(SPEC, {run_id = "lost", task = "c", log = quiet})
  t.eq(clusters_created(), 1, "one cluster although the first answer was lost")
  t.eq(c.created, true, "reported as created by this call")
  sim.configure{fail = "lost=emr.AddJobFlowSteps"}
  c = emr.create_cluster(SPEC, {run_id = "lost2", task = "c", log = quiet})
  local ids = emr.add_steps(c.cluster_id, {STEP}, {log = quiet})
  local n = #sim.world().emr.clusters[c.cluster_id].steps
  t.eq(n, 1, "one step although the first answer was lost")
  t.eq(ids[1], sim.world().emr.clusters[c.cluster_id].steps[1].Id, "its id is returned")
  sim.configure{fail = "lost=emr.RunJobFlow"}
  emr.create_cluster(SPEC, {log = quiet})
  t.eq(clusters_created(), 2, "without a run id (no tags to look for), the client's retry makes two")
end)

t.done()
