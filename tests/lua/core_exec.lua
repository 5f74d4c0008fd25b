-- flow.exec: child processes on the loop (runtime/proc.c).
local t = require "tap"
local flow = require "flow"

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return not stat:match("^%d+ %b() Z") -- a zombie is gone for our purpose
end

t.test("output, status and stdin", function()
  local r = flow.exec({ "sh", "-c", "echo out; echo err >&2; exit 3" })
  t.eq({ r.status, r.stdout, r.stderr, r.signal }, { 3, "out\n", "err\n", nil }, "both streams and the status")
  t.eq(flow.exec("cat", { stdin = "hello\0world" }).stdout, "hello\0world", "stdin passed byte for byte")
  t.eq(flow.exec({ "printf", "%s|", "a b", "c" }).stdout, "a b|c|", "a list is run without a shell")
  t.eq(flow.exec("true").status, 0, "status 0")
  t.ok(math.type(flow.exec("true").pid) == "integer", "the pid")
end)

t.test("environment and directory", function()
  local r = flow.exec("echo $FLOWRUN_X-$HOME", { env = { FLOWRUN_X = "set" } })
  t.eq(r.stdout, "set-" .. os.getenv("HOME") .. "\n", "env entries over the inherited environment")
  r = flow.exec({ "/usr/bin/env" }, { env = { ONLY = "1" }, clear_env = true })
  t.eq(r.stdout, "ONLY=1\n", "clear_env: only what is given")
  r = flow.exec("echo ${HOME:-unset}", { env = { HOME = false } })
  t.eq(r.stdout, "unset\n", "NAME = false removes it")
  t.eq(flow.exec("pwd", { cwd = "/tmp" }).stdout, "/tmp\n", "cwd")
end)

t.test("signals, big output, truncation", function()
  local r = flow.exec({ "sh", "-c", "kill -9 $$" })
  t.eq({ r.status, r.signal }, { nil, 9 }, "killed by a signal: status nil, signal 9")
  r = flow.exec({ "head", "-c", "10000000", "/dev/zero" })
  t.eq(#r.stdout, 10000000, "10 MB of output")
  r = flow.exec({ "head", "-c", "100000", "/dev/zero" }, { max_output = 1000 })
  t.ok(r.truncated and #r.stdout <= 1000, "max_output caps what is kept and says so")
  t.eq(r.status, 0, "and the child still ran to the end")
end)

t.test("a child that leaves something running does not hold the call", function()
  local t0 = flow.now()
  local r = flow.exec("sleep 3 & echo started")
  t.eq(r.stdout, "started\n", "its output")
  t.ok(flow.now() - t0 < 2.8, "returned without waiting for what it left running")
end)

t.test("errors", function()
  local err = t.raises(function() flow.exec({ "/nonexistent/prog" }) end, "proc.spawn", "a missing program")
  t.like(err and err.message, "no such file", "says why")
  err = t.raises(function() flow.exec("echo bad >&2; exit 4", { check = true }) end, "proc.failed", "check")
  t.like(err and err.message, "status 4: bad", "with the status and stderr")
  t.raises(function() flow.exec(42) end, "string or list", "a bad command")
  t.raises(function() flow.exec({}) end, "empty", "an empty command")
end)

t.test("commands run concurrently and never block the loop", function()
  local t0 = flow.now()
  local ticks = 0
  local ticker = flow.spawn(function() for _ = 1, 10 do flow.sleep(0.02); ticks = ticks + 1 end end)
  local hs = {}
  for i = 1, 8 do hs[i] = flow.spawn(function() return flow.exec("sleep 0.3; echo " .. i).stdout end) end
  local r = flow.all(hs)
  ticker:wait()
  t.eq(r[8], "8\n", "results")
  t.ok(flow.now() - t0 < 1.5, "8 x 0.3 s at once, not one after the other")
  t.eq(ticks, 10, "other tasks ran meanwhile")
end)

t.test("cancelling the task terminates the child", function()
  local pidfile = os.tmpname()
  local h = flow.spawn(function()
    return flow.exec({ "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 100" })
  end)
  local pid
  for _ = 1, 100 do
    flow.sleep(0.02)
    local f = io.open(pidfile)
    pid = f and tonumber(f:read("a"))
    if f then f:close() end
    if pid then break end
  end
  t.ok(pid and alive(pid), "the child runs")
  h:cancel()
  t.raises(function() h:wait() end, "flow.cancelled", "the task ends cancelled")
  for _ = 1, 100 do
    if not alive(pid) then break end
    flow.sleep(0.02)
  end
  t.ok(not alive(pid), "the child was terminated")
  local err = t.raises(function() flow.exec("sleep 100", { timeout = 0.2 }) end, "flow.timeout", "timeout")
  os.remove(pidfile)
end)

t.test("os.execute returns what Lua's does (it is not system(), which drops a Ctrl-C)", function()
  t.eq({ os.execute("true") }, { true, "exit", 0 }, "success")
  t.eq({ os.execute("exit 3") }, { nil, "exit", 3 }, "an exit status")
  t.eq({ os.execute("kill -TERM $$") }, { nil, "signal", 15 }, "a signal")
  t.eq({ os.execute() }, { true }, "a shell is there")
  t.eq({ os.execute("kill -INT $$") }, { nil, "signal", 2 }, "SIGINT has its default action")
  -- flowrun ignores SIGPIPE; the command must not inherit that (nor ignore SIGINT, SIGQUIT)
  t.eq(os.execute([[m=$(awk '/^SigIgn/ { print $2 }' /proc/$$/status); [ $((0x$m & 0x1006)) = 0 ] ]]),
    true, "the command ignores none of SIGINT, SIGQUIT, SIGPIPE")
end)

t.test("numbers in argv and env reach the child intact (the converted strings stay anchored)", function()
  -- numbers are converted to strings that nothing else references; building a large
  -- environment afterwards allocates enough for the collector to free them before the spawn.
  -- Run in a fresh process, whose small heap makes the collector run there (the expected text
  -- is built after each run: an equal string made before would be the same interned object and
  -- keep the converted one alive).
  local code = [[
    local bad = 0
    for i = 1, 300 do
      local args = { "/bin/echo" }
      for k = 1, 20 do args[#args + 1] = 1000000 + k * i end
      local env = {}
      for k = 1, 50 do env["V" .. k] = ("v"):rep(k) .. i end
      local r = flow.exec(args, { env = env })
      local want = {}
      for k = 1, 20 do want[#want + 1] = tostring(1000000 + k * i) end
      if r.stdout ~= table.concat(want, " ") .. "\n" then bad = bad + 1 end
    end
    return bad]]
  local r = flow.exec({ assert(os.getenv("FLOWRUN")), "-e", code })
  t.eq(r.stdout, "0\n", "300 runs, every argument as given (runs with a wrong argument)")
  local r2 = flow.exec({ "/bin/sh", "-c", "echo $N" }, { env = { N = 12345 } })
  t.eq(r2.stdout, "12345\n", "a number in env")
end)

t.done()
