"""The run store and the workers from the command line: the PostgreSQL store named by --store,
FLOWRUN_STORE or a config-file profile, every reading command against it; task logs (ctx.log
and flow.exec output) followed live from another process; submit (an invalid workflow refused
before anything is queued), workers, cancel (cleanup tasks run, with either store), a worker
stopped by SIGTERM handing its run back and one killed by SIGKILL taken over after its lease,
the store's PostgreSQL restarted and its connections terminated under a running worker; bad
input: an unreachable store, a wrong password (never printed), a schema from a newer flowrun;
resume from the store's copy of the workflow when the file is gone."""
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
import storetest  # noqa: E402

storetest.require_pg()
DB = storetest.Db("store_cli")
TMP = tempfile.mkdtemp(prefix="flowrun-store-cli-")
LEDGER = os.path.join(TMP, "ledger")


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def env(**extra):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("FLOWRUN_VAR_") or k in ("FLOWRUN_STORE", "FLOWRUN_CONFIG", "FLOWRUN_SIM"):
            del e[k]
    e["FLOWRUN_HOME"] = os.path.join(TMP, "home")
    e["LEDGER"] = LEDGER
    e["XDG_CONFIG_HOME"] = os.path.join(TMP, "xdg")
    e.update(extra)
    return e


def flowrun(*args, extra_env=None, timeout=60, input=None):
    p = subprocess.run([tap.FLOWRUN] + list(args), cwd=TMP, env=env(**(extra_env or {})),
                       capture_output=True, text=True, timeout=timeout, input=input)
    return p.returncode, p.stdout, p.stderr


def worker(*args, extra_env=None, log=None):
    out = open(log or os.path.join(TMP, "worker-%d.log" % time.time_ns()), "w")
    p = subprocess.Popen([tap.FLOWRUN, "worker", "--store", DB.url] + list(args), cwd=TMP,
                         env=env(**(extra_env or {})), stdout=out, stderr=subprocess.STDOUT)
    p.log_path = out.name
    return p


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def read(path):
    with open(path) as f:
        return f.read()


def starts(run_id, task):
    """How many times a task's body started, from the ledger the workflows append to."""
    if not os.path.exists(LEDGER):
        return 0
    return sum(1 for l in open(LEDGER) if l.split() == [run_id, task])


def state(run_id):
    return DB.value("SELECT state FROM flowrun.runs WHERE id = '%s'" % run_id)


def wait_for(pred, timeout=30, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(every)
    return False


STEPS = write("steps.lua", r'''
local flow = require "flow"
local wf = flow.workflow { name = "steps", params = { pause = 0.2, token = { secret = true, required = true } } }
local function note(ctx)
  local f = assert(io.open(os.getenv("LEDGER"), "a"))
  f:write(ctx.run_id, " ", ctx.task, "\n")
  f:close()
end
wf:task("a", function(ctx)
  note(ctx)
  ctx.log("a says hello")
  flow.exec({ "sh", "-c", "echo out-line; echo err-line >&2" })
  return { token_len = #ctx.params.token }
end)
wf:task("b", { after = "a" }, function(ctx)
  note(ctx)
  for i = 1, 3 do
    ctx.log("b tick " .. i)
    flow.sleep(ctx.params.pause)
  end
  return "b done"
end)
wf:task("c", { after = "b", cleanup = true }, function(ctx)
  note(ctx)
  ctx.log("cleanup ran")
end)
return wf
''')
SECRET = "tok-Very-Secret-77"


@tap.test
def test_store_named_three_ways_and_read_by_every_command():
    rc, out, err = flowrun("run", STEPS, "--store", DB.url, "--log-format", "text",
                           extra_env={"FLOWRUN_VAR_TOKEN": SECRET, "FLOWRUN_VAR_PAUSE": "0.01"})
    tap.eq(rc, 0, "flowrun run --store postgresql://... succeeds")
    if rc != 0:
        tap.diag(err)
    tap.ok(DB.password not in out + err, "the store's password is never printed")
    rid = DB.value("SELECT id FROM flowrun.runs ORDER BY created DESC LIMIT 1")
    # FLOWRUN_STORE
    rc, out, err = flowrun("runs", extra_env={"FLOWRUN_STORE": DB.url})
    tap.eq(rc, 0, "runs with FLOWRUN_STORE")
    tap.like(out, "runs in " + DB.display, "says where it looked, without the password")
    tap.like(out, rid, "lists the run")
    tap.ok(DB.password not in out, "no password in the listing")
    # a profile in the config file
    cfg = os.path.join(TMP, "xdg", "flowrun")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "config.json"), "w") as f:
        json.dump({"store": "team", "stores": {"team": DB.url, "mine": "file:" + os.path.join(TMP, "fs")}}, f)
    rc, out, err = flowrun("show", rid, "--json")
    tap.eq(rc, 0, "show with the config file's default store")
    shown = json.loads(out) if rc == 0 else {}
    tap.eq([t["state"] for t in shown.get("tasks", [])], ["success"] * 3, "every task succeeded")
    tap.eq(shown.get("params"), {"pause": 0.01}, "the public parameter kept, the secret one not")
    rc, out, err = flowrun("runs", "--store", "mine")
    tap.like(out, "no runs in " + os.path.join(TMP, "fs"), "--store NAME: a store named in the config")
    rc, out, err = flowrun("runs", "--store", "nope")
    tap.eq(rc, 2, "an unknown store name is invalid input")
    tap.like(err, "stores: mine, team", "and the message lists the known ones")
    os.unlink(os.path.join(cfg, "config.json"))
    # logs: ctx.log lines and flow.exec's output, with task and attempt
    rc, out, err = flowrun("logs", rid, "--store", DB.url)
    tap.eq(rc, 0, "logs")
    for line in ("a#1: a says hello", "a#1: sh: out-line", "a#1: sh (stderr): err-line", "b#1: b tick 3",
                 "c#1: cleanup ran"):
        tap.like(out, line, "logs: " + line)
    rc, out, err = flowrun("logs", rid, "b", "--store", DB.url)
    tap.ok("b tick 1" in out and "a says" not in out, "logs TASK: that task's lines only")
    rc, out, err = flowrun("graph", STEPS, "--run", rid, "--store", DB.url)
    tap.ok(rc == 0 and "a" in out and "fillcolor" in out, "graph --run reads the run's states")
    dump = DB.value("SELECT (SELECT string_agg(r::text, ' ') FROM flowrun.runs r) || "
                    "(SELECT string_agg(e.rec::text, ' ') FROM flowrun.events e) || "
                    "(SELECT coalesce(string_agg(l.msg, ' '), '') FROM flowrun.logs l)")
    tap.ok(SECRET not in dump, "the secret parameter's value is nowhere in the store")


@tap.test
def test_submit_refuses_bad_input_before_queueing():
    before = DB.value("SELECT count(*) FROM flowrun.runs")
    bad = write("bad.lua", 'local flow = require "flow"\nlocal wf = flow.workflow{name="bad"}\n'
                'wf:task("a", {after = "zz"}, function() end)\nreturn wf\n')
    rc, out, err = flowrun("submit", bad, "--store", DB.url)
    tap.eq(rc, 2, "an invalid workflow: exit 2")
    tap.like(err, 'unknown', "says what is wrong")
    rc, out, err = flowrun("submit", write("syntax.lua", "return (("), "--store", DB.url)
    tap.eq(rc, 2, "a file that does not compile: exit 2")
    rc, out, err = flowrun("submit", STEPS, "--var", "pause=soon", "--store", DB.url)
    tap.eq(rc, 2, "a parameter of the wrong type: exit 2")
    tap.like(err, "parameter pause: expected a number", "names the parameter")
    tap.eq(DB.value("SELECT count(*) FROM flowrun.runs"), before, "nothing was queued")
    rc, out, err = flowrun("submit", STEPS, "--store", DB.url, "--var", "token=" + SECRET)
    tap.eq(rc, 0, "a required secret parameter may be left to the worker")
    tap.like(err, "secret parameter is not stored", "given on the command line, it is not kept")
    rid = out.strip()
    tap.eq(state(rid), "queued", "queued")
    tap.ok(SECRET not in DB.value("SELECT r::text FROM flowrun.runs r WHERE id = '%s'" % rid),
           "and its value is not in the store")
    rc, out, err = flowrun("cancel", rid, "--store", DB.url)
    tap.eq((rc, state(rid)), (0, "cancelled"), "a queued run cancelled at once")
    tap.like(out, "cancelled (it had not started)", "says so")


@tap.test
def test_worker_runs_submitted_runs_and_logs_follow_live():
    rc, out, err = flowrun("submit", STEPS, "--store", DB.url, "--var", "pause=0.4", "-q")
    rid = out.strip()
    tap.eq(rc, 0, "submitted " + rid)
    w = worker("--concurrency", "2", extra_env={"FLOWRUN_VAR_TOKEN": SECRET})
    follower = subprocess.Popen([tap.FLOWRUN, "logs", rid, "-f", "--store", DB.url], cwd=TMP, env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, early = [], None
    t0 = time.time()
    for line in follower.stdout:
        seen.append(line.strip())
        if "b tick 1" in line and state(rid) == "running":
            early = time.time() - t0
    follower.wait(timeout=30)
    tap.eq(follower.returncode, 0, "logs -f ends when the run ends")
    tap.ok(early is not None, "lines arrive while the run is still running")
    tap.ok(any("c#1: cleanup ran" in l for l in seen), "down to the last line")
    tap.ok(wait_for(lambda: state(rid) == "success"), "the worker ran it: success")
    rc, out, err = flowrun("workers", "--store", DB.url)
    tap.like(out, "running", "flowrun workers lists the live worker")
    tap.like(out, "0/2", "with its slots")
    rc = stop(w)
    tap.eq(rc, 143, "SIGTERM: the worker stops (143)")
    rc, out, err = flowrun("workers", "--store", DB.url, "--json")
    ws = json.loads(out)
    tap.eq([x["state"] for x in ws], ["stopped"], "and shows as stopped")
    shown = json.loads(flowrun("show", rid, "--json", "--store", DB.url)[1])
    tap.eq(shown["tasks"][0]["result"], {"token_len": len(SECRET)},
           "the secret parameter came from the worker's environment")


@tap.test
def test_cancel_on_a_worker_runs_cleanup():
    rc, out, err = flowrun("submit", STEPS, "--store", DB.url, "--var", "pause=2", "-q")
    rid = out.strip()
    w = worker(extra_env={"FLOWRUN_VAR_TOKEN": SECRET})
    tap.ok(wait_for(lambda: starts(rid, "b") == 1), "b is running on the worker")
    t0 = time.time()
    rc, out, err = flowrun("cancel", rid, "--store", DB.url)
    tap.eq(rc, 0, "cancel: " + out.strip())
    tap.ok(wait_for(lambda: state(rid) == "cancelled", timeout=10), "the run is cancelled")
    tap.ok(time.time() - t0 < 3, "at once (%.1fs), not after b's 6 s" % (time.time() - t0))
    shown = json.loads(flowrun("show", rid, "--json", "--store", DB.url)[1])
    tasks = {t["name"]: t["state"] for t in shown["tasks"]}
    tap.eq(tasks, {"a": "success", "b": "cancelled", "c": "success"}, "b stopped, the cleanup task ran")
    stop(w)


@tap.test
def test_sigterm_hands_back_sigkill_is_taken_over():
    rc, out, err = flowrun("submit", STEPS, "--store", DB.url, "--var", "pause=0.7", "-q")
    rid = out.strip()
    w1 = worker("--lease", "1s", "--poll", "0.3s", extra_env={"FLOWRUN_VAR_TOKEN": SECRET})
    tap.ok(wait_for(lambda: starts(rid, "b") == 1), "b started on the first worker")
    rc = stop(w1)
    tap.eq(rc, 143, "the first worker stops on SIGTERM")
    tap.like(read(w1.log_path), "the worker is stopping", "handing its run back, and says so")
    tap.eq(state(rid), "running", "the run is not cancelled")
    shown = json.loads(flowrun("show", rid, "--json", "--store", DB.url)[1])
    tap.eq(shown["state"], "interrupted", "but free for another worker")
    t0 = time.time()
    w2 = worker("--lease", "1s", "--poll", "0.3s", extra_env={"FLOWRUN_VAR_TOKEN": SECRET})
    tap.ok(wait_for(lambda: starts(rid, "b") == 2, timeout=10), "the second worker takes it over")
    tap.ok(time.time() - t0 < 3, "at once (%.1fs)" % (time.time() - t0))
    time.sleep(0.3)
    os.kill(w2.pid, signal.SIGKILL)
    w2.wait()
    t1 = time.time()
    w3 = worker("--lease", "1s", "--poll", "0.3s", extra_env={"FLOWRUN_VAR_TOKEN": SECRET})
    tap.ok(wait_for(lambda: state(rid) == "success", timeout=20), "after a SIGKILL a third worker finishes it")
    took = time.time() - t1
    tap.eq((starts(rid, "a"), starts(rid, "c")), (1, 1), "a (succeeded) never ran again; the cleanup ran once")
    tap.eq(starts(rid, "b"), 3, "b (interrupted twice) ran three times")
    tap.like(read(w3.log_path), "taking over run " + rid, "the worker says it took the run over")
    tap.ok(took >= 0.8, "the killed worker's lease was waited out (%.1fs)" % took)
    shown = json.loads(flowrun("show", rid, "--json", "--store", DB.url)[1])
    tap.eq(shown["resumed"], 2, "resumed twice")
    stop(w3)


@tap.test
def test_store_restarted_and_connections_terminated_under_a_worker():
    pgctl, pgdata, pglog = (os.environ.get(k) for k in
                            ("FLOWRUN_TEST_PGCTL", "FLOWRUN_TEST_PGDATA", "FLOWRUN_TEST_PGLOG"))
    if not (pgctl and pgdata and pglog):
        tap.ok(False, "FLOWRUN_TEST_PGCTL/PGDATA/PGLOG are set by tests/servers/pg.sh")
        return
    rc, out, err = flowrun("submit", STEPS, "--store", DB.url, "--var", "pause=1", "-q")
    rid = out.strip()
    w = worker("--lease", "20s", extra_env={"FLOWRUN_VAR_TOKEN": SECRET})
    tap.ok(wait_for(lambda: starts(rid, "b") == 1), "b is running")
    r = subprocess.run(pgctl.split() + ["-D", pgdata, "-l", pglog, "-m", "fast", "-w", "restart"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
    tap.eq(r.returncode, 0, "PostgreSQL restarted in the middle of the run")
    tap.ok(wait_for(lambda: state(rid) == "success", timeout=30), "the run succeeds all the same")
    tap.eq((starts(rid, "a"), starts(rid, "b"), starts(rid, "c")), (1, 1, 1),
           "nothing ran twice: the worker reconnected and carried on")
    # every connection of the worker terminated while it runs another
    rc, out, err = flowrun("submit", STEPS, "--store", DB.url, "--var", "pause=1", "-q")
    rid2 = out.strip()
    tap.ok(wait_for(lambda: starts(rid2, "b") == 1), "another run is running")
    killed = DB.value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE datname = '%s' AND pid <> pg_backend_pid()" % DB.name)
    tap.ok(int(killed) >= 1, "pg_terminate_backend on the worker's %s connection(s)" % killed)
    tap.ok(wait_for(lambda: state(rid2) == "success", timeout=30), "that run succeeds too")
    tap.eq(starts(rid2, "b"), 1, "without running b again")
    tap.eq(w.poll(), None, "the worker is still up")
    stop(w)


@tap.test
def test_bad_stores():
    rc, out, err = flowrun("runs", "--store", "postgresql://flowrun:hunter2-Pw@127.0.0.1:1/flowrun")
    tap.eq(rc, 1, "an unreachable store: exit 1")
    tap.like(err, "postgresql://flowrun@127.0.0.1:1/flowrun", "names the store")
    tap.ok("hunter2" not in out + err, "never its password")
    wrong = DB.url.replace(DB.password, "Wrong-Pass-31")
    for cmd in (["runs"], ["show", "last"], ["submit", STEPS], ["worker"], ["store", "init"]):
        rc, out, err = flowrun(*(cmd + ["--store", wrong]), timeout=30)
        tap.eq(rc, 1, "a wrong password: %s exits 1" % cmd[0])
        tap.ok("Wrong-Pass-31" not in out + err, "  without printing the password")
        tap.like(err, "password authentication failed", "  and says why")
    rc, out, err = flowrun("store", "init", "--store", DB.url)
    tap.eq(rc, 0, "store init on a current store")
    migrations = sorted(os.listdir(os.path.join(tap.ROOT, "lua/flowrun/engine/store/pg/migrations")))
    tap.like(out, "schema version %d" % len(migrations), "says its version")
    DB.psql("INSERT INTO flowrun.schema_version (version, name) VALUES (7, '007_future')")
    for cmd in (["runs"], ["submit", STEPS], ["worker"], ["store", "init"]):
        rc, out, err = flowrun(*(cmd + ["--store", DB.url]), timeout=30)
        tap.eq(rc, 1, "a newer schema: %s exits 1" % cmd[0])
        tap.like(err, "schema version 7, newer than this flowrun knows", "  with a clear message")
    DB.psql("DELETE FROM flowrun.schema_version WHERE version = 7")
    rc, out, err = flowrun("runs", "--store", DB.url, "--state-dir", TMP)
    tap.eq(rc, 2, "--store and --state-dir together: invalid input")


@tap.test
def test_resume_from_the_stores_copy():
    path = write("gone.lua", r'''
local flow = require "flow"
local wf = flow.workflow { name = "gone" }
wf:task("a", function(ctx) return 1 end)
wf:task("b", { after = "a" }, function(ctx)
  if os.getenv("BREAK_B") then error("b is broken", 0) end
  return 2
end)
return wf
''')
    rc, out, err = flowrun("run", path, "--store", DB.url, extra_env={"BREAK_B": "1"})
    tap.eq(rc, 1, "the run fails")
    tap.like(out, "resume with: flowrun resume", "and says how to resume it")
    tap.ok(DB.password not in out, "the hint never holds the password")
    rid = DB.value("SELECT id FROM flowrun.runs WHERE workflow = 'gone'")
    os.unlink(path)
    rc, out, err = flowrun("resume", rid, "--store", DB.url)
    tap.eq(rc, 0, "resumed from the store's copy of the workflow (the file is gone)")
    if rc != 0:
        tap.diag(out + err)
    shown = json.loads(flowrun("show", rid, "--json", "--store", DB.url)[1])
    tap.eq((shown["state"], shown["resumed"]), ("success", 1), "and it succeeded")


@tap.test
def test_file_store_worker_and_cancel():
    fs = os.path.join(TMP, "fstore")
    rc, out, err = flowrun("submit", STEPS, "--state-dir", fs, "--var", "pause=2", "-q")
    rid = out.strip()
    tap.eq(rc, 0, "submitted to the file store")
    p = subprocess.Popen([tap.FLOWRUN, "worker", "--state-dir", fs, "--poll", "0.2s"], cwd=TMP,
                         env=env(FLOWRUN_VAR_TOKEN=SECRET), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    tap.ok(wait_for(lambda: starts(rid, "b") == 1), "a worker on the file store runs it")
    tap.ok(wait_for(lambda: "1/4" in flowrun("workers", "--state-dir", fs)[1], timeout=5),
           "flowrun workers sees it, with its run")
    rc, out, err = flowrun("cancel", rid, "--state-dir", fs)
    tap.eq(rc, 0, "cancel with the file store")

    def done():
        rc, out, err = flowrun("show", rid, "--json", "--state-dir", fs)
        return rc == 0 and json.loads(out)["state"] == "cancelled"
    tap.ok(wait_for(done, timeout=10), "the run is cancelled")
    shown = json.loads(flowrun("show", rid, "--json", "--state-dir", fs)[1])
    tap.eq({t["name"]: t["state"] for t in shown["tasks"]}, {"a": "success", "b": "cancelled", "c": "success"},
           "its cleanup task ran")
    stop(p)


DB.drop()
if tap._failed == 0:
    subprocess.run(["rm", "-rf", TMP])
else:
    tap.diag("kept for inspection: " + TMP)
shutil.rmtree(TMP, ignore_errors=True)
tap.done()
