-- stdlib emr_serverless against the simulator through the AWS client (rest-json): applications
-- found or created and started, job runs started once (client token, name), waited for,
-- failed with the driver's stderr tail, cancelled when their wait is; the application stopped.
local t = require "tap"
local flow = require "flow"
local sim = require "sim"
require("aws").use_transport(sim.handle)   -- the client's one seam: the simulator answers
local es = require "emr_serverless"
local aws = require "aws"

flow.core.set_virtual_time(true)
local quiet = function() end
local ROLE = "arn:aws:iam::123456789012:role/flowrun-serverless"
local JOB = {name = "raw_to_iceberg r1", execution_role = ROLE,
             entry_point = "s3://flowrun-demo-artifacts/jobs/raw_to_iceberg.py",
             args = {"--database", "lake", "--table", "public.orders:id"},
             conf = {["spark.b"] = "2", ["spark.a"] = "1"}, log_uri = "s3://flowrun-demo-logs/serverless/"}

local function runs_started() return sim.world().emr_serverless.started_runs or 0 end

t.test("client tokens", function()
  local a, b = es.client_token("run-1", "start_job"), es.client_token("run-1", "start_job")
  t.eq(a, b, "the same for every attempt of a task in a run")
  t.ok(a ~= es.client_token("run-2", "start_job") and a ~= es.client_token("run-1", "other"),
    "different for another run or task")
  t.like(a, "^[%w%.%-_]+$", "characters StartJobRun accepts")
  t.ok(#a <= 64, "at most 64 characters")
end)

t.test("an application found or created, started; a job run started once and waited for", function()
  sim.configure{}
  local app = es.ensure_application({name = "etl", release_label = "emr-7.1.0"}, {log = quiet})
  t.eq(app.created, true, "created")
  t.eq(es.ensure_application({name = "etl"}, {log = quiet}).id, app.id, "then found by name")
  t.eq(es.ensure_application({id = app.id}).id, app.id, "or given by id")
  t.raises(function() es.ensure_application({id = "00nosuchapp"}) end, "aws.ResourceNotFoundException",
    "an unknown id")
  t.eq(es.start_application(app.id, {log = quiet}), true, "started by this call")
  t.eq(es.start_application(app.id, {log = quiet}), false, "already starting: not again")
  local token = es.client_token("r1", "start_job")
  local r = es.start_job_run(app.id, JOB, {token = token, log = quiet})
  t.eq(r.started, true, "job run started")
  local again = es.start_job_run(app.id, JOB, {token = token, log = quiet})
  t.eq(again.job_run_id, r.job_run_id, "a retry finds the same job run")
  t.eq(again.started, false, "and does not start another")
  t.eq(runs_started(), 1, "one StartJobRun reached the service")
  local raw = aws["emr-serverless"].start_job_run{applicationId = app.id, clientToken = token,
    executionRoleArn = ROLE, name = "another name"}
  t.eq(raw.jobRunId, r.job_run_id, "the client token alone makes StartJobRun idempotent")
  local jr = es.get_job_run(app.id, r.job_run_id)
  t.eq(jr.jobDriver.sparkSubmit.sparkSubmitParameters, "--conf spark.a=1 --conf spark.b=2", "conf sorted")
  t.eq(jr.configurationOverrides.monitoringConfiguration.s3MonitoringConfiguration.logUri,
    "s3://flowrun-demo-logs/serverless/", "logs to S3")
  local t0 = flow.now()
  local done = es.wait_job_run(app.id, r.job_run_id, {log = quiet})
  t.eq(done.state, "SUCCESS", "SUCCESS")
  t.ok(flow.now() - t0 >= 90 + 40 + 240, "after the application started, scheduling and the run")
  t.eq(es.start_job_run(app.id, JOB, {token = es.client_token("r1", "retry"), log = quiet}).job_run_id,
    r.job_run_id, "a succeeded job run of the same name is reused (a resumed run)")
  t.eq(es.stop_application(app.id, {log = quiet}), "STOPPED", "stopped")
end)

t.test("a failed job run: stateDetails and the driver's stderr tail", function()
  sim.configure{fail = "serverless.job"}
  local app = es.ensure_application({name = "etl", release_label = "emr-7.1.0"}, {log = quiet})
  local r = es.start_job_run(app.id, JOB, {token = "t-fail", log = quiet})
  local err = t.raises(function() es.wait_job_run(app.id, r.job_run_id, {log = quiet}) end,
    "emr_serverless.job_failed", "raises emr_serverless.job_failed")
  local msg = tostring(err and err.message)
  t.like(msg, "FAILED; Job failed, please check complete logs", "stateDetails")
  t.like(msg, "driver stderr %(last lines%)", "a stderr section")
  t.like(msg, "TABLE_OR_VIEW_NOT_FOUND", "the stderr text, gunzipped from S3")
  t.eq(err and err.retryable, false, "not retryable")
  local again = es.start_job_run(app.id, JOB, {token = "t-fail-2", log = quiet})
  t.ok(again.job_run_id ~= r.job_run_id, "a failed job run is not reused")
end)

t.test("cancelling the wait cancels the job run; stop waits for it", function()
  sim.configure{durations = {serverless_job = 1e9}}
  local app = es.ensure_application({name = "etl", release_label = "emr-7.1.0"}, {log = quiet})
  es.start_application(app.id, {log = quiet})
  local r = es.start_job_run(app.id, JOB, {token = "t-cancel", log = quiet})
  local err = t.raises(function() es.wait_job_run(app.id, r.job_run_id, {timeout = 600, log = quiet}) end,
    "flow.timeout", "a timeout")
  t.eq(es.get_job_run(app.id, r.job_run_id).state, "RUNNING", "a timeout leaves the job running")
  local h = flow.spawn(es.wait_job_run, app.id, r.job_run_id, {log = quiet})
  flow.sleep(60)
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the waiting task is cancelled")
  local st = es.get_job_run(app.id, r.job_run_id).state
  t.ok(st == "CANCELLING" or st == "CANCELLED", "and the job run with it (" .. st .. ")")
  t.raises(function() aws["emr-serverless"].stop_application{applicationId = app.id} end,
    "aws.ValidationException", "the service refuses to stop an application with an active job")
  t.eq(es.stop_application(app.id, {job_runs = {r.job_run_id}, log = quiet}), "STOPPED",
    "stop_application waits for the job run to end first")
  t.eq(es.get_job_run(app.id, r.job_run_id).state, "CANCELLED", "cancelled")
  t.raises(function() es.start_job_run(app.id, {name = "x"}) end, "expected", "misuse raises at once")
end)

t.done()
