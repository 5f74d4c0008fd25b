-- flowrun.cli.settings — what the command line and the environment ask for, resolved once into
-- one explicit table, and applied once. Nothing else reads options or FLOWRUN_* switches: the
-- engine, the AWS client and the simulator receive what they need from here.
--
-- settings = {
--   state_dir   where runs are kept: --state-dir, else $FLOWRUN_HOME, else
--               $XDG_STATE_HOME/flowrun, else ~/.local/state/flowrun
--   state_dir_source   "--state-dir" | "FLOWRUN_HOME" | "default" (for messages)
--   store_kind  "file" (runs in state_dir) or "postgresql" (store_url): --store, else
--               FLOWRUN_STORE, else the config file's "store"; --state-dir names the file store
--   store_url   the PostgreSQL connection string (may hold a password: never print it;
--               flowrun.engine.store.pg.display shows it without)
--   store_source  where the store was named, for messages ("--store", "FLOWRUN_STORE",
--               "<config file> (store NAME)")
--   fsync       false with --no-fsync
--   timeout     seconds (--timeout) or nil
--   max_active  --max-active or nil
--   log_format  "auto" | "tty" | "text" | "json"
--   virtual_time  --virtual-time
--   debug       categories (--debug, else FLOWRUN_DEBUG) or nil
--   sim         nil, or {fail = {specs}, policy_file = FILE} when AWS is answered by the
--               simulator (--sim, --sim-fail, --sim-policy, FLOWRUN_SIM=1, or a run that was
--               started in the simulator); policy_file: the IAM policy it authorizes calls with
-- }
local duration = require "flow.duration"
local sys = require "flow.sys"

local M = {}

-- The per-user default home of runs.
function M.default_state_dir(getenv)
  getenv = getenv or os.getenv
  local home = getenv("FLOWRUN_HOME")
  if home and home ~= "" then return home, "FLOWRUN_HOME" end
  local xdg = getenv("XDG_STATE_HOME")
  if xdg and xdg ~= "" then return xdg .. "/flowrun", "default" end
  return (getenv("HOME") or sys.homedir()) .. "/.local/state/flowrun", "default"
end

-- The config file: $FLOWRUN_CONFIG, else $XDG_CONFIG_HOME/flowrun/config.json, else
-- ~/.config/flowrun/config.json. JSON (no new dependency), for example:
--   { "store": "prod",
--     "stores": { "prod": "postgresql://flowrun@db.internal:5432/flowrun?sslmode=verify-full",
--                 "laptop": "file:/home/me/.local/state/flowrun" } }
-- "store" is the default store: a name in "stores", a postgresql:// URL or file:DIR. Passwords
-- belong in ~/.pgpass or PGPASSWORD rather than here.
function M.config_path(getenv)
  getenv = getenv or os.getenv
  local p = getenv("FLOWRUN_CONFIG")
  if p and p ~= "" then return p, true end
  local xdg = getenv("XDG_CONFIG_HOME")
  if xdg and xdg ~= "" then return xdg .. "/flowrun/config.json" end
  return (getenv("HOME") or sys.homedir()) .. "/.config/flowrun/config.json"
end

-- read_config(getenv) -> table (empty when there is no file), or nil and a message.
function M.read_config(getenv)
  local path, explicit = M.config_path(getenv)
  local f = io.open(path, "r")
  if not f then
    if explicit then return nil, "FLOWRUN_CONFIG: cannot read " .. path end
    return {}, path
  end
  local text = f:read("a")
  f:close()
  local ok, cfg = pcall(require("json").decode, text or "")
  if not ok or type(cfg) ~= "table" then
    return nil, path .. ": expected a JSON object (" .. tostring(ok and "not an object" or cfg) .. ")"
  end
  if cfg.stores ~= nil and type(cfg.stores) ~= "table" then
    return nil, path .. ": \"stores\" must be an object of name -> store"
  end
  return cfg, path
end

local function is_pg(spec)
  return spec:match("^postgres[%w]*://") ~= nil or spec:match("^%s*[%w_]+%s*=") ~= nil
end

-- Which store a --store / FLOWRUN_STORE / config value names: a postgresql:// URL (or a libpq
-- key=value string), file:DIR, or the name of one in the config file's "stores".
local function store_of(spec, where, getenv, s, depth)
  if is_pg(spec) then
    s.store_kind, s.store_url, s.store_source = "postgresql", spec, where
    return true
  end
  local dir = spec:match("^file://(.+)$") or spec:match("^file:(.+)$")
  if dir or spec:match("^[/.~]") then
    dir = dir or spec
    if dir:sub(1, 2) == "~/" then dir = (getenv("HOME") or sys.homedir()) .. dir:sub(2) end
    s.store_kind, s.state_dir, s.state_dir_source, s.store_source = "file", dir, where, where
    return true
  end
  if depth > 0 then return nil, where .. ": store " .. string.format("%q", spec) .. " names another name" end
  local cfg, path = M.read_config(getenv)
  if not cfg then return nil, path end
  local named = cfg.stores and cfg.stores[spec]
  if type(named) ~= "string" then
    local names = {}
    for k in pairs(cfg.stores or {}) do names[#names + 1] = k end
    table.sort(names)
    return nil, string.format("%s: %q is not a postgresql:// URL, file:DIR, nor a store named in "
      .. "%s (%s)", where, spec, path, #names > 0 and ("stores: " .. table.concat(names, ", "))
      or "it names none")
  end
  return store_of(named, string.format("%s (store %s)", path, spec), getenv, s, depth + 1)
end

-- resolve(opts) -> settings, or nil and a message. opts: what the parser returned.
function M.resolve(opts, getenv)
  getenv = getenv or os.getenv
  local s = { fsync = not opts.no_fsync, log_format = opts.log_format or "auto",
    virtual_time = opts.virtual_time or false, store_kind = "file" }
  if opts.state_dir then
    s.state_dir, s.state_dir_source = opts.state_dir, "--state-dir"
  else
    s.state_dir, s.state_dir_source = M.default_state_dir(getenv)
  end
  if opts.store and opts.state_dir then
    return nil, "--store and --state-dir both name where runs are kept: give one"
  end
  -- an explicit --state-dir wins over a store named by the environment or the config file
  local spec, where = opts.store, "--store"
  if not spec and not opts.state_dir then
    local env = getenv("FLOWRUN_STORE")
    if env and env ~= "" then
      spec, where = env, "FLOWRUN_STORE"
    else
      local cfg, path = M.read_config(getenv)
      if not cfg then return nil, path end
      if cfg.store ~= nil then
        if type(cfg.store) ~= "string" then return nil, path .. ": \"store\" must be a string" end
        spec, where = cfg.store, path
      end
    end
  end
  if spec then
    local ok, err = store_of(spec, where, getenv, s, 0)
    if not ok then return nil, err end
  end
  if opts.timeout then
    local d, err = duration.parse(opts.timeout)
    if not d or d <= 0 then return nil, "--timeout: " .. (err or "must be greater than 0") end
    s.timeout = d
  end
  local max_active, merr = M.int_arg(opts.max_active, "--max-active", 1)
  if merr then return nil, merr end
  s.max_active = max_active
  s.debug = opts.debug or getenv("FLOWRUN_DEBUG")
  if s.debug == "" then s.debug = nil end
  local fails = opts.sim_fail or {}
  if opts.sim or #fails > 0 or opts.sim_policy or getenv("FLOWRUN_SIM") == "1" then
    s.sim = { fail = fails, policy_file = opts.sim_policy }
  end
  return s
end

-- apply(s) -> true, or nil and a message: the clock, debug output and the AWS transport.
function M.apply(s)
  if s.debug then
    local ok, err = sys.set_debug(s.debug)
    if not ok then return nil, "--debug: " .. tostring(err and err.message or err) end
  end
  if s.virtual_time then require("flow.core").set_virtual_time(true) end
  if s.sim then M.use_sim(s) end
  return true
end

-- Routes every AWS call to the simulator. A workflow run keeps the simulated world beside its
-- journal (<state_dir>/sim-state.json), so a resumed run finds the same clusters and tasks.
-- int_arg(v, flag, min) -> the integer option value v (nil when not given), or nil and the
-- message saying what flag expects (an integer >= min).
function M.int_arg(v, flag, min)
  if v == nil then return nil end
  local n = math.tointeger(tonumber(v))
  if not n or n < min then
    return nil, string.format("%s expects %s, got %q", flag,
      min == 1 and "a positive integer" or ("an integer >= " .. min), tostring(v))
  end
  return n
end

function M.use_sim(s, keep_world)
  local sim = require "sim"
  sim.configure { fail = s.sim.fail, policy_file = s.sim.policy_file,
    default_state_file = keep_world and (s.state_dir .. "/sim-state.json") or nil }
  require("aws").use_transport(sim.handle)
end

return M
