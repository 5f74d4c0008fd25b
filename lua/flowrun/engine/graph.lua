-- flowrun.engine.graph — pictures and plans of a workflow: Graphviz dot and Mermaid text of the DAG
-- (coloured by task state when a run is given), and the plan: parameters and tasks in
-- dependency order, nothing started.
local duration = require "flow.duration"

local M = {}

-- fill colours by state (dot and mermaid share them)
M.COLORS = {
  success = "#8fd18f", failed = "#f08080", upstream_failed = "#f5b971", skipped = "#d9d9d9",
  cancelled = "#c9a0dc", running = "#ffe680", up_for_retry = "#ffd0a0", pending = "#ffffff",
}

local function dot_id(s)
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end

local function label(t)
  local parts = { t.name }
  if t.cleanup then parts[#parts + 1] = "(cleanup)"
  elseif t.trigger and t.trigger ~= "all_success" then parts[#parts + 1] = "[" .. t.trigger .. "]" end
  return table.concat(parts, "\n")
end

-- dot(wf, run) -> text. run: a replayed run (flowrun.engine.replay) or nil.
function M.dot(wf, run)
  local out = { "digraph " .. dot_id(wf.name or "workflow") .. " {", "  rankdir=LR;",
    '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];' }
  for _, t in ipairs(wf.order) do
    local attrs = { "label=" .. dot_id(label(t)) }
    local st = run and run.tasks[t.name]
    local state = st and st.state or (run and "pending")
    if state then
      attrs[#attrs + 1] = 'fillcolor="' .. (M.COLORS[state] or "#ffffff") .. '"'
      attrs[#attrs + 1] = "tooltip=" .. dot_id(state)
    end
    if t.cleanup then attrs[#attrs + 1] = 'style="rounded,filled,dashed"' end
    out[#out + 1] = "  " .. dot_id(t.name) .. " [" .. table.concat(attrs, ", ") .. "];"
  end
  for _, t in ipairs(wf.order) do
    for _, dep in ipairs(t.after) do
      out[#out + 1] = "  " .. dot_id(dep) .. " -> " .. dot_id(t.name)
        .. (t.cleanup and " [style=dashed]" or "") .. ";"
    end
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- mermaid ids: letters, digits and _ only
local function mm_id(s)
  return "t_" .. s:gsub("[^%w_]", function(c) return string.format("_%02x", c:byte()) end)
end

function M.mermaid(wf, run)
  local out = { "flowchart LR" }
  for _, t in ipairs(wf.order) do
    local text = label(t):gsub("\n", " "):gsub('"', "#quot;")
    if t.cleanup then
      out[#out + 1] = string.format('  %s(["%s"])', mm_id(t.name), text)
    else
      out[#out + 1] = string.format('  %s["%s"]', mm_id(t.name), text)
    end
  end
  for _, t in ipairs(wf.order) do
    for _, dep in ipairs(t.after) do
      out[#out + 1] = string.format("  %s %s %s", mm_id(dep), t.cleanup and "-.->" or "-->",
        mm_id(t.name))
    end
  end
  if run then
    local used, by_state = {}, {}
    for _, t in ipairs(wf.order) do
      local st = run.tasks[t.name]
      local state = st and st.state or "pending"
      if not by_state[state] then by_state[state] = {}; used[#used + 1] = state end
      table.insert(by_state[state], mm_id(t.name))
    end
    table.sort(used)
    for _, state in ipairs(used) do
      out[#out + 1] = string.format("  classDef %s fill:%s,stroke:#333", state,
        M.COLORS[state] or "#ffffff")
      out[#out + 1] = string.format("  class %s %s", table.concat(by_state[state], ","), state)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

local function show_value(v, secret)
  if secret then return "***" end
  if type(v) == "function" then return "(computed from the run's dates)" end
  if type(v) == "table" then
    local ok, s = pcall(require("json").encode, v)
    return ok and s or tostring(v)
  end
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end
M.show_value = show_value

-- plan(wf, params, sources, dates) -> text: the schedule and the run's dates, the parameters with
-- where each value came from, then the tasks in dependency order with their options.
function M.plan(wf, params, sources, dates)
  local out = { string.format("workflow %s: %d tasks", wf.name, #wf.order) }
  if wf.schedule then
    local sc = wf.schedule
    out[#out + 1] = string.format("schedule: %s in %s%s%s; catchup %s, max_active_runs %d, overlap %s",
      tostring(sc.expr), sc.timezone, sc.start_date and (" from " .. tostring(sc.start_date)) or "",
      sc.end_date and (" until " .. tostring(sc.end_date)) or "", tostring(sc.catchup),
      sc.max_active_runs, sc.overlap)
  end
  if dates then
    out[#out + 1] = string.format("logical date: %s; data interval [%s, %s)%s", dates.logical_date,
      dates.data_interval.start, dates.data_interval["end"], dates.manual and " (a manual run)" or "")
  end
  if #wf.param_order > 0 then
    out[#out + 1] = "parameters:"
    for _, name in ipairs(wf.param_order) do
      local p = wf.params[name]
      out[#out + 1] = string.format("  %-24s = %s  (%s)", name, show_value(params[name], p.secret),
        sources and sources[name] or "unset")
    end
  end
  out[#out + 1] = "tasks, in dependency order:"
  for i, t in ipairs(wf.order) do
    local opts = {}
    if #t.after > 0 then opts[#opts + 1] = "after " .. table.concat(t.after, ", ") end
    if t.cleanup then opts[#opts + 1] = "cleanup"
    elseif t.trigger and t.trigger ~= "all_success" then opts[#opts + 1] = "trigger " .. t.trigger end
    if t.retries and t.retries > 0 then
      local r = "retries " .. t.retries
      if t.retry_delay then r = r .. " every " .. duration.format(t.retry_delay) end
      if t.retry_backoff and t.retry_backoff ~= 1 then r = r .. " x" .. t.retry_backoff end
      if t.max_retry_delay then r = r .. " (max " .. duration.format(t.max_retry_delay) .. ")" end
      if t.jitter then r = r .. " jitter " .. t.jitter end
      opts[#opts + 1] = r
    end
    if t.timeout then opts[#opts + 1] = "timeout " .. duration.format(t.timeout) end
    out[#out + 1] = string.format("  %3d. %s%s", i, t.name,
      #opts > 0 and ("  (" .. table.concat(opts, "; ") .. ")") or "")
  end
  if wf.max_active then out[#out + 1] = "max_active: " .. wf.max_active end
  return table.concat(out, "\n") .. "\n"
end

return M
