-- SigV4 signatures per second with aws.sigv4 (a DescribeReplicationTasks-shaped request, a
-- new X-Amz-Date and Authorization each time, as the client does). Prints JSON.
local sigv4 = require "aws.sigv4"
local n = tonumber(arg and arg[1]) or 300000
local s = sigv4.new { access_key = "AKIDEXAMPLE", secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" }
local body = '{"Filters":[{"Name":"replication-task-arn","Values":["arn:aws:dms:us-east-1:123456789012:task:ABC"]}]}'
local headers = {
  Host = "dms.us-east-1.amazonaws.com",
  ["Content-Type"] = "application/x-amz-json-1.1",
  ["X-Amz-Target"] = "AmazonDMSv20160101.DescribeReplicationTasks",
}
local req = { method = "POST", path = "/", query = "", headers = headers, body = body,
  region = "us-east-1", service = "dms" }
for _ = 1, 1000 do s:sign(req) end -- warm up
local t0 = os.clock()
for _ = 1, n do s:sign(req) end
local dt = os.clock() - t0
print(string.format('{"n": %d, "seconds": %.4f, "per_second": %.0f}', n, dt, n / dt))
