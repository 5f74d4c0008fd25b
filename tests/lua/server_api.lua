-- The server's JSON API on a loopback port, without tokens (the open mode of 127.0.0.1): every
-- route, its answers and its error statuses; parameters validated as the command line
-- validates them; runs triggered, followed (SSE), cancelled and retried; secrets never shown;
-- /metrics in the Prometheus text format.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local sys = require "flow.sys"
local h = require "server_harness"

local s = h.start { name = "server_api" }
local JSON = { ["Content-Type"] = "application/json" }

local function trigger(name, params)
  local status, doc = s:post("/api/v1/workflows/" .. name .. "/runs", { params = params or {} })
  return status, doc
end

t.test("health, me, unknown paths and methods", function()
  local st, doc, r = s:get("/api/v1/health")
  t.eq({ st, doc.ok }, { 200, true }, "health")
  t.like(r.headers["content-security-policy"] or "", "default%-src 'none'", "CSP on API answers")
  t.like(r.headers["content-security-policy"] or "", "script%-src 'self'", "scripts from this server only")
  t.eq(r.headers["x-content-type-options"], "nosniff", "nosniff")
  t.eq(r.headers["x-frame-options"], "DENY", "no framing")
  st, doc = s:get("/api/v1/me")
  t.eq({ st, doc.role, doc.via, doc.open }, { 200, "operator", "open", true },
    "no tokens on loopback: everyone is an operator")
  st, doc, r = s:get("/api/v1/nothing-here")
  t.eq({ st, doc.error.code }, { 404, "http.404" }, "unknown path: 404 with an error object")
  t.like(r.headers["content-security-policy"] or "", "default%-src", "CSP on errors too")
  st, doc, r = s:request("DELETE", "/api/v1/runs")
  t.eq({ st, r.headers.allow }, { 405, "GET, HEAD" }, "wrong method: 405 with Allow")
  st, doc, r = s:get("/api/v1/workflows/hello/runs")
  t.eq({ st, r.headers.allow }, { 405, "POST" }, "GET on a POST route: 405")
  st = s:get("/static/%2e%2e/README.md")
  t.eq(st, 400, "a path climbing out of the web directory is refused")
  st = s:get("/static/js%2F..%2F..%2FREADME.md")
  t.eq(st, 400, "also with its slashes encoded")
  st = s:get("/static/js%5C..%5C..%5CREADME.md")
  t.eq(st, 400, "or as backslashes")
  st = s:get("/api/v1/runs/a%2Fb")
  t.eq(st, 400, "a run id cannot hold a slash")
  st = s:get("/api/v1/health", { Host = "evil.example:80" })
  t.eq(st, 403, "without tokens, a Host that is not loopback is refused (DNS rebinding)")
  st = s:get("/api/v1/health", { Host = "localhost:1234" })
  t.eq(st, 200, "Host localhost is this server")
end)

t.test("workflows: list, one with its parameters, graph", function()
  local st, doc = s:get("/api/v1/workflows")
  t.eq(st, 200, "list")
  local by = {}
  for _, w in ipairs(doc.workflows) do by[w.name] = w end
  t.eq({ by.hello.loaded, by.hello.tasks, by.hello.params, by.hello.paused },
    { true, 4, 9, false }, "hello: loaded, 4 tasks, 9 parameters")
  t.eq(by.hello.doc, "says hello, and fails on demand", "its doc")
  t.ok(by.broken and by.broken.error ~= json.null and by.broken.loaded == false,
    "a file that does not load is listed with its error")
  t.like(by.broken.error, "unknown option", "the error says why")
  st, doc = s:get("/api/v1/workflows/hello")
  t.eq(st, 200, "one workflow")
  local p = {}
  for _, x in ipairs(doc.params) do p[x.name] = x end
  t.eq({ p.n.type, p.n.default, p.ratio.type, p.loud.type, p.tags.type, p.who.type },
    { "integer", 3, "number", "boolean", "json", "string" }, "types for the form")
  t.eq({ p.target.required, p.target.has_value, p.who.required }, { true, false, false },
    "required flags")
  t.eq({ p.token.secret, p.token.default, p.token.value }, { true, json.null, json.null },
    "a secret parameter: no default, no value shown")
  t.eq(p.who.doc, "whom to greet", "docs")
  t.eq(#doc.task_list, 4, "the tasks")
  t.eq(doc.task_list[4].cleanup, true, "the cleanup task is marked")
  st = s:get("/api/v1/workflows/nope")
  t.eq(st, 404, "unknown workflow: 404")
  st = s:get("/api/v1/workflows/broken")
  t.eq(st, 409, "a workflow that does not load: 409")
  st, doc = s:get("/api/v1/workflows/hello/graph")
  t.eq(st, 200, "graph")
  t.eq(#doc.nodes, 4, "four nodes laid out")
  t.eq(#doc.edges, 3, "three edges")
  local ok = true
  for _, n in ipairs(doc.nodes) do
    ok = ok and n.x > 0 and n.y > 0 and n.x < doc.width and n.y < doc.height and n.w > 0
  end
  t.ok(ok, "positions inside the drawing (Graphviz laid them out)")
  local greet, tidy
  for _, n in ipairs(doc.nodes) do
    if n.name == "greet" then greet = n elseif n.name == "tidy" then tidy = n end
  end
  t.ok(greet.x < tidy.x, "left to right in dependency order")
  t.eq(tidy.cleanup, true, "cleanup marked in the layout")
  st = s:get("/api/v1/workflows/nope/graph")
  t.eq(st, 404, "graph of an unknown workflow: 404")
end)

t.test("trigger: parameters validated as the command line validates them", function()
  local st, doc = trigger("hello", {})
  t.eq(st, 400, "a required parameter missing: 400")
  t.eq(doc.error.problems[1].param, "target", "the problem names the parameter")
  t.like(doc.error.problems[1].message, "parameter target is required", "as the CLI says it")
  st, doc = trigger("hello", { target = "x", n = "many" })
  t.eq({ st, doc.error.problems[1].param }, { 400, "n" }, "a bad integer: 400 naming it")
  t.like(doc.error.problems[1].message, 'expected a number, got "many"', "the CLI's message")
  st, doc = trigger("hello", { target = "x", n = 2.5 })
  t.eq({ st, doc.error.problems[1].param }, { 400, "n" }, "not an integer")
  st, doc = trigger("hello", { target = "x", bogus = 1 })
  t.eq(st, 400, "an unknown parameter: 400")
  t.like(doc.error.problems[1].message, "unknown parameter", "named")
  st, doc = trigger("hello", { target = "x", tags = "not json" })
  t.eq({ st, doc.error.problems[1].param }, { 400, "tags" }, "a table parameter needs JSON")
  st = s:post("/api/v1/workflows/hello/runs", "[1,2]", JSON)
  t.eq(st, 400, "a body that is not an object: 400")
  st = s:post("/api/v1/workflows/hello/runs", "{bad json", JSON)
  t.eq(st, 400, "a body that is not JSON: 400")
  st = s:post("/api/v1/workflows/hello/runs", "params[target]=x",
    { ["Content-Type"] = "application/x-www-form-urlencoded" })
  t.eq(st, 415, "a form body: 415")
  st = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } },
    { Origin = "http://evil.example" })
  t.eq(st, 403, "from another origin: 403")
  st = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } },
    { ["Sec-Fetch-Site"] = "cross-site" })
  t.eq(st, 403, "a cross-site fetch without Origin: 403")
  st = trigger("nope", {})
  t.eq(st, 404, "unknown workflow: 404")
  st = trigger("broken", {})
  t.eq(st, 409, "a workflow that does not load: 409")
end)

local ok_id, failed_id

t.test("a run: triggered, listed, read whole, its logs", function()
  local st, doc, r = s:post("/api/v1/workflows/hello/runs",
    { params = { target = "prod", n = 7, loud = true, tags = { "x", "y" }, token = "s3cr3t-value-123" } },
    { Origin = s.url })
  t.eq(st, 201, "201 Created (same origin)")
  t.like(r.headers.location, "^/api/v1/runs/", "Location")
  ok_id = doc.id
  local run = s:wait_state(ok_id, { "success", "failed" })
  t.ok(run ~= nil, "the run finished")
  t.eq(run.state, "success", "and succeeded")
  t.eq({ run.params.n, run.params.loud, run.params.tags, run.params.target },
    { 7, true, { "x", "y" }, "prod" }, "typed parameters, as --var gives them")
  t.eq(run.params.token, nil, "the secret parameter is not kept")
  t.eq(run.secret_params, { "token" }, "only its name")
  t.eq(#run.tasks, 4, "four tasks")
  local greet = s:task(run, "greet")
  t.eq({ greet.state, greet.attempts, greet.result.n }, { "success", 1, 7 }, "a task: state, attempts, result")
  t.eq(#greet.attempt_list, 1, "its attempts")
  t.ok(greet.attempt_list[1].finished >= greet.attempt_list[1].started, "with their times")
  st, doc = s:get("/api/v1/runs/" .. ok_id .. "/logs")
  t.eq(st, 200, "logs")
  local text = {}
  for _, l in ipairs(doc.lines) do text[#text + 1] = l.msg end
  text = table.concat(text, "\n")
  t.like(text, "<script>alert%(1%)</script>", "markup stays data (the page shows it as text)")
  t.unlike(text, "s3cr3t%-value%-123", "the secret value a task logged is masked")
  t.like(text, "the secret is <redacted>", "as <redacted>")
  st, doc = s:get("/api/v1/runs/" .. ok_id .. "/logs?task=check")
  t.eq({ st, #doc.lines, doc.lines[1].msg }, { 200, 1, "check ok" }, "one task's lines")
  st, doc = s:get("/api/v1/runs/" .. ok_id .. "/logs?task=greet&after=2")
  t.eq(doc.lines[1].msg, "greeted", "after a seq")
  st, doc = s:get("/api/v1/runs/" .. ok_id .. "/logs?task=greet&attempt=2")
  t.eq({ st, #doc.lines }, { 200, 0 }, "another attempt: none")
  st = s:get("/api/v1/runs/" .. ok_id .. "/logs?task=nope")
  t.eq(st, 404, "unknown task: 404")
  st = s:get("/api/v1/runs/" .. ok_id .. "/logs?attempt=zero")
  t.eq(st, 400, "a bad attempt: 400")
  st = s:get("/api/v1/runs/nope-run")
  t.eq(st, 404, "unknown run: 404")
  st = s:get("/api/v1/runs/nope-run/logs")
  t.eq(st, 404, "logs of an unknown run: 404")
  st, doc = s:get("/api/v1/runs/" .. ok_id .. "/graph")
  t.eq({ st, #doc.nodes }, { 200, 4 }, "the run's graph")
end)

t.test("a failed task: its whole error as lines; retry runs it and what follows", function()
  local marker = s.dir .. "/marker"
  local st, doc = trigger("hello", { target = "x", fail_until = marker })
  t.eq(st, 201, "triggered")
  failed_id = doc.id
  local run = s:wait_state(failed_id, { "failed", "success" })
  t.eq(run and run.state, "failed", "the run failed")
  local check = s:task(run, "check")
  t.eq(check.state, "failed", "check failed")
  t.eq(check.error.code, "test.failed", "error code")
  t.eq(check.error.lines, { "test.failed: check failed: " .. marker .. " is missing", "--- detail ---",
    "line two", "line three" }, "the error's lines, intact")
  t.eq({ s:task(run, "report").state, s:task(run, "tidy").state }, { "upstream_failed", "success" },
    "downstream upstream_failed, the cleanup ran")
  t.eq(run.actions, { cancel = false, retry = true }, "a finished run can be retried")
  st, doc = s:post("/api/v1/runs/" .. failed_id .. "/retry", {})
  t.eq(st, 400, "retry without a task: 400")
  st, doc = s:post("/api/v1/runs/" .. failed_id .. "/retry", { task = "nope" })
  t.eq(st, 400, "retry of an unknown task: 400")
  st = s:post("/api/v1/runs/nope-run/retry", { task = "check" })
  t.eq(st, 404, "retry of an unknown run: 404")
  h.copy(s.wfdir .. "/hello.lua", marker)
  st, doc = s:post("/api/v1/runs/" .. failed_id .. "/retry", { task = "check" })
  t.eq({ st, doc.id, doc.task }, { 202, failed_id, "check" }, "retry: 202, the same run")
  st = s:post("/api/v1/runs/" .. failed_id .. "/retry", { task = "check" })
  t.ok(st == 409 or st == 202, "a second retry while the first may still run: 409 (or already done)")
  run = s:wait_state(failed_id, { "success", "failed" })
  t.eq(run and run.state, "success", "the retried run succeeded")
  t.eq({ s:task(run, "greet").attempts, s:task(run, "check").attempts, s:task(run, "report").state },
    { 1, 2, "success" }, "greet kept, check ran again (attempt 2), report ran")
  t.eq(run.resumed, 1, "recorded as resumed")
  -- a changed workflow file: refused unless forced
  local f = assert(io.open(s.wfdir .. "/hello.lua", "a"))
  f:write("\n-- edited\n")
  f:close()
  st, doc = s:post("/api/v1/runs/" .. failed_id .. "/retry", { task = "report" })
  t.eq(st, 409, "the workflow changed since the run started: 409")
  t.like(doc.error.message, "changed since", "says why")
  st, doc = s:post("/api/v1/runs/" .. failed_id .. "/retry", { task = "report", force = true })
  t.eq(st, 202, "with force: retried")
  run = s:wait_state(failed_id, { "success", "failed" })
  t.eq({ run.state, s:task(run, "check").attempts, s:task(run, "report").attempts }, { "success", 2, 2 },
    "report ran again, check did not")
end)

t.test("cancel: the running tasks stop, the cleanup runs", function()
  local st, doc = trigger("slow", { every = 5 })
  t.eq(st, 201, "a slow run")
  local id = doc.id
  flow.sleep(0.3)
  local _, run = s:get("/api/v1/runs/" .. id)
  t.eq({ run.state, run.actions.cancel, run.here }, { "running", true, true }, "running here, cancellable")
  st = s:post("/api/v1/runs/" .. id .. "/retry", { task = "step1" })
  t.eq(st, 409, "retry while it runs: 409")
  st, doc = s:post("/api/v1/runs/" .. id .. "/cancel", {})
  t.eq({ st, doc.state }, { 202, "cancelling" }, "202 cancelling")
  run = s:wait_state(id, { "cancelled", "failed", "success" })
  t.eq(run and run.state, "cancelled", "the run ends cancelled")
  t.eq({ s:task(run, "step1").state, s:task(run, "step2").state, s:task(run, "cleanup").state },
    { "cancelled", "cancelled", "success" }, "its task cancelled, the rest not run, the cleanup ran")
  st, doc = s:post("/api/v1/runs/" .. id .. "/cancel", {})
  t.eq(st, 409, "cancel of a finished run: 409")
  t.like(doc.error.message, "already ended %(cancelled%)", "says so")
  st = s:post("/api/v1/runs/nope-run/cancel", {})
  t.eq(st, 404, "cancel of an unknown run: 404")
  st = s:post("/api/v1/runs/" .. id .. "/cancel", "")
  t.eq(st, 415, "a browser-style POST without a JSON body: 415")
end)

t.test("SSE: a run followed live, its logs followed live", function()
  local st, doc = trigger("slow", { every = 0.3 })
  local id = doc.id
  local logs_h = flow.spawn(function()
    return s:get("/api/v1/runs/" .. id .. "/logs?follow=1")
  end)
  local events_h = flow.spawn(function()
    return s:get("/api/v1/runs/" .. id .. "/events", { Accept = "text/event-stream" })
  end)
  local lst, lbody, lr = logs_h:wait()
  local est, ebody, er = events_h:wait()
  t.eq({ lst, est }, { 200, 200 }, "both streams answered 200")
  t.eq({ lr.headers["content-type"], er.headers["content-type"] },
    { "text/event-stream; charset=utf-8", "text/event-stream; charset=utf-8" }, "as event streams")
  t.like(lbody, "^retry: 2000\n\n", "a reconnection delay first")
  local msgs, ids = {}, {}
  for eid, data in lbody:gmatch("id: (%d+)\nevent: log\ndata: ([^\n]*)\n\n") do
    ids[#ids + 1] = tonumber(eid)
    for _, l in ipairs(json.decode(data)) do msgs[#msgs + 1] = l.msg end
  end
  t.eq(msgs, { "step 1 begins", "step 1 ends", "step 2 begins", "step 2 ends", "step 3 begins",
    "step 3 ends", "cleaning up" }, "every line, in order, as it came")
  t.ok(#ids >= 3, "in several events while the run went on (" .. #ids .. ")")
  t.like(lbody, "event: end\ndata: {}\n\n$", "then end")
  -- the whole run first, then deltas merged by task name, as the page merges them
  local states, model, kinds = {}, nil, {}
  for kind, data in ebody:gmatch("event: (%a+)\ndata: ([^\n]*)\n\n") do
    kinds[#kinds + 1] = kind
    local r = json.decode(data)
    if kind == "run" then
      model = r
    elseif kind == "delta" then
      for _, nt in ipairs(r.tasks) do
        for i, ot in ipairs(model.tasks) do if ot.name == nt.name then model.tasks[i] = nt end end
      end
      model.state = r.run.state
    end
    if model then states[#states + 1] = model.tasks[2].state end
  end
  t.eq(kinds[1], "run", "the whole run first")
  t.ok(#kinds >= 5 and kinds[2] == "delta", "then deltas (" .. table.concat(kinds, ",") .. ")")
  t.ok(#states >= 4, "the run sent again after its changes (" .. #states .. " events)")
  t.eq(model.state, "success", "the merged model ends as the run ended")
  local seen_running, last = false, states[#states]
  for _, x in ipairs(states) do if x == "running" then seen_running = true end end
  t.ok(seen_running, "step2 seen running")
  t.eq(last, "success", "and at last succeeded")
  t.like(ebody, "event: end\ndata: {}\n\n$", "then end")
  -- a reconnecting EventSource sends Last-Event-ID: it gets what follows
  local _, again = s:get("/api/v1/runs/" .. id .. "/logs?follow=1", { ["Last-Event-ID"] = tostring(ids[1]) })
  local first = again:match("event: log\ndata: (%b[])")
  t.ok(first and json.decode(first)[1].seq == ids[1] + 1, "Last-Event-ID resumes after that line")
  st = s:get("/api/v1/runs/nope-run/events")
  t.eq(st, 404, "events of an unknown run: 404")
end)

t.test("runs list: filters and pages", function()
  local st, doc = s:get("/api/v1/runs")
  t.eq(st, 200, "list")
  t.ok(#doc.runs >= 4, "the runs so far")
  local newest_first = true
  for i = 2, #doc.runs do newest_first = newest_first and doc.runs[i - 1].started >= doc.runs[i].started end
  t.ok(newest_first, "newest first")
  st, doc = s:get("/api/v1/runs?workflow=slow")
  local all_slow = #doc.runs == 2
  for _, r in ipairs(doc.runs) do all_slow = all_slow and r.workflow == "slow" end
  t.ok(all_slow, "by workflow")
  st, doc = s:get("/api/v1/runs?state=cancelled")
  t.eq(#doc.runs, 1, "by state")
  st, doc = s:get("/api/v1/runs?state=success,cancelled&workflow=slow")
  t.eq(#doc.runs, 2, "several states")
  st, doc = s:get("/api/v1/runs?limit=1")
  t.eq(#doc.runs, 1, "a page of one")
  t.ok(type(doc.next) == "string", "and the cursor of the next")
  local seen, pages, cursor = {}, 0, nil
  repeat
    st, doc = s:get("/api/v1/runs?limit=2" .. (cursor and ("&cursor=" .. cursor) or ""))
    pages = pages + 1
    for _, r in ipairs(doc.runs) do seen[#seen + 1] = r.id end
    cursor = doc.next ~= json.null and doc.next or nil
  until not cursor or pages > 20
  local _, whole = s:get("/api/v1/runs?limit=500")
  local ids = {}
  for i, r in ipairs(whole.runs) do ids[i] = r.id end
  t.eq(seen, ids, "pages of two give every run once, in order")
  local mid = whole.runs[2].started
  st, doc = s:get(string.format("/api/v1/runs?before=%.6f", mid))
  t.eq(doc.runs[1].id, whole.runs[3] and whole.runs[3].id or nil, "before a time")
  st, doc = s:get(string.format("/api/v1/runs?since=%.6f", mid))
  t.eq(#doc.runs, 2, "since a time")
  st, doc = s:get("/api/v1/runs?since=2000-01-01T00:00:00Z&before=2001-01-01")
  t.eq({ st, #doc.runs }, { 200, 0 }, "ISO 8601 times")
  for _, q in ipairs { "state=bogus", "limit=0", "limit=501", "limit=x", "since=yesterday", "cursor=nonsense" } do
    st = s:get("/api/v1/runs?" .. q)
    t.eq(st, 400, q .. ": 400")
  end
end)

t.test("grid, pause and unpause", function()
  local st, doc = s:get("/api/v1/grid?limit=5")
  t.eq(st, 200, "grid")
  local hello
  for _, w in ipairs(doc.workflows) do if w.name == "hello" then hello = w end end
  t.eq(hello.tasks, { "greet", "check", "report", "tidy" }, "rows: the tasks in order")
  t.eq(#hello.runs, 2, "columns: its runs")
  t.ok(hello.runs[1].started <= hello.runs[2].started, "oldest first (the newest on the right)")
  t.eq(hello.runs[2].tasks.check, "success", "each cell a task's state")
  st = s:get("/api/v1/grid?limit=0")
  t.eq(st, 400, "a bad limit: 400")
  st, doc = s:post("/api/v1/workflows/hello/pause", {})
  t.eq({ st, doc.paused }, { 200, true }, "paused")
  local _, w = s:get("/api/v1/workflows/hello")
  t.eq(w.paused, true, "shown as paused")
  -- in the store, where every scheduler (and flowrun schedules) reads it
  local f = io.open(s.state .. "/schedules/hello.json")
  local kept = f and json.decode(f:read("a"))
  if f then f:close() end
  t.ok(kept and kept.paused == true and kept.paused_by == "local", "kept in the store, with who")
  st, doc = s:post("/api/v1/workflows/hello/unpause", {})
  t.eq({ st, doc.paused }, { 200, false }, "unpaused")
  st = s:post("/api/v1/workflows/nope/pause", {})
  t.eq(st, 404, "pause of an unknown workflow: 404")
end)

t.test("metrics: the Prometheus text format", function()
  local st, text, r = s:get("/metrics")
  t.eq(st, 200, "200")
  t.like(r.headers["content-type"], "^text/plain; version=0%.0%.4", "the exposition format")
  local bad, families, samples = {}, {}, {}
  for line in text:gmatch("([^\n]*)\n") do
    local kind, fam = line:match("^# (%u+) ([%w_]+)")
    if kind then
      families[fam] = families[fam] or {}
      families[fam][kind] = line
    else
      local name, labels, value = line:match("^([%a_][%w_]*)(%b{}) (%S+)$")
      if not name then name, value = line:match("^([%a_][%w_]*) (%S+)$") end
      if not name or not tonumber(value == "+Inf" and "inf" or value) then bad[#bad + 1] = line
      else samples[#samples + 1] = { name = name, labels = labels or "", value = tonumber(value) } end
    end
  end
  t.eq(bad, {}, "every line is a comment or a sample")
  local sum = function(name, pattern)
    local n = 0
    for _, x in ipairs(samples) do
      if x.name == name and x.labels:find(pattern or "") then n = n + x.value end
    end
    return n
  end
  for _, fam in ipairs { "flowrun_runs", "flowrun_task_duration_seconds", "flowrun_aws_requests_total",
      "flowrun_aws_retries_total", "flowrun_aws_throttles_total", "flowrun_store_commit_seconds",
      "flowrun_http_requests_total", "flowrun_sse_clients", "flowrun_runs_active" } do
    t.ok(families[fam] and families[fam].HELP and families[fam].TYPE, fam .. ": HELP and TYPE")
  end
  t.eq(sum("flowrun_runs", 'workflow="slow",state="cancelled"'), 1, "runs by workflow and state")
  t.ok(sum("flowrun_task_duration_seconds_count") >= 10, "task durations observed")
  t.ok(sum("flowrun_store_commit_seconds_count") > 0, "store commits timed")
  t.ok(sum("flowrun_http_requests_total", 'status="404"') > 0, "HTTP answers by status")
  t.ok(sum("flowrun_task_duration_seconds_bucket", 'le="%+Inf"') == sum("flowrun_task_duration_seconds_count"),
    "histogram: +Inf bucket = count")
  t.unlike(text, "s3cr3t", "no secret in the metrics")
end)

t.test("AWS calls counted by service: calls, retries, throttles", function()
  local aws = require "aws"
  local n = 0
  aws.use_transport(function(req)
    n = n + 1
    if n <= 2 then
      return { status = 400, headers = { ["content-type"] = "application/x-amz-json-1.1" },
        body = '{"__type":"ThrottlingException","message":"Rate exceeded"}' }
    end
    return { status = 200, headers = { ["content-type"] = "application/x-amz-json-1.1" },
      body = '{"ReplicationTasks":[]}' }
  end)
  aws.configure { credentials = { access_key_id = "AKIDTEST", secret_access_key = "x" },
    region = "us-east-1", random = function() return 0 end }
  aws.dms.describe_replication_tasks {}
  aws.use_transport(nil)
  local _, text = s:get("/metrics")
  t.like(text, 'flowrun_aws_requests_total{service="dms",outcome="client_error"} 2\n', "two throttled attempts")
  t.like(text, 'flowrun_aws_requests_total{service="dms",outcome="ok"} 1\n', "then one that succeeded")
  t.like(text, 'flowrun_aws_throttles_total{service="dms"} 2\n', "throttles by service")
  t.like(text, 'flowrun_aws_retries_total{service="dms"} 2\n', "retries by service")
end)

s:stop()

t.test("a server that is closed ends its streams and its runs", function()
  local s2 = h.start { name = "server_close" }
  local _, doc = s2:post("/api/v1/workflows/slow/runs", { params = { every = 10 } })
  local id = doc.id
  flow.sleep(0.3)
  local follower = flow.spawn(function() return s2:get("/api/v1/runs/" .. id .. "/events") end)
  flow.sleep(0.2)
  local t0 = flow.now()
  s2:stop()
  pcall(follower.wait, follower)
  t.ok(flow.now() - t0 < 5, "closed within its grace")
  t.ok(follower:done(), "the follower's stream ended with it")
  local run = require("flowrun.engine.store.file").open(s2.state):load(id)
  t.eq(run.state, "cancelled", "the run it was running was cancelled (not left running)")
  t.eq(run.tasks.cleanup.state, "success", "its cleanup ran")
end)

t.test("only loopback without tokens", function()
  t.raises(function()
    require("flowrun.server").new { host = "0.0.0.0", store = {}, workflows = "/nonexistent" }
  end, "needs tokens", "0.0.0.0 without tokens: refused")
  t.raises(function()
    require("flowrun.server").new { host = "192.0.2.1", store = {} }
  end, "refusing to start an open server", "any other address too")
  local ok = pcall(require("flowrun.server").new, { host = "127.0.0.2", store = {} })
  t.ok(ok, "127.0.0.0/8 is loopback")
end)

t.done()
