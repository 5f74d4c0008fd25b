-- flowrun.server.signal — "something changed": any number of tasks wait, one call wakes them
-- all. Made of the core's own primitives: the waiters wait on a task that only sleeps, and
-- firing cancels that task (every task waiting on it wakes) and starts the next one. A
-- thousand SSE clients following one run are a thousand waiters on one sleeping task.
--
--   local s = signal.new()
--   s:wait(timeout) -> true (fired) | false (timed out)      waits
--   s:fire()        wakes every task waiting now
--   s:close()       wakes them and stops; a closed signal's wait returns false at once
--   signal.wait_many({s1, s2}, timeout) -> the signal that fired first, or nil
local flow = require "flow"
local core = require "flow.core"

local M = {}

local Signal = {}
Signal.__index = Signal

local function sleeper() flow.sleep(1e9) end

function M.new()
  return setmetatable({ h = nil, closed = false }, Signal)
end

function Signal:wait(timeout)
  if self.closed then return false end
  -- the sleeping task is made on demand: a signal nobody waits on costs nothing
  if not self.h then self.h = flow.spawn(sleeper) end
  return core.wait_any({ self.h }, timeout) ~= nil
end

function M.wait_many(list, timeout)
  local hs = {}
  for i, s in ipairs(list) do
    if s.closed then return nil end
    if not s.h then s.h = flow.spawn(sleeper) end
    hs[i] = s.h
  end
  local i = core.wait_any(hs, timeout)
  return i and list[i] or nil
end

function Signal:fire()
  local h = self.h
  if h then
    self.h = nil
    h:cancel()
  end
end

function Signal:close()
  self.closed = true
  self:fire()
end

return M
