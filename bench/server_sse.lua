-- bench/server_sse.lua — the workflow 1,000 SSE clients follow in bench/server.sh: 20 tasks one
-- after the other, each 0.25 s, so the run changes about 40 times in 5 s, after a first task
-- that waits `lead` seconds (while the clients connect).
local flow = require "flow"
local wf = flow.workflow { name = "sse_bench", params = { every = 0.25, lead = 5 } }
wf:task("lead", function(ctx) flow.sleep(ctx.params.lead) end)
local prev = "lead"
for i = 1, 20 do
  local name = string.format("t%02d", i)
  wf:task(name, { after = prev }, function(ctx) flow.sleep(ctx.params.every) end)
  prev = name
end
return wf
