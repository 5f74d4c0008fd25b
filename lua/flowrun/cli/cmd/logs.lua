-- flowrun logs RUN_ID [TASK] [--attempt N] [-f]: the log lines a run's tasks wrote (ctx.log,
-- flow.poll status lines), each with its time, task and attempt; -f keeps following a live run.
local flow = require "flow"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"

local M = {}

-- line(l) -> how one log line {t, task, attempt, msg} is printed
function M.line(l)
  return view.iso(l.t) .. " " .. (l.task and (l.task .. "#" .. tostring(l.attempt) .. ": ") or "")
    .. l.msg .. "\n"
end

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").logs(opts) end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store = common.store(s)
  local r, err = store:find(opts.run_id)
  if not r then common.eprint(err) return 2 end
  if opts.task and not r.tasks[opts.task] then
    common.eprint("run ", r.id, " has no task ", opts.task, " (tasks: ",
      table.concat(r.task_order, ", "), ")")
    return 2
  end
  local attempt
  if opts.attempt then
    attempt = math.tointeger(tonumber(opts.attempt))
    if not attempt or attempt < 1 then common.eprint("--attempt expects a positive integer") return 2 end
  end
  local seen = 0
  local function print_new()
    local lines = store:logs(r.id)
    for i = seen + 1, #lines do
      local l = lines[i]
      if (not opts.task or l.task == opts.task) and (not attempt or l.attempt == attempt) then
        io.stdout:write(M.line(l))
      end
    end
    seen = #lines
    io.stdout:flush()
  end
  print_new()
  while opts.follow do
    local now = store:load(r.id)
    if not now or now.state ~= "running" then print_new() break end
    flow.sleep(0.5)
    print_new()
  end
  return 0
end

return M
