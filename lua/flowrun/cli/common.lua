-- flowrun.cli.common — what the commands share: messages, the run store the settings name,
-- loading a workflow file, parameters from --var.
local sys = require "flow.sys"
local engine = require "flowrun.engine"

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

-- load_workflow(path) -> workflow (validated), or nil after printing why (exit 2).
function M.load_workflow(path)
  local wf, err = engine.load_file(path)
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
