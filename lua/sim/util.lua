-- sim/util.lua — wire helpers shared by the simulator's services: AWS-shaped JSON and XML
-- answers and errors, URL and form parsing, XML escaping, base64 and gzip (the runtime's), dates.
-- Pure functions; the only state is the request-id counter.
local json = require "json"

local M = {}

local reqn = 0
function M.request_id()
  reqn = reqn + 1
  return string.format("51a1e0e0-%04x-4f1a-9b1e-%012x", math.random(0, 0xffff), reqn)
end

-- S3 spells its request ids as 16 upper-case hex digits.
function M.s3_request_id()
  reqn = reqn + 1
  return string.format("%08X%08X", math.random(0, 0x7fffffff), reqn)
end

-- Header lookup by case-insensitive name (the client sends them as it likes).
function M.header(headers, name)
  if not headers then return nil end
  local v = headers[name]
  if v ~= nil then return v end
  local lname = name:lower()
  for k, val in pairs(headers) do
    if type(k) == "string" and k:lower() == lname then return val end
  end
  return nil
end

---- JSON 1.1 answers -------------------------------------------------------------------------

function M.json_ok(tbl)
  return {
    status = 200,
    headers = {
      ["Content-Type"] = "application/x-amz-json-1.1",
      ["x-amzn-RequestId"] = M.request_id(),
    },
    body = json.encode(tbl or json.object({})),
  }
end

-- A raised AWS error inside a handler: error(M.fault(code, message, status)).
local Fault = {}
Fault.__index = Fault
Fault.__tostring = function(f) return f.code .. ": " .. f.message end
function M.fault(code, message, status, fields)
  local f = setmetatable({code = code, message = message, status = status or 400}, Fault)
  if fields then for k, v in pairs(fields) do f[k] = v end end
  return f
end
function M.is_fault(v) return getmetatable(v) == Fault end

function M.json_error(namespace, f)
  return {
    status = f.status,
    headers = {
      ["Content-Type"] = "application/x-amz-json-1.1",
      ["x-amzn-RequestId"] = M.request_id(),
      ["x-amzn-ErrorType"] = f.code .. ":",
    },
    body = json.encode({__type = namespace .. "#" .. f.code, message = f.message}),
  }
end

-- Required members, checked the way AWS's front end does (botocore validates on the client
-- side; a client that does not still gets the service's answer).
function M.require_params(params, names)
  local missing = {}
  for _, n in ipairs(names or {}) do
    local v = params[n]
    if v == nil or v == json.null then missing[#missing + 1] = n end
  end
  if #missing > 0 then
    local parts = {}
    for _, n in ipairs(missing) do
      local member = n:sub(1, 1):lower() .. n:sub(2)
      parts[#parts + 1] = string.format(
        "Value null at '%s' failed to satisfy constraint: Member must not be null", member)
    end
    error(M.fault("ValidationException", string.format("%d validation error%s detected: %s",
      #missing, #missing > 1 and "s" or "", table.concat(parts, "; "))))
  end
end

---- XML ---------------------------------------------------------------------------------------

function M.xml_escape(s)
  return (tostring(s):gsub("[&<>\"']", {
    ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;",
  }))
end

-- el("Key", "a<b") → "<Key>a&lt;b</Key>"; el("X", nil) → "".
function M.el(tag, value)
  if value == nil then return "" end
  return "<" .. tag .. ">" .. M.xml_escape(value) .. "</" .. tag .. ">"
end

---- URLs and forms ----------------------------------------------------------------------------

function M.url_decode(s, plus)
  if plus then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function M.url_encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function M.parse_query(qs)
  local out = {}
  if not qs or qs == "" then return out end
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    out[M.url_decode(k, true)] = M.url_decode(v, true)
  end
  return out
end

-- "https://host:port/path?query" → scheme, host (no port), path (raw), query string
function M.parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then scheme, rest = "https", url end
  local authority, path = rest:match("^([^/?]*)(.*)$")
  local host = authority:gsub("^.*@", ""):gsub(":%d+$", "")
  local p, q = path:match("^([^?]*)%??(.*)$")
  if p == "" then p = "/" end
  return scheme, host:lower(), p, q
end

---- dates -------------------------------------------------------------------------------------

function M.iso8601(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", math.floor((t - s) * 1000))
end

function M.http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t))
end

---- base64 ------------------------------------------------------------------------------------

-- base64 is the runtime's (json.base64_*: one implementation in C); a token that does not decode
-- is nil, as an unknown continuation token should be
function M.b64encode(s) return require("json").base64_encode(s) end
function M.b64decode(s) return (require("json").base64_decode(s)) end

---- hashing and gzip --------------------------------------------------------------------------

-- An ETag-looking digest (32 hex digits): the first half of the body's SHA-256 (the signer's, in
-- C: the simulator's raw files reach megabytes). Not MD5: nothing in the simulator depends on
-- it being MD5, only on equal bodies giving equal tags.
function M.etag(s)
  return require("aws.sigv4").sha256_hex(s):sub(1, 32)
end

-- a gzip member with stored (uncompressed) deflate blocks: what EMR's log files look like to a
-- reader, and the text stays readable in the simulator's state file
function M.gzip_stored(data)
  return require("zlib").gzip(data, 0)
end

---- query protocol (STS, SNS) ------------------------------------------------------------------

-- query_protocol(ns) -> error_answer(fault), ok(action, inner_xml): the <ErrorResponse> and
-- <ActionResponse><ActionResult> documents of a query-protocol service whose namespace is ns
function M.query_protocol(ns)
  local function error_answer(f)
    local rid = M.request_id()
    return {status = f.status, headers = {["Content-Type"] = "text/xml", ["x-amzn-RequestId"] = rid},
      body = "<ErrorResponse " .. ns .. "><Error><Type>Sender</Type>" .. M.el("Code", f.code) ..
        M.el("Message", f.message) .. "</Error>" .. M.el("RequestId", rid) .. "</ErrorResponse>"}
  end
  local function ok(action, inner)
    local rid = M.request_id()
    return {status = 200, headers = {["Content-Type"] = "text/xml", ["x-amzn-RequestId"] = rid},
      body = "<" .. action .. "Response " .. ns .. "><" .. action .. "Result>" .. inner ..
        "</" .. action .. "Result><ResponseMetadata>" .. M.el("RequestId", rid) ..
        "</ResponseMetadata></" .. action .. "Response>"}
  end
  return error_answer, ok
end

-- public(v) -> a copy of a resource without the simulator's own fields (keys starting sim_),
-- as the API shows it
function M.public(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" or not k:match("^sim_") then out[k] = M.public(x) end
  end
  return setmetatable(out, getmetatable(v))
end

---- misc --------------------------------------------------------------------------------------

function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

function M.copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = M.copy(x) end
  return setmetatable(out, getmetatable(v))
end

function M.object(t) return json.object(t or {}) end

-- A list that encodes as a JSON array even when empty.
function M.array(t) return json.array(t or {}) end

-- Tags as AWS lists them: [{Key, Value}] → map, and back.
function M.tags_to_map(list)
  local m = {}
  for _, kv in ipairs(list or {}) do m[kv.Key] = kv.Value end
  return m
end
function M.map_to_tags(m)
  local out = M.array()
  for _, k in ipairs(M.sorted_keys(m)) do out[#out + 1] = {Key = k, Value = m[k]} end
  return out
end

return M
