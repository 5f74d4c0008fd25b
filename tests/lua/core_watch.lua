-- flow.watch: a task waits until a watched directory changes, another task wakes it, or the
-- timeout; changes made before the wait are kept; a wait cancelled or a watcher closed leaves
-- nothing behind; virtual time still jumps while a task waits on one.
local t = require "tap"
local flow = require "flow"
local core = require "flow.core"
local sys = require "flow.sys"
local watch = require "flow.watch"

local base = (os.getenv("FLOWRUN_TEST_TMP") or "/tmp") .. "/core_watch." .. sys.getpid()
assert(sys.mkdir_p(base))

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text or "")
  f:close()
end

local function names(changes)
  local seen, out = {}, {}
  for _, c in ipairs(changes) do
    if c.name and not seen[c.name] then
      seen[c.name] = true
      out[#out + 1] = c.name
    end
  end
  table.sort(out)
  return out
end

t.test("a change wakes the waiting task, naming the entry and the directory", function()
  local d = base .. "/a"
  assert(sys.mkdir(d))
  local w = watch.new()
  t.eq(w:add(d), true, "add a directory")
  local t0 = flow.now()
  flow.spawn(function() flow.sleep(0.05) write(d .. "/x.lua", "return 1") end)
  local changes, woken = w:wait(10)
  t.ok(flow.now() - t0 < 5, "it woke on the change, not the timeout")
  t.eq(names(changes), { "x.lua" }, "the entry")
  t.eq(changes[1].dir, d, "the directory, as it was given")
  t.eq(woken, false, "not woken by wake()")
  w:close()
end)

t.test("nothing changed: the timeout; a change before the wait is not lost", function()
  local d = base .. "/b"
  assert(sys.mkdir(d))
  local w = watch.new()
  assert(w:add(d))
  local t0 = flow.now()
  local changes, woken = w:wait(0.1)
  t.ok(flow.now() - t0 >= 0.09, "waited the timeout")
  t.eq(#changes, 0, "no change")
  t.eq(woken, false, "not woken")
  write(d .. "/early", "x")
  flow.sleep(0.05) -- the loop reads the kernel's notice meanwhile
  t0 = flow.now()
  changes = w:wait(5)
  t.ok(flow.now() - t0 < 0.05, "returns at once")
  t.eq(names(changes), { "early" }, "with the change made before")
  t.eq(#w:wait(0), 0, "given once")
  os.rename(d .. "/early", d .. "/renamed")
  sys.unlink(d .. "/renamed")
  flow.sleep(0.05)
  t.eq(names(w:wait(0)), { "early", "renamed" }, "renames and removals too")
  w:close()
end)

t.test("wake(): from another task, and before the wait", function()
  local w = watch.new()
  flow.spawn(function() flow.sleep(0.05) w:wake() end)
  local t0 = flow.now()
  local changes, woken = w:wait()
  t.ok(flow.now() - t0 < 5, "a wait with no timeout ends on wake()")
  t.eq({ #changes, woken }, { 0, true }, "woken, no change")
  w:wake()
  changes, woken = w:wait(10)
  t.eq(woken, true, "a wake before the wait is not lost")
  changes, woken = w:wait(0)
  t.eq(woken, false, "and given once")
  w:close()
end)

t.test("several directories in one watcher", function()
  local d1, d2 = base .. "/c1", base .. "/c2"
  assert(sys.mkdir(d1))
  assert(sys.mkdir(d2))
  local w <close> = watch.new()
  assert(w:add(d1))
  assert(w:add(d2))
  write(d2 .. "/two")
  write(d1 .. "/one")
  flow.sleep(0.05)
  local changes = w:wait(1)
  local by = {}
  for _, c in ipairs(changes) do by[c.name] = c.dir end
  t.eq(by, { one = d1, two = d2 }, "each change with its directory")
end)

t.test("errors: a missing directory is an error object; misuse raises", function()
  local w = watch.new()
  local ok, err = w:add(base .. "/missing")
  t.eq(ok, nil, "nil first")
  t.ok(flow.is_error(err), "an error object")
  t.eq(err and err.code, "sys.ENOENT", "sys.ENOENT")
  t.eq(err and err.path, base .. "/missing", "err.path")
  t.like(err and err.message or "", "missing", "the message names the path")
  t.raises(function() w:add() end, "bad argument #1 to .add. %(string expected", "add without a path")
  t.raises(function() w:wait(-1) end, "expected a duration >= 0", "a negative timeout")
  local h = flow.spawn(function() return w:wait() end)
  flow.sleep(0)
  t.raises(function() w:wait(1) end, "only one task waiting", "a second waiting task")
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the first one was cancelled")
  w:close()
  w:close()
  t.like(tostring(w), "closed", "closed, idempotent")
  t.raises(function() w:wait(1) end, "the watcher is closed", "a closed watcher")
  t.raises(function() w:add(base) end, "the watcher is closed", "add to a closed watcher")
end)

t.test("closing a watcher a task waits on ends its wait", function()
  local d = base .. "/d"
  assert(sys.mkdir(d))
  local w = watch.new()
  assert(w:add(d))
  local h = flow.spawn(function() return w:wait() end)
  flow.sleep(0.02)
  w:close()
  local changes, woken = h:wait()
  t.eq({ #changes, woken }, { 0, false }, "returns, with nothing")
end)

t.test("more changes than it keeps between two waits: overflow, look at everything", function()
  local d = base .. "/e"
  assert(sys.mkdir(d))
  local w = watch.new()
  assert(w:add(d))
  for i = 1, 5000 do write(d .. "/f" .. i) end
  flow.sleep(0.2)
  local changes = w:wait(0)
  t.eq(changes.overflow, true, "overflow is said")
  t.ok(#changes <= 4096, "at most 4096 kept (" .. #changes .. ")")
  t.eq(w:wait(0).overflow, nil, "and said once")
  w:close()
end)

t.test("virtual time jumps while a task waits on a watcher", function()
  local d = base .. "/f"
  assert(sys.mkdir(d))
  core.set_virtual_time(true)
  local w = watch.new()
  assert(w:add(d))
  local r0, v0 = os.clock(), flow.now()
  local changes = w:wait(3600)
  t.ok(flow.now() - v0 >= 3600, "an hour of virtual time passed")
  t.eq(#changes, 0, "with no change")
  flow.spawn(function() flow.sleep(600) write(d .. "/late") end)
  changes = w:wait(3600)
  t.eq(names(changes), { "late" }, "a change made at a virtual time wakes it")
  t.ok(os.clock() - r0 < 1, "in little real time")
  core.set_virtual_time(false)
  w:close()
end)

flow.exec { "rm", "-rf", base }
t.done()
