-- sim/athena.lua — Athena in the simulator: queries go QUEUED -> RUNNING -> SUCCEEDED in a few
-- seconds. It understands what a pipeline checks: SELECT count(*) FROM db.table (the count of
-- an Iceberg table: its current snapshot's total-records, read from its metadata file as
-- Athena reads the table; for a table registered without metadata, the rows DMS loaded for its
-- source table) and SELECT <integer>; other SQL fails the way Athena reports an unsupported
-- statement.
local util = require "sim.util"
local state = require "sim.state"
local sim = require "sim"

local M = {ops = {}}

M.required = {
  StartQueryExecution = {"QueryString"},
  GetQueryExecution = {"QueryExecutionId"},
  GetQueryResults = {"QueryExecutionId"},
  StopQueryExecution = {"QueryExecutionId"},
}

local function source_rows(w, src)
  for _, task in pairs(w.dms.tasks) do
    local n = task.sim_tables and task.sim_tables[src]
    if n then return n end
  end
  return 0
end

-- Plan the query's outcome when it is submitted: columns and rows, or an error.
local function evaluate(w, sql, db, output)
  local s = sql:gsub("%s+", " "):gsub("^ ", ""):gsub(" ?;? ?$", "")
  local lower = s:lower()
  local n = lower:match("^select (%-?%d+)$")
  if n then return {columns = {"_col0"}, types = {"integer"}, rows = {{n}}} end
  local alias, target = "_col0", lower:match("^select count%(%*%) from ([%w_.\"`]+)$")
  if not target then
    alias, target = lower:match("^select count%(%*%) as \"?([%w_]+)\"? from ([%w_.\"`]+)$")
  end
  if target then
    target = target:gsub("[\"`]", "")
    local tdb, tname = target:match("^([%w_]+)%.([%w_]+)$")
    if not tdb then tdb, tname = db, target end
    local gdb = tdb and w.glue.databases[tdb]
    local t = gdb and gdb.tables[tname]
    if not t then
      return {error = string.format("TABLE_NOT_FOUND: line 1:22: Table 'awsdatacatalog.%s.%s' " ..
        "does not exist", tostring(tdb), tostring(tname)), error_type = 1006}
    end
    local ice = require("sim.iceberg").load(w, tdb, tname, true)
    -- Athena reads the catalog and the table, and writes the results, with the caller's
    -- permissions: a query the caller may not run that way fails
    local denied = require("sim.iam").athena_access(w, tdb, tname,
      t.Parameters and t.Parameters.metadata_location, output)
    if denied then
      return {error = "Permission denied on S3 or Glue: " .. denied, error_type = 1004}
    end
    local n = ice and ice.meta and ice.count or source_rows(w, t.sim_source)
    return {columns = {alias}, types = {"bigint"}, rows = {{tostring(n)}}}
  end
  return {error = "NOT_SUPPORTED: the simulator answers SELECT count(*) FROM db.table and " ..
    "SELECT <integer> only", error_type = 1001}
end

local function advance(w, q, now)
  local d = w.durations.athena_query
  if q.Status.State == "QUEUED" and now >= q.sim_start + d / 3 then q.Status.State = "RUNNING" end
  if q.Status.State == "RUNNING" and now >= q.sim_start + d then
    q.Status.CompletionDateTime = q.sim_start + d
    if q.sim_result.error then
      q.Status.State = "FAILED"
      q.Status.StateChangeReason = q.sim_result.error
      q.Status.AthenaError = {ErrorCategory = 2, ErrorType = q.sim_result.error_type,
                              Retryable = false, ErrorMessage = q.sim_result.error}
    else
      q.Status.State = "SUCCEEDED"
      q.Statistics = {EngineExecutionTimeInMillis = math.floor(d * 800),
                      TotalExecutionTimeInMillis = math.floor(d * 1000), DataScannedInBytes = 0}
    end
  end
end

local function get(w, id)
  local q = w.athena.queries[id or ""]
  if not q then
    error(util.fault("InvalidRequestException", "QueryExecution " .. tostring(id) ..
      " was not found", 400))
  end
  advance(w, q, sim.now())
  return q
end

local function view(q)
  local out = {}
  for k, v in pairs(q) do if not k:match("^sim_") then out[k] = util.copy(v) end end
  return out
end

function M.ops.StartQueryExecution(w, p)
  local now = sim.now()
  w.athena.tokens = w.athena.tokens or {}
  local earlier = p.ClientRequestToken and w.athena.tokens[p.ClientRequestToken]
  if earlier then return {QueryExecutionId = earlier} end   -- idempotent, as Athena is
  local id = state.next_id(w, "", 8, "0123456789abcdef") .. "-5a1e-4e0e-9a0e-" ..
    state.next_id(w, "", 12, "0123456789abcdef")
  local ctx = p.QueryExecutionContext or {}
  local out = (p.ResultConfiguration or {}).OutputLocation
  w.athena.queries[id] = {
    QueryExecutionId = id, Query = p.QueryString, StatementType = "DML",
    QueryExecutionContext = {Database = ctx.Database, Catalog = ctx.Catalog or "AwsDataCatalog"},
    ResultConfiguration = {OutputLocation = out and (out:gsub("/$", "") .. "/" .. id .. ".csv")},
    WorkGroup = p.WorkGroup or "primary",
    Status = {State = "QUEUED", SubmissionDateTime = now},
    sim_start = now, sim_result = evaluate(w, p.QueryString, ctx.Database,
      out and (out:gsub("/$", "") .. "/" .. id .. ".csv")),
  }
  if p.ClientRequestToken then w.athena.tokens[p.ClientRequestToken] = id end
  return {QueryExecutionId = id}
end

function M.ops.GetQueryExecution(w, p)
  return {QueryExecution = view(get(w, p.QueryExecutionId))}
end

function M.ops.StopQueryExecution(w, p)
  local q = get(w, p.QueryExecutionId)
  if q.Status.State == "QUEUED" or q.Status.State == "RUNNING" then
    q.Status.State = "CANCELLED"
    q.Status.CompletionDateTime = sim.now()
  end
  return util.object()
end

function M.ops.GetQueryResults(w, p)
  local q = get(w, p.QueryExecutionId)
  if q.Status.State ~= "SUCCEEDED" then
    error(util.fault("InvalidRequestException", "Query has not yet finished. Current state: " ..
      q.Status.State))
  end
  local denied = require("sim.iam").athena_results(w, q.ResultConfiguration.OutputLocation)
  if denied then error(denied) end
  local r = q.sim_result
  local all = {}
  local header = {}
  for _, c in ipairs(r.columns) do header[#header + 1] = {VarCharValue = c} end
  all[1] = {Data = header}
  for _, row in ipairs(r.rows) do
    local data = {}
    for _, v in ipairs(row) do data[#data + 1] = {VarCharValue = v} end
    all[#all + 1] = {Data = data}
  end
  local start = tonumber(p.NextToken or "0") or 0
  local max = p.MaxResults or 1000
  local rows = util.array()
  for i = start + 1, math.min(#all, start + max) do rows[#rows + 1] = all[i] end
  local cols = util.array()
  for i, c in ipairs(r.columns) do
    cols[#cols + 1] = {Name = c, Label = c, Type = r.types[i], CatalogName = "hive",
                       Nullable = "UNKNOWN", CaseSensitive = false}
  end
  return {UpdateCount = 0, ResultSet = {Rows = rows, ResultSetMetadata = {ColumnInfo = cols}},
          NextToken = start + max < #all and tostring(start + max) or nil}
end

return M
