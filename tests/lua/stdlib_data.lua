-- stdlib s3, glue, athena, secrets, gzip against the simulator through the AWS client.
local t = require "tap"
local flow = require "flow"
require("aws").use_transport(require("sim").handle)
local sim = require "sim"
local s3 = require "s3"
local glue = require "glue"
local athena = require "athena"
local secrets = require "secrets"
local zlib = require "zlib"

flow.core.set_virtual_time(true)
local quiet = function() end

t.test("s3: put, put_file, get, head, list (all pages), wait_for_prefix", function()
  sim.configure{}
  t.eq({s3.parse("s3://b/a/b.c")}, {"b", "a/b.c"}, "parse")
  t.raises(function() s3.parse("http://x") end, "s3://bucket/key", "a bad URI is misuse")
  s3.put("s3://flowrun-demo-artifacts/a.txt", "hello")
  t.eq(s3.get("s3://flowrun-demo-artifacts/a.txt"), "hello", "get what was put")
  local path = os.tmpname()
  local f = io.open(path, "wb"); f:write("print(1)\n"); f:close()
  local r = s3.put_file("s3://flowrun-demo-artifacts/jobs/x.py", path)
  os.remove(path)
  t.eq(r.size, 9, "put_file size")
  t.eq(s3.head("s3://flowrun-demo-artifacts/jobs/x.py").size, 9, "head size")
  t.eq(s3.head("s3://flowrun-demo-artifacts/nope"), nil, "head of a missing object: nil")
  t.raises(function() s3.get("s3://flowrun-demo-artifacts/nope") end, "aws.NoSuchKey", "get missing: NoSuchKey")
  t.raises(function() s3.get("s3://no-such-bucket/x") end, "aws.NoSuchBucket", "NoSuchBucket")
  t.raises(function() s3.put_file("s3://flowrun-demo-artifacts/x", "/nonexistent/file") end, "s3.file",
    "missing local file")
  for i = 1, 1005 do sim.world().s3.buckets["flowrun-demo-raw"].objects[string.format("many/%04d", i)] =
    {body = "x", etag = "e", mtime = 0} end
  local all = s3.list("s3://flowrun-demo-raw/many/")
  t.eq(#all, 1005, "list follows continuation tokens past 1000")
  t.eq(all[1005].key, "many/1005", "in key order")
  local h = flow.spawn(function()
    flow.sleep(100)
    s3.put("s3://flowrun-demo-raw/late/LOAD00000001.parquet", "PAR1")
  end)
  local objs = s3.wait_for_prefix("s3://flowrun-demo-raw/late/", {every = 30, log = quiet})
  t.eq(#objs, 1, "wait_for_prefix returns once an object arrives")
  h:wait()
  local err = t.raises(function()
    s3.wait_for_prefix("s3://flowrun-demo-raw/never/", {timeout = 60, log = quiet})
  end, "flow.timeout", "wait_for_prefix times out")
  t.like(tostring(err and err.message), "0 of 1 object", "with what it saw")
end)

t.test("glue: ensure_database, get_table", function()
  sim.configure{}
  t.eq(glue.ensure_database("lake").created, true, "created")
  t.eq(glue.ensure_database("lake").created, false, "then found")
  t.eq(glue.get_table("lake", "orders"), nil, "missing table: nil")
  t.eq(glue.get_table("nodb", "orders"), nil, "missing database: nil")
  require("sim.wire").json("glue", "CreateTable", {DatabaseName = "lake",
    TableInput = {Name = "orders", Parameters = {table_type = "ICEBERG"}}})
  local tb = glue.get_table("lake", "orders")
  t.eq(tb and tb.Name, "orders", "get_table")
  t.ok(glue.is_iceberg(tb), "is_iceberg")
end)

t.test("athena: query, failure, timeout", function()
  sim.configure{}
  local rows = athena.query("SELECT 7", {workgroup = "primary", log = quiet})
  t.eq(#rows, 1, "one row (the header row is dropped)")
  t.eq(rows[1]._col0, "7", "value by column name")
  t.eq(rows.columns, {"_col0"}, "columns")
  local err = t.raises(function() athena.query("SELECT count(*) FROM lake.nope", {log = quiet}) end,
    "athena.query_failed", "failed query")
  t.like(tostring(err and err.message), "TABLE_NOT_FOUND", "Athena's reason")
  err = t.raises(function() athena.query("SELECT 1", {timeout = 0.5, every = 0.2, log = quiet}) end,
    "flow.timeout", "timeout")
  local stopped = 0
  for _, q in pairs(sim.world().athena.queries) do if q.Status.State == "CANCELLED" then stopped = stopped + 1 end end
  t.eq(stopped, 1, "a timed out query is stopped")
end)

t.test("secrets: get_json, pg_conninfo, no secret in errors", function()
  sim.configure{}
  local s = secrets.get_json("flowrun/demo/source-db")
  t.eq(s.dbname, "shop", "JSON fields")
  local ci = secrets.pg_conninfo(s)
  t.eq(ci, {host = "127.0.0.1", port = "5432", dbname = "shop", user = "flowrun",
            password = "sim-not-a-real-password"}, "libpq keywords (username -> user)")
  t.raises(function() secrets.get_json("nope") end, "aws.ResourceNotFoundException", "missing secret")
  require("sim.wire").json("secretsmanager", "CreateSecret", {Name = "bad", SecretString = "hunter2-not-json"})
  local err = t.raises(function() secrets.get_json("bad") end, "secrets.not_json", "not JSON")
  t.unlike(tostring(err and err.message), "hunter2", "the value is not in the error")
end)

t.test("iceberg: metadata through Glue and S3, a summary property among the ancestors", function()
  local iceberg = require "iceberg"
  local json = require "json"
  sim.configure{}
  local w = sim.world()
  w.glue.databases.lake = {Name = "lake", CreateTime = 0, tables = {}}
  t.eq(iceberg.metadata("lake", "orders"), nil, "a missing table: nil")
  t.eq(iceberg.metadata("nodb", "orders"), nil, "a missing database: nil")
  local ice = require "sim.iceberg"
  local loc = "s3://flowrun-demo-lake/wh/lake.db/orders"
  local s1 = ice.commit(w, "lake", "orders", {["1"] = "a"}, 0, {["flowrun.raw-bookmark"] = "f1"}, 100, loc)
  ice.commit(w, "lake", "orders", {["1"] = "a", ["2"] = "b"}, 0, {["flowrun.raw-bookmark"] = "f2"}, 200, loc)
  ice.commit(w, "lake", "orders", {["1"] = "a"}, 0, {operation = "replace"}, 300, loc)  -- a compaction
  local meta = iceberg.metadata("lake", "orders")
  t.eq(#meta.snapshots, 3, "three snapshots")
  t.eq(iceberg.current_snapshot(meta).summary.operation, "replace", "the current one")
  local v, snap = iceberg.snapshot_property(meta, "flowrun.raw-bookmark")
  t.eq(v, "f2", "the newest bookmark among the ancestors (a compaction carries none)")
  t.eq(snap and snap["timestamp-ms"], 200000, "found on the parent")
  meta["current-snapshot-id"] = s1   -- rolled back
  t.eq(iceberg.snapshot_property(meta, "flowrun.raw-bookmark"), "f1", "a rollback rolls the bookmark back")
  t.eq(iceberg.snapshot_property(meta, "nope"), nil, "an absent property: nil")
  meta["current-snapshot-id"] = -1
  t.eq(iceberg.current_snapshot(meta), nil, "no current snapshot")
  w.glue.databases.lake.tables.hive = {Name = "hive", Parameters = {}}
  t.raises(function() iceberg.metadata("lake", "hive") end, "iceberg.metadata", "not an Iceberg table")
  w.glue.databases.lake.tables.lost = {Name = "lost", Parameters = {table_type = "ICEBERG",
    metadata_location = "s3://flowrun-demo-lake/wh/lost/metadata/00001-x.metadata.json"}}
  local err = t.raises(function() iceberg.metadata("lake", "lost") end, "iceberg.metadata",
    "a metadata file that does not exist")
  t.like(tostring(err and err.message), "does not exist", "says so")
  local u = require "sim.util"
  local body = u.gzip_stored(json.encode({["current-snapshot-id"] = 7, snapshots = {
    {["snapshot-id"] = 7, summary = {k = "gz"}}}}))
  w.s3.buckets["flowrun-demo-lake"].objects["wh/gz/metadata/00001-x.gz.metadata.json"] =
    {body = body, etag = "e", mtime = 0}
  w.glue.databases.lake.tables.gz = {Name = "gz", Parameters = {table_type = "ICEBERG",
    metadata_location = "s3://flowrun-demo-lake/wh/gz/metadata/00001-x.gz.metadata.json"}}
  t.eq(iceberg.snapshot_property(iceberg.metadata("lake", "gz"), "k"), "gz", "gzipped metadata")
end)

t.test("gzip (EMR's logs, Iceberg metadata) through the runtime's zlib", function()
  local u = require "sim.util"
  t.eq(zlib.gunzip(u.gzip_stored("a\nb\n")), "a\nb\n", "stored blocks")
  -- a dynamic-Huffman member made by zlib (python3 -c 'gzip.compress(b"hello hello hello\n")')
  local hex = "1f8b0800000000000203cb48cdc9c957c840905c003b7c8adf12000000"
  local bin = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  t.eq(zlib.gunzip(bin), "hello hello hello\n", "compressed member")
  local v, err = zlib.gunzip("not gzip")
  t.eq(v, nil, "not gzip")
  t.eq(err and err.code, "zlib.data", "a zlib.data error")
end)

t.done()
