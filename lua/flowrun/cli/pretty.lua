-- flowrun.cli.pretty — values as people read them: nested tables indented, keys sorted, cycles
-- marked, short tables on one line. Used by the REPL and `flowrun -e --output lua`.
local M = {}

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    if ta == "number" then return true end
    if tb == "number" then return false end
    return ta < tb
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and type(mt) == "table" and mt.__tostring and t ~= "table" then return tostring(v) end
  return nil
end

local function fmt_key(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
  return "[" .. (scalar(k) or tostring(k)) .. "]"
end

local function render(v, indent, seen, width)
  local s = scalar(v)
  if s then return s end
  if type(v) ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle: " .. tostring(v):gsub("^table: ", "table ") .. ">" end
  local mt = getmetatable(v)
  local prefix = ""
  if mt and mt.__name == "flowrun.error" then prefix = "<error> " end
  seen[v] = true
  local n = #v
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  local items = {}
  for i = 1, n do items[#items + 1] = { nil, v[i] } end
  for _, k in ipairs(keys) do items[#items + 1] = { k, v[k] } end
  if #items == 0 then
    seen[v] = nil
    if mt and mt.__jsontype == "array" then return "{} --[[array]]" end
    return prefix .. "{}"
  end
  -- one line when it fits
  local parts, simple = {}, true
  for _, it in ipairs(items) do
    local r = render(it[2], indent .. "  ", seen, width)
    if r:find("\n") then simple = false break end
    parts[#parts + 1] = (it[1] ~= nil and (fmt_key(it[1]) .. " = ") or "") .. r
  end
  if simple then
    local line = prefix .. "{ " .. table.concat(parts, ", ") .. " }"
    if #line + #indent <= width then seen[v] = nil; return line end
  end
  local lines = { prefix .. "{" }
  local inner = indent .. "  "
  for _, it in ipairs(items) do
    local r = render(it[2], inner, seen, width)
    lines[#lines + 1] = inner .. (it[1] ~= nil and (fmt_key(it[1]) .. " = ") or "") .. r .. ","
  end
  lines[#lines + 1] = indent .. "}"
  seen[v] = nil
  return table.concat(lines, "\n")
end

-- pretty.format(value [, {width = 80}]) -> string
function M.format(v, opts)
  return render(v, "", {}, opts and opts.width or 80)
end

return M
