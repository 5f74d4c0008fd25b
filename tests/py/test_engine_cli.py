"""The workflow engine as a process: exit codes, validation, parameters from every source,
runs/show/resume/graph/plan, json logs, run timeout, a SIGKILL in the middle of a run then
resume, SIGINT/SIGTERM during a wait running the cleanup task, a journal cut by a crash."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

TMP = tempfile.mkdtemp(prefix="flowrun-engine-")
STATE = os.path.join(TMP, "state")
os.makedirs(os.path.join(STATE, "runs"))


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def env(**extra):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("FLOWRUN_VAR_"):
            del e[k]
    e.update(extra)
    return e


def flowrun(*args, extra_env=None, timeout=60):
    p = subprocess.run([tap.FLOWRUN] + list(args), cwd=TMP, env=env(**(extra_env or {})),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def journal_of(run_id):
    path = os.path.join(STATE, "runs", run_id + ".jsonl")
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def runs_json():
    rc, out, err = flowrun("runs", "--state-dir", STATE, "--json")
    assert rc == 0, err
    return json.loads(out)


def show_json(run_id):
    rc, out, err = flowrun("show", run_id, "--state-dir", STATE, "--json")
    assert rc == 0, err
    return json.loads(out)


def wait_for(pred, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def run_id_from(out):
    for line in out.splitlines():
        if "resume with: flowrun resume " in line:
            return line.split("resume with: flowrun resume ")[1].split()[0]
        if line.startswith("run ") and "(" in line:
            return line.split()[1]
    return None


PARAMS_WF = write("params.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "params", params = { a = "da", b = "db", c = "dc", d = "dd",
  n = 1, arn = { required = true } } }
wf:task("echo", function(ctx) return ctx.params end)
return wf
""")


@tap.test
def test_success_runs_show_and_json_log():
    rc, out, err = flowrun(PARAMS_WF, "--state-dir", STATE, "--var", "arn=x", "--log-format", "json")
    tap.eq(rc, 0, "exit 0")
    events = [json.loads(l) for l in out.splitlines() if l.strip()]
    tap.ok(all("ts" in e and "event" in e for e in events), "every stdout line is a JSON event")
    kinds = [e["event"] for e in events]
    tap.eq(kinds[0], "run_started", "first event")
    tap.ok("task_started" in kinds and "task_succeeded" in kinds, "task events")
    tap.eq(events[-1]["event"], "run_finished", "last event")
    tap.eq(events[-1]["state"], "success", "state success")
    rid = events[-1]["run"]
    listed = [r for r in runs_json() if r["id"] == rid]
    tap.eq(len(listed), 1, "flowrun runs lists it")
    tap.eq(listed and listed[0]["state"], "success", "as success")
    rc, out, _ = flowrun("runs", "--state-dir", STATE)
    tap.like(out, rid, "text listing has the id")
    tap.like(out, "params", "and the workflow")
    rc, out, _ = flowrun("show", rid, "--state-dir", STATE)
    tap.eq(rc, 0, "show exit 0")
    tap.like(out, "echo", "show lists the task")
    tap.like(out, '"arn":"x"', "show prints the result")


@tap.test
def test_parameter_precedence_in_a_process():
    vf = write("vars.json", json.dumps({
        "b": {"value": "file-b", "type": "string", "sensitive": False},
        "c": {"value": "file-c", "type": "string", "sensitive": False},
        "d": {"value": "file-d", "type": "string", "sensitive": False},
        "arn": {"value": "file-arn", "type": "string", "sensitive": False},
        "other_output": {"value": [1, 2], "type": ["tuple", ["number", "number"]], "sensitive": False}}))
    rc, out, err = flowrun(PARAMS_WF, "--state-dir", STATE, "--vars-file", vf, "--var", "d=var-d",
                           "--log-format", "json",
                           extra_env={"FLOWRUN_VAR_C": "env-c", "FLOWRUN_VAR_D": "env-d",
                                      "FLOWRUN_VAR_N": "7"})
    tap.eq(rc, 0, "exit 0: " + err)
    rid = json.loads(out.splitlines()[-1])["run"]
    res = [t for t in show_json(rid)["tasks"] if t["name"] == "echo"][0]["result"]
    tap.eq(res, {"a": "da", "b": "file-b", "c": "env-c", "d": "var-d", "n": 7, "arn": "file-arn"},
           "defaults < vars-file < FLOWRUN_VAR_ < --var, types kept")


@tap.test
def test_invalid_input_exit_2():
    before = set(os.listdir(os.path.join(STATE, "runs")))
    rc, out, err = flowrun(PARAMS_WF, "--state-dir", STATE)
    tap.eq(rc, 2, "a required parameter left unset: exit 2")
    tap.like(err, "parameter arn is required", "says which")
    cyc = write("cycle.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "cyc" }
local started = false
wf:task("a", { after = "c" }, function() started = true end)
wf:task("b", { after = "a" }, function() end)
wf:task("c", { after = "b" }, function() end)
wf:task("d", { after = "nope", trigger = "whenever" }, function() end)
return wf
""")
    rc, out, err = flowrun(cyc, "--state-dir", STATE)
    tap.eq(rc, 2, "cycle: exit 2")
    tap.like(err, "dependency cycle: a -> b -> c -> a", "the cycle is shown")
    tap.like(err, 'depends on unknown task "nope"', "unknown dependency")
    tap.like(err, 'unknown trigger "whenever"', "bad option")
    rc, _, err = flowrun(PARAMS_WF, "--state-dir", STATE, "--var", "arn=x", "--var", "zz=1")
    tap.eq(rc, 2, "unknown --var: exit 2")
    rc, _, err = flowrun(PARAMS_WF, "--state-dir", STATE, "--bogus")
    tap.eq(rc, 2, "unknown option: exit 2")
    tap.eq(set(os.listdir(os.path.join(STATE, "runs"))), before, "nothing started, no journal")
    rc, _, err = flowrun("show", "nope", "--state-dir", STATE)
    tap.eq(rc, 2, "show of an unknown run: exit 2")


COUNTER_WF = """
local flow = require "flow"
local function bump(name)
  local p = os.getenv("COUNT_DIR") .. "/" .. name
  local f = io.open(p, "a"); f:write("x"); f:close()
end
local wf = flow.workflow { name = "crashy" }
wf:task("a", function() bump("a") return "A" end)
wf:task("b", { after = "a" }, function(ctx)
  bump("b")
  flow.sleep(tonumber(os.getenv("SLEEP_B") or "0"))
  if os.getenv("FAIL_B") == "1" then error("b failed on purpose", 0) end
  return ctx.results.a .. "B"
end)
wf:task("c", { after = "b" }, function(ctx) bump("c") return ctx.results.b .. "C" end)
wf:task("cleanup", { after = "c", cleanup = true }, function() bump("cleanup") end)
return wf
%s
"""


def counts(d):
    return {n: len(open(os.path.join(d, n)).read()) for n in sorted(os.listdir(d))}


@tap.test
def test_failed_run_then_resume_and_file_change():
    cdir = tempfile.mkdtemp(dir=TMP)
    wfp = write("crashy.lua", COUNTER_WF % "")
    rc, out, err = flowrun(wfp, "--state-dir", STATE, "--log-format", "text",
                           extra_env={"COUNT_DIR": cdir, "FAIL_B": "1"})
    tap.eq(rc, 1, "failed run: exit 1")
    tap.like(out, "b failed on purpose", "summary shows the error")
    tap.like(out, "FAILED", "summary says failed")
    rid = run_id_from(out)
    tap.ok(rid, "run id printed: %s" % rid)
    tap.eq(counts(cdir), {"a": 1, "b": 1, "cleanup": 1}, "a, b and the cleanup ran once")
    # the file changes: resume refuses without --force
    write("crashy.lua", COUNTER_WF % "-- edited")
    rc, out, err = flowrun("resume", rid, "--state-dir", STATE, extra_env={"COUNT_DIR": cdir})
    tap.eq(rc, 2, "changed file: exit 2")
    tap.like(err, "changed since run", "says why")
    tap.like(err, "--force", "and how")
    rc, out, err = flowrun("resume", rid, "--state-dir", STATE, "--force", "--log-format", "text",
                           extra_env={"COUNT_DIR": cdir})
    tap.eq(rc, 0, "resumed with --force: exit 0 " + err)
    tap.eq(counts(cdir), {"a": 1, "b": 2, "c": 1, "cleanup": 2},
           "a kept its result; b, c and the cleanup ran")
    j = journal_of(rid)
    tap.eq([r for r in j if r["ev"] == "run_resumed"][0].get("forced"), True, "forced resume journaled")
    res = {t["name"]: t for t in show_json(rid)["tasks"]}
    tap.eq(res["c"]["result"], "ABC", "c used a's recorded result")
    rc, out, _ = flowrun("resume", rid, "--state-dir", STATE)
    tap.eq(rc, 0, "resuming a succeeded run: nothing to do")
    tap.like(out, "nothing to resume", "says so")


@tap.test
def test_sigkill_mid_run_then_resume():
    cdir = tempfile.mkdtemp(dir=TMP)
    wfp = write("killme.lua", COUNTER_WF % "")
    p = subprocess.Popen([tap.FLOWRUN, wfp, "--state-dir", STATE, "--log-format", "json"], cwd=TMP,
                         env=env(COUNT_DIR=cdir, SLEEP_B="30"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    first = json.loads(p.stdout.readline())
    rid = first["run"]
    ok = wait_for(lambda: any(r["ev"] == "task_started" and r["task"] == "b" for r in journal_of(rid)))
    tap.ok(ok, "b started (journaled)")
    # the start is journaled before b's body runs: wait until it has (counted once)
    wait_for(lambda: counts(cdir).get("b") == 1)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    tap.eq(p.returncode, -9, "killed")
    j = journal_of(rid)
    tap.ok(any(r["ev"] == "task_succeeded" and r["task"] == "a" for r in j),
           "a's success was durable before b started")
    tap.ok(not any(r["ev"] == "run_finished" for r in j), "no run_finished")
    listed = [r for r in runs_json() if r["id"] == rid][0]
    tap.eq(listed["state"], "interrupted", "runs shows it interrupted")
    states = {t["name"]: t["state"] for t in show_json(rid)["tasks"]}
    tap.eq(states, {"a": "success", "b": "running", "c": "pending", "cleanup": "pending"},
           "show: a done, b running at the crash, the rest never started")
    # a crash can cut the last line: append half a record
    with open(os.path.join(STATE, "runs", rid + ".jsonl"), "a") as f:
        f.write('{"ev":"task_succ')
    rc, out, err = flowrun("show", rid, "--state-dir", STATE)
    tap.eq(rc, 0, "show reads a journal whose last line was cut")
    tap.like(out, "last line was cut", "and says so")
    rc, out, err = flowrun("resume", rid[:-1], "--state-dir", STATE, "--log-format", "text",
                           extra_env={"COUNT_DIR": cdir, "SLEEP_B": "0"})
    tap.eq(rc, 0, "resume (by id prefix) finished the run: " + err)
    tap.eq(counts(cdir), {"a": 1, "b": 2, "c": 1, "cleanup": 1},
           "a not re-run; b (running at the crash) re-ran; c and the cleanup ran")
    tap.eq(show_json(rid)["state"], "success", "run now success")


SIGNAL_WF = write("sig.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "sig" }
wf:task("create", function() return "cluster-1" end)
wf:task("wait", { after = "create" }, function() flow.sleep(60) end)
wf:task("after_wait", { after = "wait" }, function() error("must not run") end)
wf:task("terminate", { after = { "create", "wait" }, cleanup = true }, function(ctx)
  flow.sleep(0.3)   -- a cleanup that waits (an API call)
  local f = io.open(os.getenv("MARK"), "w"); f:write(ctx.results.create); f:close()
end)
return wf
""")


def signal_run(sig, want_rc):
    mark = os.path.join(TMP, "mark-%d" % sig)
    p = subprocess.Popen([tap.FLOWRUN, SIGNAL_WF, "--state-dir", STATE, "--log-format", "json"],
                         cwd=TMP, env=env(MARK=mark), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    rid = json.loads(p.stdout.readline())["run"]
    ok = wait_for(lambda: any(r["ev"] == "task_started" and r["task"] == "wait" for r in journal_of(rid)))
    tap.ok(ok, "the wait started")
    time.sleep(0.2)
    t0 = time.time()
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    tap.eq(p.returncode, want_rc, "exit %d after signal %d" % (want_rc, sig))
    tap.ok(time.time() - t0 < 10, "did not wait for the 60 s sleep")
    tap.ok(os.path.exists(mark) and open(mark).read() == "cluster-1",
           "the cleanup task ran to the end and saw create's result")
    last = json.loads(out.splitlines()[-1])
    tap.eq(last["state"], "cancelled", "run cancelled")
    states = {t["name"]: t["state"] for t in last["tasks"]}
    tap.eq(states, {"create": "success", "wait": "cancelled", "after_wait": "cancelled",
                    "terminate": "success"}, "task states")
    fin = [r for r in journal_of(rid) if r["ev"] == "run_finished"]
    tap.eq(fin and fin[0]["state"], "cancelled", "journal: run_finished cancelled")
    tap.eq(fin and fin[0]["exit"], want_rc, "journal: exit code")


@tap.test
def test_sigint_during_wait_runs_cleanup():
    signal_run(signal.SIGINT, 130)


@tap.test
def test_sigterm_during_wait_runs_cleanup():
    signal_run(signal.SIGTERM, 143)


@tap.test
def test_run_timeout_and_virtual_time():
    wfp = write("slow.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "slow" }
wf:task("poll", function()
  return flow.poll(function() return flow.now() > 6 * 3600, "RUNNING" end, { every = "30s" })
end)
wf:task("clean", { after = "poll", cleanup = true }, function() return "cleaned" end)
return wf
""")
    t0 = time.time()
    rc, out, err = flowrun(wfp, "--state-dir", STATE, "--virtual-time", "--log-format", "text")
    tap.eq(rc, 0, "six hours of 30 s polls: exit 0 " + err)
    tap.ok(time.time() - t0 < 5, "in %.2f s of real time" % (time.time() - t0))
    tap.like(out, "poll: RUNNING", "poll status logged")
    rc, out, err = flowrun(wfp, "--state-dir", STATE, "--virtual-time", "--timeout", "1h",
                           "--log-format", "json")
    tap.eq(rc, 1, "--timeout 1h: exit 1")
    last = json.loads(out.splitlines()[-1])
    tap.like(last.get("reason", ""), "timed out after 1h00m", "reason")
    tap.eq({t["name"]: t["state"] for t in last["tasks"]}, {"poll": "cancelled", "clean": "success"},
           "poll cancelled, cleanup ran")


@tap.test
def test_graph_and_plan():
    wfp = write("g.lua", COUNTER_WF % "")
    rc, out, err = flowrun("graph", wfp)
    tap.eq(rc, 0, "graph exit 0 " + err)
    tap.like(out, 'digraph "crashy"', "dot")
    tap.like(out, '"a" -> "b";', "edge")
    rc, out, err = flowrun("graph", wfp, "--format", "mermaid")
    tap.like(out, "flowchart LR", "mermaid")
    tap.like(out, "t_b --> t_c", "mermaid edge")
    cdir = tempfile.mkdtemp(dir=TMP)
    rc, out, err = flowrun(wfp, "--state-dir", STATE, "--log-format", "json",
                           extra_env={"COUNT_DIR": cdir, "FAIL_B": "1"})
    rid = json.loads(out.splitlines()[-1])["run"]
    rc, out, err = flowrun("graph", wfp, "--run", rid, "--state-dir", STATE)
    tap.like(out, '"b" [label="b", fillcolor="#f08080"', "b red (failed)")
    tap.like(out, '"a" [label="a", fillcolor="#8fd18f"', "a green")
    rc, out, err = flowrun("graph", wfp, "--format", "mermaid", "--run", rid, "--state-dir", STATE)
    tap.like(out, "class t_b failed", "mermaid class")
    rc, out, err = flowrun("plan", PARAMS_WF, "--var", "arn=zz", extra_env={"FLOWRUN_VAR_B": "eb"})
    tap.eq(rc, 0, "plan exit 0 " + err)
    tap.like(out, 'arn                      = "zz"  (--var)', "param from --var")
    tap.like(out, 'b                        = "eb"  (env)', "param from env")
    tap.like(out, "1. echo", "task listed")
    rc, out, err = flowrun("plan", PARAMS_WF)
    tap.eq(rc, 2, "plan with a required parameter unset: exit 2")
    rc, out, err = flowrun(PARAMS_WF, "--help")
    tap.eq(rc, 0, "--help exit 0")
    tap.like(out, "arn", "lists parameters")
    tap.like(out, "--vars-file FILE", "and options")


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
