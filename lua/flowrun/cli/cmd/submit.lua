-- flowrun submit WORKFLOW.lua [--var K=V] [--vars-file F] [--store S]: queue a run for the
-- workers and print its id. The workflow and its parameters are checked here (exit 2, nothing
-- queued, when either is wrong); the store keeps the file's source and hash, so the run
-- executes the version submitted, wherever a worker picks it up. Secret parameters are not
-- stored: a worker takes them from its own environment or --vars-file.
local engine = require "flowrun.engine"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

-- A value that converts to the parameter's type: stands for a secret parameter the worker
-- will be given, so the others can be checked now.
local PLACEHOLDER = { number = "0", integer = "0", boolean = "false", table = "{}" }

local function resolve(wf, opts)
  local vars, verr = common.vars_of(opts.var)
  if not vars then common.eprint(verr) return nil end
  local secret_given = {}
  for k in pairs(vars) do
    if wf.params[k] and wf.params[k].secret then secret_given[#secret_given + 1] = k end
  end
  table.sort(secret_given)
  for _, k in ipairs(secret_given) do
    vars[k] = nil
    common.eprint("--var ", k, ": a secret parameter is not stored with the run; the worker ",
      "takes it from its FLOWRUN_VAR_", k:upper(), " or --vars-file")
  end
  local params, problems = wf:resolve_params { vars = vars, vars_files = opts.vars_file }
  if not params then
    -- required secret parameters are the worker's to give: check the rest without them
    local placeholders = {}
    for name, p in pairs(wf.params) do
      if p.secret and p.required and vars[name] == nil then
        local kind = p.type or (p.default ~= nil and type(p.default)) or "string"
        vars[name] = PLACEHOLDER[kind] or "x"
        placeholders[name] = true
      end
    end
    params, problems = wf:resolve_params { vars = vars, vars_files = opts.vars_file }
    if not params then common.print_problems("invalid parameters", problems) return nil end
    for name in pairs(placeholders) do params[name] = nil end
  end
  return params
end

function M.run(opts)
  local path = opts.workflow
  local f = io.open(path, "rb")
  local source = f and f:read("a")
  if f then f:close() end
  if not source then common.eprint("cannot read ", path) return 2 end
  -- what is checked is exactly what is stored: the text, loaded the way a worker loads it
  local name = path:match("[^/]*$")
  local chunk, lerr = load(source, "=" .. name)
  if not chunk then common.eprint(lerr) return 2 end
  local wf, werr = engine.load(chunk, name)
  if not wf then common.eprint(werr) return 2 end
  local ok, problems = wf:validate()
  if not ok then common.print_problems("invalid workflow " .. path, problems) return 2 end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local params = resolve(wf, opts)
  if not params then return 2 end
  local options = {}
  if s.timeout then options.timeout = s.timeout end
  if s.max_active then options.max_active = s.max_active end
  local public, secret = engine.public_params(wf, params)
  for name in pairs(wf.params) do
    if wf.params[name].secret then
      local seen = false
      for _, x in ipairs(secret) do if x == name then seen = true end end
      if not seen then secret[#secret + 1] = name end
    end
  end
  table.sort(secret)
  local names = {}
  for i, t in ipairs(wf.order) do names[i] = t.name end
  local store = common.store(s)
  local sok, id, err = common.store_try(store.submit, store, {
    workflow = wf.name, source = source, hash = engine.hash_text(source),
    file = common.abspath(path), params = public, secret_params = #secret > 0 and secret or nil,
    tasks = names, sim = s.sim and { fail = s.sim.fail } or nil, run_id = opts.run_id_opt,
    new_id = engine.new_run_id, kind = "submitted",
    options = next(options) and options or nil })
  if not sok then return 1 end
  if not id then common.eprint(err.message or err.code) return 1 end
  io.stdout:write(id, "\n")
  if not opts.quiet then
    io.stderr:write(string.format("queued run %s of %s in %s; follow it with flowrun logs %s -f%s\n",
      id, wf.name, store:describe(), id, common.store_arg(s)))
  end
  return 0
end

return M
