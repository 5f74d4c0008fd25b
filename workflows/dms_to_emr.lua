-- dms_to_emr — PostgreSQL -> S3 (AWS DMS) -> Iceberg in the Glue catalog (Spark on a transient
-- EMR cluster).
--
--   flowrun workflows/dms_to_emr.lua --vars-file workflows/config/example.json
--   flowrun workflows/dms_to_emr.lua --vars-file outputs.json --var mode=incremental
--
-- Two modes. mode = "full" (a full-load task, or a full reload): DMS loads every table, and
-- the Spark job replaces each Iceberg table's contents in one snapshot, so rows deleted at the
-- source go too. mode = "incremental" (a full-load-and-cdc task, run nightly): the first run
-- starts the task and loads as above; later runs leave the streaming task alone, check it is
-- healthy (running, no table in error, CDC latency under cdc_max_latency), and MERGE only the
-- CDC files DMS wrote since the last successful run, inserts, updates and deletes in commit
-- order. Where the last run stopped (the bookmark: the name of the last CDC file applied) is
-- kept in each Iceberg table's snapshot summary, committed with the data it describes: a run
-- that fails leaves it where it was, and re-running a succeeded interval changes nothing.
--
-- The Spark job runs on a transient EMR cluster (compute = "cluster") or on EMR Serverless
-- (compute = "serverless": an application given or found by name or created, a job run started
-- with a client token derived from the run and the task). The cluster is created, or the
-- application started, right after the pre-flight, while DMS loads (start_cluster = "early";
-- "after_dms" waits for the raw zone first). Cleanup tasks terminate the cluster, or stop the
-- application flowrun started (after cancelling a job run of this run still going), on every
-- path once they exist: success, failure of any later task (DMS included), Ctrl-C/SIGTERM. A DMS load this run started is stopped when the run is cancelled
-- during it. Operators find their earlier resources again, so `flowrun resume RUN_ID` after a
-- crash never creates a second cluster or step. A failed task is told to notify_topic_arn (SNS)
-- and/or notify_webhook (Slack-compatible; a secret parameter). Every setting is a parameter (a
-- vars file; `terraform output -json` works as it is).
--
-- Each task's `iam` option names the operators it calls on what, with the same parameters, so
-- that `flowrun iam workflows/dms_to_emr.lua --vars-file F` prints the policy its runs need
-- (the operators declare the actions of every path: failure, cancellation, resume).
local flow = require "flow"
local json = require "json"
local dms = require "dms"
local emr = require "emr"
local s3 = require "s3"
local glue = require "glue"
local athena = require "athena"
local secrets = require "secrets"
local iceberg = require "iceberg"
local emr_serverless = require "emr_serverless"
local notify = require "notify"
local D = require "aws.grants"

local REQUIRED = require("flow.workflow").REQUIRED
local here = (debug.getinfo(1, "S").source:match("^@(.*)$") or ""):match("^(.*)/[^/]*$") or "."

-- Retries are for transient trouble only (throttling, timeouts, 5xx): a task that failed for a
-- reason (a failed step, a missing table) fails the run at once.
local function transient(err) return type(err) == "table" and err.retryable == true end

local wf = flow.workflow {
  name = "dms_to_emr",
  defaults = {retry_if = transient},
  -- a failed task sends the run id, the task and its error (FailureDetails and the stderr tail
  -- for a Spark failure) to the topic and/or the webhook, when they are set
  on_failure = notify.on_failure{
    topic_arn = function(ctx) return ctx.params.notify_topic_arn end,
    webhook = function(ctx) return ctx.params.notify_webhook end,
  },
  params = {
    -- source
    source_secret_id = {default = "",
                        doc = "Secrets Manager secret of the source database (DMS style JSON)"},
    source_conninfo = {default = "", secret = true,
                       doc = "libpq conninfo of the source (instead of the secret)"},
    tables = {type = "table", required = true, doc = 'replicated tables, e.g. ["public.orders"]'},
    -- DMS
    mode = {default = "full", doc = "full (load and replace every table) | incremental (CDC)"},
    dms_task_arn = {required = true, doc = "the DMS replication task (to S3, Parquet)"},
    dms_load_type = {default = "reload-target",
                     doc = "full mode: start-replication | resume-processing | reload-target; " ..
                           "incremental mode: resume-processing restarts a stopped stream"},
    dms_timeout = {default = "6h"},
    dms_poll_every = {default = 15.0, doc = "seconds between DMS polls (botocore's waiter: 15)"},
    cdc_max_latency = {default = 600, doc = "incremental: highest CDC latency (seconds) accepted"},
    cdc_count_check = {default = false,
                       doc = "incremental: Athena counts must equal the source's (a quiet source)"},
    raw_uri = {required = true,
               doc = "s3://bucket/folder where the DMS target writes (BucketFolder)"},
    check_row_counts = {default = true, doc = "DMS FullLoadRows must equal the source counts"},
    -- job and catalog
    artifacts_uri = {required = true, doc = "s3://bucket/prefix for the Spark job script"},
    glue_database = {default = "lake"},
    warehouse_uri = {required = true, doc = "s3://bucket/prefix of the Iceberg warehouse"},
    -- compute
    compute = {default = "cluster", doc = "cluster (EMR on EC2) | serverless (EMR Serverless)"},
    start_cluster = {default = "early",
                     doc = "early (the cluster or application starts while DMS loads) | after_dms"},
    -- EMR Serverless (compute = serverless)
    serverless_application_id = {default = "", doc = "an existing application (else found by name or created)"},
    serverless_application_name = {default = "flowrun-dms-to-emr"},
    serverless_execution_role = {default = "", doc = "the job runs' IAM role (required for serverless)"},
    serverless_idle_minutes = {default = 15, doc = "auto-stop of an application flowrun creates"},
    -- EMR
    cluster_name = {default = "flowrun-dms-to-emr"},
    release_label = {default = "emr-7.1.0"},
    instance_type = {default = "m5.xlarge"},
    core_instances = {default = 2},
    log_uri = {required = true, doc = "s3://bucket/prefix for EMR logs"},
    service_role = {default = "EMR_DefaultRole"},
    job_flow_role = {default = "EMR_EC2_DefaultRole"},
    subnet_id = {default = ""},
    idle_timeout = {default = 3600, doc = "EMR auto-termination after idle seconds (a safety net)"},
    emr_poll_every = {default = 30.0, doc = "seconds between EMR polls (botocore's waiter: 30)"},
    cluster_timeout = {default = "30m"},
    step_timeout = {default = "3h"},
    step_log_wait = {default = 120, doc = "seconds to wait for a failed step's stderr in S3"},
    -- verification
    athena_workgroup = {default = "", doc = "when set, Iceberg row counts are checked with Athena"},
    athena_output_uri = {default = ""},
    -- failure notifications
    notify_topic_arn = {default = "", doc = "an SNS topic told about every failed task"},
    notify_webhook = {default = "", secret = true,
                      doc = "a Slack-compatible webhook URL told about every failed task"},
  },
}

local function split_name(full)
  local schema, name = full:match("^([^.]+)%.(.+)$")
  if not schema then return "public", full end
  return schema, name
end

local function quote_ident(s) return '"' .. s:gsub('"', '""') .. '"' end

local function prefix_uri(uri) return (uri:gsub("/*$", "/")) end

local function nonempty(s) return s ~= nil and s ~= "" and s or nil end

-- The snapshot summary property that holds a table's bookmark (the job writes it).
local BOOKMARK = "flowrun.raw-bookmark"

local CHOICES = {mode = {full = true, incremental = true},
                 start_cluster = {early = true, after_dms = true},
                 compute = {cluster = true, serverless = true}}

-- epoch seconds of a DMS date: a number (the JSON protocol), or ISO 8601 text (some emulators)
local function epoch(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then return nil end
  local y, mo, d, h, mi, sec = v:match("^(%d+)-(%d+)-(%d+)[T ](%d+):(%d+):(%d+%.?%d*)")
  if not y then return nil end
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y, mo = y - 1, mo + 12 end   -- days from civil (Howard Hinnant's algorithm)
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (mo - 3) + 2) // 5 + tonumber(d) - 1
  local days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

-- DMS names a CDC file by the time it writes it: yyyymmdd-hhmmssSSS.parquet
local function cdc_stamp(t)
  return os.date("!%Y%m%d-%H%M%S", math.floor(t)) .. string.format("%03d",
    math.floor((t - math.floor(t)) * 1000))
end

-- The raw files under a table's folder: load files (LOAD*.parquet) in key order, CDC files
-- in name order (= time order). rel is the key below the folder (date folders included).
local function raw_files(prefix)
  local loads, cdc = {}, {}
  local _, pkey = s3.parse(prefix)
  for _, o in ipairs(s3.list(prefix)) do
    local rel = o.key:sub(#pkey + 1)
    local name = rel:match("[^/]*$")
    if name:match("%.parquet$") then
      local f = {uri = o.uri, rel = rel, name = name}
      if name:match("^LOAD%x+%.parquet$") then loads[#loads + 1] = f else cdc[#cdc + 1] = f end
    end
  end
  table.sort(loads, function(a, b) return a.rel < b.rel end)
  table.sort(cdc, function(a, b) return a.rel < b.rel end)
  return loads, cdc
end

-- 1. Pre-flight: the source answers, every table exists; row counts, primary keys and column
-- types are recorded for the later checks and the Spark job.
wf:task("preflight", {retries = 2, retry_delay = "10s", timeout = "5m", iam = function(ctx)
  local p = ctx.params
  if nonempty(p.source_conninfo) then return {} end
  return secrets.iam.pg_conninfo(p.source_secret_id)
end}, function(ctx)
  local p = ctx.params
  for name, ok in pairs(CHOICES) do
    if not ok[p[name]] then
      local names = {}
      for k in pairs(ok) do names[#names + 1] = k end
      table.sort(names)
      error(flow.error("pipeline.config", string.format("%s must be one of %s, got %q", name,
        table.concat(names, ", "), tostring(p[name])), {retryable = false}))
    end
  end
  if p.compute == "serverless" and not nonempty(p.serverless_execution_role) then
    error(flow.error("pipeline.config", "compute = serverless needs serverless_execution_role",
      {retryable = false}))
  end
  local pg = require "pg"
  local conninfo = nonempty(p.source_conninfo)
  if not conninfo then
    if not nonempty(p.source_secret_id) then
      error(flow.error("pipeline.config", "set source_secret_id or source_conninfo",
        {retryable = false}))
    end
    conninfo = secrets.pg_conninfo(p.source_secret_id)
  end
  local conn = pg.connect(conninfo)
  local counts, keys, columns, missing = {}, {}, {}, {}
  local ok, err = pcall(function()
    for _, full in ipairs(p.tables) do
      local schema, name = split_name(full)
      local qualified = quote_ident(schema) .. "." .. quote_ident(name)
      local r = conn:query("SELECT to_regclass($1) IS NOT NULL AS present", qualified)
      if not r[1].present then
        missing[#missing + 1] = full
      else
        counts[full] = conn:query("SELECT count(*) AS n FROM " .. qualified)[1].n
        local pk = {}
        for _, row in ipairs(conn:query([[
            SELECT a.attname AS col FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = $1::regclass AND i.indisprimary
            ORDER BY array_position(i.indkey::int2[], a.attnum)]], qualified)) do
          pk[#pk + 1] = row.col
        end
        keys[full] = pk
        local cols = {}
        for _, row in ipairs(conn:query([[
            SELECT column_name AS name, data_type AS type,
                   numeric_precision AS p, numeric_scale AS s
            FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2
            ORDER BY ordinal_position]], schema, name)) do
          cols[#cols + 1] = {name = row.name, type = row.type,
                             precision = row.p ~= pg.null and row.p or nil,
                             scale = row.s ~= pg.null and row.s or nil}
        end
        columns[full] = cols
        ctx.log(string.format("%s: %d rows, primary key (%s)", full, counts[full],
          table.concat(pk, ", ")))
      end
    end
  end)
  conn:close()
  if not ok then error(err, 0) end
  if #missing > 0 then
    error(flow.error("pipeline.preflight", "tables missing in the source: " ..
      table.concat(missing, ", "), {retryable = false}))
  end
  for full, pk in pairs(keys) do
    if #pk == 0 then
      error(flow.error("pipeline.preflight", full .. " has no primary key: the job keeps the " ..
        "latest row per key, so every table needs one", {retryable = false}))
    end
  end
  return {counts = counts, keys = keys, columns = columns}
end)

-- 2-3. DMS. A full load (mode full, or the first incremental run) is started and waited for;
-- a task that already streams changes (incremental) is left alone and checked instead.
wf:task("start_dms", {after = "preflight", retries = 2, retry_delay = "30s",
  iam = function(ctx) return dms.iam.start_task(ctx.params.dms_task_arn) end}, function(ctx)
  local p = ctx.params
  local arn = p.dms_task_arn
  if p.mode == "incremental" then
    local task = dms.describe(arn)
    local st = task.Status
    if st == "running" or st == "starting" then
      ctx.log(string.format("DMS task %s is %s: its change stream is left alone",
        task.ReplicationTaskIdentifier, st))
      return {arn = arn, started = false, status = st, migration_type = task.MigrationType}
    end
    local kind
    if st == "ready" then
      kind = "start-replication"   -- the first run: the full load, then the stream
    elseif p.dms_load_type == "resume-processing" then
      kind = "resume-processing"
    else
      error(flow.error("pipeline.cdc_not_running", string.format("DMS task %s is %s%s%s: the " ..
        "change stream is not running. Resume it with --var dms_load_type=resume-processing, or " ..
        "reload every table with --var mode=full", task.ReplicationTaskIdentifier, st,
        task.StopReason and ("; StopReason: " .. task.StopReason) or "",
        nonempty(task.LastFailureMessage) and ("; LastFailureMessage: " .. task.LastFailureMessage)
          or ""), {retryable = false}))
    end
    local r = dms.start_task(arn, {type = kind, log = ctx.log})
    r.migration_type = task.MigrationType
    return r
  end
  local r = dms.start_task(arn, {type = p.dms_load_type, log = ctx.log})
  r.migration_type = dms.describe(arn).MigrationType
  return r
end)

wf:task("wait_dms", {after = "start_dms", iam = function(ctx)
  local p = ctx.params
  return D.join(p.mode == "incremental" and dms.iam.check_cdc(p.dms_task_arn) or nil,
    dms.iam.wait_task(p.dms_task_arn, {stop_on_cancel = true}))
end}, function(ctx)
  local p = ctx.params
  local started = ctx.results.start_dms
  local cdc_task = started.migration_type ~= "full-load"
  local task, latency, loaded
  if p.mode == "incremental" and not started.started then
    task, latency = dms.check_cdc(p.dms_task_arn, {max_latency = p.cdc_max_latency, log = ctx.log})
    loaded = false
  else
    -- progress carries the status lines; the poller's own log would repeat them. A load this
    -- run started is stopped if the run is cancelled while it waits.
    task = dms.wait_task(p.dms_task_arn, {
      timeout = p.dms_timeout, every = p.dms_poll_every, cdc = cdc_task,
      progress = ctx.progress, stop_on_cancel = started.started == true, log = function() end})
    loaded = p.mode == "full" or started.type ~= "resume-processing"
  end
  local s = task.ReplicationTaskStats or {}
  return {status = task.Status, stop_reason = task.StopReason, tables_loaded = s.TablesLoaded,
          elapsed_ms = s.ElapsedTimeMillis, loaded = loaded, cdc_latency = latency,
          full_load_start = epoch(s.FullLoadStartDate)}
end)

-- 4. The raw zone: Parquet under each table's prefix; after a load, DMS's row counts equal the
-- source's.
wf:task("check_raw", {after = "wait_dms", retries = 2, retry_delay = "30s", iam = function(ctx)
  local p = ctx.params
  return D.join(s3.iam.list(D.under(p.raw_uri)),
    p.check_row_counts and dms.iam.table_statistics(p.dms_task_arn) or nil)
end}, function(ctx)
  local p = ctx.params
  local pre = ctx.results.preflight
  local empty, files = {}, {}
  for _, full in ipairs(p.tables) do
    local schema, name = split_name(full)
    local objs = s3.list(prefix_uri(p.raw_uri) .. schema .. "/" .. name .. "/")
    local n = 0
    for _, o in ipairs(objs) do if o.key:match("%.parquet$") then n = n + 1 end end
    files[full] = n
    if n == 0 then empty[#empty + 1] = full end
  end
  if #empty > 0 then
    error(flow.error("pipeline.raw_missing", "no Parquet files in the raw zone for: " ..
      table.concat(empty, ", ") .. " (under " .. p.raw_uri .. ")", {retryable = false}))
  end
  local loaded = {}
  if p.check_row_counts and ctx.results.wait_dms.loaded then
    for _, st in ipairs(dms.table_statistics(p.dms_task_arn)) do
      loaded[st.SchemaName .. "." .. st.TableName] = st.FullLoadRows
    end
    local bad = {}
    for _, full in ipairs(p.tables) do
      local want, got = pre.counts[full], loaded[full]
      if got ~= want then
        bad[#bad + 1] = string.format("%s (source %s, DMS %s)", full, tostring(want), tostring(got))
      end
    end
    if #bad > 0 then
      error(flow.error("pipeline.row_count_mismatch", "DMS full load rows differ from the " ..
        "source: " .. table.concat(bad, "; "), {retryable = false}))
    end
  end
  return {files = files, rows = loaded}
end)

-- 5. The Spark job goes to S3 (editing the job is editing the file: it is sent on every run).
wf:task("upload_job", {after = "preflight", retries = 2, retry_delay = "10s", iam = function(ctx)
  return s3.iam.put_file(prefix_uri(ctx.params.artifacts_uri) .. "jobs/raw_to_iceberg.py")
end}, function(ctx)
  local base = prefix_uri(ctx.params.artifacts_uri)
  local script = s3.put_file(base .. "jobs/raw_to_iceberg.py", here .. "/jobs/raw_to_iceberg.py")
  return {script = script.uri}
end)

wf:task("glue_database", {after = "preflight", retries = 2, retry_delay = "10s",
  iam = function(ctx) return glue.iam.ensure_database(ctx.params.glue_database) end}, function(ctx)
  return glue.ensure_database(ctx.params.glue_database,
    {description = "Iceberg tables loaded by flowrun dms_to_emr"})
end)

-- 6. The batch: for each table, its bookmark read from its Iceberg metadata, and the raw files
-- the job is to apply. A load takes the load files and the changes DMS wrote since that load
-- started; a merge takes the CDC files after the bookmark. Written with the table types and
-- keys as this run's job configuration.
wf:task("plan", {after = {"check_raw", "glue_database"}, retries = 2, retry_delay = "30s",
  iam = function(ctx)
    local p = ctx.params
    local g = D.join(s3.iam.list(D.under(p.raw_uri)),
      s3.iam.put(prefix_uri(p.artifacts_uri) .. "runs/*"))
    for _, full in ipairs(p.tables) do
      local _, name = split_name(full)
      g = D.join(g, iceberg.iam.metadata(p.glue_database, name:lower(),
                                         {location = D.under(p.warehouse_uri)}))
    end
    return g
  end},
  function(ctx)
  local p = ctx.params
  local pre, dmsr = ctx.results.preflight, ctx.results.wait_dms
  local batch, summary, empty = {}, {}, true
  for _, full in ipairs(p.tables) do
    local schema, name = split_name(full)
    local target = name:lower()
    local loads, cdc = raw_files(prefix_uri(p.raw_uri) .. schema .. "/" .. name .. "/")
    local meta = iceberg.metadata(p.glue_database, target)
    local bookmark = meta and iceberg.snapshot_property(meta, BOOKMARK)
    local b
    if p.mode == "incremental" and bookmark ~= nil and not dmsr.loaded then
      local files, last = {}, bookmark
      for _, f in ipairs(cdc) do
        if f.rel > bookmark then files[#files + 1] = f.uri; last = f.rel end
      end
      b = {action = #files > 0 and "merge" or "none", files = files, since = bookmark,
           ["until"] = last}
    else
      local files, last = {}, ""
      for _, f in ipairs(loads) do files[#files + 1] = f.uri end
      -- changes captured from the start of the load on (an older CDC file is covered by it)
      local from = dmsr.full_load_start and cdc_stamp(dmsr.full_load_start)
      for _, f in ipairs(cdc) do
        if not from or f.name >= from then files[#files + 1] = f.uri end
        if f.rel > last then last = f.rel end
      end
      b = {action = "load", files = files, since = bookmark or json.null, ["until"] = last}
    end
    b.target = target
    batch[full] = b
    summary[full] = {action = b.action, files = #b.files, since = b.since, ["until"] = b["until"]}
    ctx.log(string.format("%s: %s, %d file(s)%s", full, b.action, #b.files,
      b.action == "merge" and string.format(" after %s, up to %s",
        bookmark == "" and "the load" or bookmark, b["until"]) or ""))
    if b.action ~= "none" then empty = false end
  end
  local config = prefix_uri(p.artifacts_uri) .. "runs/" .. ctx.run_id .. "/job-config.json"
  s3.put(config, json.encode({version = 2, run_id = ctx.run_id, mode = p.mode,
                              bookmark_property = BOOKMARK, tables = batch, keys = pre.keys,
                              columns = pre.columns}), {content_type = "application/json"})
  if empty then ctx.log("nothing new since the last run: no Spark job this time") end
  return {config = config, tables = summary, empty = empty}
end)

-- 7. The cluster: Spark, Glue Data Catalog as metastore, Iceberg enabled. Created at once
-- (start_cluster = early: it boots while DMS loads), or by wait_cluster once the raw zone is
-- good (after_dms: a DMS failure costs no cluster).
local function create_cluster(ctx)
  local p = ctx.params
  local instances = {
    KeepJobFlowAliveWhenNoSteps = true, TerminationProtected = false,
    InstanceGroups = {
      {Name = "Primary", InstanceRole = "MASTER", InstanceType = p.instance_type, InstanceCount = 1,
       Market = "ON_DEMAND"},
      {Name = "Core", InstanceRole = "CORE", InstanceType = p.instance_type,
       InstanceCount = p.core_instances, Market = "ON_DEMAND"},
    },
  }
  if nonempty(p.subnet_id) then instances.Ec2SubnetId = p.subnet_id end
  local spec = {
    Name = p.cluster_name, ReleaseLabel = p.release_label, LogUri = p.log_uri,
    Applications = {{Name = "Spark"}},
    ServiceRole = p.service_role, JobFlowRole = p.job_flow_role, VisibleToAllUsers = true,
    Instances = instances,
    AutoTerminationPolicy = {IdleTimeout = p.idle_timeout},
    Configurations = {
      {Classification = "iceberg-defaults", Properties = {["iceberg.enabled"] = "true"}},
      {Classification = "spark-hive-site", Properties = {
        ["hive.metastore.client.factory.class"] =
          "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"}},
    },
  }
  -- tagged as create_cluster's whichever task makes it: the cleanup finds it by that tag
  return emr.create_cluster(spec, {run_id = ctx.run_id, task = "create_cluster",
                                   workflow = ctx.workflow, log = ctx.log})
end

-- what create_cluster needs: the roles it hands EMR, and the tag its clusters carry
local function create_cluster_iam(ctx)
  local p = ctx.params
  return emr.iam.create_cluster({ServiceRole = p.service_role, JobFlowRole = p.job_flow_role},
                                {workflow = ctx.workflow})
end

local function on_cluster(ctx) return ctx.params.compute == "cluster" end

wf:task("create_cluster", {after = "preflight", retries = 3, retry_delay = "20s", iam = function(ctx)
  if not on_cluster(ctx) or ctx.params.start_cluster ~= "early" then return {} end
  return create_cluster_iam(ctx)
end}, function(ctx)
  if ctx.params.compute ~= "cluster" then return {skipped = true} end
  if ctx.params.start_cluster == "after_dms" then
    ctx.log("start_cluster = after_dms: the cluster is created once the raw zone is good")
    return {deferred = true}
  end
  return create_cluster(ctx)
end)

local function cluster_id(ctx)
  local c = ctx.results.create_cluster
  local w = ctx.results.wait_cluster
  return (c and c.cluster_id) or (w and w.cluster_id)
end

wf:task("wait_cluster", {after = {"create_cluster", "check_raw", "plan"}, iam = function(ctx)
  if not on_cluster(ctx) then return {} end
  return D.join(emr.iam.wait_cluster(D.tagged(ctx.workflow)),
    ctx.params.start_cluster == "after_dms" and create_cluster_iam(ctx) or nil)
end}, function(ctx)
  if ctx.results.create_cluster.skipped then return {skipped = true} end
  local id = cluster_id(ctx)
  if ctx.results.plan.empty then
    -- nothing to apply: an early cluster is not waited for (the cleanup terminates it now)
    return {cluster_id = id, skipped = true}
  end
  if not id then id = create_cluster(ctx).cluster_id end
  local c = emr.wait_cluster(id, {timeout = ctx.params.cluster_timeout,
                                  every = ctx.params.emr_poll_every, log = ctx.log})
  return {cluster_id = id, state = c.Status.State}
end)

-- 8-9. The Spark step.
local SPARK_CONF = function(p)
  return {
    ["spark.sql.extensions"] = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    ["spark.sql.catalog.glue_catalog"] = "org.apache.iceberg.spark.SparkCatalog",
    ["spark.sql.catalog.glue_catalog.catalog-impl"] = "org.apache.iceberg.aws.glue.GlueCatalog",
    ["spark.sql.catalog.glue_catalog.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO",
    ["spark.sql.catalog.glue_catalog.warehouse"] = p.warehouse_uri,
  }
end

local function job_args(ctx)
  local p = ctx.params
  local args = {"--raw-uri", p.raw_uri, "--database", p.glue_database,
                "--warehouse", p.warehouse_uri, "--config", ctx.results.plan.config,
                "--run-id", ctx.run_id}
  for _, full in ipairs(p.tables) do
    args[#args + 1] = "--table"
    args[#args + 1] = full .. ":" .. table.concat(ctx.results.preflight.keys[full], "+")
  end
  return args
end

wf:task("add_step", {after = {"wait_cluster", "plan", "upload_job"}, retries = 2,
                     retry_delay = "30s", iam = function(ctx)
  return on_cluster(ctx) and emr.iam.add_steps(D.tagged(ctx.workflow)) or {}
end}, function(ctx)
  if ctx.results.wait_cluster.skipped or ctx.results.plan.empty then return {skipped = true} end
  local step = emr.spark_step{
    name = "raw_to_iceberg " .. ctx.run_id, script = ctx.results.upload_job.script,
    args = job_args(ctx), conf = SPARK_CONF(ctx.params),
  }
  local ids = emr.add_steps(cluster_id(ctx), {step}, {log = ctx.log})
  return {step_id = ids[1]}
end)

wf:task("wait_step", {after = "add_step", iam = function(ctx)
  if not on_cluster(ctx) then return {} end
  return emr.iam.wait_step(D.tagged(ctx.workflow), nil, {log_uri = ctx.params.log_uri})
end}, function(ctx)
  if ctx.results.add_step.skipped then return {skipped = true} end
  local step = emr.wait_step(cluster_id(ctx), ctx.results.add_step.step_id, {
    timeout = ctx.params.step_timeout, every = ctx.params.emr_poll_every, log = ctx.log,
    log_wait = ctx.params.step_log_wait})
  local tl = step.Status.Timeline or {}
  return {state = step.Status.State,
          seconds = tl.EndDateTime and tl.StartDateTime and (tl.EndDateTime - tl.StartDateTime)}
end)

-- 10. Cleanup: terminate the cluster whatever happened after its creation (a DMS failure, a
-- failed step, Ctrl-C). When no task recorded it (killed in the middle), it is found by its
-- tags.
wf:task("terminate_cluster", {after = {"create_cluster", "wait_cluster", "wait_step"},
                              cleanup = true, undoes = "create_cluster", retries = 5,
                              retry_delay = "20s", iam = function(ctx)
  if not on_cluster(ctx) then return {} end
  local mine = D.tagged(ctx.workflow)
  return D.join(emr.iam.find_cluster{cluster = mine}, emr.iam.terminate(mine))
end}, function(ctx)
  if ctx.params.compute ~= "cluster" then return {terminated = false} end
  local id = cluster_id(ctx)
  if not id then
    local found = emr.find_cluster{run_id = ctx.run_id, task = "create_cluster"}
    id = found and found.Id
  end
  if not id then
    ctx.log("no cluster was created: nothing to terminate")
    return {terminated = false}
  end
  local st = emr.terminate(id, {every = ctx.params.emr_poll_every, log = ctx.log})
  return {cluster_id = id, state = st, terminated = true}
end)

-- 8-9'. EMR Serverless: the application (given, found by name, or created) is started while DMS
-- loads (start_cluster = early) or once the raw zone is good; the job run is started once per
-- run and task (client token), waited for, cancelled when the run is.
local function serverless_conf(p)
  local c = SPARK_CONF(p)
  c["spark.jars"] = "/usr/share/aws/iceberg/lib/iceberg-spark3-runtime.jar"
  c["spark.hadoop.hive.metastore.client.factory.class"] =
    "com.amazonaws.glue.catalog.metastore.AWSGlueDataCatalogHiveClientFactory"
  return c
end

local function serverless_app_id(ctx) return nonempty(ctx.params.serverless_application_id) end

wf:task("serverless_app", {after = "preflight", retries = 3, retry_delay = "20s", iam = function(ctx)
  if ctx.params.compute ~= "serverless" then return {} end
  local id = serverless_app_id(ctx)
  return D.join(emr_serverless.iam.ensure_application{id = id},
    ctx.params.start_cluster == "early" and emr_serverless.iam.start_application(id) or nil)
end}, function(ctx)
  local p = ctx.params
  if p.compute ~= "serverless" then return {skipped = true} end
  local app = emr_serverless.ensure_application({id = nonempty(p.serverless_application_id),
    name = p.serverless_application_name, release_label = p.release_label,
    idle_minutes = p.serverless_idle_minutes,
    tags = {[emr_serverless.TAG_RUN] = ctx.run_id}}, {log = ctx.log})
  local started = false
  if p.start_cluster == "early" then
    started = emr_serverless.start_application(app.id, {log = ctx.log})
  end
  return {application_id = app.id, created = app.created, started = started}
end)

wf:task("start_job", {after = {"serverless_app", "plan", "upload_job"}, retries = 2,
                      retry_delay = "30s", iam = function(ctx)
  if ctx.params.compute ~= "serverless" then return {} end
  local id = serverless_app_id(ctx)
  return D.join(emr_serverless.iam.start_application(id), emr_serverless.iam.start_job_run(id,
    {execution_role = ctx.params.serverless_execution_role}))
end}, function(ctx)
  local p = ctx.params
  local app = ctx.results.serverless_app
  if app.skipped or ctx.results.plan.empty then return {skipped = true} end
  local started_app = false
  if not app.started then
    started_app = emr_serverless.start_application(app.application_id, {log = ctx.log})
  end
  local r = emr_serverless.start_job_run(app.application_id, {
    name = "raw_to_iceberg " .. ctx.run_id, execution_role = p.serverless_execution_role,
    entry_point = ctx.results.upload_job.script, args = job_args(ctx), conf = serverless_conf(p),
    log_uri = p.log_uri,
    timeout_minutes = math.max(5, math.ceil(require("flow.duration").parse(p.step_timeout) / 60)),
  -- the token makes a lost answer's retry land on the same job run; a job run of this run that
  -- is still going (or succeeded) is found by its name first. After a cleanup cancelled it, a
  -- resumed run starts a new one: the attempt is in the token.
  }, {token = emr_serverless.client_token(ctx.run_id, ctx.task .. "#" .. ctx.attempt), log = ctx.log})
  r.started_app = started_app
  return r
end)

wf:task("wait_job", {after = "start_job", iam = function(ctx)
  if ctx.params.compute ~= "serverless" then return {} end
  return emr_serverless.iam.wait_job_run(serverless_app_id(ctx), nil,
    {log_uri = ctx.params.log_uri, workflow = ctx.workflow})
end}, function(ctx)
  local s = ctx.results.start_job
  if s.skipped then return {skipped = true} end
  local run = emr_serverless.wait_job_run(s.application_id, s.job_run_id, {
    timeout = ctx.params.step_timeout, every = ctx.params.emr_poll_every, log = ctx.log,
    log_wait = ctx.params.step_log_wait})
  return {state = run.state, seconds = run.totalExecutionDurationSeconds}
end)

-- Cleanup: an application this run started is stopped (after a job run of this run that is
-- still going is cancelled: nothing waits for it any more); one it found running is left so.
wf:task("stop_app", {after = {"serverless_app", "start_job", "wait_job"}, cleanup = true,
                     undoes = "start_job", retries = 5, retry_delay = "20s", iam = function(ctx)
  if ctx.params.compute ~= "serverless" then return {} end
  local id = serverless_app_id(ctx)
  local runs = {workflow = ctx.workflow, cancel = true, job_runs = true}
  return D.join(emr_serverless.iam.find_job_run(id),
    emr_serverless.iam.wait_job_run_done(id, nil, runs), emr_serverless.iam.stop_application(id, runs))
end}, function(ctx)
  local app, job = ctx.results.serverless_app, ctx.results.start_job
  if not app or app.skipped then return {stopped = false} end
  local runs = {}
  if job and job.job_run_id then runs[1] = job.job_run_id
  else
    local found = emr_serverless.find_job_run(app.application_id, "raw_to_iceberg " .. ctx.run_id)
    if found then runs[1] = found.id end
  end
  if not (app.started or (job and job.started_app)) then
    for _, id in ipairs(runs) do
      emr_serverless.wait_job_run_done(app.application_id, id, {cancel = true, log = ctx.log,
                                                                every = ctx.params.emr_poll_every})
    end
    ctx.log("EMR Serverless application " .. app.application_id ..
      " was not started by this run: left as it is")
    return {stopped = false}
  end
  local st = emr_serverless.stop_application(app.application_id, {job_runs = runs, cancel = true,
    every = ctx.params.emr_poll_every, log = ctx.log})
  return {stopped = true, state = st}
end)

-- 11. The Iceberg tables are in Glue; with Athena, their row counts equal the source's (in the
-- incremental mode only with cdc_count_check: a live source moves on while the run runs).
wf:task("verify", {after = {"wait_step", "wait_job"}, retries = 2, retry_delay = "30s", iam = function(ctx)
  local p = ctx.params
  local g, tables = {}, {}
  for _, full in ipairs(p.tables) do
    local _, name = split_name(full)
    g = D.join(g, glue.iam.get_table(p.glue_database, name:lower()))
    tables[#tables + 1] = {p.glue_database, name:lower()}
  end
  if nonempty(p.athena_workgroup) then
    g = D.join(g, athena.iam.query(nil, {workgroup = p.athena_workgroup,
      output_location = nonempty(p.athena_output_uri), tables = tables,
      data = D.under(p.warehouse_uri)}))
  end
  return g
end}, function(ctx)
  local p = ctx.params
  local strict = p.mode == "full" or p.cdc_count_check
  local out, bad = {}, {}
  for _, full in ipairs(p.tables) do
    local _, name = split_name(full)
    local tname = name:lower()
    local t = glue.get_table(p.glue_database, tname)
    if not t or not glue.is_iceberg(t) then
      bad[#bad + 1] = p.glue_database .. "." .. tname ..
        (t and " is not an Iceberg table" or " is missing")
    else
      out[full] = {table = p.glue_database .. "." .. tname}
      if nonempty(p.athena_workgroup) then
        local sql = string.format('SELECT count(*) AS n FROM "%s"."%s"', p.glue_database, tname)
        local rows = athena.query(sql, {workgroup = p.athena_workgroup,
                                        output_location = nonempty(p.athena_output_uri),
                                        log = ctx.log})
        local n = tonumber(rows[1] and rows[1].n)
        local want = ctx.results.preflight.counts[full]
        out[full].rows = n
        ctx.log(string.format("%s.%s: %s rows in Iceberg (Athena), %s in the source", p.glue_database,
          tname, tostring(n), tostring(want)))
        if n ~= want then
          local msg = string.format("%s.%s has %s rows, the source %s", p.glue_database, tname,
            tostring(n), tostring(want))
          if strict then
            bad[#bad + 1] = msg
          else
            ctx.log(msg .. " (changes in flight; cdc_count_check = true makes this a failure)")
          end
        end
      end
    end
  end
  if #bad > 0 then
    error(flow.error("pipeline.verify", table.concat(bad, "; "), {retryable = false}))
  end
  return out
end)

return wf
