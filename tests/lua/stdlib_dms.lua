-- stdlib dms: start_task, wait_task, table_statistics, stop_task against the simulator
-- through the AWS client, under virtual time.
local t = require "tap"
local flow = require "flow"
require("aws").use_transport(require("sim").handle)
local sim = require "sim"
local dms = require "dms"

flow.core.set_virtual_time(true)
local quiet = function() end

local TASK = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000"
local ROWS = {["public.customers"] = 5000, ["public.orders"] = 48000, ["public.order_items"] = 150000}

local function fresh(opts)
  sim.configure(opts or {})
  sim.set_table_rows(TASK, ROWS)
end

t.test("start and wait: success, progress reported, statistics", function()
  fresh()
  local r = dms.start_task(TASK, {log = quiet})
  t.eq(r.started, true, "started")
  t.eq(r.type, "start-replication", "a task that never ran gets start-replication")
  local again = dms.start_task(TASK, {type = "reload-target", log = quiet})
  t.eq(again.started, false, "re-run while starting: not started twice")
  t.eq(sim.world().dms.tasks[TASK].sim_starts, 1, "the simulator saw one start")
  local seen = {}
  local t0 = flow.now()
  local task = dms.wait_task(TASK, {timeout = "2h", progress = function(pct, msg)
    seen[#seen + 1] = pct
  end, log = function() end})
  t.eq(task.Status, "stopped", "stopped")
  t.eq(task.StopReason, "Stop Reason FULL_LOAD_ONLY_FINISHED", "finished")
  local took = flow.now() - t0
  t.ok(took >= 60 + 75 and took <= 60 + 75 + 15, "waited as long as the largest table takes (" .. took .. " s)")
  local mid = false
  for _, p in ipairs(seen) do if p > 0 and p < 100 then mid = true end end
  t.ok(mid, "progress between 0 and 100 was reported")
  local stats = dms.table_statistics(TASK)
  local rows = {}
  for _, s in ipairs(stats) do rows[s.SchemaName .. "." .. s.TableName] = s.FullLoadRows end
  t.eq(rows, ROWS, "FullLoadRows per table match the source counts")
  r = dms.start_task(TASK, {log = quiet})
  t.eq(r.type, "reload-target", "a task that ran before gets reload-target")
end)

t.test("failures carry the reason", function()
  fresh{fail = "dms.task"}
  dms.start_task(TASK, {log = quiet})
  local err = t.raises(function() dms.wait_task(TASK, {timeout = "2h", log = function() end}) end,
    "dms.task_failed", "failed task raises dms.task_failed")
  t.like(tostring(err and err.message), "LastFailureMessage: .*FATAL_ERROR", "message has LastFailureMessage")
  t.eq(err and err.retryable, false, "not retryable")

  fresh{fail = "dms.table"}
  dms.start_task(TASK, {log = quiet})
  err = t.raises(function() dms.wait_task(TASK, {timeout = "2h", log = function() end}) end,
    "dms.task_failed", "stopped with an errored table is a failure")
  t.like(tostring(err and err.message), "tables in error: public.order_items", "names the table")
  t.like(tostring(err and err.message), "FULL_LOAD_ONLY_FINISHED", "even though StopReason says finished")

  fresh()
  t.raises(function() dms.wait_task("arn:aws:dms:us-east-1:123456789012:task:NOPE", {log = function() end}) end,
    "aws.ResourceNotFoundFault", "unknown ARN: the AWS error, at once")
  t.raises(function() dms.start_task("arn:aws:dms:us-east-1:123456789012:task:NOPE") end,
    "aws.ResourceNotFoundFault", "start on unknown ARN")
end)

t.test("timeout names the last status", function()
  fresh()
  dms.start_task(TASK, {log = quiet})
  local t0 = flow.now()
  local err = t.raises(function() dms.wait_task(TASK, {timeout = 90, log = function() end}) end,
    "flow.timeout", "times out")
  t.ok(flow.now() - t0 >= 90 and flow.now() - t0 < 120, "after the timeout")
  t.like(tostring(err and err.message), "last status: running %d+%%", "reports what it saw last")
  -- the default is botocore's: 15 s x 60
  t.eq(dms.WAIT_DEFAULTS, {every = 15, timeout = 900}, "botocore waiter defaults")
end)

t.test("stop_task", function()
  fresh()
  dms.start_task(TASK, {log = quiet})
  flow.sleep(70)
  local task = dms.stop_task(TASK, {log = quiet})
  t.eq(task.Status, "stopping", "stopping")
  flow.sleep(30)
  local err = t.raises(function() dms.wait_task(TASK, {log = function() end}) end, "dms.task_failed",
    "a task stopped by hand before the end did not finish its load")
  t.like(tostring(err and err.message), "before its load finished", "says so")
  t.eq(dms.stop_task(TASK, {log = quiet}).Status, "stopped", "stopping a stopped task is a no-op")
end)

t.test("cdc: running at 100% counts as finished when asked", function()
  fresh()
  sim.world().dms.tasks[TASK].MigrationType = "full-load-and-cdc"
  dms.start_task(TASK, {log = quiet})
  local task = dms.wait_task(TASK, {cdc = true, timeout = "1h", log = function() end})
  t.eq(task.Status, "running", "still running (CDC)")
  t.eq(task.ReplicationTaskStats.FullLoadProgressPercent, 100, "full load complete")
end)

t.test("cancelling the wait stops a task the caller started, and only then", function()
  fresh()
  dms.start_task(TASK, {log = quiet})
  local h = flow.spawn(dms.wait_task, TASK, {stop_on_cancel = true, timeout = "2h", log = quiet})
  flow.sleep(70)
  t.eq(dms.describe(TASK).Status, "running", "loading")
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the wait is cancelled")
  t.eq(dms.describe(TASK).Status, "stopping", "and StopReplicationTask was sent")
  flow.sleep(30)
  t.eq(dms.describe(TASK).Status, "stopped", "the load stopped")

  fresh()
  dms.start_task(TASK, {log = quiet})
  h = flow.spawn(dms.wait_task, TASK, {timeout = "2h", log = quiet})
  flow.sleep(70)
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the wait is cancelled")
  t.eq(dms.describe(TASK).Status, "running", "without stop_on_cancel the task is left alone")
end)

local CDC = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOCDCTASK0000000"

t.test("check_cdc: a streaming task is healthy, or says what is wrong", function()
  sim.configure{}
  sim.set_table_rows(CDC, ROWS)
  dms.start_task(CDC, {log = quiet})
  dms.wait_task(CDC, {cdc = true, timeout = "1h", log = quiet})
  flow.sleep(120)
  local task, latency = dms.check_cdc(CDC, {max_latency = 60, log = quiet})
  t.eq(task.Status, "running", "running")
  t.eq(latency, 5.0, "latency from CloudWatch")
  t.eq(dms.cdc_latency(CDC), 5.0, "cdc_latency alone")
  local err = t.raises(function() dms.check_cdc(CDC, {max_latency = 1, log = quiet}) end,
    "dms.cdc_unhealthy", "latency above the limit")
  t.like(tostring(err and err.message), "CDC latency 5 s is above the limit of 1 s", "says so")
  dms.stop_task(CDC, {log = quiet})
  flow.sleep(30)
  err = t.raises(function() dms.check_cdc(CDC, {log = quiet}) end, "dms.cdc_unhealthy",
    "a stopped task")
  t.like(tostring(err and err.message), "is stopped, not streaming changes; StopReason: Stop Reason NORMAL",
    "with its stop reason")

  sim.configure{fail = "dms.latency=900"}
  sim.set_table_rows(CDC, ROWS)
  dms.start_task(CDC, {log = quiet})
  dms.wait_task(CDC, {cdc = true, timeout = "1h", log = quiet})
  flow.sleep(120)
  t.raises(function() dms.check_cdc(CDC, {max_latency = 600, log = quiet}) end, "dms.cdc_unhealthy",
    "900 s of latency against 600")
  local seen = {}
  local _, l = dms.check_cdc(CDC, {log = function(m) seen[#seen + 1] = m end})
  t.eq(l, 900.0, "without a limit the latency is only reported")

  sim.configure{fail = "dms.table"}
  sim.set_table_rows(CDC, ROWS)
  dms.start_task(CDC, {log = quiet})
  flow.sleep(3600)
  err = t.raises(function() dms.check_cdc(CDC, {log = quiet}) end, "dms.cdc_unhealthy",
    "a table in error")
  t.like(tostring(err and err.message), "tables in error: public.order_items", "naming it")

  sim.configure{}
  sim.set_table_rows(CDC, ROWS)
  dms.start_task(CDC, {log = quiet})
  flow.sleep(65)   -- running, still loading
  seen = {}
  _, l = dms.check_cdc(CDC, {log = function(m) seen[#seen + 1] = m end})
  t.eq(l, nil, "no datapoints before the stream starts")
  t.like(seen[#seen] or "", "no CDC latency datapoints", "which is logged, not failed")
end)

t.test("a lost StartReplicationTask answer", function()
  fresh{fail = "lost=dms.StartReplicationTask"}
  local r = dms.start_task(TASK, {log = function() end})
  t.eq(r.started, true, "the client's retry meets InvalidResourceStateFault: the start was ours")
  t.eq(sim.world().dms.tasks[TASK].sim_starts, 1, "started once")
end)

t.done()
