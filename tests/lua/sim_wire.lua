-- The simulator at the wire: hand-built requests in, AWS-shaped answers out; state machines
-- driven by the flow clock under virtual time; injected failures; the state file.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local sim = require "sim"
local wire = require "sim.wire"

flow.core.set_virtual_time(true)

local TASK = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000"
-- sizes instead of a source database (tests/lua/sim_source.lua reads a real one)
local SIZES = {["public.customers"] = 5000, ["public.orders"] = 48000, ["public.order_items"] = 150000}

local function describe_task()
  local s, b = wire.json("dms", "DescribeReplicationTasks",
    {Filters = {{Name = "replication-task-arn", Values = {TASK}}}})
  assert(s == 200, json.encode(b))
  return b.ReplicationTasks[1]
end

t.test("json protocol: unknown target, bad body, missing members, request id", function()
  sim.configure{}
  local s, b, r = wire.json("dms", "NoSuchOperation", {})
  t.eq(s, 400, "unknown operation is a 400")
  t.like(b.__type, "#UnknownOperationException$", "__type names the code after #")
  t.ok(r.headers["x-amzn-RequestId"], "x-amzn-RequestId header")
  r = sim.handle{method = "POST", url = "https://dms/", service = "dms", body = "{not json",
                 headers = {["x-amz-target"] = "AmazonDMSv20160101.DescribeReplicationTasks"}}
  t.eq(r.status, 400, "malformed JSON body is a 400 (header name matched case-insensitively)")
  t.like(json.decode(r.body).__type, "SerializationException", "SerializationException")
  s, b = wire.json("emr", "AddJobFlowSteps", {Steps = {}})
  t.eq(s, 400, "missing JobFlowId")
  t.like(b.__type, "#ValidationException$", "ValidationException")
  t.like(b.message, "Value null at 'jobFlowId'", "message names the member as AWS does")
  r = sim.handle{method = "POST", url = "https://x/", service = "nope", headers = {}, body = ""}
  t.eq(r.status, 400, "unknown service")
end)

t.test("required members match botocore's models", function()
  local base = "/usr/lib/python3/dist-packages/botocore/data/"
  local mods = {dms = "sim.dms", emr = "sim.emr", glue = "sim.glue",
                secretsmanager = "sim.secrets", athena = "sim.athena"}
  for svc, modname in pairs(mods) do
    local p = io.popen("ls -d " .. base .. svc .. "/*/ | sort | tail -1")
    local dir = p:read("l"); p:close()
    local f = assert(io.open(dir .. "service-2.json"), "botocore model for " .. svc)
    local model = json.decode(f:read("a")); f:close()
    local mod = require(modname)
    for op, req in pairs(mod.required) do
      t.ok(mod.ops[op], svc .. "." .. op .. " is implemented")
      local o = model.operations[op]
      local want = {}
      if o.input then
        for _, m in ipairs(model.shapes[o.input.shape].required or {}) do want[#want + 1] = m end
      end
      local got = {table.unpack(req)}
      table.sort(want); table.sort(got)
      t.eq(got, want, svc .. "." .. op .. " required members as botocore")
    end
  end
end)

t.test("DMS: starting -> running -> stopped FULL_LOAD_ONLY_FINISHED, times from table sizes", function()
  sim.configure{}
  sim.set_table_rows(TASK, {["public.a"] = 100000, ["public.b"] = 20000})
  t.eq(describe_task().Status, "ready", "seeded task is ready")
  local s, b = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "start-replication"})
  t.eq(s, 200, "start")
  t.eq(b.ReplicationTask.Status, "starting", "answer shows starting")
  s, b = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "reload-target"})
  t.eq(b.__type and b.__type:match("#(.+)$"), "InvalidResourceStateFault", "cannot start twice")
  flow.sleep(30)
  t.eq(describe_task().Status, "starting", "still starting after 30 s")
  flow.sleep(40)     -- 70 s: running, loading; a = 50 s, b = 20 s
  local task = describe_task()
  t.eq(task.Status, "running", "running after 70 s")
  t.ok(task.ReplicationTaskStats.FullLoadProgressPercent > 0
    and task.ReplicationTaskStats.FullLoadProgressPercent < 100, "progress between 0 and 100")
  t.eq(task.ReplicationTaskStats.TablesLoading, 2, "two tables loading")
  flow.sleep(25)     -- 95 s: b done (60+20), a loading
  task = describe_task()
  t.eq(task.ReplicationTaskStats.TablesLoaded, 1, "one table loaded")
  _, b = wire.json("dms", "DescribeTableStatistics", {ReplicationTaskArn = TASK,
    Filters = {{Name = "table-name", Values = {"b"}}}})
  t.eq(#b.TableStatistics, 1, "filter by table name")
  t.eq(b.TableStatistics[1].FullLoadRows, 20000, "b's full load rows")
  t.eq(b.TableStatistics[1].TableState, "Table completed", "b completed")
  flow.sleep(20)     -- 115 s: a done at 110 s
  task = describe_task()
  t.eq(task.Status, "stopped", "stopped")
  t.eq(task.StopReason, "Stop Reason FULL_LOAD_ONLY_FINISHED", "stop reason")
  t.eq(task.ReplicationTaskStats.FullLoadProgressPercent, 100, "100%")
  t.eq(task.ReplicationTaskStats.TablesLoaded, 2, "both loaded")
  local st, node = wire.s3("GET", "/flowrun-demo-raw?list-type=2&prefix=raw/public/")
  t.eq(st, 200, "list raw zone")
  local keys = {}
  for _, c in ipairs(wire.children(node, "Contents")) do keys[#keys + 1] = wire.child(c, "Key", true) end
  t.eq(keys, {"raw/public/a/LOAD00000001.parquet", "raw/public/b/LOAD00000001.parquet"},
    "DMS wrote one Parquet file per table under BucketFolder/schema/table/")
  s, b = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "start-replication"})
  t.like(b.message or "", "first time", "start-replication only for a first run")
  s = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "reload-target"})
  t.eq(s, 200, "reload-target after a stop")
end)

t.test("DMS errors and injected failures", function()
  sim.configure{}
  local s, b = wire.json("dms", "DescribeReplicationTasks",
    {Filters = {{Name = "replication-task-arn", Values = {"arn:aws:dms:us-east-1:1:task:NOPE"}}}})
  t.eq(s, 400, "unknown task ARN")
  t.like(b.__type, "#ResourceNotFoundFault$", "ResourceNotFoundFault")
  s, b = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = "arn:nope", StartReplicationTaskType = "reload-target"})
  t.like(b.__type, "#ResourceNotFoundFault$", "start on an unknown ARN")
  s, b = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "sideways"})
  t.like(b.__type, "#InvalidParameterValueException$", "bad start type")

  sim.configure{fail = "dms.task"}
  sim.set_table_rows(TASK, SIZES)
  wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "start-replication"})
  flow.sleep(3600)
  local task = describe_task()
  t.eq(task.Status, "failed", "dms.task: failed")
  t.like(task.LastFailureMessage, "FATAL_ERROR", "LastFailureMessage says why")
  t.eq(task.StopReason, "Stop Reason FATAL_ERROR", "error stop reason")

  sim.configure{fail = {"dms.table"}}
  sim.set_table_rows(TASK, SIZES)
  wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = "start-replication"})
  flow.sleep(3600)
  task = describe_task()
  t.eq(task.Status, "stopped", "dms.table: the task still stops")
  t.eq(task.ReplicationTaskStats.TablesErrored, 1, "one table errored")
  _, b = wire.json("dms", "DescribeTableStatistics", {ReplicationTaskArn = TASK,
    Filters = {{Name = "table-state", Values = {"Table error"}}}})
  t.eq(b.TableStatistics[1] and b.TableStatistics[1].TableName, "order_items",
    "the largest table is the one in error")
end)

local function emr(op, p)
  local s, b = wire.json("emr", op, p)
  return s, b
end

local function run_cluster(extra)
  local p = {Name = "c", ReleaseLabel = "emr-7.1.0", LogUri = "s3://flowrun-demo-logs/emr/",
    Instances = {KeepJobFlowAliveWhenNoSteps = true, InstanceCount = 3},
    Applications = {{Name = "Spark"}}, Tags = {{Key = "flowrun:run", Value = "r1"}}}
  for k, v in pairs(extra or {}) do p[k] = v end
  local s, b = emr("RunJobFlow", p)
  assert(s == 200, json.encode(b))
  return b.JobFlowId
end

local function cstate(id)
  local _, b = emr("DescribeCluster", {ClusterId = id})
  return b.Cluster.Status.State, b.Cluster
end

local function sstate(id, sid)
  local _, b = emr("DescribeStep", {ClusterId = id, StepId = sid})
  return b.Step.Status.State, b.Step
end

local ICEBERG_STEP = {Name = "raw_to_iceberg", ActionOnFailure = "CONTINUE", HadoopJarStep = {
  Jar = "command-runner.jar", Args = {"spark-submit", "s3://a/job.py", "--database", "lake",
  "--warehouse", "s3://flowrun-demo-lake/warehouse", "--table", "public.orders:id"}}}

t.test("EMR: cluster and step lifecycle, Glue table registered by the step", function()
  sim.configure{}
  wire.json("glue", "CreateDatabase", {DatabaseInput = {Name = "lake"}})
  local id = run_cluster()
  t.like(id, "^j%-%w+$", "cluster id j-...")
  t.eq((cstate(id)), "STARTING", "STARTING")
  flow.sleep(340)
  t.eq((cstate(id)), "BOOTSTRAPPING", "BOOTSTRAPPING after 340 s")
  flow.sleep(120)
  local st, c = cstate(id)
  t.eq(st, "WAITING", "WAITING")
  t.eq(c.Tags[1], {Key = "flowrun:run", Value = "r1"}, "tags kept")
  local _, b = emr("AddJobFlowSteps", {JobFlowId = id, Steps = {ICEBERG_STEP}})
  local sid = b.StepIds[1]
  t.like(sid, "^s%-%w+$", "step id")
  t.eq((sstate(id, sid)), "PENDING", "PENDING")
  flow.sleep(15)
  t.eq((sstate(id, sid)), "RUNNING", "RUNNING")
  t.eq((cstate(id)), "RUNNING", "cluster RUNNING while a step runs")
  local s, g = wire.json("glue", "GetTable", {DatabaseName = "lake", Name = "orders"})
  t.like(g.__type, "#EntityNotFoundException$", "no table before the step completes")
  flow.sleep(300)
  t.eq((sstate(id, sid)), "COMPLETED", "COMPLETED")
  t.eq((cstate(id)), "WAITING", "cluster back to WAITING")
  s, g = wire.json("glue", "GetTable", {DatabaseName = "lake", Name = "orders"})
  t.eq(s, 200, "the step registered lake.orders")
  t.eq(g.Table.Parameters.table_type, "ICEBERG", "an Iceberg table")
  t.like(g.Table.StorageDescriptor.Location, "^s3://flowrun%-demo%-lake/warehouse/lake.db/orders",
    "under the warehouse")
  _, b = emr("ListSteps", {ClusterId = id})
  t.eq(#b.Steps, 1, "ListSteps")
  emr("TerminateJobFlows", {JobFlowIds = {id}})
  st, c = cstate(id)
  t.eq(st, "TERMINATING", "TERMINATING")
  t.eq(c.Status.StateChangeReason.Code, "USER_REQUEST", "USER_REQUEST")
  flow.sleep(100)
  t.eq((cstate(id)), "TERMINATED", "TERMINATED")
  local s2, b2 = emr("AddJobFlowSteps", {JobFlowId = id, Steps = {ICEBERG_STEP}})
  t.eq(s2, 400, "no steps on a terminated cluster")
  t.like(b2.__type, "ValidationException", "ValidationException")
  s2, b2 = emr("DescribeCluster", {ClusterId = "j-NOPE"})
  t.like(b2.__type, "#InvalidRequestException$", "unknown cluster id")
end)

t.test("EMR: ListClusters filters, CancelSteps, injected failures, stderr in the log bucket", function()
  sim.configure{}
  local a = run_cluster()
  flow.sleep(1)
  local b_id = run_cluster()
  emr("TerminateJobFlows", {JobFlowIds = {a}})
  local _, l = emr("ListClusters", {ClusterStates = {"STARTING", "BOOTSTRAPPING", "WAITING", "RUNNING"}})
  t.eq(#l.Clusters, 1, "active filter")
  t.eq(l.Clusters[1].Id, b_id, "the live one")
  _, l = emr("ListClusters", {})
  t.eq(#l.Clusters, 2, "no filter: both")
  t.eq(l.Clusters[1].Id, b_id, "newest first")
  flow.sleep(500)
  local _, r = emr("AddJobFlowSteps", {JobFlowId = b_id, Steps = {ICEBERG_STEP, ICEBERG_STEP}})
  flow.sleep(20)
  local _, c = emr("CancelSteps", {ClusterId = b_id, StepIds = r.StepIds})
  t.eq(c.CancelStepsInfoList[1].Status, "SUBMITTED", "cancel submitted for the running step")
  t.eq((sstate(b_id, r.StepIds[2])), "CANCELLED", "pending step cancelled at once")
  t.eq((sstate(b_id, r.StepIds[1])), "CANCEL_PENDING", "running step CANCEL_PENDING")
  flow.sleep(20)
  t.eq((sstate(b_id, r.StepIds[1])), "CANCELLED", "then CANCELLED")
  t.eq((cstate(b_id)), "WAITING", "cluster WAITING")

  sim.configure{fail = "emr.step"}
  local id = run_cluster()
  local step = {Name = "x", ActionOnFailure = "TERMINATE_CLUSTER", HadoopJarStep = ICEBERG_STEP.HadoopJarStep}
  _, r = emr("AddJobFlowSteps", {JobFlowId = id, Steps = {step}})
  flow.sleep(3600)
  local st, s = sstate(id, r.StepIds[1])
  t.eq(st, "FAILED", "emr.step: FAILED")
  t.like(s.Status.FailureDetails.Message, "SparkException", "FailureDetails.Message")
  local log = s.Status.FailureDetails.LogFile
  t.eq(log, "s3://flowrun-demo-logs/emr/" .. id .. "/steps/" .. r.StepIds[1] .. "/stderr.gz",
    "LogFile in the cluster's LogUri")
  local cs, cl = cstate(id)
  t.eq(cs, "TERMINATED_WITH_ERRORS", "TERMINATE_CLUSTER on failure")
  t.eq(cl.Status.StateChangeReason.Code, "STEP_FAILURE", "STEP_FAILURE")
  local gs, body = wire.s3("GET", "/flowrun-demo-logs/emr/" .. id .. "/steps/" .. r.StepIds[1] .. "/stderr.gz")
  t.eq(gs, 200, "stderr.gz is there")
  t.eq(body:sub(1, 2), "\31\139", "gzip magic")
  t.ok(body:find("PATH_NOT_FOUND", 1, true), "stored blocks keep the text readable")

  sim.configure{fail = "emr.cluster"}
  id = run_cluster()
  flow.sleep(3600)
  cs, cl = cstate(id)
  t.eq(cs, "TERMINATED_WITH_ERRORS", "emr.cluster: TERMINATED_WITH_ERRORS")
  t.eq(cl.Status.StateChangeReason.Code, "BOOTSTRAP_FAILURE", "BOOTSTRAP_FAILURE")
end)

t.test("S3: path-style and virtual-hosted, errors, pagination, range", function()
  sim.configure{}
  local s, node = wire.s3("GET", "/no-such-bucket?list-type=2")
  t.eq(s, 404, "NoSuchBucket is 404")
  t.eq(wire.child(node, "Code", true), "NoSuchBucket", "<Code>NoSuchBucket")
  local _, _, r = wire.s3("HEAD", "/flowrun-demo-raw/missing")
  t.eq(r.status, 404, "HEAD missing key 404")
  t.eq(r.body, "", "HEAD errors have no body")
  s, node = wire.s3("GET", "/flowrun-demo-raw/missing")
  t.eq(wire.child(node, "Code", true), "NoSuchKey", "NoSuchKey")
  _, _, r = wire.s3("PUT", "https://flowrun-demo-artifacts.s3.us-east-1.amazonaws.com/jobs/a%20b.py",
    "print('hi')")
  t.eq(r.status, 200, "virtual-hosted PUT")
  t.like(r.headers.ETag, '^"%x+"$', "ETag")
  s, node = wire.s3("GET", "/flowrun-demo-artifacts/jobs/a%20b.py")
  t.eq(node, "print('hi')", "path-style GET of the same object (key decoded)")
  _, _, r = wire.s3("GET", "/flowrun-demo-artifacts/jobs/a%20b.py", nil, {Range = "bytes=-3"})
  t.eq(r.status, 206, "range")
  t.eq(r.body, "i')", "bytes=-3: the last three bytes")
end)

t.test("S3 list pages; Secrets; STS; Athena; Glue errors", function()
  sim.configure{}
  for i = 1, 5 do wire.s3("PUT", "/flowrun-demo-raw/p/k" .. i, "x") end
  wire.s3("PUT", "/flowrun-demo-raw/p/sub/z", "x")
  local keys, token, pages = {}, nil, 0
  repeat
    local url = "/flowrun-demo-raw?list-type=2&prefix=p/&delimiter=/&max-keys=2"
    if token then url = url .. "&continuation-token=" .. require("sim.util").url_encode(token) end
    local _, node = wire.s3("GET", url)
    pages = pages + 1
    for _, c in ipairs(wire.children(node, "Contents")) do keys[#keys + 1] = wire.child(c, "Key", true) end
    for _, c in ipairs(wire.children(node, "CommonPrefixes")) do keys[#keys + 1] = wire.child(c, "Prefix", true) end
    token = wire.child(node, "NextContinuationToken", true)
  until not token
  t.eq(keys, {"p/k1", "p/k2", "p/k3", "p/k4", "p/k5", "p/sub/"}, "all keys and the common prefix")
  t.eq(pages, 3, "three pages of two")
  wire.s3("PUT", "/flowrun-demo-raw/e/a%20b%2Bc", "x")
  local _, enc = wire.s3("GET", "/flowrun-demo-raw?list-type=2&prefix=e/&encoding-type=url")
  t.eq(wire.child(wire.child(enc, "Contents"), "Key", true), "e/a%20b%2Bc", "encoding-type=url")
  t.eq(wire.child(enc, "EncodingType", true), "url", "EncodingType echoed")

  local s, b = wire.json("secretsmanager", "GetSecretValue", {SecretId = "flowrun/demo/source-db"})
  t.eq(s, 200, "secret by name")
  t.eq(json.decode(b.SecretString).dbname, "shop", "SecretString")
  local s2, b2 = wire.json("secretsmanager", "GetSecretValue", {SecretId = b.ARN})
  t.eq(s2 == 200 and b2.Name, "flowrun/demo/source-db", "secret by ARN")
  s, b = wire.json("secretsmanager", "GetSecretValue", {SecretId = "nope"})
  t.like(b.__type, "#ResourceNotFoundException$", "unknown secret")

  local st, node = wire.sts("GetCallerIdentity")
  t.eq(st, 200, "GetCallerIdentity")
  t.eq(wire.child(wire.child(node, "GetCallerIdentityResult"), "Account", true), "123456789012", "account")
  st, node = wire.sts("Nope")
  t.eq(st, 400, "unknown action")
  t.eq(wire.child(wire.child(node, "Error"), "Code", true), "InvalidAction", "InvalidAction")

  s, b = wire.json("athena", "StartQueryExecution", {QueryString = "SELECT count(*) FROM lake.nope"})
  local qid = b.QueryExecutionId
  _, b = wire.json("athena", "GetQueryExecution", {QueryExecutionId = qid})
  t.ok(b.QueryExecution.Status.State == "QUEUED" or b.QueryExecution.Status.State == "RUNNING",
    "queued at first")
  flow.sleep(5)
  _, b = wire.json("athena", "GetQueryExecution", {QueryExecutionId = qid})
  t.eq(b.QueryExecution.Status.State, "FAILED", "missing table fails")
  t.like(b.QueryExecution.Status.StateChangeReason, "TABLE_NOT_FOUND", "reason")
  local tok = string.rep("ab", 20)
  local _, q1 = wire.json("athena", "StartQueryExecution", {QueryString = "SELECT 1", ClientRequestToken = tok})
  local _, q2 = wire.json("athena", "StartQueryExecution", {QueryString = "SELECT 1", ClientRequestToken = tok})
  t.eq(q2.QueryExecutionId, q1.QueryExecutionId, "ClientRequestToken: the same query again")
  _, b = wire.json("athena", "StartQueryExecution", {QueryString = "SELECT 42"})
  qid = b.QueryExecutionId
  flow.sleep(5)
  _, b = wire.json("athena", "GetQueryResults", {QueryExecutionId = qid})
  t.eq(b.ResultSet.Rows[2].Data[1].VarCharValue, "42", "header row then the value")

  s, b = wire.json("glue", "GetTable", {DatabaseName = "nope", Name = "x"})
  t.like(b.__type, "#EntityNotFoundException$", "unknown database")
  wire.json("glue", "CreateDatabase", {DatabaseInput = {Name = "lake"}})
  s, b = wire.json("glue", "CreateDatabase", {DatabaseInput = {Name = "lake"}})
  t.like(b.__type, "#AlreadyExistsException$", "database twice")
end)

t.test("throttling and the state file", function()
  sim.configure{throttle = 1}
  local s, b = wire.json("dms", "DescribeReplicationTasks", {})
  t.eq(s, 400, "throttle=1 throttles every call")
  t.like(b.__type, "#ThrottlingException$", "ThrottlingException")
  local st, node = wire.s3("GET", "/flowrun-demo-raw?list-type=2")
  t.eq(st, 503, "S3 throttling is 503")
  t.eq(wire.child(node, "Code", true), "SlowDown", "SlowDown")
  sim.configure{fail = "throttle=0.5", random_seed = 7}
  local n = 0
  for _ = 1, 200 do
    if wire.json("dms", "DescribeReplicationTasks", {}) == 400 then n = n + 1 end
  end
  t.ok(n > 60 and n < 140, "throttle=0.5 throttles about half (" .. n .. "/200)")

  local path = os.tmpname()
  os.remove(path)
  sim.configure{state_file = path}
  local id = run_cluster()
  wire.s3("PUT", "/flowrun-demo-raw/bin", "\0\1\2\255")
  sim.configure{state_file = path}   -- as a new process would: load from the file
  local _, c = emr("DescribeCluster", {ClusterId = id})
  t.eq(c.Cluster and c.Cluster.Id, id, "cluster found again from the state file")
  local _, body = wire.s3("GET", "/flowrun-demo-raw/bin")
  t.eq(body, "\0\1\2\255", "binary object survives the state file")
  local id2 = run_cluster()
  t.ok(id2 ~= id, "ids never repeat after a reload")
  os.remove(path)
end)

t.test("seed file and durations", function()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(json.encode({
    durations = {emr_starting = 10, emr_bootstrapping = 5},
    dms = {
      endpoints = {{EndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:T", EndpointType = "TARGET",
                    EngineName = "s3", S3Settings = {BucketName = "mine", BucketFolder = "x"}}},
      tasks = {{ReplicationTaskArn = "arn:aws:dms:us-east-1:123456789012:task:MINE",
                TargetEndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:T",
                TableMappings = json.encode({rules = {{["rule-type"] = "selection",
                  ["object-locator"] = {["schema-name"] = "s", ["table-name"] = "t"},
                  ["rule-action"] = "include"}}})}},
    },
    s3 = {buckets = {mine = {objects = {["seeded.txt"] = "hello"}}}},
    secrets = {{Name = "x", SecretJSON = {a = 1}}},
  }))
  f:close()
  sim.configure{seed_file = path}
  os.remove(path)
  local s, b = wire.json("dms", "DescribeReplicationTasks",
    {Filters = {{Name = "replication-task-id", Values = {"mine"}}}})
  t.eq(s == 200 and b.ReplicationTasks[1].ReplicationTaskArn, "arn:aws:dms:us-east-1:123456789012:task:MINE",
    "seeded task, identifier derived from the ARN")
  t.eq(#(select(2, wire.json("dms", "DescribeReplicationTasks", {})).ReplicationTasks), 3,
    "the default world (a full-load task and a CDC task) is still there")
  local _, body = wire.s3("GET", "/mine/seeded.txt")
  t.eq(body, "hello", "seeded object")
  wire.json("dms", "StartReplicationTask", {ReplicationTaskArn = "arn:aws:dms:us-east-1:123456789012:task:MINE",
    StartReplicationTaskType = "start-replication"})
  flow.sleep(200)
  local _, st = wire.json("dms", "DescribeTableStatistics", {ReplicationTaskArn = "arn:aws:dms:us-east-1:123456789012:task:MINE"})
  t.eq(st.TableStatistics[1].TableName, "t", "tables from the selection rules")
  t.eq(st.TableStatistics[1].FullLoadRows, 10000, "10,000 rows when no size is given")
  local _, node = wire.s3("GET", "/mine?list-type=2&prefix=x/s/t/")
  t.eq(#wire.children(node, "Contents"), 1, "raw file under the seeded bucket folder")
  local _, c = wire.json("emr", "RunJobFlow", {Name = "n", Instances = {KeepJobFlowAliveWhenNoSteps = true}})
  flow.sleep(16)
  local _, d = wire.json("emr", "DescribeCluster", {ClusterId = c.JobFlowId})
  t.eq(d.Cluster.Status.State, "WAITING", "seeded durations: WAITING after 15 s")
  sim.configure{no_default = true, durations = {emr_starting = 1}}
  s = wire.json("dms", "DescribeReplicationTasks", {})
  t.eq(s, 400, "no_default: an empty world")
  t.eq(sim.world().durations.emr_starting, 1, "configure{durations}")
end)

t.done()
