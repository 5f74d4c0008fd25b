-- flowrun.engine.rules — what decides a task's fate: the trigger rules, evaluated once every
-- upstream is final, and what a cleanup task has undone (for resume).
local M = {}

M.FINAL = { success = true, failed = true, upstream_failed = true, skipped = true,
  cancelled = true }

local BAD = { failed = true, upstream_failed = true, cancelled = true }

-- evaluate(rule, upstream_states) -> "run" | "skipped" | "upstream_failed"
function M.evaluate(rule, ups)
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

-- undone_by_cleanup(wf, prev, must_run) -> set of task names to run again because a cleanup
-- task reversed what they made. A cleanup task declares it with `undoes = {names}`
-- (terminate_cluster undoes create_cluster). A cleanup waits for every task that uses what it
-- tears down, so the tasks "inside" it are those downstream of an undone task U and upstream of
-- the cleanup: U runs again when one of them still has to run (a step interrupted by Ctrl-C needs
-- a cluster again), and not when only tasks outside it do (a verification that failed after the
-- cluster was torn down needs no cluster). must_run: set of names that will run (not kept);
-- grows with what is undone (and everything downstream of it) until nothing changes.
function M.undone_by_cleanup(wf, prev, must_run)
  local by = wf.by_name
  local function closure(from, step)
    local seen, stack = {}, { from }
    while #stack > 0 do
      local n = table.remove(stack)
      for _, m in ipairs(step(by[n])) do
        if not seen[m] then seen[m] = true; stack[#stack + 1] = m end
      end
    end
    return seen
  end
  local function downs(t) return t.downstream end
  local function ups(t) return t.after end
  local undone = {}
  local changed = true
  while changed do
    changed = false
    for _, c in ipairs(wf.order) do
      local crec = c.undoes and prev.tasks[c.name]
      if crec and crec.state == "success" then
        local inside_c = closure(c.name, ups)
        for _, u in ipairs(c.undoes) do
          local urec = prev.tasks[u]
          if not undone[u] and urec and urec.state == "success"
              and (crec.finished or 0) >= (urec.finished or 0) then
            local after_u = closure(u, downs)
            for n in pairs(after_u) do
              if inside_c[n] and must_run[n] then
                undone[u] = true
                changed = true
                must_run[u] = true
                for m in pairs(after_u) do must_run[m] = true end
                break
              end
            end
          end
        end
      end
    end
  end
  return undone
end

return M
