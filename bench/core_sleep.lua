-- bench: N concurrent tasks each sleeping a random 0-1 s. Prints JSON: peak RSS (kB), p50/p99
-- lateness (ms). With arg[2] == "baseline" it only allocates what the measuring needs.
local flow = require "flow"
local N = tonumber(arg[1]) or 100000
local late = {}
for i = 1, N do late[i] = 0.0 end
local function peak_kb()
  for l in io.lines("/proc/self/status") do
    local v = l:match("^VmHWM:%s+(%d+)")
    if v then return tonumber(v) end
  end
end
if arg[2] == "baseline" then
  print(string.format('{"peak_kb": %d}', peak_kb()))
  return
end
math.randomseed(42)
local now, sleep = flow.now, flow.sleep
local function sleeper(i, d)
  local t0 = now()
  sleep(d)
  late[i] = now() - t0 - d
end
local hs = {}
for i = 1, N do hs[i] = flow.spawn(sleeper, i, math.random()) end
flow.all(hs)
table.sort(late)
print(string.format('{"peak_kb": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}',
  peak_kb(), late[N // 2] * 1000, late[math.ceil(N * 0.99)] * 1000, late[N] * 1000))
