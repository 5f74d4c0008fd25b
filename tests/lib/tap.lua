-- tap.lua — a small TAP producer for Lua tests that run under the real flowrun binary.
--
--   local t = require "tap"
--   t.test("sleep wakes up", function()
--     t.ok(cond, "message"); t.eq(got, want, "message"); t.like(str, "pattern", "message")
--     local err = t.raises(function() ... end, "flow.cancelled", "message")
--   end)
--   t.done()   -- prints the plan; fails when a task or an operation is still alive
--
-- Each t.test body runs in the main task, so waiting calls work in it. An error raised out of
-- a test body is one failed test line carrying the error and its traceback.
local M = {}

local n, failed = 0, 0

local function line(ok, msg)
  n = n + 1
  if not ok then failed = failed + 1 end
  io.write((ok and "ok " or "not ok ") .. n .. (msg and (" - " .. msg:gsub("\n", " ")) or ""), "\n")
  io.flush()
  return ok
end

function M.diag(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
  for l in (table.concat(parts, " ") .. "\n"):gmatch("([^\n]*)\n") do
    io.write("# ", l, "\n")
  end
end

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" or depth > 3 then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. "=" .. show(v[k], depth + 1) end
  return "{" .. table.concat(out, ", ") .. "}"
end
M.show = show

local function deep_eq(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    -- integers and floats compare equal by value; math.type differences are checked by callers
    return false
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do if not deep_eq(v, b[k], seen) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.deep_eq = deep_eq

function M.ok(v, msg)
  return line(v and true or false, msg)
end

function M.eq(got, want, msg)
  local ok = deep_eq(got, want)
  line(ok, msg)
  if not ok then
    M.diag("     got: " .. show(got))
    M.diag("expected: " .. show(want))
  end
  return ok
end

function M.like(s, pattern, msg)
  local ok = type(s) == "string" and s:find(pattern) ~= nil
  line(ok, msg)
  if not ok then M.diag("     got: " .. show(s)); M.diag("expected to match: " .. pattern) end
  return ok
end

function M.unlike(s, pattern, msg)
  local ok = type(s) == "string" and s:find(pattern) == nil
  line(ok, msg)
  if not ok then M.diag("     got: " .. show(s)); M.diag("expected not to match: " .. pattern) end
  return ok
end

-- Runs fn and expects it to raise. `want` is an error code (for flowrun.error objects) or a
-- Lua pattern matched against tostring(err). Returns the error.
function M.raises(fn, want, msg)
  local ok, err = pcall(fn)
  if ok then
    line(false, msg)
    M.diag("expected an error, none was raised")
    return nil
  end
  local code = type(err) == "table" and err.code or nil
  local good = want == nil or code == want or tostring(err):find(want) ~= nil
  line(good, msg)
  if not good then M.diag("     got: " .. tostring(err)); M.diag("expected: " .. tostring(want)) end
  return err
end

function M.skip(msg)
  n = n + 1
  io.write("ok " .. n .. " # skip " .. msg .. "\n")
end

function M.test(name, fn)
  io.write("# " .. name .. "\n")
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then
    line(false, name .. " raised an error")
    M.diag(tostring(err))
  end
end

-- Ends the file: the plan line, and a check that the test left nothing alive.
function M.done()
  local okc, core = pcall(require, "flow.core")
  if okc and core.stats then
    -- let cancelled tasks and closing handles finish (a terminated child process, a cancel
    -- still in flight on the server): up to 2 s; what is still alive then is a leak
    local flow = require "flow"
    for _ = 1, 3 do flow.sleep(0) end
    for _ = 1, 100 do
      local st = core.stats()
      if st.tasks <= 1 and st.ops == 0 then break end
      flow.sleep(0.02)
    end
    local s = core.stats()
    line(s.tasks <= 1 and s.ops == 0,
      string.format("nothing left alive (tasks=%d ops=%d)", s.tasks - 1, s.ops))
  end
  io.write("1.." .. n .. "\n")
  io.flush()
  return failed == 0
end

return M
