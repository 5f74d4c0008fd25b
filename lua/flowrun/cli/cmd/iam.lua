-- flowrun iam WORKFLOW.lua [--var K=V] [--vars-file F] [--format json|terraform] [--record FILE]:
-- the IAM policy the workflow's runs need with these parameters (flowrun.iam). The policy goes
-- to stdout; with --format json, why statements are not narrower, notes and tasks left
-- uncovered go to stderr (JSON has no comments); terraform prints them as comments. Exit 1 when
-- a task is not covered (no iam declaration, not in a recorded run): the policy would be short.
local common = require "flowrun.cli.common"
local iam = require "flowrun.iam"

local M = {}

function M.run(opts)
  local wf = common.load_workflow(opts.workflow)
  if not wf then return 2 end
  local vars, verr = common.vars_of(opts.var)
  if not vars then common.eprint(verr) return 2 end
  local params, sources = wf:resolve_params { vars = vars, vars_files = opts.vars_file }
  if not params then common.print_problems("invalid parameters", sources) return 2 end
  local ok, policy = pcall(iam.derive, wf, params, {account = opts.account, region = opts.region,
                                                    records = opts.record})
  if not ok then common.eprint(tostring(policy)) return 1 end
  if opts.policy_format == "terraform" then
    io.stdout:write(iam.terraform(policy))
    if #policy.uncovered > 0 then
      common.eprint("tasks not covered (no iam declaration, not in a recorded run): ",
        table.concat(policy.uncovered, ", "))
    end
  else
    io.stdout:write(iam.json(policy))
    for _, line in ipairs(iam.comments(policy)) do io.stderr:write("# ", line, "\n") end
  end
  return #policy.uncovered > 0 and 1 or 0
end

return M
