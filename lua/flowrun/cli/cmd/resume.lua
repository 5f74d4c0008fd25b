-- flowrun resume RUN_ID [--force] [run options]: continue a crashed, failed or cancelled run.
-- Tasks that succeeded keep their results (unless a cleanup task undid them since); the rest run.
local engine = require "flowrun.engine"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local run_cmd = require "flowrun.cli.cmd.run"

local M = {}

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local aok, aerr = settings.apply(s)
  if not aok then common.eprint(aerr) return 2 end
  local store, r = common.find_run(s, opts.run_id)
  if not store then return r end
  local rerun = opts.rerun or {}
  if r.state == "success" and #rerun == 0 then
    io.stdout:write("run ", r.id, " already succeeded; nothing to resume (--rerun TASK runs a ",
      "task and what follows it again)\n")
    return 0
  end
  if r.state == "running" then
    common.eprint("run ", r.id, " is still running (", r.owner and ("held by " .. r.owner)
      or "another flowrun process holds it", ")")
    return 2
  end
  if r.state == "queued" then
    common.eprint("run ", r.id, " is queued: a worker will start it (flowrun worker)")
    return 2
  end
  -- the workflow: its file, unless it is not on this machine and the store kept the source the
  -- run started with (the PostgreSQL store does)
  local wf, source
  local hash = r.file and engine.hash_file(r.file)
  if not hash and r.source then
    source = r.source
    hash = engine.hash_text(source)
    wf, err = engine.load(load(source, "=" .. (r.file or r.workflow):match("[^/]*$")),
      r.file or r.workflow)
    if not wf then common.eprint(err) return 2 end
    local ok, problems = wf:validate()
    if not ok then common.print_problems("invalid workflow " .. tostring(r.file), problems) return 2 end
  else
    if not r.file then common.eprint("run ", r.id, " has no workflow file recorded") return 2 end
    if not hash then common.eprint("cannot read the workflow file ", r.file) return 2 end
    if hash ~= r.hash and not opts.force then
      common.eprint("the workflow file ", r.file, " changed since run ", r.id,
        " started; resume with --force to run the changed file")
      return 2
    end
    wf = common.load_workflow(r.file)
    if not wf then return 2 end
  end
  -- a run that talked to the simulator goes on talking to it: resuming it against a real
  -- account because --sim was forgotten would create real resources (injected failures are
  -- not replayed: give --sim-fail again for that)
  if r.sim and not s.sim then s.sim = { fail = {} } end
  -- recorded parameters win; secret ones come from --var / --vars-file / the environment
  local params = run_cmd.params(wf, opts, r.params, engine.recorded_dates(wf, r))
  if not params then return 2 end
  return run_cmd.execute(wf, s, params, { file = r.file, resume = r, rerun = rerun, source = source,
    hash = source and hash or nil, forced = (hash ~= r.hash) or nil })
end

return M
