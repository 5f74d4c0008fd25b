-- DescribeReplicationTasks calls per second with CONC calls in flight from one flowrun
-- (arg[1] total calls, arg[2] concurrency). The endpoint comes from AWS_ENDPOINT_URL. Prints JSON.
local flow = require "flow"
local aws = require "aws"
local total = tonumber(arg and arg[1]) or 20000
local conc = tonumber(arg and arg[2]) or 64
aws.dms.describe_replication_tasks {} -- warm up: credentials, connection
local left, tasks = total, 0
local function worker()
  while left > 0 do
    left = left - 1
    local r = aws.dms.describe_replication_tasks { MaxRecords = 100 }
    if r.ReplicationTasks then tasks = tasks + #r.ReplicationTasks end
  end
end
local t0 = flow.now()
local hs = {}
for i = 1, conc do hs[i] = flow.spawn(worker) end
flow.all(hs)
local dt = flow.now() - t0
print(string.format('{"calls": %d, "seconds": %.3f, "per_second": %.0f, "tasks_seen": %d}',
  total, dt, total / dt, tasks))
