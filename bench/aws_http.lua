-- The same load as aws_dms.lua through http.request alone (no serializing, signing or
-- parsing): what the HTTP layer costs by itself. Prints JSON.
local flow = require "flow"
local http = require "http"
local total = tonumber(arg and arg[1]) or 20000
local conc = tonumber(arg and arg[2]) or 64
local url = assert(os.getenv("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL") .. "/"
local req = { method = "POST", url = url, body = '{"MaxRecords":100}', headers = {
  ["Content-Type"] = "application/x-amz-json-1.1",
  ["X-Amz-Target"] = "AmazonDMSv20160101.DescribeReplicationTasks" } }
assert(http.request(req))
local left = total
local function worker()
  while left > 0 do
    left = left - 1
    assert(http.request(req))
  end
end
local t0 = flow.now()
local hs = {}
for i = 1, conc do hs[i] = flow.spawn(worker) end
flow.all(hs)
local dt = flow.now() - t0
print(string.format('{"calls": %d, "seconds": %.3f, "per_second": %.0f}', total, dt, total / dt))
