-- flowrun trigger WORKFLOW_NAME [--var NAME=VALUE ...] [--wait] [--json] --server URL: starts a
-- run of a workflow a server offers (FLOWRUN_SERVER, FLOWRUN_TOKEN), the parameters validated
-- by the server as `flowrun run` validates them; prints the run's id. With --wait, follows the
-- run to its end: exit 0 when it succeeded, 1 otherwise (one plain command for CI).
local M = {}

function M.run(opts)
  return require("flowrun.cli.remote").trigger(opts)
end

return M
