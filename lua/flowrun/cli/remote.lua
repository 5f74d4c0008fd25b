-- flowrun.cli.remote — the commands that talk to a flowrun server through its API instead of
-- reading a store: `runs`, `show`, `logs`, `cancel` and `trigger` with --server URL (or
-- FLOWRUN_SERVER). The token is FLOWRUN_TOKEN, sent as `Authorization: Bearer`; it is never
-- printed. What they print is what the local commands print: the server's answers are turned
-- back into the shapes flowrun.cli.cmd.runs/show/logs print.
local flow = require "flow"
local json = require "json"
local common = require "flowrun.cli.common"

local M = {}

M.POLL = 0.5 -- seconds between looks while following (logs -f, trigger --wait)

local function nn(v) if v == json.null then return nil end return v end

local function base_url(opts)
  local u = opts.server or os.getenv("FLOWRUN_SERVER")
  if not u or u == "" then return nil, "no server: give --server URL or set FLOWRUN_SERVER" end
  if not u:match("^https?://[^/]+") then
    return nil, "--server expects a URL such as http://127.0.0.1:8080, got " .. string.format("%q", u)
  end
  return (u:gsub("/+$", ""))
end

local function esc(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end
M.esc = esc

-- call(opts, method, path, body) -> decoded answer | nil, message, status
function M.call(opts, method, path, body)
  local base, berr = base_url(opts)
  if not base then return nil, berr, 0 end
  local headers = { ["Accept"] = "application/json" }
  local token = os.getenv("FLOWRUN_TOKEN")
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  if body ~= nil then headers["Content-Type"] = "application/json" end
  local r, err = require("http").request { method = method, url = base .. path, headers = headers,
    body = body ~= nil and json.encode(body) or nil, timeout = 60, connect_timeout = 10 }
  if not r then
    return nil, "cannot reach " .. base .. ": " .. tostring(type(err) == "table" and err.message or err), 0
  end
  local ok, doc = pcall(json.decode, r.body ~= "" and r.body or "null")
  if r.status >= 400 then
    local msg = ok and type(doc) == "table" and doc.error and doc.error.message
      or ("HTTP " .. r.status)
    if r.status == 401 then msg = msg .. " (set FLOWRUN_TOKEN)" end
    return nil, msg, r.status, ok and doc or nil
  end
  if not ok then return nil, base .. path .. " did not answer JSON", r.status end
  return doc
end

local function fail(msg, status)
  common.eprint(msg)
  if status == 400 or status == 404 or status == 409 then return 2 end
  return 1
end

-- A run's id on the server: "last" is the newest run.
local function resolve_id(opts)
  local id = opts.run_id
  if id == "last" or id == "latest" then
    local page, err, status = M.call(opts, "GET", "/api/v1/runs?limit=1")
    if not page then return nil, err, status end
    if #page.runs == 0 then return nil, "no runs on the server", 404 end
    return page.runs[1].id
  end
  return id
end

-- A run as the API gives it, in the shape of flowrun.engine.replay's runs.
function M.replayed(d)
  local r = { id = d.id, workflow = d.workflow, file = nn(d.file), state = d.state, exit = nn(d.exit),
    reason = nn(d.reason), started = d.started, finished = nn(d.finished),
    last_t = nn(d.finished) or (d.started + (d.duration or 0)), params = d.params or {},
    secret_params = #(d.secret_params or {}) > 0 and d.secret_params or nil,
    resumed = d.resumed or 0, truncated = d.truncated or nil, tasks = {}, task_order = {} }
  for i, t in ipairs(d.tasks or {}) do
    local hist = {}
    for j, h in ipairs(t.history or {}) do
      local e = nn(h.error)
      hist[j] = { attempt = h.attempt, delay = nn(h.delay), state = h.state,
        error = e and { code = nn(e.code), message = nn(e.message) } or nil }
    end
    local e = nn(t.error)
    r.task_order[i] = t.name
    r.tasks[t.name] = { state = t.state, attempts = t.attempts or 0, duration = nn(t.duration),
      started = nn(t.started), finished = nn(t.finished), result = nn(t.result),
      error = e and { code = nn(e.code), message = nn(e.message) } or nil,
      history = #hist > 0 and hist or nil }
  end
  return r
end

function M.runs(opts)
  local list, cursor = {}, nil
  repeat
    local page, err, status = M.call(opts, "GET", "/api/v1/runs?limit=500"
      .. (cursor and ("&cursor=" .. esc(cursor)) or ""))
    if not page then return fail(err, status) end
    for _, r in ipairs(page.runs) do list[#list + 1] = r end
    cursor = nn(page.next)
  until not cursor
  local runs = {}
  for i = #list, 1, -1 do
    local r = list[i]
    runs[#runs + 1] = { id = r.id, workflow = nn(r.workflow), state = r.state, started = r.started,
      finished = nn(r.finished), last_t = r.started + (r.duration or 0), exit = nn(r.exit),
      error = nn(r.error), resumed = r.resumed or 0, tasks_total = r.tasks_total,
      tasks_succeeded = r.tasks_succeeded, tasks = {} }
  end
  return require("flowrun.cli.cmd.runs").print(runs, opts, base_url(opts))
end

function M.show(opts)
  local id, ierr, istatus = resolve_id(opts)
  if not id then return fail(ierr, istatus) end
  local d, err, status = M.call(opts, "GET", "/api/v1/runs/" .. esc(id))
  if not d then return fail(err, status) end
  return require("flowrun.cli.cmd.show").print(M.replayed(d), opts)
end

function M.logs(opts)
  local id, ierr, istatus = resolve_id(opts)
  if not id then return fail(ierr, istatus) end
  local q = {}
  if opts.task then q[#q + 1] = "task=" .. esc(opts.task) end
  local n, aerr = require("flowrun.cli.settings").int_arg(opts.attempt, "--attempt", 1)
  if aerr then common.eprint(aerr) return 2 end
  if n then q[#q + 1] = "attempt=" .. n end
  local line = require("flowrun.cli.cmd.logs").line
  local after = 0
  while true do
    local path = "/api/v1/runs/" .. esc(id) .. "/logs?after=" .. after
      .. (#q > 0 and ("&" .. table.concat(q, "&")) or "")
    local page, err, status = M.call(opts, "GET", path)
    if not page then return fail(err, status) end
    for _, l in ipairs(page.lines) do
      io.stdout:write(line { t = l.t, task = nn(l.task), attempt = nn(l.attempt), msg = l.msg })
    end
    io.stdout:flush()
    local moved = page.next > after
    after = page.next
    if not opts.follow then return 0 end
    if not moved then
      local run = M.call(opts, "GET", "/api/v1/runs/" .. esc(id))
      if run and run.state ~= "running" then
        -- the lines written just before the end
        local last = M.call(opts, "GET", "/api/v1/runs/" .. esc(id) .. "/logs?after=" .. after
          .. (#q > 0 and ("&" .. table.concat(q, "&")) or ""))
        for _, l in ipairs(last and last.lines or {}) do
          io.stdout:write(line { t = l.t, task = nn(l.task), attempt = nn(l.attempt), msg = l.msg })
        end
        return 0
      end
      flow.sleep(M.POLL)
    end
  end
end

function M.cancel(opts)
  local id, ierr, istatus = resolve_id(opts)
  if not id then return fail(ierr, istatus) end
  local d, err, status = M.call(opts, "POST", "/api/v1/runs/" .. esc(id) .. "/cancel", {})
  if not d then return fail(err, status) end
  io.stdout:write("run ", id, ": ", d.state, " (its cleanup tasks run)\n")
  return 0
end

-- waits until run id is no longer running; returns its last state
local function wait_end(opts, id)
  while true do
    local d, err, status = M.call(opts, "GET", "/api/v1/runs/" .. esc(id))
    if not d then return nil, err, status end
    if d.state ~= "running" then return d end
    flow.sleep(M.POLL)
  end
end

function M.trigger(opts)
  local vars, verr = common.vars_of(opts.var)
  if not vars then common.eprint(verr) return 2 end
  local d, err, status, body = M.call(opts, "POST", "/api/v1/workflows/" .. esc(opts.name) .. "/runs",
    { params = json.object(vars) })
  if not d then
    local problems = body and body.error and nn(body.error.problems)
    if problems then
      local list = {}
      for i, p in ipairs(problems) do list[i] = p.message end
      common.print_problems(err, list)
      return 2
    end
    return fail(err, status)
  end
  if opts.json and not opts.wait then
    io.stdout:write(json.encode { id = d.id }, "\n")
    return 0
  end
  io.stdout:write(d.id, "\n")
  io.stdout:flush()
  if not opts.wait then return 0 end
  local run, werr, wstatus = wait_end(opts, d.id)
  if not run then return fail(werr, wstatus) end
  if opts.json then
    io.stdout:write(json.encode { id = run.id, state = run.state, exit = run.exit, reason = run.reason }, "\n")
  else
    io.stdout:write("run ", run.id, " of ", run.workflow, ": ", run.state,
      nn(run.reason) and (" (" .. run.reason .. ")") or "", "\n")
  end
  return run.state == "success" and 0 or 1
end

return M
