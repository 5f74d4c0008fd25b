-- flowrun.cli.view's live view, without a terminal: display widths (sys.width), cleaning of
-- messages, rows that fit every width from 20 to 200 columns (measured in display columns,
-- colour codes not counted), how many screen lines the block takes once a terminal narrowed
-- and re-wrapped it, the summary at every width, print() in a task going through the view.
-- tests/py/test_view_tty.py drives the same view in a real terminal emulator (tmux).
local t = require "tap"
local flow = require "flow"
local sys = require "flow.sys"
local view = require "flowrun.cli.view"

-- an io-like sink
local function sink()
  local s = { parts = {} }
  function s:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = select(i, ...) end
    return self
  end
  function s:flush() end
  function s:text() return table.concat(self.parts) end
  return s
end

local function strip(s) return (s:gsub("\27%[[%d;?]*[A-Za-z]", ""):gsub("\r", "")) end

t.test("sys.width: display columns of UTF-8 text", function()
  t.eq(sys.width("abc"), 3, "ASCII: one column each")
  t.eq(sys.width("数据仓库"), 8, "CJK: two columns each")
  t.eq(sys.width("テーブル"), 8, "katakana and the long vowel mark: two each")
  t.eq(sys.width("🚀"), 2, "an emoji: two")
  t.eq(sys.width("e\u{301}"), 1, "a combining mark: none")
  t.eq(sys.width("✔"), 1, "a neutral symbol: one")
  t.eq(sys.width("\xff\xfe"), 2, "an invalid byte: one each")
  t.eq(sys.width(""), 0, "empty")
  local w, len = sys.width("数据", 3)
  t.eq({ w, len }, { 4, 3 }, "max 3: the first wide character fits (3 bytes), not the second")
  w, len = sys.width("a\u{301}\u{301}bc", 2)
  t.eq(len, 6, "zero-width marks stay with the character before them")
  w, len = sys.width("🚀x", 1)
  t.eq(len, 0, "a wide character never cut in half")
  t.eq(select(2, sys.width("abc", 10)), 3, "all of it when it fits")
  t.raises(function() sys.width({}) end, nil, "not a string: raises")
end)

t.test("clean: one displayable line", function()
  t.eq(view.clean("\27[31mred\27[0m and \27]0;title\7plain"), "red and plain", "colours and OSC dropped")
  t.eq(view.clean("a\nb\r\nc\td"), "a b c d", "line breaks and tabs as spaces")
  t.eq(view.clean("bell\7 bs\8 del\127"), "bell? bs? del?", "other control characters shown as ?")
  t.eq(view.clean("c1 \u{85}x"), "c1 ?x", "C1 controls too")
  t.eq(view.clean("bad \xff byte"), "bad \\xFF byte", "invalid UTF-8 shown as \\xNN")
  t.eq(view.fit("数据仓库数据仓库", 9), "数据仓...", "fit: cut in display columns, marked")
  t.eq(select(2, view.fit("数据仓库数据仓库", 9)), 9, "fit: and says how wide it is")
end)

local NAMES = { "extract_customers_from_the_source_database_with_a_very_long_name", "short",
  "load", "t4", "t5" }

local function fake_run(n)
  local order, states = {}, {}
  for i = 1, n do
    local name = NAMES[i] or ("task_" .. i)
    local st = { name = name, state = "pending", attempts = 0 }
    if i == 1 then st.state, st.attempts, st.started, st.pct = "running", 1, flow.now() - 3, 45 end
    if i == 2 then st.state, st.attempts, st.started, st.pct = "running", 2, flow.now() - 1, 60 end
    if i == 3 then
      st.state, st.attempts, st.started, st.finished = "failed", 3, flow.now() - 5, flow.now()
      st.error = flow.error("emr.step_failed", "EMR step 数据 🚀 failed\nTraceback: line 2")
    end
    order[i], states[name] = st, st
  end
  return states, order
end

local function new_view(out, size)
  local v = view.tty(out, { size = function() return size[1], size[2] end, color = true })
  return v
end

t.test("rows fit every width, colour codes not counted", function()
  local bad = {}
  for cols = 20, 200 do
    local size = { cols, 30 }
    local v = new_view(sink(), size)
    local states, order = fake_run(5)
    v:set_tasks(states, order)
    v.info = { workflow = "wide_view_workflow_with_a_long_name", run_id = "20250101T000000-abcd" }
    v.notes[order[1].name] = "copying 数据仓库 テーブル 🚀 rows of a very long progress message that is wider than any terminal"
    v.notes[order[2].name] = "処理中 ✔ é́ combining"
    for _, l in ipairs(v:render(cols, 30)) do
      if sys.width(l.plain) > cols - 1 then bad[#bad + 1] = cols .. ": too wide: " .. l.plain end
      if strip(l.text) ~= l.plain then bad[#bad + 1] = cols .. ": text differs from plain: " .. l.text end
      if l.plain:find("%s$") then bad[#bad + 1] = cols .. ": trailing space: " .. l.plain end
    end
  end
  t.eq(bad, {}, "every row at most cols - 1 columns, and written exactly as measured (20..200)")
end)

t.test("the block is at most the screen's height less one, each task once", function()
  local states, order = fake_run(40)
  local v = new_view(sink(), { 100, 12 })
  v:set_tasks(states, order)
  local lines = v:render(100, 12)
  t.eq(#lines, 11, "11 lines on a 12-line screen")
  local seen, dup = {}, false
  for _, l in ipairs(lines) do
    local name = l.plain:match("^[.>~+x!-] (%S+)")
    if name then
      if seen[name] then dup = true end
      seen[name] = true
    end
  end
  t.ok(not dup, "no task twice")
  t.ok(seen[order[1].name:sub(1, 10)] or lines[1].plain:find("extract", 1, true), "running tasks kept")
  t.like(lines[#lines - 1].plain, "%.%.%. 31 more tasks", "a line says how many are not shown")
  t.like(lines[#lines].plain, "1 failed", "the footer counts them all")
  lines = v:render(100, 2)
  t.eq(#lines, 1, "a two-line screen: the footer alone")
end)

t.test("erasing counts the lines a narrowed terminal re-wrapped the block into", function()
  local out = sink()
  local size = { 120, 30 }
  local v = new_view(out, size)
  local states, order = fake_run(3)
  v:set_tasks(states, order)
  v.info = { workflow = "wf", run_id = "r" }
  v.notes[order[1].name] = string.rep("x", 200)
  v:emit()
  t.eq(#v.block, 4, "three rows and the footer drawn")
  local widths = {}
  for i, p in ipairs(v.block) do widths[i] = sys.width(p) end
  local function erased(h)
    return "\r\27[" .. h .. "A" .. string.rep("\27[2K\27[B", h) .. "\27[" .. h .. "A"
  end
  t.eq(v:erase(120), erased(4), "same width: four lines up, each erased, back up")
  v:emit()
  t.eq(v:erase(200), erased(4), "wider: still four (lines that fit are not joined)")
  v:emit()
  local want = 0
  for _, w in ipairs(widths) do want = want + math.max(1, math.ceil(w / 50)) end
  t.eq(v:erase(50), erased(want), "narrowed to 50: each row's re-wrapped lines")
  -- a wide character that does not fit at the end of a line starts the next one
  v.block, v.block_cols = { string.rep("a", 9) .. "数据" }, 120
  t.eq(v:erase(10), erased(2), "a wide character moved to the next line is counted there")
  t.eq(v:erase(10), "", "nothing drawn: nothing to erase")
end)

t.test("a redraw is one write: erase, log lines, block", function()
  local out = sink()
  local v = new_view(out, { 80, 24 })
  local states, order = fake_run(2)
  v:set_tasks(states, order)
  v.info = { workflow = "wf", run_id = "r" }
  v:emit()
  out.parts = {}
  v:log(order[1], "first line\nsecond line\27[31m red")
  t.eq(#out.parts, 1, "one write")
  local s = strip(out:text())
  t.like(s, "^%d%d:%d%d:%d%d extract_customers_from_the_source_database_with_a_very_long_name: first line\n    second line red\n", "the log line first, its other lines indented, escapes dropped")
  t.like(out:text(), "^\27%[%?25l\r\27%[3A\27%[2K\27%[B\27%[2K", "after erasing the block")
  t.like(s, "\n> extract", "then the block again")
  t.eq(v.notes[order[1].name], "first line", "the row shows the log line's first line")
end)

t.test("print in a task goes through the view, and is given back", function()
  local out = sink()
  local v = new_view(out, { 80, 24 })
  local states, order = fake_run(1)
  v:set_tasks(states, order)
  local orig = print
  v:hook_print()
  t.ok(print ~= orig, "print replaced while the view is on")
  print("from", "a task", 42)
  t.like(strip(out:text()), "%d%d:%d%d:%d%d from a task 42\n", "as a log line of the view (tabs as spaces)")
  v:unhook_print()
  t.ok(print == orig, "print given back")
end)

t.test("summary lines fit their width", function()
  local states, order = fake_run(5)
  for _, st in ipairs(order) do st.duration = 1.5 end
  local sum = { run_id = "20250101T000000-abcd", workflow = "wf", state = "failed", duration = 3,
    tasks = order }
  for _, w in ipairs { 40, 60, 79, 80, 100, 119, 180 } do
    local lines = view.summary_lines(sum, w)
    local over = {}
    for i = 2, #lines do
      -- the first line (run id, workflow, state) and the "flowrun show" hints may run longer
      if not lines[i]:find("the whole error of", 1, true) and sys.width(lines[i]) > w then
        over[#over + 1] = lines[i]
      end
    end
    t.eq(over, {}, "width " .. w .. ": table rows fit")
    local text = table.concat(lines, "\n")
    t.like(text, "load  +failed  .*emr%.step_failed", "width " .. w .. ": the error's first line shown")
    t.like(text, "the whole error of load: flowrun show 20250101T000000%-abcd load",
      "width " .. w .. ": and where to read the rest")
  end
  local lines = view.summary_lines(sum, 40)
  local i = 1
  while lines[i] and not lines[i]:match("^  load") do i = i + 1 end
  t.like(lines[i + 1] or "", "^      emr%.step_failed", "narrow: the error on a line of its own")
end)

t.done()
