-- flowrun.worker — a worker: claims submitted runs from a run store and runs them, up to
-- `concurrency` at a time, all on this process's one loop. An object, so that `flowrun worker`
-- and the server (which embeds workers beside its HTTP and scheduler) share it:
--
--   local w = worker.new { store = store, concurrency = 4 }
--   w:start()          -- claims and runs until stopped; returns at once
--   w:stop(why)        -- stops claiming, hands its runs back to the store (another worker
--                      -- takes them over at once) and waits for them to let go
--   w:wait()           -- until the worker has stopped
--
-- How a run goes: the store's claim (PostgreSQL: FOR UPDATE SKIP LOCKED, the epoch bumped)
-- gives a held journal; the run executes the workflow source it was submitted with
-- (loaded under its file's name, as `flowrun run` loads it; `require` finds stdlib in this worker's
-- installation), with its recorded public parameters and its secret ones from this worker's
-- environment (FLOWRUN_VAR_<NAME>) or --vars-file. A run claimed as a takeover (its lease expired:
-- its worker died or lost the store) is resumed as `flowrun resume` does: tasks that succeeded
-- keep their results, interrupted ones run again through the idempotent operators.
--
-- Lost runs: the store tells the journal (a write refused, no renewal within the lease); the
-- engine abandons the run (its tasks are stopped at once, no cleanup runs here: the new holder
-- runs them) and this worker says so in its log. Signals: SIGINT/SIGTERM stop the worker as
-- stop() does (runs handed back, not cancelled); AWS calls of its runs are refused from the
-- moment the signal arrives (store.handback_on_signal, flowrun.worker.fence).
--
-- Waking: the store's watch() (PostgreSQL LISTEN/NOTIFY: a submit or a run handed back wakes an
-- idle worker at once); a run ending frees a slot and wakes it too; it also looks every `poll`
-- seconds, which is how runs whose worker died are found once their lease has expired.
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local engine = require "flowrun.engine"
local replay = require "flowrun.engine.replay"

local M = {}

M.POLL = 5               -- seconds between looks without a notification
M.MAX_TAKEOVERS = 5      -- a run taken over more often than this fails (its workers keep dying:
                         -- leases that ran out; runs handed back by stopping workers do not count)

local Worker = {}
Worker.__index = Worker

-- use_aws(store, {sim, state_dir}): how the runs this process takes from `store` reach AWS
-- (flowrun worker, flowrun server): with sim (the simulator's settings: fail, policy_file) one
-- simulated world shared by every such process of this machine (FLOWRUN_SIM_STATE, else
-- <state_dir>/sim-state.json: a cluster created by a worker that died is found by the one that
-- takes its run over); else AWS itself, every call of a run fenced by the store's guard.
function M.use_aws(store, o)
  local fence = require "flowrun.worker.fence"
  if o.sim then
    sys.mkdir_p(o.state_dir)
    local state_file = os.getenv("FLOWRUN_SIM_STATE")
    if not state_file or state_file == "" then state_file = o.state_dir .. "/sim-state.json" end
    require("aws").use_transport(require("flowrun.worker.simshare").share(state_file,
      { fail = o.sim.fail, policy_file = o.sim.policy_file }, fence.checker(store)))
  else
    fence.install(store)
  end
end


local function default_log(msg)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " ", msg, "\n")
  io.stderr:flush()
end

-- new(o) -> worker. o: store, concurrency (default 4), max_takeovers (default MAX_TAKEOVERS), sim (the simulator's settings when this
-- worker answers AWS from it: it then claims only runs submitted with --sim, and the others
-- only runs submitted without), poll (seconds), id (default host:pid:random), vars_files
-- (secret parameters), reporter (fn(run_id) -> a reporter, flowrun.cli.view's interface;
-- default quiet), log (fn(line)), on_finished (fn(run_id, summary | nil, err)), on_claim
-- (fn(claim), before the run starts), secrets (fn(run_id) -> {name -> value}: secret
-- parameters the process that submitted the run was given, when it is this one: the server's
-- trigger), on_signal ("handback", the default: a signal hands the runs back for another worker;
-- "cancel": a signal cancels them and their cleanup tasks run, as `flowrun run` does — for a
-- process that may be the only one running them).
function M.new(o)
  assert(o and o.store, "worker.new: a store is required")
  local host = sys.hostname() or "host"
  local w = setmetatable({
    store = o.store, concurrency = o.concurrency or 4, sim = o.sim, poll = o.poll or M.POLL,
    max_takeovers = o.max_takeovers or M.MAX_TAKEOVERS,
    id = o.id or string.format("%s:%d:%04x", host, sys.getpid(), math.random(0, 0xffff)),
    hostname = host, pid = sys.getpid(), version = sys.version, vars_files = o.vars_files,
    reporter = o.reporter, log = o.log or default_log, on_finished = o.on_finished,
    on_claim = o.on_claim, secrets = o.secrets, on_signal = o.on_signal or "handback",
    runs = {}, nrunning = 0, reported = 0, stopping = false, claimed = 0, finished = 0, lost = 0,
  }, Worker)
  w.lease = o.store.lease or 0
  return w
end

function Worker:info()
  local ids = {}
  for id in pairs(self.runs) do ids[#ids + 1] = id end
  table.sort(ids)
  return { id = self.id, hostname = self.hostname, pid = self.pid, version = self.version,
    concurrency = self.concurrency, sim = self.sim ~= nil, lease = self.lease,
    running = self.nrunning, run_ids = ids }
end

-- start(): registers the worker and starts its loop (a task of its own). Returns at once.
function Worker:start()
  assert(not self.task, "worker: already started")
  assert(self.on_signal == "handback" or self.on_signal == "cancel",
    "worker: on_signal is \"handback\" or \"cancel\"")
  -- handing back refuses the runs' AWS calls from the signal on; cancelling needs them (cleanups)
  if self.on_signal == "handback" then self.store.handback_on_signal = true end
  self.watcher = self.store:watch()
  self.task = flow.spawn(function() return self:main() end)
  return self
end

-- wait() -> true once the worker has stopped (raises what stopped it, when it failed).
function Worker:wait()
  return self.task:wait()
end

-- stop(why[, {cancel = true}]): stops claiming and hands every run back to the store (their
-- tasks stop; another worker takes them over at once), or with cancel cancels them (their
-- cleanup tasks run, as a cancel request makes them); wait() until they have let go.
function Worker:stop(why, o)
  if self.stopping then return end
  self.stopping = why or "stopped"
  for _, r in pairs(self.runs) do
    local jr = r.claim.journal
    if o and o.cancel and jr.hooks and jr.hooks.cancel then
      jr.hooks.cancel("cancelled: " .. self.stopping)
    else
      jr:handback("the worker is stopping: " .. self.stopping)
    end
  end
  if self.watcher then self.watcher:push("stop") end
end

-- wake(): looks for runs to claim now (the caller just submitted one).
function Worker:wake()
  if self.watcher then self.watcher:push("queued") end
end

local function errmsg(e)
  if type(e) == "table" then return tostring(e.message or e.code) end
  return tostring(e)
end

-- The loop: claim while there are free slots, then wait for a notification, a slot, the poll.
function Worker:main()
  local store = self.store
  local ok, err = pcall(function()
    self:retrying("register", function() store:register_worker(self:info()) end)
    self.log(string.format("worker %s: running up to %d runs at once from %s%s", self.id,
      self.concurrency, store:describe(), self.sim and " (simulated AWS)" or ""))
    local beat_every = math.max(1, (self.lease > 0 and self.lease or 15) / 3)
    local next_beat = flow.now() + beat_every
    local failures = 0
    while not self.stopping do
      local free = self.concurrency - self.nrunning
      if free > 0 then
        local cok, claims = pcall(store.claim, store, self.id, free, { sim = self.sim ~= nil })
        if cok then
          if failures > 0 then self.log("worker " .. self.id .. ": the store answers again") end
          failures = 0
          for _, c in ipairs(claims) do self:launch(c) end
        else
          if flow.cancelled(claims) then error(claims, 0) end
          failures = failures + 1
          if failures == 1 then
            self.log("worker " .. self.id .. ": cannot claim runs: " .. errmsg(claims) .. " (trying again)")
          end
        end
      end
      -- the registry's heartbeat; sooner (at most once a second) when the runs held changed
      if flow.now() >= next_beat or (self.nrunning ~= self.reported
          and flow.now() >= next_beat - beat_every + 1) then
        if pcall(store.worker_heartbeat, store, self:info(), "running") then
          self.reported = self.nrunning
        end
        next_beat = flow.now() + beat_every
      end
      local wait = math.min(self.poll, math.max(0, next_beat - flow.now()))
      if self.nrunning ~= self.reported then wait = math.min(wait, 1) end
      if failures > 0 then wait = math.min(wait, math.min(5, 0.2 * 2 ^ failures)) end
      if not self.stopping then self.watcher:wait(wait) end
    end
  end)
  -- stopping (stop(), or a signal cancelled this task): hand back what runs, wait for it
  flow.shield(function()
    if not ok and not self.stopping then
      self.stopping = flow.cancelled(err) and ("signal " .. tostring(core.signal() or "")) or errmsg(err)
      if self.on_signal == "handback" or not flow.cancelled(err) then
        for _, r in pairs(self.runs) do
          r.claim.journal:handback("the worker is stopping: " .. self.stopping)
        end
      end
    end
    for _, r in pairs(self.runs) do
      if r.handle then pcall(r.handle.wait, r.handle) end
    end
    self.watcher:close()
    pcall(store.worker_heartbeat, store, self:info(), "stopped")
    self.log(string.format("worker %s: stopped (%s); %d runs claimed, %d finished, %d lost or "
      .. "handed back", self.id, tostring(self.stopping), self.claimed, self.finished, self.lost))
  end)
  if not ok and not flow.cancelled(err) then error(err, 0) end
  return true
end

-- Runs fn until it succeeds (the store may be starting, or restarting).
function Worker:retrying(what, fn)
  local delay = 0.2
  while true do
    local ok, err = pcall(fn)
    if ok then return end
    if flow.cancelled(err) then error(err, 0) end
    if type(err) == "table" and tostring(err.code):match("^store%.schema") then error(err, 0) end
    if not (type(err) == "table" and err.retryable) then error(err, 0) end
    self.log(string.format("worker %s: %s: %s (trying again in %.1fs)", self.id, what, errmsg(err), delay))
    flow.sleep(delay)
    delay = math.min(delay * 2, 5)
  end
end

function Worker:launch(c)
  self.claimed = self.claimed + 1
  self.nrunning = self.nrunning + 1
  local entry = { claim = c, started = flow.now() }
  self.runs[c.id] = entry
  if self.on_claim then self.on_claim(c) end
  entry.handle = flow.spawn(function() return self:run_claim(c) end)
end

-- One claimed run, from its claim to its end; never raises.
function Worker:run_claim(c)
  local ok, sum = pcall(self.execute, self, c)
  self.nrunning = self.nrunning - 1
  self.runs[c.id] = nil
  local err
  if not ok then err = sum; sum = nil end
  if sum then
    self.finished = self.finished + 1
    if self.store.finished then pcall(self.store.finished, self.store, c.id) end
    self.log(string.format("worker %s: run %s %s (exit %s)%s", self.id, c.id, sum.state,
      tostring(sum.exit), sum.reason and (": " .. sum.reason) or ""))
  elseif type(err) == "table" and err.code == "store.lost" then
    self.lost = self.lost + 1
    self.log(string.format("worker %s: %s", self.id, errmsg(err)))
  else
    self.log(string.format("worker %s: run %s stopped: %s", self.id, c.id, errmsg(err)))
    if type(err) ~= "table" or not err.code then
      io.stderr:write(debug.traceback(tostring(err)), "\n")
    end
  end
  if self.on_finished then pcall(self.on_finished, c.id, sum, err) end
  if self.watcher then self.watcher:push("slot") end
end

-- A run that cannot start here (its workflow does not load, its parameters do not resolve):
-- recorded as failed, with why, so it is not claimed again and again.
local function fail_unstartable(c, why, self)
  local jr = c.journal
  if not c.run then
    jr:append { ev = "run_started", v = replay.VERSION, run = c.id, workflow = c.workflow,
      file = c.file, hash = c.hash, params = c.params, secret_params = c.secret_params,
      tasks = c.tasks, pid = sys.getpid(), worker = self.id, kind = c.kind,
      logical_date = c.logical_date, data_interval = c.interval_start and c.interval_end
        and { c.interval_start, c.interval_end } or nil }
  end
  jr:append { ev = "run_finished", state = "failed", exit = 2, reason = why }
  jr:commit()
  jr:close()
  return { run_id = c.id, state = "failed", exit = 2, reason = why }
end

-- The run of a claim: its workflow loaded from the submitted source, its parameters resolved,
-- started or (a takeover) resumed. Returns the summary; raises store.lost when the run was lost.
function Worker:execute(c)
  local name = (c.file or c.workflow or "workflow"):match("[^/]*$")
  if c.error then return fail_unstartable(c, "run " .. c.id .. ": " .. c.error, self) end
  if not c.source then
    return fail_unstartable(c, "the store has no workflow source for this run", self)
  end
  -- named by its file, as `flowrun run` names it: a workflow finds the files beside it (its
  -- EMR job's script) from debug.getinfo, and errors name the file
  local chunk, lerr = load(c.source, c.file and ("@" .. c.file) or ("=" .. name))
  local wf, werr
  if chunk then wf, werr = engine.load(chunk, name) else werr = lerr end
  if not wf then
    return fail_unstartable(c, "the workflow did not load on worker " .. self.id .. ": " .. tostring(werr), self)
  end
  local vok, problems = wf:validate()
  if not vok then
    return fail_unstartable(c, "invalid workflow: " .. table.concat(problems, "; "), self)
  end
  -- a scheduled or backfill run covers the data interval it was made for (the scheduler
  -- recorded it); a takeover keeps the dates its first start recorded
  local dates
  if c.run then
    dates = engine.recorded_dates(wf, c.run)
  elseif c.logical_date and c.interval_start and c.interval_end then
    dates = engine.dates(wf, { interval = { start = c.interval_start, ["end"] = c.interval_end,
      logical_date = c.logical_date } })
  end
  -- recorded (public) parameters win; secret ones come from this worker
  local vars = {}
  for k, v in pairs(c.params or {}) do if wf.params[k] then vars[k] = v end end
  for k, v in pairs(self.secrets and self.secrets(c.id) or {}) do
    if wf.params[k] then vars[k] = v end
  end
  local params, perr = wf:resolve_params { vars = vars, vars_files = self.vars_files,
    time = dates or engine.dates(wf) }
  if not params then
    return fail_unstartable(c, "invalid parameters on worker " .. self.id .. ": "
      .. table.concat(perr, "; "), self)
  end
  local opts = c.options or {}
  local jr = c.journal
  local rerun = opts.rerun ~= require("json").null and opts.rerun or nil
  local o = { journal = jr, params = params, file = c.file, hash = c.hash, sim = self.sim,
    reporter = self.reporter and self.reporter(c.id) or nil, max_active = opts.max_active,
    timeout = opts.timeout, dates = dates, rerun = rerun,
    extra = { worker = self.id, epoch = c.epoch, kind = c.kind },
    on_signal = self.on_signal == "handback" and function(sig)
      jr:handback("the worker is stopping (signal " .. tostring(sig) .. ")")
      return jr.lost
    end or nil }
  if c.was == "running" then
    self.log(string.format("worker %s: taking over run %s (its holder stopped renewing its lease; "
      .. "takeover %d)", self.id, c.id, c.takeovers or 0))
    if (c.takeovers or 0) > self.max_takeovers then
      o.cancel_reason = string.format("taken over %d times: the workers running it keep dying",
        c.takeovers)
    end
  else
    self.log(string.format("worker %s: claimed run %s of %s", self.id, c.id, tostring(c.workflow)))
  end
  local sum, err
  if c.run then
    sum, err = engine.resume(wf, c.run, o)
  else
    sum, err = engine.start(wf, o)
  end
  if not sum then error(err, 0) end
  return sum
end

return M
