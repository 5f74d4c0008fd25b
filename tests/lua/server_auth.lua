-- The server's doors: viewer and operator tokens (bearer), the login form's session cookie
-- (HttpOnly, SameSite=Strict), CSRF (a state change from another origin is refused, whatever
-- the credentials), the tokens file (its mode, its lines), tokens never in a log line or an
-- answer, the constant-time comparison.
local t = require "tap"
local json = require "json"
local sys = require "flow.sys"
local h = require "server_harness"
local auth = require "flowrun.server.auth"
local util = require "flowrun.server.util"

local VIEWER = "viewer-token-0123456789abcdef"
local OPERATOR = "operator-token-0123456789abcdef"
local s = h.start { name = "server_auth", tokens = {
  { role = "viewer", token = VIEWER, name = "dashboards" },
  { role = "operator", token = OPERATOR, name = "ci" } } }

local function bearer(tok) return { Authorization = "Bearer " .. tok } end
local function merge(a, b)
  local o = {}
  for k, v in pairs(a or {}) do o[k] = v end
  for k, v in pairs(b or {}) do o[k] = v end
  return o
end

t.test("bearer tokens: none, wrong, malformed, viewer, operator", function()
  local st, doc, r = s:get("/api/v1/runs")
  t.eq(st, 401, "no token: 401")
  t.like(r.headers["www-authenticate"] or "", "^Bearer", "with WWW-Authenticate: Bearer")
  t.like(doc.error.message, "token is needed", "saying a token is needed")
  st, doc = s:get("/api/v1/runs", bearer("wrong-token-0123456789abcdef"))
  t.eq(st, 401, "a wrong token: 401")
  t.unlike(json.encode(doc), "wrong%-token", "the token is not echoed")
  st = s:get("/api/v1/runs", { Authorization = "Basic dXNlcjpwYXNz" })
  t.eq(st, 401, "another scheme: 401")
  st = s:get("/api/v1/runs", { Authorization = "Bearer" })
  t.eq(st, 401, "Bearer without a token: 401")
  st, doc = s:get("/api/v1/me", bearer(VIEWER))
  t.eq({ st, doc.role, doc.name, doc.via }, { 200, "viewer", "dashboards", "bearer" }, "a viewer")
  for _, p in ipairs { "/api/v1/runs", "/api/v1/workflows", "/api/v1/workflows/hello", "/api/v1/grid",
      "/metrics", "/api/v1/workflows/hello/graph" } do
    st = s:get(p, bearer(VIEWER))
    t.eq(st, 200, "a viewer reads " .. p)
    st = s:get(p)
    t.eq(st, 401, "nobody reads " .. p)
  end
  for _, p in ipairs { "/api/v1/workflows/hello/runs", "/api/v1/workflows/hello/pause",
      "/api/v1/workflows/hello/unpause", "/api/v1/runs/x/cancel", "/api/v1/runs/x/retry" } do
    st, doc = s:post(p, { params = { target = "x" }, task = "check" }, bearer(VIEWER))
    t.eq(st, 403, "a viewer cannot POST " .. p)
    st = s:post(p, { params = { target = "x" } })
    t.eq(st, 401, "nobody can POST " .. p)
  end
  t.like(doc.error.message, "operator role", "403 says which role")
  st, doc = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } }, bearer(OPERATOR))
  t.eq(st, 201, "an operator triggers")
  s.headers = bearer(OPERATOR)
  local run = s:wait_state(doc.id, { "success", "failed" })
  s.headers = {}
  t.eq(run and run.state, "success", "and the run it started ran")
  st = s:get("/api/v1/health")
  t.eq(st, 200, "health needs no token")
  st = s:get("/api/v1/openapi.json")
  t.eq(st, 200, "nor the API's description")
  st = s:get("/", {})
  t.eq(st, 200, "nor the pages (they hold no data)")
  st = s:get("/api/v1/health", { Host = "flowrun.example.com" })
  t.eq(st, 200, "with tokens, any Host (a reverse proxy's name)")
end)

t.test("an operator's POST from another origin is refused too", function()
  local st = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } },
    merge(bearer(OPERATOR), { Origin = "https://evil.example" }))
  t.eq(st, 403, "Origin of another site: 403")
  st = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } },
    merge(bearer(OPERATOR), { Origin = "null" }))
  t.eq(st, 403, "Origin null (a sandboxed page): 403")
  st = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } },
    merge(bearer(OPERATOR), { ["Sec-Fetch-Site"] = "same-site" }))
  t.eq(st, 403, "Sec-Fetch-Site same-site (a sibling subdomain): 403")
  st = s:post("/api/v1/workflows/hello/runs", { params = { target = "x" } },
    merge(bearer(OPERATOR), { Origin = s.url }))
  t.eq(st, 201, "this server's own origin: allowed")
end)

local cookie

t.test("the login form: a session cookie, HttpOnly and SameSite=Strict", function()
  local st, _, r = s:post("/login", "token=" .. util.escape(OPERATOR) .. "&next=%2Fruns%2Fabc",
    { ["Content-Type"] = "application/x-www-form-urlencoded", Origin = s.url })
  t.eq(st, 303, "303 See Other")
  t.eq(r.headers.location, "/runs/abc", "back where the browser was going")
  local sc = r.headers["set-cookie"] or ""
  t.like(sc, "^flowrun_session=%x+;", "a session cookie")
  t.like(sc, "HttpOnly", "HttpOnly")
  t.like(sc, "SameSite=Strict", "SameSite=Strict")
  t.like(sc, "Path=/", "Path=/")
  t.unlike(sc, "Secure", "not Secure over plain HTTP")
  t.unlike(sc, OPERATOR, "the cookie is not the token")
  cookie = sc:match("^(flowrun_session=%x+)")
  local doc
  st, doc = s:get("/api/v1/me", { Cookie = cookie })
  t.eq({ st, doc.role, doc.via, doc.name }, { 200, "operator", "cookie", "ci" }, "the cookie authenticates")
  st = s:post("/api/v1/workflows/hello/pause", {}, { Cookie = cookie, Origin = s.url })
  t.eq(st, 200, "a POST of this server's page with the cookie")
  st = s:post("/api/v1/workflows/hello/unpause", {}, { Cookie = cookie, Origin = "https://evil.example" })
  t.eq(st, 403, "the same POST from another origin: 403 (CSRF)")
  st = s:post("/api/v1/workflows/hello/unpause", "", { Cookie = cookie })
  t.eq(st, 415, "a cookie POST without a JSON body (a form from anywhere): 415")
  st = s:post("/api/v1/workflows/hello/unpause", {}, { Cookie = cookie })
  t.eq(st, 200, "with its JSON body and no Origin (not a browser): allowed")
  st, _, r = s:post("/login", "token=nope-nope-nope-nope-nope&next=%2F",
    { ["Content-Type"] = "application/x-www-form-urlencoded", Origin = s.url })
  t.eq({ st, r.headers.location }, { 303, "/login?failed=1&next=%2F" }, "a wrong token: back to the form")
  t.eq(r.headers["set-cookie"], nil, "and no cookie")
  st, _, r = s:post("/login", "token=" .. util.escape(OPERATOR) .. "&next=%2F%2Fevil.example",
    { ["Content-Type"] = "application/x-www-form-urlencoded", Origin = s.url })
  t.eq(r.headers.location, "/", "next may not leave this server")
  st = s:post("/login", { token = VIEWER })
  t.eq(st, 200, "JSON login")
  st = s:post("/login", { token = "wrong" })
  t.eq(st, 401, "JSON login, wrong token: 401")
  st = s:post("/login", { token = VIEWER }, { Origin = "https://evil.example" })
  t.eq(st, 403, "login from another origin: 403")
  st = s:post("/login", "token", { ["Content-Type"] = "text/plain" })
  t.eq(st, 415, "neither a form nor JSON: 415")
  st = s:get("/api/v1/me", { Cookie = "flowrun_session=" .. string.rep("a", 64) })
  t.eq(st, 401, "an unknown session: 401")
  st, _, r = s:post("/logout", "", { Cookie = cookie, Origin = s.url })
  t.eq(st, 303, "logout")
  t.like(r.headers["set-cookie"] or "", "^flowrun_session=;.*Max%-Age=0", "the cookie is removed")
  st = s:get("/api/v1/me", { Cookie = cookie })
  t.eq(st, 401, "and the session has ended")
  st = s:get("/logout")
  t.eq(st, 405, "logout is POST only")
end)

t.test("tokens never reach a log line", function()
  local all = table.concat(s.logs, "\n")
  t.ok(#s.logs > 0, "the server logged (" .. #s.logs .. " lines)")
  t.unlike(all, VIEWER, "no viewer token")
  t.unlike(all, OPERATOR, "no operator token")
  t.like(all, "triggered by ci", "who did what is logged by name")
  t.like(all, "login: ci %(operator%)", "logins by name")
end)

s:stop()

t.test("the tokens file", function()
  local dir = h.tmpdir("tokens")
  local path = dir .. "/tokens"
  local function write(text, mode)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    os.execute(string.format("chmod %s %q", mode or "600", path))
  end
  write("# a comment\nviewer " .. VIEWER .. " grafana\n\noperator " .. OPERATOR .. "   # ci\n")
  local list, err = auth.read_file(path)
  t.eq(list and #list, 2, "two tokens" .. (err and (": " .. err) or ""))
  t.eq({ list[1].role, list[1].name, list[2].role, list[2].name }, { "viewer", "grafana", "operator", "operator@4" },
    "roles and names (a default name)")
  write("viewer " .. VIEWER .. "\n", "644")
  list, err = auth.read_file(path)
  t.ok(list == nil and err:find("chmod 600"), "readable by others: refused")
  write("admin " .. VIEWER .. "\n")
  list, err = auth.read_file(path)
  t.ok(list == nil and err:find("unknown role"), "an unknown role: refused, with the line")
  t.like(err, "tokens:1:", "file:line")
  write("viewer short\n")
  list, err = auth.read_file(path)
  t.ok(list == nil and err:find("at least 16"), "a short token: refused")
  t.unlike(err, "short", "without quoting it")
  write("viewer\n")
  list, err = auth.read_file(path)
  t.ok(list == nil and err:find("ROLE TOKEN"), "a line without a token")
  write("# nothing\n")
  list, err = auth.read_file(path)
  t.ok(list == nil and err:find("no token"), "no token at all")
  list, err = auth.read_file(dir .. "/missing")
  t.ok(list == nil and err:find("no such file"), "a missing file")
  local a, aerr = auth.new { tokens = { { role = "operator", token = "short" } } }
  t.ok(a == nil and aerr:find("at least"), "FLOWRUN_TOKEN shorter than 16: refused")
end)

t.test("digests compared in full", function()
  local a, b = util.digest("x"), util.digest("y")
  t.eq({ util.equal_digests(a, a), util.equal_digests(a, b) }, { true, false }, "equal and different")
  local c = a:sub(1, -2) .. (a:sub(-1) == "0" and "1" or "0")
  t.eq(util.equal_digests(a, c), false, "a difference in the last byte counts")
  t.eq(util.equal_digests(a, a:sub(1, 10)), false, "another length")
  local p = auth.new { tokens = { { role = "viewer", token = VIEWER }, { role = "operator", token = OPERATOR } } }
  t.eq(p:match(OPERATOR).role, "operator", "the matching token among several")
  t.eq(p:match(OPERATOR .. "x"), nil, "a token with one more character does not match")
  t.eq(p:match(OPERATOR:sub(1, -2)), nil, "nor one with one less")
end)

t.test("a server with tokens may listen on any address", function()
  local ok = pcall(require("flowrun.server").new, { host = "0.0.0.0", store = {},
    tokens = { { role = "operator", token = OPERATOR } } })
  t.ok(ok, "0.0.0.0 with tokens")
end)

t.done()
