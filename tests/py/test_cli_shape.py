"""The one command line: options before or after the workflow file, one generated help, every
command listed; where runs are kept (FLOWRUN_HOME, the per-user default, `runs` says where it
looked); a file that is not a workflow refused the same way by every command; parameter files
refused before anything starts (wrong type, null for a required parameter, a list, a
directory), naming the parameter and the file; errors of every shape journaled (non-UTF-8,
raising __tostring, raising __index), a non-UTF-8 log line under --log-format json; the whole
multi-line error in `show RUN TASK`; out of memory reported as such."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

TMP = tempfile.mkdtemp(prefix="flowrun-cli-")
HOME = os.path.join(TMP, "home")
os.makedirs(HOME)


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def env(**extra):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("FLOWRUN_VAR_", "FLOWRUN_HOME", "FLOWRUN_SIM", "FLOWRUN_DEBUG",
                              "XDG_STATE_HOME"))}
    e["HOME"] = HOME
    e.update(extra)
    return e


def flowrun(*args, cwd=TMP, extra_env=None, timeout=60):
    p = subprocess.run([tap.FLOWRUN] + list(args), cwd=cwd, env=env(**(extra_env or {})),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


OK_WF = write("ok.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "ok", params = { n = 1 } }
wf:task("a", function(ctx) ctx.log("n is", ctx.params.n) return ctx.params.n end)
return wf
""")


@tap.test
def options_before_or_after_the_file():
    state = os.path.join(TMP, "s1")
    for args in (["--debug", "sched", OK_WF, "--state-dir", state, "--var", "n=2"],
                 [OK_WF, "--var", "n=2", "--debug", "sched", "--state-dir", state],
                 ["run", OK_WF, "--debug", "sched", "--var=n=2", "--state-dir=" + state],
                 ["--virtual-time", "run", "--state-dir", state, OK_WF, "--var", "n=2"]):
        rc, out, err = flowrun(*args)
        tap.eq(rc, 0, "accepted: %s %s" % (" ".join(a.replace(TMP, "") for a in args), err[-200:]))
    rc, out, err = flowrun(OK_WF, "--debug", "asw", "--state-dir", state)
    tap.eq(rc, 2, "--debug asw: exit 2")
    tap.like(err, "asw", "names the unknown category")
    tap.like(err, "aws", "and lists the known ones")
    rc, out, err = flowrun(OK_WF, "--bogus")
    tap.eq(rc, 2, "an unknown run option: exit 2")
    tap.like(err, "--bogus", "named")


@tap.test
def one_help_lists_everything():
    rc, out, _ = flowrun("--help")
    tap.eq(rc, 0, "--help")
    for word in ["run WORKFLOW.lua", "runs", "show RUN_ID [TASK]", "logs RUN_ID", "resume RUN_ID",
                 "graph WORKFLOW.lua", "plan WORKFLOW.lua", "repl", "--log-format", "--max-active",
                 "--no-fsync", "--sim-fail", "--state-dir", "FLOWRUN_HOME"]:
        tap.like(out, word, "flowrun --help lists " + word)
    for cmd in ["run", "runs", "show", "logs", "resume", "graph", "plan", "repl"]:
        rc, out, err = flowrun(cmd, "--help")
        tap.eq(rc, 0, cmd + " --help: exit 0 " + err)
        tap.like(out, "flowrun " + cmd, cmd + " --help: its usage")
    rc, out, _ = flowrun(OK_WF, "--help")
    tap.like(out, "n ", "WORKFLOW.lua --help lists the workflow's parameters")
    tap.like(out, "--max-active", "and the run options")


@tap.test
def where_runs_are_kept():
    home = os.path.join(TMP, "fh")
    other = tempfile.mkdtemp(dir=TMP)
    rc, out, err = flowrun(OK_WF, extra_env={"FLOWRUN_HOME": home})
    tap.eq(rc, 0, "run with FLOWRUN_HOME " + err)
    rc, out, err = flowrun("runs", cwd=other, extra_env={"FLOWRUN_HOME": home})
    tap.like(out, "runs in " + home, "runs from another directory finds them and says where")
    tap.like(out, "ok ", "the run is listed")
    rc, out, err = flowrun("runs", cwd=other)
    tap.like(out, "no runs in " + os.path.join(HOME, ".local", "state", "flowrun"),
             "without FLOWRUN_HOME: the per-user default, named")
    rc, out, err = flowrun(OK_WF, cwd=other)
    tap.eq(rc, 0, "a run with the default home")
    rc, out, err = flowrun("runs", cwd=TMP)
    tap.like(out, "runs in " + os.path.join(HOME, ".local", "state", "flowrun"),
             "found from any directory")
    rc, out, err = flowrun("show", "last", "--json", extra_env={"FLOWRUN_HOME": home})
    tap.eq(json.loads(out)["tasks"][0]["result"], 1, "show last")


@tap.test
def not_a_workflow_refused_alike():
    num = write("num.lua", "return 42\n")
    state = os.path.join(TMP, "s2")
    for args in (["run", num, "--state-dir", state], ["plan", num], ["graph", num]):
        rc, out, err = flowrun(*args)
        tap.eq(rc, 2, " ".join(args[:1]) + ": exit 2")
        tap.like(err, "did not return a workflow", args[0] + ": says why")
        tap.like(err, "it returned a number", args[0] + ": and what it returned")
    tap.ok(not os.path.exists(os.path.join(state, "runs")) or
           os.listdir(os.path.join(state, "runs")) == [], "nothing started")
    rc, out, err = flowrun("run", TMP)
    tap.eq(rc, 2, "a directory: exit 2")
    tap.like(err, "is a directory", "says so")


@tap.test
def parameter_files_checked_before_anything_starts():
    wf = write("typed.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "typed", params = { n = 1, arn = { required = true },
  flag = false, name = "x", list = { type = "table" } } }
wf:task("a", function() io.open(os.getenv("MARK"), "w"):close() end)
return wf
""")
    mark = os.path.join(TMP, "started")
    cases = [
        ('{"arn": "a", "n": true}', ["parameter n", "expected a number", "got a boolean"]),
        ('{"arn": "a", "n": [1, 2]}', ["parameter n", "expected a number", "list"]),
        ('{"arn": null}', ["parameter arn", "null", "required"]),
        ('[{"arn": "a"}]', ["expected a JSON object", "got a list"]),
        ('{"arn": "a", "flag": "maybe"}', ["parameter flag", "true or false"]),
        ('{"arn": {"value": "a", "type": "string"}, "n": {"value": [1], "type": ["list", "number"]}}',
         ["parameter n", "terraform says its type is list"]),
        ('{"arn": "a", "n": 1.5}', ["parameter n", "expected an integer"]),
    ]
    for i, (doc, words) in enumerate(cases):
        vf = write("vars%d.json" % i, doc)
        rc, out, err = flowrun(wf, "--vars-file", vf, "--state-dir", os.path.join(TMP, "s3"),
                               extra_env={"MARK": mark})
        tap.eq(rc, 2, "vars file %d: exit 2" % i)
        for w in words:
            tap.like(err, w, "vars file %d: says %r" % (i, w))
        tap.like(err, vf, "vars file %d: names the file" % i)
        tap.ok(not os.path.exists(mark), "vars file %d: nothing started" % i)
    rc, out, err = flowrun(wf, "--vars-file", TMP, "--state-dir", os.path.join(TMP, "s3"))
    tap.eq(rc, 2, "a directory as --vars-file: exit 2")
    tap.like(err, "is a directory", "says so")
    ok = write("good.json", '{"arn": {"value": "a", "type": "string", "sensitive": false}, '
               '"n": "7", "flag": true, "name": 5, "list": [1, 2]}')
    rc, out, err = flowrun(wf, "--vars-file", ok, "--state-dir", os.path.join(TMP, "s3"),
                           extra_env={"MARK": mark})
    tap.eq(rc, 0, "a good file (terraform shape, numeric string, number for a string) " + err)


@tap.test
def every_failure_is_journaled():
    wf = write("weird.lua", r"""
local flow = require "flow"
local wf = flow.workflow { name = "weird" }
wf:task("bytes", function() error("caf\xe9 \xff broke", 0) end)
wf:task("tostring_raises", function()
  error(setmetatable({}, { __tostring = function() error("no string for you") end }))
end)
wf:task("index_raises", function()
  error(setmetatable({}, { __index = function() error("do not look") end }))
end)
wf:task("logs_bytes", function(ctx) ctx.log("bad \xc3\x28 byte") return 1 end)
return wf
""")
    state = os.path.join(TMP, "s4")
    rc, out, err = flowrun(wf, "--state-dir", state, "--log-format", "json")
    tap.eq(rc, 1, "the run fails")
    for line in out.splitlines():
        json.loads(line)
    tap.ok(True, "every --log-format json line is JSON")
    rc, out, err = flowrun("show", "last", "--state-dir", state, "--json")
    tap.eq(rc, 0, "show works " + err)
    tasks = {t["name"]: t for t in json.loads(out)["tasks"]}
    for name in ("bytes", "tostring_raises", "index_raises"):
        tap.eq(tasks[name]["state"], "failed", name + ": journaled as failed, not running")
        tap.ok(tasks[name]["error"] and tasks[name]["error"].get("message"), name + ": with a message")
    tap.like(tasks["bytes"]["error"]["message"], "caf\\xE9 \\xFF broke", "bytes shown escaped")
    tap.eq(tasks["logs_bytes"]["state"], "success", "a non-UTF-8 log line does not fail its task")


@tap.test
def show_task_prints_the_whole_error():
    wf = write("multi.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "multi" }
wf:task("step", function()
  error(flow.error("emr.step_failed", "EMR step failed; reason: Unknown Error\\n--- stderr tail ---\\n"
    .. "Traceback (most recent call last):\\n  File \\"job.py\\", line 3\\nValueError: bad row"))
end)
return wf
""")
    state = os.path.join(TMP, "s5")
    rc, out, err = flowrun(wf, "--state-dir", state, "--log-format", "text")
    tap.eq(rc, 1, "fails")
    summary = out[out.index("run "):] if "run " in out else out
    tap.like(out, "emr.step_failed: EMR step failed; reason: Unknown Error", "the first line in the log")
    tap.like(out, "    ValueError: bad row", "the rest of the error as lines in the text log")
    tap.like(out, "the whole error of step: flowrun show ", "the summary says where to see the rest")
    rc, out, err = flowrun("show", "last", "step", "--state-dir", state)
    tap.eq(rc, 0, "show RUN TASK " + err)
    tap.like(out, "--- stderr tail ---\n", "lines intact")
    tap.like(out, "      File \"job.py\", line 3\n", "indentation kept")
    tap.like(out, "ValueError: bad row", "to the last line")
    rc, out, err = flowrun("show", "last", "nope", "--state-dir", state)
    tap.eq(rc, 2, "an unknown task: exit 2")
    tap.like(err, "has no task nope", "says so")
    _ = summary


@tap.test
def rerun_a_task_and_what_follows():
    wf = write("chain.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "chain" }
local function note(name)
  return function()
    local f = io.open(os.getenv("LOG"), "a") f:write(name, "\\n") f:close()
    if name == "c" and os.getenv("FAIL_C") then error("c fails", 0) end
    return name
  end
end
wf:task("a", note("a"))
wf:task("b", { after = "a" }, note("b"))
wf:task("c", { after = "b" }, note("c"))
wf:task("side", { after = "a" }, note("side"))
return wf
""")
    state = os.path.join(TMP, "s6")
    log = os.path.join(TMP, "chain.log")
    rc, out, err = flowrun(wf, "--state-dir", state, extra_env={"LOG": log, "FAIL_C": "1"})
    tap.eq(rc, 1, "c fails the run")
    open(log, "w").close()
    rc, out, err = flowrun("resume", "last", "--state-dir", state, "--rerun", "b",
                           extra_env={"LOG": log})
    tap.eq(rc, 0, "resume --rerun b succeeds " + err)
    tap.eq(sorted(open(log).read().split()), ["b", "c"], "b ran again, and c after it; a and side kept")
    open(log, "w").close()
    rc, out, err = flowrun("resume", "last", "--state-dir", state, extra_env={"LOG": log})
    tap.eq(rc, 0, "a succeeded run: nothing to resume")
    tap.like(out, "nothing to resume", "says so")
    rc, out, err = flowrun("resume", "last", "--state-dir", state, "--rerun", "a",
                           extra_env={"LOG": log})
    tap.eq(rc, 0, "--rerun on a succeeded run")
    tap.eq(sorted(open(log).read().split()), ["a", "b", "c", "side"], "a and everything downstream")
    rc, out, err = flowrun("resume", "last", "--state-dir", state, "--rerun", "zz")
    tap.eq(rc, 2, "an unknown task: exit 2")
    tap.like(err, "has no task zz", "named")


@tap.test
def logical_dates_reach_tasks_and_parameters():
    wf = write("nightly.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "nightly", schedule = "0 2 * * *", timezone = "Europe/Paris",
  start_date = "2026-01-01",
  params = { prefix = { default = function(d) return "raw/" .. d.ds .. "/" end } } }
wf:task("show", function(ctx)
  return { logical_date = ctx.logical_date, start = ctx.data_interval.start,
           ["end"] = ctx.data_interval["end"], start_epoch = ctx.data_interval.start_epoch,
           prefix = ctx.params.prefix, manual = ctx.manual }
end)
return wf
""")
    state = os.path.join(TMP, "s7")
    rc, out, err = flowrun(wf, "--state-dir", state, "--logical-date", "2026-03-29")
    tap.eq(rc, 0, "a run for a given day " + err)
    rc, out, err = flowrun("show", "last", "--state-dir", state, "--json")
    r = json.loads(out)["tasks"][0]["result"]
    tap.eq(r["logical_date"], r["start"], "the logical date is the interval's start")
    tap.eq(r["start"], "2026-03-29T03:00:00+02:00",
           "the interval starts at the first fire time at or after the date (02:00 does not exist "
           "that night in Paris: 03:00 CEST)")
    tap.eq(r["end"], "2026-03-30T02:00:00+02:00", "and ends at the next one")
    tap.eq(r["prefix"], "raw/2026-03-29/", "a parameter default computed from the run's dates")
    tap.eq(r["manual"], False, "a run for a date is a scheduled interval, not a manual one")
    rc, out, err = flowrun("plan", wf, "--logical-date", "2026-10-25")
    tap.eq(rc, 0, "plan with a logical date " + err)
    tap.like(out, "schedule: 0 2 * * * in Europe/Paris", "plan shows the schedule")
    tap.like(out, "data interval [2026-10-25T02:00:00+02:00, 2026-10-26T02:00:00+01:00)",
             "and the run's interval across the fall-back change")
    tap.like(out, '"raw/2026-10-25/"', "and the computed default")
    bad = write("badsched.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "bad", schedule = "61 * * * *", timezone = "Mars/Olympus" }
wf:task("a", function() end)
return wf
""")
    rc, out, err = flowrun("plan", bad)
    tap.eq(rc, 2, "a bad schedule: exit 2")
    tap.like(err, "Mars/Olympus", "the bad zone named")
    rc, out, err = flowrun("plan", write("nosched.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "x", catchup = true }
wf:task("a", function() end)
return wf
"""))
    tap.eq(rc, 2, "schedule options without a schedule: exit 2")
    tap.like(err, "catchup is set but there is no schedule", "says so")


@tap.test
def a_damaged_journal_is_never_written_to():
    state = os.path.join(TMP, "s8")
    rc, out, err = flowrun(OK_WF, "--state-dir", state)
    tap.eq(rc, 0, "a run")
    runs = os.path.join(state, "runs")
    name = [n for n in os.listdir(runs) if n.endswith(".jsonl") and not n.endswith(".log.jsonl")][0]
    path = os.path.join(runs, name)
    lines = open(path).read().splitlines()
    # a record without its fields, then a finished line after it (not a cut last line)
    lines.insert(1, '{"ev":"task_started","t":1,"task":"a","attempt":{}}')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    before = open(path).read()
    for args in (["show", "last"], ["runs"], ["resume", name[:-6]]):
        rc, out, err = flowrun(*args, "--state-dir", state)
        tap.ok(rc in (0, 2), " ".join(args[:1]) + ": no internal error (exit %d)" % rc)
        tap.ok("Traceback" not in err and "stack traceback" not in err, args[0] + ": no traceback")
        tap.like(out + err, name + ":2", args[0] + ": the damage named by file and line")
    tap.eq(open(path).read(), before, "resume wrote nothing to the damaged journal")


@tap.test
def sigint_at_once_is_never_lost():
    wf = write("quick.lua", """
local flow = require "flow"
local wf = flow.workflow { name = "quick" }
wf:task("a", function() flow.sleep(0.5) end)
wf:task("b", { after = "a" }, function() end)
return wf
""")
    import signal, time
    for i in range(5):
        state = os.path.join(TMP, "s9-%d" % i)
        p = subprocess.Popen([tap.FLOWRUN, wf, "--state-dir", state], env=env(), cwd=TMP,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.002 * i)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        tap.ok(p.returncode in (130, -signal.SIGINT),
               "SIGINT %d ms after the start: interrupted (%d), not a success" % (2 * i, p.returncode))
        tap.ok("SUCCESS" not in out, "no successful summary")


@tap.test
def out_of_memory_says_so():
    code = "local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(2e8) .. i end"
    if os.environ.get("ASAN_OPTIONS"):
        # ASan reserves terabytes of address space, so a ulimit stops it from starting: its
        # allocator is told to fail large allocations instead
        e = env(ASAN_OPTIONS=os.environ["ASAN_OPTIONS"] +
                ":allocator_may_return_null=1:max_allocation_size_mb=64")
        p = subprocess.run([tap.FLOWRUN, "-e", code], env=e, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    else:
        p = subprocess.run(["bash", "-c", "ulimit -v 400000; exec \"$0\" -e \"$1\"", tap.FLOWRUN,
                            code], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    tap.eq(p.returncode, 1, "exit 1")
    tap.like(p.stderr, "not enough memory", "says not enough memory: " + p.stderr[-200:])


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
