-- flowrun.worker.fence — a run's AWS calls go through its store's guard, so a process that no
-- longer holds a run makes no AWS call for it. The store's writes are fenced by the epoch (see
-- flowrun.engine.store.pg), but AWS knows nothing of epochs: a worker that was stopped
-- (SIGSTOP, a frozen VM) longer than its lease, or cut off from the store, would otherwise go on
-- creating and terminating clusters that the run's new holder now drives. The guard renews a
-- lease that is about to run out before letting a call through, and refuses calls for a run that
-- was taken over (store.lost) or that a stopping worker handed back.
--
-- Every call made from a workflow task is checked, before each attempt is sent (aws's request
-- hook). Calls made outside a workflow task (and from tasks a workflow task
-- spawns itself, which flow.context does not follow) are not a run's and pass unchecked.
--
-- FLOWRUN_FENCE_LOG=file (tests): each call let through is appended as one JSON line
-- {pid, run, epoch, t, service, target}, so a test can show that no call was made for a run by a
-- holder after the run was taken over.
local context = require "flow.context"

local M = {}

local function call_logger(path)
  local json = require "json"
  local sys = require "flow.sys"
  local flow = require "flow"
  local pid = sys.getpid()
  return function(store, run_id, req)
    local j = store.held and store.held[run_id]
    local target
    for k, v in pairs(req.headers or {}) do
      if k:lower() == "x-amz-target" then target = v end
    end
    local f = io.open(path, "a")
    if not f then return end
    f:write(json.encode { pid = pid, run = run_id, epoch = j and j.epoch or json.null,
      t = flow.time(), service = req.service, target = target or req.method }, "\n")
    f:close()
  end
end

-- checker(store) -> check(req): raises unless the workflow task making the AWS request `req` may
-- act for its run now (and logs the call with FLOWRUN_FENCE_LOG). For a transport that waits
-- before it sends (flowrun.worker.simshare waits for the shared world's lock), to be called
-- once it is about to send.
function M.checker(store)
  local log_path = os.getenv("FLOWRUN_FENCE_LOG")
  local log = log_path and log_path ~= "" and call_logger(log_path) or nil
  return function(req)
    local ctx = context.current()
    if ctx and ctx.run_id and store.guard then
      store:guard(ctx.run_id)
      if log then log(store, ctx.run_id, req) end
    end
  end
end

-- install(store): from now on, an AWS call made by a workflow task asks store:guard(run_id)
-- first (aws.set_request_hook: the transport in force, HTTP or the simulator's, stays as it is).
-- Does nothing for a store without a guard.
function M.install(store)
  if not store.guard then return end
  require("aws").set_request_hook(M.checker(store))
end

return M
