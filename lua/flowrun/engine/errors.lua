-- flowrun.engine.errors — whatever a task raised, made safe to journal, show and send: a string
-- that is valid UTF-8 (other bytes shown as \xNN), never raising, whatever the error value is (a
-- table whose __tostring or __index raises, a non-UTF-8 message, a cycle, a userdata).
local M = {}

local utf8_len = utf8.len

-- safe(s) -> s when it is valid UTF-8, else s with each byte that does not belong to a valid
-- UTF-8 sequence written as \xNN.
local function safe(s)
  if utf8_len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok, j = utf8_len(s, i, n)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    -- j: the position of the first invalid byte
    out[#out + 1] = s:sub(i, j - 1)
    out[#out + 1] = string.format("\\x%02X", s:byte(j))
    i = j + 1
  end
  return table.concat(out)
end
M.safe = safe

-- safe_tostring(v) -> a valid UTF-8 string for any value; never raises.
function M.safe_tostring(v)
  local t = type(v)
  if t == "string" then return safe(v) end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return safe(s) end
  return string.format("(a %s value whose __tostring fails)", t)
end

local FIELDS = { "retryable", "status", "request_id", "sqlstate", "service", "operation" }

local function field(e, k)
  local ok, v = pcall(rawget, e, k)
  if not ok then return nil end
  if type(v) == "string" then return safe(v) end
  if type(v) == "number" or type(v) == "boolean" then return v end
  return nil
end

-- record(err) -> the table that is journaled and shown for an error: {code, message} and the plain
-- fields error objects carry (never secrets: error objects are built without them). The message
-- keeps its lines (a failed EMR step's FailureDetails and stderr tail).
function M.record(e)
  if type(e) ~= "table" then return { message = M.safe_tostring(e) } end
  local o = { code = field(e, "code"), message = field(e, "message") }
  for _, k in ipairs(FIELDS) do o[k] = field(e, k) end
  if type(o.code) ~= "string" and o.code ~= nil then o.code = tostring(o.code) end
  if type(o.message) ~= "string" and o.message ~= nil then o.message = tostring(o.message) end
  if o.code == nil and o.message == nil then o.message = M.safe_tostring(e) end
  return o
end

-- render(err) -> "code: message" (the whole message, lines intact) for any error value.
function M.render(e)
  if e == nil then return "" end
  local r = type(e) == "table" and M.record(e) or { message = M.safe_tostring(e) }
  if r.code then return r.code .. ": " .. (r.message or "") end
  return r.message or ""
end

-- headline(err, max) -> the first meaningful line of an error (for summaries and live views),
-- cut to max characters, and whether lines were left out.
function M.headline(e, max)
  local s = M.render(e)
  local first = s:match("^%s*([^\n]*%S)") or ""
  local more = s:find("\n%s*%S") ~= nil
  if max and utf8.len(first) and utf8.len(first) > max then
    first = first:sub(1, utf8.offset(first, max - 2) - 1) .. "..."
    more = true
  end
  return first, more
end

return M
