-- flowrun.worker.simshare — one simulated AWS shared by every process on this machine that uses
-- the same state file (workers started with --sim, and the tests that watch them). The simulator
-- (lua/sim) keeps its world in memory and rewrites its state file after each call, which suits
-- one process; several would each overwrite the others' clusters. Here every call takes an
-- exclusive lock on <state file>.lock, reloads the world when another process changed the file
-- since, answers, and saves before letting go; so a cluster created by a worker that then died
-- is found by the worker that takes its run over, and never created twice.
local flow = require "flow"
local sys = require "flow.sys"

local M = {}

-- handle(state_file, opts, check) -> a transport (aws.use_transport) over the simulator. opts:
-- what sim.configure takes (fail, durations ...). check(req), when given, is called once the lock
-- is held, right before the call is answered (flowrun.worker.fence's checker: a run lost while
-- this process waited for the lock makes no call).
function M.handle(state_file, opts, check)
  local sim = require "sim"
  local lock_path = state_file .. ".lock"
  local seen -- size and mtime of the state file after our last load or save
  local function stamp()
    local st = sys.stat(state_file)
    return st and (st.size .. "/" .. st.mtime) or "none"
  end
  return function(req)
    local f = assert(io.open(lock_path, "a"))
    local tries = 0
    while true do
      local ok, err = sys.flock(f)
      if ok then break end
      if not (err and err.code == "sys.locked") then
        f:close()
        error("sim: cannot lock " .. lock_path .. ": " .. tostring(err and err.message), 0)
      end
      tries = tries + 1
      -- the holder answers in well under a millisecond: wait a little, more if it goes on
      local ok2, serr = pcall(flow.sleep, math.min(0.0005 * tries, 0.01))
      if not ok2 then f:close() error(serr, 0) end
    end
    local ok, res = pcall(function()
      if check then check(req) end
      if stamp() ~= seen then
        local o = { state_file = state_file }
        for k, v in pairs(opts or {}) do o[k] = v end
        sim.configure(o)
      end
      local r = sim.handle(req)
      seen = stamp()
      return r
    end)
    f:close()
    if not ok then error(res, 0) end
    return res
  end
end

return M
