-- sim/glue.lua — the Glue Data Catalog in the simulator: databases and tables (the Iceberg
-- tables the EMR step registers appear here), with Glue's EntityNotFoundException and
-- AlreadyExistsException.
local util = require "sim.util"
local sim = require "sim"

local M = {ops = {}}

M.required = {
  GetDatabase = {"Name"},
  GetDatabases = {},
  CreateDatabase = {"DatabaseInput"},
  GetTable = {"DatabaseName", "Name"},
  GetTables = {"DatabaseName"},
  CreateTable = {"DatabaseName", "TableInput"},
  DeleteTable = {"DatabaseName", "Name"},
}

local function catalog(w, p) return p.CatalogId or w.account end

local function get_db(w, name)
  local db = w.glue.databases[name or ""]
  if not db then
    error(util.fault("EntityNotFoundException", "Database " .. tostring(name) .. " not found."))
  end
  return db
end

local function db_view(w, db)
  return {Name = db.Name, Description = db.Description, LocationUri = db.LocationUri,
          Parameters = db.Parameters, CreateTime = db.CreateTime, CatalogId = w.account}
end

local function table_view(w, t)
  local out = {}
  for k, v in pairs(t) do if not k:match("^sim_") then out[k] = util.copy(v) end end
  out.CatalogId = w.account
  return out
end

function M.ops.GetDatabase(w, p)
  catalog(w, p)
  return {Database = db_view(w, get_db(w, p.Name))}
end

function M.ops.GetDatabases(w)
  local list = util.array()
  for _, n in ipairs(util.sorted_keys(w.glue.databases)) do
    list[#list + 1] = db_view(w, w.glue.databases[n])
  end
  return {DatabaseList = list}
end

function M.ops.CreateDatabase(w, p)
  local input = p.DatabaseInput
  if type(input) ~= "table" or not input.Name then
    error(util.fault("InvalidInputException", "DatabaseInput.Name is required"))
  end
  local name = input.Name:lower()
  if w.glue.databases[name] then
    error(util.fault("AlreadyExistsException", "Database already exists."))
  end
  w.glue.databases[name] = {Name = name, Description = input.Description,
    LocationUri = input.LocationUri, Parameters = input.Parameters, CreateTime = sim.now(),
    tables = {}}
  return util.object()
end

function M.ops.GetTable(w, p)
  local db = get_db(w, p.DatabaseName)
  local t = db.tables[(p.Name or ""):lower()]
  if not t then
    error(util.fault("EntityNotFoundException", "Table " .. tostring(p.Name) .. " not found."))
  end
  return {Table = table_view(w, t)}
end

function M.ops.GetTables(w, p)
  local db = get_db(w, p.DatabaseName)
  local list = util.array()
  for _, n in ipairs(util.sorted_keys(db.tables)) do
    if not p.Expression or n:match(p.Expression:gsub("%*", ".*")) then
      list[#list + 1] = table_view(w, db.tables[n])
    end
  end
  return {TableList = list}
end

function M.ops.CreateTable(w, p)
  local db = get_db(w, p.DatabaseName)
  local input = p.TableInput
  if type(input) ~= "table" or not input.Name then
    error(util.fault("InvalidInputException", "TableInput.Name is required"))
  end
  local name = input.Name:lower()
  if db.tables[name] then error(util.fault("AlreadyExistsException", "Table already exists.")) end
  local t = util.copy(input)
  t.Name, t.DatabaseName, t.CreateTime, t.UpdateTime = name, db.Name, sim.now(), sim.now()
  db.tables[name] = t
  return util.object()
end

function M.ops.DeleteTable(w, p)
  local db = get_db(w, p.DatabaseName)
  local name = (p.Name or ""):lower()
  if not db.tables[name] then
    error(util.fault("EntityNotFoundException", "Table " .. tostring(p.Name) .. " not found."))
  end
  db.tables[name] = nil
  return util.object()
end

return M
