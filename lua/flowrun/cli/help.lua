-- flowrun.cli.help — what the REPL's help(x) and ?x say about a value:
--   an AWS operation (aws.dms.start_replication_task): its required and optional parameters
--     with their types, from the bundled model (lua/aws/models/params/<service>.lua);
--   an AWS service (aws.dms) or aws itself: its operations, its services and functions;
--   a Lua function: where it is defined, its parameters, the comment above its definition;
--   a C function: its name and, in a build tree, the comment above its binding in runtime/;
--   a table (a module): its functions and other fields; anything else: its type and value.
-- help.text(v [, expr]) -> the text (lines, no final newline); help.general() -> the REPL's.
local sys = require "flow.sys"
local pretty = require "flowrun.cli.pretty"

local M = {}

local KIND = {
  structure = "table", list = "table (a list)", map = "table (name -> value)",
  string = "string", blob = "string (bytes)", boolean = "boolean", integer = "integer",
  long = "integer", double = "number", float = "number",
  timestamp = "timestamp (epoch seconds or ISO 8601 text)",
}

-- The shortest "module.field" under which a loaded module holds v.
local function find_name(v)
  local best
  for modname, mod in pairs(package.loaded) do
    if type(mod) == "table" and type(modname) == "string" then
      for k, x in next, mod do
        if x == v and type(k) == "string" then
          local name = modname .. "." .. k
          if not best or #name < #best then best = name end
        end
      end
    end
  end
  return best
end

-- service name and operation (PascalCase) of an aws.<service>.<op> function, or nil.
local function aws_operation(f)
  local aws = package.loaded.aws
  if type(aws) ~= "table" or type(f) ~= "function" then return nil end
  for sname, svc in pairs(aws.services) do
    local obj = aws[sname]
    for k, v in next, obj do
      if v == f then
        for op in pairs(svc.operations or {}) do
          if aws.snake_name(op) == k then return sname, op, k end
        end
      end
    end
  end
  return nil
end

local function service_of(t)
  local aws = package.loaded.aws
  if type(aws) ~= "table" or type(t) ~= "table" then return nil end
  for sname in pairs(aws.services) do
    if rawequal(aws[sname], t) then return sname end
  end
  return nil
end

local function columns(names, width, indent)
  local out, line = {}, indent
  for _, n in ipairs(names) do
    if #line + #n + 2 > width and line ~= indent then
      out[#out + 1] = line
      line = indent
    end
    line = line .. n .. "  "
  end
  if line ~= indent then out[#out + 1] = line end
  return out
end

local function operation_help(sname, op, snake)
  local svc = require("aws").services[sname]
  local ok, params = pcall(require, "aws.models.params." .. sname)
  local spec = ok and type(params) == "table" and params[op] or nil
  local lines = { string.format("aws.%s.%s{params [, opts]} — %s %s", sname, snake,
    svc.service_id or sname, op) }
  if not spec then
    lines[#lines + 1] = "  (no parameter model bundled for " .. sname .. ")"
    return lines
  end
  local required, is_required = {}, {}
  for _, m in ipairs(spec.required or {}) do required[#required + 1] = m; is_required[m] = true end
  table.sort(required)
  local optional = {}
  for m in pairs(spec.members or {}) do if not is_required[m] then optional[#optional + 1] = m end end
  table.sort(optional)
  local w = 4
  for m in pairs(spec.members or {}) do w = math.max(w, #m) end
  local function list(title, names)
    lines[#lines + 1] = "  " .. title .. (#names == 0 and " none" or "")
    for _, m in ipairs(names) do
      local kind = spec.members[m]
      lines[#lines + 1] = string.format("    %-" .. w .. "s  %s", m, KIND[kind] or kind)
    end
  end
  list("required:", required)
  list("optional:", optional)
  local example = {}
  for _, m in ipairs(required) do example[#example + 1] = m .. " = ..." end
  lines[#lines + 1] = string.format("  r = aws.%s.%s{ %s }", sname, snake, table.concat(example, ", "))
  lines[#lines + 1] = "  answers the response as a table; a failure raises an error object"
  lines[#lines + 1] = "  (err.code, err.message, err.request_id); opts: region, profile, endpoint_url, timeout"
  return lines
end

local function service_help(sname, width)
  local aws = require "aws"
  local svc = aws.services[sname]
  local names = {}
  for op in pairs(svc.operations or {}) do names[#names + 1] = aws.snake_name(op) end
  table.sort(names)
  local lines = { string.format("aws.%s — %s (%s protocol), %d operations; help(aws.%s.<op>) for "
    .. "one's parameters:", sname, svc.service_id or sname, svc.protocol or "?", #names, sname) }
  for _, l in ipairs(columns(names, width, "  ")) do lines[#lines + 1] = l end
  return lines
end

-- The comment block right above line `line` of a Lua file, and that line.
local function source_doc(path, line)
  local f = io.open(path)
  if not f then return nil end
  local all = {}
  for l in f:lines() do
    all[#all + 1] = l
    if #all > line then break end
  end
  f:close()
  local def = all[line]
  local doc = {}
  local i = line - 1
  while i >= 1 and all[i]:match("^%s*%-%-") do
    table.insert(doc, 1, (all[i]:gsub("^%s*%-%-+ ?", "")))
    i = i - 1
  end
  return doc, def
end

-- The C sources of a build tree (runtime/*.c), read once: {name, text} pairs, or {}.
local c_sources
local function sources()
  if c_sources then return c_sources end
  c_sources = {}
  local dir = sys.root .. "/runtime"
  for _, fname in ipairs(sys.readdir(dir) or {}) do
    if fname:match("%.c$") then
      local f = io.open(dir .. "/" .. fname)
      if f then
        c_sources[#c_sources + 1] = { fname, f:read("a") }
        f:close()
      end
    end
  end
  return c_sources
end

-- The comment above a C binding in runtime/*.c that starts with name( (build tree only).
local function c_doc(name)
  local short = name:match("([%w_]+%.[%w_]+)$") or name
  for _, src in ipairs(sources()) do
    local fname, text = src[1], src[2]
    for _, n in ipairs { name, short } do
      local s = text:find("/%* " .. n:gsub("%p", "%%%0") .. "%(")
      if s then
        local e = text:find("%*/", s) or #text
        local doc = {}
        for l in text:sub(s + 3, e - 1):gmatch("[^\n]+") do
          doc[#doc + 1] = (l:gsub("^%s*%*%s?", ""))
        end
        return doc, "runtime/" .. fname
      end
    end
  end
  return nil
end

local function signature(f, name)
  local info = debug.getinfo(f, "u")
  local params = {}
  for i = 1, info.nparams do params[i] = debug.getlocal(f, i) or ("arg" .. i) end
  if info.isvararg then params[#params + 1] = "..." end
  return (name or "function") .. "(" .. table.concat(params, ", ") .. ")"
end

local function function_help(f, expr)
  local name = expr or find_name(f)
  local info = debug.getinfo(f, "S")
  local lines = {}
  if info.what == "C" then
    lines[1] = (name or "a function") .. " — a C function"
    local doc, where = c_doc(name or "")
    if doc then
      for _, l in ipairs(doc) do lines[#lines + 1] = "  " .. l end
      lines[#lines + 1] = "  (" .. where .. ")"
    else
      lines[#lines + 1] = "  see the README for what it takes and answers"
    end
    return lines
  end
  lines[1] = signature(f, name)
  local path = info.source:match("^@(.*)$")
  if path then
    local doc, def = source_doc(path, info.linedefined)
    for _, l in ipairs(doc or {}) do lines[#lines + 1] = "  " .. l end
    if def and not (doc and #doc > 0) then lines[#lines + 1] = "  " .. def:gsub("^%s+", "") end
  end
  lines[#lines + 1] = string.format("  (defined at %s:%d)", info.short_src, info.linedefined)
  return lines
end

local function table_help(t, expr, width)
  local fns, others = {}, {}
  for k, v in next, t do
    if type(k) == "string" and not k:match("^_") then
      if type(v) == "function" then fns[#fns + 1] = k else others[#others + 1] = k end
    end
  end
  table.sort(fns)
  table.sort(others)
  local mt = getmetatable(t)
  local lines = { string.format("%s — a table: %d function%s, %d other field%s", expr or tostring(t),
    #fns, #fns == 1 and "" or "s", #others, #others == 1 and "" or "s") }
  for _, k in ipairs(fns) do
    local f = t[k]
    local info = debug.getinfo(f, "S")
    local sig = info.what == "C" and (k .. "(...)") or signature(f, k)
    local first = ""
    if info.what == "C" then
      local doc = c_doc((expr or "") .. "." .. k)
      if doc and doc[1] then sig, first = doc[1], "" end
    else
      local path = info.source:match("^@(.*)$")
      local doc = path and source_doc(path, info.linedefined)
      if doc and doc[1] then first = doc[1] end
    end
    local l = "  " .. sig .. (first ~= "" and ("  — " .. first) or "")
    if #l > width then l = l:sub(1, width - 3) .. "..." end
    lines[#lines + 1] = l
  end
  for _, k in ipairs(others) do
    local v = t[k]
    local shown = type(v) == "table" and "a table" or pretty.format(v, { max_string = 40 })
    lines[#lines + 1] = "  " .. k .. " = " .. shown
  end
  if mt and type(mt) == "table" and mt.__complete then
    lines[#lines + 1] = "  (and what Tab completes after " .. (expr or "it") .. ".)"
  end
  lines[#lines + 1] = "  help(" .. (expr or "t") .. ".<name>) for one of them"
  return lines
end

function M.text(v, expr, width)
  width = width or 100
  local lines
  if type(v) == "function" then
    local sname, op, snake = aws_operation(v)
    if sname then lines = operation_help(sname, op, snake)
    else lines = function_help(v, expr) end
  elseif type(v) == "table" and package.loaded.aws and rawequal(v, package.loaded.aws) then
    local aws = package.loaded.aws
    local names = {}
    for s in pairs(aws.services) do names[#names + 1] = s end
    table.sort(names)
    lines = { "aws — AWS, called as aws.<service>.<operation>{params}; help(aws.<service>) lists",
      "a service's operations. Services:" }
    for _, l in ipairs(columns(names, width, "  ")) do lines[#lines + 1] = l end
    local fns = {}
    for _, k in ipairs { "call", "paginate", "collect", "presign", "configure", "use_transport" } do
      if type(aws[k]) == "function" then fns[#fns + 1] = "aws." .. k end
    end
    lines[#lines + 1] = "Functions: " .. table.concat(fns, ", ")
  elseif type(v) == "table" and service_of(v) then
    lines = service_help(service_of(v), width)
  elseif type(v) == "table" then
    lines = table_help(v, expr, width)
  else
    local text = pretty.format(v, { max_string = 200, max_items = 20, max_total = 100 })
    lines = { string.format("%s — a %s: %s", expr or "value", type(v), text) }
  end
  return table.concat(lines, "\n")
end

function M.general()
  return table.concat({
    "flowrun REPL: each line runs as a task, so waiting calls (AWS, PostgreSQL, flow.sleep) read",
    "as if synchronous; tasks you spawn keep running while you type.",
    "  flow, aws, pg, json        there without require",
    "  help(x), ?x                what x takes: a function, an AWS operation (its parameters),",
    "                             a service (its operations), a module",
    "  _                          the last value shown (_2, _3 ... the others of the same line)",
    "  show(x)                    all of x: long strings and big tables are shown cut",
    "  trace()                    the whole traceback of the last error",
    "  Tab completes; Ctrl-R searches the history (Enter runs, Ctrl-G gives the line back);",
    "  Ctrl-L clears the screen; Ctrl-C cancels the running line or drops the typed one;",
    "  Ctrl-D exits. History: ~/.flowrun_history.",
  }, "\n")
end

return M
