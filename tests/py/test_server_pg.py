"""`flowrun server` over the PostgreSQL run store: two servers share one store (as behind a load
balancer). A run triggered on one is run by a worker (either server's), seen live on the other and
by `flowrun runs`; cancelled and retried through the other; its secret parameter never reaches
the store. Both servers are schedulers: each tick of a scheduled workflow is run once, and a pause
made through one server stops both. SIGTERM hands a server's runs back, and the other server takes
them over and finishes them. /metrics tells the scheduler's lateness. A store it cannot reach is one
line and exit 1, without the password. Needs the suite's PostgreSQL (FLOWRUN_TEST_PG)."""
import http.client
import json
import os
import re
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
ROOT, FLOWRUN = tap.ROOT, tap.FLOWRUN
DB = storetest.Db("server_pg")
TMP = tempfile.mkdtemp(prefix="flowrun-server-pg-")
WF = os.path.join(TMP, "workflows")
shutil.copytree(os.path.join(ROOT, "tests", "lib", "server_workflows"), WF)
os.remove(os.path.join(WF, "broken.lua"))
with open(os.path.join(WF, "tick.lua"), "w") as f:
    f.write("""local flow = require "flow"
local wf = flow.workflow { name = "tick", schedule = "1s", start_date = "2026-01-01",
  max_active_runs = 2 }
wf:task("a", function(ctx) flow.sleep(0.1) return { ld = ctx.logical_date } end)
return wf
""")
SECRET = "hunter2-secret-value-7c1d"
SECRET_B = "worker-env-secret-9f3e2a"  # what a server's worker has when another server was given it


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRUN_VAR_") and k not in
         ("FLOWRUN_TOKEN", "FLOWRUN_SERVER", "FLOWRUN_STORE", "FLOWRUN_SIM")}
    e["FLOWRUN_HOME"] = os.path.join(TMP, "home")
    e["XDG_CONFIG_HOME"] = os.path.join(TMP, "xdg")
    e["FLOWRUN_VAR_TOKEN"] = SECRET_B
    return e


class Server:
    n = 0

    def __init__(self, *args):
        Server.n += 1
        self.name = "server%d" % Server.n
        self.log = open(os.path.join(TMP, self.name + ".log"), "w+")
        self.p = subprocess.Popen([FLOWRUN, "server", "--listen", "127.0.0.1:0", "--workflows", WF,
                                   "--store", DB.url] + list(args),
                                  stdout=subprocess.DEVNULL, stderr=self.log, env=env())
        self.url = None
        deadline = time.time() + 20
        while time.time() < deadline and self.url is None and self.p.poll() is None:
            time.sleep(0.05)
            m = re.search(r"flowrun server on (http://[\d.]+:\d+)", self.output())
            if m:
                self.url = m.group(1)
        if not self.url:
            raise RuntimeError("the server did not start: " + self.output())
        self.port = int(self.url.rsplit(":", 1)[1])

    def output(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def api(self, method, path, body=None):
        h = {"Accept": "application/json"}
        if body is not None:
            h["Content-Type"] = "application/json"
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, path, json.dumps(body) if body is not None else None, h)
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode("utf-8", "replace")

    def run(self, rid):
        st, doc = self.api("GET", "/api/v1/runs/" + rid)
        return doc if st == 200 else None

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None


def wait_for(pred, timeout=20.0, every=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(every)
    return pred()


def wait_state(srv, rid, states, timeout=30.0):
    def done():
        r = srv.run(rid)
        return r if r and r["state"] in states else None
    return wait_for(done, timeout)


def task(run, name):
    return [t for t in run["tasks"] if t["name"] == name][0]


def flowrun(*args):
    return subprocess.run([FLOWRUN] + list(args), capture_output=True, text=True, env=env(), timeout=60)


r = flowrun("store", "init", "--store", DB.url)
tap.eq(r.returncode, 0, "flowrun store init")
A = Server()
B = Server()


@tap.test
def triggered_on_one_seen_on_the_other():
    st, doc = A.api("POST", "/api/v1/workflows/hello/runs", {"params": {"target": "lake", "token": SECRET}})
    tap.eq(st, 201, "triggered on server A")
    rid = doc["id"]
    run = wait_state(B, rid, ("success", "failed"))
    tap.eq(run and run["state"], "success", "server B sees it run to success")
    tap.eq(task(run, "greet")["result"], {"n": 3, "target": "lake"}, "with its result")
    listed = json.loads(flowrun("runs", "--json", "--store", DB.url, "--workflow", "hello").stdout)
    tap.ok(any(x["id"] == rid and x["state"] == "success" for x in listed),
           "flowrun runs --store lists it (success)")
    st, doc = B.api("GET", "/api/v1/runs/%s/logs" % rid)
    text = json.dumps(doc)
    tap.like(text, "the secret is <redacted>", "its log line about the secret is there, the value masked "
             "(by the engine, before it is kept: whichever server ran it, the other never knew it)")
    tap.ok(SECRET not in text and SECRET_B not in text, "no secret in the API's answer")
    pat = "(%s|%s)" % (SECRET, SECRET_B)
    stored = DB.value("SELECT count(*) FROM flowrun.runs WHERE params::text ~ '%s' OR source ~ '%s'"
                      % (pat, pat))
    journal = DB.value("SELECT count(*) FROM flowrun.events WHERE rec::text ~ '%s'" % pat)
    logs = DB.value("SELECT count(*) FROM flowrun.logs WHERE msg ~ '%s'" % pat)
    tap.eq((stored, journal, logs), ("0", "0", "0"), "the secret is nowhere in the store (runs, journal, logs)")
    st, doc = B.api("POST", "/api/v1/workflows/hello/runs", {"params": {"n": "many"}})
    tap.eq(st, 400, "bad parameters: 400")
    tap.eq(sorted(p["param"] for p in doc["error"]["problems"]), ["n", "target"],
           "naming each bad parameter, nothing queued")


@tap.test
def cancelled_and_retried_through_the_other():
    st, doc = B.api("POST", "/api/v1/workflows/slow/runs", {"params": {"every": 2}})
    rid = doc["id"]
    tap.eq(st, 201, "a slow run triggered on B")
    run = wait_for(lambda: (lambda r: r if r and task(r, "step1")["state"] == "running" else None)(A.run(rid)))
    tap.ok(run is not None, "A sees its first step running")
    st, doc = A.api("POST", "/api/v1/runs/%s/cancel" % rid, {})
    tap.eq((st, doc.get("state")), (202, "cancelling"), "cancelled through A: 202")
    run = wait_state(B, rid, ("cancelled", "failed", "success"))
    tap.eq(run and run["state"], "cancelled", "it ends cancelled")
    tap.eq(task(run, "cleanup")["state"], "success", "its cleanup ran")
    st, doc = A.api("POST", "/api/v1/runs/%s/cancel" % rid, {})
    tap.eq(st, 409, "cancel again: 409")
    st, doc = A.api("POST", "/api/v1/runs/%s/retry" % rid, {"task": "step1"})
    tap.eq(st, 202, "retried from step1 through A")
    run = wait_state(B, rid, ("success", "failed"), timeout=40)
    tap.eq(run and run["state"], "success", "the same run succeeds")
    if not run or run["state"] != "success":
        tap.diag(json.dumps(B.run(rid))[:3000])
    tap.eq([task(run, n)["state"] for n in ("step1", "step2", "step3")], ["success"] * 3,
           "step1 and what follows ran")
    tap.ok(run["resumed"] >= 1, "as a resume of the run (resumed %s)" % run["resumed"])
    st, doc = A.api("POST", "/api/v1/runs/%s/retry" % rid, {"task": "nope"})
    tap.eq(st, 400, "retry of a task the run does not have: 400")
    st, doc = A.api("POST", "/api/v1/runs/none-such/cancel", {})
    tap.eq(st, 404, "cancel of an unknown run: 404")


@tap.test
def both_servers_schedule_each_tick_once():
    tap.ok(wait_for(lambda: int(DB.value("SELECT count(*) FROM flowrun.runs WHERE workflow = 'tick' "
                                         "AND state = 'success'")) >= 4),
           "the servers' schedulers fire tick, their workers run it")
    dup = DB.value("SELECT count(*) - count(DISTINCT logical_date) FROM flowrun.runs WHERE workflow = 'tick'")
    tap.eq(dup, "0", "one run per logical date, with two schedulers")
    st, doc = A.api("GET", "/api/v1/workflows/tick")
    sc = doc.get("schedule") or {}
    tap.eq((sc.get("expr"), sc.get("timezone"), sc.get("max_active_runs")), ("1s", "UTC", 2),
           "the workflow's schedule, as declared")
    tap.ok(isinstance(sc.get("next_due"), (int, float)) and abs(sc["next_due"] - time.time()) < 5,
           "and when its next run is due, by this server's scheduler")
    st, grid = B.api("GET", "/api/v1/grid")
    by = {w["name"]: w for w in grid["workflows"]}
    tap.ok(by["tick"]["schedule"]["expr"] == "1s" and by["hello"]["schedule"] is None,
           "the grid says which workflows are scheduled")
    st, doc = A.api("POST", "/api/v1/workflows/tick/pause", {})
    tap.eq((st, doc.get("paused")), (200, True), "paused through A")
    tap.ok(wait_for(lambda: B.api("GET", "/api/v1/workflows/tick")[1].get("paused") is True, 5),
           "B shows it paused")
    r = flowrun("schedules", "--json", "--workflows", WF, "--store", DB.url)
    row = [w for w in json.loads(r.stdout)["workflows"] if w["workflow"] == "tick"][0]
    tap.eq(row["paused"], True, "flowrun schedules says paused")
    time.sleep(1.0)  # a decision in flight when the pause came is committed by now
    n = DB.value("SELECT count(*) FROM flowrun.runs WHERE workflow = 'tick'")
    time.sleep(2.5)
    tap.eq(DB.value("SELECT count(*) FROM flowrun.runs WHERE workflow = 'tick'"), n,
           "no run fired while paused (%s runs)" % n)
    st, text = A.api("GET", "/metrics")
    text_b = B.api("GET", "/metrics")[1]
    tap.ok("# TYPE flowrun_scheduler_lateness_seconds gauge" in text, "/metrics: the scheduler's lateness")
    tap.ok(any(re.search(r'flowrun_scheduler_lateness_seconds\{quantile="0.99"\} [0-9.e-]+', x)
               for x in (text, text_b)), "measured by the server(s) that fired ticks")
    tap.ok(re.search(r'flowrun_runs\{workflow="tick",state="success"\} \d+', text),
           "/metrics: runs by state, from the store")


@tap.test
def sigterm_hands_runs_back():
    global A
    st, doc = A.api("POST", "/api/v1/workflows/slow/runs", {"params": {"every": 1.5}})
    rid = doc["id"]
    tap.eq(st, 201, "a slow run triggered")
    owner = wait_for(lambda: DB.value("SELECT coalesce(owner, '') FROM flowrun.runs WHERE id = '%s' "
                                      "AND state = 'running'" % rid))
    pid = int(owner.split(":")[1])
    holder, other = (A, B) if pid == A.p.pid else (B, A)
    tap.ok(pid in (A.p.pid, B.p.pid), "one of the servers' workers runs it")
    wait_for(lambda: task(other.run(rid), "step1")["state"] == "success", 10)
    tap.eq(holder.stop(), 143, "SIGTERM: the server holding it exits 143")
    tap.like(holder.output(), "handed back", "saying it handed its run back")
    run = wait_state(other, rid, ("success", "failed", "cancelled"), timeout=40)
    tap.eq(run and run["state"], "success", "the other server takes it over and finishes it")
    tap.eq(task(run, "step1")["attempts"], 1, "what had succeeded kept its result")
    tap.eq(task(run, "cleanup")["state"], "success", "and its cleanup ran once, at the end")
    if holder is A:
        A = Server()
    else:
        globals()["B"] = Server()
    tap.ok(True, "a server started again on the same store")


@tap.test
def unreachable_store():
    r = subprocess.run([FLOWRUN, "server", "--listen", "127.0.0.1:0", "--workflows", WF, "--store",
                        "postgresql://flowrun:pw-not-shown-91@127.0.0.1:1/none"],
                       capture_output=True, text=True, env=env(), timeout=30)
    tap.eq(r.returncode, 1, "a store it cannot reach: exit 1")
    tap.like(r.stderr, "127.0.0.1", "naming where it looked")
    tap.ok("pw-not-shown-91" not in r.stderr, "without the password")
    tap.ok(r.stderr.count("\n") <= 2, "in a line or two, no traceback")


# (the tests above ran as they were defined)
for s in (A, B):
    s.stop()
for s in (A, B):
    tap.ok(SECRET not in s.output() and SECRET_B not in s.output(), "%s's log never shows a secret" % s.name)
DB.drop()
shutil.rmtree(TMP, ignore_errors=True)
tap.done()
