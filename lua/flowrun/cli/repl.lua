-- flowrun.cli.repl — the interactive REPL: each input line runs as a task of its own, so waiting
-- calls (AWS, PostgreSQL, flow.sleep) work as if synchronous; other tasks keep running while
-- you type. Multi-line input like the lua interpreter; results printed pretty; errors shown
-- without leaving; Ctrl-C cancels the running line (or drops the line being typed); Ctrl-D
-- exits. History in ~/.flowrun_history (each entry appended as it is entered); Tab completes
-- globals and table fields; Ctrl-R searches the history.
--
-- On a terminal, a long string or a big table is shown cut, with a line saying so and how to
-- see all of it (show(_)); `_` is the last value shown. help(x) / ?x say what x takes. An error
-- is shown with the first place in the user's code it went through (a wrong argument to aws.*
-- is reported where the REPL line called it, not inside lua/aws); trace() prints the whole
-- traceback.
local flow = require "flow"
local sys = require "flow.sys"
local pretty = require "flowrun.cli.pretty"

local M = {}

-- How much of a value the REPL shows on a terminal before saying how to see the rest.
M.LIMITS = { max_string = 2000, max_items = 100, max_total = 1000 }

local LUA_KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for",
  "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
  "true", "until", "while" }

-- Candidate names of table t: its own keys, its __index table's, and what a __complete
-- metamethod lists (aws services, a service's operations).
local function fields(t)
  local names, seen = {}, {}
  local function add(k)
    if type(k) == "string" and not seen[k] then seen[k] = true; names[#names + 1] = k end
  end
  local depth = 0
  while type(t) == "table" and depth < 5 do
    for k in pairs(t) do add(k) end
    local mt = getmetatable(t)
    if type(mt) ~= "table" then break end
    if type(mt.__complete) == "function" then
      local ok, list = pcall(mt.__complete, t)
      if ok and type(list) == "table" then for _, k in ipairs(list) do add(k) end end
    end
    t = rawget(mt, "__index")
    depth = depth + 1
  end
  return names
end

-- Completions of `word` (e.g. "aws.dms.desc", "string.fo", "pri") in env.
function M.complete(env, word, lazy)
  local head, sep, partial = word:match("^(.*)([%.:])([%w_]*)$")
  local candidates
  if head then
    local t = env
    for name in head:gmatch("[^%.:]+") do
      local ok, v = pcall(function() return t[name] end)
      if not ok or (type(v) ~= "table" and type(v) ~= "string") then return {} end
      t = type(v) == "string" and string or v
    end
    candidates = fields(t)
  else
    partial, head, sep = word, "", ""
    candidates = fields(env)
    for k in pairs(_G) do candidates[#candidates + 1] = k end
    for k in pairs(lazy or {}) do candidates[#candidates + 1] = k end
    for _, k in ipairs(LUA_KEYWORDS) do candidates[#candidates + 1] = k end
  end
  local out, seen = {}, {}
  for _, k in ipairs(candidates) do
    if type(k) == "string" and k:sub(1, #partial) == partial and not seen[k] and not k:match("^__") then
      seen[k] = true
      out[#out + 1] = head .. sep .. k
    end
  end
  table.sort(out)
  return out
end

-- Where errors come from: the Lua trees of flowrun itself (lua/, stdlib/). A frame elsewhere
-- (the REPL's input, "=stdin", or the user's own files) is the user's.
local INTERNAL = { "@" .. sys.root .. "/lua/", "@" .. sys.root .. "/stdlib/" }

local function internal(source)
  for _, p in ipairs(INTERNAL) do
    if source:sub(1, #p) == p then return true end
  end
  return false
end

-- Is a path as a message shows it (short_src: cut to "...tail" when long) flowrun's own?
local function internal_path(path)
  if path:sub(1, 3) == "..." then
    return path:find("/lua/", 1, true) ~= nil or path:find("/stdlib/", 1, true) ~= nil
  end
  return internal("@" .. path)
end

-- The first frame of the user's code on the stack of the error being handled ("stdin:3").
local function user_frame()
  for level = 3, 200 do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.what ~= "C" and (info.currentline or -1) > 0 and not internal(info.source) then
      return info.short_src .. ":" .. info.currentline
    end
  end
  return nil
end

local last_traceback -- of the last error, for trace()

-- A traceback without the REPL's own frames below the user's line.
function M.user_traceback(tb)
  local out = {}
  for l in (tb .. "\n"):gmatch("([^\n]*)\n") do
    local repl_frame = l:find("/flowrun/cli/repl.lua:", 1, true) or l:find("in function 'xpcall'", 1, true)
    if not repl_frame then
      out[#out + 1] = (l:gsub("stdin:(%d+): in upvalue 'packed'", "stdin:%1: in main chunk"))
    end
  end
  return table.concat(out, "\n")
end

-- How an error shows in the REPL: its message (AWS errors with status and request id), and
-- the place in the user's code it came through when the message does not start with it.
local function show_error(err, where)
  local text
  if flow.cancelled(err) then
    io.write("cancelled\n")
    return
  elseif flow.is_error(err) then
    local parts = { tostring(err) }
    if err.status then parts[#parts + 1] = "status " .. tostring(err.status) end
    if err.request_id then parts[#parts + 1] = "request id " .. tostring(err.request_id) end
    text = "error: " .. table.concat(parts, " | ")
  elseif type(err) == "string" then
    text = err
  else
    local ok, s = pcall(tostring, err)
    text = "error: " .. (ok and s or ("a " .. type(err) .. " value"))
  end
  if where and text:sub(1, #where + 1) ~= where .. ":" then
    -- a message placed inside flowrun's own Lua (stdlib/dms.lua:66: ...) is placed in the
    -- user's code instead; trace() still has every frame
    local path, rest = text:match("^(%S+%.lua):%d+: (.*)$")
    if path and internal_path(path) then
      text = where .. ": " .. rest
    else
      text = text .. "\n  at " .. where
    end
  end
  io.write(text, "\n")
end

local function read_line_tty(rl, prompt)
  rl.install(prompt)
  while true do
    local ev = rl.wait()
    if ev == "interrupt" then
      rl.remove()
      return nil, true
    end
    local done, line = rl.feed()
    if done then return line end
  end
end

local function read_line_plain(prompt)
  io.write(prompt)
  io.flush()
  local line = io.read("L")
  if line then line = line:gsub("\r?\n$", "") end
  return line
end

-- Compile the text: as an expression first (so `1 + 1` prints 2), then as statements.
-- Returns chunk, or nil, message, incomplete. An expression's chunk packs its values itself
-- (`return pack(expr)`, pack given as its argument) rather than ending in `return expr`: that
-- would be a tail call, and an error raised inside it would find no frame of the REPL's line
-- on the stack to say where it happened.
local function compile(code, env)
  local f, rerr = load("return " .. code, "=stdin", "t", env)
  if f then
    local packed = load("local __pack = ... return __pack(" .. code .. "\n)", "=stdin", "t", env)
    if packed then
      return function()
        local r = packed(table.pack)
        return table.unpack(r, 1, r.n)
      end
    end
    return f
  end
  local err
  f, err = load(code, "=stdin", "t", env)
  if f then return f end
  -- incomplete when either reading stops at the end ("1 +" as well as "function f()")
  return nil, err, err:match("<eof>$") ~= nil or rerr:match("<eof>$") ~= nil
end

local function terminal_width()
  local c = sys.isatty(1) and sys.winsize(1)
  return (c and c >= 20) and c or 80
end

-- Print one result: whole when not on a terminal; on a terminal cut to M.LIMITS, with a line
-- saying how to see all of it (name: the variable that holds it).
local function show_value(v, name, opts)
  if opts.output == "json" and opts.json_results then
    io.write(require("json").encode(v, { pretty = true }), "\n")
    return
  end
  if not opts.limit then
    io.write(pretty.format(v, { width = terminal_width() }), "\n")
    return
  end
  local lim = M.LIMITS
  local text, cut = pretty.render(v, { width = terminal_width(), max_string = lim.max_string,
    max_items = lim.max_items, max_total = lim.max_total })
  io.write(text, "\n")
  if cut then
    local what
    if type(v) == "string" then
      what = string.format("a string of %d bytes, the first %d shown", #v, lim.max_string)
    else
      what = string.format("cut to %d entries per table, %d in all", lim.max_items, lim.max_total)
    end
    io.write(string.format("-- %s; show(%s) prints all of it\n", what, name))
  end
end

-- Run one chunk as a task; prints its results or its error.
local function run_line(rl, f, env, opts)
  local where
  local function handler(e)
    if not flow.cancelled(e) then
      where = user_frame()
      local ok, tb = pcall(debug.traceback, type(e) == "string" and e or tostring(e), 2)
      last_traceback = ok and M.user_traceback(tb) or nil
    end
    return e
  end
  local h = flow.spawn(function()
    local r = table.pack(xpcall(f, handler))
    if r[1] then return table.unpack(r, 2, r.n) end
    error(r[2], 0)
  end)
  if rl then rl.set_line_task(h) end
  local ok = pcall(flow.wait_any, { h })
  if rl then rl.set_line_task(nil) end
  if not ok then -- the REPL itself was cancelled (SIGTERM)
    h:cancel()
    return false
  end
  local r = table.pack(h:result())
  if r[1] then
    for i = 2, r.n do
      local name = i == 2 and "_" or ("_" .. (i - 1))
      rawset(env, name, r[i])
      show_value(r[i], name, opts)
    end
  else
    show_error(r[2], where)
  end
  return true
end

-- The REPL's own functions, in its environment: help, show, trace.
local function add_helpers(env)
  local help = require "flowrun.cli.help"
  rawset(env, "help", function(...)
    if select("#", ...) == 0 then
      io.write(help.general(), "\n")
    else
      io.write(help.text((...), select(2, ...), terminal_width()), "\n")
    end
  end)
  rawset(env, "show", function(...)
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) == "string" then
        io.write(v, v:sub(-1) == "\n" and "" or "\n")
      else
        io.write(pretty.format(v, { width = terminal_width() }), "\n")
      end
    end
  end)
  rawset(env, "trace", function()
    io.write(last_traceback or "no error yet", "\n")
  end)
end

-- "?expr": help about expr.
local function help_line(code)
  local expr = code:match("^%s*%?%s*(.-)%s*$")
  if expr == "" then return "help()" end
  return string.format("help((%s), %q)", expr, expr)
end

function M.run(opts)
  opts = opts or {}
  local env = opts.env or require("flowrun.cli.script").lazy_env()
  local tty = sys.isatty(0)
  local rl
  local home = os.getenv("HOME")
  local history = home and (home .. "/.flowrun_history")
  add_helpers(env)
  opts = setmetatable({ limit = sys.isatty(1) }, { __index = opts })
  if tty then
    rl = require "flow.readline"
    rl.set_completer(function(word)
      return M.complete(env, word, { flow = 1, aws = 1, pg = 1, json = 1 })
    end)
    if history then rl.load_history(history) end
    io.write(("flowrun %s (%s) — help() for help, Ctrl-D exits, Ctrl-C cancels the running line\n")
      :format(sys.version, sys.lua_version))
  end
  local buffer
  while true do
    local prompt = buffer and ">> " or "> "
    local line, interrupted
    if tty then line, interrupted = read_line_tty(rl, prompt) else line = read_line_plain(prompt) end
    if interrupted then
      io.write("\n")
      buffer = nil
    elseif line == nil then
      io.write("\n")
      break
    else
      local code = buffer and (buffer .. "\n" .. line) or line
      if code:match("^%s*$") then
        buffer = nil
      else
        local source = code
        if not buffer and code:match("^%s*%?") then source = help_line(code) end
        local f, err, incomplete = compile(source, env)
        if incomplete then
          buffer = code
        else
          buffer = nil
          if rl then rl.add_history(code, history) end
          if not f then
            io.write(err, "\n")
          elseif not run_line(rl, f, env, opts) then
            break
          end
        end
      end
    end
    io.flush()
  end
  return 0
end

return M
