-- flowrun.worker.simshare — one simulated AWS shared by every process on this machine that uses
-- the same state file (workers started with --sim, and the tests that watch them). The simulator
-- (lua/sim) keeps its world in memory and rewrites its state file after each call, which suits
-- one process; several would each overwrite the others' clusters. Here every call takes an
-- exclusive lock on <state file>.lock (the file store's with_lock), reloads the world when
-- another process changed the file since, answers, and saves before letting go; so a cluster
-- created by a worker that then died is found by the worker that takes its run over, and never
-- created twice.
--
-- The simulator's own sim.handle and sim.set_table_rows are replaced by locked ones (so a
-- workflow that asks whether the transport in force is the simulator's still gets yes). A shared
-- mode inside lua/sim would make this module unnecessary.
local sys = require "flow.sys"
local with_lock = require("flowrun.engine.store.file").with_lock

local M = {}

-- share(state_file, opts, check) -> the simulator's (now locked) handle, to install with
-- aws.use_transport. opts: what sim.configure takes (fail, durations ...). check(req), when
-- given, is called once the lock is held, right before the call is answered
-- (flowrun.worker.fence's checker: a run lost while this process waited for the lock makes no
-- call).
function M.share(state_file, opts, check)
  local sim = require "sim"
  if sim.shared_state_file == state_file then return sim.handle end
  local raw_handle, raw_set_rows = sim.handle, sim.set_table_rows
  local lock_path = state_file .. ".lock"
  local seen -- size and mtime of the state file after our last load or save
  local function stamp()
    local st = sys.stat(state_file)
    return st and (st.size .. "/" .. st.mtime) or "none"
  end
  local function locked(fn, ...)
    return with_lock(lock_path, function(...)
      if stamp() ~= seen then
        local o = { state_file = state_file }
        for k, v in pairs(opts or {}) do o[k] = v end
        sim.configure(o)
      end
      local res = table.pack(fn(...))
      seen = stamp()
      return table.unpack(res, 1, res.n)
    end, ...)
  end
  sim.handle = function(req)
    return locked(function()
      if check then check(req) end
      return raw_handle(req)
    end)
  end
  sim.set_table_rows = function(...) return locked(raw_set_rows, ...) end
  sim.shared_state_file = state_file
  return sim.handle
end

return M
