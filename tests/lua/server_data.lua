-- The server's reads over the file store (flowrun.server.data): hundreds of runs listed a page
-- at a time with filters, a damaged journal, runs written by other processes on the same
-- machine (`flowrun run` with the same state directory) seen while they run and when they end
-- or die, the /events stream telling the changes.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local sys = require "flow.sys"
local h = require "server_harness"
local file_store = require "flowrun.engine.store.file"

local root = os.getenv("FLOWRUN_ROOT") or sys.root
local FLOWRUN = os.getenv("FLOWRUN") or (root .. "/flowrun")

-- writes n finished runs of workflow wf, an hour apart from t0, state by i
local function synthetic(store, n, t0, wf)
  local ids = {}
  for i = 1, n do
    local id = string.format("%s-%04d", wf, i)
    local started = t0 + i * 3600
    local j = assert(store:create_run({ ev = "run_started", run = id, workflow = wf, v = 1,
      tasks = { "a", "b" }, params = {}, t = started }, function() error("id taken") end))
    local state = (i % 3 == 0) and "failed" or "success"
    j:append { ev = "task_started", task = "a", attempt = 1, t = started + 1 }
    j:append { ev = "task_succeeded", task = "a", attempt = 1, t = started + 2 }
    j:append { ev = "task_started", task = "b", attempt = 1, t = started + 2 }
    if state == "failed" then
      j:append { ev = "task_failed", task = "b", attempt = 1, state = "failed", t = started + 3,
        error = { code = "x", message = "no" } }
    else
      j:append { ev = "task_succeeded", task = "b", attempt = 1, t = started + 3 }
    end
    j:append { ev = "run_finished", state = state, exit = state == "success" and 0 or 1, t = started + 4 }
    j:close()
    ids[i] = id
  end
  return ids
end

local base = h.tmpdir("server_data")
local state = base .. "/state"
local store = file_store.open(state, { fsync = false })
local T0 = 1700000000
synthetic(store, 200, T0, "alpha")
synthetic(store, 100, T0 + 1800, "beta")
sys.mkdir_p(state .. "/runs")
local f = assert(io.open(state .. "/runs/zz-damaged.jsonl", "w"))
f:write('{"ev":"run_started","run":"zz-damaged","workflow":"alpha","t":1}\nnot json\n')
f:close()

-- the server over that state directory (started through the harness, then pointed at it)
local s = h.start { name = "server_data_srv", refresh = 0.1, sweep = 0.5 }
s:stop()
s = (function()
  local server = require "flowrun.server"
  local logs = {}
  local srv = server.new { port = 0, workflows = s.wfdir, store = file_store.open(state, { clock = flow.time }),
    refresh = 0.1, sweep = 0.5, web_dir = root .. "/web", log = function(m) logs[#logs + 1] = m end }
  srv:start()
  local o = setmetatable({ srv = srv, url = srv.url, dir = base, wfdir = s.wfdir, state = state,
    logs = logs, headers = {} }, getmetatable(s))
  return o
end)()

t.test("300 runs and a damaged one, a page at a time", function()
  local all, cursor, pages = {}, nil, 0
  repeat
    local st, doc = s:get("/api/v1/runs?limit=100" .. (cursor and ("&cursor=" .. cursor) or ""))
    t.eq(st, 200, "page " .. (pages + 1))
    pages = pages + 1
    for _, r in ipairs(doc.runs) do all[#all + 1] = r end
    cursor = doc.next ~= json.null and doc.next or nil
  until not cursor or pages > 10
  t.eq({ #all, pages }, { 301, 4 }, "301 runs in 4 pages of 100")
  local sorted, unique, seen = true, true, {}
  for i, r in ipairs(all) do
    if i > 1 and all[i - 1].started < r.started then sorted = false end
    if seen[r.id] then unique = false end
    seen[r.id] = true
  end
  t.ok(sorted and unique, "newest first, each once")
  local at
  for i, r in ipairs(all) do if r.id == "alpha-0101" then at = i end end
  t.eq({ all[2].id, all[at + 1].id, all[at + 2].id }, { "alpha-0200", "beta-0100", "alpha-0100" },
    "both workflows interleaved by start time")
  t.eq(all[1].id, "zz-damaged", "the damaged journal (its start is its file's time)")
  t.eq(all[1].state, "damaged", "listed as damaged")
  t.like(all[1].error, "damaged journal line", "with its error")
  local st, doc = s:get("/api/v1/runs?workflow=beta&state=failed&limit=500")
  t.eq(#doc.runs, 33, "beta's failed runs (every third of 100)")
  st, doc = s:get(string.format("/api/v1/runs?workflow=alpha&since=%d&before=%d&limit=500",
    T0 + 10 * 3600, T0 + 20 * 3600))
  t.eq(#doc.runs, 10, "a time range: since inclusive, before exclusive")
  t.eq({ doc.runs[1].id, doc.runs[10].id }, { "alpha-0019", "alpha-0010" }, "the right ten")
  st, doc = s:get("/api/v1/runs/alpha-0003")
  t.eq({ st, doc.state, doc.tasks[2].error.lines[1] }, { 200, "failed", "x: no" }, "one of them whole")
  st, doc = s:get("/api/v1/runs/zz-damaged")
  t.eq(st, 404, "a damaged run cannot be read whole")
  local _, text = s:get("/metrics")
  t.like(text, 'flowrun_runs{workflow="beta",state="failed"} 33\n', "metrics count them")
end)

t.test("runs of other processes: seen running, finished, interrupted", function()
  local events = flow.spawn(function() return s:get("/api/v1/events") end)
  local wf = s.wfdir .. "/slow.lua"
  local p = flow.spawn(function()
    return flow.exec({ FLOWRUN, "run", wf, "--state-dir", state, "--var", "every=0.4",
      "--log-format", "json" }, { timeout = 30 })
  end)
  local id
  for _ = 1, 100 do
    flow.sleep(0.05)
    local _, doc = s:get("/api/v1/runs?workflow=slow")
    if doc.runs[1] then id = doc.runs[1].id break end
  end
  t.ok(id ~= nil, "a run started by `flowrun run` appears in the list")
  local _, run = s:get("/api/v1/runs/" .. tostring(id))
  t.eq({ run.state, run.here, run.actions.cancel, run.actions.retry }, { "running", false, true, false },
    "running (its process holds it), not here; it can be cancelled (through the store), not retried")
  local body = select(2, s:get("/api/v1/runs/" .. id .. "/events"))
  local n = 0
  for _ in body:gmatch("event: %a+\ndata: {") do n = n + 1 end
  t.ok(n >= 3, "its changes were streamed as it went (" .. n .. " events)")
  t.like(body, "event: end", "to its end")
  local r = p:wait()
  t.eq(r.status, 0, "the process succeeded")
  flow.sleep(0.3)
  _, run = s:get("/api/v1/runs/" .. id)
  t.eq(run.state, "success", "and the server says so")
  -- a run of another process cancelled from the server: the store tells its holder, whose
  -- cleanup runs there
  local c = flow.spawn(function()
    return flow.exec({ FLOWRUN, "run", wf, "--state-dir", state, "--var", "every=5" }, { timeout = 30 })
  end)
  local cid
  for _ = 1, 100 do
    flow.sleep(0.05)
    local _, d = s:get("/api/v1/runs?workflow=slow&state=running")
    if d.runs[1] then cid = d.runs[1].id break end
  end
  local st, doc = s:post("/api/v1/runs/" .. tostring(cid) .. "/cancel", {})
  t.eq({ st, doc.state }, { 202, "cancelling" }, "another process's run: cancel requested (202)")
  local cr = c:wait()
  t.eq(cr.status, 130, "that process ends its run as cancelled (exit 130)")
  run = s:wait_state(cid, { "cancelled", "failed", "success" })
  t.eq({ run and run.state, run and s:task(run, "cleanup").state }, { "cancelled", "success" },
    "the server says so; the cleanup ran")
  -- a process killed mid-run: its run is interrupted, not running
  local k = flow.spawn(function()
    return flow.exec({ FLOWRUN, "run", wf, "--state-dir", state, "--var", "every=5" }, { timeout = 30 })
  end)
  local kid
  for _ = 1, 100 do
    flow.sleep(0.05)
    local _, d = s:get("/api/v1/runs?workflow=slow&state=running")
    for _, r in ipairs(d.runs) do if r.id ~= cid then kid = r.id end end
    if kid then break end
  end
  t.ok(kid ~= nil, "a second external run is running")
  local pid = select(2, s:get("/api/v1/runs/" .. tostring(kid))).pid
  sys.kill(pid, 9)
  k:wait()
  local got
  for _ = 1, 40 do
    flow.sleep(0.1)
    local _, d = s:get("/api/v1/runs?state=interrupted")
    if d.runs[1] and d.runs[1].id == kid then got = d.runs[1] break end
  end
  t.eq(got and got.state, "interrupted", "SIGKILLed: interrupted (its lock went with its process)")
  s.srv:close { grace = 1 }
  local _, ebody = events:wait()
  t.like(ebody, '"id":"' .. id:gsub("%-", "%%-") .. '"', "/events told the external run's changes")
  t.like(ebody, '"state":"success"', "including its end")
end)

t.done()
