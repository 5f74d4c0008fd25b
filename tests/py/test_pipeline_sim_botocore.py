"""The simulator's answers, parsed by botocore (the official SDK's parsers and API models) as
if they had come from AWS: every answer the pipeline relies on must parse, carry only members
the model knows (no invented fields), with the types the model says; error answers must give
botocore the right error code. A flowrun script records the simulator's raw answers."""
import datetime
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

try:
    import botocore.parsers
    import botocore.session
except ImportError as e:
    tap.ok(False, "botocore importable: %s" % e)
    tap.done()

RECORDER = r'''
local flow = require "flow"
local json = require "json"
local sim = require "sim"
local wire = require "sim.wire"
flow.core.set_virtual_time(true)
sim.configure{}
local out = {}
local function rec(svc, op, r, want_error)
  out[#out + 1] = {service = svc, op = op, status = r.status, headers = r.headers, body = r.body,
                   want_error = want_error or json.null}
end
local function j(svc, op, params, want_error)
  local _, b, r = wire.json(svc, op, params)
  rec(svc, op, r, want_error)
  return b
end
local TASK = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000"
sim.set_table_rows(TASK, {["public.customers"] = 5000, ["public.orders"] = 48000})
j("dms", "StartReplicationTask", {ReplicationTaskArn = TASK, StartReplicationTaskType = "start-replication"})
flow.sleep(90)
j("dms", "DescribeReplicationTasks", {Filters = {{Name = "replication-task-arn", Values = {TASK}}}})
j("dms", "DescribeTableStatistics", {ReplicationTaskArn = TASK})
flow.sleep(3600)
j("dms", "DescribeReplicationTasks", {})
j("dms", "DescribeTableStatistics", {ReplicationTaskArn = TASK})
j("dms", "DescribeEndpoints", {})
j("dms", "StopReplicationTask", {ReplicationTaskArn = TASK}, "InvalidResourceStateFault")
j("dms", "DescribeReplicationTasks", {Filters = {{Name = "replication-task-arn", Values = {"arn:x"}}}},
  "ResourceNotFoundFault")
j("glue", "CreateDatabase", {DatabaseInput = {Name = "lake"}})
local c = j("emr", "RunJobFlow", {Name = "c", LogUri = "s3://flowrun-demo-logs/emr/", ReleaseLabel = "emr-7.1.0",
  Applications = {{Name = "Spark"}}, Instances = {KeepJobFlowAliveWhenNoSteps = true},
  Tags = {{Key = "k", Value = "v"}}})
local id = c.JobFlowId
local steps = j("emr", "AddJobFlowSteps", {JobFlowId = id, Steps = {{Name = "s", ActionOnFailure = "CONTINUE",
  HadoopJarStep = {Jar = "command-runner.jar", Args = {"spark-submit", "x.py", "--database", "lake",
  "--table", "public.orders:id", "--warehouse", "s3://flowrun-demo-lake/wh"}}}}})
j("emr", "DescribeCluster", {ClusterId = id})
flow.sleep(3600)
j("emr", "DescribeCluster", {ClusterId = id})
j("emr", "DescribeStep", {ClusterId = id, StepId = steps.StepIds[1]})
j("emr", "ListSteps", {ClusterId = id})
j("emr", "ListClusters", {ClusterStates = {"WAITING"}})
j("emr", "CancelSteps", {ClusterId = id, StepIds = steps.StepIds})
j("emr", "TerminateJobFlows", {JobFlowIds = {id}})
j("emr", "DescribeCluster", {ClusterId = "j-NOPE"}, "InvalidRequestException")
j("emr", "AddJobFlowSteps", {Steps = {}}, "ValidationException")
j("glue", "GetDatabase", {Name = "lake"})
j("glue", "GetTable", {DatabaseName = "lake", Name = "orders"})
j("glue", "GetTables", {DatabaseName = "lake"})
j("glue", "GetTable", {DatabaseName = "lake", Name = "nope"}, "EntityNotFoundException")
j("secretsmanager", "GetSecretValue", {SecretId = "flowrun/demo/source-db"})
j("secretsmanager", "DescribeSecret", {SecretId = "flowrun/demo/source-db"})
j("secretsmanager", "GetSecretValue", {SecretId = "nope"}, "ResourceNotFoundException")
local q = j("athena", "StartQueryExecution", {QueryString = "SELECT count(*) AS n FROM lake.orders",
  ResultConfiguration = {OutputLocation = "s3://flowrun-demo-athena/r/"}})
flow.sleep(10)
j("athena", "GetQueryExecution", {QueryExecutionId = q.QueryExecutionId})
j("athena", "GetQueryResults", {QueryExecutionId = q.QueryExecutionId})
local function rest(svc, op, method, path, params, want_error)
  local r = sim.handle{method = method, url = "https://" .. svc .. ".us-east-1.amazonaws.com" .. path,
    headers = {["Content-Type"] = "application/json"}, body = params and json.encode(params) or "",
    service = svc, region = "us-east-1"}
  rec(svc, op, r, want_error)
  local ok, b = pcall(json.decode, r.body)
  return ok and b or {}
end
local app = rest("emr-serverless", "CreateApplication", "POST", "/applications",
  {name = "a", releaseLabel = "emr-7.1.0", type = "SPARK", clientToken = "t"})
flow.sleep(10)   -- CREATING -> CREATED
rest("emr-serverless", "StartApplication", "POST", "/applications/" .. app.applicationId .. "/start")
local jr = rest("emr-serverless", "StartJobRun", "POST", "/applications/" .. app.applicationId .. "/jobruns",
  {clientToken = "j", executionRoleArn = "arn:aws:iam::123456789012:role/r", name = "n",
   jobDriver = {sparkSubmit = {entryPoint = "s3://b/j.py", entryPointArguments = {"--x"}}},
   configurationOverrides = {monitoringConfiguration = {s3MonitoringConfiguration = {logUri = "s3://b/l/"}}}})
flow.sleep(600)
rest("emr-serverless", "GetApplication", "GET", "/applications/" .. app.applicationId)
rest("emr-serverless", "ListApplications", "GET", "/applications?states=STARTED")
rest("emr-serverless", "GetJobRun", "GET", "/applications/" .. app.applicationId .. "/jobruns/" .. jr.jobRunId)
rest("emr-serverless", "ListJobRuns", "GET", "/applications/" .. app.applicationId .. "/jobruns")
rest("emr-serverless", "CancelJobRun", "DELETE", "/applications/" .. app.applicationId .. "/jobruns/" ..
  jr.jobRunId, nil, "ValidationException")
rest("emr-serverless", "GetApplication", "GET", "/applications/00nope", nil, "ResourceNotFoundException")
rest("emr-serverless", "StopApplication", "POST", "/applications/" .. app.applicationId .. "/stop")
j("cloudwatch", "GetMetricStatistics", {Namespace = "AWS/DMS", MetricName = "CDCLatencySource",
  StartTime = flow.time() - 900, EndTime = flow.time(), Period = 60, Statistics = {"Maximum"},
  Dimensions = {{Name = "ReplicationInstanceIdentifier", Value = "flowrun-demo"},
                {Name = "ReplicationTaskIdentifier", Value = "FLOWRUNDEMOTASK00000000000"}}})
j("dms", "DescribeReplicationInstances", {})
local function query(svc, action, params, want_error)
  local parts = {"Action=" .. action, "Version=2010-03-31"}
  for k, v in pairs(params) do parts[#parts + 1] = k .. "=" .. v end
  local r = sim.handle{method = "POST", url = "https://" .. svc .. ".us-east-1.amazonaws.com/",
    headers = {["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"},
    body = table.concat(parts, "&"), service = svc, region = "us-east-1"}
  rec(svc, action, r, want_error)
end
query("sns", "Publish", {TopicArn = "arn:aws:sns:us-east-1:123456789012:flowrun-demo-alerts", Message = "m",
  Subject = "s"})
query("sns", "Publish", {TopicArn = "arn:aws:sns:us-east-1:123456789012:nope", Message = "m"}, "NotFound")
local function s3(op, method, url, body, want_error, headers)
  local _, _, r = wire.s3(method, url, body, headers)
  rec("s3", op, r, want_error)
end
s3("PutObject", "PUT", "/flowrun-demo-raw/dir/a.txt", "hello")
s3("GetObject", "GET", "/flowrun-demo-raw/dir/a.txt")
s3("HeadObject", "HEAD", "/flowrun-demo-raw/dir/a.txt")
s3("ListObjectsV2", "GET", "/flowrun-demo-raw?list-type=2&prefix=raw/&max-keys=2")
s3("ListObjectsV2", "GET", "/flowrun-demo-raw?list-type=2&delimiter=/")
s3("ListBuckets", "GET", "/")
s3("GetObject", "GET", "/flowrun-demo-raw/missing", nil, "NoSuchKey")
s3("ListObjectsV2", "GET", "/no-such-bucket?list-type=2", nil, "NoSuchBucket")
s3("HeadObject", "HEAD", "/flowrun-demo-raw/missing", nil, "404")
local _, _, r = wire.sts("GetCallerIdentity")
rec("sts", "GetCallerIdentity", r)
_, _, r = wire.sts("AssumeRole", {RoleArn = "arn:aws:iam::123456789012:role/r", RoleSessionName = "s"})
rec("sts", "AssumeRole", r)
_, _, r = wire.sts("AssumeRole", {RoleArn = "arn:aws:iam::123456789012:role/r"})
rec("sts", "AssumeRole", r, "ValidationError")
io.write(json.encode(out))
'''


def record():
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(RECORDER)
        path = f.name
    try:
        p = subprocess.run([tap.FLOWRUN, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60, cwd=tap.ROOT)
    finally:
        os.unlink(path)
    if p.returncode != 0:
        tap.diag(p.stderr)
    return json.loads(p.stdout)


def unknown_members(value, shape, path, out):
    """Members of value the model does not have, and values of the wrong Python type."""
    if shape is None:
        return
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            out.append("%s: expected a structure, got %r" % (path, value))
            return
        for k, v in value.items():
            if k == "ResponseMetadata" and path == "":
                continue
            if k not in shape.members:
                out.append("%s.%s: not in the model" % (path, k))
            else:
                unknown_members(v, shape.members[k], path + "." + k, out)
    elif t == "list":
        if not isinstance(value, list):
            out.append("%s: expected a list, got %r" % (path, value))
            return
        for i, v in enumerate(value):
            unknown_members(v, shape.member, "%s[%d]" % (path, i), out)
    elif t == "map":
        if not isinstance(value, dict):
            out.append("%s: expected a map, got %r" % (path, value))
            return
        for k, v in value.items():
            unknown_members(v, shape.value, "%s{%s}" % (path, k), out)
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            out.append("%s: expected an integer, got %r" % (path, value))
    elif t == "boolean":
        if not isinstance(value, bool):
            out.append("%s: expected a boolean, got %r" % (path, value))
    elif t == "timestamp":
        if not isinstance(value, datetime.datetime):
            out.append("%s: expected a timestamp, got %r" % (path, value))
    elif t == "string":
        if not isinstance(value, str):
            out.append("%s: expected a string, got %r" % (path, value))
    elif t in ("double", "float"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            out.append("%s: expected a number, got %r" % (path, value))


def raw_members(value, shape, path, out):
    """Keys of the raw JSON answer that the model does not have."""
    if shape is None:
        return
    t = shape.type_name
    if t == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k not in shape.members:
                out.append("%s.%s: not in the model (raw answer)" % (path, k))
            else:
                raw_members(v, shape.members[k], path + "." + k, out)
    elif t == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            raw_members(v, shape.member, "%s[%d]" % (path, i), out)
    elif t == "map" and isinstance(value, dict):
        for k, v in value.items():
            raw_members(v, shape.value, "%s{%s}" % (path, k), out)


def protocol_of(model):
    """The protocol flowrun speaks to the service (scripts/gen-aws-models.py picks it the same way:
    CloudWatch lists CBOR first, then json)."""
    for p in model.metadata.get("protocols") or [model.metadata["protocol"]]:
        if p in ("json", "rest-json", "rest-xml", "query"):
            return p


def check(answers):
    session = botocore.session.get_session()
    models = {}
    for a in answers:
        svc, op = a["service"], a["op"]
        if svc not in models:
            models[svc] = session.get_service_model(svc)
        model = models[svc]
        opm = model.operation_model(op)
        parser = botocore.parsers.create_parser(protocol_of(model))
        headers = {k.lower(): v for k, v in (a["headers"] or {}).items()}
        resp = {"status_code": a["status"], "headers": headers, "body": a["body"].encode("latin-1")
                if isinstance(a["body"], str) else b""}
        label = "%s.%s (HTTP %d)" % (svc, op, a["status"])
        try:
            parsed = parser.parse(resp, opm.output_shape)
        except Exception as e:
            tap.ok(False, label + " parses: %r" % e)
            continue
        want = a["want_error"]
        if want:
            got = parsed.get("Error", {}).get("Code")
            tap.eq(got, want, label + ": botocore reads error code " + str(want))
            if a["status"] != 404 or op != "HeadObject":
                tap.ok(parsed.get("Error", {}).get("Message"), label + ": with a message")
            continue
        tap.ok(a["status"] < 300 and "Error" not in parsed, label + " is a success")
        problems = []
        unknown_members(parsed, opm.output_shape, "", problems)
        if protocol_of(model) == "json":
            # botocore's parser drops members it does not know: look at the raw JSON for those
            raw_members(json.loads(a["body"]), opm.output_shape, "", problems)
        tap.ok(not problems, label + " has only model members, typed as the model says")
        for p in problems[:10]:
            tap.diag(p)


def main():
    answers = record()
    tap.ok(len(answers) > 30, "recorded %d simulator answers" % len(answers))
    check(answers)
    tap.done()


if __name__ == "__main__":
    main()
