-- aws.grants — the words the stdlib's operators declare their IAM needs with (below the operators,
-- as the AWS client is; flowrun.iam merges what they declare into a policy).
--
-- Each operator module keeps, beside each operator, a function of the operator's arguments that
-- returns the grants that operator may need on any of its paths (success, failure, the wait
-- cancelled, a re-run that finds its earlier resource):
--
--   function M.start_task(arn, opts) ... aws().dms.start_replication_task{...} ... end
--   function M.iam.start_task(arn, opts)
--     local D = require "aws.grants"
--     return D.join(M.iam.describe(arn), D.grant("DmsTask", "dms:StartReplicationTask", arn))
--   end
--
-- A workflow task says which operators it uses on what (its `iam` option), and `flowrun iam`
-- (flowrun.iam) merges the grants into a policy. An argument a declaration cannot know before
-- the run (a cluster id, a job run id) is nil, and the resource is a wildcard, narrowed by a
-- condition where the service has one (the tags flowrun puts on what it creates).
--
-- A grant: {sid = stem of the Sid, actions = {...}, resources = {...}, condition = {Op = {Key =
-- value(s)}} or nil, why = text (said in the output; every unscoped grant says why)}.
local M = {}

-- Where ARNs point: set by flowrun.iam for one derivation ("*" where it is not known).
M.env = {partition = "aws", region = "*", account = "*"}

local function list(v)
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return {v}
end

-- grant(sid, actions, resources, opts) -> {grant}. opts: condition, why.
function M.grant(sid, actions, resources, opts)
  opts = opts or {}
  local res = list(resources)
  if #res == 0 then return {} end
  return {{sid = sid, actions = list(actions), resources = res, condition = opts.condition,
           why = opts.why}}
end

-- unscoped(sid, actions, why) -> a grant on "*", saying why it cannot be narrower.
function M.unscoped(sid, actions, why)
  assert(why, "an unscoped grant says why")
  return M.grant(sid, actions, "*", {why = why})
end

-- join(list, list, ...) -> one list of grants (nil and empty lists are skipped).
function M.join(...)
  local out = {}
  for i = 1, select("#", ...) do
    for _, g in ipairs(select(i, ...) or {}) do out[#out + 1] = g end
  end
  return out
end

-- arn(service, resource) -> arn:<partition>:<service>:<region>:<account>:<resource>
function M.arn(service, resource)
  return string.format("arn:%s:%s:%s:%s:%s", M.env.partition, service, M.env.region,
    M.env.account, resource)
end

-- role(name_or_arn) -> the role's ARN (IAM is global: no region).
function M.role(name)
  if name:match("^arn:") then return name end
  return string.format("arn:%s:iam::%s:role/%s", M.env.partition, M.env.account, name)
end

-- pass_role(sid, role, service) -> iam:PassRole on exactly that role, only to that service.
function M.pass_role(sid, role, service)
  if role == nil or role == "" then return {} end
  return M.grant(sid, "iam:PassRole", M.role(role),
    {condition = {StringEquals = {["iam:PassedToService"] = service}}})
end

-- s3(uri) -> bucket, key pattern: "s3://b/raw/*" -> "b", "raw/*". A key may end in "*".
function M.s3(uri)
  local b, k = tostring(uri):match("^s3a?n?://([^/]+)/?(.*)$")
  if not b then error("flowrun.iam: expected an s3:// location, got " .. tostring(uri), 3) end
  return b, k
end

function M.s3_object(uri)
  local b, k = M.s3(uri)
  return string.format("arn:%s:s3:::%s/%s", M.env.partition, b, k == "" and "*" or k)
end

function M.s3_bucket(uri)
  local b = M.s3(uri)
  return string.format("arn:%s:s3:::%s", M.env.partition, b)
end

-- under(uri) -> everything below an s3:// location: "s3://b/raw" and "s3://b/raw/" -> "s3://b/raw/*".
function M.under(uri)
  if uri == nil or uri == "" then return nil end
  return (tostring(uri):gsub("/*$", "")) .. "/*"
end

-- note(text) -> a grant with nothing granted: a remark the output carries (something to grant by
-- hand that the parameters do not name).
function M.note(text) return {{note = text, actions = {}, resources = {}}} end

-- Functions that declare their own use (a workflow hook built by an operator module):
-- declared(decl, fn) -> fn, remembered with decl (a function of the derivation's ctx, whose
-- params are the workflow's parameters); declaration_of(fn) -> decl or nil.
local declared = setmetatable({}, {__mode = "k"})
function M.declared(decl, fn)
  declared[fn] = decl
  return fn
end
function M.declaration_of(fn) return declared[fn] end

-- tagged(workflow) -> the resources this workflow created (a cluster argument of the emr
-- declarations): {workflow = name}.
function M.tagged(workflow) return {workflow = workflow} end

return M
