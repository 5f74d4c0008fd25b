-- flowrun backfill WORKFLOW --from DATE --to DATE [--reprocess none|failed|all]: the runs of every
-- fire time of the workflow's schedule whose logical date lies in [from, to] (both included; a
-- date alone as --to is that whole day), made oldest first as kind "backfill" runs for the
-- workers, never more active runs of the workflow at once than its max_active_runs, then followed
-- until all have ended. Each decision is the store's (store:fire, under the workflow's lock that
-- its schedulers take too), so a backfill and the schedulers never make a date's run twice.
--
-- A date that already has a run (scheduled or an earlier backfill's): left as it is with
-- --reprocess none (the default); with failed, a failed or cancelled run is queued again and
-- resumed by a worker (its failed tasks and what follows them run again, as `flowrun resume`
-- does); with all, any finished run is queued again with every task to run again (`flowrun
-- resume --rerun`). A date whose run is still active is waited for, never doubled.
--
-- Exit status: 0 when every run of the range succeeded, 1 when one did not (or the store failed),
-- 2 for invalid input; interrupted (Ctrl-C), the runs already made go on.
local flow = require "flow"
local core = require "flow.core"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local interval = require "flow.schedule.interval"
local workflows = require "flowrun.schedule.workflows"

local M = {}

M.MAX_DATES = 100000 -- a range with more fire times than this is refused (a typo, most likely)
M.BATCH = 64         -- dates looked at per decision
M.LOOK = 1           -- seconds between looks at the runs' progress without a notification

local ACTIVE = { queued = true, running = true, interrupted = true }
local BAD = { failed = true, cancelled = true }

-- The logical dates of the range: {start, end, logical_date} per fire time in [from, to].
local function intervals(tt, from, to)
  local out = {}
  local s = tt:next(math.ceil(from) - 1)
  while s <= to do
    if #out >= M.MAX_DATES then return nil end
    local e = tt:next(s)
    out[#out + 1] = { start = s, ["end"] = e, logical_date = s }
    s = e
  end
  return out
end

local function parse_bound(v, zone, what, whole_day)
  local t, err = interval.parse_time(v, zone)
  if not t then return nil, what .. ": " .. err end
  if whole_day and v:match("^%d%d%d%d%-%d%d%-%d%d$") then
    -- a date alone covers that day: up to the last second before the next midnight
    local y, m, d = v:match("^(%d+)-(%d+)-(%d+)$")
    local tz = require "flow.schedule.tz"
    local days = tz.days_from_civil(tonumber(y), tonumber(m), tonumber(d)) + 1
    local ny, nm, nd = tz.civil_from_days(days)
    t = interval.parse_time(string.format("%04d-%02d-%02d", ny, nm, nd), zone) - 1
  end
  return t
end

-- One line saying where the range is.
local function progress_line(name, total, counts, todo)
  local parts = {}
  for _, k in ipairs { "queued", "running", "interrupted", "success", "failed", "cancelled" } do
    if (counts[k] or 0) > 0 then parts[#parts + 1] = counts[k] .. " " .. k end
  end
  if todo > 0 then parts[#parts + 1] = todo .. " to make" end
  return string.format("backfill %s: %d dates: %s", name, total, table.concat(parts, ", "))
end

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  if not opts.from or not opts.to then
    common.eprint("backfill needs --from DATE and --to DATE (see flowrun backfill --help)")
    return 2
  end
  local dir = (opts.workflows or workflows.DEFAULT_DIR):gsub("/+$", "")
  local e, lerr = workflows.find(opts.workflow_ref, dir)
  if not e then common.eprint(lerr) return 2 end
  local wf = e.wf
  if not wf.schedule then
    common.eprint("workflow ", wf.name, " has no schedule: a backfill makes the runs of its fire "
      .. "times (give it one, or use flowrun run --logical-date)")
    return 2
  end
  local tt, sc = wf.timetable, wf.schedule
  local from, ferr = parse_bound(opts.from, tt.zone, "--from")
  if not from then common.eprint(ferr) return 2 end
  local to, terr = parse_bound(opts.to, tt.zone, "--to", true)
  if not to then common.eprint(terr) return 2 end
  if to < from then common.eprint("--to is before --from") return 2 end
  local ivs = intervals(tt, from, to)
  if not ivs then
    common.eprint(string.format("the range has more than %d fire times of %s: give a shorter one",
      M.MAX_DATES, sc.expr))
    return 2
  end
  if #ivs == 0 then
    common.eprint(string.format("no fire time of %s (%s) between %s and %s", sc.expr, sc.timezone,
      interval.iso(from, tt.zone), interval.iso(to, tt.zone)))
    return 2
  end
  local reprocess = opts.reprocess or "none"
  local aok, aerr = settings.apply(s)
  if not aok then common.eprint(aerr) return 2 end
  local names = {}
  for i, t in ipairs(wf.order) do names[i] = t.name end
  local store = common.store(s)
  local sim = s.sim and { fail = s.sim.fail } or nil
  io.stdout:write(string.format("backfill %s: %d dates from %s to %s (%s in %s), max_active_runs "
    .. "%d, reprocess %s, in %s\n", wf.name, #ivs, interval.iso(ivs[1].start, tt.zone),
    interval.iso(ivs[#ivs].start, tt.zone), sc.expr, sc.timezone, sc.max_active_runs, reprocess,
    store:describe()))
  io.stdout:flush()

  return common.store_call(function()
    local watcher = store:watch()
    local nexti = 1
    local made, requeued, kept = 0, 0, 0
    -- one decision: the next dates, as far as free slots allow (what it moves on to counts
    -- once the store has done it: `step`)
    local step
    local function decide(view)
      step = nil
      local plan = { submit = {}, requeue = {} }
      local free = sc.max_active_runs - #view.active
      local last = math.min(#ivs, nexti + M.BATCH - 1)
      local dated = {}
      for _, r in ipairs(view.dated(ivs[nexti].start, ivs[last].start)) do dated[r.logical_date] = r end
      local i, k = nexti, 0
      while i <= last do
        local iv = ivs[i]
        local r = dated[iv.start]
        if r and (ACTIVE[r.state] or reprocess == "none" or (reprocess == "failed"
            and not BAD[r.state])) then
          k = k + 1 -- its run is active, or stays as it is
        elseif free <= 0 then
          break
        elseif r then
          plan.requeue[#plan.requeue + 1] = { id = r.id, source = e.source, hash = e.hash,
            options = { rerun = reprocess == "all" and names or require("json").null } }
          free = free - 1
        else
          plan.submit[#plan.submit + 1] = workflows.submission(e, iv, { kind = "backfill",
            vars_files = opts.vars_file, sim = sim })
          free = free - 1
        end
        i = i + 1
      end
      step = { nexti = i, kept = k }
      return plan
    end
    local last_line
    local function report(force)
      local runs = store:dated_runs(wf.name, ivs[1].start, ivs[#ivs].start)
      local counts, active, bad = {}, 0, 0
      local want = {}
      for _, iv in ipairs(ivs) do want[iv.start] = true end
      local have = 0
      for _, r in ipairs(runs) do
        if want[r.logical_date] then
          have = have + 1
          counts[r.state] = (counts[r.state] or 0) + 1
          if ACTIVE[r.state] then active = active + 1 end
          if r.state ~= "success" then bad = bad + 1 end
        end
      end
      local line = progress_line(wf.name, #ivs, counts, #ivs - have)
      if force or line ~= last_line then
        io.stdout:write(os.date("!%H:%M:%SZ ", math.floor(flow.time())), line, "\n")
        io.stdout:flush()
        last_line = line
      end
      return active, bad, have
    end
    local ok, err = pcall(function()
      while true do
        local before = nexti
        while nexti <= #ivs do
          local start = nexti
          local res = store:fire(wf.name, decide)
          nexti, kept = step.nexti, kept + step.kept
          made = made + #res.submitted
          requeued = requeued + #res.requeued
          if nexti == start then break end -- no free slot: wait for a run to end
        end
        local active, bad, have = report(before == 1 and nexti > 1)
        if nexti > #ivs and active == 0 and have == #ivs then
          io.stdout:write(string.format("backfill %s: done: %d runs made, %d queued again, %d "
            .. "left as they were; %s\n", wf.name, made, requeued, kept,
            bad == 0 and "every run succeeded" or (bad .. " did not succeed (flowrun runs --workflow "
              .. wf.name .. ")")))
          return bad == 0 and 0 or 1
        end
        watcher:wait(M.LOOK)
      end
    end)
    watcher:close()
    if ok then return err end
    if flow.cancelled(err) then
      io.stdout:write(string.format("backfill %s: interrupted: %d runs made and %d queued again go "
        .. "on; %d dates not made\n", wf.name, made, requeued, #ivs - nexti + 1))
      local sig = core.signal()
      return sig and (128 + sig) or 130
    end
    error(err, 0)
  end)
end

return M
