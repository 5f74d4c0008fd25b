-- flowrun.cli.view — how a run shows itself: a live view redrawn in place on a terminal ("tty"),
-- timestamped log lines otherwise ("text"), one JSON object per line for machines ("json"),
-- or nothing ("quiet", for tests and benchmarks). Every reporter has the same methods, called
-- by the engine:
--   rep:run_started(info)            info = {run_id, workflow, tasks = {names}, resumed}
--   rep:task(st, event, extra)       event: started, succeeded, failed, retry, skipped,
--                                    upstream_failed, cancelled; st = the engine's task state
--   rep:log(st_or_nil, msg)          ctx.log lines and flow.poll status lines
--   rep:progress(st, pct, msg)       ctx.progress
--   rep:run_finished(summary)        prints the one-screen summary
--   rep:close()
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local duration = require "flow.duration"
local errors = require "flowrun.engine.errors"

local M = {}

local now, mono = flow.time, flow.now

local function iso(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", math.floor((t - s) * 1000))
end
M.iso = iso

local function one_line(s, max)
  s = tostring(s or ""):gsub("[\r\n]+", " ")
  if max and #s > max then s = s:sub(1, max - 3) .. "..." end
  return s
end
M.one_line = one_line

-- "code: message" of any error value, on one line (the first meaningful one of a multi-line
-- message); never raises, always valid UTF-8.
function M.errstr(e)
  if e == nil then return "" end
  return (errors.headline(e))
end

-- The lines of an error after its first (a failed EMR step's FailureDetails and stderr tail),
-- each indented, for the text log and the live view; nil when there are none.
function M.error_detail(e)
  local text = errors.render(e)
  local first_end = text:find("\n", 1, true)
  if not first_end then return nil end
  local rest = text:sub(first_end + 1):gsub("%s+$", "")
  if rest == "" then return nil end
  return "    " .. rest:gsub("\n", "\n    ")
end

local function event_text(st, event, extra)
  extra = extra or {}
  if event == "started" then
    return string.format("started (attempt %d)", st.attempts)
  elseif event == "succeeded" then
    return string.format("succeeded in %s (attempt %d)",
      duration.format(st.finished and st.started and (st.finished - st.started)), st.attempts)
  elseif event == "failed" then
    return string.format("failed after %d attempt(s): %s", st.attempts, M.errstr(st.error))
  elseif event == "retry" then
    return string.format("attempt %d failed: %s; retrying in %s", st.attempts,
      M.errstr(extra.error), duration.format(extra.delay))
  elseif event == "cancelled" then
    return "cancelled"
  elseif event == "skipped" then
    return "skipped (trigger rule " .. (extra.rule or "?") .. ")"
  elseif event == "upstream_failed" then
    return "not run: an upstream task failed (trigger rule " .. (extra.rule or "?") .. ")"
  end
  return event
end

-- The summary table, as lines: one per task (state, attempts, duration, error).
function M.summary_lines(sum, width)
  width = width or 100
  local out = {}
  out[#out + 1] = string.format("run %s (%s): %s in %s%s", sum.run_id, sum.workflow,
    sum.state:upper(), duration.format(sum.duration),
    sum.reason and (" — " .. sum.reason) or "")
  local nw = 4
  for _, t in ipairs(sum.tasks) do if #t.name > nw then nw = #t.name end end
  if nw > 40 then nw = 40 end
  local limit = sum.max_rows or 60
  local rows = sum.tasks
  local shown = 0
  out[#out + 1] = string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s", "TASK", "STATE",
    "ATTEMPTS", "DURATION", "ERROR")
  local counts, more = {}, {}
  for _, t in ipairs(rows) do counts[t.state] = (counts[t.state] or 0) + 1 end
  for _, t in ipairs(rows) do
    -- with many tasks, successes are counted rather than listed
    if #rows <= limit or t.state ~= "success" then
      shown = shown + 1
      if shown > limit then
        out[#out + 1] = string.format("  ... %d more not shown", #rows - shown + 1)
        break
      end
      local fixed = nw + 38
      local err, cut = "", false
      if t.error and t.state ~= "success" then
        err, cut = errors.headline(t.error, math.max(20, width - fixed))
        if cut then more[#more + 1] = t.name end
      end
      out[#out + 1] = string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s", one_line(t.name, nw),
        t.state .. (t.cleanup and "*" or ""), t.attempts > 0 and tostring(t.attempts) or "-",
        t.duration and duration.format(t.duration) or "-", err)
    end
  end
  local keys = {}
  for k in pairs(counts) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = counts[k] .. " " .. k end
  local has_cleanup = false
  for _, t in ipairs(rows) do if t.cleanup then has_cleanup = true end end
  out[#out + 1] = "  " .. table.concat(parts, ", ") .. (has_cleanup and "   (* cleanup task)" or "")
  for _, name in ipairs(more) do
    out[#out + 1] = string.format("  the whole error of %s: flowrun show %s %s", name, sum.run_id, name)
  end
  return out
end

-- ---- text: timestamped log lines ------------------------------------------------------------
local Text = {}
Text.__index = Text

function M.text(out)
  return setmetatable({ out = out or io.stdout }, Text)
end

function Text:line(task, msg)
  self.out:write(iso(now()), " ", task and (task .. ": ") or "", msg, "\n")
  self.out:flush()
end

function Text:run_started(info)
  self:line(nil, string.format("run %s of %s %s (%d tasks%s)", info.run_id, info.workflow,
    info.resumed and "resumed" or "started", #info.tasks,
    info.resumed and string.format(", %d kept from before", info.kept or 0) or ""))
end

function Text:task(st, event, extra)
  self:line(st.name, event_text(st, event, extra))
  local detail = (event == "failed" and M.error_detail(st.error))
    or (event == "retry" and M.error_detail(extra and extra.error))
  if detail then
    self.out:write(detail, "\n")
    self.out:flush()
  end
end

function Text:log(st, msg)
  self:line(st and st.name, one_line(msg))
end

function Text:progress(st, pct, msg)
  self:line(st.name, string.format("%s%s", pct and string.format("%d%% ", math.floor(pct)) or "",
    one_line(msg or "")))
end

function Text:run_finished(sum)
  for _, l in ipairs(M.summary_lines(sum)) do self.out:write(l, "\n") end
  self.out:flush()
end

function Text:close() end

-- ---- json: one object per line ----------------------------------------------------------------
local Json = {}
Json.__index = Json

function M.json(out)
  return setmetatable({ out = out or io.stdout, json = require "json" }, Json)
end

function Json:emit(rec)
  local t = now()
  rec.ts = iso(t)
  rec.time = t
  self.out:write(self.json.encode(rec), "\n")
  self.out:flush()
end

function Json:run_started(info)
  self.run_id = info.run_id
  self:emit { event = info.resumed and "run_resumed" or "run_started", run = info.run_id,
    workflow = info.workflow, tasks = #info.tasks, kept = info.resumed and info.kept or nil }
end

function Json:task(st, event, extra)
  extra = extra or {}
  local rec = { event = "task_" .. event, run = self.run_id, task = st.name,
    attempt = st.attempts, state = st.state }
  if event == "failed" then rec.error = errors.render(st.error) end
  if event == "retry" then rec.error, rec.delay = errors.render(extra.error), extra.delay end
  if event == "succeeded" and st.finished and st.started then
    rec.elapsed = st.finished - st.started
  end
  if extra.rule then rec.rule = extra.rule end
  self:emit(rec)
end

function Json:log(st, msg)
  self:emit { event = "log", run = self.run_id, task = st and st.name, message = tostring(msg) }
end

function Json:progress(st, pct, msg)
  self:emit { event = "progress", run = self.run_id, task = st.name, percent = pct,
    message = msg }
end

function Json:run_finished(sum)
  local tasks = {}
  for _, t in ipairs(sum.tasks) do
    tasks[#tasks + 1] = { name = t.name, state = t.state, attempts = t.attempts,
      duration = t.duration, error = t.error and errors.render(t.error) or nil, cleanup = t.cleanup }
  end
  self:emit { event = "run_finished", run = sum.run_id, workflow = sum.workflow,
    state = sum.state, duration = sum.duration, exit = sum.exit, reason = sum.reason,
    tasks = tasks }
end

function Json:close() end

-- ---- quiet ----------------------------------------------------------------------------------------
local Quiet = {}
Quiet.__index = Quiet
function M.quiet(events)
  return setmetatable({ events = events }, Quiet)
end
function Quiet:run_started(info) if self.events then self.events[#self.events + 1] = { "run", info } end end
function Quiet:task(st, event, extra)
  if self.events then self.events[#self.events + 1] = { event, st.name, st.attempts, extra } end
end
function Quiet:log(st, msg)
  if self.events then self.events[#self.events + 1] = { "log", st and st.name, msg } end
end
function Quiet:progress(st, pct, msg)
  if self.events then self.events[#self.events + 1] = { "progress", st.name, pct, msg } end
end
function Quiet:run_finished(sum) self.summary = sum end
function Quiet:close() end

-- ---- tty: one line per task, redrawn in place ---------------------------------------------------
local Tty = {}
Tty.__index = Tty

local COLOR = {
  pending = "\27[2m", running = "\27[33m", up_for_retry = "\27[35m", success = "\27[32m",
  failed = "\27[31m", upstream_failed = "\27[31;2m", skipped = "\27[2m", cancelled = "\27[35m",
}
local MARK = {
  pending = ".", running = ">", up_for_retry = "~", success = "+", failed = "x",
  upstream_failed = "-", skipped = "-", cancelled = "!",
}

function M.tty(out, o)
  o = o or {}
  local rows = tonumber(os.getenv("LINES") or "")
  local cols = tonumber(os.getenv("COLUMNS") or "")
  if not rows or not cols then
    -- shells do not export LINES/COLUMNS: ask the terminal
    local c, r = sys.winsize(1)
    rows, cols = rows or r, cols or c
  end
  if not rows or rows < 5 then rows = 24 end   -- a pty may say 0 x 0
  if not cols or cols < 40 then cols = 100 end
  return setmetatable({ out = out or io.stdout, drawn = 0, tasks = {}, order = {},
    max_rows = math.max(5, rows - 4), cols = cols, last_draw = -1, dirty = false,
    started = mono() }, Tty)
end

function Tty:run_started(info)
  self.info = info
  self.started = mono()
  self:draw(true)
  -- refresh elapsed times twice a second (not under virtual time, where it would only make
  -- the clock jump for nothing)
  if not core.virtual_time() then
    self.ticker = flow.spawn(function()
      while true do
        flow.sleep(0.5)
        self:draw(true)
      end
    end)
  end
end

function Tty:set_tasks(states, order)
  self.states, self.order = states, order
end

function Tty:clear()
  if self.drawn > 0 then
    self.out:write(string.format("\27[%dA\27[J", self.drawn))
    self.drawn = 0
  end
end

function Tty:lines()
  local out = {}
  local t = mono()
  local counts, running = {}, 0
  local order = self.order or {}
  for _, st in ipairs(order) do
    counts[st.state] = (counts[st.state] or 0) + 1
  end
  local show = {}
  if #order <= self.max_rows then
    show = order
  else
    for _, st in ipairs(order) do
      if st.state == "running" or st.state == "up_for_retry" or st.state == "failed" then
        if #show < self.max_rows - 1 then show[#show + 1] = st end
      end
    end
  end
  local nw = 4
  for _, st in ipairs(show) do if #st.name > nw then nw = math.min(#st.name, 30) end end
  for _, st in ipairs(show) do
    if st.state == "running" then running = running + 1 end
    local el = st.started and ((st.finished or t) - st.started) or nil
    local msg = st.last_msg or (st.error and M.errstr(st.error)) or ""
    if st.pct then msg = string.format("%d%% %s", math.floor(st.pct), msg) end
    local line = string.format("%s%s %-" .. nw .. "s %-15s #%d %8s  %s\27[0m", COLOR[st.state] or "",
      MARK[st.state] or "?", one_line(st.name, nw), st.state, st.attempts,
      el and duration.format(el) or "", msg)
    out[#out + 1] = one_line(line, self.cols + 12)
  end
  local parts = {}
  for _, k in ipairs { "running", "up_for_retry", "pending", "success", "failed",
      "upstream_failed", "skipped", "cancelled" } do
    if counts[k] then parts[#parts + 1] = counts[k] .. " " .. k end
  end
  out[#out + 1] = string.format("\27[1m%s %s\27[0m  %s  %s",
    self.info and self.info.workflow or "", self.info and self.info.run_id or "",
    duration.format(t - self.started), table.concat(parts, ", "))
  return out
end

function Tty:draw(force)
  local t = mono()
  if not force and t - self.last_draw < 0.05 then
    self.dirty = true
    return
  end
  self.last_draw, self.dirty = t, false
  local lines = self:lines()
  self:clear()
  for _, l in ipairs(lines) do self.out:write("\27[2K", l, "\n") end
  self.drawn = #lines
  self.out:flush()
end

function Tty:task(st, event, extra)
  if event == "started" then st.last_msg, st.pct = nil, nil end
  if event == "failed" or event == "retry" then
    local detail = M.error_detail(event == "failed" and st.error or (extra and extra.error))
    self:log(st, event_text(st, event, extra), detail)
  else
    self:draw(event == "started" or event == "succeeded")
  end
end

function Tty:log(st, msg, detail)
  self:clear()
  self.out:write(os.date("%H:%M:%S", math.floor(now())), " ", st and (st.name .. ": ") or "",
    one_line(msg), "\n")
  if detail then self.out:write(detail, "\n") end
  if st then st.last_msg = one_line(msg, 80) end
  self:draw(true)
end

function Tty:progress(st, pct, msg)
  st.pct, st.last_msg = pct, msg and one_line(msg, 80) or st.last_msg
  self:draw(false)
end

function Tty:run_finished(sum)
  if self.ticker then self.ticker:cancel() self.ticker = nil end
  self:draw(true)
  self.drawn = 0
  for _, l in ipairs(M.summary_lines(sum, self.cols)) do self.out:write(l, "\n") end
  self.out:flush()
end

function Tty:close()
  if self.ticker then self.ticker:cancel() self.ticker = nil end
end

-- Is stdout a terminal one can draw on?
function M.stdout_is_tty()
  return sys.isatty(1) and os.getenv("TERM") ~= "dumb"
end

-- new(format, out) with format "auto" | "tty" | "text" | "json" | "quiet".
function M.new(format, out)
  if format == nil or format == "auto" then
    format = (out == nil or out == io.stdout) and M.stdout_is_tty() and "tty" or "text"
  end
  if format == "tty" then return M.tty(out), "tty" end
  if format == "json" then return M.json(out), "json" end
  if format == "quiet" then return M.quiet(), "quiet" end
  if format == "text" then return M.text(out), "text" end
  return nil, "unknown log format " .. tostring(format) .. " (expected text, json or tty)"
end

return M
