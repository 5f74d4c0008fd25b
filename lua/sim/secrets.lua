-- sim/secrets.lua — Secrets Manager in the simulator: secrets by name or ARN, current version.
local util = require "sim.util"
local sim = require "sim"

local M = {ops = {}}

M.required = {
  GetSecretValue = {"SecretId"},
  CreateSecret = {"Name"},
  DescribeSecret = {"SecretId"},
  PutSecretValue = {"SecretId"},
}

local function find(w, id)
  if w.secrets[id] then return w.secrets[id] end
  for _, s in pairs(w.secrets) do
    if s.ARN == id then return s end
    -- a partial ARN (without the random suffix) names the secret too
    local partial = s.ARN:gsub("%-%w%w%w%w%w%w$", "")
    if partial == id then return s end
  end
  error(util.fault("ResourceNotFoundException", "Secrets Manager can't find the specified secret."))
end
M.find = find

function M.ops.GetSecretValue(w, p)
  local s = find(w, p.SecretId)
  if p.VersionId and p.VersionId ~= s.VersionId then
    error(util.fault("ResourceNotFoundException",
      "Secrets Manager can't find the specified secret value for VersionId: " .. p.VersionId))
  end
  return {ARN = s.ARN, Name = s.Name, VersionId = s.VersionId, SecretString = s.SecretString,
          SecretBinary = s.SecretBinary, VersionStages = util.array({"AWSCURRENT"}),
          CreatedDate = s.CreatedDate}
end

function M.ops.DescribeSecret(w, p)
  local s = find(w, p.SecretId)
  return {ARN = s.ARN, Name = s.Name, Description = s.Description, CreatedDate = s.CreatedDate,
          LastChangedDate = s.LastChangedDate or s.CreatedDate,
          VersionIdsToStages = {[s.VersionId] = util.array({"AWSCURRENT"})}}
end

local function new_version(w)
  return require("sim.state").next_id(w, "", 8, "0123456789abcdef") ..
    "-0000-4000-8000-000000000000"
end

function M.ops.CreateSecret(w, p)
  if w.secrets[p.Name] then
    error(util.fault("ResourceExistsException",
      "The operation failed because the secret " .. p.Name .. " already exists."))
  end
  local suffix = require("sim.state").next_id(w, "", 6,
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  local s = {Name = p.Name, Description = p.Description, SecretString = p.SecretString,
             SecretBinary = p.SecretBinary, CreatedDate = sim.now(), VersionId = new_version(w),
             ARN = string.format("arn:aws:secretsmanager:%s:%s:secret:%s-%s", w.region,
               w.account, p.Name, suffix)}
  w.secrets[p.Name] = s
  return {ARN = s.ARN, Name = s.Name, VersionId = s.VersionId}
end

function M.ops.PutSecretValue(w, p)
  local s = find(w, p.SecretId)
  s.SecretString, s.SecretBinary = p.SecretString, p.SecretBinary
  s.VersionId = new_version(w)
  s.LastChangedDate = sim.now()
  return {ARN = s.ARN, Name = s.Name, VersionId = s.VersionId,
          VersionStages = util.array({"AWSCURRENT"})}
end

return M
