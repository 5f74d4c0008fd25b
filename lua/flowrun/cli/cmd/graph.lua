-- flowrun graph WORKFLOW.lua [--format dot|mermaid] [--run RUN_ID]: the workflow's DAG as text,
-- coloured by the states of a run with --run.
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local graph = require "flowrun.engine.graph"

local M = {}

function M.run(opts)
  local wf = common.load_workflow(opts.workflow)
  if not wf then return 2 end
  local run
  if opts.run then
    local s, serr = settings.resolve(opts)
    if not s then common.eprint(serr) return 2 end
    local store = common.store(s)
    local ok, r, err = common.store_try(store.find, store, opts.run)
    if not ok then return 1 end
    if not r then common.eprint(err) return 2 end
    run = r
  end
  local fmt = opts.format or "dot"
  io.stdout:write(fmt == "dot" and graph.dot(wf, run) or graph.mermaid(wf, run))
  return 0
end

return M
