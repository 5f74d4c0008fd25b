-- The credential chain against tests/fakeaws.py (FLOWRUN_TEST_FAKEAWS): each source in the AWS
-- CLI's order, profiles, assume-role and web identity through STS, the container and IMDSv2
-- endpoints, caching and refresh before expiry, and the errors when nothing is found. The
-- environment is hermetic (aws.reset{env = ...}); fakeaws's GetCallerIdentity names the key
-- that signed the call, so each test sees which credentials were used.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local http = require "http"
local aws = require "aws"

local fake = os.getenv("FLOWRUN_TEST_FAKEAWS")
t.ok(fake ~= nil and fake ~= "", "FLOWRUN_TEST_FAKEAWS is set (tests/servers/fakeaws.sh)")
if not fake then t.done() os.exit(1) end

local function control(path, body)
  local r = assert(http.request { method = "POST", url = fake .. path, body = json.encode(body or {}) })
  assert(r.status == 200)
end
local function state()
  return json.decode(assert(http.request { url = fake .. "/_fake/requests" }).body)
end

local tmpfiles = {}
local function write(text)
  local p = os.tmpname()
  local f = assert(io.open(p, "w"))
  f:write(text)
  f:close()
  tmpfiles[#tmpfiles + 1] = p
  return p
end

local function env(extra)
  control("/_fake/reset")
  local e = { AWS_ENDPOINT_URL = fake, AWS_REGION = "us-east-1", HOME = "/nonexistent",
    AWS_EC2_METADATA_DISABLED = "true", AWS_CONFIG_FILE = "/nonexistent/config",
    AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/credentials" }
  for k, v in pairs(extra or {}) do e[k] = v end
  aws.reset { env = e }
  aws.configure { random = function() return 0 end }
end

local function who() return aws.sts.get_caller_identity().UserId end

local creds_file = write([[
[default]
aws_access_key_id = AKIDTEST
aws_secret_access_key = TESTSECRETKEY/abc+def

[src]
aws_access_key_id = AKIDSOURCE
aws_secret_access_key = SOURCESECRET/xyz

[both]
aws_access_key_id = AKIDTEST
aws_secret_access_key = TESTSECRETKEY/abc+def
]])
local config_file = write(([[
[default]
region = eu-central-1

[profile cfg]
aws_access_key_id = AKIDSOURCE
aws_secret_access_key = SOURCESECRET/xyz

[profile both]
aws_access_key_id = AKIDSOURCE
aws_secret_access_key = SOURCESECRET/xyz

[profile role]
role_arn = arn:aws:iam::123456789012:role/deploy
source_profile = src
role_session_name = flowrun-test
external_id = ext-1

[profile role-env]
role_arn = arn:aws:iam::123456789012:role/deploy
credential_source = Environment

[profile role-nosource]
role_arn = arn:aws:iam::123456789012:role/deploy

[profile loop-a]
role_arn = arn:aws:iam::123456789012:role/a
source_profile = loop-b

[profile loop-b]
role_arn = arn:aws:iam::123456789012:role/b
source_profile = loop-a

[profile proc]
credential_process = printf '{"Version": 1, "AccessKeyId": "AKIDPROCESS", "SecretAccessKey": "PROCESSSECRET/ddd"}'

[profile proc-bad]
credential_process = printf 'not json'

[profile proc-pydict]
credential_process = printf "{'Version': 1, 'AccessKeyId': 'AKIDPY', 'SecretAccessKey': 'PYSECRET0123456789'}"

[profile proc-shell]
credential_process = printf 'export AWS_ACCESS_KEY_ID=AKIDSH\nexport AWS_SECRET_ACCESS_KEY=SHSECRET0123456789\n'

[profile proc-v2]
credential_process = printf '{"Version": 2, "AccessKeyId": "A", "SecretAccessKey": "B"}'

[profile proc-expired]
credential_process = printf '{"Version": 1, "AccessKeyId": "AKIDPROCESS", "SecretAccessKey": "PROCESSSECRET/ddd", "SessionToken": "x", "Expiration": "2001-01-01T00:00:00Z"}'

[profile proc-fails]
credential_process = sh -c 'exit 3'

[profile proc-slow]
credential_process = sh -c 'sleep 0.4; printf "{\"Version\": 1, \"AccessKeyId\": \"AKIDSLOW\", \"SecretAccessKey\": \"SLOWSECRET\"}"'
]]))
local files = { AWS_CONFIG_FILE = config_file, AWS_SHARED_CREDENTIALS_FILE = creds_file }
local function with_files(extra)
  local e = {}
  for k, v in pairs(files) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

t.test("1 environment, and its precedence", function()
  env { AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "TESTSECRETKEY/abc+def" }
  t.eq(who(), "AKIDTEST", "environment keys")
  t.eq(state().requests[1].sig, "ok", "signed with them")
  env(with_files { AWS_ACCESS_KEY_ID = "AKIDSOURCE", AWS_SECRET_ACCESS_KEY = "SOURCESECRET/xyz" })
  t.eq(who(), "AKIDSOURCE", "environment wins over the credentials file")
  env { AWS_ACCESS_KEY_ID = "ASIAASSUMED", AWS_SECRET_ACCESS_KEY = "ASSUMEDSECRET/123",
    AWS_SESSION_TOKEN = "env-token" }
  who()
  t.eq(state().requests[1].headers["x-amz-security-token"], "env-token", "AWS_SESSION_TOKEN sent")
  env { AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "x",
    AWS_CREDENTIAL_EXPIRATION = "2001-01-01T00:00:00Z" }
  t.raises(who, "aws.ExpiredCredentials", "expired environment credentials")
end)

t.test("4 shared credentials file, 6 config file, profiles", function()
  env(files)
  t.eq(who(), "AKIDTEST", "[default] of the credentials file")
  env(with_files { AWS_PROFILE = "src" })
  t.eq(who(), "AKIDSOURCE", "AWS_PROFILE selects a section")
  env(with_files { AWS_PROFILE = "cfg" })
  t.eq(who(), "AKIDSOURCE", "keys in the config file's [profile cfg]")
  env(with_files { AWS_PROFILE = "both" })
  t.eq(who(), "AKIDTEST", "the credentials file wins over the config file")
  env(files)
  aws.configure { profile = "src" }
  t.eq(who(), "AKIDSOURCE", "aws.configure{profile=}")
  env(with_files { AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "TESTSECRETKEY/abc+def" })
  aws.configure { profile = "src" }
  t.eq(who(), "AKIDSOURCE", "an explicit profile skips the environment keys (as --profile)")
  env(files)
  aws.configure { profile = "nope" }
  t.raises(who, "aws.ProfileNotFound", "a missing explicit profile")
  env { AWS_REGION = false, AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "x",
    AWS_CONFIG_FILE = config_file }
  t.eq(aws.sts.get_caller_identity().UserId, "AKIDTEST", "region from the profile ([default] region)")
  t.like(state().requests[1].headers.authorization, "/eu%-central%-1/sts/", "signed for eu-central-1")
end)

t.test("configuration that cannot be used is reported, with file and line", function()
  local bad = write("[default]\nregion = eu-west-1\n\n[default\naws_access_key_id = AKIDX\n")
  env { AWS_REGION = false, AWS_CONFIG_FILE = bad }
  local e = t.raises(who, "aws.ConfigError", "an unclosed section header")
  t.like(e and e.message or "", bad:gsub("%p", "%%%0") .. ":4: a section header without its closing %]",
    "names the file and line")
  local early = write("region = x\n[default]\n")
  env { AWS_CONFIG_FILE = early }
  e = t.raises(who, "aws.ConfigError", "a setting before any section")
  t.like(e and e.message or "", ":1: a setting before any", "line 1")
  env { AWS_CONFIG_FILE = "/tmp" }
  e = t.raises(who, "aws.ConfigError", "a directory as the config file")
  t.like(e and e.message or "", "is a directory", "says so")
  env { AWS_PROFILE = "ghost", AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "x" }
  e = t.raises(who, "aws.ProfileNotFound", "AWS_PROFILE naming a profile that does not exist")
  t.like(e and e.message or "", "profile ghost not found", "names it")
  env { AWS_PROFILE = "default", AWS_ACCESS_KEY_ID = "AKIDTEST", AWS_SECRET_ACCESS_KEY = "x" }
  t.eq(who(), "AKIDTEST", "AWS_PROFILE=default without files is fine")
end)

t.test("5 credential_process", function()
  env(with_files { AWS_PROFILE = "proc" })
  t.eq(who(), "AKIDPROCESS", "credential_process output")
  t.eq(state().requests[1].sig, "ok", "signed with it")
  env(with_files { AWS_PROFILE = "proc-bad" })
  t.raises(who, "aws.CredentialProcessError", "output that is not JSON")
  -- what a helper prints is never quoted, whatever shape the secret takes in it
  for _, prof in ipairs { "proc-pydict", "proc-shell" } do
    env(with_files { AWS_PROFILE = prof })
    local perr = t.raises(who, "aws.CredentialProcessError", prof .. ": not JSON")
    local text = tostring(perr and perr.message)
    t.ok(not text:find("SECRET0123456789", 1, true), prof .. ": the secret is not in the error: " .. text)
    t.ok(not text:find("AKID", 1, true), prof .. ": nor any of the output")
    t.like(text, "not shown", prof .. ": it says why")
  end
  env(with_files { AWS_PROFILE = "proc-v2" })
  t.raises(who, "aws.CredentialProcessError", "Version 2")
  env(with_files { AWS_PROFILE = "proc-fails" })
  local e = t.raises(who, "aws.CredentialProcessError", "a failing command")
  t.like(e and e.message, "exit 3", "the exit status is named")
  env(with_files { AWS_PROFILE = "proc-expired" })
  t.raises(who, "aws.ExpiredCredentials", "expired credential_process output")
  -- the command runs on the loop: other tasks go on while it takes its time
  env(with_files { AWS_PROFILE = "proc-slow" })
  local ticks = 0
  local ticker = flow.spawn(function() for _ = 1, 10 do flow.sleep(0.02); ticks = ticks + 1 end end)
  t.eq(who(), "AKIDSLOW", "a slow credential_process")
  t.eq(ticks, 10, "other tasks ran while it did (counted as it returns)")
  ticker:wait()
end)

t.test("2 assume-role profiles", function()
  env(with_files { AWS_PROFILE = "role" })
  t.eq(who(), "ASIAASSUMED", "role_arn + source_profile: STS AssumeRole")
  local rs = state().requests
  t.eq(#rs, 2, "AssumeRole, then the call")
  t.like(rs[1].body, "Action=AssumeRole&", "first request: AssumeRole")
  t.like(rs[1].body, "RoleArn=arn%%3Aaws%%3Aiam%%3A%%3A123456789012%%3Arole%%2Fdeploy", "with the role")
  t.like(rs[1].body, "RoleSessionName=flowrun%-test", "role_session_name")
  t.like(rs[1].body, "ExternalId=ext%-1", "external_id")
  t.like(rs[1].headers.authorization, "Credential=AKIDSOURCE/", "signed by the source profile")
  t.eq(rs[1].sig, "ok", "AssumeRole signature ok")
  t.eq(rs[2].headers["x-amz-security-token"], "TOKEN-ASIAASSUMED", "the role's session token")
  t.eq(rs[2].sig, "ok", "call signed with the role's keys")
  who()
  t.eq(#state().requests, 3, "the role's credentials are cached")
  env(with_files { AWS_PROFILE = "role-env", AWS_ACCESS_KEY_ID = "AKIDSOURCE",
    AWS_SECRET_ACCESS_KEY = "SOURCESECRET/xyz" })
  -- the environment provider comes first in the chain; an explicit profile skips it
  aws.configure { profile = "role-env" }
  t.eq(who(), "ASIAASSUMED", "credential_source = Environment")
  t.like(state().requests[1].headers.authorization, "Credential=AKIDSOURCE/", "source keys from the environment")
  env(with_files { AWS_PROFILE = "role-nosource" })
  t.raises(who, "aws.InvalidConfig", "role_arn without a source")
  env(with_files { AWS_PROFILE = "loop-a" })
  t.raises(who, "aws.InvalidConfig", "a source_profile loop")
end)

t.test("3 web identity", function()
  local tok = write("eyJhbGciOi.WEBTOKEN.sig\n")
  env { AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/web", AWS_WEB_IDENTITY_TOKEN_FILE = tok,
    AWS_ROLE_SESSION_NAME = "pod-1" }
  t.eq(who(), "ASIAWEBID", "AssumeRoleWithWebIdentity")
  local rs = state().requests
  t.like(rs[1].body, "Action=AssumeRoleWithWebIdentity", "first request")
  t.eq(rs[1].sig, "unsigned", "sent unsigned")
  t.like(rs[1].body, "WebIdentityToken=eyJhbGciOi%.WEBTOKEN%.sig$", "token from the file, trimmed")
  t.like(rs[1].body, "RoleSessionName=pod%-1", "AWS_ROLE_SESSION_NAME")
  env { AWS_ROLE_ARN = "arn:aws:iam::123456789012:role/web", AWS_WEB_IDENTITY_TOKEN_FILE = "/nonexistent/tok" }
  t.raises(who, "aws.CredentialsError", "unreadable token file")
end)

t.test("7 container endpoint", function()
  env { AWS_CONTAINER_CREDENTIALS_FULL_URI = fake .. "/container/creds",
    AWS_CONTAINER_AUTHORIZATION_TOKEN = "ctoken-1" }
  t.eq(who(), "ASIACONTAINER", "full URI + authorization token")
  env { AWS_CONTAINER_CREDENTIALS_FULL_URI = fake .. "/container/creds",
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = write("ctoken-1\n") }
  t.eq(who(), "ASIACONTAINER", "authorization token from a file")
  env { AWS_CONTAINER_CREDENTIALS_FULL_URI = fake .. "/container/creds",
    AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong" }
  local e = t.raises(who, "aws.CredentialsError", "a refused token")
  t.unlike(e and e.message or "", "wrong", "the token is not in the message")
end)

t.test("8 EC2 instance metadata (IMDSv2), caching and refresh", function()
  env { AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = fake }
  t.eq(who(), "ASIAIMDS1", "role credentials through the session token")
  t.eq(state().imds_calls, 3, "token, role name, credentials")
  t.eq(who(), "ASIAIMDS1", "cached")
  t.eq(state().imds_calls, 3, "no second fetch while valid")
  env { AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = fake }
  control("/_fake/script", { imds = { expiration_s = 600 } })
  t.eq(who(), "ASIAIMDS1", "credentials that expire in 10 min")
  t.eq(who(), "ASIAIMDS2", "are refreshed before they expire (15 min ahead)")
  t.eq(state().imds_calls, 6, "a second fetch")
  env { AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = fake }
  local hs = {}
  for i = 1, 10 do hs[i] = flow.spawn(who) end
  flow.all(hs)
  t.eq(state().imds_calls, 3, "10 concurrent first calls share one fetch")
  env { AWS_EC2_METADATA_DISABLED = false, AWS_EC2_METADATA_SERVICE_ENDPOINT = "http://127.0.0.1:1" }
  local e = t.raises(who, "aws.NoCredentials", "unreachable metadata service: nothing found")
  t.like(e and e.message, "EC2 instance metadata http://127%.0%.0%.1:1: http%.connect", "says why")
end)

t.test("nothing found", function()
  env {}
  local e = t.raises(who, "aws.NoCredentials", "no source: aws.NoCredentials")
  for _, what in ipairs { "environment", "assume%-role", "web identity", "shared credentials file",
    "credential_process", "config file", "container", "EC2 instance metadata: disabled" } do
    t.like(e and e.message, what, "lists what was tried: " .. what)
  end
  t.eq(#state().requests, 0, "no request was sent")
end)

for _, p in ipairs(tmpfiles) do os.remove(p) end
t.done()
