-- The worker as an object on this loop (what the server embeds): it claims submitted runs and
-- runs them, secret parameters from its own side; a workflow that does not load on it fails the
-- run with why (once, not claimed again and again); stop() hands running runs back without their
-- cleanups, and another worker takes them over at once; a run whose holders keep dying is failed
-- with its cleanup run; a lost run (another holder claimed it) is stopped at once and its AWS
-- calls refused. Against PostgreSQL and against the file store.
local t = require "tap"
local flow = require "flow"
local engine = require "flowrun.engine"
local pgstore = require "flowrun.engine.store.pg"
local filestore = require "flowrun.engine.store.file"
local worker = require "flowrun.worker"
local fence = require "flowrun.worker.fence"
local helper = require "pgstore"

local conninfo, db = helper.fresh("worker")
local dir = os.tmpname()
os.remove(dir)

local ran = {} -- run id -> task -> times started
_G.worker_test_note = function(ctx)
  ran[ctx.run_id] = ran[ctx.run_id] or {}
  ran[ctx.run_id][ctx.task] = (ran[ctx.run_id][ctx.task] or 0) + 1
end

local SOURCE = [[
local flow = require "flow"
local wf = flow.workflow { name = "wt", params = { pause = 0.05, key = { secret = true, required = true } } }
wf:task("a", function(ctx) worker_test_note(ctx) return #ctx.params.key end)
wf:task("b", { after = "a" }, function(ctx) worker_test_note(ctx) flow.sleep(ctx.params.pause) return "b" end)
wf:task("z", { after = "b", cleanup = true }, function(ctx) worker_test_note(ctx) end)
return wf
]]
local function submit(store, id, params, source)
  source = source or SOURCE
  return assert(store:submit { workflow = "wt", source = source, hash = engine.hash_text(source),
    file = "wt.lua", params = params or {}, secret_params = { "key" }, tasks = { "a", "b", "z" },
    run_id = id })
end

local function wait_until(pred, timeout)
  local t0 = flow.now()
  while flow.now() - t0 < (timeout or 10) do
    if pred() then return true end
    flow.sleep(0.02)
  end
  return false
end

local logs = {}
local function logger(line) logs[#logs + 1] = line end
-- the secret parameter, on the workers' side only
local secrets = dir .. "-secrets.json"
do
  local f = assert(io.open(secrets, "w"))
  f:write('{"key": "from-the-worker"}')
  f:close()
end
local function new_worker(o)
  o.vars_files = { secrets }
  o.log = logger
  o.poll = 0.2
  return worker.new(o)
end

for _, kind in ipairs { "PostgreSQL", "file" } do
  local function open(o)
    if kind == "file" then return filestore.open(dir, { clock = flow.time }) end
    o = o or {}
    o.clock = flow.time
    return pgstore.open(conninfo, o)
  end
  local function state(store, id) return (store:state(id)) end

  t.test(kind .. ": a worker runs submitted runs; secret parameters come from its side", function()
    local s = open()
    local w = new_worker { store = open(), concurrency = 2 }
    w:start()
    submit(s, kind .. "-1", { pause = 0.1 })
    submit(s, kind .. "-2")
    t.ok(wait_until(function() return state(s, kind .. "-1") == "success" and state(s, kind .. "-2") == "success" end),
      "both runs succeeded")
    local r = s:load(kind .. "-1")
    t.eq(r.tasks.a.result, #"from-the-worker", "the secret parameter came from the worker's environment")
    t.eq(r.params, { pause = 0.1 }, "the public one from the store")
    -- a workflow that does not load on this worker fails its run, with why
    submit(s, kind .. "-bad", {}, "return 42")
    t.ok(wait_until(function() return state(s, kind .. "-bad") == "failed" end), "a run whose workflow does not load fails")
    local bad = s:load(kind .. "-bad")
    t.like(bad.reason or "", "did not return a workflow", "saying why")
    w:stop("test over")
    t.eq(w:wait(), true, "the worker stops")
    t.eq(w.claimed, 3, "it claimed three runs, each once")
  end)

  t.test(kind .. ": stop() hands running runs back; another worker takes them over at once", function()
    local s = open()
    local w1 = new_worker { store = open({ owner = "W1" }), concurrency = 2 }
    w1:start()
    submit(s, kind .. "-hb", { pause = 2 })
    t.ok(wait_until(function() return ran[kind .. "-hb"] and ran[kind .. "-hb"].b == 1 end), "b runs on the first worker")
    w1:stop("handing back")
    w1:wait()
    t.eq(ran[kind .. "-hb"].z, nil, "its cleanup task did not run: the run is not over")
    t.eq(state(s, kind .. "-hb"), kind == "file" and "interrupted" or "interrupted", "the run is free")
    local t0 = flow.now()
    local w2 = new_worker { store = open({ owner = "W2" }), concurrency = 2 }
    w2:start()
    t.ok(wait_until(function() return ran[kind .. "-hb"].b == 2 end), "the second worker takes it over")
    t.ok(flow.now() - t0 < 1.5, string.format("at once (%.2fs)", flow.now() - t0))
    t.ok(wait_until(function() return state(s, kind .. "-hb") == "success" end), "and finishes it")
    t.eq(ran[kind .. "-hb"], { a = 1, b = 2, z = 1 }, "a kept its result; the cleanup ran once")
    w2:stop("test over")
    w2:wait()
  end)
end

t.test("PostgreSQL: a run whose holders keep dying is failed, its cleanup run", function()
  local s = pgstore.open(conninfo, { clock = flow.time })
  submit(s, "dying", { pause = 0.05 })
  local pg = require "pg"
  local admin = pg.connect(conninfo)
  admin:query("UPDATE flowrun.runs SET takeovers = $1 WHERE id = 'dying'", worker.MAX_TAKEOVERS)
  -- one more takeover is past the limit: a worker claims it and dies (its lease runs out)
  local dead = pgstore.open(conninfo, { clock = flow.time, owner = "dead" })
  local c = dead:claim("dead", 1)[1]
  dead:stop_background()
  admin:query("UPDATE flowrun.runs SET lease_until = now() - interval '1 second' WHERE id = 'dying'")
  local w = new_worker { store = pgstore.open(conninfo, { clock = flow.time }) }
  w:start()
  t.ok(wait_until(function() return (s:state("dying")) == "failed" end), "the run failed")
  local r = s:load("dying")
  t.like(r.reason or "", "taken over 6 times", "saying why")
  t.eq(r.tasks.z.state, "success", "its cleanup task ran")
  w:stop("test over")
  w:wait()
  c.journal:close()
  dead:close()
  admin:close()
  s:close()
end)

t.test("PostgreSQL: a worker that lost a run stops it at once and its AWS calls are refused", function()
  local s = pgstore.open(conninfo, { clock = flow.time })
  local ws = pgstore.open(conninfo, { clock = flow.time, owner = "Wlost" })
  local calls = 0
  local aws = require "aws"
  aws.use_transport(function() calls = calls + 1 return { status = 200, headers = {}, body = "{}" } end)
  fence.install(ws)
  local src = [[
local flow = require "flow"
local wf = flow.workflow { name = "wt", params = { key = { secret = true } } }
wf:task("a", function(ctx)
  worker_test_note(ctx)
  for i = 1, 100 do
    require("aws").call("dms", "DescribeReplicationTasks", {})
    flow.sleep(0.05)
  end
end)
wf:task("z", { after = "a", cleanup = true }, function(ctx) worker_test_note(ctx) end)
return wf
]]
  submit(s, "lost1", {}, src)
  local w = new_worker { store = ws }
  w:start()
  t.ok(wait_until(function() return calls >= 3 end), "the run calls AWS")
  -- another holder claims it (the lease made to look expired)
  local admin = require("pg").connect(conninfo)
  admin:query("UPDATE flowrun.runs SET lease_until = now() - interval '1 second' WHERE id = 'lost1'")
  local thief = pgstore.open(conninfo, { clock = flow.time, owner = "thief" })
  local c = thief:claim("thief", 1)[1]
  t.eq(c and c.id, "lost1", "another holder claimed the run")
  t.ok(wait_until(function() return w.lost == 1 end, 15), "the worker found out (at its next AWS call's lease check or heartbeat)")
  local after = calls
  flow.sleep(0.3)
  t.eq(calls, after, "and made no AWS call for it since")
  t.eq(ran.lost1.z, nil, "nor ran its cleanup (the new holder does)")
  local found = false
  for _, l in ipairs(logs) do if l:find("lost1 is no longer held by this process", 1, true) then found = true end end
  t.ok(found, "and said so in its log")
  c.journal:close()
  thief:close()
  admin:close()
  w:stop("test over")
  w:wait()
  aws.use_transport(nil)
  aws.set_request_hook(nil)
  s:close()
end)

helper.drop(db)
os.remove(secrets)
os.execute("rm -rf '" .. dir .. "'")
t.done()
