-- flowrun plan WORKFLOW.lua [--var K=V] [--vars-file F]: validate, resolve the parameters (and
-- say where each came from), list the tasks in dependency order; nothing starts.
local common = require "flowrun.cli.common"
local graph = require "flowrun.engine.graph"

local M = {}

function M.run(opts)
  local wf = common.load_workflow(opts.workflow)
  if not wf then return 2 end
  local vars, verr = common.vars_of(opts.var)
  if not vars then common.eprint(verr) return 2 end
  local dates = require("flowrun.cli.cmd.run").dates(wf, opts)
  if not dates then return 2 end
  local params, sources = wf:resolve_params { vars = vars, vars_files = opts.vars_file,
    time = dates }
  if not params then common.print_problems("invalid parameters", sources) return 2 end
  io.stdout:write(graph.plan(wf, params, sources, dates))
  return 0
end

return M
