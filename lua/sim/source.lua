-- sim/source.lua — how the simulated DMS reads its source database: the source endpoint's
-- connection (its Secrets Manager secret, PostgreSQLSettings.SecretsManagerSecretId, as DMS
-- reads it, or the endpoint's own ServerName/Port/DatabaseName/Username/Password), the tables
-- its table mappings select, and each table's rows reduced to what the simulator needs: the
-- primary key and a digest of the row. Real PostgreSQL through `pg`: the demo's and the
-- tests' source is a real database, so the simulated load copies what is really there.
--
--   source.conninfo(w, endpoint) -> libpq keyword table, or nil, why
--   source.read(w, task) -> {["schema.table"] = {rows = n, lines = "key\tdigest\n..."}}
--                           or nil, error message (as DMS would put it in LastFailureMessage)
--
-- A snapshot's lines come in no order; a key is the primary key's columns as text joined with
-- "|" (the whole row's md5 for a table without one), a digest PostgreSQL's hashtext of the
-- row's text in hex. parse()/diff() turn two snapshots into DMS's I/U/D rows.
local json = require "json"

local M = {}

local function secret_json(w, id)
  for name, s in pairs(w.secrets) do
    if name == id or s.ARN == id or s.ARN:gsub("%-%w%w%w%w%w%w$", "") == id then
      local ok, v = pcall(json.decode, s.SecretString or "")
      if ok and type(v) == "table" then return v end
      return nil, "secret " .. id .. " is not a JSON object"
    end
  end
  return nil, "Secrets Manager can't find the specified secret " .. tostring(id)
end

function M.conninfo(w, ep)
  if not ep then return nil, "the task's source endpoint does not exist" end
  local settings = ep.PostgreSQLSettings or {}
  if settings.SecretsManagerSecretId then
    local s, err = secret_json(w, settings.SecretsManagerSecretId)
    if not s then return nil, err end
    return require("pg").conninfo_table(s)
  end
  if ep.ServerName then
    return {host = ep.ServerName, port = ep.Port and tostring(math.tointeger(ep.Port) or ep.Port),
            dbname = ep.DatabaseName, user = ep.Username, password = ep.Password}
  end
  return nil, "the source endpoint has neither a secret nor a server name"
end

-- DMS selection rules: "%" is a wildcard in schema and table names; excludes win.
local function like(pattern, s)
  local parts = {}
  for piece in (pattern .. "%"):gmatch("([^%%]*)%%") do
    parts[#parts + 1] = piece:gsub("[%^%$%(%)%.%[%]%*%+%-%?%%]", "%%%0")
  end
  return s:match("^" .. table.concat(parts, ".*") .. "$") ~= nil
end

local function selected(mappings, schema, name)
  local inc = false
  for _, r in ipairs(mappings.rules or {}) do
    local loc = r["object-locator"] or {}
    if r["rule-type"] == "selection" and like(loc["schema-name"] or "%", schema)
      and like(loc["table-name"] or "%", name) then
      if r["rule-action"] == "exclude" then return false end
      if r["rule-action"] == "include" or r["rule-action"] == "explicit" then inc = true end
    end
  end
  return inc
end

local function qi(s) return '"' .. s:gsub('"', '""') .. '"' end

local function snapshot(conn, schema, name)
  local rel = qi(schema) .. "." .. qi(name)
  local pk = {}
  for _, r in ipairs(conn:query([[
      SELECT a.attname AS col FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indrelid = $1::regclass AND i.indisprimary
      ORDER BY array_position(i.indkey::int2[], a.attnum)]], rel)) do
    pk[#pk + 1] = "t." .. qi(r.col) .. "::text"
  end
  local key = #pk > 0 and ("concat_ws('|', " .. table.concat(pk, ", ") .. ")")
    or "md5(t::text)"
  -- one row back, the table folded into one text: cheap to carry and to compare (unsorted:
  -- sorting 36,000 rows doubled the time of the demo's load)
  local r = conn:query("SELECT count(*) AS n, coalesce(string_agg(k || E'\\t' || h, E'\\n'), " ..
    "'') AS lines FROM (SELECT " .. key .. " AS k, to_hex(hashtext(t::text)) AS h FROM " ..
    rel .. " AS t) s")[1]
  return {rows = r.n, lines = r.lines ~= "" and (r.lines .. "\n") or ""}
end

-- read(w, task) -> snapshots of every table the task's mappings select, or nil, message.
function M.read(w, task)
  local ci, why = M.conninfo(w, w.dms.endpoints[task.SourceEndpointArn])
  if not ci then return nil, "Failed to connect to the source endpoint: " .. why end
  local okm, mappings = pcall(json.decode, task.TableMappings or "{}")
  if not okm or type(mappings) ~= "table" then return nil, "Invalid table mappings" end
  local pg = require "pg"
  local okc, conn = pcall(pg.connect, ci)
  if not okc then
    local flow = require "flow"
    if flow.cancelled(conn) then error(conn, 0) end
    return nil, "Failed to connect to the source database: " ..
      tostring(type(conn) == "table" and conn.message or conn)
  end
  local ok, out = pcall(function()
    local res = {}
    for _, r in ipairs(conn:query([[
        SELECT table_schema AS s, table_name AS t FROM information_schema.tables
        WHERE table_type = 'BASE TABLE'
          AND table_schema NOT IN ('pg_catalog', 'information_schema')
        ORDER BY 1, 2]])) do
      if selected(mappings, r.s, r.t) then res[r.s .. "." .. r.t] = snapshot(conn, r.s, r.t) end
    end
    return res
  end)
  conn:close()
  if not ok then
    local flow = require "flow"
    if flow.cancelled(out) then error(out, 0) end
    return nil, "Error reading the source: " .. tostring(type(out) == "table" and out.message or out)
  end
  return out
end

-- parse(lines) -> {key = digest}
function M.parse(lines)
  local m = {}
  for k, h in (lines or ""):gmatch("([^\t\n]*)\t([^\n]*)\n") do m[k] = h end
  return m
end

-- diff(old_lines, new_lines) -> list of {op, key, digest}: deletes, then updates and inserts,
-- each in key order (the order DMS would have seen them is unknowable from two snapshots).
function M.diff(old_lines, new_lines)
  local old, new = M.parse(old_lines), M.parse(new_lines)
  local out = {}
  local keys = {}
  for k in pairs(old) do if new[k] == nil then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = {"D", k, old[k]} end
  keys = {}
  for k, h in pairs(new) do if old[k] ~= h then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do out[#out + 1] = {old[k] and "U" or "I", k, new[k]} end
  return out
end

return M
