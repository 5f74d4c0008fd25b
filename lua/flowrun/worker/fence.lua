-- flowrun.worker.fence — a run's AWS calls go through its store's guard, so a process that no
-- longer holds a run makes no AWS call for it. The store's writes are fenced by the epoch (see
-- flowrun.engine.store.pg), but AWS knows nothing of epochs: a worker that was stopped
-- (SIGSTOP, a frozen VM) longer than its lease, or cut off from the store, would otherwise go on
-- creating and terminating clusters that the run's new holder now drives. The guard renews a
-- lease that is about to run out before letting a call through, and refuses calls for a run that
-- was taken over (store.lost) or that a stopping worker handed back.
--
-- The fence wraps the AWS transport in force (HTTP, or the simulator's), so every call made from
-- a workflow task is checked; calls made outside a workflow task are not a run's and pass.
local context = require "flow.context"

local M = {}

-- install(store): from now on, an AWS call made by a workflow task asks store:guard(run_id)
-- first. Install after the transport is chosen (after --sim). Does nothing for a store without
-- a guard.
function M.install(store)
  if not store.guard then return end
  local aws = require "aws"
  local inner, network = aws.current_transport()
  aws.use_transport(function(req)
    local ctx = context.current()
    if ctx and ctx.run_id then store:guard(ctx.run_id) end
    return inner(req)
  end, network)
end

return M
