-- server_harness.lua — what the server's Lua tests share: a server started in this process on a
-- free loopback port over a fresh state directory and a copy of tests/lib/server_workflows/,
-- and a small client (the project's own libcurl client) that speaks its JSON.
--
--   local h = require "server_harness"
--   local s = h.start{tokens = {...}, refresh = 0.1}   -- s.srv, s.url, s.dir, s.state, s.logs
--   local status, doc, resp = s:get(path [, headers])
--   local status, doc, resp = s:post(path, body [, headers])   body: a table (JSON) or a string
--   s:wait_state(id, states, timeout) -> the run (JSON) once its state is one of states
--   s:stop()
local flow = require "flow"
local sys = require "flow.sys"
local http = require "http"
local json = require "json"
local server = require "flowrun.server"
local file_store = require "flowrun.engine.store.file"

local M = {}

local root = os.getenv("FLOWRUN_ROOT") or sys.root
local n = 0

function M.tmpdir(name)
  n = n + 1
  local d = string.format("%s/%s.%d.%d", os.getenv("FLOWRUN_TEST_TMP") or "/tmp", name,
    sys.getpid(), n)
  assert(sys.mkdir_p(d))
  return d
end

function M.copy(src, dst)
  local f = assert(io.open(src, "rb"))
  local s = f:read("a")
  f:close()
  f = assert(io.open(dst, "wb"))
  f:write(s)
  f:close()
end

local S = {}
S.__index = S

function M.start(o)
  o = o or {}
  local dir = M.tmpdir(o.name or "server")
  local wfdir = dir .. "/workflows"
  assert(sys.mkdir_p(wfdir))
  for _, f in ipairs(o.workflows or { "hello.lua", "slow.lua", "broken.lua" }) do
    M.copy(root .. "/tests/lib/server_workflows/" .. f, wfdir .. "/" .. f)
  end
  local state = dir .. "/state"
  local logs = {}
  local srv = server.new { host = o.host, port = 0, workflows = wfdir,
    store = file_store.open(state, { fsync = false, clock = flow.time }), tokens = o.tokens,
    vars_files = o.vars_files, refresh = o.refresh or 0.1, sweep = o.sweep or 1,
    web_dir = root .. "/web", log = function(m) logs[#logs + 1] = m end, sim = o.sim }
  srv:start()
  return setmetatable({ srv = srv, url = srv.url, dir = dir, wfdir = wfdir, state = state,
    logs = logs, headers = o.headers or {} }, S)
end

function S:request(method, path, body, headers)
  local h = {}
  for k, v in pairs(self.headers) do h[k] = v end
  for k, v in pairs(headers or {}) do h[k] = v end
  if type(body) == "table" then
    body = json.encode(body)
    if h["Content-Type"] == nil then h["Content-Type"] = "application/json" end
  end
  local r = assert(http.request { method = method, url = self.url .. path, headers = h, body = body,
    timeout = 30 })
  local doc = r.body
  if (r.headers["content-type"] or ""):find("application/json", 1, true) and r.body ~= "" then
    doc = json.decode(r.body)
  end
  return r.status, doc, r
end

function S:get(path, headers) return self:request("GET", path, nil, headers) end
function S:post(path, body, headers) return self:request("POST", path, body, headers) end

-- wait_state(id, {states}, timeout) -> the run once its state is one of states (or nil)
function S:wait_state(id, states, timeout)
  local want = {}
  for _, s in ipairs(states) do want[s] = true end
  local deadline = flow.now() + (timeout or 20)
  while flow.now() < deadline do
    local status, run = self:get("/api/v1/runs/" .. id)
    if status == 200 and want[run.state] and not run.here then return run end
    flow.sleep(0.05)
  end
  return nil
end

function S:task(run, name)
  for _, t in ipairs(run.tasks) do if t.name == name then return t end end
end

function S:stop()
  self.srv:close { grace = 1 }
end

return M
