-- flow.operator — what the stdlib's operators and sensors share: logging under the workflow
-- task that runs them, and the error objects that fail a task for a reason (not retryable).
local flow = require "flow"

local M = {}

-- log(opts, msg): opts.log when the caller gave one, else the running workflow task's log
-- (stderr outside a workflow).
function M.log(opts, msg)
  if opts and opts.log then return opts.log(msg) end
  return require("flow.context").log(msg)
end

-- fail(code, msg, fields) -> an error object that retries will not repeat.
function M.fail(code, msg, fields)
  fields = fields or {}
  fields.retryable = false
  return flow.error(code, msg, fields)
end

return M
