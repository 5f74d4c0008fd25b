-- Conformance against moto (FLOWRUN_TEST_MOTO): every protocol moto speaks (json: DMS,
-- Secrets Manager, EMR; rest-xml: S3; query: STS) over real HTTP through the endpoint override,
-- real AWS-shaped errors, pagination. moto parses requests with its own code, so a wrong wire
-- format fails here. (moto has no MWAA: rest-json is checked against tests/fakeaws.py.)
local t = require "tap"
local flow = require "flow"
local aws = require "aws"

local moto = os.getenv("FLOWRUN_TEST_MOTO")
t.ok(moto ~= nil and moto ~= "", "FLOWRUN_TEST_MOTO is set (tests/servers/moto.sh)")
if not moto then t.done() os.exit(1) end

local uniq = tostring(os.time()) .. tostring(math.random(100000))
aws.reset { env = {
  AWS_ENDPOINT_URL = moto, AWS_ACCESS_KEY_ID = "testing", AWS_SECRET_ACCESS_KEY = "testing",
  AWS_REGION = "us-east-1", HOME = "/nonexistent",
} }

t.test("query protocol (STS)", function()
  local r = aws.sts.get_caller_identity()
  t.eq(r.Account, "123456789012", "GetCallerIdentity: Account")
  t.like(r.Arn, "^arn:aws:sts::123456789012:", "GetCallerIdentity: Arn")
  t.ok(r.ResponseMetadata.RequestId ~= nil, "request id read from the XML")
  local a = aws.sts.assume_role { RoleArn = "arn:aws:iam::123456789012:role/r1",
    RoleSessionName = "s1", DurationSeconds = 900, Tags = { { Key = "team", Value = "data eng" } } }
  t.like(a.Credentials.AccessKeyId, "^ASIA", "AssumeRole: temporary key")
  t.eq(type(a.PackedPolicySize), "number", "integer member typed from the model")
  t.like(a.AssumedRoleUser.Arn, "assumed%-role/r1/s1$", "AssumeRole: nested structure")
end)

t.test("json protocol (DMS, Secrets Manager)", function()
  local r = aws.dms.describe_replication_tasks {}
  t.eq(#r.ReplicationTasks, 0, "DescribeReplicationTasks: empty list")
  local e = t.raises(function()
    aws.dms.start_replication_task { StartReplicationTaskType = "reload-target",
      ReplicationTaskArn = "arn:aws:dms:us-east-1:123456789012:task:NOPE" }
  end, "aws.ResourceNotFoundFault", "unknown ARN: aws.ResourceNotFoundFault")
  t.eq(e and e.status, 400, "error status")
  t.eq(e and e.service, "dms", "error service")
  t.eq(e and e.operation, "StartReplicationTask", "error operation")
  t.ok(e and e.request_id, "error request id")
  t.eq(e and e.retryable, false, "not retryable")
  t.like(tostring(e), "^aws%.ResourceNotFoundFault: .*aws%.dms%.start_replication_task, HTTP 400",
    "tostring names code, call and status")
  local name = "flowrun-" .. uniq
  aws.secretsmanager.create_secret { Name = name, SecretString = "hunter2" }
  local v = aws.call("secretsmanager", "GetSecretValue", { SecretId = name })
  t.eq(v.SecretString, "hunter2", "aws.call with PascalCase operation")
  t.raises(function() aws.secretsmanager.get_secret_value { SecretId = name .. "-missing" } end,
    "aws.ResourceNotFoundException", "missing secret")
end)

t.test("rest-xml protocol (S3)", function()
  local b = "flowrun-" .. uniq
  aws.s3.create_bucket { Bucket = b }
  local key = "dir/a b+c=d&e~(f).txt"
  aws.s3.put_object { Bucket = b, Key = key, Body = "hello world", ContentType = "text/plain",
    Metadata = { owner = "flow run" } }
  local h = aws.s3.head_object { Bucket = b, Key = key }
  t.eq(h.ContentLength, 11, "HeadObject: ContentLength from the header, as an integer")
  t.eq(h.ContentType, "text/plain", "HeadObject: ContentType")
  t.eq(h.Metadata and h.Metadata.owner, "flow run", "HeadObject: x-amz-meta-* as Metadata")
  local g = aws.s3.get_object { Bucket = b, Key = key }
  t.eq(g.Body, "hello world", "GetObject: Body is the payload")
  local big = string.rep("0123456789abcdef", 65536) -- 1 MiB
  aws.s3.put_object { Bucket = b, Key = "big", Body = big }
  t.eq(aws.s3.get_object { Bucket = b, Key = "big" }.Body == big, true, "1 MiB round trip")
  local l = aws.s3.list_objects_v2 { Bucket = b, Prefix = "dir/" }
  t.eq(l.KeyCount, 1, "ListObjectsV2: KeyCount")
  t.eq(l.Contents[1].Key, key, "ListObjectsV2: key with special characters")
  t.eq(l.Contents[1].Size, 11, "ListObjectsV2: Size typed")
  t.eq(l.IsTruncated, false, "ListObjectsV2: boolean")
  -- keys that a path normalizer or a careless encoder would change
  local odd = { "a/./b/../c", "/lead", "trail/", "sp ace+plus", "\u{FC}/\u{20AC}", "q?x=1#h", "a//b" }
  for _, k in ipairs(odd) do aws.s3.put_object { Bucket = b, Key = "odd/" .. k, Body = k } end
  for _, k in ipairs(odd) do
    t.eq(aws.s3.get_object { Bucket = b, Key = "odd/" .. k }.Body, k, "key round trip: " .. k)
  end
  local listed = {}
  for _, o in ipairs(aws.s3.list_objects_v2 { Bucket = b, Prefix = "odd/" }.Contents) do listed[o.Key] = true end
  for _, k in ipairs(odd) do t.ok(listed["odd/" .. k], "listed as sent: " .. k) end
  aws.s3.delete_object { Bucket = b, Key = key }
  t.raises(function() aws.s3.get_object { Bucket = b, Key = key } end, "aws.NoSuchKey",
    "GetObject after DeleteObject: aws.NoSuchKey")
  local e = t.raises(function() aws.s3.head_object { Bucket = b, Key = key } end, "aws.NotFound",
    "HeadObject of a missing key: aws.NotFound (no body to read)")
  t.eq(e and e.status, 404, "status 404")
  e = t.raises(function() aws.s3.list_objects_v2 { Bucket = b .. "-missing" } end, "aws.NoSuchBucket",
    "missing bucket: aws.NoSuchBucket")
  t.ok(e and e.request_id, "S3 error request id")
end)

t.test("presigned URLs", function()
  local http = require "http"
  local b = "flowrun-presign-" .. uniq
  aws.s3.create_bucket { Bucket = b }
  aws.s3.put_object { Bucket = b, Key = "dir/a b.txt", Body = "presigned hello" }
  local url = aws.presign("s3", "GetObject", { Bucket = b, Key = "dir/a b.txt" }, { expires = 600 })
  t.like(url, "^" .. (moto .. "/" .. b):gsub("%p", "%%%0") .. "/dir/a%%20b%.txt%?", "path-style URL on the endpoint")
  t.like(url, "X%-Amz%-Expires=600", "expiry")
  t.like(url, "X%-Amz%-Credential=testing%%2F%d+%%2Fus%-east%-1%%2Fs3%%2Faws4_request", "credential scope")
  t.like(url, "X%-Amz%-SignedHeaders=host", "only the host is signed")
  t.like(url, "X%-Amz%-Signature=%x+$", "signature last")
  local r = http.request { url = url }
  t.eq(r and r.status, 200, "a plain GET of the URL works")
  t.eq(r and r.body, "presigned hello", "and reads the object")
  t.raises(function() aws.presign("dms", "DescribeReplicationTasks") end, "only REST", "json operations refused")
  t.raises(function() aws.presign("s3", "GetObject", { Bucket = b, Key = "k" }, { expires = 0 }) end,
    "expires", "bad expiry")
end)

t.test("pagination", function()
  local b = "flowrun-pages-" .. uniq
  aws.s3.create_bucket { Bucket = b }
  local hs = {}
  for i = 1, 7 do
    hs[i] = flow.spawn(function()
      aws.s3.put_object { Bucket = b, Key = ("k%02d"):format(i), Body = tostring(i) }
    end)
  end
  flow.all(hs)
  local pages, keys = 0, {}
  for page in aws.paginate("s3", "list_objects_v2", { Bucket = b, MaxKeys = 3 }) do
    pages = pages + 1
    for _, o in ipairs(page.Contents or {}) do keys[#keys + 1] = o.Key end
  end
  t.eq(pages, 3, "7 keys, 3 per page: 3 pages (ContinuationToken)")
  t.eq(keys, { "k01", "k02", "k03", "k04", "k05", "k06", "k07" }, "every key once, in order")
  for i = 1, 5 do
    aws.secretsmanager.create_secret { Name = ("pg-%s-%d"):format(uniq, i), SecretString = "x" }
  end
  local n = 0
  for page in aws.paginate("secretsmanager", "ListSecrets", { MaxResults = 2 }) do
    n = n + 1
    t.ok(#page.SecretList <= 2, "page " .. n .. " holds at most 2")
  end
  t.ok(n >= 3, "ListSecrets: NextToken pagination (" .. n .. " pages)")
  local all = aws.collect("secretsmanager", "ListSecrets", { MaxResults = 2 })
  t.ok(#all >= 5, "aws.collect gathers the result key")
  t.raises(function() aws.paginate("sts", "GetCallerIdentity") end, "cannot be paginated",
    "an operation without paginator")
end)

t.test("concurrent calls share connections", function()
  local hs = {}
  for i = 1, 20 do hs[i] = flow.spawn(function() return aws.sts.get_caller_identity().Account end) end
  local r = flow.all(hs)
  t.eq(r[20], "123456789012", "20 concurrent calls")
end)

t.done()
