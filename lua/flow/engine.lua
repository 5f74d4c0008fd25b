-- flow.engine — running a workflow: ready tasks run concurrently (max_active caps them),
-- trigger rules decide what runs, is skipped or is upstream_failed, retries with backoff and
-- jitter, per-attempt timeouts, hooks, cleanup tasks (run once their upstreams are done,
-- whatever happened, also after Ctrl-C or --timeout; never turning a failed run into a
-- success), the durable journal, the summary and exit codes. The CLI half (run_cli and the
-- `runs`, `show`, `resume`, `graph`, `plan` commands) is in this file too.
--
-- The engine's task is the only one that changes the graph's bookkeeping. Each workflow task
-- runs in its own flowrun task (a "runner") that loops over attempts, journals what happens to
-- it and finally pushes itself on the completion queue; the engine waits with
-- core.wait_any on the runners, drains the queue, decides the next tasks, commits the journal
-- once (one fsync for everything that happened together) and only then starts them.
--
-- Task states: pending, running, up_for_retry (between attempts; a runner is alive), and the
-- final ones success, failed, upstream_failed, skipped, cancelled.
local duration = require "flow.duration"
local journal = require "flow.journal"
local progress = require "flow.progress"

local M = {}

local FINAL = journal.FINAL
local EMPTY = setmetatable({}, { __newindex = function() error("EMPTY is read-only") end })
local BAD = { failed = true, upstream_failed = true, cancelled = true }

local context = require "flow.context"

-- ctx.log(...) and ctx.progress(pct, msg) are made on first use (most tasks never log), bound
-- to the task's state, found under the private key ST.
local ST = setmetatable({}, { __name = "ctx.st" })
local CTX_MT = { __index = function(ctx, k)
  local st = rawget(ctx, ST)
  local f
  if k == "log" then
    f = function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      st.rep:log(st, table.concat(parts, " "))
    end
  elseif k == "progress" then
    f = function(pct, msg)
      if type(pct) == "string" and msg == nil then pct, msg = nil, pct end
      st.pct = pct
      if msg then st.last_msg = msg end
      st.rep:progress(st, pct, msg)
    end
  else
    return nil
  end
  rawset(ctx, k, f)
  return f
end }

local function flow() return require "flow" end
local function core() return require "flow.core" end


-- Trigger rules. Evaluated once every upstream is final. Returns "run", "skipped" or
-- "upstream_failed".
local function evaluate(rule, ups)
  if #ups == 0 then return "run" end
  local n_ok, n_bad, n_failed = 0, 0, 0
  for _, u in ipairs(ups) do
    local s = u.state
    if s == "success" then n_ok = n_ok + 1
    elseif BAD[s] then
      n_bad = n_bad + 1
      if s == "failed" or s == "upstream_failed" then n_failed = n_failed + 1 end
    end
  end
  local n = #ups
  if rule == "all_success" then
    if n_ok == n then return "run" end
    return n_bad > 0 and "upstream_failed" or "skipped"
  elseif rule == "all_done" then
    return "run"
  elseif rule == "all_failed" then
    return n_failed == n and "run" or "skipped"
  elseif rule == "one_success" then
    if n_ok > 0 then return "run" end
    return n_bad > 0 and "upstream_failed" or "skipped"
  elseif rule == "one_failed" then
    return n_failed > 0 and "run" or "skipped"
  elseif rule == "none_failed" then
    return n_bad == 0 and "run" or "upstream_failed"
  end
  error("unknown trigger rule " .. tostring(rule))
end
M.evaluate = evaluate

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

-- What of an error is journaled and shown: code, message and the plain fields error objects
-- carry (never secrets: error objects are built without them).
local ERR_FIELDS = { "retryable", "status", "request_id", "sqlstate", "service", "operation" }
local function errobj(e)
  if type(e) == "table" then
    local o = { code = e.code, message = e.message }
    for _, k in ipairs(ERR_FIELDS) do
      local v = rawget(e, k)
      if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then o[k] = v end
    end
    if o.code == nil and o.message == nil then o.message = tostring(e) end
    if type(o.message) ~= "string" and o.message ~= nil then o.message = tostring(o.message) end
    if type(o.code) ~= "string" and o.code ~= nil then o.code = tostring(o.code) end
    return o
  end
  return { message = tostring(e) }
end

local function call_hook(rt, st, fn, ...)
  if not fn then return end
  local ok, err = pcall(fn, ...)
  if not ok then
    if flow().cancelled(err) then return end
    rt.reporter:log(st, "hook failed: " .. progress.errstr(err))
  end
end

-- run(wf, o) -> summary. o fields:
--   params       resolved parameters (required)
--   run_id       string (default generated)
--   journal      a journal writer or nil (no journal)
--   reporter     a progress reporter (default quiet)
--   max_active   cap on running tasks (default wf.max_active or unlimited)
--   timeout      seconds bounding the whole run
--   resume       a replayed run (journal.replay): its succeeded tasks keep their results
--   random       function() -> [0,1) for jitter (default math.random)
--   observer     function(event, name, st) called on each state change (tests)
-- summary: {run_id, workflow, state, exit, reason, duration, tasks = {{name, state, attempts,
-- duration, error, result, cleanup, resumed, ...}} (in dependency order), results = {name ->
-- result}}
function M.run(wf, o)
  local F, C = flow(), core()
  local ok, problems = wf:validate()
  if not ok then
    error("invalid workflow: " .. table.concat(problems, "; "), 2)
  end
  local rt = {
    wf = wf, params = o.params or {}, run_id = o.run_id or M.new_run_id(),
    journal = o.journal, reporter = o.reporter or progress.quiet(),
    max_active = o.max_active or wf.max_active or math.huge,
    random = o.random or math.random, observer = o.observer,
    states = {}, order = {}, results = {}, queue = {}, qn = 0,
    running = {}, n_running = 0, cancelling = false, reason = nil,
  }
  local jr = rt.journal
  local t0 = F.now()
  local rep = rt.reporter

  -- build task states
  for _, t in ipairs(wf.order) do
    local st = { name = t.name, t = t, state = "pending", attempts = 0,
      ups = #t.after > 0 and {} or EMPTY, downs = #t.downstream > 0 and {} or EMPTY, rep = rep }
    rt.states[t.name] = st
    rt.order[#rt.order + 1] = st
  end
  local states = rt.states
  for _, st in ipairs(rt.order) do
    local ups, downs, after, down = st.ups, st.downs, st.t.after, st.t.downstream
    for i = 1, #after do ups[i] = states[after[i]] end
    for i = 1, #down do downs[i] = states[down[i]] end
  end
  if o.resume then
    -- a recorded success is kept when every upstream is kept too: a task that ran although
    -- an upstream failed (cleanup, all_done, one_failed) runs again after that upstream
    for _, st in ipairs(rt.order) do
      local rec = o.resume.tasks[st.name]
      if rec then
        st.attempts = rec.attempts or 0
        local keep = rec.state == "success"
        for _, u in ipairs(st.ups) do if u.state ~= "success" then keep = false end end
        if keep then
          st.state, st.result, st.resumed = "success", rec.result, true
          st.started, st.finished = nil, nil
          st.duration = rec.duration
          rt.results[st.name] = rec.result
        end
      end
    end
  end
  if rep.set_tasks then rep:set_tasks(rt.states, rt.order) end

  local function observe(ev, st)
    if rt.observer then rt.observer(ev, st.name, st) end
  end

  -- The ready FIFO holds pending tasks whose upstreams are all final; runq holds tasks decided
  -- to run, waiting for a max_active slot (in dependency order).
  local ready, rhead, rtail = {}, 1, 0
  local runq, qhead, qtail = {}, 1, 0
  local function push_ready(st) rtail = rtail + 1; ready[rtail] = st end
  for _, st in ipairs(rt.order) do
    local rem = 0
    for _, u in ipairs(st.ups) do if not FINAL[u.state] then rem = rem + 1 end end
    st.remaining = rem
    if st.state == "pending" and rem == 0 then push_ready(st) end
  end

  local function became_final(st)
    for _, d in ipairs(st.downs) do
      d.remaining = d.remaining - 1
      if d.remaining == 0 and d.state == "pending" then push_ready(d) end
    end
  end

  local function set_final_unrun(st, state, rule)
    st.state = state
    st.finished = F.now()
    if jr then jr:append { ev = "task_skipped", task = st.name, state = state, rule = rule } end
    rep:task(st, state, { rule = rule })
    observe(state, st)
    became_final(st)
  end

  local function decide(st)
    local t = st.t
    if rt.cancelling and not t.cleanup then
      return set_final_unrun(st, "cancelled", "cancelled")
    end
    local rule = t.cleanup and "all_done" or (t.trigger or "all_success")
    local verdict = evaluate(rule, st.ups)
    if verdict == "run" then
      qtail = qtail + 1
      runq[qtail] = st
    else
      set_final_unrun(st, verdict, rule)
    end
  end

  local runner -- forward

  -- Decide what is ready, start what may start: journal first (one commit), then spawn.
  local function pump()
    while rhead <= rtail do
      local st = ready[rhead]
      ready[rhead] = nil
      rhead = rhead + 1
      decide(st)
    end
    local to_start = {}
    while qhead <= qtail and rt.n_running + #to_start < rt.max_active do
      local st = runq[qhead]
      runq[qhead] = nil
      qhead = qhead + 1
      if rt.cancelling and not st.t.cleanup then
        set_final_unrun(st, "cancelled", "cancelled")
      else
        st.attempts = st.attempts + 1
        st.state, st.started, st.tries = "running", F.now(), 1
        if jr then jr:append { ev = "task_started", task = st.name, attempt = st.attempts } end
        to_start[#to_start + 1] = st
      end
    end
    if jr then jr:commit() end
    for _, st in ipairs(to_start) do
      rep:task(st, "started")
      observe("started", st)
      local h = F.spawn(runner, st)
      st.handle = h
      rt.running[st] = h
      rt.n_running = rt.n_running + 1
    end
    -- the ready list may have grown from cancelled runq entries
    if rhead <= rtail then return pump() end
  end

  local function complete(st)
    st.queued = true
    rt.qn = rt.qn + 1
    rt.queue[rt.qn] = st
  end

  local function make_ctx(st)
    return setmetatable({
      params = rt.params, results = rt.results, run_id = rt.run_id, task = st.name,
      attempt = st.attempts, workflow = wf.name, [ST] = st,
    }, CTX_MT)
  end

  local function attempt(st, ctx)
    -- flow.timeout runs the body in a task of its own: log lines from it find the ctx too
    local id = C.current().id
    context.bind(id, ctx)
    local ok, r = pcall(st.t.fn, ctx)
    context.unbind(id)
    if not ok then error(r, 0) end
    return r
  end

  local function hooks(st, name, ...)
    if not st.t[name] and not wf.hooks[name] then return end
    -- a hook may wait (a notification): what happened is made durable first
    if jr then jr:commit() end
    call_hook(rt, st, st.t[name], ...)
    call_hook(rt, st, wf.hooks[name], ...)
  end

  -- One workflow task's life: attempts, retries, journal, hooks. Never raises.
  local function run_attempts(st)
    local t = st.t
    local ctx
    local myid = C.current().id
    while true do
      ctx = make_ctx(st)
      local ok, err -- err is the result when ok (only the first result counts)
      if t.timeout then
        ok, err = pcall(F.timeout, t.timeout, attempt, st, ctx)
      else
        context.bind(myid, ctx)
        ok, err = pcall(t.fn, ctx)
      end
      context.unbind(myid)
      local result
      if ok then result = err end
      if ok and not t.cleanup and C.cancelling() then
        -- the body swallowed its cancellation: the task still ends cancelled
        ok, err = false, F.error("flow.cancelled", "task cancelled", { retryable = false })
      end
      if ok then
        local enc_ok, enc_err = true, nil
        if jr then
          enc_ok, enc_err = pcall(jr.append, jr, { ev = "task_succeeded", task = st.name,
            attempt = st.attempts, result = result })
        end
        if enc_ok then
          st.state, st.result, st.finished, st.error = "success", result, F.now(), nil
          rt.results[st.name] = result
          hooks(st, "on_success", ctx, result)
          return complete(st)
        end
        ok, err = false, F.error("flow.result", string.format(
          "task %s returned a result that cannot be journaled (%s)", st.name,
          tostring(enc_err):gsub("^.-:%d+: ", "")), { retryable = false })
      end
      -- a cleanup task's own failures stay failures even while the run is being cancelled
      if F.cancelled(err) or (not t.cleanup and C.cancelling()) then
        st.state, st.error, st.finished = "cancelled", errobj(err), F.now()
        if jr then
          jr:append { ev = "task_failed", task = st.name, attempt = st.attempts,
            state = "cancelled", error = st.error }
        end
        return complete(st)
      end
      local retry = st.tries <= (t.retries or 0) and (t.cleanup or not rt.cancelling)
      if retry and t.retry_if then
        local rok, r = pcall(t.retry_if, err, ctx)
        retry = rok and r and true or false
      end
      if not retry then
        st.state, st.error, st.finished = "failed", errobj(err), F.now()
        st.traceback = type(err) ~= "table" and tostring(err) or nil
        if jr then
          jr:append { ev = "task_failed", task = st.name, attempt = st.attempts,
            state = "failed", error = st.error }
        end
        hooks(st, "on_failure", ctx, err)
        return complete(st)
      end
      local delay = M.retry_delay(t, st.tries, rt.random)
      st.state, st.error = "up_for_retry", errobj(err)
      if jr then
        jr:append { ev = "task_retry", task = st.name, attempt = st.attempts, delay = delay,
          error = st.error }
        jr:commit()
      end
      rep:task(st, "retry", { error = err, delay = delay })
      observe("retry", st)
      hooks(st, "on_retry", ctx, err)
      local sok, serr = pcall(F.sleep, delay)
      if not sok then
        st.state, st.error, st.finished = "cancelled", errobj(serr), F.now()
        if jr then
          jr:append { ev = "task_failed", task = st.name, attempt = st.attempts,
            state = "cancelled", error = st.error }
        end
        return complete(st)
      end
      st.attempts, st.tries = st.attempts + 1, st.tries + 1
      st.state = "running"
      if jr then
        jr:append { ev = "task_started", task = st.name, attempt = st.attempts }
        jr:commit()
      end
      rep:task(st, "started")
      observe("started", st)
    end
  end

  runner = function(st)
    if st.t.cleanup then
      -- a cleanup task finishes its work even when the run is being cancelled
      return F.shield(run_attempts, st)
    end
    return run_attempts(st)
  end

  local function drain()
    local q, n = rt.queue, rt.qn
    rt.queue, rt.qn = {}, 0
    for i = 1, n do
      local st = q[i]
      rt.running[st] = nil
      rt.n_running = rt.n_running - 1
      st.handle = nil
      local ev = st.state == "success" and "succeeded" or st.state
      rep:task(st, ev)
      observe(ev, st)
      became_final(st)
    end
  end

  local function start_cancelling(reason)
    if rt.cancelling then return end
    rt.cancelling, rt.reason = true, reason
    for st, h in pairs(rt.running) do
      if not st.t.cleanup then h:cancel() end
    end
  end

  local deadline = o.timeout and (t0 + o.timeout)

  local function loop()
    while true do
      drain()
      pump()
      if rt.n_running == 0 and rt.qn == 0 then break end
      if rt.qn == 0 then
        local hs, sts = {}, {}
        for st, h in pairs(rt.running) do hs[#hs + 1], sts[#sts + 1] = h, st end
        local wait = nil
        if deadline and not rt.cancelling then wait = math.max(0, deadline - F.now()) end
        local idx = C.wait_any(hs, wait)
        local st = idx and sts[idx]
        if st and not st.queued then
          -- the runner itself died (an error in a reporter or the journal, not in the task's
          -- body, which is protected): the task fails with that error
          local _, err = hs[idx]:result()
          st.state, st.error, st.finished = "failed", errobj(err), F.now()
          complete(st)
        elseif idx == nil and wait then
          start_cancelling(string.format("timed out after %s (--timeout)",
            duration.format(o.timeout)))
        elseif rt.qn < rt.n_running then
          -- group commit: let the other runnable tasks finish their turn first, so that
          -- changes happening together are decided and journaled together
          F.sleep(0)
        end
      end
    end
  end

  if jr then jr:commit() end
  local kept = 0
  for _, st in ipairs(rt.order) do if st.resumed then kept = kept + 1 end end
  rep:run_started { run_id = rt.run_id, workflow = wf.name, tasks = rt.order,
    resumed = o.resume ~= nil, kept = kept }
  local lok, lerr = pcall(loop)
  if not lok then
    if not (F.cancelled(lerr) or C.cancelling()) then
      -- an engine bug: stop the runners and report it
      for _, h in pairs(rt.running) do h:cancel() end
      error(lerr, 0)
    end
    -- Ctrl-C / SIGTERM (or our task was cancelled): stop the work, run cleanup tasks, shielded
    local sig = C.signal()
    start_cancelling(sig and string.format("cancelled by %s", sig == 2 and "SIGINT"
      or sig == 15 and "SIGTERM" or ("signal " .. sig)) or "cancelled")
    for _, h in pairs(rt.running) do h:cancel() end
    F.shield(loop)
  end

  -- the run's outcome: failed when any non-cleanup task did not succeed or was skipped by a
  -- rule, or when a cleanup task failed; cancelled when a signal stopped it.
  local state = "success"
  for _, st in ipairs(rt.order) do
    local s = st.state
    if s == "failed" or s == "upstream_failed" or (s == "cancelled" and not st.t.cleanup) then
      state = "failed"
    end
    if not FINAL[s] then state = "failed" end
  end
  local exit = state == "success" and 0 or 1
  if C.signal() and not (rt.reason and rt.reason:match("^cancelled")) then
    local sig = C.signal()
    rt.reason = (rt.reason and (rt.reason .. "; then ") or "") .. (sig == 2 and "SIGINT"
      or sig == 15 and "SIGTERM" or ("signal " .. sig))
    rt.reason = "cancelled: " .. rt.reason
  end
  if rt.cancelling and rt.reason and rt.reason:match("^cancelled") then
    state = "cancelled"
    local sig = C.signal()
    exit = sig and (128 + sig) or 130
  elseif rt.cancelling then
    state = "failed"
    exit = 1
  end
  local sum = { run_id = rt.run_id, workflow = wf.name, state = state, exit = exit,
    reason = rt.reason, duration = F.now() - t0, tasks = {}, results = rt.results }
  local nfailed = 0
  for _, st in ipairs(rt.order) do
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
  if jr then
    jr:append { ev = "run_finished", state = state, exit = exit, reason = sum.reason }
    jr:commit()
  end
  if wf.hooks.on_finish then
    call_hook(rt, nil, function() F.shield(wf.hooks.on_finish, sum) end)
  end
  rep:run_finished(sum)
  rep:close()
  return sum
end

-- A run id: UTC start time plus 4 random hex digits, e.g. 20261124T151924-3f9a.
function M.new_run_id()
  local F = flow()
  return os.date("!%Y%m%dT%H%M%S", math.floor(F.time())) .. string.format("-%04x",
    math.random(0, 0xffff))
end

M.cli = require "flow.engine_cli"
M.run_cli = M.cli.run_cli
M.command = M.cli.command

return M
