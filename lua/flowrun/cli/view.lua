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
local context = require "flow.context"
local duration = require "flow.duration"
local errors = require "flowrun.engine.errors"

local M = {}

local now, mono = flow.time, flow.now

local function iso(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", math.floor((t - s) * 1000))
end
M.iso = iso

-- Terminal columns a UTF-8 string takes (wide characters 2, combining marks 0).
local width = sys.width
M.width = width

-- clean(s) -> s as one displayable line: valid UTF-8, terminal escape sequences dropped (a
-- message may carry a program's colours), line breaks and tabs as spaces, any other control
-- character as "?" — a stray carriage return or cursor movement in a message would wreck the
-- view's idea of where it is.
local function clean(s)
  s = errors.safe_tostring(s)
  if not s:find("[%c\127\194]") then return s end
  s = s:gsub("\27%[[0-?]*[ -/]*[@-~]", "")          -- CSI: colours, cursor movement
    :gsub("\27%][^\7\27]*\7", ""):gsub("\27%][^\7\27]*\27\\", "") -- OSC: titles, links
    :gsub("\27[@-_]", "")                           -- other two-byte escapes
    :gsub("\r?\n", " "):gsub("[\r\t]", " ")
    :gsub("[%c\127]", "?"):gsub("\194[\128-\159]", "?") -- C0, DEL, C1
  return s
end
M.clean = clean

-- fit(s, w) -> s cut to at most w columns ("..." marks a cut), and the columns it takes.
local function fit(s, w)
  if w <= 0 then return "", 0 end
  local cols = width(s)
  if cols <= w then return s, cols end
  local mark = w >= 6 and "..." or ""
  local _, len = width(s, w - #mark)
  s = s:sub(1, len) .. mark
  return s, width(s)
end
M.fit = fit

-- one_line(s [, max]) -> s on one line, cut to max columns.
local function one_line(s, max)
  s = clean(s or "")
  if max then s = fit(s, max) end
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

-- The summary table, as lines fitting `width` columns (default 100): one per task (state,
-- attempts, duration, the first line of its error), then the counts, then where to read the
-- errors that did not fit. Narrower than a row with room for an error, the error goes on a line
-- of its own under its task.
function M.summary_lines(sum, width_)
  width_ = math.max(width_ or 100, 20)
  local out = {}
  out[#out + 1] = string.format("run %s (%s): %s in %s%s", sum.run_id, sum.workflow,
    sum.state:upper(), duration.format(sum.duration),
    sum.reason and (" — " .. clean(sum.reason)) or "")
  local nw = 4
  for _, t in ipairs(sum.tasks) do if #t.name > nw then nw = #t.name end end
  -- "  NAME  STATE(16)ATTEMPTS(8) DURATION(9)  ERROR": nw + 40 columns before the error, which
  -- should keep at least 20 (and 40 before a long name gets all of its own)
  nw = math.min(nw, 40, math.max(16, width_ - 80))
  local wide = width_ - (nw + 40) >= 20
  if not wide then nw = math.max(4, math.min(nw, width_ - 30)) end
  local function row(name, state, attempts, dur, err)
    if wide then
      return string.format("  %-" .. nw .. "s  %-15s %8s %9s  %s", name, state, attempts, dur, err)
    end
    return string.format("  %-" .. nw .. "s  %-16s %9s", name, state, dur)
  end
  local limit = sum.max_rows or 60
  local rows = sum.tasks
  local shown = 0
  out[#out + 1] = (row("TASK", "STATE", "ATTEMPTS", "DURATION", "ERROR"):gsub("%s+$", ""))
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
      local err, cut = "", false
      if t.error and t.state ~= "success" then
        local room = wide and (width_ - (nw + 40)) or (width_ - 6)
        local head, multi = errors.headline(t.error)
        local fitted = fit(clean(head), room)
        err, cut = fitted, multi or fitted ~= clean(head)
        if cut then more[#more + 1] = t.name end
      end
      out[#out + 1] = (row(fit(t.name, nw), t.state .. (t.cleanup and "*" or ""),
        t.attempts > 0 and tostring(t.attempts) or "-",
        t.duration and duration.format(t.duration) or "-", err):gsub("%s+$", ""))
      if not wide and err ~= "" then out[#out + 1] = "      " .. err end
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
-- The live view is a block at the bottom of the output: a row per task (as many as the screen
-- holds), then a footer; log lines are printed above it. A redraw moves the cursor up over the
-- block, erases its lines and writes the block again, so the view is exactly as
-- correct as its idea of how many screen lines the block takes. Hence:
--   * every row is cut to the terminal's width less one column, measured in display columns
--     (sys.width: libc's wcwidth, so wide characters count 2 and combining marks 0; colour codes
--     are added after cutting and never counted), so a row never wraps, and never leaves the
--     cursor in the last column where terminals disagree about what comes next;
--   * the size is asked of the terminal (TIOCGWINSZ) at each redraw, and when the width shrank
--     since the block was drawn, its rows are counted as the terminal has re-wrapped them (tmux,
--     VTE, kitty, iTerm2, Windows Terminal re-wrap; xterm truncates instead, and there a few
--     lines above the block are erased with it rather than a stale row left behind);
--   * each redraw (erase, the log lines since the last one, the block) is a single write, so
--     nothing of the view lands between half-drawn rows; `print` in a task goes through it too.
-- The escape codes are written by hand: cursor up and down (CUU, CUD), erase in line (EL) and
-- colours (SGR) from ECMA-48, and DEC's cursor hide/show, which every terminal since the VT100 understands.
-- terminfo (libncurses) would only look the same strings up, for a C dependency; curses proper
-- would own the whole screen, and the log lines and the summary must stay in the scrollback;
-- lua-term writes the same codes and measures nothing.
local Tty = {}
Tty.__index = Tty

local CSI = "\27["
local HIDE, SHOW = "\27[?25l", "\27[?25h"
local SGR = {
  pending = "2", running = "33", up_for_retry = "35", success = "32", failed = "31",
  upstream_failed = "31;2", skipped = "2", cancelled = "35",
}
local MARK = {
  pending = ".", running = ">", up_for_retry = "~", success = "+", failed = "x",
  upstream_failed = "-", skipped = "-", cancelled = "!",
}
-- which tasks keep a row when there are more tasks than rows
local PRIORITY = { running = 1, up_for_retry = 1, failed = 2, cancelled = 3, pending = 4 }

local function ask_terminal(fd)
  local c, r = sys.winsize(fd)
  return c, r
end

-- M.tty(out, o): o.size = function() -> cols, rows (default: ask the terminal on fd 1, then
-- COLUMNS/LINES, then 80x24); o.color (default: unless NO_COLOR is set).
function M.tty(out, o)
  o = o or {}
  local color = o.color
  if color == nil then color = (os.getenv("NO_COLOR") or "") == "" end
  return setmetatable({ out = out or io.stdout, size = o.size or function() return ask_terminal(1) end,
    color = color, block = {}, block_cols = 0, notes = {}, states = {}, order = {},
    last_draw = -1, dirty = false, started = mono() }, Tty)
end

-- The terminal's size now: cols, rows.
function Tty:measure()
  local c, r = self.size()
  if not c or c < 1 then c = tonumber(os.getenv("COLUMNS") or "") end
  if not r or r < 1 then r = tonumber(os.getenv("LINES") or "") end
  if not c or c < 1 then c = 80 end
  if not r or r < 1 then r = 24 end
  return math.floor(c), math.floor(r)
end

-- How many screen lines a row of the block takes now: one, unless the terminal narrowed since
-- it was drawn and re-wrapped it (as tmux does: a character that no longer fits, wide ones
-- included, starts the next line).
local function screen_lines(plain, cols, drawn_cols)
  if cols >= drawn_cols then return 1 end
  local n = 1
  while true do
    local w, len = width(plain, cols)
    if w <= cols or len == 0 then return n end
    plain = plain:sub(len + 1)
    n = n + 1
  end
end

function Tty:set_tasks(states, order)
  self.states, self.order = states, order
end

-- The escape codes that erase the block from the screen, leaving the cursor where it began.
-- Line by line (erase in line, cursor down), not "erase to the end of the screen": from the top
-- left corner that is clearing the whole screen, which tmux (scroll-on-clear) and some other
-- terminals answer by pushing the screen into the scrollback, where each redraw would leave a
-- copy of the view.
function Tty:erase(cols)
  local n = #self.block
  if n == 0 then return "" end
  local h = 0
  for i = 1, n do h = h + screen_lines(self.block[i], cols, self.block_cols) end
  self.block = {}
  local up = CSI .. h .. "A"
  return "\r" .. up .. string.rep(CSI .. "2K" .. CSI .. "B", h) .. up
end

function Tty:paint(sgr, s)
  if not self.color or not sgr or s == "" then return s end
  return CSI .. sgr .. "m" .. s .. CSI .. "0m"
end

-- The rows of the view for a terminal of cols x rows: {text = with colours, plain = without},
-- each plain text at most cols - 1 columns, at most rows - 1 of them (the cursor's line below).
function Tty:render(cols, rows)
  local avail = math.max(cols - 1, 1)
  local order = self.order or {}
  local t = mono()
  local counts = {}
  for _, st in ipairs(order) do counts[st.state] = (counts[st.state] or 0) + 1 end
  local room = math.max(rows - 2, 0) -- task rows: the footer and the cursor's line take two
  local show = order
  local hidden = 0
  if #order > room then
    local idx = {}
    for i, st in ipairs(order) do idx[i] = i end
    table.sort(idx, function(a, b)
      local pa, pb = PRIORITY[order[a].state] or 9, PRIORITY[order[b].state] or 9
      if pa ~= pb then return pa < pb end
      return a < b
    end)
    local keep = math.max(room - 1, 0) -- one row says how many are not shown
    local chosen = {}
    for i = 1, math.min(keep, #idx) do chosen[#chosen + 1] = idx[i] end
    table.sort(chosen)
    show = {}
    for _, i in ipairs(chosen) do show[#show + 1] = order[i] end
    hidden = #order - #show
  end

  -- columns: mark, name, [state], [#attempt], elapsed, message — the optional ones only when
  -- the terminal is wide enough to leave the message some room
  local show_state, show_attempt = avail >= 72, avail >= 56
  local nw = 4
  for _, st in ipairs(show) do nw = math.max(nw, width(st.name)) end
  nw = math.min(nw, math.max(8, math.floor(avail * 0.3)), 40)
  local lines = {}
  for _, st in ipairs(show) do
    local name, namew = fit(st.name, nw)
    local head = (MARK[st.state] or "?") .. " " .. name .. string.rep(" ", nw - namew)
    if show_state then head = head .. " " .. string.format("%-15s", st.state) end
    local el = st.started and ((st.finished or t) - st.started) or nil
    local tail = ""
    if show_attempt then tail = string.format("%-3s ", st.attempts > 0 and ("#" .. st.attempts) or "") end
    tail = tail .. string.format("%7s", el and duration.format(el) or "")
    local msg = self.notes[st.name]
    if not msg and st.error and (st.state == "failed" or st.state == "up_for_retry") then
      msg = clean((errors.headline(st.error)))
    end
    msg = msg or ""
    if st.pct and st.state == "running" then msg = string.format("%d%% %s", math.floor(st.pct), msg) end
    local plain = head .. " " .. tail
    local used = width(plain)
    local rest = ""
    if msg ~= "" and avail - used - 2 >= 4 then rest = "  " .. fit(msg, avail - used - 2) end
    if width(plain) > avail then plain = fit(plain, avail) end -- a terminal narrower than 20
    -- what is written is exactly the plain text plus colour codes: a trailing space written is
    -- a cell the terminal re-wraps like any other
    plain = (plain .. rest):gsub("%s+$", "")
    local k = math.min(#head, #plain)
    lines[#lines + 1] = { text = self:paint(SGR[st.state], plain:sub(1, k)) .. plain:sub(k + 1),
      plain = plain }
  end
  if hidden > 0 then
    local s = fit(string.format("  ... %d more task%s", hidden, hidden > 1 and "s" or ""), avail)
    lines[#lines + 1] = { text = self:paint("2", s), plain = s }
  end

  -- footer: workflow run-id  elapsed  counts, cut from the workflow's end when narrow
  local parts = {}
  for _, k in ipairs { "running", "up_for_retry", "pending", "success", "failed",
      "upstream_failed", "skipped", "cancelled" } do
    if counts[k] then parts[#parts + 1] = counts[k] .. " " .. k end
  end
  local info = self.info or {}
  local tailf = duration.format(t - self.started) .. "  " .. table.concat(parts, ", ")
  local who = clean(((info.workflow or "") .. " " .. (info.run_id or "")):match("^%s*(.-)%s*$"))
  if width(who) + 2 + width(tailf) > avail then who = clean(info.workflow or "") end
  local room_who = avail - 2 - width(tailf)
  if room_who < 8 then
    who = ""
    tailf = fit(tailf, avail)
  else
    who = fit(who, room_who)
  end
  lines[#lines + 1] = {
    text = (who ~= "" and (self:paint("1", who) .. "  ") or "") .. tailf,
    plain = (who ~= "" and (who .. "  ") or "") .. tailf,
  }
  if #lines > rows - 1 then -- a screen of one or two lines: the footer alone
    lines = { lines[#lines] }
  end
  return lines
end

-- One write: hide the cursor, erase the block, `before` (log lines, each ending in a newline),
-- the block again unless the run is over, show the cursor.
function Tty:emit(before)
  local cols, rows = self:measure()
  local out = { HIDE, self:erase(cols) }
  if before then out[#out + 1] = before end
  if not self.finished then
    local lines = self:render(cols, rows)
    for i, l in ipairs(lines) do
      out[#out + 1] = l.text
      out[#out + 1] = "\n"
      self.block[i] = l.plain
    end
    self.block_cols = cols
  end
  out[#out + 1] = SHOW
  self.out:write(table.concat(out))
  self.out:flush()
end

function Tty:draw(force)
  local t = mono()
  if not force and t - self.last_draw < 0.05 then
    self.dirty = true
    return
  end
  self.last_draw, self.dirty = t, false
  self:emit(nil)
end

-- print(...) in a task while the view is on: a log line of the view, not a line of its own
-- between the view's rows.
function Tty:hook_print()
  local view, orig = self, _G.print
  self.orig_print = orig
  self.print_hook = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = errors.safe_tostring((select(i, ...))) end
    local ctx = context.current()
    view:log(ctx and view.states[ctx.task] or nil, table.concat(parts, "\t"))
  end
  _G.print = self.print_hook
end

function Tty:unhook_print()
  if self.orig_print and _G.print == self.print_hook then _G.print = self.orig_print end
  self.orig_print = nil
end

function Tty:run_started(info)
  self.info = info
  self.started = mono()
  if not self.order or #self.order == 0 then self.order = info.tasks or {} end
  -- one write(2) per redraw, not one per row (a terminal's stdout is line-buffered)
  if io.type(self.out) == "file" then self.out:setvbuf("full") end
  self:hook_print()
  self:draw(true)
  -- refresh elapsed times (and pick up a resized terminal) twice a second, and draw what a
  -- burst of progress left waiting within 50 ms; not under virtual time, where it would only
  -- make the clock jump for nothing
  if not core.virtual_time() then
    self.ticker = flow.spawn(function()
      while true do
        flow.sleep(0.05)
        if self.dirty or mono() - self.last_draw >= 0.5 then self:draw(true) end
      end
    end)
  end
end

function Tty:task(st, event, extra)
  if event == "started" then self.notes[st.name] = nil end
  if event == "failed" or event == "retry" then
    local detail = M.error_detail(event == "failed" and st.error or (extra and extra.error))
    self:log(st, event_text(st, event, extra), detail)
  else
    self:draw(event == "started" or event == "succeeded")
  end
end

-- A log line above the view: its first line after the time and task, the others indented.
function Tty:log(st, msg, detail)
  local lines = {}
  for l in (errors.safe_tostring(msg) .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = clean(l) end
  while #lines > 1 and lines[#lines]:match("^%s*$") do lines[#lines] = nil end
  local text = { os.date("%H:%M:%S", math.floor(now())), " ", st and (st.name .. ": ") or "",
    lines[1] or "", "\n" }
  for i = 2, #lines do text[#text + 1] = "    " .. lines[i] .. "\n" end
  if detail then
    for l in (detail .. "\n"):gmatch("(.-)\r?\n") do text[#text + 1] = clean(l) .. "\n" end
  end
  if st then
    for _, l in ipairs(lines) do
      if l:find("%S") then self.notes[st.name] = l break end
    end
  end
  self.last_draw, self.dirty = mono(), false
  self:emit(table.concat(text))
end

function Tty:progress(st, pct, msg)
  if msg then self.notes[st.name] = clean((tostring(msg):match("^%s*([^\n]*)"))) end
  self:draw(false)
end

function Tty:run_finished(sum)
  if self.ticker then self.ticker:cancel() self.ticker = nil end
  -- the view gives way to the summary, which has every task
  self.finished = true
  local cols = self:measure()
  local text = {}
  for _, l in ipairs(M.summary_lines(sum, cols - 1)) do text[#text + 1] = l .. "\n" end
  self:emit(table.concat(text))
end

function Tty:close()
  if self.ticker then self.ticker:cancel() self.ticker = nil end
  self:unhook_print()
  self.out:flush()
  if io.type(self.out) == "file" then self.out:setvbuf("line") end
end

-- Is stdout a terminal one can draw on?
function M.stdout_is_tty()
  return sys.isatty(1) and os.getenv("TERM") ~= "dumb"
end

-- Does --debug output (written by C on stderr, line by line) go to the same terminal? Then the
-- live view would be torn by it: lines of text are what works.
local function debug_on_terminal()
  if not sys.isatty(2) then return false end
  local ok, log = pcall(require, "log")
  if not ok then return false end
  for _, c in ipairs { "aws", "http", "pg", "sched" } do
    local cok, on = pcall(log.debug_enabled, c)
    if cok and on then return true end
  end
  return false
end

-- new(format, out) with format "auto" | "tty" | "text" | "json" | "quiet". "auto": the live view
-- when stdout is a terminal (and --debug does not write on it), else text lines.
function M.new(format, out)
  if format == nil or format == "auto" then
    format = (out == nil or out == io.stdout) and M.stdout_is_tty() and not debug_on_terminal()
      and "tty" or "text"
  end
  if format == "tty" then return M.tty(out), "tty" end
  if format == "json" then return M.json(out), "json" end
  if format == "quiet" then return M.quiet(), "quiet" end
  if format == "text" then return M.text(out), "text" end
  return nil, "unknown log format " .. tostring(format) .. " (expected text, json or tty)"
end

return M
