-- sim/wire.lua — building wire requests for the simulator by hand, the way the AWS client
-- serializes them: for tests of the simulator itself and for poking at it from the REPL.
--   wire.json(service, op, params) -> status, decoded body, raw answer
--   wire.s3(method, url, body, headers) -> status, xml node (or body text), raw answer
--   wire.sts(action, params) -> status, xml node, raw answer
local json = require "json"
local sim = require "sim"

local M = {}

function M.json(service, op, params)
  local prefix = assert(sim.services[service] and sim.services[service].prefix,
    "not a json service: " .. tostring(service))
  local r = sim.handle{method = "POST", url = "https://" .. service .. ".us-east-1.amazonaws.com/",
    headers = {["X-Amz-Target"] = prefix .. "." .. op,
               ["Content-Type"] = "application/x-amz-json-1.1"},
    body = json.encode(params or json.object({})), service = service, region = "us-east-1"}
  local ok, body = pcall(json.decode, r.body)
  return r.status, ok and body or r.body, r
end

local function xml_or_text(r)
  if r.body ~= "" and r.body:sub(1, 1) == "<" then
    local node = require("xml").decode(r.body)
    if node then return node end
  end
  return r.body
end

function M.s3(method, url, body, headers)
  if not url:match("^%a+://") then url = "https://s3.us-east-1.amazonaws.com" .. url end
  local r = sim.handle{method = method, url = url, headers = headers or {}, body = body or "",
                       service = "s3", region = "us-east-1"}
  return r.status, xml_or_text(r), r
end

function M.sts(action, params)
  local parts = {"Action=" .. action, "Version=2011-06-15"}
  for k, v in pairs(params or {}) do parts[#parts + 1] = k .. "=" .. v end
  local r = sim.handle{method = "POST", url = "https://sts.amazonaws.com/",
    headers = {["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"},
    body = table.concat(parts, "&"), service = "sts", region = "us-east-1"}
  return r.status, xml_or_text(r), r
end

-- The first child of an xml node named name (or its text with text = true).
function M.child(node, name, text)
  for _, c in ipairs(type(node) == "table" and node or {}) do
    if c.name == name then return text and c.text or c end
  end
  return nil
end

function M.children(node, name)
  local out = {}
  for _, c in ipairs(type(node) == "table" and node or {}) do
    if c.name == name then out[#out + 1] = c end
  end
  return out
end

return M
