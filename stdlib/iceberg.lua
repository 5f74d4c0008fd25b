-- iceberg — reading an Apache Iceberg table's metadata as any Iceberg reader does: the Glue
-- table's Parameters.metadata_location names the current metadata JSON file in S3, which lists
-- the snapshots (with their parent and summary) and which one is current.
--
--   local iceberg = require "iceberg"
--   local meta = iceberg.metadata("lake", "orders")      -- nil when the table does not exist
--   local snap = iceberg.current_snapshot(meta)          -- nil for a table without data yet
--   local v, s = iceberg.snapshot_property(meta, "flowrun.raw-bookmark")
--
-- snapshot_property walks from the current snapshot through its ancestors and returns the
-- newest value of a summary property: a property committed with the data moves with it, also
-- when the table is rolled back to an older snapshot. Errors: the table's metadata file missing
-- or unreadable is iceberg.metadata (not retryable); S3 and Glue errors are raised as they are.
local json = require "json"
local glue = require "glue"
local s3 = require "s3"
local operator = require "flow.operator"

local M = {}

-- IAM: the table from Glue, its metadata file from S3 (opts.location: where the table's files
-- are, e.g. declare.under(warehouse_uri); a metadata file that is missing reads as AccessDenied
-- without s3:ListBucket there).
M.iam = {}
function M.iam.metadata(database, name, opts)
  local D = require "aws.grants"
  return D.join(glue.iam.get_table(database, name),
    opts and opts.location and s3.iam.get(opts.location) or nil)
end

-- metadata(database, table) -> metadata (the decoded JSON), glue table; nil when the table
-- does not exist in Glue. A Glue table that is not Iceberg raises iceberg.metadata.
function M.metadata(database, name)
  local t = glue.get_table(database, name)
  if not t then return nil end
  local loc = t.Parameters and t.Parameters.metadata_location
  if not glue.is_iceberg(t) or not loc then
    error(operator.fail("iceberg.metadata", string.format("%s.%s is not an Iceberg table " ..
      "(no metadata_location in Glue)", database, name)), 2)
  end
  local ok, body = pcall(s3.get, loc)
  if not ok then
    if type(body) == "table" and body.code == "aws.NoSuchKey" then
      error(operator.fail("iceberg.metadata", string.format("%s.%s: its metadata file %s " ..
        "does not exist", database, name, loc)), 2)
    end
    error(body, 0)
  end
  if body:sub(1, 2) == "\31\139" then   -- write.metadata.compression-codec=gzip
    local text, gerr = require("zlib").gunzip(body)
    if not text then
      error(operator.fail("iceberg.metadata", string.format("%s.%s: %s is gzip that cannot be read "
        .. "(%s)", database, name, loc, tostring(gerr and gerr.message or gerr))), 2)
    end
    body = text
  end
  local okj, meta = pcall(json.decode, body)
  if not okj or type(meta) ~= "table" then
    error(operator.fail("iceberg.metadata", string.format("%s.%s: %s is not Iceberg metadata " ..
      "JSON", database, name, loc)), 2)
  end
  return meta, t
end

local function snapshot_by_id(meta, id)
  for _, s in ipairs(meta.snapshots or {}) do
    if s["snapshot-id"] == id then return s end
  end
end

local function present(v) return v ~= nil and v ~= json.null end

function M.current_snapshot(meta)
  local id = meta["current-snapshot-id"]
  if not present(id) or id == -1 then return nil end
  return snapshot_by_id(meta, id)
end

-- snapshot_property(meta, key) -> value, snapshot; nil when no snapshot in the current
-- snapshot's history carries key.
function M.snapshot_property(meta, key)
  local s, seen = M.current_snapshot(meta), {}
  while s and not seen[s] do
    seen[s] = true
    local v = s.summary and s.summary[key]
    if present(v) then return v, s end
    local parent = s["parent-snapshot-id"]
    s = present(parent) and snapshot_by_id(meta, parent) or nil
  end
  return nil
end

return M
