-- The UI's files as the server serves them: pages and static files with their types, ETags and
-- the strict CSP; no inline script or style in any page and no HTML parsing of values in any
-- module (escaping is a property of the code: values reach the page as text only); the state
-- colours of the CSS are the graph's (and so the terminal's); web/openapi.json documents every
-- route the server has.
local t = require "tap"
local json = require "json"
local sys = require "flow.sys"
local h = require "server_harness"
local api = require "flowrun.server.api"
local graph = require "flowrun.engine.graph"

local root = os.getenv("FLOWRUN_ROOT") or sys.root
local s = h.start { name = "server_static" }

local function read(p)
  local f = assert(io.open(root .. "/" .. p, "rb"))
  local x = f:read("a")
  f:close()
  return x
end

t.test("pages and static files", function()
  for path, file in pairs { ["/"] = "index.html", ["/runs"] = "runs.html", ["/runs/abc"] = "run.html",
      ["/workflows/hello/trigger"] = "trigger.html", ["/login"] = "login.html" } do
    local st, body, r = s:get(path)
    t.eq({ st, r.headers["content-type"] }, { 200, "text/html; charset=utf-8" }, path .. ": HTML")
    t.ok(body == read("web/" .. file), path .. ": is web/" .. file)
    t.like(r.headers["content-security-policy"] or "", "script%-src 'self'", path .. ": CSP")
  end
  local st, body, r = s:get("/static/style.css")
  t.eq({ st, r.headers["content-type"] }, { 200, "text/css; charset=utf-8" }, "CSS")
  local etag = r.headers.etag
  t.like(etag or "", '^"%x+"$', "an ETag")
  st, body = s:get("/static/style.css", { ["If-None-Match"] = etag })
  t.eq({ st, body }, { 304, "" }, "If-None-Match: 304")
  st, body, r = s:get("/static/js/run.js")
  t.eq({ st, r.headers["content-type"] }, { 200, "text/javascript; charset=utf-8" }, "ES modules as JavaScript")
  st, body, r = s:get("/static/favicon.svg")
  t.eq({ st, r.headers["content-type"] }, { 200, "image/svg+xml" }, "SVG")
  st = s:get("/static/nope.js")
  t.eq(st, 404, "a missing file: 404")
  st = s:request("POST", "/static/style.css", "x")
  t.eq(st, 405, "POST to a static file: 405")
  st = s:request("HEAD", "/static/style.css")
  t.eq(st, 200, "HEAD")
  st, body, r = s:get("/api/v1/openapi.json")
  t.eq({ st, r.headers["content-type"] }, { 200, "application/json; charset=utf-8" }, "the OpenAPI document")
end)

t.test("no inline script or style, no HTML made from strings", function()
  for _, f in ipairs(sys.readdir(root .. "/web")) do
    if f:match("%.html$") then
      local html = read("web/" .. f)
      local inline = false
      for tag in html:gmatch("<script([^>]*)>") do
        if not tag:find('src="/static/') then inline = true end
      end
      t.ok(not inline, f .. ": every script is a file of this server")
      t.unlike(html, "<style", f .. ": no style element")
      t.unlike(html, " style=", f .. ": no style attribute")
      t.unlike(html, " on%a+=", f .. ": no inline event handler")
    end
  end
  for _, f in ipairs(sys.readdir(root .. "/web/js")) do
    local js = read("web/js/" .. f)
    for _, bad in ipairs { "innerHTML", "outerHTML", "insertAdjacentHTML", "document%.write", "eval%(",
        "new Function", "DOMParser", "createContextualFragment" } do
      t.unlike(js, bad, f .. ": no " .. bad:gsub("%%", ""))
    end
  end
end)

t.test("the state colours are the graph's", function()
  local css = read("web/style.css")
  local root_block = css:match(":root%s*(%b{})")
  for state, color in pairs(graph.COLORS) do
    local got = root_block:match("%-%-st%-" .. state:gsub("_", "%%_") .. ":%s*(#%x+);")
    t.eq(got and got:lower(), color:lower(), "--st-" .. state)
  end
end)

t.test("the OpenAPI document lists every route", function()
  local doc = json.decode(read("web/openapi.json"))
  t.like(doc.openapi, "^3%.", "OpenAPI 3")
  local listed = {}
  for path, item in pairs(doc.paths) do
    for m in pairs(item) do listed[m:upper() .. " " .. path] = true end
  end
  local have = { ["POST /login"] = true, ["POST /logout"] = true, ["GET /api/v1/openapi.json"] = true }
  for _, r in ipairs(api.ROUTES) do have[r[1] .. " " .. r[2]] = true end
  local missing, extra = {}, {}
  for k in pairs(have) do if not listed[k] then missing[#missing + 1] = k end end
  for k in pairs(listed) do if not have[k] then extra[#extra + 1] = k end end
  table.sort(missing)
  table.sort(extra)
  t.eq(missing, {}, "every route is documented")
  t.eq(extra, {}, "every documented route exists")
  local function resolve(ref) return doc.components.schemas[ref:match("([^/]+)$")] end
  local dangling = {}
  local function walk(v)
    if type(v) ~= "table" then return end
    if type(v["$ref"]) == "string" and not resolve(v["$ref"]) then dangling[#dangling + 1] = v["$ref"] end
    for _, x in pairs(v) do walk(x) end
  end
  walk(doc)
  t.eq(dangling, {}, "every $ref resolves")
end)

s:stop()
t.done()
