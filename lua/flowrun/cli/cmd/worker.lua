-- flowrun worker [--store S] [--concurrency N] [--lease D] [--poll D] [--sim] [--schedule
-- [--workflows DIR]]: claims queued runs (and runs whose worker died) from the store and runs
-- them until stopped. SIGINT/SIGTERM stop it: it claims nothing more and hands its runs back to
-- the store, where another worker takes them over at once (their cleanup tasks are not run
-- here: the run is not over). With --schedule, a scheduler on the same loop fires the due runs
-- of the workflows in --workflows (flowrun scheduler), so one process is both.
local flow = require "flow"
local core = require "flow.core"
local duration = require "flow.duration"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"

local M = {}

local function positive_duration(opt, v)
  if not v then return nil end
  local d, err = duration.parse(v)
  if not d or d <= 0 then return nil, opt .. ": " .. (err or "must be greater than 0") end
  return d
end

-- A reporter per run: the text view's lines, each with the run's id (many runs share stdout),
-- or the JSON view (which names the run on every line).
local function reporter_for(fmt)
  return function(run_id)
    if fmt == "json" then return view.json(io.stdout) end
    local rep = view.text(io.stdout)
    rep.line = function(self, task, msg)
      self.out:write(view.iso(flow.time()), " ", run_id, " ", task and (task .. ": ") or "", msg, "\n")
      self.out:flush()
    end
    rep.run_finished = function() end -- the worker logs one line per run instead
    return rep
  end
end

function M.run(opts)
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local n, nerr = settings.int_arg(opts.concurrency, "--concurrency", 1)
  if nerr then common.eprint(nerr) return 2 end
  n = n or 4
  local max_takeovers, terr = settings.int_arg(opts.max_takeovers, "--max-takeovers", 0)
  if terr then common.eprint(terr) return 2 end
  local lease, lerr = positive_duration("--lease", opts.lease)
  if lerr then common.eprint(lerr) return 2 end
  local poll, perr = positive_duration("--poll", opts.poll)
  if perr then common.eprint(perr) return 2 end
  s.lease = lease
  local aok, aerr = settings.apply(s)
  if not aok then common.eprint(aerr) return 2 end
  local store = common.store(s)
  require("flowrun.worker").use_aws(store, { sim = s.sim, state_dir = s.state_dir })
  local fmt = s.log_format
  if fmt == "auto" or fmt == "tty" then fmt = "text" end
  local sched
  if opts.schedule then
    sched = require("flowrun.cli.cmd.scheduler").new(opts, s, store)
    if not sched then return 2 end
  elseif opts.workflows then
    common.eprint("--workflows is for --schedule (the workflows this worker also schedules)")
    return 2
  end
  local w = require("flowrun.worker").new { store = store, concurrency = n, sim = s.sim,
    max_takeovers = max_takeovers,
    poll = poll, vars_files = opts.vars_file, reporter = reporter_for(fmt) }
  return common.store_call(function()
    w:start()
    if sched then
      -- one process, both: when either stops (a signal stops both), the other is stopped too
      sched:start()
      pcall(flow.wait_any, { w.task, sched.task })
      flow.shield(function()
        sched:stop()
        if not w.task:done() then w:stop("its scheduler stopped") end
      end)
      local sok, serr = pcall(sched.wait, sched)
      if not sok and not flow.cancelled(serr) then
        pcall(w.wait, w)
        error(serr, 0)
      end
    end
    local ok, err = pcall(w.wait, w)
    if not ok and not flow.cancelled(err) then error(err, 0) end
    local sig = core.signal()
    return sig and (128 + sig) or 0
  end)
end

return M
