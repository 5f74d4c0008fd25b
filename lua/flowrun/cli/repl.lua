-- flowrun.cli.repl — the interactive REPL: each input line runs as a task of its own, so waiting
-- calls (AWS, PostgreSQL, flow.sleep) work as if synchronous; other tasks keep running while
-- you type. Multi-line input like the lua interpreter; results printed pretty; errors shown
-- without leaving; Ctrl-C cancels the running line (or drops the line being typed); Ctrl-D
-- exits. History in ~/.flowrun_history; Tab completes globals and table fields.
local flow = require "flow"
local sys = require "flow.sys"
local pretty = require "flowrun.cli.pretty"

local M = {}

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

-- How an error shows in the REPL: AWS errors with code, message and request id.
local function show_error(err, tb)
  if flow.cancelled(err) then
    io.write("cancelled\n")
  elseif flow.is_error(err) then
    local parts = { tostring(err) }
    if err.status then parts[#parts + 1] = "status " .. tostring(err.status) end
    if err.request_id then parts[#parts + 1] = "request id " .. tostring(err.request_id) end
    io.write("error: ", table.concat(parts, " | "), "\n")
  else
    io.write(tb or tostring(err), "\n")
  end
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
-- Returns chunk, or nil, message, incomplete.
local function compile(code, env)
  local f, rerr = load("return " .. code, "=stdin", "t", env)
  if f then return f end
  local err
  f, err = load(code, "=stdin", "t", env)
  if f then return f end
  -- incomplete when either reading stops at the end ("1 +" as well as "function f()")
  return nil, err, err:match("<eof>$") ~= nil or rerr:match("<eof>$") ~= nil
end

-- Run one chunk as a task; prints its results or its error.
local function run_line(rl, f, opts)
  local h = flow.spawn(function() return f() end)
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
      if opts.output == "json" and opts.json_results then
        io.write(require("json").encode(r[i], { pretty = true }), "\n")
      else
        io.write(pretty.format(r[i]), "\n")
      end
    end
  else
    local tb = h:traceback()
    if type(tb) == "string" then
      tb = tb:gsub("\n%s*%(%.%.%.tail calls%.%.%.%)", ""):gsub("\n%s*%[C%]: in %?$", "")
    end
    show_error(r[2], tb)
  end
  return true
end

function M.run(opts)
  opts = opts or {}
  local env = opts.env or require("flowrun.cli.script").lazy_env()
  local tty = sys.isatty(0)
  local rl
  local home = os.getenv("HOME")
  local history = home and (home .. "/.flowrun_history")
  if tty then
    rl = require "flow.readline"
    rl.set_completer(function(word)
      return M.complete(env, word, { flow = 1, aws = 1, pg = 1, json = 1 })
    end)
    if history then rl.load_history(history) end
    io.write(("flowrun %s (%s) — Ctrl-D exits, Ctrl-C cancels the running line\n"):format(
      sys.version, sys.lua_version))
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
        local f, err, incomplete = compile(code, env)
        if incomplete then
          buffer = code
        else
          buffer = nil
          if rl then rl.add_history(code) end
          if not f then
            io.write(err, "\n")
          elseif not run_line(rl, f, opts) then
            break
          end
        end
      end
    end
    io.flush()
  end
  if rl and history then rl.save_history(history) end
  return 0
end

return M
