"""How a run shows itself and a few process-level options: the live view on a terminal (pty),
text lines otherwise, secret parameters kept out of the journal, --sim/--sim-fail reaching
the settings (--sim), --max-active, virtual time in the journal's timestamps, a second SIGINT."""
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

TMP = tempfile.mkdtemp(prefix="flowrun-engine-view-")
STATE = os.path.join(TMP, "state")


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRUN_VAR_")}
    e.update(extra)
    return e


def flowrun(*args, extra_env=None):
    p = subprocess.run([tap.FLOWRUN] + list(args), cwd=TMP, env=env(**(extra_env or {})),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def journal(rid):
    with open(os.path.join(STATE, "runs", rid + ".jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


VIEW_WF = write("view.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "view" }
wf:task("first", function(ctx) ctx.log("hello from first") flow.sleep(0.6) return 1 end)
wf:task("second", { after = "first" }, function(ctx) ctx.progress(40, "copying") flow.sleep(0.2) end)
return wf
""")


@tap.test
def test_live_view_on_a_terminal():
    m, s = pty.openpty()
    p = subprocess.Popen([tap.FLOWRUN, VIEW_WF, "--state-dir", STATE], stdout=s, stderr=s,
                         cwd=TMP, env=env(TERM="xterm", COLUMNS="100", LINES="30"))
    os.close(s)
    out = b""
    while True:
        try:
            d = os.read(m, 65536)
        except OSError:
            break
        if not d:
            break
        out += d
    p.wait(30)
    os.close(m)
    text = out.decode("utf-8", "replace")
    tap.eq(p.returncode, 0, "exit 0")
    tap.ok("\x1b[3A\x1b[2K" in text, "the view is redrawn in place (cursor up, erase its lines)")
    tap.ok("> first" in text and "running" in text, "a line per task with its state")
    tap.ok("first: hello from first" in text, "log lines printed above the view")
    tap.ok("40% copying" in text, "progress shown on the task's line")
    tap.ok("SUCCESS" in text and "TASK" in text, "summary at the end")


@tap.test
def test_text_lines_when_not_a_terminal():
    rc, out, err = flowrun(VIEW_WF, "--state-dir", STATE, "--virtual-time")
    tap.eq(rc, 0, "exit 0")
    tap.ok("\x1b[" not in out, "no escape sequences in a pipe")
    lines = [l for l in out.splitlines() if l[:4].isdigit()]
    tap.ok(len(lines) >= 5, "timestamped lines")
    tap.ok(any(l.endswith("first: hello from first") for l in lines), "log line with task name")
    tap.ok(any("second: 40% copying" in l for l in lines), "progress line")


@tap.test
def test_secret_parameters_stay_out_of_the_journal():
    wfp = write("secret.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "secret", params = { password = { required = true, secret = true },
  user = "admin" } }
wf:task("use", function(ctx)
  if os.getenv("FAIL") == "1" then error("failing on purpose", 0) end
  return #ctx.params.password
end)
return wf
""")
    rc, out, err = flowrun(wfp, "--state-dir", STATE, "--log-format", "json",
                           extra_env={"FLOWRUN_VAR_PASSWORD": "hunter2-s3cret", "FAIL": "1"})
    tap.eq(rc, 1, "failed run")
    rid = json.loads(out.splitlines()[-1])["run"]
    raw = open(os.path.join(STATE, "runs", rid + ".jsonl")).read()
    tap.ok("hunter2" not in raw, "the secret value is not in the journal")
    tap.eq(journal(rid)[0].get("secret_params"), ["password"], "its name is")
    rc, out, _ = flowrun("show", rid, "--state-dir", STATE)
    tap.ok("hunter2" not in out and "password = *** (secret)" in out, "show masks it")
    rc, out, err = flowrun("resume", rid, "--state-dir", STATE, "--log-format", "json")
    tap.eq(rc, 2, "resume without the secret: exit 2")
    tap.ok("parameter password is required" in err, "says it is needed")
    rc, out, err = flowrun("resume", rid, "--state-dir", STATE, "--log-format", "json",
                           extra_env={"FLOWRUN_VAR_PASSWORD": "hunter2-s3cret"})
    tap.eq(rc, 0, "resume with the secret from the environment: " + err)
    res = json.loads(flowrun("show", rid, "--state-dir", STATE, "--json")[1])
    tap.eq(res["tasks"][0]["result"], len("hunter2-s3cret"), "the task saw the secret")


@tap.test
def test_sim_options_and_max_active():
    wfp = write("opts.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "opts" }
local cur, peak = 0, 0
for i = 1, 6 do
  wf:task("t" .. i, function()
    cur = cur + 1; peak = math.max(peak, cur); flow.sleep(1); cur = cur - 1
  end)
end
wf:task("report", { after = { "t1", "t2", "t3", "t4", "t5", "t6" } }, function()
  return { account = require("aws").sts.get_caller_identity().Account, peak = peak }
end)
return wf
""")
    rc, out, err = flowrun(wfp, "--state-dir", STATE, "--virtual-time", "--sim", "--sim-fail",
                           "emr.RunJobFlow=ThrottlingException", "--sim-fail", "dms.stop",
                           "--max-active", "2", "--log-format", "json")
    tap.eq(rc, 0, "exit 0 " + err)
    rid = json.loads(out.splitlines()[-1])["run"]
    res = json.loads(flowrun("show", rid, "--state-dir", STATE, "--json")[1])
    rep = [t for t in res["tasks"] if t["name"] == "report"][0]["result"]
    tap.eq(rep, {"account": "123456789012", "peak": 2},
           "--sim: the simulator answers the run's AWS calls; --max-active 2 held")
    j = journal(rid)
    tap.eq(j[0].get("sim"), {"fail": ["emr.RunJobFlow=ThrottlingException", "dms.stop"]},
           "the run records that it talks to the simulator, with its --sim-fail specs")
    span = j[-1]["t"] - j[0]["t"]
    tap.ok(2.9 < span < 3.5, "journal timestamps follow virtual time (3 waves of 1 s: %.2f)" % span)


@tap.test
def test_second_sigint_exits_at_once():
    wfp = write("stuck.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "stuck" }
wf:task("wait", function() flow.sleep(60) end)
wf:task("slow_cleanup", { after = "wait", cleanup = true }, function() flow.sleep(60) end)
return wf
""")
    p = subprocess.Popen([tap.FLOWRUN, wfp, "--state-dir", STATE, "--log-format", "json"], cwd=TMP,
                         env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rid = json.loads(p.stdout.readline())["run"]
    end = time.time() + 10
    while time.time() < end and not any(r["ev"] == "task_started" and r["task"] == "wait"
                                        for r in journal(rid)):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    end = time.time() + 10
    while time.time() < end and not any(r["ev"] == "task_started" and r["task"] == "slow_cleanup"
                                        for r in journal(rid)):
        time.sleep(0.05)
    tap.ok(p.poll() is None, "first SIGINT: still running the cleanup task")
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=10)
    tap.eq(p.returncode, 130, "second SIGINT: exit 130")
    tap.ok(time.time() - t0 < 5, "at once")


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
