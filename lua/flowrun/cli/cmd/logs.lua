-- flowrun logs RUN_ID [TASK] [--attempt N] [-f]: the log lines a run's tasks wrote (ctx.log,
-- flow.poll status lines, flow.exec output), each with its time, task and attempt; -f keeps
-- following a live run (from any machine that reaches its store) until it ends.
local flow = require "flow"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"

local M = {}

M.FOLLOW_EVERY = 0.25 -- seconds between looks for new lines while following

local FINAL = { success = true, failed = true, cancelled = true }

-- line(l) -> how one log line {t, task, attempt, msg} is printed
function M.line(l)
  return view.iso(l.t) .. " " .. (l.task and (l.task .. "#" .. tostring(l.attempt) .. ": ") or "")
    .. l.msg .. "\n"
end

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").logs(opts) end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store, r = common.find_run(s, opts.run_id)
  if not store then return r end
  if opts.task and not r.tasks[opts.task] then
    common.eprint("run ", r.id, " has no task ", opts.task, " (tasks: ",
      table.concat(r.task_order, ", "), ")")
    return 2
  end
  local attempt, aerr = settings.int_arg(opts.attempt, "--attempt", 1)
  if aerr then common.eprint(aerr) return 2 end
  local last = 0
  local function print_new()
    local lines, upto = store:logs(r.id, { after = last })
    for _, l in ipairs(lines) do
      if (not opts.task or l.task == opts.task) and (not attempt or l.attempt == attempt) then
        io.stdout:write(M.line(l))
      end
    end
    last = upto or last
    io.stdout:flush()
  end
  return common.store_call(function()
    print_new()
    -- follow while some process runs the run, or a worker will (queued, or interrupted and
    -- about to be taken over); the lines written before it ended are printed last
    local submitted = r.kind == "submitted" or r.kind == "scheduled" or r.adoptable
    while opts.follow do
      local state = store:state(r.id)
      if not state or FINAL[state] or (state == "interrupted" and not submitted) then
        print_new()
        break
      end
      flow.sleep(M.FOLLOW_EVERY)
      print_new()
    end
    return 0
  end)
end

return M
