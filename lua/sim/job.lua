-- sim/job.lua — what workflows/jobs/raw_to_iceberg.py does, done by the simulator when an EMR
-- step or an EMR Serverless job run that runs it completes: it reads the job's arguments
-- (--database D, --warehouse W, --config s3://..., --run-id R, --table schema.name:pk ...) and
-- the batch the pipeline wrote into the config, and applies it to the simulated Iceberg tables
-- (sim.iceberg) with the job's rules:
--   action "load":  the table's contents replaced (one snapshot) by the load files' rows, then
--                   the CDC files' changes in order;
--   action "merge": the CDC files' I/U/D rows applied in order to the table as it is, provided
--                   the table's bookmark is the batch's "since" (a batch already committed, the
--                   bookmark at its "until", is skipped; any other bookmark fails the job);
--   action "none":  nothing.
-- Each commit carries the batch's "until" as the snapshot summary property the config names.
-- A job without a batch in its config only registers its tables in Glue (older pipelines).
--
--   job.run(w, args, t) -> true | false, stderr text, failure message
local json = require "json"
local util = require "sim.util"
local state = require "sim.state"
local iceberg = require "sim.iceberg"

local M = {}

function M.parse_args(args)
  local a = {tables = {}}
  for i = 1, #args do
    local k, v = args[i], args[i + 1]
    if k == "--database" then a.database = v
    elseif k == "--table" then a.tables[#a.tables + 1] = v
    elseif k == "--warehouse" then a.warehouse = v
    elseif k == "--config" then a.config = v
    elseif k == "--run-id" then a.run_id = v
    elseif k == "--raw-uri" then a.raw_uri = v end
  end
  return a
end

local function object(w, uri)
  local b, k = tostring(uri):match("^s3a?n?://([^/]+)/(.+)$")
  local bucket = b and w.s3.buckets[b]
  return bucket and bucket.objects[k]
end

-- Without a batch: the tables registered in Glue as Iceberg tables, as the job's first versions
-- did (and the stdlib's tests of EMR steps expect).
local function register(w, a, t)
  local gdb = a.database and w.glue.databases[a.database]
  if not gdb then return end
  for _, spec in ipairs(a.tables) do
    local src, pk = spec:match("^([^:]+):?(.*)$")
    local name = (src:match("%.(.+)$") or src):lower()
    local location = (a.warehouse or "s3://warehouse"):gsub("/$", "") .. "/" .. a.database ..
      ".db/" .. name
    local existing = gdb.tables[name]
    gdb.tables[name] = {
      Name = name, DatabaseName = a.database, TableType = "EXTERNAL_TABLE",
      CreateTime = existing and existing.CreateTime or t, UpdateTime = t,
      Parameters = {
        table_type = "ICEBERG",
        metadata_location = string.format("%s/metadata/%05d-%s.metadata.json", location,
          (existing and 1 or 0), state.next_id(w, "", 8, "0123456789abcdef")),
        ["flowrun.source"] = src, ["flowrun.primary_key"] = pk ~= "" and pk or nil,
      },
      StorageDescriptor = {Location = location, Columns = util.array()},
      sim_source = src,
    }
  end
end

local Failed = {}

local function fail(fmt, ...) error(setmetatable({msg = string.format(fmt, ...)}, Failed), 0) end

-- rows of a raw file: a load file's "key\tdigest" lines, a CDC file's "Op\tkey\tdigest\tts"
local function apply_file(w, uri, tbl)
  local o = object(w, uri)
  if not o then
    fail("pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does " ..
      "not exist: %s", uri)
  end
  local head, body = o.body:match("^PAR1\n([^\n]*)\n(.*)PAR1$")
  local ok, info = pcall(json.decode, head or "")
  if not ok or type(info) ~= "table" then fail("%s is not a Parquet file the job can read", uri) end
  if info.sim == "dms full load" then
    if not info.lines then tbl.anonymous = tbl.anonymous + (info.rows or 0) end
    for k, h in body:gmatch("([^\t\n]*)\t([^\n]*)\n") do tbl.rows[k] = h end
  elseif info.sim == "dms cdc" then
    for op, k, h in body:gmatch("(%u)\t([^\t\n]*)\t([^\t\n]*)\t[^\n]*\n") do
      if op == "D" then tbl.rows[k] = nil else tbl.rows[k] = h end
    end
  else
    fail("%s is not a DMS file", uri)
  end
end

local function run_batch(w, a, cfg, t)
  local prop = cfg.bookmark_property or "flowrun.raw-bookmark"
  if not w.glue.databases[a.database] then
    -- CREATE NAMESPACE IF NOT EXISTS
    w.glue.databases[a.database] = {Name = a.database, CreateTime = t, tables = {}}
  end
  local log = {}
  for _, full in ipairs(util.sorted_keys(cfg.tables)) do
    local b = cfg.tables[full]
    local name = b.target or (full:match("%.(.+)$") or full):lower()
    local cur = iceberg.load(w, a.database, name, b.action ~= "merge")
    local bookmark = cur and cur.meta and iceberg.property(cur.meta, prop)
    local since = b.since ~= json.null and b.since or nil
    local action = b.action
    if action == "merge" and not cur then
      fail("flowrun.job.NoTable: %s.%s does not exist: a merge needs the table a load made",
        a.database, name)
    end
    if action == "merge" and bookmark ~= since then
      if bookmark ~= nil and bookmark == b["until"] then
        action = "skip"
        log[#log + 1] = string.format("%s: batch up to %s already committed, skipped", full, bookmark)
      else
        fail("flowrun.job.BookmarkMoved: %s.%s is at bookmark %s, the batch starts at %s: " ..
          "another run moved it", a.database, name, tostring(bookmark), tostring(since))
      end
    end
    if action == "load" or action == "merge" then
      local tbl = {rows = {}, anonymous = 0}
      if action == "merge" then tbl.rows, tbl.anonymous = cur.rows, cur.anonymous end
      for _, uri in ipairs(b.files or {}) do apply_file(w, uri, tbl) end
      local location = (a.warehouse or "s3://warehouse"):gsub("/$", "") .. "/" .. a.database ..
        ".db/" .. name
      iceberg.commit(w, a.database, name, tbl.rows, tbl.anonymous,
        {operation = "overwrite", [prop] = b["until"] ~= json.null and b["until"] or "",
         ["flowrun.run-id"] = a.run_id, ["flowrun.action"] = action}, t, location)
      log[#log + 1] = string.format("%s: %s of %d file(s) committed", full, action, #(b.files or {}))
    end
  end
  return log
end

function M.run(w, args, t)
  local a = M.parse_args(args)
  local cfg
  if a.config then
    local o = object(w, a.config)
    if not o then
      return false, "java.io.FileNotFoundException: " .. a.config .. "\n",
        "the job configuration " .. a.config .. " does not exist"
    end
    local ok, v = pcall(json.decode, o.body)
    cfg = ok and type(v) == "table" and v or nil
  end
  if not (cfg and type(cfg.tables) == "table" and next(cfg.tables) and not cfg.tables[1]) then
    register(w, a, t)
    return true
  end
  local ok, res = pcall(run_batch, w, a, cfg, t)
  if ok then return true end
  if getmetatable(res) ~= Failed then error(res, 0) end
  return false, table.concat({
    "24/01/01 00:00:00 INFO SparkContext: Running Spark version 3.5.0-amzn-0",
    "Traceback (most recent call last):",
    '  File "raw_to_iceberg.py", line 1, in <module>',
    res.msg,
    "24/01/01 00:00:07 INFO ShutdownHookManager: Shutdown hook called",
  }, "\n") .. "\n", res.msg
end

return M
