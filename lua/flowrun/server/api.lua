-- flowrun.server.api — the JSON API: its routes (method, path pattern, the role needed,
-- whether it streams) and their handlers, over the data seam (reads) and the runner (actions).
-- web/openapi.json documents every route here (a test checks they agree).
--
-- A handler is fn(x) with x = {req, srv, p (path parameters), q (query), who (principal),
-- body (decoded JSON for POST)}; it returns status, a table (sent as JSON) and optional headers,
-- or streams the answer itself (Server-Sent Events) and returns nothing.
--
-- Every value that comes from a run (task names, parameters, results, errors, log lines) is
-- data in a JSON document, never markup; strings go through the redactor (secret names'
-- values, and the secret parameter values this server was given, are masked).
local flow = require "flow"
local json = require "json"
local redact = require "aws.redact"
local errors = require "flowrun.engine.errors"
local util = require "flowrun.server.util"
local layout = require "flowrun.server.layout"
local signal = require "flowrun.server.signal"
local data_mod = require "flowrun.server.data"

local M = {}

M.HEARTBEAT = 15 -- seconds between SSE comments that keep proxies from closing a quiet stream

local arr = json.array

local function fail(status, message, extra)
  local e = { code = "http." .. status, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return status, { error = e }
end
M.fail = fail

-- scrub(v) -> a copy of v where strings are redacted and values under secret names masked.
local function scrub(v, depth)
  local t = type(v)
  if t == "string" then return redact.text(v) end
  if t ~= "table" or v == json.null then return v end
  depth = (depth or 0) + 1
  if depth > 64 then return "<too deep>" end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" and redact.is_secret_name(k) then out[k] = redact.MASK
    else out[k] = scrub(x, depth) end
  end
  local mt = getmetatable(v)
  if mt then setmetatable(out, mt) end
  return out
end
M.scrub = scrub

---- shapes ----------------------------------------------------------------------------------------

local function summary_json(e)
  return { id = e.id, workflow = e.workflow or json.null, state = e.state, started = e.started,
    finished = e.finished or json.null,
    duration = (e.finished or e.last_t or e.started or 0) - (e.started or 0),
    exit = e.exit or json.null, reason = e.reason and redact.text(e.reason) or json.null,
    resumed = e.resumed or 0, tasks_total = e.tasks_total or 0,
    tasks_succeeded = e.tasks_succeeded or 0, tasks_failed = e.tasks_failed or 0,
    error = e.error and redact.text(e.error) or nil }
end
M.summary_json = summary_json

-- summary_text(e) -> the JSON of a summary, encoded once per change of the run (a finished run
-- never changes: listing 50 of them is then a concatenation, not 50 encodings).
local function summary_text(e)
  local t = e.text
  if not t then
    t = json.encode(summary_json(e))
    e.text = t
  end
  return t
end
M.summary_text = summary_text

local function error_json(err)
  if err == nil then return json.null end
  local r = errors.record(err)
  local out = scrub(r)
  out.message = out.message or ""
  out.lines = arr {}
  for line in (redact.text(errors.render(err)) .. "\n"):gmatch("([^\n]*)\n") do
    out.lines[#out.lines + 1] = line
  end
  while #out.lines > 0 and out.lines[#out.lines]:match("^%s*$") do out.lines[#out.lines] = nil end
  return out
end

-- The attempts of each task, from the journal's records: {attempt, started, finished, state}.
local function attempts_of(run, recs)
  local by = {}
  local open = {}
  local prev_t
  for i = 2, #recs do
    local r = recs[i]
    local ev = r.ev
    if ev == "task_started" then
      local a = { attempt = r.attempt, started = r.t, state = "running" }
      by[r.task] = by[r.task] or {}
      table.insert(by[r.task], a)
      open[r.task] = a
    elseif ev == "task_succeeded" or ev == "task_failed" or ev == "task_retry" then
      local a = open[r.task]
      if a then
        a.finished = r.t
        a.state = ev == "task_succeeded" and "success" or (ev == "task_retry" and "failed"
          or r.state or "failed")
        if r.error then a.error = (errors.headline(r.error, 300)) end
        if r.delay then a.retry_delay = r.delay end
        open[r.task] = nil
      end
    elseif ev == "run_resumed" then
      for name, a in pairs(open) do
        a.state, a.finished = "interrupted", prev_t
        open[name] = nil
      end
    end
    prev_t = r.t
  end
  if run.state ~= "running" then
    for _, a in pairs(open) do a.state, a.finished = "interrupted", run.last_t end
  end
  for _, list in pairs(by) do
    for _, a in ipairs(list) do
      if a.error then a.error = redact.text(a.error) end
    end
  end
  return by
end

-- run_parts(srv, run, recs) -> the run's fields (all but its tasks) and its tasks, as the API
-- gives them; run_json(srv, run, recs) -> the whole run.
function M.run_parts(srv, run, recs)
  local entry = run.workflow and srv.catalogue:get(run.workflow)
  local wf = entry and entry.wf
  local atts = attempts_of(run, recs)
  local progress = srv.runner:progress(run.id) or {}
  local tasks = arr {}
  for _, name in ipairs(run.task_order) do
    local t = run.tasks[name]
    local def = wf and wf.by_name[name]
    local hist = arr {}
    for _, h in ipairs(t.history or {}) do
      hist[#hist + 1] = { attempt = h.attempt, state = h.state or "failed", delay = h.delay,
        error = error_json(h.error) }
    end
    local p = progress[name]
    tasks[#tasks + 1] = {
      name = name, state = t.state, attempts = t.attempts, started = t.started or json.null,
      finished = t.finished or json.null, duration = t.duration or json.null,
      result = t.result == nil and json.null or scrub(t.result),
      error = t.state ~= "success" and error_json(t.error) or json.null,
      history = hist, attempt_list = arr(atts[name] or {}),
      cleanup = def and def.cleanup or false,
      after = def and arr(def.after) or arr {},
      progress = p and { pct = p.pct or json.null, msg = p.msg and redact.text(p.msg) or json.null }
        or json.null,
    }
  end
  local live = run.state == "running"
  return {
    id = run.id, workflow = run.workflow, file = run.file or json.null, state = run.state,
    exit = run.exit or json.null, reason = run.reason and redact.text(run.reason) or json.null,
    started = run.started, finished = run.finished or json.null,
    duration = (run.finished or run.last_t or run.started) - run.started,
    resumed = run.resumed, params = scrub(json.object(run.params or {})),
    secret_params = arr(run.secret_params or {}), truncated = run.truncated or false,
    sim = run.sim ~= nil, pid = run.pid or json.null,
    here = srv.runner:is_running(run.id),
    actions = { cancel = live or run.state == "queued",
      retry = run.state == "success" or run.state == "failed" or run.state == "cancelled" },
  }, tasks
end

function M.run_json(srv, run, recs)
  local fields, tasks = M.run_parts(srv, run, recs)
  fields.tasks = tasks
  return fields
end

---- workflows -------------------------------------------------------------------------------------

local function last_run(srv, name)
  local list = srv.data:workflow_runs(name, 1)
  local e = list and list[1]
  if not e then return json.null end
  return { id = e.id, state = e.state, started = e.started, finished = e.finished or json.null }
end

-- next_dues(srv) -> {workflow name -> epoch its next scheduled run is due}, from this server's
-- scheduler (empty when it runs none: --no-schedule).
local function next_dues(srv)
  local out = {}
  if srv.scheduler then
    for _, w in ipairs(srv.scheduler:workflows()) do
      if w.name and w.next_due then out[w.name] = w.next_due end
    end
  end
  return out
end

-- schedule_json(e, dues) -> the workflow's schedule as declared, with its next due time; or null.
local function schedule_json(e, dues)
  local sc = e.wf and e.wf.schedule
  if not sc then return json.null end
  return { expr = sc.expr, timezone = sc.timezone, catchup = sc.catchup,
    max_active_runs = sc.max_active_runs, overlap = sc.overlap,
    next_due = dues[e.name] or json.null }
end

local function workflow_item(srv, e, dues)
  local wf = e.wf
  return { name = e.name, file = e.file, doc = e.doc or json.null,
    error = e.error and redact.text(e.error) or json.null, duplicate_of = e.duplicate or json.null,
    loaded = wf ~= nil and not e.duplicate, paused = srv.runner:paused(e.name),
    schedule = schedule_json(e, dues),
    tasks = wf and #wf.order or 0, params = wf and #wf.param_order or 0,
    last_run = last_run(srv, e.name) }
end

local function h_workflows(x)
  local out = arr {}
  local dues = next_dues(x.srv)
  for _, e in ipairs(x.srv.catalogue:list()) do out[#out + 1] = workflow_item(x.srv, e, dues) end
  return 200, { workflows = out }
end

local function entry_of(x)
  local e = x.srv.catalogue:get(x.p.name)
  if not e then return nil, fail(404, "no workflow " .. x.p.name .. " in " .. x.srv.catalogue.dir) end
  if not e.wf then return nil, fail(409, "workflow " .. x.p.name .. " does not load: " .. redact.text(e.error or "?")) end
  return e
end

local function typename(p)
  local t = p.type or (p.default ~= nil and type(p.default)) or "string"
  if t == "number" and math.type(p.default) == "integer" then return "integer" end
  if t == "table" then return "json" end
  return t
end

-- The values a form starts from: defaults < the server's vars files < FLOWRUN_VAR_<NAME>,
-- resolved as a run would be (required parameters nobody gave stay empty).
local function form_values(wf, vars_files)
  local fill = {}
  for _ = 1, 2 do
    local params, sources = wf:resolve_params { vars = fill, vars_files = vars_files }
    if params then
      for k in pairs(fill) do params[k], sources[k] = nil, nil end
      return params, sources
    end
    local again = false
    for _, p in ipairs(sources) do
      local name = p:match("^parameter ([%w_]+) is required")
      if name and not fill[name] then
        local t = typename(wf.params[name])
        fill[name] = (t == "json" and "[]") or ((t == "number" or t == "integer") and "0")
          or (t == "boolean" and "false") or "x"
        again = true
      end
    end
    if not again then break end
  end
  local params, sources = {}, {}
  for name, p in pairs(wf.params) do
    if p.default ~= nil then params[name], sources[name] = p.default, "default" end
  end
  return params, sources
end

local function h_workflow(x)
  local e, s, b = entry_of(x)
  if not e then return s, b end
  local wf = e.wf
  local values, sources = form_values(wf, x.srv.vars_files)
  local params = arr {}
  for _, name in ipairs(wf.param_order) do
    local p = wf.params[name]
    local v = values[name]
    params[#params + 1] = { name = name, type = typename(p), required = p.required or false,
      secret = p.secret or false, doc = p.doc or json.null,
      default = (p.secret or p.default == nil) and json.null or scrub(p.default),
      value = (p.secret or v == nil) and json.null or scrub(v),
      source = sources[name] or json.null, has_value = v ~= nil }
  end
  local tasks = arr {}
  for _, t in ipairs(wf.order) do
    tasks[#tasks + 1] = { name = t.name, after = arr(t.after), cleanup = t.cleanup or false,
      trigger = t.trigger or "all_success", retries = t.retries or 0,
      timeout = t.timeout or json.null, doc = t.doc or json.null }
  end
  local item = workflow_item(x.srv, e, next_dues(x.srv))
  item.params, item.task_list = params, tasks
  return 200, item
end

local function h_workflow_graph(x)
  local e, s, b = entry_of(x)
  if not e then return s, b end
  local lay, err = layout.of(e.wf)
  if not lay then return fail(500, err) end
  return 200, lay
end

-- POST /workflows/{name}/runs {params: {name: value}}: values as --var takes them (strings;
-- numbers and booleans are written as text, lists and objects as JSON text).
local function h_trigger(x)
  local e, s, b = entry_of(x)
  if not e then return s, b end
  local given = x.body.params
  if given ~= nil and (type(given) ~= "table" or json.is_array(given) and next(given) ~= nil) then
    return fail(400, "params must be an object of parameter values")
  end
  local vars = {}
  for k, v in pairs(given or {}) do
    if type(k) ~= "string" then return fail(400, "params must be an object of parameter values") end
    if v == json.null then
      -- null: leave the parameter to its default
    elseif type(v) == "table" then vars[k] = json.encode(v)
    elseif type(v) == "boolean" then vars[k] = v and "true" or "false"
    elseif math.type(v) == "integer" then vars[k] = string.format("%d", v)
    else vars[k] = tostring(v) end
  end
  local id, status, err = x.srv.runner:trigger(e, vars, x.who.name)
  if not id then
    local problems
    if err.problems then
      problems = arr {}
      for _, p in ipairs(err.problems) do
        problems[#problems + 1] = { param = p:match("^parameter ([%w_]+)") or p:match("^%-%-var ([%w_]+)")
          or json.null, message = redact.text(p) }
      end
    end
    return fail(status, redact.text(err.message), { problems = problems })
  end
  return 201, { id = id, url = "/runs/" .. util.escape(id) }, { { "Location", "/api/v1/runs/" .. util.escape(id) } }
end

local function h_pause(on)
  return function(x)
    local e = x.srv.catalogue:get(x.p.name)
    if not e then return fail(404, "no workflow " .. x.p.name) end
    x.srv.runner:set_paused(e.name, on, x.who.name)
    return 200, { name = e.name, paused = on }
  end
end

---- runs ----------------------------------------------------------------------------------------

local function int_arg(q, name, default)
  local v = q[name]
  if v == nil or v == "" then return default end
  local n = math.tointeger(tonumber(v))
  if not n then return nil, name .. " must be an integer" end
  return n
end

local LIST_HEADERS = { { "content-type", util.JSON_HEADERS["content-type"] }, { "cache-control", "no-store" } }
M.LIST_CACHE = 32 -- answers of GET /runs kept (by query) until the index changes

local function h_runs(x)
  -- a dashboard asks for the same page again and again: the answer is kept, by its query, for
  -- as long as no run changes (the index's mutation counter)
  local d = x.srv.data
  d:ensure()
  local key = x.req.query or ""
  local cache = x.srv.list_cache
  local hit = cache[key]
  if hit and hit.m == d.mutations then return 200, hit.text, LIST_HEADERS end
  local q = x.q
  local f = { workflow = q.workflow ~= "" and q.workflow or nil, cursor = q.cursor ~= "" and q.cursor or nil }
  local limit, lerr = int_arg(q, "limit", 50)
  if not limit then return fail(400, lerr) end
  f.limit = limit
  if q.state and q.state ~= "" then
    f.state = {}
    for s in q.state:gmatch("[^,%s]+") do
      if not data_mod.STATES[s] then
        return fail(400, "state " .. s .. " is not one of running, interrupted, success, failed, "
          .. "cancelled, damaged")
      end
      f.state[s] = true
    end
  end
  for _, k in ipairs { "since", "before" } do
    if q[k] and q[k] ~= "" then
      f[k] = util.parse_time(q[k])
      if not f[k] then return fail(400, k .. " must be a time (ISO 8601 or epoch seconds)") end
    end
  end
  local list, next_or_err = x.srv.data:runs(f)
  if not list then return fail(400, next_or_err) end
  local out = {}
  for i, e in ipairs(list) do out[i] = summary_text(e) end
  -- {"next": ..., "runs": [...]}, keys in the encoder's (sorted) order
  local text = '{"next":' .. json.encode(next_or_err or json.null) .. ',"runs":[' .. table.concat(out, ",")
    .. "]}"
  x.srv.list_cached = (x.srv.list_cached or 0) + 1
  if x.srv.list_cached > M.LIST_CACHE then
    x.srv.list_cache, x.srv.list_cached = {}, 1
    cache = x.srv.list_cache
  end
  cache[key] = { m = d.mutations, text = text }
  return 200, text, LIST_HEADERS
end

local function load_run(x)
  local run, recs = x.srv.data:run(x.p.id)
  if not run then return nil, fail(404, "no run " .. x.p.id) end
  return run, recs
end

local function h_run(x)
  local run, recs, b = load_run(x)
  if not run then return recs, b end
  return 200, M.run_json(x.srv, run, recs)
end

-- The graph of a run: its workflow's, when the workflow still has the run's tasks; else the
-- workflow file the run recorded; else the run's tasks without edges.
local function h_run_graph(x)
  local run, recs, b = load_run(x)
  if not run then return recs, b end
  local wf
  local e = run.workflow and x.srv.catalogue:get(run.workflow)
  local function has_all(w)
    if not w then return false end
    for _, n in ipairs(run.task_order) do if not w.by_name[n] then return false end end
    return true
  end
  if e and has_all(e.wf) then wf = e.wf end
  if not wf and run.file then
    local w = require("flowrun.server.catalogue").load_text(run.file)
    if has_all(w) then wf = w end
  end
  if not wf then
    wf = require("flow.workflow").new { name = run.workflow or "run" }
    for _, n in ipairs(run.task_order) do wf:task(n, function() end) end
    if not wf:validate() then return fail(500, "the run's tasks cannot be drawn") end
  end
  local lay, err = layout.of(wf)
  if not lay then return fail(500, err) end
  return 200, lay
end

local function h_cancel(x)
  local state, status, msg = x.srv.runner:cancel(x.p.id, x.who.name)
  if not state then return fail(status, msg) end
  return 202, { id = x.p.id, state = state }
end

local function h_retry(x)
  local task = x.body.task
  if type(task) ~= "string" or task == "" then return fail(400, "task: the name of a task is required") end
  local force = x.body.force == true
  local id, status, msg = x.srv.runner:retry(x.p.id, task, x.who.name, force)
  if not id then return fail(status, redact.text(msg)) end
  return 202, { id = id, task = task, url = "/runs/" .. util.escape(id) }
end

local function h_grid(x)
  local limit, lerr = int_arg(x.q, "limit", 20)
  if not limit or limit < 1 or limit > 100 then return fail(400, lerr or "limit must be from 1 to 100") end
  local out = arr {}
  local dues = next_dues(x.srv)
  for _, e in ipairs(x.srv.catalogue:list()) do
    if not e.duplicate then
      local names = arr {}
      if e.wf then for i, t in ipairs(e.wf.order) do names[i] = t.name end end
      local runs = arr {}
      local list = x.srv.data:workflow_runs(e.name, limit) or {}
      for i = #list, 1, -1 do -- oldest first, the newest on the right
        local r = list[i]
        local states = {}
        for j, n in ipairs(r.task_names or {}) do states[n] = r.task_states[j] end
        local s = summary_json(r)
        s.tasks = json.object(states)
        runs[#runs + 1] = s
      end
      -- tasks a run had that the workflow no longer has are rows too
      local seen = {}
      for _, n in ipairs(names) do seen[n] = true end
      for _, r in ipairs(list) do
        for _, n in ipairs(r.task_names or {}) do
          if not seen[n] then seen[n] = true; names[#names + 1] = n end
        end
      end
      out[#out + 1] = { name = e.name, tasks = names, runs = runs, paused = x.srv.runner:paused(e.name),
        schedule = schedule_json(e, dues), error = e.error and redact.text(e.error) or json.null }
    end
  end
  return 200, { workflows = out }
end

local function h_logs_json(x, id, o)
  local lines, last = x.srv.data:logs(id, o)
  local out = arr {}
  for i, l in ipairs(lines) do
    out[i] = { seq = l.seq, t = l.t, task = l.task or json.null, attempt = l.attempt or json.null,
      msg = redact.text(l.msg), truncated = l.truncated or nil }
  end
  return out, last
end

---- Server-Sent Events ----------------------------------------------------------------------------

local SSE_HEADERS = {
  { "content-type", "text/event-stream; charset=utf-8" },
  { "cache-control", "no-store" },
  { "x-accel-buffering", "no" }, -- nginx as a reverse proxy: do not buffer the stream
}

local function sse(x)
  x.req:start(200, x.srv:headers(SSE_HEADERS))
  x.req:write("retry: 2000\n\n")
  x.srv.sse = x.srv.sse + 1
end

local function event(name, payload, id)
  return (id and ("id: " .. id .. "\n") or "") .. "event: " .. name .. "\ndata: " .. payload .. "\n\n"
end

local function finished(srv, id)
  if srv.runner:is_running(id) then return false end
  local e = srv.data:summary(id)
  return e ~= nil and e.state ~= "running" and e.state ~= "queued"
end

-- The end of a stream: the run's watch released (w), the stream counted out, finished; its
-- error raised unless it is the client going away or the server stopping.
local function close_stream(x, w, ok, err)
  if w then x.srv.data:unwatch_run(w) end
  x.srv.sse = x.srv.sse - 1
  if ok then x.req:finish() end
  if not ok and not (flow.cancelled(err) or flow.is_error(err, "http.closed")) then error(err, 0) end
end

-- GET /runs/{id}/events: the whole run at once ("run"), then after every change what changed
-- ("delta": {run: the run's fields, tasks: the tasks that changed}; the whole run again when
-- this stream fell behind), then "end".
local function h_run_events(x)
  local srv, id = x.srv, x.p.id
  local run = srv.data:run(id)
  if not run then return fail(404, "no run " .. id) end
  local w = srv.data:watch_run(id)
  sse(x)
  local ok, err = pcall(function()
    local sent = -1 -- versions start at 0: the first look sends the whole run
    while true do
      if w.state ~= sent then
        local text, v = srv:snapshot(id, w, sent)
        if text then x.req:write(text) end
        sent = v
      end
      if w.state == sent and finished(srv, id) then
        x.req:write(event("end", "{}"))
        return
      end
      if w.state == sent and not w.sig.state:wait(M.HEARTBEAT) then
        if srv.closed then return end
        if w.state == sent then x.req:write(": keep-alive\n\n") end
      end
    end
  end)
  close_stream(x, w, ok, err)
end

local function log_filter(x)
  local o = {}
  if x.q.task and x.q.task ~= "" then o.task = x.q.task end
  if x.q.attempt and x.q.attempt ~= "" then
    o.attempt = math.tointeger(tonumber(x.q.attempt))
    if not o.attempt or o.attempt < 1 then return nil, "attempt must be a positive integer" end
  end
  local after, err = int_arg(x.q, "after", 0)
  if not after then return nil, err end
  local leid = x.req.headers["last-event-id"]
  if leid and math.tointeger(tonumber(leid)) then after = math.tointeger(tonumber(leid)) end
  o.after = after
  return o
end

-- GET /runs/{id}/logs: JSON {lines, next}; with ?follow=1 or Accept: text/event-stream, an SSE
-- stream of "log" events (id: the last line's seq, so a reconnecting EventSource resumes), then
-- "end" once the run is over and every line was sent.
local function h_logs(x)
  local srv, id = x.srv, x.p.id
  local run = srv.data:run(id)
  if not run then return fail(404, "no run " .. id) end
  local o, oerr = log_filter(x)
  if not o then return fail(400, oerr) end
  if o.task and not run.tasks[o.task] then return fail(404, "run " .. id .. " has no task " .. o.task) end
  local accept = x.req.headers.accept or ""
  local follow = x.q.follow == "1" or x.q.follow == "true" or accept:find("text/event-stream", 1, true)
  if not follow then
    local limit, lerr = int_arg(x.q, "limit", 5000)
    if not limit or limit < 1 then return fail(400, lerr or "limit must be positive") end
    o.limit = limit
    local lines, last = h_logs_json(x, id, o)
    return 200, { lines = lines, next = last }
  end
  local w = srv.data:watch_run(id)
  sse(x)
  local ok, err = pcall(function()
    local after = o.after
    while true do
      o.after, o.limit = after, 1000
      local lines, last = h_logs_json(x, id, o)
      if #lines > 0 then x.req:write(event("log", json.encode(lines), tostring(last))) end
      local more = last > after
      after = last
      if not more and finished(srv, id) then
        -- a last look: lines written just before the end
        o.after = after
        local rest, l2 = h_logs_json(x, id, o)
        if #rest > 0 then x.req:write(event("log", json.encode(rest), tostring(l2))) end
        x.req:write(event("end", "{}"))
        return
      end
      if not more then
        local got = signal.wait_many({ w.sig.log, w.sig.state }, M.HEARTBEAT)
        if srv.closed then return end
        if not got then x.req:write(": keep-alive\n\n") end
      end
    end
  end)
  close_stream(x, w, ok, err)
end

-- GET /events: "runs" events listing the runs that changed (summaries), at most 4 a second.
local function h_events(x)
  local srv = x.srv
  sse(x)
  local ok, err = pcall(function()
    local seen = srv.data.version
    while true do
      local v, ids = srv.data:wait_any(seen, M.HEARTBEAT)
      if srv.closed then return end
      if v == seen then
        x.req:write(": keep-alive\n\n")
      else
        seen = v
        local runs = arr {}
        if ids then
          for _, id in ipairs(ids) do
            local e = srv.data:summary(id)
            if e then runs[#runs + 1] = summary_json(e) end
          end
        end
        x.req:write(event("runs", json.encode { version = v, runs = runs, all = ids == nil }))
        flow.sleep(0.25)
      end
    end
  end)
  close_stream(x, nil, ok, err)
end

---- the rest ------------------------------------------------------------------------------------

local function h_health(x)
  return 200, { ok = true, version = require("flow.sys").version, runs_indexed = x.srv.data.ready
    and x.srv.data:size() or json.null }
end

local function h_me(x)
  return 200, { role = x.who.role, name = x.who.name, via = x.who.via,
    open = x.srv.auth.open, sim = x.srv.sim ~= nil }
end

local function h_metrics(x)
  return 200, x.srv.metrics:render(), { { "content-type", "text/plain; version=0.0.4; charset=utf-8" } }
end

-- The routes. auth: "none", "viewer" or "operator". stream: the handler answers itself and is
-- not shielded from the server's shutdown (streams are closed, other requests finish).
M.ROUTES = {
  { "GET", "/api/v1/health", h_health, auth = "none" },
  { "GET", "/api/v1/me", h_me, auth = "viewer" },
  { "GET", "/api/v1/workflows", h_workflows, auth = "viewer" },
  { "GET", "/api/v1/workflows/{name}", h_workflow, auth = "viewer" },
  { "GET", "/api/v1/workflows/{name}/graph", h_workflow_graph, auth = "viewer" },
  { "POST", "/api/v1/workflows/{name}/runs", h_trigger, auth = "operator" },
  { "POST", "/api/v1/workflows/{name}/pause", h_pause(true), auth = "operator" },
  { "POST", "/api/v1/workflows/{name}/unpause", h_pause(false), auth = "operator" },
  { "GET", "/api/v1/runs", h_runs, auth = "viewer" },
  { "GET", "/api/v1/runs/{id}", h_run, auth = "viewer" },
  { "GET", "/api/v1/runs/{id}/graph", h_run_graph, auth = "viewer" },
  { "GET", "/api/v1/runs/{id}/events", h_run_events, auth = "viewer", stream = true },
  { "GET", "/api/v1/runs/{id}/logs", h_logs, auth = "viewer", stream = true },
  { "POST", "/api/v1/runs/{id}/cancel", h_cancel, auth = "operator" },
  { "POST", "/api/v1/runs/{id}/retry", h_retry, auth = "operator" },
  { "GET", "/api/v1/grid", h_grid, auth = "viewer" },
  { "GET", "/api/v1/events", h_events, auth = "viewer", stream = true },
  { "GET", "/metrics", h_metrics, auth = "viewer" },
}

M.event = event
return M
