-- bench/server_runs.lua DIR|postgresql://... N — writes N finished runs of dms_to_emr's 17 tasks
-- into the file store at DIR or the PostgreSQL store at the URL (journals as the engine writes
-- them: a start and an end per task, a few failed runs with a multi-line error, task logs), an
-- hour apart, for bench/server.sh.
local where, n = arg[1], tonumber(arg[2] or "10000")
local store
if where:match("^postgres") then
  store = require("flowrun.engine.store.pg").open(where)
  store:init()
else
  store = require("flowrun.engine.store.file").open(where, { fsync = false })
end
local tasks = { "preflight", "start_dms", "upload_job", "glue_database", "create_cluster",
  "serverless_app", "wait_dms", "check_raw", "plan", "wait_cluster", "start_job", "add_step",
  "wait_job", "wait_step", "stop_app", "terminate_cluster", "verify" }
local params = { tables = { "public.customers", "public.orders", "public.order_items" },
  mode = "full", dms_task_arn = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000",
  raw_uri = "s3://flowrun-demo-raw/raw", warehouse_uri = "s3://flowrun-demo-lake/warehouse",
  compute = "cluster", core_instances = 2 }
local t0 = os.time() - n * 3600
for i = 1, n do
  local id = os.date("!%Y%m%dT%H%M%S", t0 + i * 3600) .. string.format("-%04x", i % 65536)
  local t = t0 + i * 3600 + 0.5
  local j = assert(store:create_run({ ev = "run_started", run = id, workflow = "dms_to_emr", v = 1,
    file = "/srv/flowrun/workflows/dms_to_emr.lua", hash = "fnv1a64:0123456789abcdef",
    params = params, secret_params = { "notify_webhook", "source_conninfo" }, pid = 4242,
    tasks = tasks, t = t }, function() error("taken") end))
  local failed = i % 17 == 0
  for k, name in ipairs(tasks) do
    t = t + 30
    j:append { ev = "task_started", task = name, attempt = 1, t = t }
    j:log(name, 1, name .. ": working")
    t = t + 20
    if failed and name == "wait_step" then
      j:append { ev = "task_failed", task = name, attempt = 1, state = "failed", t = t,
        error = { code = "emr.step_failed", message = "EMR step raw_to_iceberg FAILED; reason: Unknown Error.\n"
          .. "--- stderr (last lines) ---\nSLF4J: Class path contains multiple SLF4J bindings.\n"
          .. "Exception in thread \"main\" org.apache.spark.SparkException: Job aborted." } }
    elseif failed and name == "verify" then
      j:append { ev = "task_skipped", task = name, state = "upstream_failed", rule = "all_success", t = t }
    else
      j:append { ev = "task_succeeded", task = name, attempt = 1, t = t, result = k % 5 == 0 and
        { cluster_id = "j-ABCDEFGHIJKL", rows = 50000 } or nil }
    end
  end
  j:append { ev = "run_finished", state = failed and "failed" or "success", exit = failed and 1 or 0,
    reason = failed and "1 task(s) failed" or nil, t = t + 1 }
  j:close()
end
print(n)
