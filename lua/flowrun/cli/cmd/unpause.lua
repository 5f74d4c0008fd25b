-- flowrun unpause WORKFLOW [--workflows DIR] [--store S]: the schedulers fire the workflow's runs
-- again; what is due is decided as catchup says (see flowrun.cli.cmd.pause).
local M = {}

function M.run(opts) return require("flowrun.cli.cmd.pause").set(opts, false) end

return M
