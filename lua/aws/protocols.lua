-- aws/protocols.lua — the four AWS wire protocols: how an operation's parameters become an
-- HTTP request, and how an answer (or an error) becomes a Lua table.
--
--   json       POST /, X-Amz-Target: <prefix>.<Op>, JSON body (DMS, EMR, Glue, Secrets, Athena)
--   rest-json  REST path/query/headers from the model, JSON body (MWAA)
--   rest-xml   REST path/query/headers from the model, XML body (S3)
--   query      POST /, form body Action=<Op>&Version=..., XML answer (STS)
--
-- serialize(svc, op, params) -> {method, path, query, headers, body, host_prefix}
-- parse(svc, op, resp) -> result table, or nil and {code, message, request_id} for an AWS
--   error, or nil and {bad = true, message} when the answer cannot be read.
-- Shapes (for rest-* and query) come from services.lua, which is generated from botocore's
-- models, so member placement and types follow the official API definitions.
local json = require "json"
local sigv4 = require "aws.sigv4"

-- the xml module (expat) is loaded only by the XML protocols
local xml = setmetatable({}, { __index = function(t, k)
  local m = require "xml"
  setmetatable(t, { __index = m })
  return m[k]
end })

local M = {}

local encode = sigv4.uri_encode

local function iso8601(v)
  if type(v) == "number" then return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(v)) end
  return tostring(v)
end

local function http_date(v)
  if type(v) == "number" then return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(v)) end
  return tostring(v)
end

local function scalar_text(shape, v, for_header)
  local t = shape and shape.type
  if t == "boolean" then return v and "true" or "false" end
  if t == "timestamp" then return for_header and http_date(v) or iso8601(v) end
  if t == "integer" or t == "long" then
    return string.format("%d", math.tointeger(v) or math.floor(tonumber(v) or 0))
  end
  if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then
    return string.format("%d", math.floor(v))
  end
  return tostring(v)
end

---- query ---------------------------------------------------------------------------------

local function query_flatten(shapes, shape_name, value, prefix, out)
  local shape = shapes[shape_name] or { type = "string" }
  if shape.type == "structure" then
    if type(value) ~= "table" then
      error(("parameter %s: a table expected, got %s"):format(prefix ~= "" and prefix or "params", type(value)), 0)
    end
    local names = {}
    for name in pairs(shape.members) do names[#names + 1] = name end
    table.sort(names) -- a stable wire form
    for _, name in ipairs(names) do
      local m = shape.members[name]
      local v = value[name]
      if v ~= nil then
        local key = m.location_name or name
        query_flatten(shapes, m.shape, v, prefix == "" and key or (prefix .. "." .. key), out)
      end
    end
  elseif shape.type == "list" then
    if type(value) ~= "table" then
      error(("parameter %s: a list expected, got %s"):format(prefix, type(value)), 0)
    end
    if #value == 0 then
      out[#out + 1] = { prefix, "" }
    end
    for i, v in ipairs(value) do
      local p = shape.flattened and (prefix .. "." .. i) or
          (prefix .. "." .. (shape.member_name or "member") .. "." .. i)
      query_flatten(shapes, shape.member, v, p, out)
    end
  elseif shape.type == "map" then
    local keys = {}
    for k in pairs(value) do keys[#keys + 1] = k end
    table.sort(keys)
    for i, k in ipairs(keys) do
      local p = shape.flattened and (prefix .. "." .. i) or (prefix .. ".entry." .. i)
      out[#out + 1] = { p .. ".key", tostring(k) }
      query_flatten(shapes, shape.value, value[k], p .. ".value", out)
    end
  else
    out[#out + 1] = { prefix, scalar_text(shape, value) }
  end
end

function M.form_encode(pairs_list)
  local parts = {}
  for i, kv in ipairs(pairs_list) do parts[i] = encode(kv[1]) .. "=" .. encode(kv[2]) end
  return table.concat(parts, "&")
end

---- xml serialization (rest-xml payloads) --------------------------------------------------

local function xml_build(shapes, shape_name, value, name, out, ns)
  local shape = shapes[shape_name] or { type = "string" }
  local open = ns and ('<%s xmlns="%s">'):format(name, ns) or ("<" .. name .. ">")
  if shape.type == "structure" then
    out[#out + 1] = open
    local names = {}
    for k in pairs(shape.members) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
      local m = shape.members[k]
      if value[k] ~= nil then
        xml_build(shapes, m.shape, value[k], m.location_name or k, out)
      end
    end
    out[#out + 1] = "</" .. name .. ">"
  elseif shape.type == "list" then
    if shape.flattened then
      for _, v in ipairs(value) do xml_build(shapes, shape.member, v, name, out) end
    else
      out[#out + 1] = open
      for _, v in ipairs(value) do
        xml_build(shapes, shape.member, v, shape.member_name or "member", out)
      end
      out[#out + 1] = "</" .. name .. ">"
    end
  else
    out[#out + 1] = open .. xml.escape(scalar_text(shape, value)) .. "</" .. name .. ">"
  end
end

---- xml parsing ----------------------------------------------------------------------------

local function local_name(n)
  return (n:gsub("^.*:", ""))
end

local function xml_value(shapes, shape_name, node)
  local shape = shapes[shape_name] or { type = "string" }
  local t = shape.type
  if t == "structure" then
    local out = {}
    -- member lookup by element name
    local by_name = {}
    for k, m in pairs(shape.members) do
      if not m.location or m.location == "body" then
        by_name[m.location_name or k] = k
      end
    end
    for _, child in ipairs(node) do
      local cname = local_name(child.name)
      local k = by_name[cname]
      if k then
        local m = shape.members[k]
        local ms = shapes[m.shape] or { type = "string" }
        if ms.type == "list" and (ms.flattened or m.flattened) then
          out[k] = out[k] or {}
          table.insert(out[k], xml_value(shapes, ms.member, child))
        else
          out[k] = xml_value(shapes, m.shape, child)
        end
      end
    end
    return out
  elseif t == "list" then
    local out = {}
    for _, child in ipairs(node) do out[#out + 1] = xml_value(shapes, shape.member, child) end
    return json.array(out)
  elseif t == "map" then
    local out = {}
    for _, entry in ipairs(node) do
      local k, v
      for _, c in ipairs(entry) do
        if local_name(c.name) == "key" then k = c.text end
        if local_name(c.name) == "value" then v = c end
      end
      if k then out[k] = v and xml_value(shapes, shape.value, v) or "" end
    end
    return out
  end
  local text = node.text or ""
  if t == "integer" or t == "long" then return math.tointeger(tonumber(text)) or tonumber(text) end
  if t == "float" or t == "double" then return tonumber(text) end
  if t == "boolean" then return text == "true" end
  return text
end
M.xml_value = xml_value

local function header_value(shape, v)
  local t = shape and shape.type
  if t == "integer" or t == "long" then return math.tointeger(tonumber(v)) or tonumber(v) end
  if t == "boolean" then return v == "true" end
  if t == "float" or t == "double" then return tonumber(v) end
  return v
end

---- rest (json and xml): request --------------------------------------------------------------

local function split_uri(uri)
  local path, q = uri:match("^([^?]*)%??(.*)$")
  return path, q
end

local function rest_serialize(svc, op_name, op, params, is_xml, ctx)
  local shapes = svc.shapes
  local input = op.input and shapes[op.input] or { type = "structure", members = {} }
  local path, literal_q = split_uri(op.uri)
  local query, headers, body_members = {}, {}, {}
  if literal_q ~= "" then
    for part in literal_q:gmatch("[^&]+") do
      local k, v = part:match("^([^=]*)=?(.*)$")
      query[#query + 1] = { k, v }
    end
  end
  local uri_values = {}
  local names = {}
  for name in pairs(params) do
    if type(name) ~= "string" then error("parameter names must be strings", 0) end
    names[#names + 1] = name
  end
  table.sort(names) -- a stable wire form
  for _, name in ipairs(names) do
    local v = params[name]
    local m = input.members[name]
    if not m then
      error(("unknown parameter %s for %s"):format(name, op_name), 0)
    end
    local ms = shapes[m.shape] or { type = "string" }
    if m.location == "uri" then
      uri_values[m.location_name or name] = scalar_text(ms, v)
    elseif m.location == "querystring" then
      if ms.type == "list" then
        for _, item in ipairs(v) do query[#query + 1] = { m.location_name or name, scalar_text(shapes[ms.member], item) } end
      elseif ms.type == "map" then
        for k, item in pairs(v) do query[#query + 1] = { k, tostring(item) } end
      else
        query[#query + 1] = { m.location_name or name, scalar_text(ms, v) }
      end
    elseif m.location == "header" then
      if ms.type == "list" then
        local parts = {}
        for i, item in ipairs(v) do parts[i] = scalar_text(shapes[ms.member], item, true) end
        headers[m.location_name or name] = table.concat(parts, ",")
      else
        headers[m.location_name or name] = scalar_text(ms, v, true)
      end
    elseif m.location == "headers" then
      for k, item in pairs(v) do headers[(m.location_name or "") .. k] = tostring(item) end
    else
      body_members[name] = v
    end
  end
  -- required URI members
  local missing
  path = path:gsub("{([^}]+)}", function(key)
    local greedy = key:sub(-1) == "+"
    local k = greedy and key:sub(1, -2) or key
    local v = uri_values[k]
    if v == nil then missing = missing or k; return "" end
    return encode(v, greedy)
  end)
  if missing then
    error(("missing required parameter %s for %s"):format(missing, op_name), 0)
  end
  if ctx and ctx.bucket_in_host and uri_values.Bucket then
    -- virtual-hosted style: the bucket moves from the path to the host
    local b = encode(uri_values.Bucket)
    if path:sub(1, #b + 1) == "/" .. b then path = path:sub(#b + 2) end
    if path == "" then path = "/" end
  end
  local body
  local payload = input.payload
  if payload then
    local v = body_members[payload]
    local m = input.members[payload]
    local ps = shapes[m.shape] or { type = "blob" }
    if v ~= nil then
      if ps.type == "structure" then
        if is_xml then
          local out = {}
          xml_build(shapes, m.shape, v, m.location_name or ps.location_name or payload, out,
            "http://s3.amazonaws.com/doc/2006-03-01/")
          body = table.concat(out)
        else
          body = json.encode(v)
        end
      else
        body = tostring(v)
      end
    end
  else
    if next(body_members) then
      if is_xml then
        local out = {}
        xml_build(shapes, op.input, body_members, op.input_name or op.input, out)
        body = table.concat(out)
      else
        body = json.encode(body_members)
        headers["Content-Type"] = headers["Content-Type"] or "application/json"
      end
    end
  end
  local qs = {}
  for i, kv in ipairs(query) do
    qs[i] = encode(kv[1]) .. (kv[2] ~= nil and ("=" .. encode(kv[2])) or "")
  end
  return {
    method = op.method, path = path, query = table.concat(qs, "&"), headers = headers,
    body = body or "", host_prefix = op.host_prefix, bucket = uri_values.Bucket,
  }
end

---- serialize ------------------------------------------------------------------------------

function M.serialize(svc, op_name, op, params, ctx)
  local p = svc.protocol
  if p == "json" then
    return {
      method = "POST", path = "/", query = "",
      headers = {
        ["Content-Type"] = "application/x-amz-json-" .. (svc.json_version or "1.1"),
        ["X-Amz-Target"] = svc.target_prefix .. "." .. op_name,
      },
      body = json.encode(next(params) == nil and json.object({}) or params),
    }
  elseif p == "query" then
    local out = { { "Action", op_name }, { "Version", svc.api_version } }
    if op.input then query_flatten(svc.shapes, op.input, params, "", out) end
    return {
      method = "POST", path = "/", query = "",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" },
      body = M.form_encode(out),
    }
  elseif p == "rest-json" then
    return rest_serialize(svc, op_name, op, params, false, ctx)
  elseif p == "rest-xml" then
    return rest_serialize(svc, op_name, op, params, true, ctx)
  end
  error("unsupported protocol " .. tostring(p), 0)
end

---- parse ----------------------------------------------------------------------------------

local function first_bytes(s, n)
  n = n or 200
  s = s or ""
  local t = s:sub(1, n):gsub("[%c]", " ")
  if #s > n then t = t .. "..." end
  return t
end
M.first_bytes = first_bytes

local function child(node, name)
  for _, c in ipairs(node or {}) do
    if local_name(c.name) == name then return c end
  end
end

local function json_error(resp)
  local h = resp.headers or {}
  local ok, body = pcall(json.decode, resp.body ~= "" and resp.body or "{}")
  local code, message
  if ok and type(body) == "table" then
    code = body.__type or body.code or body.Code
    message = body.message or body.Message or body.errorMessage
  end
  if h["x-amzn-errortype"] then code = code or h["x-amzn-errortype"] end
  if code then
    code = tostring(code):gsub("^.*#", ""):gsub(":.*$", "")
  end
  return code, message, h["x-amzn-requestid"] or h["x-amz-request-id"], ok
end

local function xml_error(resp)
  local h = resp.headers or {}
  local rid = h["x-amz-request-id"] or h["x-amzn-requestid"]
  if (resp.body or "") == "" then return nil, nil, rid, true end
  local root = xml.decode(resp.body)
  if not root then return nil, nil, rid, false end
  -- <Error> (S3), <ErrorResponse><Error> (query), <ErrorResponse><Errors><Error> (EC2 style,
  -- and moto's IAM refusals for every protocol)
  local errs = child(root, "Errors")
  local err = local_name(root.name) == "Error" and root or child(root, "Error")
    or (errs and child(errs, "Error")) or root
  local code = child(err, "Code")
  local msg = child(err, "Message")
  local r = child(err, "RequestId") or child(root, "RequestId")
  return code and code.text, msg and msg.text, rid or (r and r.text), true
end

local status_codes = {
  [301] = "PermanentRedirect", [304] = "NotModified", [400] = "BadRequest",
  [403] = "Forbidden", [404] = "NotFound", [405] = "MethodNotAllowed", [412] = "PreconditionFailed",
  [500] = "InternalError", [503] = "ServiceUnavailable",
}

function M.parse_error(svc, resp)
  local code, message, rid, readable
  if svc.protocol == "json" or svc.protocol == "rest-json" then
    code, message, rid, readable = json_error(resp)
    -- an XML error from a JSON service: what an authorizing front end (moto's IAM check) sends
    if not code and (resp.body or ""):match("^%s*<") then
      code, message, rid, readable = xml_error(resp)
    end
  else
    code, message, rid, readable = xml_error(resp)
  end
  if not code then
    code = status_codes[resp.status] or ("HTTP" .. tostring(resp.status))
    if not message then
      message = (resp.body or "") ~= "" and ("HTTP " .. resp.status .. ": " .. first_bytes(resp.body))
          or ("HTTP " .. resp.status .. " with an empty body")
    end
  end
  return { code = code, message = message or code, request_id = rid, readable = readable }
end

local function add_headers_members(shapes, out_shape, resp, result)
  if not out_shape then return end
  local h = resp.headers or {}
  for name, m in pairs(out_shape.members or {}) do
    if m.location == "header" then
      local v = h[(m.location_name or name):lower()]
      if v ~= nil then result[name] = header_value(shapes[m.shape], v) end
    elseif m.location == "headers" then
      local prefix = (m.location_name or ""):lower()
      local map
      for k, v in pairs(h) do
        if prefix ~= "" and k:sub(1, #prefix) == prefix then
          map = map or {}
          map[k:sub(#prefix + 1)] = v
        end
      end
      if map then result[name] = map end
    elseif m.location == "statusCode" then
      result[name] = resp.status
    end
  end
end

function M.parse(svc, op_name, op, resp)
  local p = svc.protocol
  local body = resp.body or ""
  local h = resp.headers or {}
  if p == "json" or p == "rest-json" then
    local result = {}
    local out_shape = type(op) == "table" and op.output and svc.shapes[op.output] or nil
    local payload_raw = out_shape and out_shape.payload and
        (svc.shapes[out_shape.members[out_shape.payload].shape] or {}).type ~= "structure"
    if payload_raw then
      result[out_shape.payload] = body
    elseif body ~= "" then
      local ok, v = pcall(json.decode, body)
      if not ok or type(v) ~= "table" then
        return nil, { bad = true, message = "answer is not a JSON object: " .. first_bytes(body) }
      end
      result = v
      if out_shape and out_shape.payload then result = { [out_shape.payload] = v } end
    end
    if p == "rest-json" then add_headers_members(svc.shapes, out_shape, resp, result) end
    result.ResponseMetadata = { RequestId = h["x-amzn-requestid"], HTTPStatusCode = resp.status }
    return result
  end
  local shapes = svc.shapes
  local out_shape = op.output and shapes[op.output]
  local result = {}
  local rid = h["x-amz-request-id"] or h["x-amzn-requestid"]
  if p == "query" then
    local root, err = xml.decode(body)
    if not root then
      return nil, { bad = true, message = err.message .. "; answer begins: " .. first_bytes(body) }
    end
    local wrapper = op.result_wrapper and child(root, op.result_wrapper) or root
    if out_shape then result = xml_value(shapes, op.output, wrapper) end
    local meta = child(root, "ResponseMetadata")
    local r = meta and child(meta, "RequestId")
    rid = rid or (r and r.text)
  else -- rest-xml
    local payload = out_shape and out_shape.payload
    local pm = payload and out_shape.members[payload]
    local ps = pm and shapes[pm.shape]
    if payload and ps and ps.type ~= "structure" then
      result[payload] = body
    elseif body ~= "" and out_shape then
      local root, err = xml.decode(body)
      if not root then
        return nil, { bad = true, message = err.message .. "; answer begins: " .. first_bytes(body) }
      end
      if payload then
        result[payload] = xml_value(shapes, pm.shape, root)
      else
        result = xml_value(shapes, op.output, root)
      end
    end
    add_headers_members(shapes, out_shape, resp, result)
  end
  result.ResponseMetadata = { RequestId = rid, HTTPStatusCode = resp.status }
  return result
end

return M
