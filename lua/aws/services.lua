-- aws/services.lua — the services table: one entry per service, keyed by boto3's service name.
-- The bundled entries live in aws/models/services/<name>.lua (generated from botocore's models
-- by scripts/gen-aws-models.py; aws/models/index.lua lists them) and are loaded on first use, so a script that calls one service does
-- not parse the others. Adding a service is one assignment:
--
--   require("aws").services.kinesis = {protocol = "json", json_version = "1.1",
--     target_prefix = "Kinesis_20131202", endpoint_prefix = "kinesis", signing_name = "kinesis",
--     service_id = "Kinesis", api_version = "2013-12-02",
--     operations = {ListStreams = true, ...}, paginators = {...}}
--
-- An entry: protocol ("json" | "rest-json" | "rest-xml" | "query"), api_version,
-- endpoint_prefix, signing_name, service_id (for AWS_ENDPOINT_URL_<ID>), json_version and
-- target_prefix (json), operations (name -> true, or the HTTP binding for REST and query
-- protocols), shapes (REST and query), paginators (op -> input_token, output_token,
-- result_key, limit_key, more_results).
local bundled = require "aws.models.index"
local is_bundled = {}
for _, n in ipairs(bundled) do is_bundled[n] = true end

local M = {}

return setmetatable(M, {
  __index = function(t, k)
    if is_bundled[k] then
      local e = require("aws.models.services." .. k)
      rawset(t, k, e)
      return e
    end
  end,
  -- pairs() sees the bundled entries (loading them) and the ones added at run time
  __pairs = function(t)
    for _, n in ipairs(bundled) do
      if rawget(t, n) == nil and is_bundled[n] then
        local e = require("aws.models.services." .. n)
        rawset(t, n, e)
      end
    end
    return next, t, nil
  end,
})
