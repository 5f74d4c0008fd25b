-- flow.sys: directories, stat, fsync, locks, terminals, processes, facts; every error path.
local t = require "tap"
local flow = require "flow"
local sys = require "flow.sys"

local base = (os.getenv("FLOWRUN_TEST_TMP") or "/tmp") .. "/core_sys." .. sys.getpid()
local FLOWRUN = os.getenv("FLOWRUN") or (sys.root .. "/flowrun") -- the binary under test
assert(sys.mkdir(base))

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text or "")
  f:close()
end

local function sh(cmd)
  local r = flow.exec(cmd)
  assert(r.status == 0, table.concat(cmd, " ") .. ": " .. r.stderr)
  return r.stdout
end

-- an error object from sys: nil first, then code, a message naming the path
local function fails(code, path, msg, ok, err)
  t.ok(ok == nil, msg .. ": nil first")
  t.ok(flow.is_error(err), msg .. ": an error object")
  t.eq(err and err.code, code, msg .. ": code " .. code)
  if path then
    t.ok(err and err.message:find(path, 1, true) ~= nil, msg .. ": the message names " .. path)
    t.eq(err and err.path, path, msg .. ": err.path")
  end
  t.eq(err and err.retryable, false, msg .. ": not retryable")
end

t.test("mkdir: creates; an existing directory is success; what is in the way is an error", function()
  local d = base .. "/m"
  t.eq(sys.mkdir(d), true, "creates a directory")
  t.eq(sys.stat(d).type, "directory", "which exists")
  t.eq(sys.mkdir(d), true, "an existing directory is success")
  write(base .. "/afile")
  fails("sys.EEXIST", base .. "/afile", "a file in the way", sys.mkdir(base .. "/afile"))
  fails("sys.ENOENT", base .. "/no/such", "a missing parent", sys.mkdir(base .. "/no/such"))
  fails("sys.ENOTDIR", base .. "/afile/x", "a file as parent", sys.mkdir(base .. "/afile/x"))
  t.eq(sys.mkdir(base .. "/m700", tonumber("700", 8)), true, "with a mode")
  t.eq(sys.stat(base .. "/m700").mode, tonumber("700", 8), "the mode is applied")
  t.raises(function() sys.mkdir() end, "bad argument #1 to 'mkdir'", "no path raises")
  t.raises(function() sys.mkdir(d, -1) end, "bad argument #2 to 'mkdir'", "a bad mode raises")
  t.raises(function() sys.mkdir({}) end, "bad argument #1", "a table raises")
end)

t.test("mkdir_p: every missing parent; idempotent; names the part that failed", function()
  local d = base .. "/p/q/r/s"
  t.eq(sys.mkdir_p(d), true, "creates a deep path")
  t.eq(sys.stat(base .. "/p/q").type, "directory", "parents exist")
  t.eq(sys.stat(d).type, "directory", "and the leaf")
  t.eq(sys.mkdir_p(d), true, "again: success")
  t.eq(sys.mkdir_p(base .. "/p/q2//r2/"), true, "doubled and trailing slashes")
  fails("sys.ENOENT", "/proc/nope", "a parent that cannot be made is named",
    sys.mkdir_p("/proc/nope/a/b"))
  t.eq(sys.stat(base .. "/p/q2/r2").type, "directory", "are understood")
  write(base .. "/p/file")
  fails("sys.ENOTDIR", base .. "/p/file/x/y", "a file in the middle",
    sys.mkdir_p(base .. "/p/file/x/y"))
  fails("sys.EEXIST", base .. "/p/file", "a file at the end", sys.mkdir_p(base .. "/p/file"))
  local rel = "core_sys_rel." .. sys.getpid() .. "/a/b"
  t.eq(sys.mkdir_p(rel), true, "a relative path")
  t.eq(sys.stat(rel).type, "directory", "is relative to the working directory")
  sh({ "rm", "-r", "core_sys_rel." .. sys.getpid() })
  t.eq(sys.mkdir_p("/"), true, "/ exists")
  t.raises(function() sys.mkdir_p("") end, "empty path", "an empty path raises")
end)

t.test("readdir: sorted names without . and ..", function()
  local d = base .. "/r"
  sys.mkdir(d)
  t.eq(sys.readdir(d), {}, "an empty directory")
  for _, n in ipairs({ "b", "a", "C", "b2", ".hidden" }) do write(d .. "/" .. n) end
  sys.mkdir(d .. "/sub")
  t.eq(sys.readdir(d), { ".hidden", "C", "a", "b", "b2", "sub" }, "byte order, dirs included")
  fails("sys.ENOENT", base .. "/nope", "a missing directory", sys.readdir(base .. "/nope"))
  fails("sys.ENOTDIR", d .. "/a", "a file", sys.readdir(d .. "/a"))
  local many = base .. "/many"
  sys.mkdir(many)
  for i = 1, 300 do write(("%s/f%03d"):format(many, i)) end
  local names = sys.readdir(many)
  t.eq(#names, 300, "300 entries")
  t.eq(names[1] .. names[300], "f001f300", "in order")
end)

t.test("stat: type, size, mtime, mode; a link is a link", function()
  local f = base .. "/s.txt"
  write(f, "hello")
  sh({ "chmod", "640", f })
  local st = sys.stat(f)
  t.eq(st.type, "file", "a file")
  t.eq(st.size, 5, "its size")
  t.eq(math.type(st.size), "integer", "an integer")
  t.eq(st.mode, tonumber("640", 8), "permission bits")
  t.ok(math.abs(st.mtime - os.time()) < 5, "mtime is seconds since the epoch")
  sh({ "touch", "-d", "@1000000000.5", f })
  t.eq(sys.stat(f).mtime, 1000000000.5, "with its fraction")
  sh({ "ln", "-s", "s.txt", base .. "/s.link" })
  t.eq(sys.stat(base .. "/s.link").type, "link", "a symbolic link is itself")
  t.eq(sys.stat("/dev/null").type, "other", "a device is other")
  t.eq(sys.stat(base).type, "directory", "a directory")
  fails("sys.ENOENT", base .. "/missing", "missing", sys.stat(base .. "/missing"))
  fails("sys.ENOTDIR", f .. "/x", "through a file", sys.stat(f .. "/x"))
end)

t.test("unlink", function()
  local f = base .. "/u.txt"
  write(f)
  t.eq(sys.unlink(f), true, "removes a file")
  fails("sys.ENOENT", f, "gone", sys.stat(f))
  fails("sys.ENOENT", f, "again: missing", sys.unlink(f))
  sys.mkdir(base .. "/udir")
  fails("sys.EISDIR", base .. "/udir", "a directory", sys.unlink(base .. "/udir"))
end)

t.test("fsync and fsync_dir", function()
  local path = base .. "/f.txt"
  local f = assert(io.open(path, "w"))
  f:write("buffered")
  t.eq(sys.fsync(f), true, "fsync a file")
  local r = assert(io.open(path)):read("a")
  t.eq(r, "buffered", "the buffer was flushed first")
  f:close()
  t.raises(function() sys.fsync(f) end, "closed file", "a closed file raises")
  t.raises(function() sys.fsync(path) end, "FILE%* expected", "a path raises (not a file handle)")
  local null = assert(io.open("/dev/null", "w"))
  local ok, err = sys.fsync(null)
  null:close()
  fails("sys.EINVAL", "/dev/null", "a device that cannot be synced", ok, err)
  t.eq(sys.fsync_dir(base), true, "fsync_dir")
  fails("sys.ENOENT", base .. "/nodir", "fsync_dir of nothing", sys.fsync_dir(base .. "/nodir"))
  fails("sys.ENOTDIR", path, "fsync_dir of a file", sys.fsync_dir(path))
end)

t.test("truncate: a file cut in place, its buffer flushed first", function()
  local path = base .. "/t.txt"
  local f = assert(io.open(path, "a+"))
  f:write("line one\nline tw")
  t.eq(sys.truncate(f, 9), true, "cut to 9 bytes")
  f:seek("end")
  f:write("next\n")
  f:close()
  t.eq(assert(io.open(path)):read("a"), "line one\nnext\n", "the cut line is gone, the file appends after it")
  local g = assert(io.open(path, "r"))
  local ok, err = sys.truncate(g, 0)
  g:close()
  fails("sys.EINVAL", path, "a file opened for reading only", ok, err)
  t.raises(function() sys.truncate(io.stdout, -1) end, "size >= 0", "a negative size raises")
end)

t.test("flock: exclusive, without waiting; released on close", function()
  local path = base .. "/run.lock"
  local a = assert(io.open(path, "a"))
  t.eq(sys.flock(a), true, "the first holder gets it")
  t.eq(sys.flock(a), true, "taking it again through the same file is fine")
  -- another open file description conflicts like another process would
  local b = assert(io.open(path, "a"))
  local ok, err = sys.flock(b)
  t.ok(ok == nil, "a second holder does not")
  t.eq(err and err.code, "sys.locked", "sys.locked")
  t.like(err and err.message, "run%.lock is locked by another process", "naming the file")
  t.eq(err and err.path, path, "err.path")
  -- and a real other process
  local r = flow.exec({ FLOWRUN, "-e",
    ("local f = io.open(%q, 'a'); local ok, e = require('flow.sys').flock(f); return e.code"):format(path) })
  t.like(r.stdout, "sys.locked", "another process gets sys.locked")
  a:close()
  t.eq(sys.flock(b), true, "closing the holder releases it")
  b:close()
  t.raises(function() sys.flock(b) end, "closed file", "a closed file raises")
end)

t.test("isatty and winsize", function()
  local f = assert(io.open(base .. "/tty.txt", "w"))
  t.eq(sys.isatty(99), false, "a descriptor that is not open is not a terminal")
  local r = flow.exec({ FLOWRUN, "-e", "return require('flow.sys').isatty(0)" },
    { stdin = "" })
  t.like(r.stdout, "false", "a pipe is not a terminal")
  f:close()
  local ok, err = sys.winsize(99)
  fails("sys.EBADF", nil, "winsize of a closed descriptor", ok, err)
  t.like(err and err.message, "descriptor 99", "names the descriptor")
  r = flow.exec({ FLOWRUN, "-e",
    "local c, e = require('flow.sys').winsize(0) return e.code" }, { stdin = "" })
  t.like(r.stdout, "sys.ENOTTY", "winsize of a pipe: sys.ENOTTY")
  t.raises(function() sys.isatty(-1) end, "bad argument #1 to 'isatty'", "a negative fd raises")
  t.raises(function() sys.winsize("x") end, "bad argument #1 to 'winsize'", "a string raises")
end)

t.test("getpid and kill", function()
  local stat = assert(io.open("/proc/self/stat")):read("l")
  t.eq(sys.getpid(), tonumber(stat:match("^(%d+)")), "getpid is this process")
  t.eq(sys.kill(sys.getpid(), 0), true, "signal 0 probes a live process")
  local pidfile = base .. "/child.pid"
  local h = flow.spawn(flow.exec, ("echo $$ > %s; exec sleep 30"):format(pidfile))
  local pid
  for _ = 1, 200 do
    local pf = io.open(pidfile)
    pid = pf and tonumber(pf:read("a"))
    if pf then pf:close() end
    if pid then break end
    flow.sleep(0.01)
  end
  t.ok(pid, "the child wrote its pid")
  t.eq(sys.kill(pid, "STOP"), true, "STOP")
  local state
  for _ = 1, 100 do
    state = assert(io.open("/proc/" .. pid .. "/stat")):read("l"):match("^%d+ %b() (%a)")
    if state == "T" then break end
    flow.sleep(0.01)
  end
  t.eq(state, "T", "the child is stopped")
  t.eq(sys.kill(pid, "CONT"), true, "CONT")
  t.eq(sys.kill(pid, "TERM"), true, "TERM")
  local res = h:wait()
  t.eq(res.signal, 15, "the child died of SIGTERM")
  fails("sys.ESRCH", nil, "a process that is gone", sys.kill(pid, 0))
  local _, err = sys.kill(pid, 0)
  t.like(err and err.message, "kill " .. pid .. ": no such process", "the message names the pid")
  t.raises(function() sys.kill(pid, "BOGUS") end, "unknown signal 'BOGUS'", "an unknown name raises")
  t.raises(function() sys.kill(pid, 99) end, "bad argument #2 to 'kill'", "a bad number raises")
  t.raises(function() sys.kill("x", 0) end, "bad argument #1 to 'kill'", "a bad pid raises")
end)

t.test("cwd, realpath, homedir, hostname", function()
  t.eq(sys.cwd(), sh({ "pwd", "-P" }):gsub("\n$", ""), "cwd")
  t.eq(sys.realpath(base .. "/s.link"), sys.realpath(base) .. "/s.txt", "realpath follows links")
  t.eq(sys.realpath(base .. "/p/../p/q"), sys.realpath(base) .. "/p/q", "and resolves ..")
  fails("sys.ENOENT", base .. "/zzz", "realpath of nothing", sys.realpath(base .. "/zzz"))
  local r = flow.exec({ FLOWRUN, "-e", "return require('flow.sys').homedir()" },
    { env = { HOME = "/some/home" } })
  t.like(r.stdout, '"/some/home"', "homedir follows HOME")
  t.eq(sys.hostname(), assert(io.open("/proc/sys/kernel/hostname")):read("l"), "hostname")
end)

t.test("set_debug: known categories; an unknown one is refused and lists them", function()
  local log = require "log"
  t.eq(sys.set_debug("http,pg"), true, "two categories")
  t.ok(log.debug_enabled("http") and log.debug_enabled("pg"), "both on")
  t.ok(not log.debug_enabled("aws"), "others off")
  local ok, err = sys.set_debug("aws,asw")
  t.ok(ok == nil, "an unknown category: nil")
  t.eq(err and err.code, "sys.EINVAL", "sys.EINVAL")
  t.like(err and err.message, "unknown debug category 'asw'", "names it")
  t.like(err and err.message, "aws, http, pg, sched, all", "lists the known ones")
  t.eq(err and err.category, "asw", "err.category")
  t.ok(log.debug_enabled("http") and not log.debug_enabled("aws"), "nothing changed")
  t.eq(sys.set_debug("all"), true, "all")
  t.ok(log.debug_enabled("sched"), "turns every one on")
  t.eq(sys.set_debug(""), true, "empty")
  t.ok(not log.debug_enabled("http"), "turns them off")
  t.eq(sys.set_debug(), true, "nil too")
  t.eq(select(2, log.set_debug("nope")).code, "sys.EINVAL", "log.set_debug checks the same way")
  local r = flow.exec({ FLOWRUN, "-e", "return 1" }, { env = { FLOWRUN_DEBUG = "asw" } })
  t.like(r.stderr, "FLOWRUN_DEBUG: unknown debug category 'asw'", "FLOWRUN_DEBUG is checked too")
end)

t.test("facts", function()
  t.like(sys.version, "^%d+%.%d+%.%d+", "version")
  t.like(sys.lua_version, "^Lua 5%.4", "lua_version")
  t.like(sys.uv_version, "^1%.", "uv_version")
  t.eq(sys.stat(sys.root .. "/lua/flow/init.lua").type, "file", "root holds the Lua trees")
  t.eq(sys.stat(sys.moddir .. "/http.so").type, "file", "moddir holds the shared units")
end)

sh({ "rm", "-rf", base })
t.done()
