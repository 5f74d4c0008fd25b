-- flowrun.server — `flowrun server`: an HTTP server (module httpd: H2O on this process's loop)
-- with the JSON API (flowrun.server.api), the web UI (the static files of web/), /metrics and
-- Server-Sent Events, over the runs of a store (reads: flowrun.server.data over the file store,
-- an index in memory; flowrun.server.data_store over PostgreSQL, the store's own queries) and
-- acting on them (flowrun.server.runner: submits, and a worker of its own runs them); the
-- workflows it offers, and schedules (flowrun.schedule.scheduler, unless schedule = false), are
-- the files of a directory (flowrun.server.catalogue).
--
--   local srv = server.new{host, port, workflows, store, sim, vars_files, tokens, tls = {cert,
--     key}, limits, web_dir, access_log, log, max_active, concurrency, schedule, refresh,
--     sweep}   (raises on misuse)
--   srv:start() -> srv (listening: srv.port, srv.url)   srv:serve() waits until it is closed
--   srv:close{grace} — stop accepting, close streams, let requests in flight finish, cancel
--   the runs running here (their cleanup tasks run) and wait for them
--
-- Security, the policy of every request (in dispatch): a loopback address unless there are
-- tokens; the role each route needs (flowrun.server.auth); state changes only by POST, refused
-- from another origin (Origin, else Sec-Fetch-Site, must be this server's) and only with a JSON
-- body (a form cannot send one across origins); without tokens, a Host that is not this
-- server's own loopback name is refused (DNS rebinding); every answer carries a strict
-- Content-Security-Policy (scripts and styles from this server only: the pages have no inline
-- script or style), nosniff, no framing, no referrer to other sites (same-origin: with
-- no-referrer, browsers send `Origin: null` on form posts and the login form could not be told
-- from a cross-site one). Tokens and cookies are never logged.
local flow = require "flow"
local json = require "json"
local sys = require "flow.sys"
local httpd = require "httpd"
local util = require "flowrun.server.util"
local auth_mod = require "flowrun.server.auth"
local api = require "flowrun.server.api"
local data_mod = require "flowrun.server.data"
local data_store_mod = require "flowrun.server.data_store"
local runner_mod = require "flowrun.server.runner"
local catalogue_mod = require "flowrun.server.catalogue"
local metrics_mod = require "flowrun.server.metrics"

local M = {}

M.CSP = table.concat({ "default-src 'none'", "script-src 'self'", "style-src 'self'",
  "img-src 'self' data:", "connect-src 'self'", "font-src 'self'", "form-action 'self'",
  "frame-ancestors 'none'", "base-uri 'none'" }, "; ")

-- The pages (HTML shells; their data comes from the API) by path pattern.
M.PAGES = {
  { "/", "index.html" },
  { "/runs", "runs.html" },
  { "/runs/{id}", "run.html" },
  { "/workflows/{name}/trigger", "trigger.html" },
  { "/login", "login.html" },
}

M.TYPES = {
  html = "text/html; charset=utf-8", css = "text/css; charset=utf-8",
  js = "text/javascript; charset=utf-8", json = "application/json; charset=utf-8",
  svg = "image/svg+xml", png = "image/png", ico = "image/x-icon", txt = "text/plain; charset=utf-8",
}

-- is_loopback(host) -> true for 127.0.0.0/8 and ::1
function M.is_loopback(host)
  return host == "::1" or (host:match("^127%.%d+%.%d+%.%d+$") ~= nil)
end

local Srv = {}
Srv.__index = Srv

local function compile(pattern)
  local segs = {}
  for s in pattern:gmatch("[^/]+") do
    local p = s:match("^{(%w+)}$")
    segs[#segs + 1] = p and { param = p } or s
  end
  return segs
end

local function match(segs, pat)
  if #segs ~= #pat then return nil end
  local params = {}
  for i, p in ipairs(pat) do
    if type(p) == "table" then
      if segs[i] == "" then return nil end
      params[p.param] = segs[i]
    elseif segs[i] ~= p then
      return nil
    end
  end
  return params
end

function M.new(o)
  o = o or {}
  local host = o.host or "127.0.0.1"
  local tokens = o.tokens or {}
  if not M.is_loopback(host) and #tokens == 0 then
    error("flowrun server: listening on " .. host .. " (not a loopback address) needs tokens "
      .. "(--tokens FILE or FLOWRUN_TOKEN): refusing to start an open server", 2)
  end
  local a, aerr = auth_mod.new { tokens = tokens, secure = o.tls ~= nil }
  if not a then error("flowrun server: " .. aerr, 2) end
  local store = assert(o.store, "server.new: a store is required")
  local metrics = metrics_mod.new()
  -- the file store is read through an index kept in memory (its lists would replay every
  -- journal); a PostgreSQL store answers lists from its own indexes and notifies changes
  local data = (store.kind == "postgresql" and data_store_mod or data_mod).new(store,
    { refresh = o.refresh, sweep = o.sweep })
  local cat = catalogue_mod.new(o.workflows or "workflows")
  local self = setmetatable({
    host = host, port = o.port or 8080, tls = o.tls, limits = o.limits, auth = a, store = store,
    data = data, catalogue = cat, metrics = metrics, sim = o.sim, vars_files = o.vars_files or {},
    web_dir = o.web_dir or (sys.root .. "/web"), access_log = o.access_log,
    log = o.log or function(msg)
      io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " ", msg, "\n")
      io.stderr:flush()
    end,
    sse = 0, snaps = {}, nsnaps = 0, static = {}, routes = {}, pages = {}, tasks = {}, mseries = {},
    list_cache = {},
  }, Srv)
  self.runner = runner_mod.new { store = store, data = data, catalogue = cat, sim = o.sim,
    vars_files = self.vars_files, max_active = o.max_active, concurrency = o.concurrency,
    metrics = metrics, log = self.log }
  if o.schedule ~= false and o.workflows and sys.stat(o.workflows) then
    self.scheduler = require("flowrun.schedule.scheduler").new { store = store,
      dir = o.workflows, vars_files = self.vars_files, sim = o.sim and { fail = o.sim.fail } or nil,
      log = self.log }
  end
  for _, r in ipairs(api.ROUTES) do
    self.routes[#self.routes + 1] = { method = r[1], pattern = r[2], pat = compile(r[2]),
      fn = r[3], auth = r.auth, stream = r.stream }
  end
  for _, p in ipairs(M.PAGES) do
    self.pages[#self.pages + 1] = { pattern = p[1], pat = compile(p[1]), file = p[2] }
  end
  return self
end

---- answers ----------------------------------------------------------------------------------------

local SECURITY = {
  { "content-security-policy", M.CSP },
  { "x-content-type-options", "nosniff" },
  { "x-frame-options", "DENY" },
  { "referrer-policy", "same-origin" },
  { "cross-origin-opener-policy", "same-origin" },
  { "cross-origin-resource-policy", "same-origin" },
}
local HSTS = { "strict-transport-security", "max-age=31536000" }

-- headers(list) -> list plus the security headers every answer carries.
function Srv:headers(list)
  local h = {}
  local n = 0
  if list then
    for i = 1, #list do h[i] = list[i] end
    n = #list
  end
  for i = 1, #SECURITY do h[n + i] = SECURITY[i] end
  if self.tls then h[#h + 1] = HSTS end
  return h
end

-- send(req, status, body, extra_headers): a table is sent as JSON, a string as it is.
function Srv:send(req, status, body, extra)
  local h = {}
  local text = body
  local has_type = false
  for _, kv in ipairs(extra or {}) do
    h[#h + 1] = kv
    if kv[1]:lower() == "content-type" then has_type = true end
  end
  if type(body) == "table" then
    text = json.encode(body)
    if not has_type then h[#h + 1] = { "content-type", util.JSON_HEADERS["content-type"] } end
    h[#h + 1] = { "cache-control", "no-store" }
  end
  req:respond(status, self:headers(h), text)
  return status
end

function Srv:fail(req, status, message, extra)
  local _, body = api.fail(status, message)
  return self:send(req, status, body, extra)
end

-- snapshot(id, w, sent) -> the SSE event that brings a stream that last sent version `sent`
-- of run id up to version w.state (nil: nothing changed for it), and that version. Made once per
-- version whatever the number of streams following the run: the whole run ("run"), and what
-- changed since the content before it ("delta": the run's fields and the tasks whose JSON
-- changed), which is what a stream that is up to date gets — a fraction of the bytes to write
-- to a thousand clients. A stream that fell behind (it skipped a change) gets the whole run. A
-- version whose content did not change (two notices of one commit) is sent to nobody.
function Srv:snapshot(id, w, sent)
  local v = w.state
  local c = self.snaps[id]
  if not (c and c.w == w and c.v == v) then
    local run, recs = self.data:run(id)
    if not run then return api.event("gone", "{}"), v end
    local fields, tasks = api.run_parts(self, run, recs)
    local ftext = json.encode(fields)
    local texts, by = {}, {}
    for i, t in ipairs(tasks) do
      texts[i] = json.encode(t)
      by[t.name] = texts[i]
    end
    if c and c.w == w then
      local changed = {}
      for i, t in ipairs(tasks) do
        if c.by[t.name] ~= texts[i] then changed[#changed + 1] = texts[i] end
      end
      if #changed == 0 and ftext == c.ftext then
        c.v = v
      else
        c.delta = { from = c.cv, text = api.event("delta", '{"run":' .. ftext .. ',"tasks":['
          .. table.concat(changed, ",") .. "]}") }
        c.v, c.cv, c.by, c.ftext = v, v, by, ftext
        c.whole = api.event("run", '{"tasks":[' .. table.concat(texts, ",") .. "]," .. ftext:sub(2))
      end
    else
      if not c then
        self.nsnaps = self.nsnaps + 1
        if self.nsnaps > 256 then self.snaps, self.nsnaps = {}, 1 end
      end
      c = { w = w, v = v, cv = v, by = by, ftext = ftext,
        whole = api.event("run", '{"tasks":[' .. table.concat(texts, ",") .. "]," .. ftext:sub(2)) }
      self.snaps[id] = c
    end
  end
  if sent >= c.cv then return nil, v end
  if c.delta and sent >= c.delta.from then return c.delta.text, v end
  return c.whole, v
end

---- static files and pages ----------------------------------------------------------------------

function Srv:file(path)
  local st = sys.stat(path)
  if not st or st.type ~= "file" then return nil end
  local c = self.static[path]
  if c and c.mtime == st.mtime and c.size == st.size then return c end
  local f = io.open(path, "rb")
  if not f then return nil end
  local body = f:read("a")
  f:close()
  local ext = path:match("%.(%w+)$") or ""
  c = { body = body, mtime = st.mtime, size = st.size, etag = '"' .. util.digest(body):sub(1, 32) .. '"',
    type = M.TYPES[ext] or "application/octet-stream" }
  self.static[path] = c
  return c
end

function Srv:serve_file(req, path)
  local c = self:file(path)
  if not c then return self:fail(req, 404, "not found") end
  local h = { { "content-type", c.type }, { "etag", c.etag }, { "cache-control", "no-cache" } }
  if req.headers["if-none-match"] == c.etag then
    req:respond(304, self:headers(h))
    return 304
  end
  req:respond(200, self:headers(h), c.body)
  return 200
end

---- requests -----------------------------------------------------------------------------------

-- Without tokens, only this server's own loopback names may be in Host: a page of another site
-- whose name was made to point at 127.0.0.1 (DNS rebinding) is refused.
function Srv:host_ok(req)
  if not self.auth.open then return true end
  local h = (req.headers.host or ""):lower()
  local name = h:match("^%[(.-)%]") or h:match("^([^:]+)")
  return name == "localhost" or name == "::1" or (name ~= nil and M.is_loopback(name))
    or name == self.host
end

-- Is this state-changing request from this server's own pages (or from no browser at all)?
function Srv:same_origin(req)
  local origin = req.headers.origin
  if origin then
    local authority = origin:match("^https?://([^/]+)$")
    return authority ~= nil and authority:lower() == (req.headers.host or ""):lower()
  end
  local site = req.headers["sec-fetch-site"]
  return site == nil or site == "same-origin" or site == "none"
end

local function safe_next(n)
  if type(n) == "string" and n:match("^/[^/\\]") or n == "/" then return n end
  return "/"
end

function Srv:login(req)
  if not self:same_origin(req) then return self:fail(req, 403, "cross-origin request refused") end
  local ctype = (req.headers["content-type"] or ""):lower()
  local form = ctype:find("application/x-www-form-urlencoded", 1, true) ~= nil
  local token, nxt
  if form then
    local f = util.parse_form(req.body)
    token, nxt = f.token, f.next
  elseif ctype:find("application/json", 1, true) then
    local ok, b = pcall(json.decode, req.body)
    if not ok or type(b) ~= "table" then return self:fail(req, 400, "expected a JSON object {token}") end
    token = b.token
  else
    return self:fail(req, 415, "expected a form or a JSON object")
  end
  if self.auth.open then return self:fail(req, 400, "this server needs no token") end
  local cookie, who = self.auth:login(token)
  if not cookie then
    self.log("login refused from " .. tostring(req.remote))
    if form then
      req:respond(303, self:headers { { "location", "/login?failed=1&next=" .. util.escape(safe_next(nxt)) } })
      return 303
    end
    return self:fail(req, 401, "unknown token")
  end
  self.log(string.format("login: %s (%s) from %s", who.name, who.role, tostring(req.remote)))
  if form then
    req:respond(303, self:headers { { "location", safe_next(nxt) }, { "set-cookie", cookie } })
    return 303
  end
  return self:send(req, 200, { role = who.role, name = who.name }, { { "set-cookie", cookie } })
end

function Srv:logout(req)
  if not self:same_origin(req) then return self:fail(req, 403, "cross-origin request refused") end
  local cookie = self.auth:logout(req)
  req:respond(303, self:headers { { "location", "/login" }, { "set-cookie", cookie } })
  return 303
end

-- dispatch(req) -> status, route label (for the metrics)
function Srv:dispatch(req)
  local segs = util.segments(req.path)
  if not segs then return self:fail(req, 400, "bad path"), "other" end
  if not self:host_ok(req) then
    return self:fail(req, 403, "this server answers to its loopback address only (Host "
      .. tostring(req.headers.host) .. ")"), "other"
  end
  local method = req.method == "HEAD" and "GET" or req.method
  local allowed
  for _, r in ipairs(self.routes) do
    local p = match(segs, r.pat)
    if p then
      if r.method ~= method then
        allowed = allowed or {}
        allowed[#allowed + 1] = r.method
      else
        return self:call(req, r, p), r.pattern
      end
    end
  end
  if allowed then
    for _, m in ipairs(allowed) do
      if m == "GET" then allowed[#allowed + 1] = "HEAD" break end
    end
    return self:fail(req, 405, "use " .. table.concat(allowed, ", "),
      { { "allow", table.concat(allowed, ", ") } }), "other"
  end
  if segs[1] == "static" and #segs >= 2 then
    if method ~= "GET" then return self:fail(req, 405, "use GET", { { "allow", "GET, HEAD" } }), "static" end
    return self:serve_file(req, self.web_dir .. "/" .. table.concat(segs, "/", 2)), "static"
  end
  if req.path == "/login" and method == "POST" then return self:login(req), "/login" end
  if req.path == "/logout" then
    if method ~= "POST" then return self:fail(req, 405, "use POST", { { "allow", "POST" } }), "/logout" end
    return self:logout(req), "/logout"
  end
  if req.path == "/api/v1/openapi.json" then
    if method ~= "GET" then return self:fail(req, 405, "use GET", { { "allow", "GET, HEAD" } }), "static" end
    return self:serve_file(req, self.web_dir .. "/openapi.json"), "/api/v1/openapi.json"
  end
  if req.path == "/favicon.ico" then return self:serve_file(req, self.web_dir .. "/favicon.svg"), "static" end
  for _, pg in ipairs(self.pages) do
    if match(segs, pg.pat) then
      if method ~= "GET" then return self:fail(req, 405, "use GET", { { "allow", "GET, HEAD" } }), "page" end
      return self:serve_file(req, self.web_dir .. "/" .. pg.file), "page"
    end
  end
  return self:fail(req, 404, "not found"), "other"
end

function Srv:call(req, r, params)
  local who
  if r.auth ~= "none" then
    local w, status, msg = self.auth:identify(req)
    if not w then
      return self:fail(req, status, msg, { { "www-authenticate", 'Bearer realm="flowrun"' } })
    end
    if not auth_mod.allows(w, r.auth) then
      return self:fail(req, 403, "this needs the " .. r.auth .. " role (you are " .. w.role .. ")")
    end
    who = w
  end
  local body = {}
  if r.method == "POST" then
    if not self:same_origin(req) then return self:fail(req, 403, "cross-origin request refused") end
    local ctype = (req.headers["content-type"] or ""):lower()
    if req.body ~= "" or ctype ~= "" then
      if not ctype:find("^application/json") then
        return self:fail(req, 415, "send the body as application/json")
      end
      local ok, b = pcall(json.decode, req.body ~= "" and req.body or "{}")
      if not ok or type(b) ~= "table" or (json.is_array(b) and next(b) ~= nil) then
        return self:fail(req, 400, "the body must be a JSON object")
      end
      body = b
    elseif who and who.via ~= "bearer" then
      -- a browser's POST always carries a JSON body here; an empty one is a form or a script
      -- from somewhere else
      return self:fail(req, 415, "send the body as application/json")
    end
  end
  local x = { req = req, srv = self, p = params, q = util.parse_query(req.query), who = who,
    body = body }
  if r.stream then
    local status, out, extra = r.fn(x)
    if status then return self:send(req, status, out, extra) end
    return 200
  end
  local status, out, extra = flow.shield(r.fn, x)
  return self:send(req, status, out, extra)
end

function Srv:handle(req)
  local t0 = flow.now()
  local ok, status, route = pcall(self.dispatch, self, req)
  if not ok then
    local err = status
    route = "other"
    if flow.cancelled(err) or flow.is_error(err, "http.closed") then
      status = 499
    else
      status = 500
      self.log("request " .. req.method .. " " .. req.path .. " failed: " .. tostring(
        type(err) == "table" and (err.message or err.code) or err))
      pcall(self.fail, self, req, 500, "internal error (see the server's log)")
    end
  end
  local dt = flow.now() - t0
  -- the series of this route and status, found once (a hot path under load)
  local m = self.metrics
  local by = self.mseries[route]
  if not by then
    by = { d = m:series_of("flowrun_http_request_duration_seconds", { route = route }) }
    self.mseries[route] = by
  end
  local c = by[status or 0]
  if not c then
    c = m:series_of("flowrun_http_requests_total", { route = route, status = tostring(status) })
    by[status or 0] = c
  end
  c.value = c.value + 1
  m:observe_into("flowrun_http_request_duration_seconds", by.d, dt)
  if self.access_log then
    self.log(string.format("%s %s %s %s %d %.1fms", tostring(req.remote), req.method, req.path,
      req.query and "?" or "", status or 0, dt * 1000))
  end
end

---- life ---------------------------------------------------------------------------------------

function Srv:start()
  local m = self.metrics
  m:gauge("flowrun_runs", function()
    local out = {}
    if not self.data.ready then return out end
    for wf, by in pairs(self.data:counts()) do
      for state, n in pairs(by) do out[#out + 1] = { { workflow = wf, state = state }, n } end
    end
    return out
  end)
  m:gauge("flowrun_runs_active", function() return { { nil, self.runner:active() } } end)
  if self.scheduler then
    -- seconds from a run's due time to its being queued (the ticks due while it ran)
    m:gauge("flowrun_scheduler_lateness_seconds", function()
      local l = self.scheduler:stats().lateness or {}
      local out = {}
      for _, q in ipairs({ { "0.5", l.p50 }, { "0.99", l.p99 }, { "1", l.max } }) do
        if q[2] then out[#out + 1] = { { quantile = q[1] }, q[2] } end
      end
      return out
    end)
    m:gauge("flowrun_scheduler_runs_fired", function()
      return { { nil, self.scheduler:stats().fired or 0 } }
    end)
  end
  m:gauge("flowrun_sse_clients", function() return { { nil, self.sse } } end)
  m:gauge("flowrun_process_resident_memory_bytes", function() return { { nil, metrics_mod.rss() } } end)
  m:watch_aws()
  self.srv = httpd.listen { host = self.host, port = self.port, tls = self.tls, limits = self.limits }
  self.port = self.srv.port
  local h = self.host:find(":", 1, true) and ("[" .. self.host .. "]") or self.host
  self.url = (self.tls and "https" or "http") .. "://" .. h .. ":" .. self.port
  self.data:start()
  self.runner:start()
  if self.scheduler then self.scheduler:start() end
  self.pool = { idle = 0, tasks = {} }
  self.accepting = flow.spawn(function() return self:request_task(true) end)
  return self
end

-- A request task: takes the next request, answers it, takes the next. Tasks are reused: a task
-- made per request (a coroutine and its closures) was most of a cached answer's garbage, and
-- the collector's pauses over a large index were the server's latency tail. Another task is
-- started whenever none is left waiting, so a long answer (a stream) never holds the others
-- back; beyond POOL_IDLE waiting tasks, a task that is done ends.
M.POOL_IDLE = 16

function Srv:request_task(permanent)
  local pool = self.pool
  while true do
    pool.idle = pool.idle + 1
    local ok, req = pcall(self.srv.accept, self.srv)
    pool.idle = pool.idle - 1
    if not ok then error(req, 0) end
    if not req then return end
    if pool.idle == 0 then self:spawn_request_task() end
    do
      local r <close> = req
      self:handle(r)
    end
    if self.closed or (not permanent and pool.idle >= M.POOL_IDLE) then return end
  end
end

function Srv:spawn_request_task()
  local pool = self.pool
  local h
  h = flow.spawn(function()
    local ok, err = pcall(self.request_task, self, false)
    pool.tasks[h] = nil
    if not ok and not flow.cancelled(err) then error(err, 0) end
  end)
  pool.tasks[h] = true
end

-- serve(): waits until the server is closed (or this task is cancelled: a signal).
function Srv:serve()
  return self.accepting:wait()
end

-- close{grace}: stop accepting (requests not yet taken get a 503), end the streams, give requests
-- in flight `grace` seconds, then cancel the runs running here and wait for their cleanups.
function Srv:close(o)
  if self.closed then return end
  self.closed = true
  flow.shield(function()
    if self.srv then self.srv:close { grace = o and o.grace or 5 } end
    if self.scheduler then
      self.scheduler:stop()
      pcall(self.scheduler.wait, self.scheduler)
    end
    self.data:close()
    local tasks = { self.accepting }
    for h in pairs(self.pool and self.pool.tasks or {}) do tasks[#tasks + 1] = h end
    for _, h in ipairs(tasks) do
      if h and not h:done() then
        h:cancel()
        flow.wait_any({ h })
      end
    end
    self.runner:close()
  end)
end

return M
