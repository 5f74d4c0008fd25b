"""Workers under fire: three `flowrun worker` processes share one PostgreSQL run store and one
simulated AWS; 300 submitted runs of a workflow that creates an EMR cluster, waits for it,
works, and terminates it (a cleanup task). Meanwhile workers are SIGKILLed and restarted, and
SIGSTOPped (some longer than their lease, so their runs are taken over) then SIGCONTinued.

Checked afterwards:
  * every run finished exactly once, and succeeded;
  * no task whose success was recorded started again (a ledger every task body appends to);
  * the simulator's world holds exactly one EMR cluster per run, and none is left running;
  * fencing: in every run's journal the epochs never go back (a holder that lost the run wrote
    nothing after the new holder), nor in its log lines; and no AWS call was made for a run
    with an epoch after a later epoch took it over (FLOWRUN_FENCE_LOG);
  * the chaos happened: takeovers of killed and stopped workers' runs, and a stopped worker
    that found, on waking, that it had lost runs.

Knobs: FLOWRUN_CHAOS_RUNS (default 300), FLOWRUN_CHAOS_WORKERS (3), FLOWRUN_CHAOS_SECONDS (the
most the runs may take, default 150; about 60 on a quiet 2-core machine), FLOWRUN_CHAOS_SEED.

The workers run with --max-takeovers 1000: a run is taken over far more often here than its
workers would die in earnest, and failing it as poison is tested apart (tests/lua/worker.lua)."""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

RUNS = int(os.environ.get("FLOWRUN_CHAOS_RUNS", "300"))
NWORKERS = int(os.environ.get("FLOWRUN_CHAOS_WORKERS", "3"))
BUDGET = float(os.environ.get("FLOWRUN_CHAOS_SECONDS", "150"))
SEED = int(os.environ.get("FLOWRUN_CHAOS_SEED", str(int(time.time()))))
LEASE = 2.0

PG = os.environ.get("FLOWRUN_TEST_PG")
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
if not PG:
    tap.ok(False, "FLOWRUN_TEST_PG not set: scripts/test.sh starts PostgreSQL (tests/servers/pg.sh)")
    tap.done()

TMP = tempfile.mkdtemp(prefix="flowrun-chaos-")
DB = "flowrun_t_chaos"


def kv(ci):
    return dict(p.split("=", 1) for p in ci.split())


PARTS = kv(PG)
STORE = "postgresql://%s:%s@%s:%s/%s" % (PARTS["user"], PARTS["password"], PARTS["host"],
                                         PARTS["port"], DB)


def psql(sql, db=DB):
    env = dict(os.environ, PGPASSWORD=PARTS["password"])
    p = subprocess.run([os.path.join(PGBIN, "psql"), "-qAtX", "-h", PARTS["host"], "-p", PARTS["port"],
                        "-U", PARTS["user"], "-d", db, "-c", sql], env=env, capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("psql: " + p.stderr)
    return p.stdout.strip()


def qjson(sql):
    out = psql("SELECT coalesce(json_agg(x), '[]') FROM (%s) x" % sql)
    return json.loads(out)


psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB, db=PARTS["dbname"])
psql("CREATE DATABASE %s" % DB, db=PARTS["dbname"])

LEDGER = os.path.join(TMP, "ledger.jsonl")
CALLS = os.path.join(TMP, "calls.jsonl")
SIMSTATE = os.path.join(TMP, "sim-state.json")
WORKFLOW = os.path.join(TMP, "chaos.lua")
with open(WORKFLOW, "w") as f:
    f.write(r'''
local flow = require "flow"
local emr = require "emr"
local json = require "json"
local sys = require "flow.sys"

-- every task body says when it starts and ends, in a ledger the test reads
local function note(ctx, what)
  local f = assert(io.open(os.getenv("CHAOS_LEDGER"), "a"))
  f:write(json.encode { run = ctx.run_id, task = ctx.task, attempt = ctx.attempt, what = what,
    pid = sys.getpid(), t = flow.time() }, "\n")
  f:close()
end

local SPEC = { Name = "chaos", ReleaseLabel = "emr-7.1.0", JobFlowRole = "EMR_EC2_DefaultRole",
  ServiceRole = "EMR_DefaultRole", Instances = { KeepJobFlowAliveWhenNoSteps = true,
  InstanceGroups = { { InstanceRole = "MASTER", InstanceType = "m5.xlarge", InstanceCount = 1 } } } }

local wf = flow.workflow { name = "chaos", params = { work = 0.3 } }
wf:task("prepare", function(ctx)
  note(ctx, "start") flow.sleep(0.05) note(ctx, "end")
  return true
end)
wf:task("create_cluster", { after = "prepare" }, function(ctx)
  note(ctx, "start")
  local c = emr.create_cluster(SPEC, { ctx = ctx })
  note(ctx, "end")
  return { id = c.cluster_id }
end)
wf:task("wait_cluster", { after = "create_cluster" }, function(ctx)
  note(ctx, "start")
  emr.wait_cluster(ctx.results.create_cluster.id, { every = 0.1, timeout = 60 })
  note(ctx, "end")
end)
wf:task("work", { after = "wait_cluster" }, function(ctx)
  note(ctx, "start") flow.sleep(ctx.params.work) note(ctx, "end")
end)
wf:task("terminate", { after = { "create_cluster", "work" }, cleanup = true,
  undoes = "create_cluster" }, function(ctx)
  note(ctx, "start")
  -- the cluster by its result, or by its tags when create_cluster was interrupted after
  -- RunJobFlow (as workflows/dms_to_emr.lua's terminate_cluster does)
  local c = ctx.results.create_cluster
  local id = c and c.id
  if not id then
    local found = emr.find_cluster { run_id = ctx.run_id, task = "create_cluster" }
    id = found and found.Id
  end
  if id then emr.terminate(id, { every = 0.1, timeout = 60 }) end
  note(ctx, "end")
end)
return wf
''')

ENV = dict(os.environ)
ENV.update({
    "FLOWRUN_STORE": STORE, "FLOWRUN_SIM_STATE": SIMSTATE, "CHAOS_LEDGER": LEDGER,
    "FLOWRUN_FENCE_LOG": CALLS, "FLOWRUN_HOME": os.path.join(TMP, "home"),
    "FLOWRUN_SIM_DURATIONS": json.dumps({"emr_starting": 0.2, "emr_bootstrapping": 0.2,
                                         "emr_terminating": 0.2}),
})
for k in list(ENV):
    if k.startswith("FLOWRUN_VAR_") or k == "FLOWRUN_SIM_FAIL":
        del ENV[k]


def flowrun(*args, timeout=120):
    return subprocess.run([tap.FLOWRUN] + list(args), env=ENV, capture_output=True, text=True,
                          timeout=timeout)


# queue the runs (flowrun submit, 8 at a time)
t0 = time.time()
r = flowrun("store", "init")
tap.eq(r.returncode, 0, "store init: " + r.stdout.strip() + r.stderr.strip())
procs, ids, failed = [], [], 0
for i in range(RUNS):
    procs.append(subprocess.Popen([tap.FLOWRUN, "submit", WORKFLOW, "--sim", "-q", "--run-id",
                                   "chaos-%03d" % i], env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
    if len(procs) >= 8 or i == RUNS - 1:
        for p in procs:
            out, err = p.communicate(timeout=60)
            if p.returncode == 0:
                ids.append(out.strip())
            else:
                failed += 1
                tap.diag(err)
        procs = []
tap.eq((len(ids), failed), (RUNS, 0), "%d runs submitted in %.1fs" % (RUNS, time.time() - t0))


class Worker:
    def __init__(self, n):
        self.n = n
        self.p = None
        self.gen = 0
        self.stopped_at = None

    def start(self):
        self.gen += 1
        log = open(os.path.join(TMP, "worker%d.%d.log" % (self.n, self.gen)), "w")
        events = open(os.path.join(TMP, "worker%d.%d.events" % (self.n, self.gen)), "w")
        self.p = subprocess.Popen([tap.FLOWRUN, "worker", "--sim", "--concurrency", "8", "--lease",
                                   "%gs" % LEASE, "--poll", "0.5s", "--log-format", "json",
                                   "--max-takeovers", "1000"],
                                  env=ENV, stdout=events, stderr=log)
        self.stopped_at = None

    def alive(self):
        return self.p is not None and self.p.poll() is None


rng = random.Random(SEED)
tap.diag("seed %d (FLOWRUN_CHAOS_SEED=%d reproduces the schedule of signals)" % (SEED, SEED))
workers = [Worker(i) for i in range(NWORKERS)]
for w in workers:
    w.start()
events = []


def unfinished():
    return int(psql("SELECT count(*) FROM flowrun.runs WHERE state NOT IN ('success', 'failed', 'cancelled')"))


start = time.time()
next_chaos = start + 1.0
left = RUNS
kills = stops = long_stops = 0
try:
    while time.time() - start < BUDGET:
        left = unfinished()
        if left == 0:
            break
        now = time.time()
        for w in workers:
            if w.stopped_at and now >= w.stopped_at:
                os.kill(w.p.pid, signal.SIGCONT)
                events.append(("cont", w.p.pid, time.time()))
                w.stopped_at = None
            if not w.alive():
                w.start()
                events.append(("start", w.p.pid, time.time()))
        # chaos while most of the runs are still to do; the last ones finish in peace
        if now >= next_chaos and left > RUNS // 10:
            running = [w for w in workers if w.alive() and not w.stopped_at]
            if len(running) >= 2:
                w = rng.choice(running)
                if rng.random() < 0.5:
                    os.kill(w.p.pid, signal.SIGKILL)
                    w.p.wait()
                    events.append(("kill", w.p.pid, time.time()))
                    kills += 1
                else:
                    pause = rng.choice([0.5, 1.0, LEASE + 1.5, LEASE + 2.5])
                    os.kill(w.p.pid, signal.SIGSTOP)
                    events.append(("stop", w.p.pid, time.time(), pause))
                    w.stopped_at = time.time() + pause
                    stops += 1
                    long_stops += pause > LEASE
            next_chaos = time.time() + rng.uniform(1.0, 2.5)
        time.sleep(0.1)
finally:
    for w in workers:
        if w.stopped_at and w.alive():
            os.kill(w.p.pid, signal.SIGCONT)
    time.sleep(0.5)
    for w in workers:
        if w.alive():
            w.p.send_signal(signal.SIGTERM)
    for w in workers:
        if w.p:
            try:
                w.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.p.kill()
elapsed = time.time() - start
tap.diag("%d kills, %d stops (%d longer than the lease), %.1fs" % (kills, stops, long_stops, elapsed))
tap.eq(left, 0, "every run finished within %gs (%.1fs)" % (BUDGET, elapsed))

# every run finished exactly once, and succeeded
states = qjson("SELECT state, count(*) AS n FROM flowrun.runs GROUP BY state")
tap.eq({s["state"]: s["n"] for s in states}, {"success": RUNS}, "every run succeeded")
finishes = qjson("SELECT run_id, count(*) AS n FROM flowrun.events WHERE rec->>'ev' = 'run_finished' "
                 "GROUP BY run_id HAVING count(*) <> 1")
tap.eq(finishes, [], "every run finished exactly once (one run_finished record each)")
takeovers = int(psql("SELECT coalesce(sum(takeovers), 0) FROM flowrun.runs"))
tap.ok(takeovers > 0, "runs were taken over (%d takeovers)" % takeovers)

# no task whose success was recorded started again
succ = qjson("SELECT run_id, rec->>'task' AS task, min((rec->>'t')::float8) AS t FROM flowrun.events "
             "WHERE rec->>'ev' = 'task_succeeded' GROUP BY run_id, rec->>'task'")
succeeded_at = {(s["run_id"], s["task"]): s["t"] for s in succ}
again = []
with open(LEDGER) as f:
    for line in f:
        e = json.loads(line)
        t_ok = succeeded_at.get((e["run"], e["task"]))
        if e["what"] == "start" and t_ok is not None and e["t"] > t_ok:
            again.append(e)
tap.eq(again[:5], [], "no task started again after its success was recorded")

# the simulated world: one cluster per run, none left running
LIST = r'''
local sim = require "sim"
sim.configure { state_file = os.getenv("FLOWRUN_SIM_STATE") }
require("aws").use_transport(sim.handle)
local aws, json = require "aws", require "json"
local out, marker = {}, nil
repeat
  local r = aws.emr.list_clusters { Marker = marker }
  for _, c in ipairs(r.Clusters or {}) do
    local d = aws.emr.describe_cluster { ClusterId = c.Id }.Cluster
    local run
    for _, kv in ipairs(d.Tags or {}) do if kv.Key == "flowrun:run-id" then run = kv.Value end end
    out[#out + 1] = { id = c.Id, run = run, state = d.Status.State }
  end
  marker = r.Marker
until not marker
io.write(json.encode(json.array(out)))
'''
r = subprocess.run([tap.FLOWRUN, "-"], input=LIST, env=ENV, capture_output=True, text=True, timeout=120)
tap.eq(r.returncode, 0, "the simulated world read " + r.stderr[-300:])
clusters = json.loads(r.stdout or "[]")
per_run = {}
for c in clusters:
    per_run.setdefault(c["run"], []).append(c)
not_one = {k: len(v) for k, v in per_run.items() if len(v) != 1}
tap.eq((len(per_run), not_one), (RUNS, {}), "exactly one EMR cluster per run (%d clusters)" % len(clusters))
running = [c for c in clusters if c["state"] not in ("TERMINATED", "TERMINATED_WITH_ERRORS")]
tap.eq(running, [], "none left running")

# fencing: epochs never go back in a run's journal nor in its log lines
back = qjson("SELECT run_id, seq, epoch FROM (SELECT run_id, seq, epoch, max(epoch) OVER "
             "(PARTITION BY run_id ORDER BY seq) AS hi FROM flowrun.events) x WHERE epoch < hi")
tap.eq(back[:5], [], "no record written by a holder after a later holder took the run")
back_logs = qjson("SELECT run_id, id, epoch FROM (SELECT run_id, id, epoch, max(epoch) OVER "
                  "(PARTITION BY run_id ORDER BY id) AS hi FROM flowrun.logs) x WHERE epoch < hi")
tap.eq(back_logs[:5], [], "no log line written by a holder after a later holder wrote")
# ...nor an AWS call after the run was taken over: a call with epoch e is older than the first
# record of every later epoch
first = qjson("SELECT run_id, epoch, min((rec->>'t')::float8) AS t FROM flowrun.events "
              "GROUP BY run_id, epoch")
firsts = {}
for x in first:
    firsts.setdefault(x["run_id"], []).append((x["epoch"], x["t"]))
late, ncalls = [], 0
with open(CALLS) as f:
    for line in f:
        c = json.loads(line)
        ncalls += 1
        for ep, t in firsts.get(c["run"], []):
            if c["epoch"] is not None and ep > c["epoch"] and c["t"] > t:
                late.append(c)
tap.ok(ncalls > RUNS * 3, "AWS calls were logged (%d)" % ncalls)
tap.eq(late[:5], [], "no AWS call for a run after a later holder took it over")

# the stopped workers that overslept their lease found out and said so
lost_msgs = 0
for name in os.listdir(TMP):
    if name.startswith("worker") and name.endswith(".log"):
        with open(os.path.join(TMP, name)) as f:
            lost_msgs += sum(1 for l in f if "is no longer held by this process" in l)
if long_stops > 0:
    tap.ok(lost_msgs > 0, "a worker woken after its lease expired stopped the runs it lost and said "
           "so (%d runs)" % lost_msgs)

if tap._failed == 0:
    psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB, db=PARTS["dbname"])
    subprocess.run(["rm", "-rf", TMP])
else:
    tap.diag("kept for inspection: %s and database %s" % (TMP, DB))
tap.done()
