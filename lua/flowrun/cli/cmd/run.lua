-- flowrun run WORKFLOW.lua [options] (also `flowrun WORKFLOW.lua [options]`): validate the
-- workflow, resolve its parameters, run it in the run store, print the summary.
local engine = require "flowrun.engine"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"
local graph = require "flowrun.engine.graph"

local M = {}

-- The workflow's parameters, one line each, for --help.
function M.param_lines(wf)
  local lines = {}
  for _, name in ipairs(wf.param_order) do
    local p = wf.params[name]
    lines[#lines + 1] = string.format("  %-24s %s%s", name,
      p.required and "(required)" or ("default " .. graph.show_value(p.default, p.secret)),
      p.doc and ("  " .. p.doc) or "")
  end
  return lines
end

function M.help(wf, path, parser)
  local out = { "usage: flowrun " .. path .. " [options]" }
  if #wf.param_order > 0 then
    out[#out + 1] = "Parameters of " .. tostring(wf.name) .. ":"
    for _, l in ipairs(M.param_lines(wf)) do out[#out + 1] = l end
  end
  out[#out + 1] = ""
  out[#out + 1] = parser:get_help()
  return table.concat(out, "\n") .. "\n"
end

-- The line a failed or cancelled run ends with: how to resume it, where it is kept.
function M.resume_hint(sum, s)
  if sum.state == "success" then return end
  io.stdout:write(string.format("resume with: flowrun resume %s%s\n", sum.run_id, common.store_arg(s)))
  io.stdout:flush()
end

-- dates(wf, opts) -> the run's dates (engine.dates) from --logical-date or now, or nil after
-- printing why.
function M.dates(wf, opts)
  local at
  if opts.logical_date then
    local interval = require "flow.schedule.interval"
    local err
    at, err = interval.parse_time(opts.logical_date, wf.timetable and wf.timetable.zone)
    if not at then common.eprint("--logical-date: ", err) return nil end
  end
  return (engine.dates(wf, { logical_date = at }))
end

-- params(wf, opts, recorded, dates) -> params, or nil after printing why.
function M.params(wf, opts, recorded, dates)
  local vars, verr = common.vars_of(opts.var)
  if not vars then common.eprint(verr) return nil end
  for k, v in pairs(recorded or {}) do if wf.params[k] then vars[k] = v end end
  local params, perr = wf:resolve_params { vars = vars, vars_files = opts.vars_file, time = dates }
  if not params then common.print_problems("invalid parameters", perr) return nil end
  return params
end

-- run(opts [, wf]) -> exit code. wf: the workflow when the file was already loaded (flowrun
-- WORKFLOW.lua ran it as a script first).
function M.run(opts, wf)
  local path = opts.workflow
  if wf then
    local ok, problems = wf:validate()
    if not ok then common.print_problems("invalid workflow " .. path, problems) return 2 end
  else
    wf = common.load_workflow(path)
    if not wf then return 2 end
  end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local aok, aerr = settings.apply(s)
  if not aok then common.eprint(aerr) return 2 end
  local dates = M.dates(wf, opts)
  if not dates then return 2 end
  local params = M.params(wf, opts, nil, dates)
  if not params then return 2 end
  return M.execute(wf, s, params, { file = common.abspath(path), dates = dates })
end

local function read_text(path)
  local f = path and io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- execute(wf, settings, params, {file, resume = run, forced, rerun, dates, source}) -> exit code: starts (or
-- resumes) the run in the store and prints the summary. source: the workflow's text when it
-- does not come from the file (a resume from the store's copy).
function M.execute(wf, s, params, o)
  local store = common.store(s)
  local source = o.source or read_text(o.file)
  local hash = o.hash or (source and engine.hash_text(source)) or nil
  if s.sim then
    require("flow.sys").mkdir_p(s.state_dir)
    settings.use_sim(s, true)
  end
  -- a run held through a lease (PostgreSQL) calls AWS only while it still holds it
  require("flowrun.worker.fence").install(store)
  local rep, fmt = view.new(s.log_format)
  local args = { store = store, params = params, file = o.file, hash = hash, sim = s.sim,
    reporter = rep, max_active = s.max_active, timeout = s.timeout, forced = o.forced,
    rerun = o.rerun, dates = o.dates,
    source = store.kind == "postgresql" and source or nil }
  return common.store_call(function()
    local sum, err
    if o.resume then sum, err = engine.resume(wf, o.resume, args)
    else sum, err = engine.start(wf, args) end
    if not sum then
      common.eprint(type(err) == "table" and (err.message or err.code) or tostring(err))
      return 2
    end
    if fmt ~= "json" then M.resume_hint(sum, s) end
    return sum.exit
  end)
end

return M
