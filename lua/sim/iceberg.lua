-- sim/iceberg.lua — Apache Iceberg tables in the simulator, laid out as Iceberg lays them out:
-- a Glue table whose Parameters.metadata_location names a metadata JSON file in S3 (format
-- version 2: snapshots with their parent, sequence number, summary and manifest list, the
-- snapshot log, current-snapshot-id), written anew on every commit. What a reader of the table
-- metadata sees is therefore what it would see on AWS: the pipeline reads its bookmark from
-- there, Athena's count is the current snapshot's total-records, and time travel to an older
-- snapshot finds it still listed.
--
-- The data is not Parquet: a snapshot's manifest list (JSON instead of Avro) names one data
-- file holding the table's rows as "key<TAB>digest" lines (sim.source's keys and digests), or
-- only a count when the rows came from a load with sizes and no source.
--
--   iceberg.load(w, db, name, count_only) -> table or nil: {glue, meta, location,
--                                rows = {key = digest}, anonymous = n, count = n} (rows are read
--                                from the data file unless count_only)
--   iceberg.property(meta, key) -> value, snapshot: the newest value of a summary property
--                                  among the current snapshot and its ancestors
--   iceberg.commit(w, db, name, rows, anonymous, summary, t, location) -> snapshot id
local json = require "json"
local util = require "sim.util"
local state = require "sim.state"

local M = {}

local function object(w, uri)
  local b, k = tostring(uri):match("^s3a?n?://([^/]+)/(.+)$")
  local bucket = b and w.s3.buckets[b]
  return bucket and bucket.objects[k], bucket, k
end

local function put(w, uri, body, t, ctype)
  local _, bucket, key = object(w, uri)
  if not bucket then error("no bucket for " .. uri) end
  bucket.objects[key] = {body = body, etag = util.etag(body), mtime = t, ctype = ctype}
end

local function snapshot_of(meta, id)
  for _, s in ipairs(meta.snapshots or {}) do
    if s["snapshot-id"] == id then return s end
  end
end

function M.current(meta)
  local id = meta["current-snapshot-id"]
  if id == nil or id == json.null or id == -1 then return nil end
  return snapshot_of(meta, id)
end

function M.property(meta, key)
  local s = M.current(meta)
  while s do
    local v = s.summary and s.summary[key]
    if v ~= nil and v ~= json.null then return v, s end
    local parent = s["parent-snapshot-id"]
    s = parent ~= nil and parent ~= json.null and snapshot_of(meta, parent) or nil
  end
  return nil
end

function M.load(w, dbname, name, count_only)
  local db = w.glue.databases[dbname]
  local g = db and db.tables[name]
  if not g then return nil end
  local loc = g.Parameters and g.Parameters.metadata_location
  local obj = loc and object(w, loc)
  if not obj then return {glue = g, rows = {}, anonymous = 0, count = 0} end
  local meta = json.decode(obj.body)
  local t = {glue = g, meta = meta, location = meta.location, rows = {}, anonymous = 0, count = 0}
  local snap = M.current(meta)
  if snap and not count_only then
    local ml = object(w, snap["manifest-list"])
    for _, f in ipairs(ml and json.decode(ml.body).data_files or {}) do
      local df = object(w, f.path)
      if df then
        local head, lines = df.body:match("^PAR1\n([^\n]*)\n(.*)PAR1$")
        local info = head and json.decode(head) or {}
        if info.lines then
          for k, h in lines:gmatch("([^\t\n]*)\t([^\n]*)\n") do t.rows[k] = h end
        else
          t.anonymous = t.anonymous + (info.rows or 0)
        end
      end
    end
  end
  if snap then t.count = tonumber(snap.summary and snap.summary["total-records"]) or 0 end
  return t
end

local function uuid(w)
  return state.next_id(w, "", 8, "0123456789abcdef") .. "-" .. state.next_id(w, "", 4, "0123456789abcdef")
    .. "-4" .. state.next_id(w, "", 3, "0123456789abcdef") .. "-8" ..
    state.next_id(w, "", 3, "0123456789abcdef") .. "-" .. state.next_id(w, "", 12, "0123456789abcdef")
end

-- commit: a new snapshot holding rows (+ anonymous rows counted only), summary merged into
-- Iceberg's own fields; the Glue table created or pointed at the new metadata file.
function M.commit(w, dbname, name, rows, anonymous, summary, t, location)
  local db = w.glue.databases[dbname]
  local g = db.tables[name]
  local old = g and M.load(w, dbname, name, true)
  local meta = old and old.meta
  location = (meta and meta.location) or location
  local lines = {}
  for k, h in pairs(rows) do lines[#lines + 1] = k .. "\t" .. h .. "\n" end
  local n = #lines + (anonymous or 0)
  local id = math.tointeger(tonumber(state.next_id(w, "", 18, "123456789")))
  local data_uri = string.format("%s/data/00000-0-%s.parquet", location, uuid(w))
  put(w, data_uri, "PAR1\n" .. json.encode({sim = "iceberg data", rows = n, lines = #lines > 0 or
    (anonymous or 0) == 0}) .. "\n" .. table.concat(lines) .. "PAR1", t, "application/octet-stream")
  local ml_uri = string.format("%s/metadata/snap-%d-1-%s.avro", location, id, uuid(w))
  put(w, ml_uri, json.encode({data_files = {{path = data_uri, records = n}}}), t,
    "application/octet-stream")
  if not meta then
    meta = {["format-version"] = 2, ["table-uuid"] = uuid(w), location = location,
            ["last-sequence-number"] = 0, ["current-snapshot-id"] = -1,
            snapshots = json.array({}), ["snapshot-log"] = json.array({}),
            ["metadata-log"] = json.array({}),
            properties = {["format-version"] = "2", ["write.merge.mode"] = "merge-on-read"}}
  end
  local prev = M.current(meta)
  local seq = (meta["last-sequence-number"] or 0) + 1
  local sum = {["total-records"] = tostring(n)}
  local before = old and old.count or 0
  sum["added-records"] = tostring(math.max(0, n - before))
  sum["deleted-records"] = tostring(math.max(0, before - n))
  for k, v in pairs(summary or {}) do sum[k] = v end
  local ms = math.floor(t * 1000)
  meta.snapshots[#meta.snapshots + 1] = {["snapshot-id"] = id, ["sequence-number"] = seq,
    ["parent-snapshot-id"] = prev and prev["snapshot-id"] or nil, ["timestamp-ms"] = ms,
    ["manifest-list"] = ml_uri, summary = sum, ["schema-id"] = 0}
  meta["snapshot-log"][#meta["snapshot-log"] + 1] = {["timestamp-ms"] = ms, ["snapshot-id"] = id}
  meta["current-snapshot-id"] = id
  meta["last-sequence-number"] = seq
  meta["last-updated-ms"] = ms
  local prev_loc = g and g.Parameters and g.Parameters.metadata_location
  if prev_loc then
    meta["metadata-log"][#meta["metadata-log"] + 1] = {["timestamp-ms"] = ms, ["metadata-file"] = prev_loc}
  end
  local meta_uri = string.format("%s/metadata/%05d-%s.metadata.json", location, seq, uuid(w))
  put(w, meta_uri, json.encode(meta), t, "application/json")
  if not g then
    g = {Name = name, DatabaseName = dbname, TableType = "EXTERNAL_TABLE", CreateTime = t,
         Parameters = {}, StorageDescriptor = {Location = location, Columns = util.array()}}
    db.tables[name] = g
  end
  g.UpdateTime = t
  g.Parameters.table_type = "ICEBERG"
  g.Parameters.previous_metadata_location = prev_loc
  g.Parameters.metadata_location = meta_uri
  return id
end

return M
