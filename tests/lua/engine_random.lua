-- Random DAGs (fixed seed): random dependencies, durations, failures, retries, timeouts,
-- trigger rules, cleanup tasks and run timeouts. Invariants checked on every case:
--   * no task starts before every upstream reached a final state;
--   * every task ends in a final state, and the trigger rules hold (checked against an oracle
--     written apart from the engine's);
--   * a task that ran has the attempts and outcome its failures and retries imply;
--   * the run's state follows its tasks (cleanup success never rescues a failed run);
--   * replaying the journal gives the same final states, attempts and results;
--   * resuming a failed run with its failures fixed re-runs exactly what was not kept and
--     succeeds; kept tasks keep their results.
-- The same cases (same seed) run against both run stores: the file store and PostgreSQL.
local t = require "tap"
local flow = require "flow"
local core = require "flow.core"
local engine = require "flowrun.engine"
local filestore = require "flowrun.engine.store.file"
local pgstore = require "flowrun.engine.store.pg"
local progress = require "flowrun.cli.view"

core.set_virtual_time(true)

local CASES = tonumber(os.getenv("FLOWRUN_RANDOM_CASES") or "") or 300
local SEED = 20261124
local rng_state = SEED
-- our own generator (xorshift), so the cases do not depend on math.random's algorithm
local function rnd(n)
  rng_state = rng_state ~ (rng_state << 13)
  rng_state = rng_state ~ (rng_state >> 7)
  rng_state = rng_state ~ (rng_state << 17)
  return (rng_state & 0x7fffffff) % n
end

local RULES = { "all_success", "all_success", "all_success", "all_done", "all_failed",
  "one_success", "one_failed", "none_failed" }
local FINAL = { success = true, failed = true, upstream_failed = true, skipped = true,
  cancelled = true }

-- The oracle: what a task whose upstreams ended in `ups` (list of states) should do.
local function oracle(rule, ups)
  local any = function(pred) for _, s in ipairs(ups) do if pred(s) then return true end end return false end
  local all = function(pred) for _, s in ipairs(ups) do if not pred(s) then return false end end return true end
  local failedish = function(s) return s == "failed" or s == "upstream_failed" end
  local bad = function(s) return failedish(s) or s == "cancelled" end
  if #ups == 0 or rule == "all_done" then return "run" end
  if rule == "all_success" then
    if all(function(s) return s == "success" end) then return "run" end
    return any(bad) and "upstream_failed" or "skipped"
  elseif rule == "all_failed" then
    return all(failedish) and "run" or "skipped"
  elseif rule == "one_success" then
    if any(function(s) return s == "success" end) then return "run" end
    return any(bad) and "upstream_failed" or "skipped"
  elseif rule == "one_failed" then
    return any(failedish) and "run" or "skipped"
  elseif rule == "none_failed" then
    return any(bad) and "upstream_failed" or "run"
  end
end

local dir = os.tmpname()
os.remove(dir)

local failures = 0
local label = ""
local function check(cond, case, msg)
  if not cond then
    failures = failures + 1
    if failures <= 20 then t.diag(label .. " case " .. case .. ": " .. msg) end
  end
end

local totals

local function run_cases(store)
rng_state = SEED
failures = 0
totals = { tasks = 0, ran = 0, retries = 0, cleanup = 0, timeouts = 0, skipped = 0,
  upstream_failed = 0, cancelled = 0, failed_runs = 0 }
for case = 1, CASES do
  local n = 2 + rnd(14)
  local spec = {}
  local wf = flow.workflow { name = "random" .. case, max_active = rnd(3) == 0 and (1 + rnd(3)) or nil }
  for i = 1, n do
    local deps = {}
    for j = 1, i - 1 do if rnd(4) == 0 then deps[#deps + 1] = "t" .. j end end
    local s = {
      name = "t" .. i, deps = deps, rule = RULES[1 + rnd(#RULES)], cleanup = rnd(10) == 0,
      fails = rnd(3) == 0 and (1 + rnd(3)) or 0, retries = rnd(3), dur = rnd(4),
      hang = rnd(12) == 0,
    }
    spec[i] = s
    local opts = { after = deps, retries = s.retries, retry_delay = rnd(3) }
    if s.cleanup then opts.cleanup = true else opts.trigger = s.rule end
    if s.hang then opts.timeout = 2 end
    wf:task(s.name, opts, function(ctx)
      s.calls = (s.calls or 0) + 1
      if s.fixed then return { task = s.name, attempt = ctx.attempt, fixed = true } end
      flow.sleep(s.dur)
      if s.hang then flow.sleep(100) end
      if ctx.attempt <= s.fails then error("planned failure " .. ctx.attempt, 0) end
      return { task = s.name, attempt = ctx.attempt }
    end)
  end
  local final_at, started_first, violations = {}, {}, {}
  local observer = function(ev, name, st)
    if ev == "started" then
      if not started_first[name] then
        started_first[name] = flow.now()
        for _, dep in ipairs(spec[tonumber(name:sub(2))].deps) do
          if not final_at[dep] then
            violations[#violations + 1] = name .. " started before " .. dep .. " was final"
          end
        end
      end
    elseif FINAL[ev] or ev == "succeeded" then
      final_at[name] = flow.now()
    end
  end
  local run_timeout = rnd(7) == 0 and (1 + rnd(8)) or nil
  local id = "case" .. case
  local jr = assert(store:create_run { ev = "run_started", run = id, workflow = wf.name, params = {} })
  local sum = engine.run(wf, { params = {}, journal = jr, run_id = id, observer = observer,
    timeout = run_timeout, reporter = progress.quiet() })
  jr:close()
  check(#violations == 0, case, table.concat(violations, "; "))

  local state = {}
  for _, x in ipairs(sum.tasks) do state[x.name] = x end
  local any_bad = false
  for i, s in ipairs(spec) do
    local x = state[s.name]
    totals.tasks = totals.tasks + 1
    check(FINAL[x.state], case, s.name .. " not final: " .. tostring(x.state))
    local ups = {}
    for _, dep in ipairs(s.deps) do ups[#ups + 1] = state[dep].state end
    local rule = s.cleanup and "all_done" or s.rule
    local verdict = oracle(rule, ups)
    if x.state == "cancelled" then
      totals.cancelled = totals.cancelled + 1
      check(sum.reason and sum.reason:find("timed out"), case, s.name .. " cancelled without a run timeout")
      check(not s.cleanup or x.attempts > 0, case, "cleanup " .. s.name .. " cancelled before it ran")
    elseif x.state == "skipped" or x.state == "upstream_failed" then
      totals[x.state] = totals[x.state] + 1
      check(x.attempts == 0, case, s.name .. " " .. x.state .. " but ran")
      check(verdict == x.state, case, string.format("%s: %s with upstreams {%s} under %s, oracle says %s",
        s.name, x.state, table.concat(ups, ","), rule, verdict))
    else
      totals.ran = totals.ran + 1
      if s.cleanup then totals.cleanup = totals.cleanup + 1 end
      check(verdict == "run", case, string.format("%s ran with upstreams {%s} under %s, oracle says %s",
        s.name, table.concat(ups, ","), rule, verdict))
      local want_attempts, want_state
      if s.hang then
        want_attempts, want_state = s.retries + 1, "failed"
        totals.timeouts = totals.timeouts + 1
      elseif s.fails > s.retries then
        want_attempts, want_state = s.retries + 1, "failed"
      else
        want_attempts, want_state = s.fails + 1, "success"
      end
      totals.retries = totals.retries + want_attempts - 1
      check(x.state == want_state, case, string.format("%s ended %s, expected %s", s.name, x.state, want_state))
      check(x.attempts == want_attempts, case, string.format("%s took %d attempts, expected %d",
        s.name, x.attempts, want_attempts))
      if want_state == "success" then
        check(x.result and x.result.attempt == want_attempts, case, s.name .. " result")
      else
        check(s.hang == (x.error and x.error.code == "flow.timeout"), case, s.name .. " timeout error code")
      end
    end
    if x.state == "failed" or ((x.state == "upstream_failed" or x.state == "cancelled") and not s.cleanup) then
      any_bad = true
    end
    local _ = i
  end
  local want_run = any_bad and "failed" or "success"
  if run_timeout and sum.reason and sum.reason:find("timed out") then want_run = "failed" end
  check(sum.state == want_run, case, "run " .. sum.state .. ", expected " .. want_run)
  check(sum.exit == (want_run == "success" and 0 or 1), case, "exit code")
  if sum.state ~= "success" then totals.failed_runs = totals.failed_runs + 1 end

  -- the journal's order says the same: an upstream's final record comes before the start
  local recs = store:records(id)
  local final_rec = {}
  for _, r in ipairs(recs or {}) do
    if r.ev == "task_succeeded" or r.ev == "task_failed" or r.ev == "task_skipped" then
      final_rec[r.task] = true
    elseif r.ev == "task_started" and r.attempt == 1 then
      for _, dep in ipairs(spec[tonumber(r.task:sub(2))].deps) do
        check(final_rec[dep], case, "journal: " .. r.task .. " started before " .. dep .. " ended")
      end
    end
  end

  local replay, err = store:load(id)
  check(replay, case, "journal: " .. tostring(err))
  if replay then
    check(replay.state == sum.state, case, "journal run state")
    for _, x in ipairs(sum.tasks) do
      local r = replay.tasks[x.name] or { state = "pending", attempts = 0 }
      check(r.state == x.state, case, "journal state of " .. x.name .. ": " .. tostring(r.state)
        .. " vs " .. x.state)
      check(r.attempts == x.attempts, case, "journal attempts of " .. x.name)
      check(t.deep_eq(r.result, x.result), case, "journal result of " .. x.name)
    end
  end

  -- resume a failed run with every failure fixed: tasks kept from the first run (succeeded,
  -- with every upstream kept) do not run again and keep their results; the rest run; the
  -- resumed run succeeds
  if replay and sum.state == "failed" and not run_timeout then
    totals.resumed = (totals.resumed or 0) + 1
    local calls_before = {}
    for _, sp in ipairs(spec) do sp.fixed = true; calls_before[sp.name] = sp.calls or 0 end
    local kept = {}
    for _, sp in ipairs(spec) do
      local k = state[sp.name].state == "success"
      for _, dep in ipairs(sp.deps) do if not kept[dep] then k = false end end
      kept[sp.name] = k
    end
    local jr2 = assert(store:resume_run(replay))
    jr2:append { ev = "run_resumed" }
    local sum2 = engine.run(wf, { params = {}, journal = jr2, run_id = id, resume = replay,
      reporter = progress.quiet() })
    jr2:close()
    check(sum2.state == "success", case, "resumed run " .. sum2.state)
    local st2 = {}
    for _, x in ipairs(sum2.tasks) do st2[x.name] = x end
    for _, sp in ipairs(spec) do
      local ran_again = (sp.calls or 0) > calls_before[sp.name]
      if kept[sp.name] then
        check(not ran_again, case, "resume re-ran kept task " .. sp.name)
        check(t.deep_eq(st2[sp.name].result, state[sp.name].result), case,
          "kept result of " .. sp.name)
      else
        check(st2[sp.name].state ~= "success" or ran_again, case,
          sp.name .. " success on resume without running")
      end
    end
    local again = store:load(id)
    check(again and again.state == "success" and again.resumed == 1, case, "journal after resume")
    -- the store's summary (what listing reads, without replaying) agrees with the journal
    local nsucc = 0
    for _, x in pairs(again and again.tasks or {}) do if x.state == "success" then nsucc = nsucc + 1 end end
    local found
    for _, x in ipairs(store:runs { state = "success" }) do if x.id == id then found = x end end
    check(found and found.tasks_succeeded == nsucc and found.tasks_total == #spec
      and found.resumed == 1 and found.exit == 0, case,
      "the run's summary after resume: " .. t.show(found) .. ", journal: " .. nsucc .. " succeeded")
  end
  if store.kind == "file" then os.remove(store:journal_path(id)) end
end

t.ok(failures == 0, string.format("%s: %d random DAGs (seed %d): every invariant held (%d violations)",
  label, CASES, SEED, failures))
t.diag(string.format("tasks %d: ran %d (cleanup %d), retries %d, timeouts %d, skipped %d, "
  .. "upstream_failed %d, cancelled %d; failed runs %d (%d resumed)", totals.tasks, totals.ran,
  totals.cleanup, totals.retries, totals.timeouts, totals.skipped, totals.upstream_failed,
  totals.cancelled, totals.failed_runs, totals.resumed or 0))
t.ok(totals.skipped > 0 and totals.upstream_failed > 0 and totals.cancelled > 0 and
  totals.timeouts > 0 and totals.cleanup > 0 and totals.retries > 0, label .. ": the cases cover every outcome")
end

label = "file store"
run_cases(filestore.open(dir, { fsync = false, clock = flow.time }))
label = "PostgreSQL store"
local conninfo, db = require("pgstore").fresh("engine_random")
local pstore = pgstore.open(conninfo, { clock = flow.time })
run_cases(pstore)
pstore:close()
require("pgstore").drop(db)

for _, n in ipairs(require("flow.sys").readdir(dir .. "/runs") or {}) do os.remove(dir .. "/runs/" .. n) end
os.remove(dir .. "/runs"); os.remove(dir)
t.done()
