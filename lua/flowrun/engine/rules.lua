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

-- undone_by_cleanup(wf, prev) -> set of task names whose effects a cleanup task reversed after
-- they succeeded in the replayed run `prev`: a cleanup task declares what it reverses with
-- `undoes = {names}` (terminate_cluster undoes create_cluster). Resuming runs those tasks again
-- (and, through the keep rule, everything downstream of them), instead of handing later tasks
-- a result that points at something that no longer exists.
function M.undone_by_cleanup(wf, prev)
  local undone = {}
  for _, t in ipairs(wf.order) do
    local c = t.undoes and prev.tasks[t.name]
    if c and c.state == "success" then
      for _, name in ipairs(t.undoes) do
        local u = prev.tasks[name]
        if u and u.state == "success" and (c.finished or 0) >= (u.finished or 0) then
          undone[name] = true
        end
      end
    end
  end
  return undone
end

return M
