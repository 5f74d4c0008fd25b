"""The live view in a real terminal emulator (tmux): a workflow with long task names, long
messages, wide characters (CJK, emoji, combining marks) and log lines between redraws, run at
40, 80, 100, 110, 120 and 180 columns with a resize in the middle; each captured screen must
hold every task's row exactly once, rows that fit the width, the block after the log lines and
nothing else (no stray fragment of an earlier redraw). Then the dms_to_emr pipeline as `make
demo` runs it (the simulator's time-lapse), sampled all along in a 100-column terminal, and its
failing-step variant."""
import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

ROOT = tap.ROOT
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-view-tty-")
TMUX = shutil.which("tmux")

ROW = re.compile(r"^[.>~+x!-] (t\d)")
LOG = re.compile(r"^\d\d:\d\d:\d\d ")
CONT = re.compile(r"^    \S")
ELAPSED = r"\d+(ms|\.\ds|s|m\d\ds|h\d\dm)"
FOOTER = re.compile(r"(^|  )" + ELAPSED + r"  \d+ (running|up_for_retry|pending|success|failed)")


def dwidth(s):
    """Terminal columns of s: East Asian wide and fullwidth 2, combining marks 0."""
    w = 0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return w


SOCK = [None]  # the socket of the current session's server: one server per session


def tmux(*args, check=True):
    p = subprocess.run([TMUX, "-u", "-S", SOCK[0]] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError("tmux %s: %s" % (" ".join(args), p.stderr.strip()))
    return p.stdout


def stop():
    if SOCK[0]:
        tmux("kill-server", check=False)
        SOCK[0] = None


def start(cmd, cols, rows, env):
    """A detached session of cols x rows running cmd (then EXIT=<status>, then waiting), on a
    tmux server of its own."""
    stop()
    start.n = getattr(start, "n", 0) + 1
    SOCK[0] = os.path.join(TMP, "tmux-%d.sock" % start.n)
    envs = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in env.items())
    shell = "env %s %s; echo EXIT=$?; sleep 600" % (envs, cmd)
    tmux("new-session", "-d", "-x", str(cols), "-y", str(rows), "sh", "-c", shell)


def screen(join=True):
    """The visible screen's lines (-J: lines the terminal wrapped are joined back)."""
    out = tmux("capture-pane", "-p", *(["-J"] if join else []))
    return out.rstrip("\n").split("\n")


def scrollback():
    """The scrollback and the screen, wrapped lines joined."""
    return tmux("capture-pane", "-p", "-J", "-S", "-").rstrip("\n").split("\n")


def wait_screen(pred, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        lines = screen()
        if pred(lines):
            return lines
        time.sleep(0.1)
    return None


def base_env(**extra):
    e = {"LANG": "C.UTF-8", "FLOWRUN_HOME": os.path.join(TMP, "home"), "PATH": os.environ["PATH"]}
    e.update(extra)
    return e


VIEWISH = re.compile(r"(running|pending|success|failed|up_for_retry)\s+#\d|" + ELAPSED + r"  \d+ \w")


def first_line_ok(l):
    """The screen's first line may be the end of a log line whose beginning scrolled off: fine,
    unless it looks like a piece of the view."""
    return not (ROW.match(l) or FOOTER.search(l) or VIEWISH.search(l))


def live_problems(lines, cols, tasks):
    """What is wrong with a screen captured during a run: [] when nothing."""
    body = [l for l in lines if l.strip()]
    if not body:
        return ["empty screen"]
    problems = []
    footer = body[-1]
    if not FOOTER.search(footer):
        problems.append("last line is not the footer: %r" % footer)
    # the block: the rows just above the footer; above them only log lines
    i = len(body) - 2
    while i >= 0 and ROW.match(body[i]):
        i -= 1
    block = body[i + 1:len(body) - 1]
    if len(block) == 0:
        problems.append("no task rows above the footer")
    for n, l in enumerate(body[:i + 1]):
        if ROW.match(l):
            problems.append("a task row above the log lines (a stale redraw): %r" % l)
        elif not (LOG.match(l) or CONT.match(l) or (n == 0 and first_line_ok(l))):
            problems.append("a stray line: %r" % l)
    count = collections.Counter(ROW.match(l).group(1) for l in block)
    for t in tasks:
        if count[t] != 1:
            problems.append("task %s has %d rows" % (t, count[t]))
    for l in block + [footer]:
        if dwidth(l) > cols - 1:
            problems.append("%d columns at width %d: %r" % (dwidth(l), cols, l))
    logs = collections.Counter(l for l in body if LOG.match(l))
    for l, n in logs.items():
        if n > 1:
            problems.append("log line printed %d times: %r" % (n, l))
    return problems


def check_live(what, cols, tasks, tries=8):
    """Captures until a screen passes: a capture may land in the middle of a redraw (tmux reads
    a large write in pieces), which the next one shows whole; a stale fragment stays, and fails
    every try."""
    problems = ["no capture"]
    for _ in range(tries):
        lines = screen()
        problems = live_problems(lines, cols, tasks)
        if not problems:
            break
        time.sleep(0.15)
    tap.ok(not problems, what)
    if problems:
        for p in problems[:12]:
            tap.diag(p)
        tap.diag("screen:\n" + "\n".join(screen(join=False)))
    return not problems


VIEW_WF = os.path.join(TMP, "view.lua")
with open(VIEW_WF, "w") as f:
    f.write(r'''
local flow = require "flow"
local gate = os.getenv("VIEW_GATE")
local function wait_gate()
  while true do
    local f = io.open(gate)
    if f then f:close() return end
    flow.sleep(0.05)
  end
end
local wf = flow.workflow { name = "view_check_with_a_rather_long_workflow_name" }
local T1 = "t1_extract_customers_from_the_source_database_with_a_very_long_name"
wf:task(T1, function(ctx)
  for i = 1, 4 do
    ctx.log("t1 log " .. i .. ": " .. string.rep("a long message with 数据仓库 and 🚀 ", 5))
    ctx.progress(i * 20, "copying 数据仓库 テーブル 🚀 rows " .. i .. " of a very long progress message wider than any terminal")
    flow.sleep(0.15)
  end
  print("t1 printed this", "through the view")
  ctx.log("t1 is waiting for the gate")
  wait_gate()
end)
wf:task("t2_short", function(ctx)
  ctx.progress(50, "処理中 ✔ é́ combining marks, then more text to fill the line up to its end")
  ctx.log("t2 says \27[31mred\27[0m with a\ttab")
  wait_gate()
end)
wf:task("t3_load", { after = T1 }, function(ctx) ctx.log("t3 multi\nline\nlog") end)
wf:task("t4_verify_the_rows_in_the_target_tables", { after = "t3_load" }, function() end)
wf:task("t5_notify", { after = "t2_short" }, function(ctx) ctx.log("t5 done") end)
return wf
''')
TASKS = ["t1", "t2", "t3", "t4", "t5"]


def final_problems(lines, tasks, state="SUCCESS"):
    body = [l for l in lines if l.strip()]
    problems = []
    if not any(("): %s in " % state) in l for l in body):
        problems.append("no %s summary" % state)
    rows = collections.Counter()
    in_summary = False
    for n, l in enumerate(body):
        if n == 0 and first_line_ok(l):
            continue
        if l.startswith("run ") and "): " in l:
            in_summary = True
            continue
        if ROW.match(l):
            problems.append("a live row left on the screen: %r" % l)
        if FOOTER.search(l):
            problems.append("the live footer left on the screen: %r" % l)
        m = re.match(r"^  (t\d)\S*\s+(\S+)", l)
        if in_summary and m and m.group(2) != "STATE":
            rows[m.group(1)] += 1
            continue
        if not (LOG.match(l) or CONT.match(l) or in_summary or l.startswith("EXIT=")):
            problems.append("a stray line: %r" % l)
    for t in tasks:
        if rows[t] != 1:
            problems.append("task %s has %d summary rows" % (t, rows[t]))
    logs = collections.Counter(l for l in body if LOG.match(l))
    for l, n in logs.items():
        if n > 1:
            problems.append("log line printed %d times: %r" % (n, l))
    return problems


@tap.test
def test_widths_and_a_resize():
    tap.ok(TMUX is not None, "tmux is installed (scripts/deps.sh installs it)")
    if not TMUX:
        return
    for first, then in [(40, 120), (80, 40), (100, 180), (110, 80), (120, 100), (180, 110)]:
        gate = os.path.join(TMP, "gate-%d" % first)
        cmd = "%s %s --state-dir %s" % (shlex.quote(tap.FLOWRUN), VIEW_WF,
                                         shlex.quote(os.path.join(TMP, "state")))
        start(cmd, first, 30, base_env(VIEW_GATE=gate))
        ready = wait_screen(lambda ls: any("t1 is waiting for the gate" in l for l in ls))
        tap.ok(ready is not None, "%d columns: the run reached the gate" % first)
        if ready is None:
            tap.diag("\n".join(screen(join=False)))
            continue
        time.sleep(0.6)
        check_live("%d columns: each task once, rows fit, nothing stray" % first, first, TASKS)
        back = scrollback()
        rows = collections.Counter(ROW.match(l).group(1) for l in back if ROW.match(l))
        tap.eq(dict(rows), {t: 1 for t in TASKS},
               "%d columns: no earlier copy of the view in the scrollback either" % first)
        s = "\n".join(back)
        tap.like(s, "t1 printed this through the view", "%d columns: print went through the view" % first)
        tap.like(s, "t2 says red with a tab", "%d columns: escape codes and tabs in a message cleaned" % first)
        tmux("resize-window", "-x", str(then))
        time.sleep(0.8)  # the view redraws twice a second, asking the terminal its size
        check_live("resized %d -> %d columns: each task once, rows fit, nothing stray" % (first, then),
                   then, TASKS)
        open(gate, "w").close()
        done = wait_screen(lambda ls: any(l.startswith("EXIT=") for l in ls))
        tap.ok(done is not None and "EXIT=0" in done, "%d -> %d: exit 0" % (first, then))
        problems = final_problems(screen(), TASKS)
        tap.ok(not problems, "%d -> %d: the summary replaced the view, each task once" % (first, then))
        for p in problems[:12]:
            tap.diag(p)
        if problems:
            tap.diag("screen:\n" + "\n".join(screen(join=False)))
    stop()


def pipeline_cmd(state, *more):
    """The command `make demo` runs (scripts/demo.sh), at twice its time-lapse speed."""
    return " ".join(shlex.quote(a) for a in [
        tap.FLOWRUN, os.path.join(ROOT, "workflows", "dms_to_emr.lua"),
        "--vars-file", os.path.join(ROOT, "workflows", "config", "example.json"),
        "--var", "source_conninfo=%s dbname=%s" % (PG, DB), "--state-dir", state, "--sim",
        "--var", "dms_poll_every=0.12", "--var", "emr_poll_every=0.25", "--var", "step_log_wait=1",
    ] + list(more))


DB = "flowrun_view_%d" % os.getpid()
DURATIONS = ('{"dms_start":0.5,"dms_rows_per_second":240000,"dms_min_table":0.2,"dms_stop":0.2,'
             '"emr_starting":2.7,"emr_bootstrapping":1,"emr_step":2,"emr_step_per_table":0.16,'
             '"emr_step_pending":0.1,"emr_cancel":0.15,"emr_terminating":0.6,"athena_query":0.05}')
PIPELINE_TASKS = ["preflight", "start_dms", "wait_dms", "check_raw", "upload_job", "glue_database",
                  "create_cluster", "wait_cluster", "add_step", "wait_step", "terminate_cluster",
                  "verify"]


def pipeline_row(l):
    m = re.match(r"^[.>~+x!-] (\w+)", l)
    return m and m.group(1) in PIPELINE_TASKS and m.group(1)


def pipeline_live_problems(lines, cols):
    """The same checks as live_problems, for the pipeline's task names."""
    body = [l for l in lines if l.strip()]
    problems = []
    footer = body[-1] if body else ""
    if not FOOTER.search(footer):
        return ["last line is not the footer: %r" % footer]
    i = len(body) - 2
    while i >= 0 and pipeline_row(body[i]):
        i -= 1
    block = body[i + 1:len(body) - 1]
    for n, l in enumerate(body[:i + 1]):
        if pipeline_row(l):
            problems.append("a task row above the log lines: %r" % l)
        elif not (LOG.match(l) or CONT.match(l) or (n == 0 and first_line_ok(l))):
            problems.append("a stray line: %r" % l)
    count = collections.Counter(pipeline_row(l) for l in block)
    for t in PIPELINE_TASKS:
        if count[t] != 1:
            problems.append("task %s has %d rows" % (t, count[t]))
    for l in block + [footer]:
        if dwidth(l) > cols - 1:
            problems.append("%d columns at width %d: %r" % (dwidth(l), cols, l))
    return problems


@tap.test
def seed_file():
    """The demo world's source secret pointing at the test's database, as scripts/demo.sh gives
    it to the simulator: its DMS reads the source tables through it."""
    path = os.path.join(TMP, "seed.json")
    secret = {"engine": "postgres", "host": os.environ["FLOWRUN_TEST_PGHOST"],
              "port": int(os.environ["FLOWRUN_TEST_PGPORT"]), "username": os.environ["FLOWRUN_TEST_PGUSER"],
              "password": os.environ["FLOWRUN_TEST_PGPASSWORD"], "dbname": DB}
    with open(path, "w") as f:
        json.dump({"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": secret}]}, f)
    return path


def test_the_demo_in_100_columns():
    if not TMUX or not PG:
        tap.ok(False, "tmux and FLOWRUN_TEST_PG are needed")
        return
    subprocess.run(["psql", PG, "-q", "-c", "CREATE DATABASE " + DB], check=True,
                   stdout=subprocess.PIPE)
    subprocess.run(["psql", PG + " dbname=" + DB, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    "SET client_min_messages = warning", "-f",
                    os.path.join(ROOT, "scripts", "demo-source.sql")], check=True,
                   stdout=subprocess.PIPE)
    try:
        start(pipeline_cmd(os.path.join(TMP, "demo-state")), 100, 40,
              base_env(FLOWRUN_SIM_DURATIONS=DURATIONS,
                       FLOWRUN_SIM_STATE=os.path.join(TMP, "demo-sim.json"), FLOWRUN_SIM_SEED=seed_file()))
        samples, bad, worst, done = 0, 0, [], None
        end = time.time() + 90
        while time.time() < end:
            lines = screen()
            if any(l.startswith("EXIT=") for l in lines):
                done = lines
                break
            if not any(FOOTER.search(l) for l in lines):
                time.sleep(0.1)
                continue
            samples += 1
            problems = pipeline_live_problems(lines, 100)
            if problems:
                # a capture in the middle of a redraw: the next one must be whole
                time.sleep(0.05)
                lines2 = screen()
                if any(l.startswith("EXIT=") for l in lines2):
                    continue
                problems = pipeline_live_problems(lines2, 100)
                if problems:
                    bad += 1
                    worst = problems + ["screen:"] + screen(join=False)
            time.sleep(0.2)
        tap.ok(samples >= 10, "the live view sampled all along the run (%d samples)" % samples)
        tap.eq(bad, 0, "every sample: each task once, rows within 99 columns, nothing stray")
        for p in worst[:60]:
            tap.diag(p)
        tap.ok(done is not None and "EXIT=0" in done, "the pipeline succeeded")
        s = "\n".join(screen())
        tap.like(s, "(dms_to_emr): SUCCESS in", "the summary")
        tap.eq(sum(1 for l in screen() if re.match(r"^  preflight\s+success", l)), 1,
               "each task once in it (preflight)")
        tap.ok(not any(pipeline_row(l) for l in screen()), "no live row left behind")

        # a failing step (DEMO_FAIL=emr.step): the error's lines above, its headline and where
        # to read the rest in the summary, at 80 columns
        start(pipeline_cmd(os.path.join(TMP, "fail-state"), "--sim-fail", "emr.step",
                           "--virtual-time"), 80, 60,
              base_env(FLOWRUN_SIM_DURATIONS=DURATIONS,
                       FLOWRUN_SIM_STATE=os.path.join(TMP, "fail-sim.json"), FLOWRUN_SIM_SEED=seed_file()))
        lines = wait_screen(lambda ls: any(l.startswith("EXIT=") for l in ls), timeout=90)
        tap.ok(lines is not None and "EXIT=1" in lines, "the failing run exits 1")
        s = "\n".join(screen())
        tap.like(s, "wait_step: failed after 1 attempt(s): emr.step_failed", "the failure as a log line")
        tap.like(s, "\n    Traceback (most recent call last):", "with the stderr tail as lines")
        tap.ok(re.search(r"\n  wait_step\s+failed\s+1\s+\S+\s+emr\.step_failed", s) is not None,
               "the summary row has the error's first line")
        tap.like(s, "the whole error of wait_step: flowrun show ", "and where to read the rest")
        tap.ok(all(dwidth(l) <= 80 for l in screen(join=False)), "nothing wider than the screen")
    finally:
        stop()
        subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)


if TMUX:
    stop()
shutil.rmtree(TMP, ignore_errors=True)
tap.done()
