-- The simulator behind the real AWS client (--sim): every protocol round-trips, and errors
-- come back as the client's error objects with AWS's codes, statuses and request ids.
local t = require "tap"
local flow = require "flow"
require("aws").use_transport(require("sim").handle)
local sim = require "sim"
local aws = require "aws"

flow.core.set_virtual_time(true)

t.test("each service through the client", function()
  sim.configure{}
  local id = aws.sts.get_caller_identity()
  t.eq(id.Account, "123456789012", "sts (query/XML)")
  local r = aws.dms.describe_replication_tasks{}
  t.eq(#r.ReplicationTasks, 2, "dms (json): the default world's two tasks")
  aws.s3.put_object{Bucket = "flowrun-demo-raw", Key = "dir/a b+c.txt", Body = "x\0y"}
  local o = aws.s3.get_object{Bucket = "flowrun-demo-raw", Key = "dir/a b+c.txt"}
  t.eq(o.Body, "x\0y", "s3 (rest-xml): key with space and plus, binary body")
  local l = aws.s3.list_objects_v2{Bucket = "flowrun-demo-raw", Prefix = "dir/"}
  t.eq(l.Contents and l.Contents[1] and l.Contents[1].Key, "dir/a b+c.txt", "list decodes the key")
  aws.glue.create_database{DatabaseInput = {Name = "lake"}}
  t.eq(aws.glue.get_database{Name = "lake"}.Database.Name, "lake", "glue")
  local s = aws.secretsmanager.get_secret_value{SecretId = "flowrun/demo/source-db"}
  t.like(s.SecretString, '"dbname"', "secretsmanager")
  local q = aws.athena.start_query_execution{QueryString = "SELECT 1"}
  t.like(q.QueryExecutionId, "^%x+%-", "athena")
  local c = aws.emr.run_job_flow{Name = "x", Instances = {KeepJobFlowAliveWhenNoSteps = true}}
  t.like(c.JobFlowId, "^j%-", "emr")
end)

t.test("errors as the client raises them", function()
  sim.configure{}
  local e = t.raises(function() aws.emr.describe_cluster{ClusterId = "j-NOPE"} end,
    "aws.InvalidRequestException", "EMR unknown cluster")
  t.eq(e and e.status, 400, "HTTP 400")
  t.ok(e and e.request_id, "request id")
  t.eq(e and e.retryable, false, "not retryable")
  e = t.raises(function() aws.s3.get_object{Bucket = "nope", Key = "k"} end, "aws.NoSuchBucket", "NoSuchBucket")
  t.eq(e and e.status, 404, "404")
  t.like(e and e.request_id or "", "^%x+$", "S3 request id, hex")
  t.raises(function() aws.dms.describe_table_statistics{ReplicationTaskArn = "arn:nope"} end,
    "aws.ResourceNotFoundFault", "DMS unknown ARN")
  t.raises(function() aws.glue.get_table{DatabaseName = "lake", Name = "x"} end,
    "aws.EntityNotFoundException", "Glue missing")
  t.raises(function() aws.sts.assume_role{RoleArn = "arn:aws:iam::1:role/r"} end,
    "missing required parameter RoleSessionName", "a missing required member is refused before sending")
  sim.configure{throttle = 1}
  e = t.raises(function() aws.dms.describe_replication_tasks{} end, "aws.ThrottlingException",
    "throttled after the client's retries")
  t.eq(e and e.retryable, true, "throttling is retryable")
end)

t.done()
