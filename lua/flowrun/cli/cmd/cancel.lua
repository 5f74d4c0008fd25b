-- flowrun cancel RUN_ID --server URL: asks the server running a run to cancel it (its running
-- tasks are cancelled, its cleanup tasks run). A run started by `flowrun run` is cancelled in
-- its own terminal (Ctrl-C) or by SIGTERM to that process.
local common = require "flowrun.cli.common"

local M = {}

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").cancel(opts) end
  common.eprint("cancel needs a server (--server URL or FLOWRUN_SERVER); a run of `flowrun run` ",
    "stops with Ctrl-C or SIGTERM to its process")
  return 2
end

return M
