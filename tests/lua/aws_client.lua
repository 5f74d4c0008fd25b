-- The AWS client without a server: the transport seam (aws.use_transport), endpoint
-- precedence, region resolution, simulator defaults, bad input with near-name suggestions, the
-- REPL completion hooks, boto3 names, redaction.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local aws = require "aws"
local sigv4 = require "aws.sigv4"

local seen
local function capture(answer)
  seen = {}
  aws.use_transport(function(req)
    seen[#seen + 1] = req
    if type(answer) == "function" then return answer(req, #seen) end
    if answer then return answer end
    local body = ({ s3 = "", sts = "<R><GetCallerIdentityResult/></R>" })[req.service] or "{}"
    return { status = 200, headers = {}, body = body }
  end)
end

local function env(e)
  e = e or {}
  e.HOME = e.HOME or "/nonexistent"
  aws.reset { env = e }
  aws.configure { random = function() return 0 end }
end

local creds = { AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "TESTSECRETKEY/abc+def" }
local function with(extra)
  local e = {}
  for k, v in pairs(creds) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

t.test("the transport seam", function()
  env(with { AWS_REGION = "eu-west-1" })
  capture()
  aws.dms.describe_replication_tasks { MaxRecords = 20 }
  local r = seen[1]
  t.eq(r.method, "POST", "req.method")
  t.eq(r.url, "https://dms.eu-west-1.amazonaws.com/", "req.url: the default endpoint")
  t.eq(r.service, "dms", "req.service is the services key")
  t.eq(r.region, "eu-west-1", "req.region")
  t.eq(r.headers["X-Amz-Target"], "AmazonDMSv20160101.DescribeReplicationTasks", "headers as sent")
  t.eq(r.headers.Host, "dms.eu-west-1.amazonaws.com", "Host")
  t.like(r.headers.Authorization, "^AWS4%-HMAC%-SHA256 Credential=AKIDTEST/%d+/eu%-west%-1/dms/aws4_request", "signed")
  t.ok(r.headers["X-Amz-Date"], "X-Amz-Date")
  t.eq(json.decode(r.body).MaxRecords, 20, "req.body is the JSON string")
  -- the answer is parsed like a network answer, errors and retries included
  capture(function(_, n)
    if n == 1 then return { status = 503, headers = {}, body = '{"__type":"ServiceUnavailable"}' } end
    return { status = 200, headers = { ["X-Amzn-RequestId"] = "rid-2" }, body = '{"ReplicationTasks": []}' }
  end)
  local out = aws.dms.describe_replication_tasks {}
  t.eq(#seen, 2, "a 503 from the transport is retried")
  t.eq(out.ResponseMetadata.RequestId, "rid-2", "answer headers are case-insensitive")
  capture { status = 400, headers = {}, body = '{"__type":"InvalidParameterValueException","message":"bad"}' }
  t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InvalidParameterValueException", "errors too")
  capture(function() return nil, flow.error("http.connect", "refused", { retryable = true }) end)
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "http.connect", "transport errors")
  t.eq(#seen, 3, "and they are retried")
  t.eq(e and e.operation, "DescribeReplicationTasks", "with the operation")
  capture(function() return "nonsense" end)
  t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.TransportError", "a bad transport answer")
  aws.use_transport(nil)
end)

t.test("explicit credentials", function()
  env(with { AWS_REGION = "us-east-1" })
  capture()
  aws.configure { credentials = { access_key_id = "AKIDCONF", secret_access_key = "conf-secret" } }
  aws.dms.describe_replication_tasks {}
  t.like(seen[1].headers.Authorization, "Credential=AKIDCONF/", "aws.configure{credentials=}")
  aws.dms.describe_replication_tasks({}, { credentials = { access_key_id = "AKIDCALL",
    secret_access_key = "call-secret", session_token = "call-token" } })
  t.like(seen[2].headers.Authorization, "Credential=AKIDCALL/", "opts.credentials")
  t.eq(seen[2].headers["X-Amz-Security-Token"], "call-token", "with its session token")
  t.raises(function() aws.dms.describe_replication_tasks({}, { credentials = { access_key_id = "A" } }) end,
    "secret_access_key", "incomplete credentials")
  env(with { AWS_REGION = "us-east-1" })
  t.eq(aws.credentials().access_key_id, "AKIDTEST", "aws.credentials() names the key in use")
  t.eq(aws.credentials().secret_access_key, nil, "but never the secret")
  aws.use_transport(nil)
end)

t.test("simulator defaults: dummy credentials and region", function()
  env {}
  capture()
  aws.glue.get_databases {}
  t.eq(seen[1].region, "us-east-1", "region defaults to us-east-1")
  t.like(seen[1].headers.Authorization, "Credential=AKIDSIM/", "dummy credentials AKIDSIM")
  env { AWS_REGION = "ap-south-1" }
  capture()
  aws.glue.get_databases {}
  t.eq(seen[1].region, "ap-south-1", "a configured region is kept")
  -- the simulator as the transport: no region, no credentials, no network needed
  env {}
  aws.use_transport(require("sim").handle)
  local ok, r = pcall(aws.sts.get_caller_identity)
  t.ok(ok and type(r) == "table" and r.Account ~= nil, "require('sim').handle answers: " .. tostring(ok and r.Arn or r))
  aws.use_transport(nil)
end)

t.test("endpoint precedence", function()
  local cfg = os.tmpname()
  local f = io.open(cfg, "w")
  f:write("[default]\nregion = eu-west-3\nendpoint_url = http://profile.example:1\n")
  f:close()
  local function url(extra, opts)
    env(with(extra))
    capture()
    aws.call("dms", "DescribeReplicationTasks", {}, opts)
    return seen[1].url
  end
  local base = { AWS_CONFIG_FILE = cfg }
  t.eq(url(base), "http://profile.example:1/", "4: the profile's endpoint_url")
  base.AWS_ENDPOINT_URL = "http://global.example:2"
  t.eq(url(base), "http://global.example:2/", "3: AWS_ENDPOINT_URL beats the profile")
  base.AWS_ENDPOINT_URL_DATABASE_MIGRATION_SERVICE = "http://dms.example:3/base/"
  t.eq(url(base), "http://dms.example:3/base/", "2: AWS_ENDPOINT_URL_<SERVICE_ID> beats it, base path kept")
  t.eq(url(base, { endpoint_url = "http://call.example:4" }), "http://call.example:4/", "1: the call's endpoint beats all")
  base.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS = "true"
  t.eq(url(base), "https://dms.eu-west-3.amazonaws.com/", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: the default again")
  os.remove(cfg)
  local ids = { emr = "EMR", glue = "GLUE", secretsmanager = "SECRETS_MANAGER", s3 = "S3", sts = "STS",
    athena = "ATHENA", mwaa = "MWAA" }
  for svc, id in pairs(ids) do
    env(with { AWS_REGION = "us-east-1", ["AWS_ENDPOINT_URL_" .. id] = "http://" .. svc .. ".local:9" })
    capture()
    local op = ({ emr = "ListClusters", glue = "GetDatabases", secretsmanager = "ListSecrets", s3 = "ListBuckets",
      sts = "GetCallerIdentity", athena = "ListWorkGroups", mwaa = "ListEnvironments" })[svc]
    aws.call(svc, op, {})
    -- MWAA's ListEnvironments carries the model's host prefix "api." (botocore adds it too)
    t.like(seen[1].url, "^http://" .. (svc == "mwaa" and "api%." or "") .. svc .. "%.local:9/",
      "AWS_ENDPOINT_URL_" .. id)
  end
  env(with { AWS_REGION = "eu-west-1" })
  capture()
  aws.s3.get_object { Bucket = "my-bucket", Key = "a/b c.txt" }
  t.eq(seen[1].url, "https://my-bucket.s3.eu-west-1.amazonaws.com/a/b%20c.txt", "S3 default: virtual-hosted")
  aws.s3.get_object { Bucket = "My_Bucket", Key = "k" }
  t.eq(seen[2].url, "https://s3.eu-west-1.amazonaws.com/My_Bucket/k", "S3: a bucket that is no DNS name goes in the path")
  aws.s3.get_object({ Bucket = "my-bucket", Key = "k" }, { s3_addressing_style = "path" })
  t.eq(seen[3].url, "https://s3.eu-west-1.amazonaws.com/my-bucket/k", "S3: path style asked for")
  t.eq(seen[1].headers["X-Amz-Content-SHA256"], sigv4.sha256_hex(""), "S3: payload hash header")
  aws.mwaa.create_cli_token { Name = "env1" }
  t.eq(seen[4].url, "https://env.airflow.eu-west-1.amazonaws.com/clitoken/env1", "MWAA: host prefix env.")
  t.like(seen[4].headers.Authorization, "/eu%-west%-1/airflow/aws4_request", "MWAA: signing name airflow")
  aws.sts.get_caller_identity({}, { region = "cn-north-1" })
  t.eq(seen[5].url, "https://sts.cn-north-1.amazonaws.com.cn/", "China partition suffix")
  aws.use_transport(nil)
end)

t.test("regions", function()
  env(creds)
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.NoRegion", "no region: aws.NoRegion")
  t.like(e and e.message, "AWS_REGION", "the message says where to set one")
  env(with { AWS_REGION = "eu-west-1", AWS_DEFAULT_REGION = "eu-west-2" })
  capture()
  aws.dms.describe_replication_tasks {}
  t.eq(seen[1].region, "eu-west-1", "AWS_REGION beats AWS_DEFAULT_REGION")
  env(with { AWS_DEFAULT_REGION = "eu-west-2" })
  capture()
  aws.dms.describe_replication_tasks {}
  t.eq(seen[1].region, "eu-west-2", "AWS_DEFAULT_REGION")
  aws.dms.describe_replication_tasks({}, { region = "sa-east-1" })
  t.eq(seen[2].region, "sa-east-1", "opts.region")
  t.raises(function() aws.dms.describe_replication_tasks({}, { region = "us east" }) end, "bad region", "a malformed region")
  aws.use_transport(nil)
end)

t.test("bad input", function()
  env(with { AWS_REGION = "us-east-1" })
  capture()
  t.raises(function() return aws.dsm end, "did you mean dms", "aws.dsm suggests dms")
  t.raises(function() aws.call("secretmanager", "ListSecrets") end, "did you mean secretsmanager", "aws.call suggests too")
  t.raises(function() aws.call(42, "X") end, "service name must be a string", "service not a string")
  t.raises(function() aws.dms.describe_replication_task {} end, "did you mean describe_replication_tasks",
    "unknown operation suggests near names")
  t.raises(function() aws.call("dms", "DescribeReplicationTask") end, "did you mean DescribeReplicationTasks",
    "PascalCase suggestions for PascalCase input")
  t.raises(function() aws.dms.describe_replication_tasks "x" end, "params must be a table, got string",
    "params not a table")
  t.raises(function() aws.dms.describe_replication_tasks({}, 5) end, "opts must be a table", "opts not a table")
  t.raises(function() aws.s3.get_object { Key = "k" } end, "missing required parameter Bucket", "a missing URI member")
  -- every protocol checks required members before sending (json services would answer with a
  -- not-found or a validation error that does not name the parameter)
  local sent = 0
  aws.use_transport(function() sent = sent + 1 return { status = 200, headers = {}, body = "{}" } end)
  t.raises(function() aws.dms.start_replication_task { StartReplicationTaskType = "reload-target" } end,
    "missing required parameter ReplicationTaskArn", "json: a missing required member")
  t.raises(function() aws.emr.add_job_flow_steps {} end,
    "missing required parameters JobFlowId, Steps", "json: several, all named")
  t.raises(function() aws.sts.assume_role { RoleArn = "arn:aws:iam::1:role/r" } end,
    "missing required parameter RoleSessionName", "query: a missing required member")
  t.eq(sent, 0, "nothing was sent")
  aws.use_transport(nil)
  t.raises(function() aws.s3.get_object { Bucket = "b", Key = "k", Bogus = 1 } end, "unknown parameter Bogus",
    "an unknown REST parameter")
  t.raises(function() aws.sts.assume_role { RoleArn = "r", RoleSessionName = "s", Tags = "notalist" } end,
    "parameter Tags must be a list", "a parameter of the wrong type")
  t.raises(function() aws.dms.describe_replication_tasks { Filters = "x" } end,
    "parameter Filters must be a list", "json services are checked too (from the model)")
  t.raises(function() aws.dms.describe_replication_tasks { MaxRecord = 5 } end,
    "unknown parameter MaxRecord — did you mean MaxRecords", "unknown parameter with a near name")
  t.raises(function() aws.dms.describe_replication_tasks { MaxRecords = 1.5 } end,
    "must be an integer", "an integer parameter given a fraction")
  t.raises(function() aws.dms.describe_replication_tasks { Filters = { f = function() end } } end, "aws.dms",
    "a value JSON cannot encode names the call")
  local ok, err = pcall(function() aws.dms.describe_replication_tasks "x" end)
  t.like(tostring(err), "aws_client%.lua:%d+:", "misuse errors point at the caller's line")
  t.eq(#seen, 0, "nothing was sent")
  aws.use_transport(nil)
  t.raises(function() aws.use_transport(5) end, "a function", "use_transport(5)")
end)

t.test("names and completion hooks", function()
  t.eq(aws.snake_name("DescribeReplicationTasks"), "describe_replication_tasks", "snake case")
  t.eq(aws.snake_name("ListObjectsV2"), "list_objects_v2", "V2")
  t.eq(aws.snake_name("AssumeRoleWithSAML"), "assume_role_with_saml", "acronym")
  t.eq(aws.snake_name("CreateCliToken"), "create_cli_token", "MWAA")
  local names = getmetatable(aws).__complete(aws)
  local set = {}
  for _, n in ipairs(names) do set[n] = true end
  t.ok(set.dms and set.s3 and set.sts and set.mwaa and set.emr and set.glue and set.athena and set.secretsmanager,
    "aws completes service names")
  local ops = getmetatable(aws.dms).__complete(aws.dms)
  local found = false
  for _, n in ipairs(ops) do if n == "describe_replication_tasks" then found = true end end
  t.ok(found, "aws.dms completes snake_case operation names")
  t.ok(#ops > 100, "all DMS operations (" .. #ops .. ")")
  -- through the REPL's own completer (flowrun.cli.repl), as Tab uses it
  local repl = require "flowrun.cli.repl"
  do
    local got = repl.complete({ aws = aws }, "aws.dms.describe_replication_t")
    local joined = table.concat(got, " ")
    t.like(joined, "describe_replication_tasks", "REPL completes aws.dms.describe_replication_t<TAB>")
    got = table.concat(repl.complete({ aws = aws }, "aws.secre"), " ")
    t.like(got, "secretsmanager", "REPL completes aws.secre<TAB>")
  end
  t.eq(type(aws.emr.run_job_flow), "function", "aws.emr.run_job_flow")
  t.eq(type(aws.s3.ListObjectsV2), "function", "PascalCase works too")
  t.like(tostring(aws.dms), "aws.dms %(json%)", "tostring of a service")
end)

t.test("a json service is one services entry", function()
  env(with { AWS_REGION = "eu-west-1" })
  aws.services.kinesis = {
    protocol = "json", json_version = "1.1", target_prefix = "Kinesis_20131202",
    endpoint_prefix = "kinesis", signing_name = "kinesis", service_id = "Kinesis",
    api_version = "2013-12-02", operations = { ListStreams = true, DescribeStream = true },
    paginators = { ListStreams = { input_token = "NextToken", output_token = "NextToken", result_key = "StreamNames" } },
  }
  capture { status = 200, headers = {}, body = '{"StreamNames": ["s1"]}' }
  local r = aws.kinesis.list_streams {}
  t.eq(r.StreamNames, { "s1" }, "aws.kinesis.list_streams works")
  t.eq(seen[1].url, "https://kinesis.eu-west-1.amazonaws.com/", "its endpoint")
  t.eq(seen[1].headers["X-Amz-Target"], "Kinesis_20131202.ListStreams", "its target")
  t.eq(aws.collect("kinesis", "ListStreams"), { "s1" }, "and its paginator")
  aws.services.kinesis = nil
  aws.use_transport(nil)
end)

t.test("paginate is a plain closure (works in any task)", function()
  env(with { AWS_REGION = "us-east-1" })
  capture(function(req, n)
    local body = json.decode(req.body)
    t.eq(body.Marker, n > 1 and ("m" .. (n - 1)) or nil, "page " .. n .. " sends the previous Marker")
    return { status = 200, headers = {}, body = json.encode { ReplicationTasks = { { N = n } },
      Marker = n < 3 and ("m" .. n) or nil } }
  end)
  local h = flow.spawn(function()
    local got = {}
    for page in aws.paginate("dms", "describe_replication_tasks", { MaxRecords = 20 }) do
      got[#got + 1] = page.ReplicationTasks[1].N
    end
    return got
  end)
  t.eq(h:wait(), { 1, 2, 3 }, "three pages in a spawned task")
  capture { status = 200, headers = {}, body = '{"ReplicationTasks": [], "Marker": "same"}' }
  t.raises(function() for _ in aws.paginate("dms", "DescribeReplicationTasks") do end end,
    "aws.PaginationLoop", "the same token twice stops")
  aws.use_transport(nil)
end)

t.test("redaction", function()
  local r = aws.redact
  local s = r('{"SecretString": "hunter2 \\"quoted\\"", "Name": "n", "SecretAccessKey": "abc"}')
  t.unlike(s, "hunter2", "SecretString value")
  t.unlike(s, "quoted", "even with escaped quotes")
  t.unlike(s, "abc", "SecretAccessKey")
  t.like(s, '"Name": "n"', "other fields kept")
  s = r("<SessionToken>tok123</SessionToken><AccessKeyId>ASIA1</AccessKeyId>")
  t.unlike(s, "tok123", "XML SessionToken")
  t.like(s, "ASIA1", "access key id kept")
  s = r("https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeef&X-Amz-Security-Token=FQo&x=1")
  t.unlike(s, "deadbeef", "presigned signature")
  t.unlike(s, "FQo", "presigned token")
  s = r("Authorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/dms/aws4_request, SignedHeaders=host, Signature=0123abcd")
  t.unlike(s, "0123abcd", "Authorization signature")
  t.like(s, "Credential=AKID/", "credential scope kept")
  -- secrets known to the client are masked anywhere
  env(with { AWS_REGION = "us-east-1" })
  capture { status = 400, headers = {}, body = '{"__type":"X","message":"key TESTSECRETKEY/abc+def leaked"}' }
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.X")
  t.unlike(e and e.message or "", "TESTSECRETKEY", "a secret key echoed by the service is masked in errors")
  aws.use_transport(nil)
end)

t.done()
