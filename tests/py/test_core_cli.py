"""The flowrun binary as a process: CLI, exit codes, errors, signals, the REPL on a pty, install."""
import os
import shutil
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

FLOWRUN = tap.FLOWRUN
ROOT = tap.ROOT
tmp = tempfile.mkdtemp(prefix="flowrun-cli-")


def run(args, stdin=None, env=None, timeout=30, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([FLOWRUN] + args, input=stdin, capture_output=True, text=True,
                       env=e, timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def script(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


@tap.test
def help_and_version():
    rc, out, _ = run(["--help"])
    tap.eq(rc, 0, "--help exits 0")
    for word in ["-e CODE", "-l MODULE", "-i ", "--output", "--debug", "--virtual-time", "--sim",
                 "--version", "repl", "runs", "show RUN_ID", "resume RUN_ID", "graph", "plan",
                 "--var", "--vars-file", "--state-dir", "--timeout", "Examples:", "Exit status"]:
        tap.like(out, word, "--help mentions " + word)
    rc, out, _ = run(["--version"])
    tap.eq(rc, 0, "--version exits 0")
    tap.like(out, "flowrun 0.", "--version names flowrun")
    tap.like(out, "Lua 5.4", "and Lua")
    rc, _, err = run(["--bogus"])
    tap.eq(rc, 2, "an unknown option exits 2")
    tap.like(err, "unknown option '--bogus'", "and says which")


@tap.test
def scripts_like_lua():
    p = script("args.lua", "print(select('#', ...), ...)\nprint(arg[0], arg[1], arg[2], #arg)\n")
    rc, out, _ = run([p, "one", "two"])
    tap.eq(rc, 0, "exit 0 on success")
    tap.eq(out.splitlines(), ["2\tone\ttwo", "%s\tone\ttwo\t2" % p], "... and arg as lua gives them")
    rc, out, _ = run(["-"], stdin="print('from stdin', ...)")
    tap.eq(out.strip(), "from stdin", "- reads the script from stdin")
    rc, out, _ = run([], stdin="print(1 + 1)")
    tap.eq(out.strip(), "2", "no arguments and stdin not a terminal: run stdin")


@tap.test
def errors_and_exit_codes():
    p = script("boom.lua", "local function f()\n  error('went wrong')\nend\nf()\n")
    rc, out, err = run([p])
    tap.eq(rc, 1, "an uncaught error exits 1")
    tap.like(err, "boom.lua:2: went wrong", "file:line: message")
    tap.like(err, "stack traceback:", "and a traceback")
    tap.like(err, "boom.lua:4: in main chunk", "naming the caller")
    p = script("syntax.lua", "local x = \nlocal y = = 2\n")
    rc, out, err = run([p])
    tap.eq(rc, 1, "a syntax error exits 1")
    tap.like(err, "syntax.lua:2:", "with file:line")
    rc, out, err = run([os.path.join(tmp, "missing.lua")])
    tap.eq(rc, 1, "a missing file exits 1")
    tap.like(err, "cannot open", "cannot open")
    tap.like(err, "No such file", "says why")
    p = script("obj.lua", "error(setmetatable({}, {__tostring = function() return 'my error object' end}))\n")
    rc, out, err = run([p])
    tap.eq(rc, 1, "an error object exits 1")
    tap.like(err, "my error object", "printed by its __tostring")
    p = script("flowerr.lua", "local flow = require 'flow'\nerror(flow.error('x.code', 'a message'))\n")
    rc, out, err = run([p])
    tap.like(err, "x.code: a message", "flowrun error objects print code: message")
    p = script("tbl.lua", "error({})\n")
    rc, out, err = run([p])
    tap.eq(rc, 1, "a plain table error exits 1")
    tap.like(err, "error object is a table value", "and says what it was")
    p = script("gcwait.lua", "local flow = require 'flow'\nsetmetatable({}, {__gc = function() flow.sleep(1) end})\ncollectgarbage()\n")
    rc, out, err = run([p], timeout=10)
    tap.eq(rc, 1, "waiting inside __gc exits 1")
    tap.like(err, "cannot wait here", "with a clear message")
    p = script("deadlock.lua", "local flow = require 'flow'\nlocal me = flow.current()\nlocal h = flow.spawn(function() me:wait() end)\nh:wait()\n")
    rc, out, err = run([p], timeout=10)
    tap.eq(rc, 1, "a deadlock exits 1 instead of hanging")
    tap.like(err, "deadlock", "and says so")
    p = script("unobserved.lua", "local flow = require 'flow'\nflow.spawn(function() error('lost error') end)\nflow.sleep(0.01)\n")
    rc, out, err = run([p])
    tap.like(err, "failed and no one waited for it", "a failure nobody waited for is reported")
    tap.like(err, "lost error", "with its error")


@tap.test
def exec_and_modules():
    rc, out, _ = run(["-e", "return 1 + 1, {b = {1, 2}, a = 'x'}"])
    tap.eq(rc, 0, "-e exits 0")
    tap.eq(out, '2\n{\n  "a": "x",\n  "b": [\n    1,\n    2\n  ]\n}\n', "-e prints results as JSON")
    rc, out, _ = run(["--output", "lua", "-e", "return {b = {1, 2}, a = 'x'}"])
    tap.eq(out.strip(), '{ a = "x", b = { 1, 2 } }', "--output lua prints Lua")
    rc, out, _ = run(["-e", "flow.sleep(0.01) return json.encode({x = 1})"])
    tap.eq(out.strip(), '"{\\"x\\":1}"', "-e sees flow and json without require")
    rc, out, err = run(["-e", "return nosuch.field"])
    tap.eq(rc, 1, "-e with an error exits 1")
    tap.like(err, "(command line):1:", "naming the command line")
    moddir = os.path.join(tmp, "mods")
    os.makedirs(moddir, exist_ok=True)
    with open(os.path.join(moddir, "greet.lua"), "w") as f:
        f.write("return { msg = 'v1' }\n")
    env = {"LUA_PATH": moddir + "/?.lua;;"}
    rc, out, _ = run(["-l", "greet", "-e", "return greet.msg"], env=env)
    tap.eq(out.strip(), '"v1"', "-l loads a module from LUA_PATH as a global")
    with open(os.path.join(moddir, "greet.lua"), "w") as f:
        f.write("return { msg = 'v2' }\n")
    rc, out, _ = run(["-l", "greet", "-e", "return greet.msg"], env=env)
    tap.eq(out.strip(), '"v2"', "an edited module takes effect on the next run, no rebuild")
    rc, out, err = run(["-e", "local lpeg = require 'lpeg'; return lpeg.match(lpeg.C(lpeg.R'az'^1), 'abc1')"])
    tap.eq((rc, out.strip()), (0, '"abc"'), "Debian's lpeg C module loads")
    rc, out, err = run(["-e", "local lfs = require 'lfs'; return lfs.attributes('/', 'mode')"])
    tap.eq((rc, out.strip()), (0, '"directory"'), "Debian's lfs C module loads")


SIG_SCRIPT = """
local flow = require "flow"
local out = assert(io.open(arg[1], "w"))
out:write("started\\n"); out:flush()
local ok, err = pcall(flow.sleep, 60)
flow.shield(function()
  flow.sleep(tonumber(arg[2]) or 0.05)
  out:write("cleanup ran: ", tostring(err), "\\n")
  out:close()
end)
error(err, 0)
"""


def wait_for(path, text, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with open(path) as f:
                if text in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


@tap.test
def signals():
    p = script("sig.lua", SIG_SCRIPT)
    for sig, code in [(signal.SIGINT, 130), (signal.SIGTERM, 143)]:
        marker = os.path.join(tmp, "sig-%d.txt" % sig)
        proc = subprocess.Popen([FLOWRUN, p, marker], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tap.ok(wait_for(marker, "started"), "child started")
        proc.send_signal(sig)
        rc = proc.wait(timeout=10)
        tap.eq(rc, code, "exit %d after signal %d" % (code, sig))
        with open(marker) as f:
            tap.like(f.read(), "cleanup ran: flow.cancelled", "the cancelled task's cleanup ran")
    marker = os.path.join(tmp, "sig-twice.txt")
    proc = subprocess.Popen([FLOWRUN, p, marker, "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tap.ok(wait_for(marker, "started"), "child started")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=10)
    tap.eq(rc, 130, "a second SIGINT exits at once with 130")
    tap.ok(time.time() - t0 < 5, "without waiting for the 30 s cleanup")
    # signals get through while the clock only jumps (virtual time) and while tasks only take
    # turns (sleep(0) in a loop): nothing else may be there to wake the loop
    for name, body, sig, code in [
            ("virtual", "flow.core.set_virtual_time(true)\nwhile true do flow.sleep(30) end", signal.SIGINT, 130),
            ("spin", "while true do flow.sleep(0) end", signal.SIGTERM, 143)]:
        marker = os.path.join(tmp, "sig-%s.txt" % name)
        p2 = script("sig-%s.lua" % name, "local flow = require 'flow'\nlocal f = assert(io.open(arg[1], 'w'))\n"
                    "f:write('started'); f:close()\n" + body + "\n")
        proc = subprocess.Popen([FLOWRUN, p2, marker], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tap.ok(wait_for(marker, "started"), name + ": child started")
        time.sleep(0.2)
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "still running"
        tap.eq(rc, code, name + ": the signal got through")


def pty_session(env_home):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["HOME"] = env_home
        os.execv(FLOWRUN, [FLOWRUN])
    return pid, fd


def pty_read(fd, until=None, timeout=5.0):
    out = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if until and until in out.decode(errors="replace"):
                break
    return out.decode(errors="replace")


@tap.test
def repl_on_a_terminal():
    home = tempfile.mkdtemp(dir=tmp, prefix="home-")
    pid, fd = pty_session(home)
    banner = pty_read(fd, until="> ")
    tap.like(banner, "Ctrl-D exits", "the REPL starts on a terminal with a banner")
    os.write(fd, b"1 + 1\n")
    tap.like(pty_read(fd, until="\r\n2\r\n> "), "\r\n2\r\n> ", "an expression prints its value")
    os.write(fd, b"function triple(x)\n")
    tap.like(pty_read(fd, until=">> "), ">> ", "an unfinished line asks for more")
    os.write(fd, b"  return x * 3\nend\n")
    pty_read(fd, until="> ")
    os.write(fd, b"triple(14)\n")
    tap.like(pty_read(fd, until="42"), "42", "the multi-line function works")
    os.write(fd, b"{b = {c = 1}, a = 2, 'first'}\n")
    tap.like(pty_read(fd, until='c = 1 } }'), '{ "first", a = 2, b = { c = 1 } }', "tables print pretty, keys sorted")
    os.write(fd, b"local t = {} t.me = t return t\n")
    tap.like(pty_read(fd, until="<cycle"), "<cycle", "cycles are marked")
    os.write(fd, b"error('oops')\n")
    tap.like(pty_read(fd, until="oops"), "oops", "an error is shown")
    os.write(fd, b"flow.sleep(0.01) return 'still here'\n")
    tap.like(pty_read(fd, until="still here"), "still here", "the REPL goes on after an error; waits work")
    os.write(fd, b"strin\t")
    tap.like(pty_read(fd, until="g", timeout=2), "g", "Tab completes a global")
    os.write(fd, b".for\t")
    tap.like(pty_read(fd, until="mat", timeout=2), "mat", "Tab completes a table field (string.format)")
    os.write(fd, b"('%d', 7)\n")
    tap.like(pty_read(fd, until='"7"'), '"7"', "the completed call runs")
    os.write(fd, b"flow.sleep(30)\n")
    time.sleep(0.3)
    os.kill(pid, signal.SIGINT)
    tap.like(pty_read(fd, until="cancelled"), "cancelled", "Ctrl-C cancels the running line")
    os.write(fd, b"return 'alive'\n")
    tap.like(pty_read(fd, until="alive"), "alive", "and the REPL goes on")
    os.write(fd, b"\x04")
    _, status = os.waitpid(pid, 0)
    tap.eq(os.waitstatus_to_exitcode(status), 0, "Ctrl-D exits 0")
    hist = open(os.path.join(home, ".flowrun_history")).read()
    tap.like(hist, "triple(14)", "history saved in ~/.flowrun_history")


@tap.test
def install_tree():
    prefix = os.path.join(tmp, "prefix")
    p = subprocess.run(["make", "-s", "install", "PREFIX=" + prefix], cwd=ROOT, capture_output=True, text=True)
    tap.eq(p.returncode, 0, "make install PREFIX=... succeeds")
    binary = os.path.join(prefix, "bin", "flowrun")
    tap.ok(os.path.exists(os.path.join(prefix, "share", "flowrun", "lua", "flow", "init.lua")), "Lua tree installed")
    e = dict(os.environ)
    e.pop("FLOWRUN_ROOT", None)
    q = subprocess.run([binary, "-e", "return require('flow.sys').root"], capture_output=True, text=True, env=e, cwd="/")
    tap.eq(q.stdout.strip(), '"%s"' % os.path.realpath(os.path.join(prefix, "share", "flowrun")),
           "the installed binary finds its share/flowrun tree")


@tap.test
def terminal_size_and_isatty():
    import fcntl
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        # the child waits for its size to be set, then reports what flow.sys sees
        os.read(0, 1)
        os.execv(FLOWRUN, [FLOWRUN, "-e", "local s = require('flow.sys') "
                           "return {s.isatty(0), s.isatty(1), s.winsize(1)}"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 123, 0, 0))
    os.write(fd, b"\n")
    out = pty_read(fd, until="]")
    os.waitpid(pid, 0)
    compact = "".join(out.split())
    tap.like(compact, "[true,true,123,37]", "on a terminal: isatty(0), isatty(1), winsize(1) -> cols, rows")


@tap.test
def startup_loads_little():
    # what `flowrun -e` and `flowrun script.lua` load before the user's code: not the option
    # parser nor the workflow engine (a start-up costs what it loads; bench/core.sh times it)
    probe = "local t = {} for k in pairs(package.loaded) do t[#t + 1] = k end table.sort(t) " \
            "print(table.concat(t, ' '))"
    rc, out, err = run(["-e", probe])
    loaded = out.split()
    tap.eq(rc, 0, "flowrun -e: exit 0")
    for heavy in ("argparse", "flowrun.cli.options", "flowrun.engine", "flowrun.engine.run", "flow.workflow"):
        tap.ok(heavy not in loaded, "flowrun -e does not load %s" % heavy)
    path = script("probe.lua", probe + "\n")
    rc, out, err = run([path])
    tap.ok(rc == 0 and "argparse" not in out.split() and "flowrun.engine" not in out.split(),
           "nor does flowrun script.lua")
    rc, out, err = run(["--sim", "-e", "return 1"])
    tap.eq((rc, out.strip()), (0, "1"), "other options still go through the parser")
    rc, out, err = run(["-e"])
    tap.eq(rc, 2, "-e without code: the parser's error, exit 2")


shutil.rmtree(tmp, ignore_errors=True)
tap.done()
