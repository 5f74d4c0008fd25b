-- flowrun server [--listen HOST:PORT] [--workflows DIR] [--store S | --state-dir DIR] [--tokens
-- FILE] [--tls-cert F --tls-key F] [--vars-file F] [--concurrency N] [--no-schedule] [--sim]:
-- the HTTP API, the web UI and /metrics over the runs of the store, a worker running the runs
-- it queues (and any other queued run), and the scheduler of the workflows' schedules
-- (flowrun.server). Runs until SIGINT/SIGTERM: then it stops accepting, ends its streams, lets
-- requests in flight finish, hands its runs back (PostgreSQL) or cancels them (the file store:
-- their cleanup tasks run) and exits 130/143.
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

-- listen_of("HOST:PORT" | "[V6]:PORT" | "PORT") -> host, port | nil, message
function M.listen_of(s)
  if not s or s == "" then return "127.0.0.1", 8080 end
  local host, port = s:match("^%[([%x:]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]*):(%d+)$") end
  if not host and s:match("^%d+$") then host, port = "127.0.0.1", s end
  port = math.tointeger(tonumber(port))
  if not host or not port or port < 0 or port > 65535 then
    return nil, "--listen expects HOST:PORT (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080), got "
      .. string.format("%q", s)
  end
  if host == "" then return nil, "--listen: give the address too (0.0.0.0:" .. port .. " for all)" end
  if host == "localhost" then host = "127.0.0.1" end
  return host, port
end

-- The tokens: --tokens FILE and FLOWRUN_TOKEN (an operator).
function M.tokens(opts, getenv)
  getenv = getenv or os.getenv
  local list = {}
  if opts.tokens then
    local t, err = require("flowrun.server.auth").read_file(opts.tokens)
    if not t then return nil, err end
    list = t
  end
  local env = getenv("FLOWRUN_TOKEN")
  if env and env ~= "" then
    if #env < require("flowrun.server.auth").MIN_TOKEN then
      return nil, "FLOWRUN_TOKEN must have at least " .. require("flowrun.server.auth").MIN_TOKEN
        .. " characters"
    end
    list[#list + 1] = { role = "operator", token = env, name = "FLOWRUN_TOKEN" }
  end
  return list
end

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local host, port = M.listen_of(opts.listen)
  if not host then common.eprint(port) return 2 end
  local tokens, terr = M.tokens(opts)
  if not tokens then common.eprint(terr) return 2 end
  if (opts.tls_cert == nil) ~= (opts.tls_key == nil) then
    common.eprint("--tls-cert and --tls-key go together") return 2
  end
  local dir = opts.workflows or "workflows"
  local st = sys.stat(dir)
  if not st or st.type ~= "directory" then
    if opts.workflows then common.eprint("--workflows ", dir, ": not a directory") return 2 end
    common.eprint("warning: no workflows directory ", dir, " (--workflows DIR): no workflow to "
      .. "trigger, runs only")
  else
    dir = common.abspath(dir)
  end
  for _, f in ipairs(opts.vars_file or {}) do
    if not sys.stat(f) then common.eprint("--vars-file ", f, ": no such file") return 2 end
  end
  local concurrency, cerr = settings.int_arg(opts.concurrency, "--concurrency", 1)
  if cerr then common.eprint(cerr) return 2 end
  local sim = s.sim
  s.sim = nil -- the simulator's world is shared with this machine's workers (below)
  local aok, aerr = settings.apply(s)
  if not aok then common.eprint(aerr) return 2 end
  s.sim = sim
  local store = common.store(s)
  require("flowrun.worker").use_aws(store, { sim = sim, state_dir = s.state_dir })
  local vars_files = {}
  for i, f in ipairs(opts.vars_file or {}) do vars_files[i] = common.abspath(f) end
  local server = require "flowrun.server"
  local ok, srv = pcall(server.new, { host = host, port = port, workflows = dir,
    store = store, sim = sim, vars_files = vars_files, tokens = tokens,
    tls = opts.tls_cert and { cert = opts.tls_cert, key = opts.tls_key } or nil,
    max_active = s.max_active, concurrency = concurrency, schedule = not opts.no_schedule,
    access_log = opts.access_log })
  if not ok then common.eprint(tostring(srv):gsub("^flowrun server: ", "")) return 2 end
  -- a long-lived heap (the index of every run) and short-lived garbage (each request): the
  -- generational collector does not walk the old part for every young one. Its minor
  -- collections pause the loop for as long as they take to walk the young objects, so they are
  -- made small and frequent (a minor after 5% of the heap is allocated, not 20%): bench/server.sh
  -- measured the runs list's p99 at 4-5 ms this way and 12-18 ms with the default
  collectgarbage("generational", 5, 100)
  if store.kind == "postgresql" then
    -- the store is reached and its schema checked before anything listens: a store that
    -- cannot be used is one line and exit 1, not a server answering 500s
    local iok, ierr = pcall(store.pool, store)
    if not iok then
      common.eprint(type(ierr) == "table" and (ierr.message or ierr.code) or tostring(ierr))
      return 1
    end
  end
  local lok, lerr = pcall(srv.start, srv)
  if not lok then
    common.eprint(type(lerr) == "table" and (lerr.message or lerr.code) or tostring(lerr))
    return 1
  end
  srv.log(string.format("flowrun server on %s (workflows: %s; runs: %s%s%s)", srv.url, dir,
    srv.store:describe(), sim and "; AWS answered by the simulator" or "",
    #tokens == 0 and "; no tokens: open to this machine" or (string.format("; %d token(s)", #tokens))))
  io.stderr:flush()
  local wok, werr = pcall(srv.serve, srv)
  srv:close { grace = 5 }
  local sig = core.signal()
  if sig then return 128 + sig end
  if not wok and not flow.cancelled(werr) then
    common.eprint(type(werr) == "table" and (werr.message or werr.code) or tostring(werr))
    return 1
  end
  return 0
end

return M
