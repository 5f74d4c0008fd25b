-- sim/sts.lua — STS (query protocol) in the simulator: GetCallerIdentity and AssumeRole, form
-- bodies in, XML out; errors as <ErrorResponse>.
local util = require "sim.util"
local sim = require "sim"

local M = {}

local error_answer, ok = util.query_protocol('xmlns="https://sts.amazonaws.com/doc/2011-06-15/"')
M.error_answer = error_answer

function M.handle(w, req)
  local _, _, _, query = util.parse_url(req.url)
  local p = util.parse_query(query)
  for k, v in pairs(util.parse_query(req.body)) do p[k] = v end
  local action = p.Action
  if action == "GetCallerIdentity" then
    return ok(action, util.el("Arn", "arn:aws:iam::" .. w.account .. ":user/flowrun-sim") ..
      util.el("UserId", "AIDASIMULATEDUSER0001") .. util.el("Account", w.account))
  elseif action == "AssumeRole" then
    for _, k in ipairs({"RoleArn", "RoleSessionName"}) do
      if not p[k] then
        error(util.fault("ValidationError", "1 validation error detected: Value null at '" ..
          k:sub(1, 1):lower() .. k:sub(2) .. "' failed to satisfy constraint: Member must not be null"))
      end
    end
    local role = p.RoleArn:match(":role/(.+)$") or "role"
    local exp = sim.now() + (tonumber(p.DurationSeconds) or 3600)
    return ok(action, "<Credentials>" .. util.el("AccessKeyId", "ASIASIMULATED00000001") ..
      util.el("SecretAccessKey", "simulated-secret-key") ..
      util.el("SessionToken", "simulated-session-token") ..
      util.el("Expiration", util.iso8601(exp)) .. "</Credentials><AssumedRoleUser>" ..
      util.el("AssumedRoleId", "AROASIMULATED:" .. p.RoleSessionName) ..
      util.el("Arn", "arn:aws:sts::" .. w.account .. ":assumed-role/" .. role .. "/" ..
        p.RoleSessionName) .. "</AssumedRoleUser>")
  end
  error(util.fault("InvalidAction", "Could not find operation " .. tostring(action) ..
    " for version " .. tostring(p.Version), 400))
end

return M
