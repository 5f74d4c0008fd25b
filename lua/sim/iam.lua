-- sim/iam.lua — IAM in the simulator: with a policy configured (--sim-policy FILE, or
-- configure{policy = doc}), every request is authorized as AWS authorizes it before the service
-- acts: the request is turned into the IAM checks it needs (action, resource ARN, condition
-- context: aws:ResourceTag/* from the simulated resource's tags, aws:RequestTag/* and
-- aws:TagKeys from the request, s3:prefix, iam:PassedToService for each role handed to a
-- service), and each check is evaluated against the policy (an explicit Deny wins; otherwise
-- an Allow is needed). A check the policy does not allow is answered AccessDenied, shaped as the
-- service shapes it, naming the caller, the action and the resource.
--
-- This module is written from the services' side (what a request needs), independently of the
-- stdlib's declarations (what an operator says it will need, lua/flowrun/iam/): the simulator
-- proves the declarations, it does not repeat them.
--
-- What is checked beyond the request's own action (as AWS does):
--   - EMR RunJobFlow: iam:PassRole on the service role (elasticmapreduce.amazonaws.com) and on
--     the role of the EC2 instance profile (ec2.amazonaws.com; a world's iam.instance_profiles
--     maps a profile to its role, by default the role of the same name);
--   - EMR Serverless StartJobRun: iam:PassRole on the execution role (emr-serverless.amazonaws.com);
--   - Glue: the catalog, the database and the table, each (Glue authorizes the whole path);
--   - S3 GetObject/HeadObject of a missing key: without s3:ListBucket on the bucket, S3 answers
--     403 instead of 404 (AWS says only "Access Denied"; the simulator names s3:ListBucket);
--   - Athena runs a query with the caller's permissions (forward access): glue:GetDatabase and
--     glue:GetTable on the queried table, s3:GetObject on its metadata, s3:GetBucketLocation and
--     s3:PutObject on the output location (a query that lacks them FAILS, naming the action),
--     and GetQueryResults reads the output with s3:GetObject.
-- Each decision is recorded (FLOWRUN_SIM_RECORD: the request's line carries its checks, with the
-- Sid of the statement that allowed each), so a test can tell which statements a run used.
local json = require "json"
local util = require "sim.util"

local M = {}

local policy        -- normalised statements, or nil (no checks)
local source = "?"  -- where the policy came from, for messages

---- the policy -------------------------------------------------------------------------------

local function list_of(v)
  if v == nil then return nil end
  if type(v) == "table" then return v end
  return {v}
end

-- set_policy(doc, where): doc a decoded policy document ({Version, Statement}) or nil (checks
-- off). Raises on a document that is not a policy.
function M.set_policy(doc, where)
  if doc == nil then policy = nil return end
  if type(doc) ~= "table" or doc.Statement == nil then
    error("sim: " .. tostring(where or "the policy") .. " is not an IAM policy document " ..
      "(no Statement)", 0)
  end
  local stmts = doc.Statement
  if stmts.Effect then stmts = {stmts} end
  local out = {}
  for i, s in ipairs(stmts) do
    if s.Effect ~= "Allow" and s.Effect ~= "Deny" then
      error(string.format("sim: %s: statement %d: Effect must be Allow or Deny", tostring(where), i), 0)
    end
    if not (s.Action or s.NotAction) or not (s.Resource or s.NotResource) then
      error(string.format("sim: %s: statement %d needs Action (or NotAction) and Resource " ..
        "(or NotResource)", tostring(where), i), 0)
    end
    out[#out + 1] = {sid = s.Sid or ("#" .. i), effect = s.Effect, action = list_of(s.Action),
                     not_action = list_of(s.NotAction), resource = list_of(s.Resource),
                     not_resource = list_of(s.NotResource), condition = s.Condition}
  end
  policy, source = out, where or "the policy"
end

function M.load_policy(path)
  local f, err = io.open(path, "rb")
  if not f then error("sim: cannot read the policy " .. tostring(path) .. ": " .. tostring(err), 0) end
  local s = f:read("a")
  f:close()
  local ok, doc = pcall(json.decode, s)
  if not ok then error("sim: the policy " .. path .. " is not JSON: " .. tostring(doc), 0) end
  M.set_policy(doc, path)
end

function M.active() return policy ~= nil end

---- matching -----------------------------------------------------------------------------------

local pattern_cache = {}
-- IAM's wildcards: * any run of characters, ? one character; everything else literal.
local function glob(pat, s, fold)
  if fold then pat, s = pat:lower(), s:lower() end
  local lp = pattern_cache[pat]
  if not lp then
    lp = "^" .. pat:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
    pattern_cache[pat] = lp
  end
  return s:find(lp) ~= nil
end
M.glob = glob

local function any_glob(pats, s, fold)
  for _, p in ipairs(pats) do if glob(p, s, fold) then return true end end
  return false
end

local COMPARE = {
  StringEquals = function(have, want) return have == want end,
  StringEqualsIgnoreCase = function(have, want) return have:lower() == want:lower() end,
  StringLike = function(have, want) return glob(want, have) end,
  ArnEquals = function(have, want) return have == want end,
  ArnLike = function(have, want) return glob(want, have) end,
  Bool = function(have, want) return tostring(have):lower() == tostring(want):lower() end,
}
local NEGATED = {StringNotEquals = "StringEquals", StringNotEqualsIgnoreCase = "StringEqualsIgnoreCase",
                 StringNotLike = "StringLike", ArnNotEquals = "ArnEquals", ArnNotLike = "ArnLike"}

-- One condition operator over one key: ctx holds the request's context, keys lower-cased, values
-- strings or lists of strings.
local function condition_holds(op, key, want, ctx)
  local set, base = op:match("^(For%a+Values?):(.+)$")
  base = base or op
  local if_exists = base:match("IfExists$") ~= nil
  base = base:gsub("IfExists$", "")
  want = list_of(want)
  local have = ctx[key:lower()]
  if base == "Null" then
    return (have == nil) == (tostring(want[1]) == "true")
  end
  if have == nil then
    if set == "ForAllValues" then return true end
    return if_exists
  end
  local neg = NEGATED[base]
  local cmp = COMPARE[neg or base]
  if not cmp then error("sim: condition operator " .. op .. " is not supported by the simulator", 0) end
  local function matches(v)
    for _, w in ipairs(want) do if cmp(tostring(v), tostring(w)) then return true end end
    return false
  end
  local values = type(have) == "table" and have or {have}
  local r
  if set == "ForAllValues" then
    r = true
    for _, v in ipairs(values) do if not matches(v) then r = false end end
  else
    r = false
    for _, v in ipairs(values) do if matches(v) then r = true end end
  end
  if neg then return not r end
  return r
end

local function statement_applies(s, action, resource, ctx)
  if s.action and not any_glob(s.action, action, true) then return false end
  if s.not_action and any_glob(s.not_action, action, true) then return false end
  if s.resource and not any_glob(s.resource, resource) then return false end
  if s.not_resource and any_glob(s.not_resource, resource) then return false end
  for op, keys in pairs(s.condition or {}) do
    for key, want in pairs(keys) do
      if not condition_holds(op, key, want, ctx) then return false end
    end
  end
  return true
end

-- evaluate(action, resource, ctx) -> "allow" | "deny" | "implicit", the deciding statement's Sid.
function M.evaluate(action, resource, ctx)
  local lctx = {}
  for k, v in pairs(ctx or {}) do lctx[k:lower()] = v end
  local allowed
  for _, s in ipairs(policy or {}) do
    if statement_applies(s, action, resource, lctx) then
      if s.effect == "Deny" then return "deny", s.sid end
      allowed = allowed or s.sid
    end
  end
  if allowed then return "allow", allowed end
  return "implicit"
end

---- what a request needs -----------------------------------------------------------------------

local function arn(w, service, res) return string.format("arn:aws:%s:%s:%s:%s", service, w.region, w.account, res) end
local function role_arn(w, name)
  if name:match("^arn:") then return name end
  return string.format("arn:aws:iam::%s:role/%s", w.account, name)
end

local function tag_context(ctx, prefix, tags)
  for k, v in pairs(tags or {}) do ctx[prefix .. k] = v end
  return ctx
end

local function request_tags(ctx, tags)
  local keys = {}
  for k, v in pairs(tags or {}) do ctx["aws:RequestTag/" .. k] = v; keys[#keys + 1] = k end
  if #keys > 0 then table.sort(keys); ctx["aws:TagKeys"] = keys end
  return ctx
end

local function pass_role(w, role, service)
  return {action = "iam:PassRole", resource = role_arn(w, role),
          context = {["iam:PassedToService"] = service}}
end

local function emr_cluster(w, id)
  local c = w.emr.clusters[id or ""]
  return {resource = arn(w, "elasticmapreduce", "cluster/" .. tostring(id)),
          context = tag_context({}, "aws:ResourceTag/", c and c.Tags)}
end

local function glue_path(w, db, tname)
  local out = {arn(w, "glue", "catalog")}
  if db then out[#out + 1] = arn(w, "glue", "database/" .. db:lower()) end
  if db and tname then out[#out + 1] = arn(w, "glue", "table/" .. db:lower() .. "/" .. tname:lower()) end
  return out
end

local function each(action, resources, context)
  local out = {}
  for _, r in ipairs(resources) do out[#out + 1] = {action = action, resource = r, context = context or {}} end
  return out
end

local function s3_object(bucket, key) return "arn:aws:s3:::" .. bucket .. "/" .. key end
local function s3_bucket(bucket) return "arn:aws:s3:::" .. bucket end

local function secret_arn(w, id)
  local ok, s = pcall(require("sim.secrets").find, w, id)
  if ok and s then return s.ARN end
  if tostring(id):match("^arn:") then return id end
  return arn(w, "secretsmanager", "secret:" .. tostring(id))
end

local function athena_workgroup(w, p)
  local wg = p.WorkGroup
  if not wg and p.QueryExecutionId then
    local q = w.athena.queries[p.QueryExecutionId]
    wg = q and q.WorkGroup
  end
  return arn(w, "athena", "workgroup/" .. (wg or "primary"))
end

local function es_app(w, id)
  local a = w.emr_serverless and w.emr_serverless.applications and w.emr_serverless.applications[id or ""]
  return a, a and a.arn or arn(w, "emr-serverless", "/applications/" .. tostring(id))
end

-- checks(w, service, op, params) -> the list of {action, resource, context} the request needs.
local CHECKS = {}

CHECKS.dms = function(w, op, p)
  if op == "StartReplicationTask" or op == "StopReplicationTask" or op == "DescribeTableStatistics"
      or op == "DeleteReplicationTask" or op == "ModifyReplicationTask" then
    return {{action = "dms:" .. op, resource = p.ReplicationTaskArn, context = {}}}
  end
  -- Describe* calls take no resource (a List action in the Service Authorization Reference)
  return {{action = "dms:" .. op, resource = "*", context = {}}}
end

CHECKS.emr = function(w, op, p)
  local a = "elasticmapreduce:" .. op
  if op == "RunJobFlow" then
    local out = {{action = a, resource = "*", context = request_tags({}, util.tags_to_map(p.Tags))}}
    if p.ServiceRole then out[#out + 1] = pass_role(w, p.ServiceRole, "elasticmapreduce.amazonaws.com") end
    if p.JobFlowRole then
      local profiles = w.iam and w.iam.instance_profiles or {}
      local name = p.JobFlowRole:match("instance%-profile/(.+)$") or p.JobFlowRole
      out[#out + 1] = pass_role(w, profiles[name] or name, "ec2.amazonaws.com")
    end
    return out
  end
  if op == "ListClusters" then return {{action = a, resource = "*", context = {}}} end
  if op == "TerminateJobFlows" then
    local out = {}
    for _, id in ipairs(p.JobFlowIds or {}) do
      local c = emr_cluster(w, id)
      out[#out + 1] = {action = a, resource = c.resource, context = c.context}
    end
    return out
  end
  local c = emr_cluster(w, p.ClusterId or p.JobFlowId or p.ResourceId)
  return {{action = a, resource = c.resource, context = c.context}}
end

CHECKS.glue = function(w, op, p)
  local a = "glue:" .. op
  if op == "GetTable" or op == "CreateTable" or op == "DeleteTable" or op == "UpdateTable" then
    local name = p.Name or (p.TableInput and p.TableInput.Name)
    return each(a, glue_path(w, p.DatabaseName, name))
  end
  if op == "GetTables" then
    return each(a, {arn(w, "glue", "catalog"), arn(w, "glue", "database/" .. p.DatabaseName:lower()),
                    arn(w, "glue", "table/" .. p.DatabaseName:lower() .. "/*")})
  end
  if op == "GetDatabase" then return each(a, glue_path(w, p.Name)) end
  if op == "CreateDatabase" then return each(a, glue_path(w, p.DatabaseInput and p.DatabaseInput.Name)) end
  return each(a, {arn(w, "glue", "catalog")})
end

CHECKS.secretsmanager = function(w, op, p)
  if p.SecretId then return {{action = "secretsmanager:" .. op, resource = secret_arn(w, p.SecretId), context = {}}} end
  return {{action = "secretsmanager:" .. op, resource = "*", context = request_tags({}, util.tags_to_map(p.Tags))}}
end

CHECKS.athena = function(w, op, p)
  return {{action = "athena:" .. op, resource = athena_workgroup(w, p), context = {}}}
end

CHECKS.cloudwatch = function(w, op, p)
  return {{action = "cloudwatch:" .. op, resource = "*", context = {}}}
end

CHECKS.sns = function(w, op, p)
  if op == "CreateTopic" then return {{action = "sns:CreateTopic", resource = arn(w, "sns", p.Name or "*"), context = {}}} end
  return {{action = "sns:" .. op, resource = p.TopicArn or p.TargetArn or "*", context = {}}}
end

CHECKS.sts = function(w, op, p)
  return {}   -- GetCallerIdentity needs no permission; the pipeline calls nothing else of STS
end

CHECKS["emr-serverless"] = function(w, op, p)
  local a = "emr-serverless:" .. op
  if op == "CreateApplication" then
    return {{action = a, resource = "*", context = request_tags({}, p.tags)}}
  end
  if op == "ListApplications" then return {{action = a, resource = "*", context = {}}} end
  local app, app_arn = es_app(w, p.applicationId)
  if op == "GetJobRun" or op == "CancelJobRun" then
    local r = app and app.runs and app.runs[p.jobRunId or ""]
    return {{action = a, resource = r and r.arn or (app_arn .. "/jobruns/" .. tostring(p.jobRunId)),
             context = tag_context({}, "aws:ResourceTag/", r and r.tags)}}
  end
  local out = {{action = a, resource = app_arn,
                context = tag_context({}, "aws:ResourceTag/", app and app.tags)}}
  if op == "StartJobRun" then
    request_tags(out[1].context, p.tags)
    if p.executionRoleArn then
      out[#out + 1] = pass_role(w, p.executionRoleArn, "emr-serverless.amazonaws.com")
    end
  end
  return out
end

CHECKS.s3 = function(w, op, p)
  local b, k = p.Bucket, p.Key
  if op == "GetObject" or op == "HeadObject" then
    return {{action = "s3:GetObject", resource = s3_object(b, k), context = {}}}
  elseif op == "PutObject" or op == "CopyObject" then
    return {{action = "s3:PutObject", resource = s3_object(b, k), context = {}}}
  elseif op == "DeleteObject" then
    return {{action = "s3:DeleteObject", resource = s3_object(b, k), context = {}}}
  elseif op == "ListObjectsV2" or op == "ListObjects" or op == "HeadBucket" then
    return {{action = "s3:ListBucket", resource = s3_bucket(b),
             context = {["s3:prefix"] = p.Prefix or "", ["s3:delimiter"] = p.Delimiter}}}
  elseif op == "CreateBucket" then
    return {{action = "s3:CreateBucket", resource = s3_bucket(b), context = {}}}
  elseif op == "GetBucketLocation" then
    return {{action = "s3:GetBucketLocation", resource = s3_bucket(b), context = {}}}
  elseif op == "ListBuckets" then
    return {{action = "s3:ListAllMyBuckets", resource = "*", context = {}}}
  end
  return {{action = "s3:" .. op, resource = b and s3_bucket(b) or "*", context = {}}}
end

---- the operation and parameters of a request that is not JSON 1.1 ------------------------------

-- S3: path-style or virtual-hosted, as sim/s3.lua reads it.
local function s3_request(req)
  local _, host, path, qs = util.parse_url(req.url)
  local q = util.parse_query(qs)
  local bucket, key
  local vh = host:match("^(.+)%.s3[.-]") or host:match("^(.+)%.s3$")
  if vh then bucket, key = vh, path:sub(2)
  else bucket, key = path:match("^/([^/]+)/?(.*)$") end
  if bucket then bucket = util.url_decode(bucket) end
  if key then key = util.url_decode(key) end
  if key == "" then key = nil end
  local m = (req.method or "GET"):upper()
  local p = {Bucket = bucket, Key = key, Prefix = q.prefix, Delimiter = q.delimiter}
  if not bucket then return m == "GET" and "ListBuckets" or "Unknown", p end
  if not key then
    if m == "PUT" then return "CreateBucket", p end
    if m == "HEAD" then return "HeadBucket", p end
    if m == "DELETE" then return "DeleteBucket", p end
    if q.location then return "GetBucketLocation", p end
    return q["list-type"] == "2" and "ListObjectsV2" or "ListObjects", p
  end
  if m == "GET" then return "GetObject", p end
  if m == "HEAD" then return "HeadObject", p end
  if m == "PUT" then
    return util.header(req.headers, "x-amz-copy-source") and "CopyObject" or "PutObject", p
  end
  if m == "DELETE" then return "DeleteObject", p end
  return "Unknown", p
end

-- REST JSON (EMR Serverless): the model's routes (method and URI template).
local routes_cache = {}
local function rest_json_request(service, req)
  local routes = routes_cache[service]
  if not routes then
    routes = {}
    local svc = require("aws.services")[service]
    for op, b in pairs(svc.operations) do
      if type(b) == "table" and b.uri then
        local names = {}
        local pat = "^" .. b.uri:gsub("%?.*$", ""):gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
          :gsub("{([%w_]+)%%%+}", function(n) names[#names + 1] = n return "(.+)" end)
          :gsub("{([%w_]+)}", function(n) names[#names + 1] = n return "([^/]+)" end) .. "$"
        routes[#routes + 1] = {op = op, method = b.method, pattern = pat, names = names}
      end
    end
    routes_cache[service] = routes
  end
  local _, _, path, qs = util.parse_url(req.url)
  local method = (req.method or "GET"):upper()
  local p = {}
  if req.body and req.body ~= "" then
    local ok, v = pcall(json.decode, req.body)
    if ok and type(v) == "table" then p = v end
  end
  for k, v in pairs(util.parse_query(qs)) do if p[k] == nil then p[k] = v end end
  for _, r in ipairs(routes) do
    if r.method == method then
      local caps = table.pack(path:match(r.pattern))
      if caps[1] ~= nil then
        for i, n in ipairs(r.names) do p[n] = util.url_decode(caps[i]) end
        return r.op, p
      end
    end
  end
  return "Unknown", p
end

-- Query protocol (SNS, STS): Action=... in the form body.
local function query_request(req)
  local p = util.parse_query(req.body or "")
  return p.Action or "Unknown", p
end

-- operation(req, svc) -> op, params for the non-JSON services.
function M.operation(service, req)
  if service == "s3" then return s3_request(req) end
  if service == "emr-serverless" then return rest_json_request(service, req) end
  return query_request(req)
end

---- decisions --------------------------------------------------------------------------------

local function principal(w) return string.format("arn:aws:iam::%s:user/flowrun", w.account) end

-- The message AWS gives: who, which action, on what, and why.
function M.denial_message(w, check, how)
  return string.format("User: %s is not authorized to perform: %s on resource: %s because %s",
    principal(w), check.action, check.resource, how == "deny"
      and "of an explicit deny in an identity-based policy"
      or ("no identity-based policy allows the " .. check.action .. " action"))
end

-- The shape of an AccessDenied for each service.
local function denial_fault(service, msg, check)
  if service == "s3" then return util.fault("AccessDenied", msg, 403) end
  if service == "sns" then return util.fault("AuthorizationError", msg, 403) end
  if service == "sts" then return util.fault("AccessDenied", msg, 403) end
  if service == "emr-serverless" then return util.fault("AccessDeniedException", msg, 403) end
  return util.fault("AccessDeniedException", msg, 400)
end

-- check_all(w, checks) -> nil when every check is allowed, else the first refused check and the
-- decision; fills each check's .decision and .sid.
function M.check_all(w, checks)
  for _, c in ipairs(checks) do
    local d, sid = M.evaluate(c.action, c.resource, c.context)
    c.decision, c.sid = d, sid
    if d ~= "allow" then return c, d end
  end
  return nil
end

-- authorize(w, service, op, params) -> checks (with their decisions), fault or nil. Nothing to
-- check without a policy.
-- With want_checks (a run being recorded), the checks are computed without a policy too.
function M.authorize(w, service, op, params, want_checks)
  if not policy and not want_checks then return nil end
  local f = CHECKS[service]
  if not f then return {}, nil end
  local ok, checks = pcall(f, w, op, params or {})
  if not ok then checks = {} end   -- a malformed request: the service answers it
  if not policy then return checks, nil end
  local refused, how = M.check_all(w, checks)
  if refused then
    return checks, denial_fault(service, M.denial_message(w, refused, how), refused)
  end
  return checks, nil
end

-- missing_key(w, bucket, key) -> a fault when S3 must answer 403 for a key that does not exist
-- (the caller may not list the bucket), else nil.
function M.missing_key(w, bucket, key)
  if not policy then return nil end
  local c = {action = "s3:ListBucket", resource = s3_bucket(bucket), context = {["s3:prefix"] = key}}
  local d, sid = M.evaluate(c.action, c.resource, c.context)
  c.decision, c.sid = d, sid
  M.note({c})
  if d == "allow" then return nil end
  return util.fault("AccessDenied", M.denial_message(w, c, d) ..
    " (a missing key answers 403 without s3:ListBucket)", 403, {bucket = bucket, key = key})
end

-- What Athena does with the caller's permissions to run a query on db.table with its output at
-- output (an s3:// URI, or nil) and the table's metadata file at meta_uri (or nil): the first
-- refused check's message, or nil.
function M.athena_access(w, db, tname, meta_uri, output)
  if not policy then return nil end
  local checks = {}
  if db then
    for _, c in ipairs(each("glue:GetDatabase", glue_path(w, db))) do checks[#checks + 1] = c end
    if tname then
      for _, c in ipairs(each("glue:GetTable", glue_path(w, db, tname))) do checks[#checks + 1] = c end
    end
  end
  local mb, mk = tostring(meta_uri or ""):match("^s3://([^/]+)/(.+)$")
  if mb then checks[#checks + 1] = {action = "s3:GetObject", resource = s3_object(mb, mk), context = {}} end
  local ob, ok_ = tostring(output or ""):match("^s3://([^/]+)/?(.*)$")
  if ob then
    checks[#checks + 1] = {action = "s3:GetBucketLocation", resource = s3_bucket(ob), context = {}}
    checks[#checks + 1] = {action = "s3:PutObject", resource = s3_object(ob, ok_), context = {}}
  end
  local refused, how = M.check_all(w, checks)
  M.note(checks)
  if refused then return M.denial_message(w, refused, how) end
  return nil
end

-- The read of a query's results (GetQueryResults) from its output location.
function M.athena_results(w, output)
  if not policy then return nil end
  local ob, ok_ = tostring(output or ""):match("^s3://([^/]+)/(.*)$")
  if not ob then return nil end
  local c = {action = "s3:GetObject", resource = s3_object(ob, ok_), context = {}}
  local refused, how = M.check_all(w, {c})
  M.note({c})
  if refused then return util.fault("AccessDeniedException", M.denial_message(w, refused, how), 400) end
  return nil
end

-- Checks done on a request's behalf by a service (Athena), recorded with the request.
local extra = {}
function M.note(checks) for _, c in ipairs(checks or {}) do extra[#extra + 1] = c end end
function M.take_notes() local e = extra; extra = {} return e end

return M
