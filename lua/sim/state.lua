-- sim/state.lua — the simulator's world: building it from seeds, and turning it into JSON and
-- back for the state file (object bodies are binary, so they travel as base64; strings over
-- 64 KiB, such as raw files and table data, are spilled to files of their own beside it, written
-- once, so that rewriting the state after each call stays cheap).
--
-- A seed (a file given by FLOWRUN_SIM_SEED, or the default world below) looks like:
--   { "account": "123456789012", "region": "us-east-1",
--     "durations": { "dms_start": 45, ... },
--     "dms": { "instances": [ {ReplicationInstanceArn, ReplicationInstanceIdentifier} ],
--              "endpoints": [ {EndpointArn, EndpointIdentifier, EndpointType, EngineName,
--                              S3Settings = {BucketName, BucketFolder},
--                              PostgreSQLSettings = {SecretsManagerSecretId}} ],
--              "tasks": [ {ReplicationTaskArn, ReplicationTaskIdentifier, SourceEndpointArn,
--                          TargetEndpointArn, ReplicationInstanceArn, MigrationType,
--                          TableMappings (JSON text or object),
--                          "Tables": {"schema.table": rows}} ] },
--       (a task's source is read through its source endpoint, as DMS reads it: its secret or
--        its server; "Tables" gives sizes instead, for a world without a database)
--     "emr_serverless": { "applications": [ {name, releaseLabel, type, state} ] },
--     "sns": { "topics": ["name", ...] },
--     "s3": { "buckets": ["name", ...] or {"name": {"objects": {"key": "text body"}}} },
--     "glue": { "databases": ["name", ...] },
--     "secrets": [ {"Name": ..., "SecretString": ...} or {"Name": ..., "SecretJSON": {...}} ] }
-- Items of a later seed replace those of an earlier one with the same id.
local json = require "json"
local util = require "sim.util"

local M = {}

-- Durations in seconds: in the range AWS shows for a small cluster and a small database.
M.default_durations = {
  dms_start = 60,              -- starting -> running
  dms_rows_per_second = 2000,  -- per table being loaded
  dms_min_table = 20,          -- the least a table takes
  dms_parallel_tables = 8,     -- MaxFullLoadSubTasks
  dms_stop = 20,               -- stopping -> stopped
  emr_starting = 330,          -- STARTING -> BOOTSTRAPPING
  emr_bootstrapping = 120,     -- BOOTSTRAPPING -> WAITING
  emr_step = 240,              -- a step's RUNNING time, plus per table after the first:
  emr_step_per_table = 20,
  emr_step_pending = 10,       -- PENDING before RUNNING on an idle cluster
  emr_cancel = 15,             -- CANCEL_PENDING -> CANCELLED
  emr_terminating = 75,        -- TERMINATING -> TERMINATED
  athena_query = 3,            -- QUEUED/RUNNING -> SUCCEEDED
  dms_cdc_interval = 60,       -- a CDC task captures the source's changes at most this often
  dms_cdc_latency = 5,         -- CDCLatencySource/Target reported to CloudWatch
  serverless_app_start = 90,   -- EMR Serverless application STARTING -> STARTED
  serverless_app_stop = 30,    -- STOPPING -> STOPPED
  serverless_scheduling = 40,  -- job run SUBMITTED -> PENDING -> SCHEDULED -> RUNNING
  serverless_job = 240,        -- a job run's RUNNING time, plus per table after the first:
  serverless_job_per_table = 20,
  serverless_cancel = 15,      -- CANCELLING -> CANCELLED
}

M.default_seed = {
  account = "123456789012",
  region = "us-east-1",
  dms = {
    endpoints = {
      {
        EndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOSOURCE000000000",
        EndpointIdentifier = "flowrun-demo-source", EndpointType = "SOURCE",
        EngineName = "postgres", DatabaseName = "shop",
        -- DMS reads the same secret the pipeline's pre-flight reads
        PostgreSQLSettings = {SecretsManagerSecretId = "flowrun/demo/source-db",
                              SecretsManagerAccessRoleArn =
                                "arn:aws:iam::123456789012:role/flowrun-demo-dms-secrets"},
      },
      {
        EndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOTARGET000000000",
        EndpointIdentifier = "flowrun-demo-raw", EndpointType = "TARGET", EngineName = "s3",
        S3Settings = {BucketName = "flowrun-demo-raw", BucketFolder = "raw",
                      DataFormat = "parquet", ServiceAccessRoleArn =
                        "arn:aws:iam::123456789012:role/flowrun-demo-dms-s3"},
      },
      {
        EndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOCDCTARGET00000",
        EndpointIdentifier = "flowrun-demo-raw-cdc", EndpointType = "TARGET", EngineName = "s3",
        S3Settings = {BucketName = "flowrun-demo-raw", BucketFolder = "cdc",
                      DataFormat = "parquet", TimestampColumnName = "dms_commit_ts",
                      ServiceAccessRoleArn = "arn:aws:iam::123456789012:role/flowrun-demo-dms-s3"},
      },
    },
    instances = {
      {ReplicationInstanceArn = "arn:aws:dms:us-east-1:123456789012:rep:FLOWRUNDEMOINSTANCE000000",
       ReplicationInstanceIdentifier = "flowrun-demo", ReplicationInstanceClass = "dms.t3.medium"},
    },
    tasks = {
      {
        ReplicationTaskArn = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000",
        ReplicationTaskIdentifier = "flowrun-demo-full-load",
        SourceEndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOSOURCE000000000",
        TargetEndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOTARGET000000000",
        ReplicationInstanceArn = "arn:aws:dms:us-east-1:123456789012:rep:FLOWRUNDEMOINSTANCE000000",
        MigrationType = "full-load",
        TableMappings = {rules = {{
          ["rule-type"] = "selection", ["rule-id"] = "1", ["rule-name"] = "public",
          ["object-locator"] = {["schema-name"] = "public", ["table-name"] = "%"},
          ["rule-action"] = "include",
        }}},
      },
      {
        ReplicationTaskArn = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOCDCTASK0000000",
        ReplicationTaskIdentifier = "flowrun-demo-cdc",
        SourceEndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOSOURCE000000000",
        TargetEndpointArn = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOCDCTARGET00000",
        ReplicationInstanceArn = "arn:aws:dms:us-east-1:123456789012:rep:FLOWRUNDEMOINSTANCE000000",
        MigrationType = "full-load-and-cdc",
        TableMappings = {rules = {{
          ["rule-type"] = "selection", ["rule-id"] = "1", ["rule-name"] = "public",
          ["object-locator"] = {["schema-name"] = "public", ["table-name"] = "%"},
          ["rule-action"] = "include",
        }}},
      },
    },
  },
  sns = {topics = {"flowrun-demo-alerts"}},
  s3 = {buckets = {"flowrun-demo-raw", "flowrun-demo-artifacts", "flowrun-demo-logs",
                   "flowrun-demo-lake", "flowrun-demo-athena"}},
  glue = {databases = {}},
  secrets = {
    {Name = "flowrun/demo/source-db", SecretJSON = {
      engine = "postgres", host = "127.0.0.1", port = 5432, dbname = "shop",
      username = "flowrun", password = "sim-not-a-real-password"}},
  },
}

function M.empty()
  return {
    account = "123456789012", region = "us-east-1", seq = 0,
    durations = util.copy(M.default_durations),
    dms = {tasks = {}, endpoints = {}, instances = {}},
    emr = {clusters = {}},
    emr_serverless = {applications = {}},
    sns = {topics = {}, messages = {}},
    s3 = {buckets = {}},
    glue = {databases = {}},
    secrets = {},
    athena = {queries = {}},
  }
end

-- A fresh id: prefix plus n characters from alphabet, from the world's counter (deterministic,
-- and persisted, so a resumed run never sees an id twice).
function M.next_id(w, prefix, n, alphabet)
  w.seq = (w.seq or 0) + 1
  alphabet = alphabet or "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  local x, out = (w.seq * 2654435761 + 40503) & 0x7FFFFFFF, {}
  for i = 1, n do
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    local k = (x >> 8) % #alphabet + 1
    out[i] = alphabet:sub(k, k)
  end
  return prefix .. table.concat(out)
end

local function decode_maybe(v)
  if type(v) == "string" then
    local ok, t = pcall(json.decode, v)
    if ok then return t end
  end
  return v
end

function M.merge(w, seed)
  if type(seed) ~= "table" then return w end
  w.account = seed.account or w.account
  w.region = seed.region or w.region
  for k, v in pairs(seed.durations or {}) do w.durations[k] = v end
  local dms = seed.dms or {}
  for _, ep in ipairs(dms.endpoints or {}) do
    assert(ep.EndpointArn, "sim seed: a DMS endpoint needs EndpointArn")
    local e = util.copy(ep)
    e.Status = e.Status or "active"
    w.dms.endpoints[e.EndpointArn] = e
  end
  for _, ri in ipairs(dms.instances or {}) do
    assert(ri.ReplicationInstanceArn, "sim seed: a DMS instance needs ReplicationInstanceArn")
    local i = util.copy(ri)
    i.ReplicationInstanceStatus = i.ReplicationInstanceStatus or "available"
    w.dms.instances[i.ReplicationInstanceArn] = i
  end
  for _, t in ipairs(dms.tasks or {}) do
    assert(t.ReplicationTaskArn, "sim seed: a DMS task needs ReplicationTaskArn")
    local task = util.copy(t)
    task.Tables = nil
    task.Status = task.Status or "ready"
    task.MigrationType = task.MigrationType or "full-load"
    task.ReplicationTaskIdentifier = task.ReplicationTaskIdentifier
      or task.ReplicationTaskArn:match("([^:]+)$"):lower()
    if type(task.TableMappings) == "table" then task.TableMappings = json.encode(task.TableMappings) end
    task.ReplicationTaskSettings = task.ReplicationTaskSettings
      or json.encode({FullLoadSettings = {TargetTablePrepMode = "DROP_AND_CREATE",
                                          MaxFullLoadSubTasks = 8}})
    task.ReplicationTaskCreationDate = task.ReplicationTaskCreationDate or 1700000000
    task.sim_tables = {}
    for name, n in pairs(t.Tables or {}) do task.sim_tables[name] = n end
    -- sizes given: the simulated load uses them and never reads the source
    task.sim_sized = next(task.sim_tables) ~= nil or nil
    w.dms.tasks[task.ReplicationTaskArn] = task
  end
  local buckets = (seed.s3 or {}).buckets or {}
  for k, v in pairs(buckets) do
    local name, spec = k, v
    if type(k) == "number" then name, spec = v, {} end
    local b = w.s3.buckets[name] or {created = 1700000000, objects = {}}
    for key, body in pairs(spec.objects or {}) do
      b.objects[key] = {body = body, etag = util.etag(body), mtime = 1700000000}
    end
    w.s3.buckets[name] = b
  end
  for _, db in ipairs((seed.glue or {}).databases or {}) do
    local name = type(db) == "table" and db.Name or db
    w.glue.databases[name] = w.glue.databases[name]
      or {Name = name, CreateTime = 1700000000, tables = {}}
  end
  for _, a in ipairs((seed.emr_serverless or {}).applications or {}) do
    require("sim.emr_serverless").seed_application(w, a)
  end
  for _, name in ipairs((seed.sns or {}).topics or {}) do
    local arn = string.format("arn:aws:sns:%s:%s:%s", w.region, w.account, name)
    w.sns.topics[arn] = w.sns.topics[arn] or {Name = name, TopicArn = arn, subscriptions = {}}
  end
  for _, s in ipairs(seed.secrets or {}) do
    assert(s.Name, "sim seed: a secret needs Name")
    local sec = {Name = s.Name, CreatedDate = 1700000000,
                 SecretString = s.SecretString or (s.SecretJSON and json.encode(s.SecretJSON)),
                 ARN = s.ARN or string.format("arn:aws:secretsmanager:%s:%s:secret:%s-%s",
                   w.region, w.account, s.Name, "AbCdEf"),
                 VersionId = "00000000-0000-4000-8000-000000000001"}
    w.secrets[s.Name] = sec
  end
  return w
end

-- seeds: list of seed tables applied in order.
function M.build(seeds)
  local w = M.empty()
  for _, s in ipairs(seeds) do M.merge(w, decode_maybe(s)) end
  return w
end

-- Encoded bodies, per object table (an object is replaced, never changed, on PUT).
local b64_cache = setmetatable({}, {__mode = "k"})

M.SPILL = 64 * 1024

-- A copy of v where every string longer than SPILL is replaced by {__blob = spill(s)}.
local function copy_spilling(v, spill)
  if type(v) == "string" then
    if spill and #v > M.SPILL then return {__blob = spill(v)} end
    return v
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy_spilling(x, spill) end
  return setmetatable(out, getmetatable(v))
end

-- JSON-safe copy of the world (S3 bodies as base64). spill(s) -> id (optional) keeps a long
-- string out of the copy: the caller stores it and thaw's unspill(id) gives it back.
function M.freeze(w, spill)
  local buckets = w.s3.buckets
  w.s3.buckets = nil
  local out = copy_spilling(w, spill)
  w.s3.buckets = buckets
  out.s3.buckets = {}
  for name, b in pairs(buckets) do
    local objs = {}
    for key, o in pairs(b.objects) do
      local body
      if spill and #o.body > M.SPILL then
        body = {blob = spill(o.body)}
      else
        local e = b64_cache[o]
        if not e then e = util.b64encode(o.body); b64_cache[o] = e end
        body = {body64 = e}
      end
      body.etag, body.mtime, body.ctype = o.etag, o.mtime, o.ctype
      objs[key] = body
    end
    out.s3.buckets[name] = {created = b.created, objects = objs}
  end
  return out
end

local function unspilling(v, unspill)
  if type(v) ~= "table" then return v end
  if v.__blob ~= nil and next(v, next(v)) == nil then return unspill(v.__blob) end
  for k, x in pairs(v) do v[k] = unspilling(x, unspill) end
  return v
end

function M.thaw(v, unspill)
  local w = M.empty()
  local buckets = v.s3 and v.s3.buckets
  if v.s3 then v.s3.buckets = nil end
  if unspill then v = unspilling(v, unspill) end
  for k, x in pairs(v) do w[k] = x end
  w.s3.buckets = buckets or {}
  for k, d in pairs(M.default_durations) do
    if w.durations[k] == nil then w.durations[k] = d end
  end
  for _, b in pairs(w.s3.buckets) do
    b.objects = b.objects or {}
    for _, o in pairs(b.objects) do
      if o.body64 then o.body = util.b64decode(o.body64); o.body64 = nil end
      if o.blob then o.body = unspill(o.blob); o.blob = nil end
    end
  end
  for _, c in pairs(w.emr.clusters) do c.steps = c.steps or {} end
  return w
end

return M
