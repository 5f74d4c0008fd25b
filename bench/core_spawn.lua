-- bench: spawn-and-complete of N trivial tasks (batches of 10,000, each batch waited with
-- flow.all). Prints JSON: tasks per second.
local flow = require "flow"
local N = tonumber(arg[1]) or 1000000
local B = 10000
local spawn, all = flow.spawn, flow.all
local function trivial(i) return i end
local t0 = flow.now()
for b = 1, N // B do
  local hs = {}
  for i = 1, B do hs[i] = spawn(trivial, i) end
  all(hs)
end
local dt = flow.now() - t0
print(string.format('{"tasks": %d, "seconds": %.3f, "per_second": %.0f}', N, dt, N / dt))
