-- flowrun schedules [--workflows DIR] [--store S] [--json]: every scheduled workflow of the
-- workflows directory: its schedule, whether it is paused, its last run and that run's state, and
-- its next fire times (how many are due now, when a scheduler is behind or none runs). Files
-- that do not load are listed after, with why.
local json = require "json"
local flow = require "flow"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"
local interval = require "flow.schedule.interval"
local workflows = require "flowrun.schedule.workflows"

local M = {}

M.NEXT = 3 -- fire times shown (--json: 5)

-- The next n ticks after the latest handled one: {{logical_date, due}}, and how many are due
-- now (as a scheduler would fire them: all of them with catchup, else at most the latest).
local function upcoming(e, st, now, n)
  local tt, sc = e.wf.timetable, e.wf.schedule
  local due = st.paused and {} or require("flowrun.schedule.scheduler").due(tt, now,
    st.handled_end, sc.catchup, 1000)
  local out = {}
  local iv = tt:upcoming(now)
  while iv and #out < n do
    out[#out + 1] = { logical_date = iv.start, due = iv["end"] }
    iv = tt:following(iv)
  end
  return out, #due
end

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local dir = (opts.workflows or workflows.DEFAULT_DIR):gsub("/+$", "")
  local by_name, errors = workflows.scan(dir)
  if not by_name then common.eprint("--workflows: cannot read ", dir, ": ", errors) return 2 end
  local names = {}
  for name, e in pairs(by_name) do if e.wf.schedule then names[#names + 1] = name end end
  table.sort(names)
  local store = common.store(s)
  local ok, states = common.store_try(store.schedule_states, store, names)
  if not ok then return 1 end
  local now = flow.time()
  local rows = {}
  for _, name in ipairs(names) do
    local e, st = by_name[name], states[name] or {}
    local sc = e.wf.schedule
    local nxt, due_now = upcoming(e, st, now, opts.json and 5 or M.NEXT)
    rows[#rows + 1] = { workflow = name, file = e.path, schedule = sc.expr,
      timezone = sc.timezone, catchup = sc.catchup, max_active_runs = sc.max_active_runs,
      overlap = sc.overlap, paused = st.paused or false, paused_at = st.paused_at,
      paused_by = st.paused_by, skipped = st.skipped or 0, last_run = st.last, next = nxt,
      due_now = due_now, zone = e.wf.timetable.zone }
  end
  local broken = {}
  for p, err in pairs(errors) do broken[#broken + 1] = { file = p, error = err } end
  table.sort(broken, function(a, b) return a.file < b.file end)
  if opts.json then
    local list = {}
    for _, r in ipairs(rows) do
      local nx = {}
      for i, x in ipairs(r.next) do
        nx[i] = { logical_date = interval.iso(x.logical_date, r.zone), due = interval.iso(x.due, r.zone),
          due_epoch = x.due }
      end
      local last = r.last_run and { id = r.last_run.id, state = r.last_run.state, kind = r.last_run.kind,
        created = r.last_run.created, logical_date = r.last_run.logical_date
          and interval.iso(r.last_run.logical_date, r.zone) } or json.null
      list[#list + 1] = { workflow = r.workflow, file = r.file, schedule = r.schedule,
        timezone = r.timezone, catchup = r.catchup, max_active_runs = r.max_active_runs,
        overlap = r.overlap, paused = r.paused, paused_by = r.paused_by, skipped = r.skipped,
        last_run = last, next = json.array(nx), due_now = r.due_now }
    end
    io.stdout:write(json.encode { workflows = json.array(list), broken = json.array(broken) }, "\n")
    return 0
  end
  io.stdout:write("schedules of ", dir, " in ", store:describe(), "\n")
  if #rows == 0 then io.stdout:write("no scheduled workflow in ", dir, "\n") end
  if #rows > 0 then
    io.stdout:write(string.format("%-20s %-30s %-7s %-40s %s\n", "WORKFLOW", "SCHEDULE", "STATE",
      "LAST RUN", "NEXT (due)"))
  end
  for _, r in ipairs(rows) do
    local last = r.last_run and string.format("%s %s", r.last_run.id, r.last_run.state) or "-"
    local nexts = {}
    if r.due_now > 0 and not r.paused then
      nexts[1] = r.due_now == 1 and "1 due now" or (r.due_now .. " due now")
    end
    for _, x in ipairs(r.next) do nexts[#nexts + 1] = interval.iso(x.due, r.zone) end
    io.stdout:write(string.format("%-20s %-30s %-7s %-40s %s\n", view.one_line(r.workflow, 20),
      view.one_line(r.schedule .. " " .. r.timezone, 30), r.paused and "paused" or "active",
      view.one_line(last, 40), table.concat(nexts, ", ")))
    if r.paused and r.paused_by then
      io.stdout:write(string.format("%-20s paused by %s\n", "", r.paused_by))
    end
  end
  if #broken > 0 then
    io.stdout:write("files that did not load (not scheduled from this directory):\n")
    for _, b in ipairs(broken) do io.stdout:write("  ", b.file, ": ", b.error, "\n") end
  end
  return 0
end

return M
