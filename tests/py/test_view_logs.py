"""Logs a user can find (issue 10), as processes: `flowrun logs` prints a run's task log lines
per task and attempt, kept after the terminal is gone, and -f follows a live run to its end; a
run leaves no lock file behind; print() in a task reaches the output without the live view."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

TMP = tempfile.mkdtemp(prefix="flowrun-view-logs-")
STATE = os.path.join(TMP, "state")


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWRUN_VAR_", "FLOWRUN_SIM"))}
    e.update(extra)
    return e


def flowrun(*args, extra_env=None):
    p = subprocess.run([tap.FLOWRUN] + list(args), cwd=TMP, env=env(**(extra_env or {})),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


RETRY_WF = write("retry.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "retry" }
wf:task("flaky", { retries = 1, retry_delay = 0 }, function(ctx)
  ctx.log("flaky starts attempt", ctx.attempt)
  if ctx.attempt == 1 then error("first attempt fails", 0) end
  ctx.log("flaky done on attempt", ctx.attempt)
end)
wf:task("other", function(ctx) ctx.log("other says hello") print("other printed this") end)
return wf
""")

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+)#(\d+): (.*)$")


def parse(out):
    return [LINE.match(l).groups() for l in out.splitlines() if LINE.match(l)]


@tap.test
def test_logs_per_task_and_attempt():
    rc, out, err = flowrun(RETRY_WF, "--state-dir", STATE, "--log-format", "text")
    tap.eq(rc, 0, "the run succeeds on the retry " + err)
    tap.like(out, "other printed this", "print() in a task reaches the output (text log)")
    rc, out, err = flowrun("logs", "last", "--state-dir", STATE)
    tap.eq(rc, 0, "flowrun logs " + err)
    lines = parse(out)
    tap.eq(sorted(lines), sorted([("flaky", "1", "flaky starts attempt 1"),
                                  ("flaky", "2", "flaky starts attempt 2"),
                                  ("flaky", "2", "flaky done on attempt 2"),
                                  ("other", "1", "other says hello")]),
           "every ctx.log line, with its task and attempt, kept after the run")
    rc, out, err = flowrun("logs", "last", "flaky", "--state-dir", STATE)
    tap.eq({l[0] for l in parse(out)}, {"flaky"}, "logs RUN TASK: that task's lines only")
    rc, out, err = flowrun("logs", "last", "flaky", "--attempt", "1", "--state-dir", STATE)
    tap.eq(parse(out), [("flaky", "1", "flaky starts attempt 1")], "--attempt 1: that attempt's")
    rc, out, err = flowrun("logs", "last", "nope", "--state-dir", STATE)
    tap.eq(rc, 2, "an unknown task: exit 2")
    tap.like(err, "has no task nope", "named, with the run's tasks")
    rc, out, err = flowrun("logs", "last", "--attempt", "0", "--state-dir", STATE)
    tap.eq(rc, 2, "--attempt 0: exit 2")
    runs = os.path.join(STATE, "runs")
    tap.eq([n for n in os.listdir(runs) if "lock" in n], [], "no lock file left beside the journal")


@tap.test
def test_logs_follow_a_live_run():
    gate = os.path.join(TMP, "gate")
    wf = write("live.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "live" }
wf:task("waiter", function(ctx)
  ctx.log("before the gate")
  while not io.open(os.getenv("GATE")) do flow.sleep(0.05) end
  ctx.log("after the gate")
end)
return wf
""")
    state = os.path.join(TMP, "live-state")
    run = subprocess.Popen([tap.FLOWRUN, wf, "--state-dir", state, "--log-format", "json"],
                           cwd=TMP, env=env(GATE=gate), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    end = time.time() + 20
    rid = None
    while time.time() < end and rid is None:
        rc, out, _ = flowrun("logs", "last", "--state-dir", state)
        if "before the gate" in out:
            rid = "last"
        time.sleep(0.05)
    tap.ok(rid is not None, "the run's first line is readable while it runs")
    follow = subprocess.Popen([tap.FLOWRUN, "logs", "last", "-f", "--state-dir", state], cwd=TMP,
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)
    tap.ok(follow.poll() is None, "-f keeps following a live run")
    open(gate, "w").close()
    out, err = follow.communicate(timeout=20)
    run.communicate(timeout=20)
    tap.eq(follow.returncode, 0, "-f ends when the run does " + err)
    tap.eq([l[2] for l in parse(out)], ["before the gate", "after the gate"],
           "with every line, the one written while it followed too")


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
