-- athena — Amazon Athena queries for workflows.
--
--   local athena = require "athena"
--   local rows = athena.query("SELECT count(*) AS n FROM lake.orders",
--                             {workgroup = "primary", database = "lake"})
--   rows[1].n, rows.columns -> {"n"}
--
-- query starts the query, polls it, then pages through the results; values come back as
-- strings (as Athena gives them). A failed query raises athena.query_failed with Athena's
-- reason; cancelling the waiting task stops the query.
local flow = require "flow"

local M = {}

local function aws() return require "aws" end

-- IAM: the workgroup's query actions (a cancelled or timed-out wait stops the query); and what
-- Athena does with the caller's own permissions: the output location written and read back,
-- the queried tables in Glue (opts.tables = {{database, table}, ...}) and their files in S3
-- (opts.data: an s3:// pattern).
M.iam = {}
function M.iam.query(sql, opts)
  opts = opts or {}
  local D = require "aws.grants"
  local wg = D.arn("athena", "workgroup/" .. (opts.workgroup or "primary"))
  local g = D.grant("AthenaWorkgroup", {"athena:StartQueryExecution", "athena:GetQueryExecution",
    "athena:GetQueryResults", "athena:StopQueryExecution"}, wg)
  if opts.output_location then
    local out = D.under(opts.output_location)
    g = D.join(g, D.grant("AthenaResults", "s3:GetBucketLocation", D.s3_bucket(out)),
      D.grant("AthenaResults", {"s3:PutObject", "s3:GetObject"}, D.s3_object(out)))
  else
    g = D.join(g, D.note("the workgroup's own output location is written and read with the " ..
      "caller's permissions: grant s3:PutObject, s3:GetObject and s3:GetBucketLocation there"))
  end
  local glue, s3 = require "glue", require "s3"
  for _, t in ipairs(opts.tables or {}) do
    g = D.join(g, glue.iam.get_database(t[1]), glue.iam.get_table(t[1], t[2]))
  end
  if opts.data then g = D.join(g, s3.iam.get(opts.data)) end
  return g
end

-- query(sql, opts) -> rows (list of {column = value}), rows.columns, rows.query_id.
-- opts: database, catalog, workgroup, output_location, every (1 s, backing off to 10 s),
-- timeout (30 min), log.
function M.query(sql, opts)
  opts = opts or {}
  if type(sql) ~= "string" then error("athena.query: expected SQL text", 2) end
  -- the token makes the client's retries of a start whose answer was lost start one query
  local token = {}
  for i = 1, 32 do token[i] = string.format("%x", math.random(0, 15)) end
  local params = {QueryString = sql, WorkGroup = opts.workgroup,
                  ClientRequestToken = opts.token or table.concat(token)}
  if opts.database or opts.catalog then
    params.QueryExecutionContext = {Database = opts.database, Catalog = opts.catalog}
  end
  if opts.output_location then params.ResultConfiguration = {OutputLocation = opts.output_location} end
  local id = aws().athena.start_query_execution(params).QueryExecutionId
  local ok, err = pcall(flow.poll, function()
    local q = aws().athena.get_query_execution{QueryExecutionId = id}.QueryExecution
    local st = q.Status.State
    if st == "SUCCEEDED" then return q end
    if st == "FAILED" or st == "CANCELLED" then
      error(flow.error("athena.query_failed", string.format("Athena query %s %s: %s", id, st,
        q.Status.StateChangeReason or "no reason given"),
        {retryable = false, query_id = id, state = st}), 0)
    end
    return nil, st
  end, {every = opts.every or 1, backoff = 1.5, max_every = 10,
        timeout = opts.timeout or 30 * 60, name = "Athena query " .. id, log = opts.log})
  if not ok then
    if flow.cancelled(err) or flow.is_error(err, "flow.timeout") then
      flow.shield(function()
        local sok, serr = pcall(function() aws().athena.stop_query_execution{QueryExecutionId = id} end)
        if not sok then
          require("flow.operator").log(opts, "Athena query " .. id .. ": stop failed: " .. tostring(serr))
        end
      end)
    end
    error(err, 0)
  end
  local rows, columns, first = {}, nil, true
  for r in aws().paginate("athena", "GetQueryResults", {QueryExecutionId = id}) do
    local rs = r.ResultSet or {}
    if not columns then
      columns = {}
      for i, c in ipairs(rs.ResultSetMetadata and rs.ResultSetMetadata.ColumnInfo or {}) do
        columns[i] = c.Label or c.Name
      end
    end
    for i, row in ipairs(rs.Rows or {}) do
      local vals = {}
      for j, d in ipairs(row.Data or {}) do vals[j] = d.VarCharValue end
      -- a SELECT's first row repeats the column labels
      local header = first and i == 1
      if header then
        for j, c in ipairs(columns) do if vals[j] ~= c then header = false end end
      end
      if not header then
        local rec = {}
        for j, c in ipairs(columns) do rec[c] = vals[j] end
        rows[#rows + 1] = rec
      end
    end
    first = false
  end
  rows.columns, rows.query_id = columns, id
  return rows
end

return M
