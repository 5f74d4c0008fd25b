-- flow.context — which workflow task is running the caller. The engine binds each attempt's
-- ctx to the flowrun task that runs it; operators and sensors, which sit below the engine, find
-- the run id, the task name and the task's log here without requiring the engine.
--
--   context.current()     -> the ctx of the workflow task running the caller, or nil
--   context.log(msg)      -> logs msg under that task (stderr outside a workflow task)
--   context.bind(id, ctx) / context.unbind(id)   (the engine's: id is a flowrun task id)
local core = require "flow.core"

local M = {}

local by_task = {} -- flowrun task id -> ctx

function M.bind(id, ctx) by_task[id] = ctx end
function M.unbind(id) by_task[id] = nil end

function M.current()
  local h = core.current()
  return h and by_task[h.id] or nil
end

function M.log(msg)
  local ctx = M.current()
  if ctx then return ctx.log(msg) end
  io.stderr:write(tostring(msg), "\n")
end

return M
