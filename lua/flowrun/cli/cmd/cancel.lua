-- flowrun cancel RUN_ID: cancels a run wherever it runs. A queued run ends at once; a running one
-- is cancelled by the process that runs it (a worker on any machine, or `flowrun run` in another
-- terminal with the file store), which stops its tasks and runs its cleanup tasks. With --server
-- URL (or FLOWRUN_SERVER), the server is asked.
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").cancel(opts) end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store = common.store(s)
  return common.store_call(function()
    local r, err = store:find(opts.run_id)
    if not r then common.eprint(err) return 2 end
    local what, who = store:request_cancel(r.id)
    if not what then common.eprint(who) return 1 end
    if what == "cancelled" then
      io.stdout:write("run ", r.id, " cancelled (it had not started)\n")
    elseif what == "requested" then
      io.stdout:write("cancelling run ", r.id, ": ", who and ("its holder " .. who) or "the process running it",
        " stops its tasks and runs its cleanup tasks (see flowrun show ", r.id, ")\n")
    else
      io.stdout:write("cancelling run ", r.id, ": no process holds it now; the worker that takes ",
        "it over cancels it and runs its cleanup tasks\n")
    end
    return 0
  end)
end

return M
