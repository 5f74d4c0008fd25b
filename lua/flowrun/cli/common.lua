-- flowrun.cli.common — what the commands share: messages, the run store the settings name,
-- loading a workflow file, parameters from --var.
local sys = require "flow.sys"

local M = {}

function M.eprint(...)
  local parts = { ... }
  for i = 1, #parts do parts[i] = tostring(parts[i]) end
  io.stderr:write("flowrun: ", table.concat(parts), "\n")
  io.stderr:flush()
end

function M.print_problems(what, problems)
  io.stderr:write("flowrun: ", what, ":\n")
  for _, p in ipairs(problems) do io.stderr:write("  - ", p, "\n") end
  io.stderr:flush()
end

-- merge(opts, base): options given before the script or command fill what the command's own
-- parse left unset; repeatable ones add up (base's first).
function M.merge(opts, base)
  for k, v in pairs(base) do
    if opts[k] == nil then
      opts[k] = v
    elseif type(v) == "table" and type(opts[k]) == "table" then
      local all = {}
      for _, x in ipairs(v) do all[#all + 1] = x end
      for _, x in ipairs(opts[k]) do all[#all + 1] = x end
      opts[k] = all
    end
  end
  return opts
end

-- The run store the settings name.
function M.store(s)
  return require("flowrun.engine.store").open(s)
end

-- Is err a failure of the run store itself (unreachable, refused login, a schema it cannot use)
-- rather than a bug? Those are reported in one line, without a traceback.
function M.is_store_error(err)
  if type(err) ~= "table" then return false end
  local code = tostring(err.code or "")
  return code:match("^store%.") ~= nil or code:match("^pg%.") ~= nil
end

-- store_call(fn, ...) -> exit code: runs a command's body; a failure of the store is one line
-- on stderr and exit 1 (the store's messages never hold a password), anything else is raised.
function M.store_call(fn, ...)
  local r = table.pack(pcall(fn, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local err = r[2]
  if M.is_store_error(err) then
    M.eprint(err.message or err.code)
    return 1
  end
  error(err, 0)
end

-- store_try(fn, ...) -> true, fn's results; or false after printing a failure of the store (the
-- caller exits 1). Anything else is raised.
function M.store_try(fn, ...)
  local r = table.pack(pcall(fn, ...))
  if r[1] then return true, table.unpack(r, 2, r.n) end
  if M.is_store_error(r[2]) then
    M.eprint(r[2].message or r[2].code)
    return false
  end
  error(r[2], 0)
end

-- find_run(s, id) -> store, run: the run id names in the store of settings s (an id, a unique
-- prefix, "last"); or nil and the exit code after saying why (1: the store failed, 2: no such
-- run).
function M.find_run(s, id)
  local store = M.store(s)
  local ok, r, err = M.store_try(store.find, store, id)
  if not ok then return nil, 1 end
  if not r then M.eprint(err) return nil, 2 end
  return store, r
end

-- Where a store was named, as a command line continues it: "--store URL" (without password),
-- "--state-dir DIR", or nothing when it is the default or comes from the environment.
function M.store_arg(s)
  if s.store_source == "--store" and s.store_kind == "postgresql" then
    return " --store " .. require("flowrun.engine.store.pg").redact(s.store_url)
  elseif s.state_dir_source == "--state-dir" or s.store_source == "--store" then
    return " --state-dir " .. s.state_dir
  end
  return ""
end

-- load_workflow(path) -> workflow (validated), or nil after printing why (exit 2).
function M.load_workflow(path)
  local wf, err = require("flowrun.engine").load_file(path)
  if not wf then M.eprint(err) return nil end
  local ok, problems = wf:validate()
  if not ok then M.print_problems("invalid workflow " .. path, problems) return nil end
  return wf
end

-- vars_of(list of "NAME=VALUE") -> {name = "value"}, or nil and a message.
function M.vars_of(list)
  local vars = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if not k then return nil, "--var expects NAME=VALUE, got " .. string.format("%q", kv) end
    vars[k] = v
  end
  return vars
end

function M.abspath(p)
  if p:sub(1, 1) == "/" then return p end
  return sys.realpath(p) or (sys.cwd() .. "/" .. p:gsub("^%./", ""))
end

return M
