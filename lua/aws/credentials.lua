-- aws/credentials.lua — the credential provider chain, in the order the AWS CLI tries it
-- (REFERENCE.md, Credentials):
--   1 environment            AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
--   2 assume-role profile    role_arn + source_profile | credential_source -> STS AssumeRole
--   3 web identity           AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (or the profile's)
--                            -> STS AssumeRoleWithWebIdentity, unsigned
--   4 shared credentials     ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE)
--   5 credential_process     the profile's command; its stdout is JSON (Version 1)
--   6 config file            keys in ~/.aws/config (AWS_CONFIG_FILE)
--   7 container              AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI
--   8 EC2 instance metadata  IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT, ..._DISABLED)
-- A provider answers credentials, nil and why it does not apply, or raises when it applies but
-- fails (a broken profile, an STS error). Credentials are tables
--   {access_key_id, secret_access_key, session_token, expiration (epoch s or nil), source}.
-- Caching and refresh before expiry live in aws/init.lua (get_credentials).
local config = require "aws.config"
local json = require "json"
local redact = require "aws.redact"

local M = {}

local env = config.getenv
local aws -- the client, for STS calls (set by init)
local http_get -- function(method, url, headers, timeout) -> resp | nil, err (set by init)

function M.init(client, http_fn)
  aws, http_get = client, http_fn
end

-- "2026-11-24T16:00:00Z" (fractions and offsets allowed) -> epoch seconds, or nil.
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

function M.parse_time(s)
  if type(s) == "number" then return s end
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d+)%-(%d+)%-(%d+)[T ](%d+):(%d+):(%d+)(.*)$")
  if not y then return nil end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
      + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
  rest = rest:gsub("^%.%d+", "")
  local sign, oh, om = rest:match("^([%+%-])(%d%d):?(%d%d)$")
  if sign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    t = sign == "+" and t - off or t + off
  end
  return t
end

local function make(ak, sk, token, expiration, source)
  redact.remember(sk)
  redact.remember(token)
  return {
    access_key_id = ak, secret_access_key = sk, session_token = token ~= "" and token or nil,
    expiration = expiration, source = source,
  }
end

local function fail(code, msg)
  error(require("flow").error("aws." .. code, msg, { retryable = false }), 0)
end

---- 1. environment ---------------------------------------------------------------------------

function M.from_env()
  local ak, sk = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")
  if not ak or ak == "" or not sk or sk == "" then
    return nil, "environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set"
  end
  local exp = env("AWS_CREDENTIAL_EXPIRATION")
  return make(ak, sk, env("AWS_SESSION_TOKEN"), exp and M.parse_time(exp), "environment")
end

---- 4 and 6. static keys in the files --------------------------------------------------------

local function static_keys(sec, source)
  if sec and sec.aws_access_key_id and sec.aws_secret_access_key then
    return make(sec.aws_access_key_id, sec.aws_secret_access_key, sec.aws_session_token, nil, source)
  end
end

function M.from_credentials_file(profile)
  local c = static_keys(config.credentials_section(profile),
    "shared credentials file (profile " .. profile .. ")")
  if c then return c end
  return nil, ("shared credentials file %s: no keys for profile %s"):format(config.credentials_file(), profile)
end

function M.from_config_file(profile)
  local c = static_keys(config.config_section(profile), "config file (profile " .. profile .. ")")
  if c then return c end
  return nil, ("config file %s: no keys for profile %s"):format(config.config_file(), profile)
end

---- 5. credential_process --------------------------------------------------------------------

-- Runs the command with flow.exec (by /bin/sh, as the CLI runs it): other tasks go on while it
-- runs; it gets a minute to answer.
function M.from_process(profile)
  local cmd = config.profile(profile).credential_process
  if not cmd or cmd == "" then
    return nil, "credential_process: not set in profile " .. profile
  end
  local okx, r = pcall(require("flow").exec, cmd, { timeout = 60 })
  if not okx then
    fail("CredentialProcessError", ("credential_process of profile %s could not run: %s"):format(
      profile, redact.text(tostring(r))))
  end
  local out = r.stdout
  if r.status ~= 0 then
    fail("CredentialProcessError", ("credential_process of profile %s failed (%s)"):format(profile,
      r.status and ("exit " .. r.status) or ("signal " .. tostring(r.signal))))
  end
  -- what a credential helper prints is secret as a whole: it is described, never quoted
  local okj, v = pcall(json.decode, out)
  if not okj or type(v) ~= "table" then
    fail("CredentialProcessError", ("credential_process of profile %s printed %d bytes that are "
      .. "not a JSON object (expected {\"Version\": 1, \"AccessKeyId\": ..., ...}; the output "
      .. "is not shown: it may hold secrets)"):format(profile, #out))
  end
  if v.Version ~= 1 then
    fail("CredentialProcessError", "credential_process output: Version must be 1, got " .. tostring(v.Version))
  end
  if type(v.AccessKeyId) ~= "string" or type(v.SecretAccessKey) ~= "string" then
    fail("CredentialProcessError", "credential_process output lacks AccessKeyId or SecretAccessKey")
  end
  local exp = v.Expiration and M.parse_time(v.Expiration)
  if v.Expiration and not exp then
    fail("CredentialProcessError", "credential_process output: bad Expiration " .. tostring(v.Expiration))
  end
  return make(v.AccessKeyId, v.SecretAccessKey, v.SessionToken, exp, "credential_process (profile " .. profile .. ")")
end

---- 7. container -------------------------------------------------------------------------------

local function read_all(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function from_json_endpoint(resp, what)
  local ok, v = pcall(json.decode, resp.body)
  if not ok or type(v) ~= "table" or not v.AccessKeyId or not v.SecretAccessKey then
    -- the answer may hold a secret in a shape we cannot parse: described, never quoted
    fail("CredentialsError", ("%s: the answer (%d bytes) holds no AccessKeyId and SecretAccessKey"
      .. " (not shown: it may hold secrets)"):format(what, #(resp.body or "")))
  end
  local exp = v.Expiration and M.parse_time(v.Expiration)
  return make(v.AccessKeyId, v.SecretAccessKey, v.Token or v.SessionToken, exp, what)
end

function M.from_container()
  local rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
  local full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
  local url
  if rel and rel ~= "" then
    url = "http://169.254.170.2" .. rel
  elseif full and full ~= "" then
    url = full
  else
    return nil, "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/_FULL_URI not set"
  end
  local headers = {}
  local tf = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
  local token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN")
  if tf and tf ~= "" then
    local t, err = read_all(tf)
    if not t then fail("CredentialsError", "container: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: " .. err) end
    token = t:gsub("%s+$", "")
  end
  if token and token ~= "" then headers.Authorization = token end
  local resp, err
  for _ = 1, 3 do
    resp, err = http_get("GET", url, headers, 2)
    if resp then break end
  end
  if not resp then
    fail("CredentialsError", "container credentials endpoint " .. redact.url(url) .. ": " .. tostring(err))
  end
  if resp.status ~= 200 then
    fail("CredentialsError", ("container credentials endpoint %s: HTTP %d"):format(redact.url(url), resp.status))
  end
  return from_json_endpoint(resp, "container (" .. redact.url(url) .. ")")
end

---- 8. EC2 instance metadata (IMDSv2) ----------------------------------------------------------

function M.from_imds(profile)
  if config.truthy(env("AWS_EC2_METADATA_DISABLED")) then
    return nil, "EC2 instance metadata: disabled (AWS_EC2_METADATA_DISABLED)"
  end
  local base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
      or config.profile(profile).ec2_metadata_service_endpoint or "http://169.254.169.254"
  base = base:gsub("/+$", "")
  local timeout = tonumber(env("AWS_METADATA_SERVICE_TIMEOUT") or "") or 1
  local attempts = tonumber(env("AWS_METADATA_SERVICE_NUM_ATTEMPTS") or "") or 1
  local function req(method, path, headers)
    local resp, err
    for _ = 1, attempts do
      resp, err = http_get(method, base .. path, headers, timeout)
      if resp and resp.status < 500 then break end
    end
    return resp, err
  end
  local tresp, terr = req("PUT", "/latest/api/token", { ["x-aws-ec2-metadata-token-ttl-seconds"] = "21600" })
  if not tresp then
    return nil, ("EC2 instance metadata %s: %s"):format(base, terr and terr.code or "unreachable")
  end
  local headers = {}
  if tresp.status == 200 then
    headers["x-aws-ec2-metadata-token"] = tresp.body
  elseif tresp.status ~= 403 and tresp.status ~= 404 and tresp.status ~= 405 then
    return nil, ("EC2 instance metadata %s: token request answered HTTP %d"):format(base, tresp.status)
  end -- else: IMDSv1 only
  local rresp = req("GET", "/latest/meta-data/iam/security-credentials/", headers)
  if not rresp or rresp.status ~= 200 or rresp.body == "" then
    return nil, ("EC2 instance metadata %s: no instance role"):format(base)
  end
  local role = rresp.body:match("^%s*([^\r\n]+)")
  local cresp, cerr = req("GET", "/latest/meta-data/iam/security-credentials/" .. role, headers)
  if not cresp or cresp.status ~= 200 then
    fail("CredentialsError", ("EC2 instance metadata %s: role %s: %s"):format(base, role,
      cresp and ("HTTP " .. cresp.status) or tostring(cerr)))
  end
  return from_json_endpoint(cresp, "EC2 instance metadata (role " .. role .. ")")
end

---- 2. assume role, 3. web identity ------------------------------------------------------------

local function sts_creds(result, source)
  local c = result and result.Credentials
  if not c or not c.AccessKeyId then
    fail("CredentialsError", source .. ": STS answer without Credentials")
  end
  return make(c.AccessKeyId, c.SecretAccessKey, c.SessionToken, M.parse_time(c.Expiration), source)
end

local function session_name(explicit)
  if explicit and explicit ~= "" then return explicit end
  return "flowrun-" .. os.time()
end

function M.from_web_identity(profile)
  local p = config.profile(profile)
  local role = env("AWS_ROLE_ARN")
  local file = env("AWS_WEB_IDENTITY_TOKEN_FILE")
  local name = env("AWS_ROLE_SESSION_NAME")
  if not (role and file) then
    role, file, name = p.role_arn, p.web_identity_token_file, p.role_session_name
  end
  if not role or not file or role == "" or file == "" then
    return nil, "web identity: AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE not set"
  end
  local token, err = read_all(file)
  if not token then
    fail("CredentialsError", "web identity: cannot read token file: " .. tostring(err))
  end
  redact.remember(token:gsub("%s+$", ""))
  local r = aws.call("sts", "AssumeRoleWithWebIdentity", {
    RoleArn = role, RoleSessionName = session_name(name), WebIdentityToken = token:gsub("%s+$", ""),
  }, { unsigned = true, region = p.region })
  return sts_creds(r, "web identity (" .. role .. ")")
end

local function source_for(profile, seen)
  local p = config.profile(profile)
  if p.source_profile then
    local src = p.source_profile
    if seen[src] and src ~= profile then
      fail("InvalidConfig", "profile " .. profile .. ": source_profile loop through " .. src)
    end
    if not config.profile_exists(src) then
      fail("InvalidConfig", ("profile %s: source_profile %s does not exist"):format(profile, src))
    end
    seen[src] = true
    local sp = config.profile(src)
    if sp.role_arn and src ~= profile then
      return M.assume_role(src, seen)
    end
    local c = static_keys(config.credentials_section(src), "profile " .. src)
        or static_keys(config.config_section(src), "profile " .. src)
    if not c and sp.credential_process then c = M.from_process(src) end
    if not c then
      fail("InvalidConfig", ("profile %s: source_profile %s has no credentials"):format(profile, src))
    end
    return c
  end
  local cs = p.credential_source
  if cs == "Environment" then
    local c, why = M.from_env()
    if not c then fail("InvalidConfig", "profile " .. profile .. ": credential_source Environment: " .. why) end
    return c
  elseif cs == "Ec2InstanceMetadata" then
    local c, why = M.from_imds(profile)
    if not c then fail("InvalidConfig", "profile " .. profile .. ": credential_source: " .. why) end
    return c
  elseif cs == "EcsContainer" then
    local c, why = M.from_container()
    if not c then fail("InvalidConfig", "profile " .. profile .. ": credential_source: " .. why) end
    return c
  end
  fail("InvalidConfig", ("profile %s: credential_source %s is not one of Environment, Ec2InstanceMetadata, EcsContainer"):format(profile, tostring(cs)))
end

function M.assume_role(profile, seen)
  local p = config.profile(profile)
  if not p.role_arn or p.web_identity_token_file then
    return nil, "assume-role profile: no role_arn with source_profile/credential_source in " .. profile
  end
  if not p.source_profile and not p.credential_source then
    fail("InvalidConfig", "profile " .. profile .. ": role_arn needs source_profile or credential_source")
  end
  if p.mfa_serial then
    fail("InvalidConfig", "profile " .. profile .. ": mfa_serial (MFA prompts) is not supported")
  end
  seen = seen or { [profile] = true }
  local src = source_for(profile, seen)
  local params = { RoleArn = p.role_arn, RoleSessionName = session_name(p.role_session_name) }
  if p.external_id then params.ExternalId = p.external_id end
  if p.duration_seconds then params.DurationSeconds = tonumber(p.duration_seconds) end
  local r = aws.call("sts", "AssumeRole", params, {
    credentials = src, region = p.region,
  })
  return sts_creds(r, "assume role " .. p.role_arn .. " (profile " .. profile .. ")")
end

---- the chain --------------------------------------------------------------------------------

-- resolve{profile=, explicit_profile=, sim=} -> credentials, or nil and the list of what was
-- tried (each with why it did not apply).
function M.resolve(ctx)
  local profile = ctx.profile
  local tried = {}
  local chain = {
    function() if ctx.explicit_profile then return nil, "environment: skipped (profile given)" end return M.from_env() end,
    function() return M.assume_role(profile) end,
    function() return M.from_web_identity(profile) end,
    function() return M.from_credentials_file(profile) end,
    function() return M.from_process(profile) end,
    function() return M.from_config_file(profile) end,
    function() if ctx.sim then return nil, "container: skipped in the simulator" end return M.from_container() end,
    function() if ctx.sim then return nil, "EC2 instance metadata: skipped in the simulator" end return M.from_imds(profile) end,
  }
  -- a profile the user named must exist (as the AWS CLI says: "The config profile (ghost) could
  -- not be found"), whether given to the call or by AWS_PROFILE
  if (ctx.explicit_profile or config.profile_named()) and not config.profile_exists(profile) then
    fail("ProfileNotFound", ("profile %s not found in %s or %s"):format(profile,
      config.config_file(), config.credentials_file()))
  end
  for _, provider in ipairs(chain) do
    local c, why = provider()
    if c then return c end
    tried[#tried + 1] = why
  end
  return nil, tried
end

return M
