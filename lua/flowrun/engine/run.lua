-- flowrun.engine.run — one run of a workflow, as an object: ready tasks run concurrently
-- (max_active caps them), trigger rules decide what runs, is skipped or is upstream_failed,
-- retries with backoff and jitter, per-attempt timeouts, hooks, cleanup tasks (run once their
-- upstreams are done, whatever happened, also after Ctrl-C or --timeout; never turning a failed
-- run into a success), every state change written to the run's journal before it is acted on.
--
--   local r = Run.new(wf, { params = ..., journal = store_run, reporter = view, ... })
--   local summary = r:execute()
--
-- The run's own task (the one calling execute) is the only one that changes the graph's
-- bookkeeping. Each workflow task runs in a flowrun task of its own (a "runner") that loops
-- over attempts, journals what happens to it and finally pushes itself on the completion queue;
-- the run waits with core.wait_any on the runners, drains the queue, decides the next tasks,
-- commits the journal once (one fsync for everything that happened together) and only then
-- starts them.
--
-- Task states: pending, running, up_for_retry (between attempts; a runner is alive), and the
-- final ones success, failed, upstream_failed, skipped, cancelled.
local flow = require "flow"
local core = require "flow.core"
local context = require "flow.context"
local duration = require "flow.duration"
local rules = require "flowrun.engine.rules"
local errors = require "flowrun.engine.errors"

local M = {}

local FINAL = rules.FINAL
local EMPTY = setmetatable({}, { __newindex = function() error("EMPTY is read-only") end })

-- The journal of a run that keeps none (tests, benchmarks, `flowrun -e`): every record is
-- accepted and forgotten, so the engine never asks "is there a journal?".
local NULL_JOURNAL = {
  append = function() end, commit = function() end, close = function() end,
  log = function() end,
}
M.NULL_JOURNAL = NULL_JOURNAL

-- The view of a run nobody watches.
local function nop() end
local QUIET = { run_started = nop, task = nop, log = nop, progress = nop, run_finished = nop,
  close = nop }

-- ctx.log(...) and ctx.progress(pct, msg) are made on first use (most tasks never log), bound
-- to the task's state, found under the private key ST.
local ST = setmetatable({}, { __name = "ctx.st" })
local CTX_MT = { __index = function(ctx, k)
  local st = rawget(ctx, ST)
  local f
  if k == "log" then
    f = function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = errors.safe_tostring((select(i, ...))) end
      st.run:log(st, table.concat(parts, " "))
    end
  elseif k == "progress" then
    f = function(pct, msg)
      if type(pct) == "string" and msg == nil then pct, msg = nil, pct end
      st.pct = pct
      if msg then st.last_msg = st.run:mask(errors.safe_tostring(msg)) end
      st.run.reporter:progress(st, pct, st.last_msg)
    end
  else
    return nil
  end
  rawset(ctx, k, f)
  return f
end }

local Run = {}
Run.__index = Run

-- Run.new(wf, o) -> run. o fields:
--   params       resolved parameters
--   run_id       string (default generated)
--   journal      the run's journal in a store (append/commit/close/log); default: none
--   reporter     what shows the run (run_started, task, log, progress, run_finished, close:
--                flowrun.cli.view's live view, text and JSON lines); default none
--   max_active   cap on running tasks (default wf.max_active or unlimited)
--   timeout      seconds bounding the whole run
--   dates        the run's logical date and data interval (flowrun.engine.dates), copied into
--                every task's ctx
--   resume       a replayed run (flowrun.engine.replay): its succeeded tasks keep their results
--   rerun        with resume: task names that run again although they succeeded (and, through
--                the keep rule, everything downstream of them)
--   random       function() -> [0,1) for jitter (default math.random)
--   observer     function(event, name, st) called on each state change (tests)
--   on_signal    function(sig) -> err or nil, asked when a signal stops the run: an error
--                abandons the run instead of cancelling it (a worker hands its runs back to
--                the store: their cleanup tasks are left to whoever takes them over)
function M.new(wf, o)
  local ok, problems = wf:validate()
  if not ok then
    error("invalid workflow: " .. table.concat(problems, "; "), 2)
  end
  local self = setmetatable({
    wf = wf, params = o.params or {}, run_id = o.run_id or M.new_run_id(),
    journal = o.journal or NULL_JOURNAL,
    reporter = o.reporter or QUIET,
    max_active = o.max_active or wf.max_active or math.huge,
    random = o.random or math.random, observer = o.observer, timeout = o.timeout,
    resume = o.resume, rerun = o.rerun, dates = o.dates, on_signal = o.on_signal,
    states = {}, order = {}, results = {}, queue = {}, qn = 0,
    running = {}, n_running = 0, cancelling = false, reason = nil,
    -- the ready FIFO holds pending tasks whose upstreams are all final; runq holds tasks
    -- decided to run, waiting for a max_active slot (in dependency order)
    ready = {}, rhead = 1, rtail = 0, runq = {}, qhead = 1, qtail = 0,
  }, Run)
  self.secrets = M.secret_values(wf, self.params)
  self:build()
  return self
end

-- secret_values(wf, params) -> the values of the run's secret parameters worth looking for
-- (strings of 6 bytes or more), longest first.
function M.secret_values(wf, params)
  local out = {}
  for name, p in pairs(wf.params or {}) do
    local v = params[name]
    if p.secret and type(v) == "string" and #v >= 6 then out[#out + 1] = v end
  end
  table.sort(out, function(a, b) return #a > #b end)
  return out
end

M.MASK = "<redacted>"

-- mask(s): s with every secret parameter value of the run replaced: what a task logs or raises
-- is kept and shown (the journal, the log store, the live view, the server) without them,
-- whatever printed them.
function Run:mask(s)
  if #self.secrets == 0 or type(s) ~= "string" then return s end
  for _, v in ipairs(self.secrets) do
    local out, pos = {}, 1
    while true do
      local a, b = s:find(v, pos, true)
      if not a then break end
      out[#out + 1] = s:sub(pos, a - 1)
      out[#out + 1] = M.MASK
      pos = b + 1
    end
    if pos > 1 then
      out[#out + 1] = s:sub(pos)
      s = table.concat(out)
    end
  end
  return s
end

-- record(err) -> errors.record(err) with the run's secrets masked in its message.
function Run:record(err)
  local r = errors.record(err)
  if r.message then r.message = self:mask(r.message) end
  return r
end

-- The task states, linked to their upstreams and downstreams; a resumed run's successes kept.
function Run:build()
  for _, t in ipairs(self.wf.order) do
    local st = { name = t.name, t = t, state = "pending", attempts = 0, run = self,
      ups = #t.after > 0 and {} or EMPTY, downs = #t.downstream > 0 and {} or EMPTY }
    self.states[t.name] = st
    self.order[#self.order + 1] = st
  end
  local states = self.states
  for _, st in ipairs(self.order) do
    local ups, downs, after, down = st.ups, st.downs, st.t.after, st.t.downstream
    for i = 1, #after do ups[i] = states[after[i]] end
    for i = 1, #down do downs[i] = states[down[i]] end
  end
  if self.resume then self:keep_resumed(self.resume) end
  for _, st in ipairs(self.order) do
    local rem = 0
    for _, u in ipairs(st.ups) do if not FINAL[u.state] then rem = rem + 1 end end
    st.remaining = rem
    if st.state == "pending" and rem == 0 then self:push_ready(st) end
  end
end

-- A recorded success is kept when every upstream is kept too: a task that ran although an
-- upstream failed (cleanup, all_done, one_failed) runs again after that upstream. A success
-- that a cleanup task has undone since (rules.undone_by_cleanup), or that the resume asked to
-- run again (rerun), runs again as well.
function Run:keep_resumed(prev)
  -- what will run whatever a cleanup undid: what did not succeed, what was asked to run again,
  -- and everything downstream of those
  local must_run = {}
  for _, name in ipairs(self.rerun or {}) do must_run[name] = true end
  for _, st in ipairs(self.order) do
    local rec = prev.tasks[st.name]
    if not rec or rec.state ~= "success" or must_run[st.name] then must_run[st.name] = true end
    for _, u in ipairs(st.ups) do
      if must_run[u.name] then must_run[st.name] = true end
    end
  end
  local undone = rules.undone_by_cleanup(self.wf, prev, must_run)
  for _, name in ipairs(self.rerun or {}) do undone[name] = true end
  for _, st in ipairs(self.order) do
    local rec = prev.tasks[st.name]
    if rec then
      st.attempts = rec.attempts or 0
      local keep = rec.state == "success" and not undone[st.name]
      for _, u in ipairs(st.ups) do if u.state ~= "success" then keep = false end end
      if keep then
        st.state, st.result, st.resumed = "success", rec.result, true
        st.duration = rec.duration
        self.results[st.name] = rec.result
      end
    end
  end
end

function Run:push_ready(st)
  self.rtail = self.rtail + 1
  self.ready[self.rtail] = st
end

function Run:observe(ev, st)
  if self.observer then self.observer(ev, st.name, st) end
end

function Run:log(st, msg)
  msg = self:mask(msg)
  self.journal:log(st and st.name, st and st.attempts, msg)
  self.reporter:log(st, msg)
end

function Run:became_final(st)
  for _, d in ipairs(st.downs) do
    d.remaining = d.remaining - 1
    if d.remaining == 0 and d.state == "pending" then self:push_ready(d) end
  end
end

-- A task that will not run: skipped, upstream_failed, or cancelled before it started.
function Run:finish_unrun(st, state, rule)
  st.state = state
  st.finished = flow.now()
  self.journal:append { ev = "task_skipped", task = st.name, state = state, rule = rule }
  self.reporter:task(st, state, { rule = rule })
  self:observe(state, st)
  self:became_final(st)
end

function Run:decide(st)
  local t = st.t
  if self.cancelling and not t.cleanup then
    return self:finish_unrun(st, "cancelled", "cancelled")
  end
  local rule = t.cleanup and "all_done" or (t.trigger or "all_success")
  local verdict = rules.evaluate(rule, st.ups)
  if verdict == "run" then
    self.qtail = self.qtail + 1
    self.runq[self.qtail] = st
  else
    self:finish_unrun(st, verdict, rule)
  end
end

-- Decides what is ready, starts what may start: journal first (one commit), then spawn.
function Run:pump()
  repeat
    while self.rhead <= self.rtail do
      local st = self.ready[self.rhead]
      self.ready[self.rhead] = nil
      self.rhead = self.rhead + 1
      self:decide(st)
    end
    local to_start = {}
    while self.qhead <= self.qtail and self.n_running + #to_start < self.max_active do
      local st = self.runq[self.qhead]
      self.runq[self.qhead] = nil
      self.qhead = self.qhead + 1
      if self.cancelling and not st.t.cleanup then
        self:finish_unrun(st, "cancelled", "cancelled")
      else
        st.attempts = st.attempts + 1
        st.state, st.started, st.tries = "running", flow.now(), 1
        self.journal:append { ev = "task_started", task = st.name, attempt = st.attempts }
        to_start[#to_start + 1] = st
      end
    end
    self.journal:commit()
    for _, st in ipairs(to_start) do
      self.reporter:task(st, "started")
      self:observe("started", st)
      local h = flow.spawn(M.runner, st)
      st.handle = h
      self.running[st] = h
      self.n_running = self.n_running + 1
    end
    -- the ready list may have grown from cancelled runq entries
  until self.rhead > self.rtail
end

function Run:complete(st)
  st.queued = true
  self.qn = self.qn + 1
  self.queue[self.qn] = st
end

function Run:make_ctx(st)
  local ctx = setmetatable({
    params = self.params, results = self.results, run_id = self.run_id, task = st.name,
    attempt = st.attempts, workflow = self.wf.name, [ST] = st,
  }, CTX_MT)
  -- the run's dates: ctx.logical_date, ctx.data_interval.start / ["end"], ctx.ds ...
  for k, v in pairs(self.dates or EMPTY) do ctx[k] = v end
  return ctx
end

local function call_hook(run, st, fn, ...)
  if not fn then return end
  local ok, err = pcall(fn, ...)
  if not ok then
    if flow.cancelled(err) then return end
    run:log(st, "hook failed: " .. errors.render(err))
  end
end

function Run:hooks(st, name, ...)
  local fn, wfn = st.t[name], self.wf.hooks[name]
  if not fn and not wfn then return end
  -- a hook may wait (a notification): what happened is made durable first
  self.journal:commit()
  call_hook(self, st, fn, ...)
  call_hook(self, st, wfn, ...)
end

-- The one place a task ends cancelled: its error kept, journaled, queued for the run.
function Run:finish_cancelled(st, err)
  st.state, st.error, st.finished = "cancelled", self:record(err), flow.now()
  self.journal:append { ev = "task_failed", task = st.name, attempt = st.attempts,
    state = "cancelled", error = st.error }
  return self:complete(st)
end

function Run:finish_failed(st, err, ctx)
  st.state, st.error, st.finished = "failed", self:record(err), flow.now()
  self.journal:append { ev = "task_failed", task = st.name, attempt = st.attempts,
    state = "failed", error = st.error }
  self:hooks(st, "on_failure", ctx, err)
  return self:complete(st)
end

-- One attempt of the task's body, with the ctx bound to the flowrun task running it (under
-- flow.timeout the body runs in a task of its own: log lines from it find the ctx too).
local function attempt(st, ctx)
  -- a run that another process took over (its lease ran out while this one was stopped) starts
  -- no task body here: the journal's guard raises store.lost (and the run is abandoned)
  local jr = st.run.journal
  if jr.guard then jr:guard() end
  local id = core.current().id
  context.bind(id, ctx)
  local ok, r = pcall(st.t.fn, ctx)
  context.unbind(id)
  if not ok then error(r, 0) end
  return r
end

-- A task's life: attempts, retries, journal, hooks. Never raises.
function Run:run_attempts(st)
  local t = st.t
  while true do
    local ctx = self:make_ctx(st)
    local ok, err -- err is the result when ok (only the first result counts)
    if t.timeout then
      ok, err = pcall(flow.timeout, t.timeout, attempt, st, ctx)
    else
      ok, err = pcall(attempt, st, ctx)
    end
    local result
    if ok then result = err end
    if ok and not t.cleanup and core.cancelling() then
      -- the body swallowed its cancellation: the task still ends cancelled
      ok, err = false, flow.error("flow.cancelled", "task cancelled", { retryable = false })
    end
    if ok then
      local enc_ok, enc_err = pcall(self.journal.append, self.journal, { ev = "task_succeeded",
        task = st.name, attempt = st.attempts, result = result })
      if enc_ok then
        st.state, st.result, st.finished, st.error = "success", result, flow.now(), nil
        self.results[st.name] = result
        self:hooks(st, "on_success", ctx, result)
        return self:complete(st)
      end
      ok, err = false, flow.error("flow.result", string.format(
        "task %s returned a result that cannot be journaled (%s)", st.name,
        errors.render(enc_err):gsub("^.-:%d+: ", "")), { retryable = false })
    end
    -- a cleanup task's own failures stay failures even while the run is being cancelled
    if flow.cancelled(err) or (not t.cleanup and core.cancelling()) then
      return self:finish_cancelled(st, err)
    end
    local retry = st.tries <= (t.retries or 0) and (t.cleanup or not self.cancelling)
      and not self.abandoned
    if retry and t.retry_if then
      local rok, r = pcall(t.retry_if, err, ctx)
      retry = rok and r and true or false
    end
    if not retry then return self:finish_failed(st, err, ctx) end
    local delay = M.retry_delay(t, st.tries, self.random)
    st.state, st.error = "up_for_retry", self:record(err)
    self.journal:append { ev = "task_retry", task = st.name, attempt = st.attempts,
      delay = delay, error = st.error }
    self.journal:commit()
    self.reporter:task(st, "retry", { error = err, delay = delay })
    self:observe("retry", st)
    self:hooks(st, "on_retry", ctx, err)
    local sok, serr = pcall(flow.sleep, delay)
    if not sok then return self:finish_cancelled(st, serr) end
    st.attempts, st.tries = st.attempts + 1, st.tries + 1
    st.state = "running"
    self.journal:append { ev = "task_started", task = st.name, attempt = st.attempts }
    self.journal:commit()
    self.reporter:task(st, "started")
    self:observe("started", st)
  end
end

-- The body of a runner task.
function M.runner(st)
  local run = st.run
  if st.t.cleanup then
    -- a cleanup task finishes its work even when the run is being cancelled
    return flow.shield(run.run_attempts, run, st)
  end
  return run:run_attempts(st)
end

-- Takes the finished runners off the completion queue.
function Run:drain()
  local q, n = self.queue, self.qn
  self.queue, self.qn = {}, 0
  for i = 1, n do
    local st = q[i]
    self.running[st] = nil
    self.n_running = self.n_running - 1
    st.handle = nil
    local ev = st.state == "success" and "succeeded" or st.state
    self.reporter:task(st, ev)
    self:observe(ev, st)
    self:became_final(st)
  end
end

function Run:start_cancelling(reason)
  if self.cancelling then return end
  self.cancelling, self.reason = true, reason
  for st, h in pairs(self.running) do
    if not st.t.cleanup then h:cancel() end
  end
end

-- r:abandon(err): the run is no longer this process's (another holder claimed it, or a stopping
-- worker handed it back): every runner is cancelled, cleanup tasks included, nothing else
-- starts (the new holder runs what is left, cleanups too) and execute() raises err. May be
-- called from any task.
function Run:abandon(err)
  if self.abandoned then return end
  self.abandoned = err
  for _, h in pairs(self.running) do h:cancel() end
  if self.task and self.task ~= core.current() then self.task:cancel() end
end

function Run:loop()
  local deadline = self.deadline
  while true do
    self:drain()
    self:pump()
    if self.n_running == 0 and self.qn == 0 then break end
    if self.qn == 0 then
      local hs, sts = {}, {}
      for st, h in pairs(self.running) do hs[#hs + 1], sts[#sts + 1] = h, st end
      local wait = nil
      if deadline and not self.cancelling then wait = math.max(0, deadline - flow.now()) end
      local idx = core.wait_any(hs, wait)
      local st = idx and sts[idx]
      if st and not st.queued then
        -- the runner itself died (an error in a view or the journal, not in the task's body,
        -- which is protected): the task fails with that error
        local _, err = hs[idx]:result()
        st.state, st.error, st.finished = "failed", self:record(err), flow.now()
        pcall(self.journal.append, self.journal, { ev = "task_failed", task = st.name,
          attempt = st.attempts, state = "failed", error = st.error })
        self:complete(st)
      elseif idx == nil and wait then
        self:start_cancelling(string.format("timed out after %s (--timeout)",
          duration.format(self.timeout)))
      elseif self.qn < self.n_running then
        -- group commit: let the other runnable tasks finish their turn first, so that changes
        -- happening together are decided and journaled together
        flow.sleep(0)
      end
    end
  end
end

local SIGNAL_NAMES = { [1] = "SIGHUP", [2] = "SIGINT", [15] = "SIGTERM" }
local function signal_name(sig) return SIGNAL_NAMES[sig] or ("signal " .. sig) end

-- The run's outcome: failed when any non-cleanup task did not succeed or was skipped by a rule,
-- or when a cleanup task failed; cancelled when a signal stopped it.
function Run:outcome(t0)
  local state = "success"
  for _, st in ipairs(self.order) do
    local s = st.state
    if s == "failed" or s == "upstream_failed" or (s == "cancelled" and not st.t.cleanup) then
      state = "failed"
    end
    if not FINAL[s] then state = "failed" end
  end
  local exit = state == "success" and 0 or 1
  local sig = core.signal()
  if sig and not (self.reason and self.reason:match("^cancelled")) then
    self.reason = "cancelled: " .. (self.reason and (self.reason .. "; then ") or "")
      .. signal_name(sig)
  end
  if self.cancelling and self.reason and self.reason:match("^cancelled") then
    state = "cancelled"
    exit = sig and (128 + sig) or 130
  elseif self.cancelling then
    state = "failed"
    exit = 1
  end
  local sum = { run_id = self.run_id, workflow = self.wf.name, state = state, exit = exit,
    reason = self.reason, duration = flow.now() - t0, tasks = {}, results = self.results }
  local nfailed = 0
  for _, st in ipairs(self.order) do
    -- the rows are the task states themselves (read them, do not change them): a summary of
    -- 10,000 tasks costs no extra tables
    if st.started and st.finished then st.duration = st.finished - st.started end
    st.cleanup = st.t.cleanup or nil
    sum.tasks[#sum.tasks + 1] = st
    if st.state == "failed" then nfailed = nfailed + 1 end
  end
  if state == "failed" and not sum.reason then
    sum.reason = nfailed > 0 and string.format("%d task(s) failed", nfailed) or "not every task ran"
  end
  return sum
end

-- r:execute() -> summary: {run_id, workflow, state, exit, reason, duration, tasks = {{name,
-- state, attempts, duration, error, result, cleanup, resumed, ...}} (in dependency order),
-- results = {name -> result}}
function Run:execute()
  local t0 = flow.now()
  self.task = core.current()
  self.deadline = self.timeout and (t0 + self.timeout)
  local rep = self.reporter
  -- what was appended before (run_started, run_resumed) goes with the first pump's commit, made
  -- before any task starts
  local kept = 0
  for _, st in ipairs(self.order) do if st.resumed then kept = kept + 1 end end
  if rep.set_tasks then rep:set_tasks(self.states, self.order) end
  rep:run_started { run_id = self.run_id, workflow = self.wf.name, tasks = self.order,
    resumed = self.resume ~= nil, kept = kept }
  local lok, lerr = pcall(self.loop, self)
  if not lok then
    local sig = core.signal()
    if not self.abandoned and sig and self.on_signal then
      local herr = self.on_signal(sig)
      if herr then self:abandon(herr) end
    end
    if self.abandoned then
      for _, h in pairs(self.running) do h:cancel() end
      rep:close()
      error(self.abandoned, 0)
    end
    if not (flow.cancelled(lerr) or core.cancelling()) then
      -- an engine bug: stop the runners and report it
      for _, h in pairs(self.running) do h:cancel() end
      error(lerr, 0)
    end
    -- Ctrl-C / SIGTERM / SIGHUP (or our task was cancelled): stop the work, run cleanup tasks,
    -- shielded
    self:start_cancelling(sig and ("cancelled by " .. signal_name(sig)) or "cancelled")
    for _, h in pairs(self.running) do h:cancel() end
    flow.shield(self.loop, self)
  end
  local sum = self:outcome(t0)
  self.journal:append { ev = "run_finished", state = sum.state, exit = sum.exit,
    reason = sum.reason }
  self.journal:commit()
  if self.wf.hooks.on_finish then
    call_hook(self, nil, function() flow.shield(self.wf.hooks.on_finish, sum) end)
  end
  rep:run_finished(sum)
  rep:close()
  return sum
end

-- Delay before the retry that follows attempt `n` (1-based) of task options t.
function M.retry_delay(t, n, random)
  local base = t.retry_delay or 0
  local d = base * (t.retry_backoff or 1) ^ (n - 1)
  if t.max_retry_delay and d > t.max_retry_delay then d = t.max_retry_delay end
  if t.jitter and t.jitter > 0 then
    d = d * (1 - t.jitter * (random or math.random)())
  end
  return d
end

-- A run id: UTC start time plus 4 random hex digits, e.g. 20261124T151924-3f9a.
function M.new_run_id()
  return os.date("!%Y%m%dT%H%M%S", math.floor(flow.time())) .. string.format("-%04x",
    math.random(0, 0xffff))
end

M.Run = Run
return M
