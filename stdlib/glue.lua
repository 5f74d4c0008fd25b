-- glue — the Glue Data Catalog for workflows.
--
--   local glue = require "glue"
--   glue.ensure_database("lake", {description = "..."})   -- creates it when missing
--   local t = glue.get_table("lake", "orders")            -- the Table, or nil when missing
--   glue.is_iceberg(t)                                    -- table_type ICEBERG
local M = {}

local function aws() return require "aws" end

-- IAM: Glue authorizes an action on every level of the catalog path: the catalog, the database
-- and the table (Glue's ARNs spell names in lower case).
M.iam = {}
local function D() return require "aws.grants" end
local function path(db, name)
  local d = D()
  local out = {d.arn("glue", "catalog")}
  if db then out[2] = d.arn("glue", "database/" .. db:lower()) end
  if db and name then out[3] = d.arn("glue", "table/" .. db:lower() .. "/" .. name:lower()) end
  return out
end

local function not_found(err)
  return type(err) == "table" and err.code == "aws.EntityNotFoundException"
end

-- get_table(database, name) -> Table or nil when the table (or database) does not exist.
function M.get_table(database, name)
  local ok, r = pcall(function()
    return aws().glue.get_table{DatabaseName = database, Name = name}
  end)
  if ok then return r.Table end
  if not_found(r) then return nil end
  error(r, 0)
end

function M.iam.get_table(db, name) return D().grant("GlueCatalog", "glue:GetTable", path(db, name or "*")) end

function M.get_database(name)
  local ok, r = pcall(function() return aws().glue.get_database{Name = name} end)
  if ok then return r.Database end
  if not_found(r) then return nil end
  error(r, 0)
end

-- ensure_database(name, opts) -> {name, created = bool}. opts: description, location_uri.
function M.ensure_database(name, opts)
  opts = opts or {}
  if M.get_database(name) then return {name = name, created = false} end
  local ok, err = pcall(function()
    aws().glue.create_database{DatabaseInput = {Name = name, Description = opts.description,
                                                LocationUri = opts.location_uri}}
  end)
  if not ok then
    -- created meanwhile by someone else: that is what we wanted
    if type(err) == "table" and err.code == "aws.AlreadyExistsException" then
      return {name = name, created = false}
    end
    error(err, 0)
  end
  return {name = name, created = true}
end

function M.iam.get_database(name) return D().grant("GlueCatalog", "glue:GetDatabase", path(name)) end

function M.iam.ensure_database(name)
  return D().join(M.iam.get_database(name), D().grant("GlueCatalog", "glue:CreateDatabase", path(name)))
end

function M.is_iceberg(t)
  local p = t and t.Parameters or {}
  return (p.table_type or ""):upper() == "ICEBERG"
end

return M
