-- flowrun.cli.pretty — values as people read them: nested tables indented, keys sorted, cycles
-- marked, short tables on one line. Used by the REPL and `flowrun -e --output lua`.
--
--   pretty.format(v [, opts]) -> text
--   pretty.render(v [, opts]) -> text, cut
--     opts.width      columns a one-line table may take (80)
--     opts.max_string a longer string shows its first max_string bytes, then "..." (no limit)
--     opts.max_items  a table shows its first max_items entries, then how many more (no limit)
--     opts.max_total  entries shown in all, after which tables show as { ... } (no limit)
--   cut is true when anything was left out: the REPL then says how to see all of it.
local M = {}

local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

-- s cut to at most n bytes, not in the middle of a UTF-8 character
local function utf8_prefix(s, n)
  local cut = n
  while cut > 0 and cut < #s and (s:byte(cut + 1) or 0) >= 0x80 and (s:byte(cut + 1) or 0) < 0xC0 do
    cut = cut - 1
  end
  return s:sub(1, cut)
end
M.utf8_prefix = utf8_prefix

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

local function scalar(v, st)
  local t = type(v)
  if t == "string" then
    if st.max_string and #v > st.max_string then
      st.cut = true
      return quote(utf8_prefix(v, st.max_string)) .. "..."
    end
    return quote(v)
  end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and type(mt) == "table" and mt.__tostring and t ~= "table" then return tostring(v) end
  return nil
end

local function fmt_key(k, st)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
  return "[" .. (scalar(k, st) or tostring(k)) .. "]"
end

local function render(v, indent, seen, st)
  local s = scalar(v, st)
  if s then return s end
  if type(v) ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle: " .. tostring(v):gsub("^table: ", "table ") .. ">" end
  local mt = getmetatable(v)
  local prefix = ""
  if mt and mt.__name == "flowrun.error" then prefix = "<error> " end
  if st.budget and st.budget <= 0 then
    st.cut = true
    return prefix .. "{ ... }"
  end
  seen[v] = true
  local n = #v
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  local total = n + #keys
  local shown = total
  if st.max_items and shown > st.max_items then shown = st.max_items end
  if st.budget and shown > st.budget then shown = math.max(st.budget, 1) end
  if st.budget then st.budget = st.budget - shown end
  local items = {}
  for i = 1, math.min(n, shown) do items[#items + 1] = { nil, v[i] } end
  for i = 1, shown - #items do items[#items + 1] = { keys[i], v[keys[i]] } end
  local more = total - shown
  if more > 0 then st.cut = true end
  if #items == 0 then
    seen[v] = nil
    if mt and mt.__jsontype == "array" then return "{} --[[array]]" end
    return prefix .. "{}"
  end
  local more_note = more > 0 and string.format("--[[ %d more ]]", more) or nil
  -- each entry rendered once, at the indent it has on a line of its own
  local inner = indent .. "  "
  local rendered, simple = {}, true
  for i, it in ipairs(items) do
    local r = render(it[2], inner, seen, st)
    if r:find("\n") then simple = false end
    rendered[i] = (it[1] ~= nil and (fmt_key(it[1], st) .. " = ") or "") .. r
  end
  -- one line when it fits
  if simple then
    local parts = table.move(rendered, 1, #rendered, 1, {})
    if more_note then parts[#parts + 1] = more_note end
    local line = prefix .. "{ " .. table.concat(parts, ", ") .. " }"
    if #line + #indent <= st.width then seen[v] = nil; return line end
  end
  local lines = { prefix .. "{" }
  for _, r in ipairs(rendered) do lines[#lines + 1] = inner .. r .. "," end
  if more_note then lines[#lines + 1] = inner .. more_note end
  lines[#lines + 1] = indent .. "}"
  seen[v] = nil
  return table.concat(lines, "\n")
end

function M.render(v, opts)
  opts = opts or {}
  local st = { width = opts.width or 80, max_string = opts.max_string, max_items = opts.max_items,
    budget = opts.max_total, cut = false }
  local text = render(v, "", {}, st)
  return text, st.cut
end

function M.format(v, opts)
  return (M.render(v, opts))
end

return M
