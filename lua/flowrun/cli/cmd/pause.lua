-- flowrun pause WORKFLOW [--workflows DIR] [--store S]: pauses a workflow's schedule in the store,
-- where every scheduler sees it (PostgreSQL: at once, through NOTIFY; the file store: through the
-- kernel's notice of the file). Runs already queued or running go on. WORKFLOW is a workflow file
-- or the name of a workflow in --workflows. flowrun unpause is this module too.
local sys = require "flow.sys"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local workflows = require "flowrun.schedule.workflows"

local M = {}

function M.set(opts, paused)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local dir = (opts.workflows or workflows.DEFAULT_DIR):gsub("/+$", "")
  local e, err = workflows.find(opts.workflow_ref, dir)
  if not e then common.eprint(err) return 2 end
  local store = common.store(s)
  local who = string.format("%s@%s", os.getenv("USER") or "?", sys.hostname() or "?")
  local ok, was = common.store_try(store.set_paused, store, e.name, paused, who)
  if not ok then return 1 end
  local unsched = e.wf.schedule and "" or " (it has no schedule)"
  if paused then
    io.stdout:write(was and ("workflow " .. e.name .. " was already paused" .. unsched .. "\n")
      or string.format("paused %s%s: no scheduler fires its runs until flowrun unpause %s\n",
        e.name, unsched, e.name))
  else
    io.stdout:write(not was and ("workflow " .. e.name .. " was not paused" .. unsched .. "\n")
      or string.format("unpaused %s%s: schedulers fire what is due now (catchup %s)\n", e.name,
        unsched, e.wf.schedule and tostring(e.wf.schedule.catchup) or "-"))
  end
  return 0
end

function M.run(opts) return M.set(opts, true) end

return M
