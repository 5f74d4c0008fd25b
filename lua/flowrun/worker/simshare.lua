-- flowrun.worker.simshare — one simulated AWS shared by every process on this machine that uses
-- the same state file (workers started with --sim, and the tests that watch them). The simulator
-- (lua/sim) keeps its world in memory and rewrites its state file after each call, which suits
-- one process; several would each overwrite the others' clusters. Here every call takes an
-- exclusive lock on <state file>.lock, reloads the world when another process changed the file
-- since, answers, and saves before letting go; so a cluster created by a worker that then died
-- is found by the worker that takes its run over, and never created twice.
--
-- The simulator's own sim.handle and sim.set_table_rows are replaced by locked ones (so a
-- workflow that asks whether the transport in force is the simulator's still gets yes). A shared
-- mode inside lua/sim would make this module unnecessary.
local flow = require "flow"
local sys = require "flow.sys"

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
    local r = table.pack(pcall(function(...)
      if stamp() ~= seen then
        local o = { state_file = state_file }
        for k, v in pairs(opts or {}) do o[k] = v end
        sim.configure(o)
      end
      local res = table.pack(fn(...))
      seen = stamp()
      return table.unpack(res, 1, res.n)
    end, ...))
    f:close()
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
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
