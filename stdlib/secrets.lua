-- secrets — AWS Secrets Manager for workflows.
--
--   local secrets = require "secrets"
--   local s = secrets.get_json("prod/source-db")   -- a DMS/RDS-style database secret
--   local conn = pg.connect(secrets.pg_conninfo(s))
--
-- Secret values never appear in errors or logs: an error names the secret id only.
local flow = require "flow"
local json = require "json"

local M = {}

local function aws() return require "aws" end

-- IAM: GetSecretValue on the secret (a name matches its ARN with Secrets Manager's six-character
-- suffix). A secret encrypted with a customer managed KMS key also needs kms:Decrypt on it.
M.iam = {}
function M.iam.get_string(secret_id)
  local D = require "aws.grants"
  if secret_id == nil or secret_id == "" then return {} end
  local arn = secret_id:match("^arn:") and secret_id or D.arn("secretsmanager", "secret:" .. secret_id .. "-??????")
  return D.grant("Secret", "secretsmanager:GetSecretValue", arn)
end
M.iam.get_json = M.iam.get_string
M.iam.pg_conninfo = M.iam.get_string

-- get_string(secret_id) -> SecretString
function M.get_string(secret_id)
  if type(secret_id) ~= "string" or secret_id == "" then
    error("secrets: expected a secret id or ARN (string)", 2)
  end
  local r = aws().secretsmanager.get_secret_value{SecretId = secret_id}
  if not r.SecretString then
    error(flow.error("secrets.not_text", "secret " .. secret_id .. " has no SecretString " ..
      "(binary secrets are not JSON)", {retryable = false}), 2)
  end
  return r.SecretString
end

-- get_json(secret_id) -> the secret's JSON as a table (username, password, host, port,
-- dbname, engine ... for a database secret).
function M.get_json(secret_id)
  local s = M.get_string(secret_id)
  local ok, v = pcall(json.decode, s)
  if not ok or type(v) ~= "table" then
    -- the decoder's message could quote the secret: do not pass it on
    error(flow.error("secrets.not_json", "secret " .. secret_id .. " is not a JSON object",
      {retryable = false}), 2)
  end
  return v
end

-- pg_conninfo(secret) -> a table of libpq keywords for pg.connect, from a database secret
-- (a table from get_json, or a secret id). The DMS/RDS secret spells user "username".
function M.pg_conninfo(secret)
  if type(secret) == "string" then secret = M.get_json(secret) end
  return require("pg").conninfo_table(secret)
end

return M
