-- flowrun scheduler [--workflows DIR] [--store S] [--vars-file F]: fires the scheduled workflows'
-- runs into the store until stopped (SIGINT/SIGTERM); workers run them. Any number of
-- schedulers may share a store (flowrun.schedule.scheduler says how each tick is fired once).
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

-- new(opts, s, store) -> a scheduler for these options, or nil after printing why (exit 2).
function M.new(opts, s, store)
  local dir = opts.workflows or require("flowrun.schedule.workflows").DEFAULT_DIR
  local st = sys.stat(dir)
  if not st or st.type ~= "directory" then
    common.eprint("--workflows: ", dir, " is not a directory (the workflows to schedule are the ",
      "*.lua files in it)")
    return nil
  end
  for _, f in ipairs(opts.vars_file or {}) do
    local fst = sys.stat(f)
    if not fst or fst.type ~= "file" then common.eprint("--vars-file: cannot read ", f) return nil end
  end
  return require("flowrun.schedule.scheduler").new { store = store, dir = dir:gsub("/+$", ""),
    vars_files = opts.vars_file, sim = s.sim and { fail = s.sim.fail } or nil }
end

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local aok, aerr = settings.apply(s)
  if not aok then common.eprint(aerr) return 2 end
  local store = common.store(s)
  local sched = M.new(opts, s, store)
  if not sched then return 2 end
  return common.store_call(function()
    sched:start()
    local ok, err = pcall(sched.wait, sched)
    if not ok and not flow.cancelled(err) then error(err, 0) end
    local sig = core.signal()
    return sig and (128 + sig) or 0
  end)
end

return M
