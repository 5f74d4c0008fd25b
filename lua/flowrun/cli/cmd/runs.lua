-- flowrun runs [--workflow W] [--state S] [--limit N] [--json] [--server URL]: the runs in the
-- store, oldest first, and where they were looked for. Read from the store's summaries (the
-- PostgreSQL store's indexed columns), never by replaying every journal; with --server, from a
-- server's API.
local json = require "json"
local duration = require "flow.duration"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"

local M = {}

local STATES = { queued = true, running = true, interrupted = true, success = true, failed = true,
  cancelled = true, damaged = true }

-- filter(opts) -> the store filter the options ask for, or nil after printing why
function M.filter(opts)
  local filter = { workflow = opts.workflow }
  if opts.state and #opts.state > 0 then
    for _, st in ipairs(opts.state) do
      if not STATES[st] then
        common.eprint("--state: unknown state ", string.format("%q", st), " (queued, running, "
          .. "interrupted, success, failed, cancelled)")
        return nil
      end
    end
    filter.state = opts.state
  end
  local n, lerr = settings.int_arg(opts.limit, "--limit", 1)
  if lerr then common.eprint(lerr) return nil end
  if n then filter.limit, filter.order = n, "desc" end
  return filter
end

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").runs(opts) end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local filter = M.filter(opts)
  if not filter then return 2 end
  local store = common.store(s)
  local ok, runs = common.store_try(store.runs, store, filter)
  if not ok then return 1 end
  if filter.order == "desc" then
    local rev = {}
    for i = #runs, 1, -1 do rev[#rev + 1] = runs[i] end
    runs = rev
  end
  local src = s.store_source or s.state_dir_source
  return M.print(runs, opts, store:describe(), src == "default"
    and "the default; FLOWRUN_HOME, --state-dir or --store choose another" or ("from " .. src))
end

-- print(runs, opts, where, why) -> exit code: runs (oldest first) as `runs` lists them; `why`
-- says how `where` was chosen (for "no runs in ...").
function M.print(runs, opts, where, why)
  if opts.json then
    local list = {}
    for _, r in ipairs(runs) do
      list[#list + 1] = { id = r.id, workflow = r.workflow, started = r.started,
        finished = r.finished, duration = (r.finished or r.last_t or r.started or 0) - (r.started or 0),
        state = r.state, exit = r.exit, error = r.error, tasks_succeeded = r.tasks_succeeded,
        tasks_total = r.tasks_total, kind = r.kind, owner = r.owner }
    end
    io.stdout:write(json.encode(json.array(list)), "\n")
    return 0
  end
  if #runs == 0 then
    io.stdout:write("no runs in ", where, why and (" (" .. why .. ")") or "", "\n")
    return 0
  end
  io.stdout:write("runs in ", where, "\n")
  io.stdout:write(string.format("%-22s %-20s %-20s %9s  %-11s %7s\n", "ID", "WORKFLOW", "STARTED",
    "DURATION", "STATE", "TASKS"))
  for _, r in ipairs(runs) do
    if r.error then
      io.stdout:write(string.format("%-22s %-20s %-20s %9s  %s\n", r.id, "?", "?", "-",
        "damaged: " .. view.one_line((tostring(r.error):gsub("^[^:]*/", "")), 90)))
    else
      local started = r.started or r.created or 0
      io.stdout:write(string.format("%-22s %-20s %-20s %9s  %-11s %7s%s\n", r.id,
        view.one_line(r.workflow, 20), os.date("!%Y-%m-%d %H:%M:%S", math.floor(started)),
        r.state == "queued" and "-" or duration.format((r.finished or r.last_t or started) - started),
        r.state, (r.tasks_succeeded or 0) .. "/" .. (r.tasks_total or 0),
        (r.resumed or 0) > 0 and ("  resumed " .. r.resumed .. "x") or ""))
    end
  end
  return 0
end

return M
