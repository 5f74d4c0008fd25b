-- flowrun.cli.script — running Lua the way `lua` does: a script file with its arguments, `-e`
-- code whose results are printed, `-l` modules; an uncaught error reported with its traceback.
local core = require "flow.core"

local M = {}

local function stderr(...)
  io.stderr:write("flowrun: ", ...)
  io.stderr:write("\n")
end

-- Globals the REPL and -e see without require: loaded on first use.
M.LAZY = { flow = "flow", aws = "aws", pg = "pg", json = "json", sim = "sim" }

function M.lazy_env()
  return setmetatable({}, {
    __index = function(t, k)
      local v = _G[k]
      if v ~= nil then return v end
      local mod = M.LAZY[k]
      if mod then
        local ok, m = pcall(require, mod)
        if ok then rawset(t, k, m); return m end
      end
      return nil
    end,
  })
end

-- Text for an uncaught error: the error (its __tostring for error objects) and a traceback.
function M.traceback(err)
  if type(err) == "table" and getmetatable(err) and getmetatable(err).__tostring then
    local ok, s = pcall(tostring, err)
    err = ok and s or "(an error object whose __tostring fails)"
  elseif type(err) ~= "string" then
    err = ("(error object is a %s value)"):format(type(err))
  end
  -- level 3: skip this function and the xpcall handler; drop the frames of flowrun's own
  -- runner below the user's code
  local tb = debug.traceback(err, 3)
  return (tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end

-- run_protected(fn, ...) -> exit code, packed results. Reports an uncaught error.
function M.run_protected(fn, ...)
  local r = table.pack(xpcall(fn, function(e)
    if core.cancelled(e) then return e end
    return { msg = M.traceback(e), err = e }
  end, ...))
  if r[1] then return 0, r end
  local e = r[2]
  if core.cancelled(e) then
    local sig = core.signal()
    return sig and 128 + sig or 1, r
  end
  -- a memory error does not go through the handler: it arrives as the message itself
  if type(e) ~= "table" or type(e.msg) ~= "string" then
    stderr(type(e) == "string" and e or "error")
  else
    stderr(e.msg)
  end
  return 1, r
end

function M.print_results(r, fmt)
  if r.n < 2 then return end
  if fmt == "lua" then
    local pretty = require "flowrun.cli.pretty"
    for i = 2, r.n do print(pretty.format(r[i])) end
  else
    local json = require "json"
    for i = 2, r.n do
      local v = r[i]
      local ok, s = pcall(json.encode, v == nil and json.null or v, { pretty = true })
      if not ok then s = require("flowrun.cli.pretty").format(v) end
      print(s)
    end
  end
end

-- load_file(path) -> chunk, or nil and a message ("-": standard input).
function M.load_file(path)
  if path == "-" then return load(io.read("a"), "=stdin") end
  local fh, err = io.open(path, "r")
  if not fh then return nil, "cannot open " .. tostring(err) end
  fh:close()
  return loadfile(path)
end

-- run(path, args, argv0) -> exit code, first result. Runs a script with the global `arg`
-- set as lua does: arg[0] the script, arg[1..] its arguments.
function M.run(path, args, argv0)
  local chunk, err = M.load_file(path)
  if not chunk then
    stderr(err)
    return 1
  end
  local a = { [0] = path, [-1] = argv0 }
  for i, v in ipairs(args) do a[i] = v end
  _G.arg = a
  local code, r = M.run_protected(chunk, table.unpack(args))
  return code, code == 0 and r[2] or nil
end

-- exec(code, env, output) -> exit code: runs -e CODE and prints its results.
function M.exec(code, env, output)
  local chunk, err = load(code, "=(command line)", "t", env)
  if not chunk then
    stderr(err)
    return 1
  end
  local rc, r = M.run_protected(chunk)
  if rc == 0 then M.print_results(r, output) end
  return rc
end

-- require_lib(name) -> exit code: -l MODULE, its value the global of that name.
function M.require_lib(name)
  local rc, r = M.run_protected(require, name)
  if rc == 0 then _G[name:match("[^.]+$")] = r[2] end
  return rc
end

return M
