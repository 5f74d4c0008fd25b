-- flowrun submit WORKFLOW.lua [--var K=V] [--vars-file F] [--store S]: queue a run for the
-- workers and print its id. The workflow and its parameters are checked here (exit 2, nothing
-- queued, when either is wrong); the store keeps the file's source and hash, so the run
-- executes the version submitted, wherever a worker picks it up. Secret parameters are not
-- stored: a worker takes them from its own environment or --vars-file.
local engine = require "flowrun.engine"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"

local M = {}

-- resolve(wf, opts) -> public params, secret names; or nil after saying why.
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
  local public, secret, problems = engine.queued_params(wf, { vars = vars, vars_files = opts.vars_file })
  if not public then common.print_problems("invalid parameters", problems) return nil end
  return public, secret
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
  local public, secret = resolve(wf, opts)
  if not public then return 2 end
  local options = {}
  if s.timeout then options.timeout = s.timeout end
  if s.max_active then options.max_active = s.max_active end
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
