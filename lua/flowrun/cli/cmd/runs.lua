-- flowrun runs [--json]: the runs in the store, oldest first, and where they were looked for.
local json = require "json"
local duration = require "flow.duration"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"

local M = {}

local function counts(r)
  if r.tasks_total then return r.tasks_succeeded, r.tasks_total end
  local ok_n, total = 0, 0
  for _, t in pairs(r.tasks) do
    total = total + 1
    if t.state == "success" then ok_n = ok_n + 1 end
  end
  return ok_n, total
end

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").runs(opts) end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store = common.store(s)
  return M.print(store:runs(), opts, store:describe(), s)
end

-- print(runs, opts, where, settings) -> exit code: runs (oldest first) as `runs` lists them.
function M.print(runs, opts, where, s)
  if opts.json then
    local list = {}
    for _, r in ipairs(runs) do
      local ok_n = counts(r)
      list[#list + 1] = { id = r.id, workflow = r.workflow, started = r.started,
        finished = r.finished, duration = (r.finished or r.last_t or r.started) - (r.started or 0),
        state = r.state, exit = r.exit, error = r.error, tasks_succeeded = ok_n }
    end
    io.stdout:write(json.encode(json.array(list)), "\n")
    return 0
  end
  if #runs == 0 then
    io.stdout:write("no runs in ", where, s and (" (" .. (s.state_dir_source == "default"
      and "the default; FLOWRUN_HOME or --state-dir choose another" or ("from " .. s.state_dir_source))
      .. ")") or "", "\n")
    return 0
  end
  io.stdout:write("runs in ", where, "\n")
  io.stdout:write(string.format("%-22s %-20s %-20s %9s  %-11s %7s\n", "ID", "WORKFLOW", "STARTED",
    "DURATION", "STATE", "TASKS"))
  for _, r in ipairs(runs) do
    if r.error then
      io.stdout:write(string.format("%-22s %-20s %-20s %9s  %s\n", r.id, "?", "?", "-",
        "damaged: " .. view.one_line(r.error, 60)))
    else
      local ok_n, total = counts(r)
      io.stdout:write(string.format("%-22s %-20s %-20s %9s  %-11s %7s%s\n", r.id,
        view.one_line(r.workflow, 20), os.date("!%Y-%m-%d %H:%M:%S", math.floor(r.started)),
        duration.format((r.finished or r.last_t or r.started) - r.started), r.state,
        ok_n .. "/" .. total, r.resumed > 0 and ("  resumed " .. r.resumed .. "x") or ""))
    end
  end
  return 0
end

return M
