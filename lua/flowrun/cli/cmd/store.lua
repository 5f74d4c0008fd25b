-- flowrun store init: creates the PostgreSQL run store's schema, or migrates it to this flowrun's
-- version (each numbered migration in one transaction). Also done on first use; a schema newer
-- than this flowrun is refused.
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

function M.run(opts)
  if opts.action ~= "init" then
    common.eprint("flowrun store: unknown action ", string.format("%q", tostring(opts.action)),
      " (flowrun store init)")
    return 2
  end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store = common.store(s)
  if store.kind ~= "postgresql" then
    io.stdout:write("the file store in ", store:describe(), " needs no schema\n")
    return 0
  end
  return common.store_call(function()
    local from, to = store:init()
    if from == to then
      io.stdout:write("the run store ", store:describe(), " is at schema version ", to, "\n")
    else
      io.stdout:write("the run store ", store:describe(), ": schema version ", from, " -> ", to, "\n")
    end
    store:close()
    return 0
  end)
end

return M
