-- dms_to_emr — PostgreSQL -> S3 (AWS DMS full load) -> Iceberg in the Glue catalog (Spark
-- step on a transient EMR cluster).
--
--   flowrun workflows/dms_to_emr.lua --vars-file workflows/config/example.json
--   flowrun workflows/dms_to_emr.lua --vars-file outputs.json
--
-- Every setting is a parameter (a vars file; `terraform output -json` works as it is).
-- The EMR cluster is terminated by a cleanup task on every path once it exists: success,
-- failure of any later task, Ctrl-C/SIGTERM. Operators find their earlier resources again, so
-- `flowrun resume RUN_ID` after a crash never creates a second cluster or step.
local flow = require "flow"
local json = require "json"
local dms = require "dms"
local emr = require "emr"
local s3 = require "s3"
local glue = require "glue"
local athena = require "athena"
local secrets = require "secrets"

local REQUIRED = require("flow.workflow").REQUIRED
local here = (debug.getinfo(1, "S").source:match("^@(.*)$") or ""):match("^(.*)/[^/]*$") or "."

-- Retries are for transient trouble only (throttling, timeouts, 5xx): a task that failed for a
-- reason (a failed step, a missing table) fails the run at once.
local function transient(err) return type(err) == "table" and err.retryable == true end

local wf = flow.workflow {
  name = "dms_to_emr",
  defaults = {retry_if = transient},
  params = {
    -- source
    source_secret_id = {default = "",
                        doc = "Secrets Manager secret of the source database (DMS style JSON)"},
    source_conninfo = {default = "", secret = true,
                       doc = "libpq conninfo of the source (instead of the secret)"},
    tables = {type = "table", required = true, doc = 'replicated tables, e.g. ["public.orders"]'},
    -- DMS
    dms_task_arn = {required = true, doc = "the DMS replication task (full load to S3, Parquet)"},
    dms_load_type = {default = "reload-target",
                     doc = "start-replication | resume-processing | reload-target"},
    dms_timeout = {default = "6h"},
    dms_poll_every = {default = 15.0, doc = "seconds between DMS polls (botocore's waiter: 15)"},
    dms_cdc = {default = false,
               doc = "a full-load-and-cdc task: go on once its full load is complete"},
    raw_uri = {required = true,
               doc = "s3://bucket/folder where the DMS target writes (BucketFolder)"},
    check_row_counts = {default = true, doc = "DMS FullLoadRows must equal the source counts"},
    -- job and catalog
    artifacts_uri = {required = true, doc = "s3://bucket/prefix for the Spark job script"},
    glue_database = {default = "lake"},
    warehouse_uri = {required = true, doc = "s3://bucket/prefix of the Iceberg warehouse"},
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

-- 1. Pre-flight: the source answers, every table exists; row counts, primary keys and column
-- types are recorded for the later checks and the Spark job.
wf:task("preflight", {retries = 2, retry_delay = "10s", timeout = "5m"}, function(ctx)
  local p = ctx.params
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

-- 2-3. The DMS full load.
wf:task("start_dms", {after = "preflight", retries = 2, retry_delay = "30s"}, function(ctx)
  return dms.start_task(ctx.params.dms_task_arn, {type = ctx.params.dms_load_type, log = ctx.log})
end)

wf:task("wait_dms", {after = "start_dms"}, function(ctx)
  -- progress carries the status lines; the poller's own log would repeat them
  local task = dms.wait_task(ctx.params.dms_task_arn, {
    timeout = ctx.params.dms_timeout, every = ctx.params.dms_poll_every, cdc = ctx.params.dms_cdc,
    progress = ctx.progress,
    log = function() end})
  local s = task.ReplicationTaskStats or {}
  return {status = task.Status, stop_reason = task.StopReason, tables_loaded = s.TablesLoaded,
          elapsed_ms = s.ElapsedTimeMillis}
end)

-- 4. The raw zone: Parquet under each table's prefix; DMS's row counts equal the source's.
wf:task("check_raw", {after = "wait_dms", retries = 2, retry_delay = "30s"}, function(ctx)
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
  if p.check_row_counts then
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

-- 5. The Spark job and its per-run configuration go to S3.
wf:task("upload_job", {after = "preflight", retries = 2, retry_delay = "10s"}, function(ctx)
  local p = ctx.params
  local base = prefix_uri(p.artifacts_uri)
  local script = s3.put_file(base .. "jobs/raw_to_iceberg.py", here .. "/jobs/raw_to_iceberg.py")
  local config = base .. "runs/" .. ctx.run_id .. "/job-config.json"
  s3.put(config, json.encode({tables = p.tables, keys = ctx.results.preflight.keys,
                              columns = ctx.results.preflight.columns}),
    {content_type = "application/json"})
  return {script = script.uri, config = config}
end)

wf:task("glue_database", {after = "preflight", retries = 2, retry_delay = "10s"}, function(ctx)
  return glue.ensure_database(ctx.params.glue_database,
    {description = "Iceberg tables loaded by flowrun dms_to_emr"})
end)

-- 6. The cluster: Spark, Glue Data Catalog as metastore, Iceberg enabled. Created only once
-- the raw zone is good (a DMS failure costs no cluster).
wf:task("create_cluster", {after = {"check_raw", "upload_job", "glue_database"}, retries = 3,
                           retry_delay = "20s"}, function(ctx)
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
  return emr.create_cluster(spec, {ctx = ctx, log = ctx.log})
end)

wf:task("wait_cluster", {after = "create_cluster"}, function(ctx)
  local c = emr.wait_cluster(ctx.results.create_cluster.cluster_id,
    {timeout = ctx.params.cluster_timeout, every = ctx.params.emr_poll_every, log = ctx.log})
  return {state = c.Status.State}
end)

-- 7-8. The Spark step.
wf:task("add_step", {after = "wait_cluster", retries = 2, retry_delay = "30s"}, function(ctx)
  local p = ctx.params
  local args = {"--raw-uri", p.raw_uri, "--database", p.glue_database,
                "--warehouse", p.warehouse_uri, "--config", ctx.results.upload_job.config,
                "--run-id", ctx.run_id}
  for _, full in ipairs(p.tables) do
    args[#args + 1] = "--table"
    args[#args + 1] = full .. ":" .. table.concat(ctx.results.preflight.keys[full], "+")
  end
  local step = emr.spark_step{
    name = "raw_to_iceberg " .. ctx.run_id, script = ctx.results.upload_job.script, args = args,
    conf = {
      ["spark.sql.extensions"] = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
      ["spark.sql.catalog.glue_catalog"] = "org.apache.iceberg.spark.SparkCatalog",
      ["spark.sql.catalog.glue_catalog.catalog-impl"] = "org.apache.iceberg.aws.glue.GlueCatalog",
      ["spark.sql.catalog.glue_catalog.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO",
      ["spark.sql.catalog.glue_catalog.warehouse"] = p.warehouse_uri,
    },
  }
  local ids = emr.add_steps(ctx.results.create_cluster.cluster_id, {step}, {log = ctx.log})
  return {step_id = ids[1]}
end)

wf:task("wait_step", {after = "add_step"}, function(ctx)
  local step = emr.wait_step(ctx.results.create_cluster.cluster_id, ctx.results.add_step.step_id, {
    timeout = ctx.params.step_timeout, every = ctx.params.emr_poll_every, log = ctx.log,
    log_wait = ctx.params.step_log_wait})
  local tl = step.Status.Timeline or {}
  return {state = step.Status.State,
          seconds = tl.EndDateTime and tl.StartDateTime and (tl.EndDateTime - tl.StartDateTime)}
end)

-- 9. Cleanup: terminate the cluster whatever happened after its creation (and on Ctrl-C).
-- When create_cluster never recorded its result (killed in the middle), the cluster is found
-- by its tags.
wf:task("terminate_cluster", {after = {"create_cluster", "wait_step"}, cleanup = true, retries = 5,
                              retry_delay = "20s"}, function(ctx)
  local created = ctx.results.create_cluster
  local id = created and created.cluster_id
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

-- 10. The Iceberg tables are in Glue; with Athena, their row counts equal the source's.
wf:task("verify", {after = "wait_step", retries = 2, retry_delay = "30s"}, function(ctx)
  local p = ctx.params
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
        out[full].rows = n
        ctx.log(string.format("%s.%s: %s rows in Iceberg (Athena), %s in the source", p.glue_database,
          tname, tostring(n), tostring(ctx.results.preflight.counts[full])))
        if n ~= ctx.results.preflight.counts[full] then
          bad[#bad + 1] = string.format("%s.%s has %s rows, the source %s", p.glue_database, tname,
            tostring(n), tostring(ctx.results.preflight.counts[full]))
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
