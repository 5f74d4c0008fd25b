-- flowrun.cli.settings — what the command line and the environment ask for, resolved once into
-- one explicit table, and applied once. Nothing else reads options or FLOWRUN_* switches: the
-- engine, the AWS client and the simulator receive what they need from here.
--
-- settings = {
--   state_dir   where runs are kept: --state-dir, else $FLOWRUN_HOME, else
--               $XDG_STATE_HOME/flowrun, else ~/.local/state/flowrun
--   state_dir_source   "--state-dir" | "FLOWRUN_HOME" | "default" (for messages)
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

-- resolve(opts) -> settings, or nil and a message. opts: what the parser returned.
function M.resolve(opts, getenv)
  getenv = getenv or os.getenv
  local s = { fsync = not opts.no_fsync, log_format = opts.log_format or "auto",
    virtual_time = opts.virtual_time or false }
  if opts.state_dir then
    s.state_dir, s.state_dir_source = opts.state_dir, "--state-dir"
  else
    s.state_dir, s.state_dir_source = M.default_state_dir(getenv)
  end
  if opts.timeout then
    local d, err = duration.parse(opts.timeout)
    if not d or d <= 0 then return nil, "--timeout: " .. (err or "must be greater than 0") end
    s.timeout = d
  end
  if opts.max_active then
    local n = math.tointeger(tonumber(opts.max_active))
    if not n or n < 1 then
      return nil, "--max-active expects a positive integer, got " .. string.format("%q", opts.max_active)
    end
    s.max_active = n
  end
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
function M.use_sim(s, keep_world)
  local sim = require "sim"
  sim.configure { fail = s.sim.fail, policy_file = s.sim.policy_file,
    default_state_file = keep_world and (s.state_dir .. "/sim-state.json") or nil }
  require("aws").use_transport(sim.handle)
end

return M
