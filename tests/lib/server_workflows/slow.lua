-- A workflow that takes its time (cancel, SSE): a task per second, a cleanup task.
local flow = require "flow"

local wf = flow.workflow { name = "slow", params = { steps = 3, every = 1.0 } }
local prev
for i = 1, 3 do
  local name = "step" .. i
  wf:task(name, { after = prev }, function(ctx)
    if i > ctx.params.steps then return end
    ctx.log("step " .. i .. " begins")
    flow.sleep(ctx.params.every)
    ctx.log("step " .. i .. " ends")
  end)
  prev = name
end
wf:task("cleanup", { after = prev, cleanup = true }, function(ctx) ctx.log("cleaning up") end)
return wf
