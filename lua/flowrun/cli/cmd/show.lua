-- flowrun show RUN_ID [TASK] [--json]: a run's tasks (state, attempts, duration, the first line
-- of an error or the result); with TASK, that task's attempts and its whole error, lines intact.
local json = require "json"
local duration = require "flow.duration"
local settings = require "flowrun.cli.settings"
local common = require "flowrun.cli.common"
local view = require "flowrun.cli.view"
local graph = require "flowrun.engine.graph"
local errors = require "flowrun.engine.errors"

local M = {}

local function show_json(r)
  local tasks = {}
  for _, name in ipairs(r.task_order) do
    local t = r.tasks[name]
    tasks[#tasks + 1] = { name = name, state = t.state, attempts = t.attempts,
      duration = t.duration, error = t.error, result = t.result,
      history = t.history and json.array(t.history) or nil }
  end
  io.stdout:write(json.encode { id = r.id, workflow = r.workflow, file = r.file,
    state = r.state, exit = r.exit, reason = r.reason, started = r.started,
    finished = r.finished, params = r.params, tasks = json.array(tasks), resumed = r.resumed,
    truncated = r.truncated or nil, owner = r.owner, kind = r.kind,
    cancel_requested = r.cancel_requested or nil, logical_date = r.logical_date,
    data_interval = r.data_interval and json.array(r.data_interval) or nil }, "\n")
end

local function indent(text, pad)
  return pad .. tostring(text):gsub("\n", "\n" .. pad)
end

-- One task, whole: every attempt and the complete error text.
local function show_task(r, name)
  local t = r.tasks[name]
  if not t then
    common.eprint("run ", r.id, " has no task ", name, " (tasks: ", table.concat(r.task_order, ", "), ")")
    return 2
  end
  local w = io.stdout
  w:write("task ", name, " of run ", r.id, "\n")
  w:write("  state     ", t.state, "   attempts ", t.attempts > 0 and tostring(t.attempts) or "-",
    "   duration ", t.duration and duration.format(t.duration) or "-", "\n")
  for _, h in ipairs(t.history or {}) do
    w:write("  attempt ", tostring(h.attempt or "?"), h.delay and (" (retried after "
      .. duration.format(h.delay) .. ")") or "", ":\n", indent(errors.render(h.error), "    "), "\n")
  end
  if t.error and t.state ~= "success" and #(t.history or {}) == 0 then
    w:write("  error:\n", indent(errors.render(t.error), "    "), "\n")
  end
  if t.result ~= nil then
    local ok, s = pcall(json.encode, t.result, { pretty = true })
    w:write("  result:\n", indent(ok and s or tostring(t.result), "    "), "\n")
  end
  return 0
end

function M.run(opts)
  if opts.server or os.getenv("FLOWRUN_SERVER") then return require("flowrun.cli.remote").show(opts) end
  local s, serr = settings.resolve(opts)
  if not s then common.eprint(serr) return 2 end
  local store, r = common.find_run(s, opts.run_id)
  if not store then return r end
  return M.print(r, opts)
end

-- print(r, opts) -> exit code: a replayed run (or one rebuilt from a server's answer) as
-- `show` prints it (opts.json, opts.task).
function M.print(r, opts)
  if opts.json then show_json(r) return 0 end
  if opts.task then return show_task(r, opts.task) end
  local w = io.stdout
  w:write("run ", r.id, "\n")
  w:write("  workflow  ", tostring(r.workflow), r.file and ("  (" .. r.file .. ")") or "", "\n")
  w:write("  state     ", r.state, r.exit and (" (exit " .. r.exit .. ")") or "",
    r.reason and (": " .. r.reason) or "", "\n")
  if r.owner and r.state == "running" then w:write("  held by   ", r.owner, "\n") end
  if r.logical_date and not r.manual then
    -- a scheduled or backfill run: the interval it covers (UTC; its workflow's zone is in its
    -- tasks' ctx.logical_date)
    local di = r.data_interval
    w:write("  logical   ", os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(r.logical_date)),
      di and ("   data interval " .. os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(di[1])) .. " .. "
        .. os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(di[2]))) or "",
      r.kind and ("   (" .. r.kind .. ")") or "", "\n")
  end
  if r.cancel_requested and r.state ~= "cancelled" then w:write("  cancel    requested\n") end
  w:write("  started   ", os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(r.started)),
    "   duration ", duration.format((r.finished or r.last_t) - r.started),
    r.resumed > 0 and ("   resumed " .. r.resumed .. "x") or "", "\n")
  local keys = {}
  for k in pairs(r.params) do keys[#keys + 1] = k end
  table.sort(keys)
  if #keys > 0 or r.secret_params then w:write("  params\n") end
  for _, k in ipairs(keys) do w:write("    ", k, " = ", graph.show_value(r.params[k]), "\n") end
  for _, k in ipairs(r.secret_params or {}) do w:write("    ", k, " = *** (secret)\n") end
  if r.truncated then w:write("  (the journal's last line was cut by a crash and ignored)\n") end
  local nw = 4
  for _, name in ipairs(r.task_order) do if #name > nw then nw = math.min(#name, 40) end end
  w:write(string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s\n", "TASK", "STATE", "ATTEMPTS",
    "DURATION", "ERROR / RESULT"))
  local more = {}
  for _, name in ipairs(r.task_order) do
    local t = r.tasks[name]
    local detail = ""
    if t.error and t.state ~= "success" then
      local line, cut = errors.headline(t.error, 120)
      detail = line
      if cut then more[#more + 1] = name end
    elseif t.result ~= nil then
      local ok, js = pcall(json.encode, t.result)
      detail = "=> " .. (ok and js or tostring(t.result))
    end
    w:write(string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s\n", name, t.state,
      t.attempts > 0 and tostring(t.attempts) or "-", t.duration and duration.format(t.duration) or "-",
      view.one_line(detail, 120)))
    -- earlier failed attempts, when there were several
    local hist = t.history or {}
    if #hist > 1 or (#hist == 1 and t.state == "success") then
      for _, h in ipairs(hist) do
        w:write(string.format("  %-" .. nw .. "s    attempt %s: %s%s\n", "", tostring(h.attempt or "?"),
          (errors.headline(h.error, 100)),
          h.delay and (" (retried after " .. duration.format(h.delay) .. ")") or ""))
      end
    end
  end
  for _, name in ipairs(more) do
    w:write("  the whole error of ", name, ": flowrun show ", r.id, " ", name, "\n")
  end
  return 0
end

return M
