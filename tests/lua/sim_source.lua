-- The simulated DMS against a real PostgreSQL (FLOWRUN_TEST_PG): it finds its tables through
-- the source endpoint's secret and the task's table mappings, loads what is there, then, as a
-- full-load-and-cdc task, writes the source's inserts, updates and deletes as CDC files over
-- time; CloudWatch reports its CDC latency; the simulated Spark job applies a batch of those
-- files to an Iceberg table (metadata in S3, bookmark in the snapshot summary).
local t = require "tap"
local flow = require "flow"
local json = require "json"
local pg = require "pg"
local sim = require "sim"
local wire = require "sim.wire"
local source = require "sim.source"
local iceberg = require "sim.iceberg"
local job = require "sim.job"

flow.core.set_virtual_time(true)

local ci = os.getenv("FLOWRUN_TEST_PG")
if not ci then error("FLOWRUN_TEST_PG is not set: start tests/servers/pg.sh (scripts/test.sh does)") end
local SCHEMA = "simsrc_" .. math.random(100000, 999999)
local SRC = "arn:aws:dms:us-east-1:123456789012:endpoint:SIMSOURCE"
local TGT = "arn:aws:dms:us-east-1:123456789012:endpoint:FLOWRUNDEMOCDCTARGET00000"
local TASK = "arn:aws:dms:us-east-1:123456789012:task:SIMSOURCECDC"
local INSTANCE = "arn:aws:dms:us-east-1:123456789012:rep:FLOWRUNDEMOINSTANCE000000"

local conn = pg.connect(ci)
conn:exec(string.format([[
  CREATE SCHEMA %s;
  CREATE TABLE %s.a (id int PRIMARY KEY, v text);
  CREATE TABLE %s.b (k1 int, k2 text, x numeric, PRIMARY KEY (k1, k2));
  CREATE TABLE %s.skip_me (id int PRIMARY KEY);
  INSERT INTO %s.a SELECT g, 'v' || g FROM generate_series(1, 50) g;
  INSERT INTO %s.b SELECT g, 'k', g * 1.5 FROM generate_series(1, 20) g;
  INSERT INTO %s.skip_me VALUES (1);]], SCHEMA, SCHEMA, SCHEMA, SCHEMA, SCHEMA, SCHEMA, SCHEMA))

local function secret(password)
  return {engine = "postgres", host = os.getenv("FLOWRUN_TEST_PGHOST"),
          port = tonumber(os.getenv("FLOWRUN_TEST_PGPORT")), username = os.getenv("FLOWRUN_TEST_PGUSER"),
          password = password or os.getenv("FLOWRUN_TEST_PGPASSWORD"),
          dbname = os.getenv("FLOWRUN_TEST_PGDATABASE")}
end

local function world(opts)
  opts = opts or {}
  sim.configure{fail = opts.fail, durations = {dms_cdc_interval = 0}, seed = {
    secrets = {{Name = "sim/source", SecretJSON = secret(opts.password)}},
    dms = {
      endpoints = {{EndpointArn = SRC, EndpointType = "SOURCE", EngineName = "postgres",
                    PostgreSQLSettings = {SecretsManagerSecretId = "sim/source"}}},
      tasks = {{ReplicationTaskArn = TASK, ReplicationTaskIdentifier = "sim-cdc",
                SourceEndpointArn = SRC, TargetEndpointArn = TGT, ReplicationInstanceArn = INSTANCE,
                MigrationType = opts.migration or "full-load-and-cdc",
                TableMappings = {rules = {
                  {["rule-type"] = "selection", ["rule-id"] = "1", ["rule-name"] = "all",
                   ["object-locator"] = {["schema-name"] = SCHEMA, ["table-name"] = "%"},
                   ["rule-action"] = "include"},
                  {["rule-type"] = "selection", ["rule-id"] = "2", ["rule-name"] = "not",
                   ["object-locator"] = {["schema-name"] = SCHEMA, ["table-name"] = "skip%"},
                   ["rule-action"] = "exclude"}}}}},
    },
  }}
end

local function describe()
  local s, b = wire.json("dms", "DescribeReplicationTasks",
    {Filters = {{Name = "replication-task-arn", Values = {TASK}}}})
  assert(s == 200, json.encode(b))
  return b.ReplicationTasks[1]
end

local function start(kind)
  local s, b = wire.json("dms", "StartReplicationTask",
    {ReplicationTaskArn = TASK, StartReplicationTaskType = kind or "start-replication"})
  assert(s == 200, json.encode(b))
end

-- the raw files under the task's folder for one table: {name = body}, sorted names
local function files(tname)
  local prefix = "cdc/" .. SCHEMA .. "/" .. tname .. "/"
  local _, node = wire.s3("GET", "/flowrun-demo-raw?list-type=2&prefix=" .. prefix)
  local out, names = {}, {}
  for _, c in ipairs(wire.children(node, "Contents")) do
    local key = wire.child(c, "Key", true)
    local name = key:sub(#prefix + 1)
    names[#names + 1] = name
    out[name] = sim.world().s3.buckets["flowrun-demo-raw"].objects[key].body
  end
  return out, names
end

local function cdc_names(names)
  local out = {}
  for _, n in ipairs(names) do if not n:match("^LOAD") then out[#out + 1] = n end end
  return out
end

local function rows_of(body)
  local ops = {}
  for op, k in body:gmatch("(%u)\t([^\t\n]*)\t[^\t\n]*\t[^\n]*\n") do ops[#ops + 1] = op .. ":" .. k end
  return ops
end

t.test("the load reads the tables the mappings select, through the endpoint's secret", function()
  world()
  start()
  flow.sleep(300)
  local task = describe()
  t.eq(task.Status, "running", "a full-load-and-cdc task stays running after its load")
  t.eq(task.ReplicationTaskStats.FullLoadProgressPercent, 100, "load complete")
  t.eq(task.ReplicationTaskStats.TablesLoaded, 2, "two tables (skip_me is excluded)")
  local _, st = wire.json("dms", "DescribeTableStatistics", {ReplicationTaskArn = TASK})
  local rows = {}
  for _, s in ipairs(st.TableStatistics) do rows[s.TableName] = s.FullLoadRows end
  t.eq(rows, {a = 50, b = 20}, "FullLoadRows are the source's counts")
  local a = files("a")
  local body = a["LOAD00000001.parquet"] or ""
  t.like(body, "^PAR1\n", "a load file")
  t.like(body, "\n17\t%x+\n", "one line per row, keyed by the primary key")
  local b = files("b")
  t.like(b["LOAD00000001.parquet"] or "", "\n3|k\t%x+\n", "a composite key joins its columns")
  local skipped = files("skip_me")
  t.eq(next(skipped), nil, "nothing for an excluded table")
end)

t.test("changes at the source arrive as CDC files with Op, in commit order", function()
  conn:exec(string.format([[
    INSERT INTO %s.a VALUES (51, 'new');
    UPDATE %s.a SET v = 'changed' WHERE id = 2;
    DELETE FROM %s.a WHERE id = 3;
    DELETE FROM %s.b WHERE k1 = 1;]], SCHEMA, SCHEMA, SCHEMA, SCHEMA))
  flow.sleep(10)
  describe()   -- DMS is looked at: what it captured since is written
  local a, names = files("a")
  local cdc = cdc_names(names)
  t.eq(#cdc, 1, "one CDC file for table a")
  t.like(cdc[1] or "", "^%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%d%d%d%.parquet$", "named yyyymmdd-hhmmssSSS")
  t.eq(rows_of(a[cdc[1]] or ""), {"D:3", "U:2", "I:51"}, "delete, update, insert")
  local _, bn = files("b")
  t.eq(#cdc_names(bn), 1, "and one for table b")
  local _, st = wire.json("dms", "DescribeTableStatistics", {ReplicationTaskArn = TASK,
    Filters = {{Name = "table-name", Values = {"a"}}}})
  local s = st.TableStatistics[1]
  t.eq({s.Inserts, s.Updates, s.Deletes}, {1, 1, 1}, "table statistics count the changes")
  flow.sleep(10)
  describe()
  _, names = files("a")
  t.eq(#cdc_names(names), 1, "no change, no new file")
  conn:exec(string.format("UPDATE %s.a SET v = 'again' WHERE id = 51", SCHEMA))
  flow.sleep(1)
  local _, listed = files("a")   -- listing the target folder catches DMS up too
  t.eq(#cdc_names(listed), 2, "a second file for the next change")
  local c2 = cdc_names(listed)
  t.ok(c2[1] < c2[2], "names sort in time order")
end)

local function latency(task_id)
  local now = flow.time()
  local _, b = wire.json("cloudwatch", "GetMetricStatistics", {Namespace = "AWS/DMS",
    MetricName = "CDCLatencyTarget", StartTime = now - 900, EndTime = now, Period = 60,
    Statistics = {"Maximum"}, Dimensions = {
      {Name = "ReplicationInstanceIdentifier", Value = "flowrun-demo"},
      {Name = "ReplicationTaskIdentifier", Value = task_id or "SIMSOURCECDC"}}})
  return b.Datapoints
end

t.test("CDC latency in CloudWatch", function()
  local dp = latency()
  t.ok(#dp >= 1, "datapoints while the task streams")
  t.eq(dp[1] and dp[1].Maximum, 5.0, "the configured latency")
  t.eq(#latency("NOSUCHTASK"), 0, "none for another task")
  world{fail = "dms.latency=900"}
  start()
  t.eq(#latency(), 0, "none before the stream starts")
  flow.sleep(400)
  dp = latency()
  t.eq(dp[#dp] and dp[#dp].Maximum, 900.0, "fail dms.latency=900")
end)

t.test("stop, changes while stopped, resume-processing: nothing is lost", function()
  world()
  start()
  flow.sleep(300)
  local s = wire.json("dms", "StopReplicationTask", {ReplicationTaskArn = TASK})
  t.eq(s, 200, "stopped by hand")
  flow.sleep(60)
  conn:exec(string.format("INSERT INTO %s.a VALUES (100, 'while stopped')", SCHEMA))
  start("resume-processing")
  flow.sleep(120)
  local task = describe()
  t.eq(task.Status, "running", "streaming again")
  local a, names = files("a")
  local cdc = cdc_names(names)
  t.eq(#cdc, 1, "the change made while stopped arrives")
  t.eq(rows_of(a[cdc[#cdc]] or ""), {"I:100"}, "as an insert")
  t.ok(a["LOAD00000001.parquet"] and not a["LOAD00000001.parquet"]:find("\n100\t"),
    "resume did not reload (the load file is the first one)")
end)

t.test("reload-target empties the folder (DROP_AND_CREATE) and loads again", function()
  local s = wire.json("dms", "StopReplicationTask", {ReplicationTaskArn = TASK})
  t.eq(s, 200, "stopped")
  flow.sleep(60)
  start("reload-target")
  flow.sleep(300)
  local _, names = files("a")
  t.eq(names, {"LOAD00000001.parquet"}, "only the new load file")
end)

t.test("injected failures and an unreachable source", function()
  world{fail = "dms.cdc"}
  start()
  flow.sleep(300)
  local task = describe()
  t.eq(task.Status, "failed", "dms.cdc: the stream fails at its next capture")
  t.like(task.LastFailureMessage or "", "dms.cdc", "saying why")
  world{password = "wrong-password-42"}
  start()
  flow.sleep(300)
  task = describe()
  t.eq(task.Status, "failed", "a source DMS cannot log in to fails the task")
  t.like(task.LastFailureMessage or "", "Failed to connect to the source database", "saying so")
  t.unlike(task.LastFailureMessage or "", "wrong%-password", "without the password")
end)

t.test("the simulated job: a load, a merge, a repeated batch, a moved bookmark", function()
  world()
  start()
  flow.sleep(300)
  describe()   -- the simulated world moves when it is looked at
  local w = sim.world()
  w.glue.databases.lake = {Name = "lake", CreateTime = 0, tables = {}}
  local function uri(tname, name) return "s3://flowrun-demo-raw/cdc/" .. SCHEMA .. "/" .. tname .. "/" .. name end
  local function put_config(batch)
    local body = json.encode({version = 2, bookmark_property = "flowrun.raw-bookmark", tables = batch})
    w.s3.buckets["flowrun-demo-artifacts"].objects["cfg.json"] = {body = body, etag = "e", mtime = 0}
  end
  local args = {"--database", "lake", "--warehouse", "s3://flowrun-demo-lake/wh", "--config",
                "s3://flowrun-demo-artifacts/cfg.json", "--run-id", "r1", "--table", SCHEMA .. ".a:id"}
  put_config({[SCHEMA .. ".a"] = {target = "a", action = "load", files = {uri("a", "LOAD00000001.parquet")},
                                  since = json.null, ["until"] = ""}})
  local lok, _, lmsg = job.run(w, args, flow.time())
  t.eq(lok, true, "load")
  if not lok then t.diag(lmsg) end
  local ice = iceberg.load(w, "lake", "a")
  local n = conn:query("SELECT count(*) AS n FROM " .. SCHEMA .. ".a")[1].n
  t.eq(ice.count, n, "as many rows as the source")
  t.eq(iceberg.property(ice.meta, "flowrun.raw-bookmark"), "", "bookmark committed with the load")
  conn:exec(string.format("DELETE FROM %s.a WHERE id <= 5; UPDATE %s.a SET v = 'x' WHERE id = 10",
    SCHEMA, SCHEMA))
  flow.sleep(5)
  local _, names = files("a")
  local cdc = cdc_names(names)
  put_config({[SCHEMA .. ".a"] = {target = "a", action = "merge", files = {uri("a", cdc[1])},
                                  since = "", ["until"] = cdc[1]}})
  t.eq(job.run(w, args, flow.time()), true, "merge")
  ice = iceberg.load(w, "lake", "a")
  local want = source.parse(source.read(w, w.dms.tasks[TASK])[SCHEMA .. ".a"].lines)
  t.eq(ice.rows, want, "the Iceberg table holds the source's rows, updates included")
  t.eq(iceberg.property(ice.meta, "flowrun.raw-bookmark"), cdc[1], "bookmark moved with the merge")
  local snaps = #ice.meta.snapshots
  t.eq(job.run(w, args, flow.time()), true, "the same batch again (a retried step)")
  t.eq(#iceberg.load(w, "lake", "a").meta.snapshots, snaps, "is skipped: no new snapshot")
  put_config({[SCHEMA .. ".a"] = {target = "a", action = "merge", files = {uri("a", cdc[1])},
                                  since = "19700101-000000000.parquet", ["until"] = "x"}})
  local ok, stderr, msg = job.run(w, args, flow.time())
  t.eq(ok, false, "a batch whose start is not the table's bookmark fails")
  t.like(msg or "", "BookmarkMoved", "BookmarkMoved")
  t.like(stderr or "", "Traceback", "with a stderr")
end)

conn:exec("DROP SCHEMA " .. SCHEMA .. " CASCADE")
conn:close()
t.done()
