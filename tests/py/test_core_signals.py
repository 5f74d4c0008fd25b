"""Signals and stopping, with real signals: code that never waits is still cancelled (a task
spinning in `while true do end`, flow.timeout and a task timeout around it, --timeout, Ctrl-C
in the REPL), a second signal always ends the process at once, SIGHUP is SIGTERM, durations
that mean "forever" wait idle until a signal, and a __close that waits while its task is
cancelled is reported instead of dropped."""
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

TMP = tempfile.mkdtemp(prefix="flowrun-signals-")
STATE = os.path.join(TMP, "state")
TICK = os.sysconf("SC_CLK_TCK")

# the top of every script: mark(text) appends a line to the file named by $MARK
PRELUDE = """local flow = require "flow"
local function mark(s) local f = io.open(os.getenv("MARK"), "a"); f:write(s, "\\n"); f:close() end
"""


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def wait_for(cond, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def start(args, name, stdin=None):
    mark = os.path.join(TMP, name + ".mark")
    if os.path.exists(mark):
        os.unlink(mark)
    e = dict(os.environ, MARK=mark)
    p = subprocess.Popen([tap.FLOWRUN] + args, cwd=TMP, env=e, stdin=stdin, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    return p, mark


def finish(p, timeout=10):
    """(returncode or 'still running', stdout, stderr); kills what did not end."""
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return "still running", out, err


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def journal(run_id):
    with open(os.path.join(STATE, "runs", run_id + ".jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


SPIN_MAIN = write("spin_main.lua", PRELUDE + """
mark("started")
while true do end
""")


@tap.test
def spinning_main_chunk_obeys_one_signal():
    for sig, code in [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]:
        p, mark = start([SPIN_MAIN], "spin-%d" % sig)
        tap.ok(wait_for(lambda: "started" in read(mark)), "spinning (%s)" % sig.name)
        time.sleep(0.3)
        t0 = time.time()
        p.send_signal(sig)
        rc, _, err = finish(p)
        took = time.time() - t0
        tap.eq(rc, code, "%s: one signal ends a main chunk that never waits: %s" % (sig.name, code))
        tap.ok(took < 2, "%s: promptly (%.2f s)" % (sig.name, took))
        tap.ok("second" not in err, "%s: by cancellation, not as a second signal" % sig.name)


SPIN_TASK = write("spin_task.lua", PRELUDE + """
local h = flow.spawn(function()
  local ok, err = pcall(function() mark("started"); while true do end end)
  mark("task saw " .. tostring(err))
  error(err, 0)
end)
local ok, err = pcall(h.wait, h)
mark("main saw " .. tostring(err))
""")


@tap.test
def spinning_task_is_cancelled_and_its_handler_runs():
    p, mark = start([SPIN_TASK], "spin-task")
    tap.ok(wait_for(lambda: "started" in read(mark)), "a task spins while main waits for it")
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    rc, _, err = finish(p)
    tap.eq(rc, 130, "SIGINT: exit 130 " + err)
    tap.like(read(mark), "task saw flow.cancelled: task cancelled", "the spinning task got flow.cancelled")
    tap.like(read(mark), "main saw flow.cancelled", "main saw the cancellation")


SHIELDED = write("shielded.lua", PRELUDE + """
local ok, err = pcall(function() mark("started"); while true do end end)
mark("cancelled: " .. tostring(err))
flow.shield(function()
  mark("cleanup spinning")
  while true do end
end)
mark("must not get here")
""")


@tap.test
def second_signal_while_a_shielded_cleanup_spins():
    p, mark = start([SHIELDED], "shielded")
    tap.ok(wait_for(lambda: "started" in read(mark)), "spinning")
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    tap.ok(wait_for(lambda: "cleanup spinning" in read(mark), 5), "the first SIGTERM cancelled the spin")
    tap.like(read(mark), "cancelled: flow.cancelled", "with flow.cancelled")
    time.sleep(0.5)
    tap.eq(p.poll(), None, "the shielded cleanup is not cancelled: still running")
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    rc, _, err = finish(p)
    tap.eq(rc, 143, "the second SIGTERM exits 143")
    tap.ok(time.time() - t0 < 1, "at once (%.2f s)" % (time.time() - t0))
    tap.like(err, "second SIGTERM, exiting now", "and says so")
    tap.ok("must not get here" not in read(mark), "nothing after the cleanup ran")


@tap.test
def second_signal_before_the_first_was_delivered():
    # a C call that does not return to Lua (a read of a pipe nobody writes to): the first
    # signal cannot be delivered yet, the second still ends the process
    p, mark = start(["-e", "io.open(os.getenv('MARK'), 'w'):write('started'):close() "
                     "return io.read('a')"], "pending", stdin=subprocess.PIPE)
    tap.ok(wait_for(lambda: "started" in read(mark)), "blocked in a read")
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    t0 = time.time()
    rc, _, err = finish(p)
    tap.eq(rc, 130, "the second signal's status (SIGINT: 130)")
    tap.ok(time.time() - t0 < 1, "at once")


EXECUTE = write("execute.lua", PRELUDE + """
mark("started")
local ok, how, code = os.execute("sleep 1; exit 3")
mark("execute returned " .. tostring(ok) .. " " .. how .. " " .. code)
flow.sleep(5)
mark("not cancelled")
""")


@tap.test
def signal_during_os_execute_is_not_lost():
    # system() ignores SIGINT while its command runs: the signal was discarded and the run
    # went on to success. Now it is recorded and cancels the run once the command returns.
    t0 = time.time()
    p, mark = start([EXECUTE], "execute")
    tap.ok(wait_for(lambda: "started" in read(mark)), "in os.execute")
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    rc, _, err = finish(p)
    tap.eq(rc, 130, "SIGINT during os.execute: 130 " + err)
    tap.ok(time.time() - t0 < 3, "once the command returned, not after the next 5 s sleep")
    tap.ok("not cancelled" not in read(mark), "the run was cancelled")


TIMEOUTS = write("timeouts.lua", PRELUDE + """
local t0 = flow.now()
local ok, err = pcall(flow.timeout, 0.2, function() while true do end end)
print("spin", ok, flow.is_error(err, "flow.timeout"), string.format("%.2f", flow.now() - t0))
t0 = flow.now()
ok, err = pcall(flow.timeout, 0.2, function()
  local ok2, e2 = pcall(function() while true do end end)
  mark("inner " .. tostring(e2))
  error(e2, 0)
end)
print("caught", ok, flow.is_error(err, "flow.timeout"), string.format("%.2f", flow.now() - t0))
t0 = flow.now()
ok, err = pcall(flow.timeout, 0.2, function()
  flow.shield(function() local x = 0; for i = 1, 3e7 do x = x + i end end)
  mark("after shield")
  while true do end
end)
print("shielded", ok, flow.is_error(err, "flow.timeout"), string.format("%.2f", flow.now() - t0))
-- a spinning task does not stop a sleeping one from waking on time (it is preempted)
local woke
local s = flow.spawn(function() local a = flow.now(); flow.sleep(0.2); woke = flow.now() - a end)
local spinner = flow.spawn(function() while true do end end)
s:wait()
spinner:cancel()
pcall(spinner.wait, spinner)
print("woke", string.format("%.2f", woke), spinner:status())
""")


@tap.test
def timeouts_around_code_that_never_waits():
    p, mark = start([TIMEOUTS], "timeouts")
    rc, out, err = finish(p, 20)
    tap.eq(rc, 0, "exit 0 " + err)
    lines = {l.split()[0]: l.split()[1:] for l in out.splitlines() if l.strip()}
    for name in ("spin", "caught", "shielded"):
        r = lines.get(name, ["?", "?", "99"])
        tap.eq(r[:2], ["false", "true"], name + ": flow.timeout(0.2, fn) raised flow.timeout")
        tap.ok(float(r[2]) < 1.5, name + ": within ~1 s (%s s)" % r[2])
    tap.like(read(mark), "inner flow.cancelled", "the spinning body got flow.cancelled (its pcall saw it)")
    tap.like(read(mark), "after shield", "a shielded section ran to its end before the cancellation")
    r = lines.get("woke", ["99", "?"])
    tap.ok(float(r[0]) < 0.7, "a sleep woke in %s s beside a spinning task" % r[0])
    tap.eq(r[1], "cancelled", "and the spinner was cancelled")


TASK_TIMEOUT_WF = write("task_timeout.lua", PRELUDE + """
local wf = flow.workflow { name = "spin" }
wf:task("spin", { timeout = "300ms" }, function() while true do end end)
wf:task("after", { after = "spin" }, function() mark("after ran") end)
wf:task("cleanup", { after = "spin", cleanup = true }, function() flow.sleep(0.05); mark("cleanup ran") end)
return wf
""")


@tap.test
def task_timeout_around_a_spin():
    t0 = time.time()
    p, mark = start([TASK_TIMEOUT_WF, "--state-dir", STATE, "--log-format", "json"], "task-timeout")
    rc, out, err = finish(p, 20)
    tap.eq(rc, 1, "the run fails (exit 1) " + err)
    tap.ok(time.time() - t0 < 5, "in %.2f s" % (time.time() - t0))
    last = json.loads(out.splitlines()[-1]) if out.strip() else {}
    states = {t["name"]: t["state"] for t in last.get("tasks", [])}
    tap.eq(states, {"spin": "failed", "after": "upstream_failed", "cleanup": "success"},
           "the spinning task failed, its cleanup ran")
    failed = [r for r in journal(last.get("run", "none")) if r["ev"] == "task_failed"] if last else []
    tap.eq(failed and failed[0]["error"]["code"], "flow.timeout", "failed with flow.timeout")
    tap.like(read(mark), "cleanup ran", "the cleanup task ran")


RUN_TIMEOUT_WF = write("run_timeout.lua", PRELUDE + """
local wf = flow.workflow { name = "spin" }
wf:task("spin", function() mark("started"); while true do end end)
wf:task("cleanup", { after = "spin", cleanup = true }, function() flow.sleep(0.05); mark("cleanup ran") end)
return wf
""")


@tap.test
def run_timeout_around_a_spin():
    t0 = time.time()
    p, mark = start([RUN_TIMEOUT_WF, "--state-dir", STATE, "--timeout", "0.4s", "--log-format", "json"],
                    "run-timeout")
    rc, out, err = finish(p, 20)
    tap.eq(rc, 1, "--timeout: exit 1 " + err)
    tap.ok(time.time() - t0 < 5, "in %.2f s" % (time.time() - t0))
    last = json.loads(out.splitlines()[-1]) if out.strip() else {}
    tap.like(last.get("reason", ""), "timed out after", "the reason is the run's timeout")
    tap.eq({t["name"]: t["state"] for t in last.get("tasks", [])}, {"spin": "cancelled", "cleanup": "success"},
           "the spinning task cancelled, the cleanup ran")


SLEEP_WF = write("sleepy.lua", PRELUDE + """
local wf = flow.workflow { name = "sleepy" }
wf:task("create", function() return "cluster-1" end)
wf:task("wait", { after = "create" }, function() mark("waiting"); flow.sleep(60) end)
wf:task("terminate", { after = { "create", "wait" }, cleanup = true }, function(ctx)
  flow.sleep(0.2)
  mark("terminated " .. ctx.results.create)
end)
return wf
""")


@tap.test
def sighup_is_sigterm_for_a_run():
    p, mark = start([SLEEP_WF, "--state-dir", STATE, "--log-format", "json"], "hup")
    tap.ok(wait_for(lambda: "waiting" in read(mark)), "the task sleeps")
    time.sleep(0.2)
    p.send_signal(signal.SIGHUP)
    rc, out, err = finish(p, 20)
    tap.eq(rc, 129, "SIGHUP: exit 129 " + err)
    tap.like(read(mark), "terminated cluster-1", "the cleanup task ran to its end")
    last = json.loads(out.splitlines()[-1]) if out.strip() else {}
    tap.eq(last.get("state"), "cancelled", "run cancelled")
    fin = [r for r in journal(last.get("run", "none")) if r["ev"] == "run_finished"] if last else []
    tap.eq(fin and fin[0]["exit"], 129, "journal: exit 129")
    # started under nohup (SIGHUP ignored), the terminal closing does not stop the run
    p = subprocess.Popen(["nohup", tap.FLOWRUN, "-e", "flow.sleep(0.5) return 'went on'"], cwd=TMP,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)
    p.send_signal(signal.SIGHUP)
    rc, out, _ = finish(p)
    tap.eq((rc, out.strip()), (0, '"went on"'), "under nohup SIGHUP stays ignored")


FOREVER = write("forever.lua", PRELUDE + """
local which = arg[1]
mark("started")
if which == "sleep" then flow.sleep(math.huge)
elseif which == "sleep1e308" then flow.sleep(1e308)
elseif which == "timeout" then flow.timeout(math.huge, flow.sleep, 1e308)
elseif which == "wait_any" then flow.wait_any({ flow.spawn(flow.sleep, math.huge) }, 1e308)
end
""")

FOREVER_WF = write("forever_wf.lua", PRELUDE + """
local wf = flow.workflow { name = "forever" }
wf:task("wait", { timeout = "99999999999999999999h" }, function() mark("started"); flow.sleep(math.huge) end)
return wf
""")


@tap.test
def forever_waits_idle_and_obey_sigint():
    cases = [("flow.sleep(math.huge)", [FOREVER, "sleep"]), ("flow.sleep(1e308)", [FOREVER, "sleep1e308"]),
             ("flow.timeout(math.huge, ...)", [FOREVER, "timeout"]),
             ("wait_any(hs, 1e308)", [FOREVER, "wait_any"]),
             ("task timeout 99999999999999999999h and --timeout the same",
              [FOREVER_WF, "--state-dir", STATE, "--timeout", "99999999999999999999h"])]
    for name, args in cases:
        p, mark = start(args, "forever")
        tap.ok(wait_for(lambda: "started" in read(mark)), name + ": waiting")
        c0 = cpu_seconds(p.pid)
        time.sleep(0.5)
        used = cpu_seconds(p.pid) - c0
        tap.ok(used < 0.1, "%s: CPU near idle (%.2f s in 0.5 s)" % (name, used))
        tap.eq(p.poll(), None, name + ": still waiting")
        t0 = time.time()
        p.send_signal(signal.SIGINT)
        rc, _, err = finish(p)
        tap.eq(rc, 130, name + ": SIGINT ends it: 130 " + err)
        tap.ok(time.time() - t0 < 1, name + ": at once")


CLOSE_WAITS = write("close_waits.lua", PRELUDE + """
local h = flow.spawn(function()
  local res <close> = setmetatable({}, { __close = function() mark("closing"); flow.sleep(0.01); mark("closed") end })
  flow.sleep(10)
end)
flow.sleep(0.05)
h:cancel()
local ok, err = pcall(h.wait, h)
print("task:", tostring(err))
local h2 = flow.spawn(function()
  local res <close> = setmetatable({}, { __close = function() error("close broke") end })
  error("body broke")
end)
ok, err = pcall(h2.wait, h2)
print("task2:", tostring(err))
""")


@tap.test
def close_that_waits_while_cancelled_is_reported():
    p, mark = start([CLOSE_WAITS], "close")
    rc, out, err = finish(p)
    tap.eq(rc, 0, "exit 0 " + err)
    tap.like(read(mark), "closing", "the __close handler ran")
    tap.ok("closed" not in read(mark).replace("closing", ""), "and could not wait")
    tap.like(err, "warning: task 2: a __close handler failed while the task was being cancelled",
             "a warning names the task")
    tap.like(err, "cannot wait here: flow.sleep was called by a __close handler", "and says why")
    tap.like(err, "flow.shield", "and what to use instead")
    tap.like(out, "task:\tflow.cancelled: task cancelled", "the task still ends cancelled")
    tap.like(err, "task 3: a __close handler failed while the task was failing: ", "a failing task too")
    tap.like(err, "close broke", "with the __close error")
    tap.like(out, "close_waits.lua:14: body broke", "the task keeps the error that ended it")


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
def repl_ctrl_c_stops_a_spinning_line():
    home = os.path.join(TMP, "home")
    os.makedirs(home)
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["HOME"] = home
        os.execv(tap.FLOWRUN, [tap.FLOWRUN])
    tap.like(pty_read(fd, until="> "), "Ctrl-D exits", "the REPL starts")
    os.write(fd, b"while true do end\n")
    time.sleep(0.5)
    t0 = time.time()
    os.kill(pid, signal.SIGINT)
    got = pty_read(fd, until="cancelled", timeout=5)
    tap.like(got, "cancelled", "Ctrl-C cancels a line that never waits")
    tap.ok(time.time() - t0 < 2, "promptly (%.2f s)" % (time.time() - t0))
    pty_read(fd, until="> ", timeout=2)
    os.write(fd, b"return 'prompt back'\n")
    tap.like(pty_read(fd, until="prompt back"), "prompt back", "the prompt is back and works")
    os.write(fd, b"\x04")
    _, status = os.waitpid(pid, 0)
    tap.eq(os.waitstatus_to_exitcode(status), 0, "Ctrl-D exits 0")


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
