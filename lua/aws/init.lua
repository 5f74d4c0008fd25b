-- aws — the AWS client: signed async calls from Lua, with boto3's names.
--
--   local aws = require "aws"
--   local r = aws.dms.describe_replication_tasks{Filters = {...}}      -- waits; a plain table
--   local r = aws.call("dms", "DescribeReplicationTasks", params, opts)
--   for page in aws.paginate("s3", "ListObjectsV2", {Bucket = "b"}) do ... end
--   local url = aws.presign("s3", "GetObject", {Bucket = "b", Key = "k"}, {expires = 600})
--   aws.configure{region =, profile =, endpoint_url =, max_attempts =, timeout =,
--                 connect_timeout =, ca_file =, s3_addressing_style =, credentials =, random =}
--   aws.services.<name> = {...}   -- one entry adds a service (see aws/services.lua)
--
-- Values: answers are plain tables as the service sends them (JSON timestamps stay epoch
-- numbers, XML ones ISO 8601 strings; blobs stay base64 text, and blob parameters are given
-- base64-encoded, except S3 bodies, which are raw strings). Each answer carries
-- ResponseMetadata = {RequestId, HTTPStatusCode}, as boto3's do.
--
-- Calls wait (they suspend only the calling task) and raise error objects on failure:
-- code "aws.<Code>" (aws.ThrottlingException, aws.NoSuchBucket, aws.NoCredentials ...) or
-- the transfer's own code (http.timeout, http.connect ...), with fields service, operation,
-- status, request_id, retryable, attempts. Misuse (unknown service or operation, params that
-- are not a table) raises a plain error at once, naming near matches.
--
-- opts (per call): region, profile, endpoint_url, max_attempts, timeout, connect_timeout,
-- ca_file, credentials ({access_key_id, secret_access_key, session_token}), unsigned.
--
-- THE TRANSPORT SEAM. Everything up to the socket is the same for every call: parameters are
-- serialized, the endpoint resolved, the request signed (with the credential chain's keys).
-- Then ONE function sends it:
--     transport(req) -> {status =, headers =, body =} | nil, err
--     req = {method, url, headers (table: header names as sent), body (string),
--            service (the key in aws/services.lua, e.g. "dms"), region,
--            timeout, connect_timeout, ca_file}
-- The answer is parsed exactly like a network answer (errors, retries and all). By default the
-- transport is http.request (runtime/http.c). aws.use_transport(fn) installs fn instead (nil
-- restores HTTP); the command line installs require("sim").handle for --sim / FLOWRUN_SIM=1.
-- With any transport other than HTTP, a chain that finds no credentials falls back to
-- dummy ones ("AKIDSIM"/"sim"), the region to us-east-1, and the chain skips the providers
-- that would reach the network (container, EC2 metadata).
--
-- Debug: --debug aws (FLOWRUN_DEBUG=aws) prints each request and answer, redacted.
local flow = require "flow"
local json = require "json"
local sigv4 = require "aws.sigv4"
local config = require "aws.config"
local credentials = require "aws.credentials"
local protocols = require "aws.protocols"
local retry = require "aws.retry"
local redact = require "aws.redact"
local services = require "aws.services"

local M = {}
local API = {} -- the functions of the module (kept apart from the service tables)

local settings = {}
local transport_override
local request_hook -- aws.set_request_hook
local call_context -- defined below
local label_of     -- defined below
local tell         -- defined below (aws.observe)
local ctx_cache = {}  -- service -> resolved call context (see call_context)
local clients = {}                      -- per service|region|endpoint: retry quota
local cred_cache, cred_refresh = {}, {} -- per profile (or explicit key)
local signers = setmetatable({}, { __mode = "k" })

local log_mod = require "log"
local function debug_on() return log_mod.debug_enabled("aws") end

local function dlog(msg) log_mod.debug("aws", redact.text(msg)) end

---- names ----------------------------------------------------------------------------------

-- boto3's xform_name: DescribeReplicationTasks -> describe_replication_tasks,
-- ListObjectsV2 -> list_objects_v2.
local snake_cache = {}
local function snake(name)
  local v = snake_cache[name]
  if not v then
    v = name:gsub("(.)(%u%l+)", "%1_%2"):gsub("([%l%d])(%u)", "%1_%2"):lower()
    snake_cache[name] = v
  end
  return v
end
API.snake_name = snake

local function distance(a, b)
  local la, lb = #a, #b
  if math.abs(la - lb) > 3 then return 99 end
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    for j = 1, lb do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[lb]
end

local function suggest(word, candidates)
  word = tostring(word):lower()
  local scored = {}
  for _, c in ipairs(candidates) do
    local lc = c:lower()
    local d = distance(word, lc)
    -- a name containing the word (or contained in it) is a candidate too, ranked after the
    -- names one edit away
    if lc:find(word, 1, true) or (word:find(lc, 1, true) and #lc >= 3) then d = math.min(d, 1.5) end
    if d <= math.max(2, #word // 4) then scored[#scored + 1] = { c, d } end
  end
  table.sort(scored, function(x, y) return x[2] < y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  local out = {}
  for i = 1, math.min(5, #scored) do out[i] = scored[i][1] end
  return out
end

local function service_names()
  local out = {}
  for k in pairs(services) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function check_service(name, level)
  if type(name) ~= "string" then
    error(("aws: service name must be a string, got %s"):format(type(name)), level + 1)
  end
  local svc = services[name] or services[name:lower()]
  if not svc then
    local near = suggest(name, service_names())
    error(("aws: unknown service '%s'%s (known: %s)"):format(name,
      #near > 0 and (" — did you mean " .. table.concat(near, ", ") .. "?") or "",
      table.concat(service_names(), ", ")), level + 1)
  end
  return svc, services[name] and name or name:lower()
end

local snake_maps = {}
local function snake_map(sname, svc)
  local m = snake_maps[sname]
  if not m then
    m = {}
    for op in pairs(svc.operations) do m[snake(op)] = op end
    snake_maps[sname] = m
  end
  return m
end

local function check_operation(sname, svc, op, level)
  if type(op) ~= "string" then
    error(("aws.%s: operation name must be a string, got %s"):format(sname, type(op)), level + 1)
  end
  if svc.operations[op] then return op end
  local m = snake_map(sname, svc)
  if m[op] then return m[op] end
  local cands = {}
  local use_snake = op:find("_") or op:match("^%l")
  for s, o in pairs(m) do cands[#cands + 1] = use_snake and s or o end
  local near = suggest(op, cands)
  error(("aws.%s: unknown operation '%s'%s"):format(sname, op,
    #near > 0 and (" — did you mean " .. table.concat(near, ", ") .. "?") or ""), level + 1)
end

---- parameter checks (top level, from the model: aws/models/params/<service>.lua) ----------------------

local param_specs = {} -- service -> { Op = {members = {Name = kind}, required = {...}} } | false

local kinds = {
  structure = "table", map = "table", list = "table", string = "string", blob = "string",
  boolean = "boolean", integer = "number", long = "number", double = "number", float = "number",
}

local function check_params(sname, svc, op_name, params, label, level)
  local specs = param_specs[sname]
  if specs == nil then
    local ok, t = pcall(require, "aws.models.params." .. sname)
    specs = ok and type(t) == "table" and t or false
    param_specs[sname] = specs
  end
  local spec = specs and specs[op_name]
  if not spec then return end
  local members = spec.members
  for k, v in pairs(params) do
    local kind = type(k) == "string" and members[k]
    if not kind then
      local names = {}
      for m in pairs(members) do names[#names + 1] = m end
      table.sort(names)
      local near = type(k) == "string" and suggest(k, names) or {}
      error(("aws.%s: unknown parameter %s%s (parameters: %s)"):format(label, tostring(k),
        #near > 0 and (" — did you mean " .. table.concat(near, ", ") .. "?") or "",
        #names > 0 and table.concat(names, ", ") or "none"), level + 1)
    end
    local want = kinds[kind]
    local got = type(v)
    if want and got ~= want and v ~= json.null
        and not (kind == "timestamp") and not (kind == "string" and got == "number") then
      error(("aws.%s: parameter %s must be a %s (%s), got %s"):format(label, k, kind, want, got), level + 1)
    end
    if kind == "timestamp" and got ~= "number" and got ~= "string" then
      error(("aws.%s: parameter %s must be a timestamp (epoch seconds or ISO 8601 text), got %s"):format(
        label, k, got), level + 1)
    end
    if (kind == "integer" or kind == "long") and math.type(v) == "float" and v ~= math.floor(v) then
      error(("aws.%s: parameter %s must be an integer, got %s"):format(label, k, tostring(v)), level + 1)
    end
  end
  -- required members, for every protocol: a call that lacks one is refused before it is sent
  -- (json services would answer with a confusing not-found or validation error, or none)
  local missing = {}
  for _, m in ipairs(spec.required or {}) do
    if params[m] == nil then missing[#missing + 1] = m end
  end
  if #missing > 0 then
    error(("aws.%s: missing required parameter%s %s"):format(label, #missing > 1 and "s" or "",
      table.concat(missing, ", ")), level + 1)
  end
end

---- settings, transport ----------------------------------------------------------------------

-- aws.configure{...}: process-wide defaults (see the header). Returns the settings in force.
function API.configure(t)
  if t ~= nil and type(t) ~= "table" then
    error("aws.configure: a table expected, got " .. type(t), 2)
  end
  for k, v in pairs(t or {}) do settings[k] = v end
  ctx_cache = {}
  if t and (t.profile or t.credentials) then cred_cache, cred_refresh = {}, {} end
  return settings
end

-- aws.reset{env = {...}}: forget settings, caches, quotas and the transport; with env, read
-- the environment from that table only (tests).
function API.reset(opts)
  settings = {}
  clients, cred_cache, cred_refresh = {}, {}, {}
  transport_override, request_hook = nil, nil
  ctx_cache = {}
  config.reset(opts and opts.env)
end

-- aws.observe(fn): fn(info) is told about every attempt of every call, after its outcome is
-- known: {service, operation, attempt, status, code (failures), throttle, retry (another attempt
-- follows)}. One observer (the server's metrics); nil removes it. It must not wait or raise.
local observer
function API.observe(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("aws.observe: a function (or nil) expected, got " .. type(fn), 2)
  end
  observer = fn
end
tell = function(info) pcall(observer, info) end

function API.use_transport(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("aws.use_transport: a function (or nil) expected, got " .. type(fn), 2)
  end
  transport_override = fn
  ctx_cache = {}
end

-- aws.set_request_hook(fn): fn(req) is called before each request is sent (every attempt), with
-- the request as the transport gets it; it may raise to refuse the call (nil: no hook). The
-- workers' fence (flowrun.worker.fence) refuses the calls of a run this process no longer holds.
function API.set_request_hook(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("aws.set_request_hook: a function (or nil) expected, got " .. type(fn), 2)
  end
  request_hook = fn
end

local http_mod
local function http_transport(req)
  http_mod = http_mod or require "http"
  return http_mod.request {
    method = req.method, url = req.url, headers = req.headers, body = req.body,
    timeout = req.timeout, connect_timeout = req.connect_timeout, ca_file = req.ca_file,
  }
end

-- The transport in force and whether it is the network.
local function current_transport()
  if transport_override then return transport_override, false end
  return http_transport, true
end
API.current_transport = current_transport

---- credentials ------------------------------------------------------------------------------

local function now_wall() return os.time() end

local REFRESH_BEFORE = 15 * 60 -- refresh temporary credentials this long before they expire
local MIN_VALID = 60           -- a refresh failure is tolerated while this much is left

credentials.init(M, function(method, url, headers, timeout)
  return http_transport { method = method, url = url, headers = headers, timeout = timeout,
    connect_timeout = timeout }
end)

local function explicit_credentials(c, where)
  if type(c) ~= "table" then error(where .. ": credentials must be a table", 0) end
  if c.access_key_id and c.secret_access_key then
    redact.remember(c.secret_access_key)
    redact.remember(c.session_token)
    return c
  end
  error(where .. ": credentials need access_key_id and secret_access_key", 0)
end

local function call_error(code, msg, fields)
  fields = fields or {}
  if fields.retryable == nil then fields.retryable = false end
  return flow.error(code, redact.text(msg), fields)
end

-- get_credentials(profile, explicit_profile, offline) -> credentials (cached; refreshed before
-- they expire; one refresh at a time per profile, shared by concurrent callers).
local function get_credentials(profile, explicit_profile, offline)
  local key = profile .. (offline and "|offline" or "")
  local c = cred_cache[key]
  local now = now_wall()
  if c and (not c.expiration or c.expiration - now > REFRESH_BEFORE) then return c end
  local h = cred_refresh[key]
  if not h then
    h = flow.spawn(function()
      return credentials.resolve { profile = profile, explicit_profile = explicit_profile, sim = offline }
    end)
    cred_refresh[key] = h
  end
  local ok, res, tried = pcall(h.wait, h)
  if cred_refresh[key] == h then cred_refresh[key] = nil end
  if not ok then
    if flow.cancelled(res) then error(res, 0) end
    if c and c.expiration and c.expiration - now > MIN_VALID then return c end
    error(res, 0)
  end
  if not res then
    if offline then
      res = { access_key_id = "AKIDSIM", secret_access_key = "sim", source = "simulator defaults" }
    else
      error(call_error("aws.NoCredentials", "no AWS credentials found; tried: " ..
        table.concat(tried or {}, "; ")), 0)
    end
  end
  if res.expiration and res.expiration <= now then
    error(call_error("aws.ExpiredCredentials", ("credentials from %s expired at %s"):format(
      res.source or "?", os.date("!%Y-%m-%dT%H:%M:%SZ", res.expiration))), 0)
  end
  cred_cache[key] = res
  return res
end
API.credentials = function(opts)
  opts = opts or {}
  local profile = config.profile_name(opts.profile or settings.profile)
  local _, network = current_transport()
  local c = get_credentials(profile, (opts.profile or settings.profile) ~= nil, not network)
  return { access_key_id = c.access_key_id, source = c.source, expiration = c.expiration }
end

local function signer_for(c)
  local s = signers[c]
  if not s then
    s = sigv4.new { access_key = c.access_key_id, secret_key = c.secret_access_key,
      token = c.session_token }
    signers[c] = s
  end
  return s
end

---- endpoints --------------------------------------------------------------------------------

local function parse_url(u)
  local scheme, authority, path = u:match("^(https?)://([^/?#]+)([^?#]*)")
  if not scheme then return nil end
  return { scheme = scheme, authority = authority, base_path = (path:gsub("/+$", "")) }
end

local function dns_suffix(region)
  return region:match("^cn%-") and "amazonaws.com.cn" or "amazonaws.com"
end

local function is_ip_or_local(authority)
  local host = authority:gsub(":%d+$", "")
  return host:match("^[%d%.]+$") or host:match("^%[") or host == "localhost"
end

local function s3_virtual_ok(bucket, scheme)
  if not bucket then return false end
  if #bucket < 3 or #bucket > 63 or not bucket:match("^[a-z0-9][a-z0-9%.%-]*[a-z0-9]$") then
    return false
  end
  if bucket:find("%.%.") or bucket:match("^[%d%.]+$") then return false end
  if scheme == "https" and bucket:find("%.") then return false end
  return true
end

local function resolve_endpoint(sname, svc, region, profile, opts)
  local override, source = opts.endpoint_url or settings.endpoint_url, "argument"
  if not override then override, source = config.endpoint(svc.service_id, profile) end
  if override then
    local u = parse_url(override)
    if not u then
      error(call_error("aws.InvalidEndpoint", ("endpoint %s (from %s) is not an http(s) URL"):format(override, source)), 0)
    end
    u.custom = true
    u.source = source
    return u
  end
  local host = svc.endpoint_prefix .. "." .. region .. "." .. dns_suffix(region)
  return { scheme = "https", authority = host, base_path = "", custom = false, source = "default" }
end

---- the call -----------------------------------------------------------------------------------

local NO_CTX = {}
local labels = {}
-- "dms.describe_replication_tasks", made once per operation
label_of = function(sname, op_name)
  local by = labels[sname]
  if not by then by = {}; labels[sname] = by end
  local l = by[op_name]
  if not l then l = sname .. "." .. snake(op_name); by[op_name] = l end
  return l
end

local function client_for(key)
  local c = clients[key]
  if not c then
    c = { quota = retry.new_quota() }
    clients[key] = c
  end
  return c
end
API._clients = function() return clients end

local function max_attempts(opts, p)
  local v = opts.max_attempts or settings.max_attempts or tonumber(config.getenv("AWS_MAX_ATTEMPTS") or "")
      or tonumber(p.max_attempts or "") or 3
  v = math.tointeger(v) or math.floor(v)
  if v < 1 then v = 1 end
  return v
end

local function header_lines(h)
  local names = {}
  for k in pairs(h) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do out[#out + 1] = "  " .. k .. ": " .. tostring(redact.header(k, h[k])) end
  return table.concat(out, "\n")
end

-- What a call needs beyond its parameters: transport, profile, region, endpoint, timeouts,
-- attempts, the client (retry quota). Resolved once per service for calls without overriding
-- opts (the environment and files do not change under a running process; aws.reset and
-- aws.configure clear the cache), so a call does not re-read them.
call_context = function(sname, svc, opts, label)
  local cacheable = opts == nil or next(opts) == nil
  if cacheable and ctx_cache[sname] then return ctx_cache[sname] end
  opts = opts or {}
  local transport, network = current_transport()
  local c = { transport = transport, offline = not network }
  c.explicit_profile = (opts.profile or settings.profile) ~= nil
  c.profile = config.profile_name(opts.profile or settings.profile)
  local p = config.profile(c.profile)
  local region = opts.region or settings.region or config.region(c.profile)
  if not region and c.offline then region = "us-east-1" end
  if not region then
    error(call_error("aws.NoRegion", ("no region for aws.%s: set AWS_REGION or AWS_DEFAULT_REGION, a region in profile %s, aws.configure{region=...} or opts.region"):format(label, c.profile),
      { service = sname }), 3)
  end
  if type(region) ~= "string" or not region:match("^[%w%-]+$") then
    error(("aws.%s: bad region %q"):format(label, tostring(region)), 3)
  end
  c.region = region
  c.ep = resolve_endpoint(sname, svc, region, c.profile, opts)
  c.is_s3 = svc.protocol == "rest-xml" and svc.endpoint_prefix == "s3"
  c.style = opts.s3_addressing_style or settings.s3_addressing_style
      or (type(p.s3) == "table" and p.s3.addressing_style) or "auto"
  c.timeout = opts.timeout or settings.timeout or 120
  c.connect_timeout = opts.connect_timeout or settings.connect_timeout or 10
  c.ca_file = opts.ca_file or settings.ca_file or config.getenv("AWS_CA_BUNDLE") or p.ca_bundle
  c.attempts_max = max_attempts(opts, p)
  c.client = client_for(sname .. "|" .. region .. "|" .. c.ep.scheme .. "://" .. c.ep.authority)
  if cacheable then ctx_cache[sname] = c end
  return c
end

-- aws.call(service, operation, params, opts) -> result table. Waits. Raises error objects.
function API.call(service, op, params, opts)
  local svc, sname = check_service(service, 2)
  local op_name = check_operation(sname, svc, op, 2)
  local label = label_of(sname, op_name)
  if params == nil then params = {} end
  if type(params) ~= "table" then
    error(("aws.%s: params must be a table, got %s"):format(label, type(params)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("aws.%s: opts must be a table, got %s"):format(label, type(opts)), 2)
  end
  check_params(sname, svc, op_name, params, label, 2)
  local op_spec = svc.operations[op_name]
  local c = call_context(sname, svc, opts, label)
  opts = opts or {}
  local transport, offline, profile, explicit_profile = c.transport, c.offline, c.profile, c.explicit_profile
  local network = not offline
  local region, ep, is_s3 = c.region, c.ep, c.is_s3
  local ctx = NO_CTX
  if is_s3 then
    ctx = {}
    local bucket = params.Bucket
    if c.style == "virtual" then
      ctx.bucket_in_host = bucket ~= nil
    elseif c.style == "auto" then
      ctx.bucket_in_host = not ep.custom and s3_virtual_ok(bucket, ep.scheme)
    end
  end

  local ok, req = pcall(protocols.serialize, svc, op_name, op_spec, params, ctx)
  if not ok then
    error(("aws.%s: %s"):format(label, tostring(req)), 2)
  end
  local authority = ep.authority
  if ctx.bucket_in_host and req.bucket then authority = req.bucket .. "." .. authority end
  -- the model's host prefix (MWAA: "env.", "api."), as botocore adds it, except in front of an
  -- IP address or localhost, where it cannot resolve
  if req.host_prefix and not is_ip_or_local(ep.authority) then
    authority = req.host_prefix:gsub("{(%w+)}", function(k) return tostring(params[k] or "") end) .. authority
  end
  local path = ep.base_path .. req.path
  local url = ep.scheme .. "://" .. authority .. path .. (req.query ~= "" and ("?" .. req.query) or "")

  local unsigned = opts.unsigned or (type(op_spec) == "table" and op_spec.unsigned)
  local creds
  if not unsigned then
    if opts.credentials then
      creds = explicit_credentials(opts.credentials, "aws." .. label)
    elseif settings.credentials then
      creds = explicit_credentials(settings.credentials, "aws.configure")
    end
  end
  local timeout, connect_timeout, ca_file = c.timeout, c.connect_timeout, c.ca_file
  local attempts_max, client = c.attempts_max, c.client
  local random = settings.random or math.random
  local dbg = debug_on()

  local attempt, last_cost = 0, nil
  while true do
    attempt = attempt + 1
    local headers = {}
    for k, v in pairs(req.headers) do headers[k] = v end
    headers["Host"] = authority
    if not unsigned then
      local c = creds or get_credentials(profile, explicit_profile, offline)
      local s = signer_for(c)
      s:sign {
        method = req.method, path = path, query = req.query, headers = headers, body = req.body,
        region = region, service = svc.signing_name, normalize = not is_s3, sign_body = is_s3,
      }
    end
    local wire = {
      method = req.method, url = url, headers = headers, body = req.body, service = sname,
      region = region, timeout = timeout, connect_timeout = connect_timeout, ca_file = ca_file,
    }
    local t0 = dbg and flow.now()
    if dbg then
      dlog(("> %s %s %s (attempt %d/%d)\n%s\n  body: %s"):format(label, req.method, url, attempt,
        attempts_max, header_lines(headers), protocols.first_bytes(req.body, 2000)))
    end
    if request_hook then request_hook(wire) end
    local resp, neterr = transport(wire)
    if resp ~= nil and type(resp) ~= "table" then
      resp, neterr = nil, flow.error("aws.TransportError", "transport answered a " .. type(resp), { retryable = false })
    end
    if resp and type(resp.status) ~= "number" then
      resp, neterr = nil, flow.error("aws.TransportError", "transport answer without a status", { retryable = false })
    end
    if resp and not network then
      -- header names are case-insensitive: look them up lower-cased (http.request already
      -- answers them so)
      resp.body = resp.body or ""
      local lh = {}
      for k, v in pairs(resp.headers or {}) do lh[k:lower()] = v end
      resp.headers = lh
    end
    if dbg then
      if resp then
        dlog(("< %s %d (%d bytes, %.1f ms) request id %s\n  body: %s"):format(label, resp.status,
          #resp.body, (flow.now() - t0) * 1000,
          tostring(resp.headers["x-amzn-requestid"] or resp.headers["x-amz-request-id"] or "-"),
          protocols.first_bytes(resp.body, 2000)))
      else
        dlog(("< %s failed: %s"):format(label, tostring(neterr)))
      end
    end

    local err, aws_code, status, is_timeout
    if resp and resp.status >= 200 and resp.status < 300 then
      local result, perr = protocols.parse(svc, op_name, op_spec, resp)
      if result then
        client.quota:release(attempt == 1 and retry.NO_RETRY_INCREMENT or (last_cost or 0))
        if observer then
          tell { service = sname, operation = op_name, attempt = attempt, status = resp.status }
        end
        return result
      end
      err = call_error("aws.InvalidResponse", ("aws.%s: HTTP %d with an answer that cannot be read: %s"):format(
        label, resp.status, perr.message), { status = resp.status, service = sname, operation = op_name,
        request_id = resp.headers["x-amzn-requestid"] or resp.headers["x-amz-request-id"] })
    elseif resp then
      local e = protocols.parse_error(svc, resp)
      aws_code, status = e.code, resp.status
      err = call_error("aws." .. e.code, ("%s (aws.%s, HTTP %d%s)"):format(e.message, label,
        resp.status, e.request_id and (", request id " .. e.request_id) or ""), {
        status = resp.status, request_id = e.request_id, service = sname, operation = op_name,
        aws_code = e.code, retryable = retry.retryable(e.code, resp.status),
      })
    else
      if type(neterr) ~= "table" then
        neterr = flow.error("http.error", tostring(neterr), { retryable = false })
      end
      err = neterr
      err.service, err.operation = sname, op_name
      err.message = redact.text(tostring(err.message)) .. (" (aws.%s)"):format(label)
      is_timeout = err.code == "http.timeout"
    end
    err.attempts = attempt
    local can_retry = err.retryable and (resp == nil or retry.retryable(aws_code, status))
    local cost = can_retry and attempt < attempts_max and client.quota:acquire(is_timeout)
    if observer then
      tell { service = sname, operation = op_name, attempt = attempt, status = status,
        code = aws_code or err.code, retry = cost and true or false,
        throttle = aws_code ~= nil and retry.throttling_codes[aws_code] == true }
    end
    if not can_retry or attempt >= attempts_max then
      error(err, 0)
    end
    if not cost then
      err.quota_exhausted = true
      error(err, 0)
    end
    last_cost = cost
    local delay = retry.delay(attempt, random)
    if dbg then dlog(("  retrying aws.%s in %.3f s (%s)"):format(label, delay, err.code)) end
    flow.sleep(delay)
  end
end

---- presigned URLs -------------------------------------------------------------------------------

-- aws.presign(service, op, params, opts) -> url. A URL anyone can use until it expires
-- (opts.expires seconds, default 3600, at most 7 days): SigV4 query signing of the request the
-- call would send, with an unsigned payload (S3's rule). Does not wait unless credentials must
-- be fetched first.
function API.presign(service, op, params, opts)
  local svc, sname = check_service(service, 2)
  local op_name = check_operation(sname, svc, op, 2)
  local label = sname .. "." .. snake(op_name)
  if params ~= nil and type(params) ~= "table" then
    error(("aws.presign: params must be a table, got %s"):format(type(params)), 2)
  end
  params = params or {}
  check_params(sname, svc, op_name, params, label, 2)
  if svc.protocol ~= "rest-xml" and svc.protocol ~= "rest-json" then
    error(("aws.presign: %s speaks %s; only REST operations (S3) can be presigned"):format(sname, svc.protocol), 2)
  end
  local expires = math.tointeger((opts or {}).expires or 3600)
  if not expires or expires < 1 or expires > 604800 then
    error("aws.presign: expires must be an integer number of seconds in [1, 604800]", 2)
  end
  local c = call_context(sname, svc, opts, label)
  local ctx = {}
  if c.is_s3 then
    ctx.bucket_in_host = c.style == "virtual" and params.Bucket ~= nil
        or (c.style == "auto" and not c.ep.custom and s3_virtual_ok(params.Bucket, c.ep.scheme))
  end
  local ok, req = pcall(protocols.serialize, svc, op_name, svc.operations[op_name], params, ctx)
  if not ok then error(("aws.%s: %s"):format(label, tostring(req)), 2) end
  local authority = c.ep.authority
  if ctx.bucket_in_host and req.bucket then authority = req.bucket .. "." .. authority end
  local path = c.ep.base_path .. req.path
  local cr = (opts or {}).credentials and explicit_credentials(opts.credentials, "aws.presign")
      or settings.credentials and explicit_credentials(settings.credentials, "aws.configure")
      or get_credentials(c.profile, c.explicit_profile, c.offline)
  local headers = { Host = authority }
  for k, v in pairs(req.headers) do headers[k] = v end
  local _, info = signer_for(cr):sign {
    method = req.method, path = path, query = req.query, headers = headers,
    payload_hash = "UNSIGNED-PAYLOAD", region = c.region, service = svc.signing_name,
    normalize = not c.is_s3, presign = expires,
  }
  return c.ep.scheme .. "://" .. authority .. path .. "?" .. info.query
end

---- pagination ---------------------------------------------------------------------------------

-- aws.paginate(service, op, params, opts) -> iterator over pages (result tables). Each step
-- waits for one call. A closure (no coroutine), so it works in any task.
function API.paginate(service, op, params, opts)
  local svc, sname = check_service(service, 2)
  local op_name = check_operation(sname, svc, op, 2)
  local pg = svc.paginators and svc.paginators[op_name]
  if not pg then
    local names = {}
    for k in pairs(svc.paginators or {}) do names[#names + 1] = snake(k) end
    table.sort(names)
    error(("aws.%s.%s cannot be paginated (paginated operations: %s)"):format(sname,
      snake(op_name), table.concat(names, ", ")), 2)
  end
  if params ~= nil and type(params) ~= "table" then
    error(("aws.paginate: params must be a table, got %s"):format(type(params)), 2)
  end
  local p = {}
  for k, v in pairs(params or {}) do p[k] = v end
  local done, seen = false, {}
  return function()
    if done then return nil end
    local page = API.call(sname, op_name, p, opts)
    local tok = page[pg.output_token]
    if tok == nil or tok == "" or tok == json.null
        or (pg.more_results and page[pg.more_results] ~= true) then
      done = true
    else
      if seen[tok] then
        error(call_error("aws.PaginationLoop", ("aws.%s.%s: the service returned the same %s twice"):format(
          sname, snake(op_name), pg.output_token)), 0)
      end
      seen[tok] = true
      p[pg.input_token] = tok
    end
    return page
  end
end

-- aws.collect(service, op, params, opts) -> every item of the paginator's result key.
function API.collect(service, op, params, opts)
  local svc, sname = check_service(service, 2)
  local op_name = check_operation(sname, svc, op, 2)
  local pg = svc.paginators and svc.paginators[op_name]
  local key = pg and pg.result_key
  if not key then error(("aws.collect: %s.%s has no result key"):format(sname, op_name), 2) end
  local items = {}
  for page in API.paginate(sname, op_name, params, opts) do
    for _, v in ipairs(page[key] or {}) do items[#items + 1] = v end
  end
  return items
end

API.services = services
API.redact = redact.text

---- the module table: functions, then services by name ------------------------------------------

local service_objs = {}

local function service_obj(sname)
  local o = service_objs[sname]
  if o then return o end
  local svc = services[sname]
  o = setmetatable({}, {
    __index = function(t, k)
      if type(k) ~= "string" then return nil end
      local op = check_operation(sname, svc, k, 2)
      local f = function(params, opts)
        return API.call(sname, op, params, opts)
      end
      rawset(t, k, f)
      return f
    end,
    __complete = function()
      local names = {}
      for s in pairs(snake_map(sname, svc)) do names[#names + 1] = s end
      table.sort(names)
      return names
    end,
    __tostring = function() return "aws." .. sname .. " (" .. svc.protocol .. ")" end,
  })
  service_objs[sname] = o
  return o
end

setmetatable(M, {
  __index = function(_, k)
    if API[k] ~= nil then return API[k] end
    if type(k) ~= "string" then return nil end
    if services[k] then return service_obj(k) end
    check_service(k, 2) -- raises with suggestions
  end,
  __complete = function()
    local names = service_names()
    local fns = {}
    for k, v in pairs(API) do
      if type(v) == "function" and k:sub(1, 1) ~= "_" then fns[#fns + 1] = k end
    end
    table.sort(fns)
    for _, f in ipairs(fns) do names[#names + 1] = f end
    return names
  end,
  __tostring = function() return "aws (services: " .. table.concat(service_names(), ", ") .. ")" end,
})

return M
