-- The AWS client against tests/fakeaws.py (FLOWRUN_TEST_FAKEAWS): signatures checked by
-- botocore for every protocol, the standard retry mode (which errors, attempts, backoff bounds,
-- the quota), connection resets, timeouts, truncated and malformed answers, a 10 MB answer.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local http = require "http"
local aws = require "aws"
local retry = require "aws.retry"

local fake = os.getenv("FLOWRUN_TEST_FAKEAWS")
t.ok(fake ~= nil and fake ~= "", "FLOWRUN_TEST_FAKEAWS is set (tests/servers/fakeaws.sh)")
if not fake then t.done() os.exit(1) end

local function control(path, body)
  local r = assert(http.request { method = "POST", url = fake .. path, body = json.encode(body or {}) })
  assert(r.status == 200, "fakeaws control " .. path .. ": " .. r.status)
end

local function records()
  local r = assert(http.request { url = fake .. "/_fake/requests" })
  return json.decode(r.body).requests
end

local function script(responses) control("/_fake/script", { responses = responses }) end

local SECRET = "TESTSECRETKEY/abc+def"
local function fresh(extra_env, settings)
  control("/_fake/reset")
  local env = { AWS_ENDPOINT_URL = fake, AWS_ACCESS_KEY_ID = "AKIDTEST",
    AWS_SECRET_ACCESS_KEY = SECRET, AWS_REGION = "eu-west-1", HOME = "/nonexistent" }
  for k, v in pairs(extra_env or {}) do env[k] = v end
  aws.reset { env = env }
  aws.configure(settings or { random = function() return 0 end })
end

local throttle = { status = 400, body = '{"__type":"com.amazon#ThrottlingException","message":"Rate exceeded"}' }
local e500 = { status = 500, body = '{"__type":"InternalFailure","message":"boom"}' }

t.test("signatures: botocore agrees, every protocol", function()
  fresh()
  aws.dms.describe_replication_tasks { Filters = { { Name = "replication-task-id", Values = { "a b" } } } }
  aws.sts.get_caller_identity()
  local tok = aws.mwaa.create_cli_token { Name = "my env" }
  aws.s3.put_object { Bucket = "bkt-1", Key = "dir/a b+c=d&e~(f)*'!.txt", Body = "hello" }
  aws.s3.list_objects_v2 { Bucket = "bkt-1", Prefix = "dir/a b", MaxKeys = 5 }
  aws.s3.get_object { Bucket = "bkt-1", Key = "dir/ü.txt" }
  aws.call("dms", "DescribeReplicationTasks", {}, { credentials = {
    access_key_id = "ASIAASSUMED", secret_access_key = "ASSUMEDSECRET/123", session_token = "TOK/EN+=" } })
  local rs = records()
  t.eq(#rs, 7, "seven requests recorded")
  for i, r in ipairs(rs) do
    t.eq(r.sig, "ok", ("request %d (%s %s) signature verified by botocore"):format(i, r.method, r.path))
  end
  t.eq(rs[1].headers["x-amz-target"], "AmazonDMSv20160101.DescribeReplicationTasks", "json: X-Amz-Target")
  t.eq(rs[1].headers["content-type"], "application/x-amz-json-1.1", "json: content type")
  t.like(rs[2].body, "^Action=GetCallerIdentity&Version=2011%-06%-15", "query: form body")
  t.eq(rs[3].path, "/clitoken/my%20env", "rest-json: URI member encoded")
  t.eq(rs[3].method, "POST", "rest-json: the model's method")
  t.eq(tok.CliToken, "cli-token-SECRET", "rest-json: answer parsed")
  t.eq(tok.WebServerHostname, "web.example", "rest-json: every member")
  t.eq(rs[4].path, "/bkt-1/dir/a%20b%2Bc%3Dd%26e~%28f%29%2A%27%21.txt", "rest-xml: greedy key keeps '/', encodes the rest")
  t.eq(rs[4].headers["x-amz-content-sha256"], require("aws.sigv4").sha256_hex("hello"), "S3: payload hash header")
  t.eq(rs[5].query, "list-type=2&max-keys=5&prefix=dir%2Fa%20b", "rest-xml: query members")
  t.eq(rs[7].headers["x-amz-security-token"], "TOK/EN+=", "session token sent (and signed)")
  t.like(rs[7].headers.authorization, "x%-amz%-security%-token", "token among the signed headers")
end)

t.test("S3 virtual-hosted and path style", function()
  fresh()
  local localhost = fake:gsub("127%.0%.0%.1", "localhost")
  aws.s3.put_object({ Bucket = "bkt-2", Key = "k/v.txt", Body = "x" },
    { endpoint_url = localhost, s3_addressing_style = "virtual" })
  aws.s3.put_object({ Bucket = "bkt-2", Key = "k/v.txt", Body = "x" }, { endpoint_url = localhost })
  local rs = records()
  t.like(rs[1].headers.host, "^bkt%-2%.localhost:%d+$", "virtual: bucket in the Host")
  t.eq(rs[1].path, "/k/v.txt", "virtual: path is the key")
  t.eq(rs[1].sig, "ok", "virtual: signature verified")
  t.eq(rs[2].path, "/bkt-2/k/v.txt", "custom endpoint defaults to path style")
  t.eq(rs[2].sig, "ok", "path: signature verified")
end)

t.test("retries: 5xx and throttling are retried, validation is not", function()
  fresh()
  script { e500, e500 }
  local r = aws.dms.describe_replication_tasks {}
  t.eq(r.Target, "AmazonDMSv20160101.DescribeReplicationTasks", "success after two 500s")
  t.eq(#records(), 3, "three attempts")

  fresh()
  script { e500, e500, e500, e500 }
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InternalFailure",
    "three 500s: the error is raised")
  t.eq(e and e.attempts, 3, "default: 3 attempts in all")
  t.eq(e and e.retryable, true, "a 500 stays retryable for the caller's policy")
  t.eq(#records(), 3, "no fourth request")

  for _, code in ipairs { "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "RequestTimeoutException", "LimitExceededException" } do
    fresh()
    script { { status = 400, body = json.encode { __type = code, message = "x" } } }
    aws.dms.describe_replication_tasks {}
    t.eq(#records(), 2, code .. " is retried")
  end
  fresh()
  script { { status = 503, headers = { ["Content-Type"] = "application/xml" },
    body = "<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message><RequestId>r1</RequestId></Error>" } }
  aws.s3.put_object { Bucket = "bkt-3", Key = "k", Body = "x" }
  t.eq(#records(), 2, "S3 SlowDown (XML error) is retried")
  fresh()
  script { { status = 400, headers = { ["Content-Type"] = "text/xml" },
    body = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>q1</RequestId></ErrorResponse>" } }
  t.like(aws.sts.get_caller_identity().Arn, "AKIDTEST", "query Throttling retried, then success")
  t.eq(#records(), 2, "two STS requests")

  for _, c in ipairs { { 400, "ValidationException" }, { 403, "AccessDeniedException" }, { 404, "ResourceNotFoundException" } } do
    fresh()
    script { { status = c[1], body = json.encode { __type = c[2], Message = "no" } } }
    local err = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws." .. c[2],
      c[2] .. " raised")
    t.eq(#records(), 1, c[2] .. " is not retried")
    t.eq(err and err.retryable, false, c[2] .. " not retryable")
    t.eq(err and err.message, "no (aws.dms.describe_replication_tasks, HTTP " .. c[1] .. ", request id fake-req-1)",
      "message (spelled Message) and request id")
  end
end)

t.test("max attempts from the call, the environment and the profile", function()
  fresh()
  script { e500, e500, e500, e500, e500, e500 }
  t.raises(function() aws.dms.describe_replication_tasks({}, { max_attempts = 5 }) end, "aws.InternalFailure")
  t.eq(#records(), 5, "opts.max_attempts = 5")
  fresh { AWS_MAX_ATTEMPTS = "2" }
  script { e500, e500, e500 }
  t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InternalFailure")
  t.eq(#records(), 2, "AWS_MAX_ATTEMPTS=2")
  local cfg = os.tmpname()
  local f = io.open(cfg, "w")
  f:write("[profile p1]\nmax_attempts = 4\n")
  f:close()
  fresh { AWS_CONFIG_FILE = cfg, AWS_PROFILE = "p1" }
  script { e500, e500, e500, e500, e500 }
  t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InternalFailure")
  t.eq(#records(), 4, "profile max_attempts = 4")
  os.remove(cfg)
end)

t.test("transport failures: reset, timeout, truncated, refused", function()
  -- (curl itself retries once when a reused connection dies before answering, so a reset can
  -- use up two scripted answers in one attempt: count attempts, not records)
  fresh()
  script { { reset = true } }
  local r0 = aws.dms.describe_replication_tasks {}
  t.eq(r0.Target, "AmazonDMSv20160101.DescribeReplicationTasks", "connection reset: retried, then success")
  t.ok(#records() >= 2, "after a second request")
  fresh()
  script { { reset = true, ["repeat"] = 10 } }
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "http.reset",
    "three resets: http.reset")
  t.eq(e and e.service, "dms", "transport error names the service")
  t.eq(e and e.attempts, 3, "and the attempts")

  fresh()
  script { { delay = 1.0, body = "{}" } }
  local t0 = flow.now()
  aws.dms.describe_replication_tasks({}, { timeout = 0.3 })
  t.ok(flow.now() - t0 < 0.9, "slow answer: timed out at 0.3 s and retried")
  t.eq(#records(), 2, "two requests")
  fresh()
  script { { delay = 1.0, body = "{}", ["repeat"] = 3 } }
  e = t.raises(function() aws.dms.describe_replication_tasks({}, { timeout = 0.2 }) end,
    "http.timeout", "always slow: http.timeout")
  t.eq(e and e.attempts, 3, "after 3 attempts")

  fresh()
  script { { body = '{"ReplicationTasks": [', truncate = true } }
  local r = aws.dms.describe_replication_tasks {}
  t.eq(r.Target, "AmazonDMSv20160101.DescribeReplicationTasks", "truncated body: retried, then success")

  fresh()
  e = t.raises(function()
    aws.dms.describe_replication_tasks({}, { endpoint_url = "http://127.0.0.1:1" })
  end, "http.connect", "connection refused: http.connect")
  t.eq(e and e.attempts, 3, "connection errors are retried")
end)

t.test("malformed answers and a 10 MB answer", function()
  fresh()
  script { { status = 200, body = "<html>not json</html>" } }
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InvalidResponse",
    "200 with HTML: aws.InvalidResponse")
  t.like(e and e.message, "HTTP 200", "message has the status")
  t.like(e and e.message, "<html>not json", "and the first bytes")
  t.eq(#records(), 1, "not retried")
  fresh()
  script { { status = 200, headers = { ["Content-Type"] = "text/xml" }, body = "<GetCallerIdentityResponse><GetCallerIdentityResult>" } }
  e = t.raises(function() aws.sts.get_caller_identity() end, "aws.InvalidResponse", "truncated XML")
  t.like(e and e.message, "XML at line %d+, column %d+", "the XML error position")
  fresh()
  script { { status = 502, headers = { ["Content-Type"] = "text/html" }, body = "<html>Bad Gateway</html>", ["repeat"] = 3 } }
  e = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.HTTP502", "502 HTML: aws.HTTP502")
  t.like(e and e.message, "Bad Gateway", "with the first bytes")
  fresh()
  script { { status = 200, size = 10 * 1024 * 1024, body_prefix = '{"Big": "', body_suffix = '"}' } }
  local r = aws.dms.describe_replication_tasks {}
  t.eq(#r.Big, 10 * 1024 * 1024, "a 10 MB answer is read whole")
end)

t.test("backoff bounds", function()
  t.eq(retry.delay(1, function() return 1 end), 1, "retry 1: at most 1 s")
  t.eq(retry.delay(3, function() return 1 end), 4, "retry 3: at most 4 s")
  t.eq(retry.delay(6, function() return 1 end), 20, "capped at 20 s")
  t.eq(retry.delay(9, function() return 0.5 end), 10, "jitter scales the cap")
  for n = 1, 8 do
    local d = retry.delay(n)
    t.ok(d >= 0 and d <= math.min(2 ^ (n - 1), 20), ("random delay %d within [0, %g]"):format(n, math.min(2 ^ (n - 1), 20)))
  end
  -- measured on the wire: with random() = 1 the gaps are 1 s then 2 s (virtual time)
  flow.core.set_virtual_time(true)
  fresh(nil, { random = function() return 1 end })
  script { e500, e500, e500 }
  t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InternalFailure")
  local rs = records()
  flow.core.set_virtual_time(false)
  t.eq(#rs, 3, "3 attempts")
  -- fakeaws stamps with its own monotonic clock: virtual sleeps are instant there, so check
  -- the client's clock instead
  fresh(nil, { random = function() return 1 end })
  flow.core.set_virtual_time(true)
  script { e500, e500 }
  local t0 = flow.now()
  aws.dms.describe_replication_tasks {}
  local dt = flow.now() - t0
  flow.core.set_virtual_time(false)
  t.ok(dt >= 3 and dt < 3.5, ("two retries slept 1 + 2 s of (virtual) time: %.3f"):format(dt))
end)

t.test("retry quota", function()
  fresh()
  aws.configure { random = function() return 0 end, max_attempts = 3 }
  local function quota() return aws._clients()["dms|eu-west-1|" .. fake:gsub("/$", "")].quota.available end
  aws.dms.describe_replication_tasks {}
  t.eq(quota(), 500, "a first-try success keeps the bucket full (capped at 500)")
  script { { status = 500, body = "{}", ["repeat"] = 1000 } }
  for i = 1, 50 do
    pcall(aws.dms.describe_replication_tasks, {})
  end
  t.eq(quota(), 0, "50 calls x 2 retries x 5 tokens drain 500")
  control("/_fake/reset")
  script { { status = 500, body = "{}", ["repeat"] = 10 } }
  local e = t.raises(function() aws.dms.describe_replication_tasks {} end, "aws.InternalError")
  t.eq(e and e.attempts, 1, "empty bucket: no retry")
  t.eq(e and e.quota_exhausted, true, "the error says why")
  control("/_fake/reset")
  aws.dms.describe_replication_tasks {}
  t.eq(quota(), 1, "a first-try success gives 1 back")
  script { { delay = 1.0, body = "{}" } }
  for _ = 1, 10 do aws.dms.describe_replication_tasks {} end
  t.eq(quota(), 11, "ten more successes")
  script { { delay = 1.0, body = "{}" } }
  aws.dms.describe_replication_tasks({}, { timeout = 0.2 })
  t.eq(quota(), 11, "a timeout retry costs 10, refunded by its success")
  script { { delay = 1.0, body = "{}" }, { delay = 1.0, body = "{}" }, { delay = 1.0, body = "{}" } }
  e = t.raises(function() aws.dms.describe_replication_tasks({}, { timeout = 0.2 }) end, "http.timeout")
  t.eq(quota(), 1, "a timeout retry took 10 of the 11")
  t.eq(e and e.attempts, 2, "then 1 token cannot pay for another timeout retry")
end)

t.done()
