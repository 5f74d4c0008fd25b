"""The dms_to_emr pipeline as a process, in the simulator (--sim --virtual-time), with the real
source PostgreSQL (FLOWRUN_TEST_PG): success; a failing step (cluster terminated, exit 1, the
failure details printed); a failing DMS task (no cluster created); SIGINT while waiting for the
step (step cancelled, cluster terminated, exit 130); SIGKILL during the step wait then resume
(exactly one cluster ever created). The simulated world is read from its state file.

The source database's secret is given to the simulator in a seed (FLOWRUN_SIM_SEED): the
pipeline's pre-flight reads it from the simulated Secrets Manager, and the simulated DMS reads
the source through it, as both do on AWS; nothing tells the simulator what the source holds."""
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
import pipeline_source  # noqa: E402
from webhook_server import Webhook  # noqa: E402

ROOT = tap.ROOT
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-pipeline-")
DB = "flowrun_pipeline_%d" % os.getpid()
WORKFLOW = os.path.join(ROOT, "workflows", "dms_to_emr.lua")
EXAMPLE = os.path.join(ROOT, "workflows", "config", "example.json")
TASK = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOTASK00000000000"
CDC_TASK = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOCDCTASK0000000"
TABLES = ["public.customers", "public.orders", "public.order_items"]
SOURCE_COUNTS = {"public.customers": 2000, "public.orders": 12000, "public.order_items": 36000}


def psql(conninfo, *args):
    return subprocess.run(["psql", conninfo, "-v", "ON_ERROR_STOP=1", "-q"] + list(args),
                          check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def source_conninfo():
    return PG + " dbname=" + DB


def seed_file():
    """The demo world's source secret, pointing at the test's database."""
    path = os.path.join(TMP, "seed.json")
    secret = {"engine": "postgres", "host": os.environ["FLOWRUN_TEST_PGHOST"],
              "port": int(os.environ["FLOWRUN_TEST_PGPORT"]), "username": os.environ["FLOWRUN_TEST_PGUSER"],
              "password": os.environ["FLOWRUN_TEST_PGPASSWORD"], "dbname": DB}
    with open(path, "w") as f:
        json.dump({"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": secret}]}, f)
    return path


def env(case, **extra):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("FLOWRUN_VAR_") or k.startswith("FLOWRUN_SIM"):
            del e[k]
    e["FLOWRUN_SIM_STATE"] = os.path.join(TMP, case, "sim.json")
    e["FLOWRUN_SIM_SEED"] = seed_file()
    e.update(extra)
    return e


def args(case, *more):
    return [tap.FLOWRUN, WORKFLOW, "--vars-file", EXAMPLE, "--var", "step_log_wait=0",
            "--state-dir", os.path.join(TMP, case, "state"), "--sim", "--virtual-time",
            "--log-format", "text"] + list(more)


def run(case, *more, extra_env=None, timeout=120):
    os.makedirs(os.path.join(TMP, case), exist_ok=True)
    t0 = time.time()
    p = subprocess.run(args(case, *more), cwd=ROOT, env=env(case, **(extra_env or {})),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.time() - t0


def world(case):
    with open(os.path.join(TMP, case, "sim.json")) as f:
        return json.load(f)


def clusters(w):
    c = w["emr"]["clusters"]
    return list(c.values()) if isinstance(c, dict) else []


def step_states(cluster):
    return [s["Status"]["State"] for s in cluster.get("steps") or []]


def wait_for(case, pred, timeout=60):
    """Polls the simulated world until pred(world) holds."""
    end = time.time() + timeout
    path = os.path.join(TMP, case, "sim.json")
    while time.time() < end:
        try:
            if os.path.exists(path) and pred(world(case)):
                return True
        except (ValueError, KeyError):
            pass
        time.sleep(0.05)
    return False


def step_running(w):
    return any("RUNNING" in step_states(c) for c in clusters(w))


def setup():
    tap.ok(PG is not None, "FLOWRUN_TEST_PG is set (tests/servers/pg.sh)")
    if PG is None:
        tap.done()
    psql(PG, "-c", "CREATE DATABASE " + DB)
    psql(source_conninfo(), "-f", os.path.join(ROOT, "scripts", "demo-source.sql"))


def requests_match_models(path):
    """Every JSON request the run sent validates against botocore's input shapes."""
    import botocore.session
    import botocore.validate
    session = botocore.session.get_session()
    validator = botocore.validate.ParamValidator()
    seen, bad = set(), []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if not r.get("target"):
                continue
            svc = r["service"]
            op = r["target"].split(".", 1)[1]
            model = session.get_service_model(svc).operation_model(op)
            report = validator.validate(json.loads(r["body"] or "{}"), model.input_shape)
            seen.add(svc + "." + op)
            if report.has_errors():
                bad.append("%s.%s: %s" % (svc, op, report.generate_report()))
    tap.ok(len(seen) >= 15, "%d different operations were sent" % len(seen))
    tap.eq(bad, [], "every request valid for botocore's ParamValidator")


def success():
    rc, out, secs = run("ok", extra_env={"FLOWRUN_SIM_RECORD": os.path.join(TMP, "ok", "requests.jsonl")})
    requests_match_models(os.path.join(TMP, "ok", "requests.jsonl"))
    tap.eq(rc, 0, "exit 0")
    tap.like(out, "SUCCESS", "summary says SUCCESS")
    tap.ok(secs < 30, "hours of simulated AWS in %.1f s of real time" % secs)
    w = world("ok")
    cs = clusters(w)
    tap.eq(len(cs), 1, "one cluster")
    tap.eq(cs[0]["Status"]["State"], "TERMINATED", "terminated at the end")
    tap.eq(step_states(cs[0]), ["COMPLETED"], "one step, completed")
    tap.ok("flowrun:run-id" in (cs[0].get("Tags") or {}), "cluster tagged with the run id")
    tables = w["glue"]["databases"]["lake"]["tables"]
    tap.eq(sorted(tables), ["customers", "order_items", "orders"], "Iceberg tables registered in Glue")
    tap.eq(tables["orders"]["Parameters"]["table_type"], "ICEBERG", "as Iceberg")
    tap.eq(w["dms"]["tasks"][TASK]["sim_tables"], SOURCE_COUNTS,
           "the simulated DMS copied the real source's row counts")
    tap.like(out, "public.order_items: 36000 rows, primary key (order_id, line_no)", "preflight log")
    keys = sorted(w["s3"]["buckets"]["flowrun-demo-raw"]["objects"])
    tap.ok("raw/public/orders/LOAD00000001.parquet" in keys, "raw Parquet in the raw zone")
    art = w["s3"]["buckets"]["flowrun-demo-artifacts"]["objects"]
    tap.ok("flowrun/jobs/raw_to_iceberg.py" in art, "job script uploaded")
    # a second run of the same pipeline: the DMS task reloads, a new cluster is made
    rc, out, _ = run("ok")
    tap.eq(rc, 0, "a second run succeeds")
    tap.eq(len(clusters(world("ok"))), 2, "with its own cluster")
    tap.like(out, "reload-target", "the DMS task is reloaded")


def step_failure():
    rc, out, _ = run("stepfail", "--sim-fail", "emr.step")
    tap.eq(rc, 1, "exit 1")
    tap.like(out, "FAILED", "run failed")
    tap.like(out, "reason: Unknown Error", "FailureDetails reason printed")
    tap.like(out, "log: s3://flowrun-demo-logs/emr/", "log file printed")
    tap.like(out, "PATH_NOT_FOUND", "stderr tail printed")
    cs = clusters(world("stepfail"))
    tap.eq(len(cs), 1, "one cluster")
    tap.eq(cs[0]["Status"]["State"] in ("TERMINATED", "TERMINATED_WITH_ERRORS"), True,
           "cluster terminated (%s)" % cs[0]["Status"]["State"])
    tap.eq(step_states(cs[0]), ["FAILED"], "the step failed, once (not retried into a second)")


def dms_failure():
    # start_cluster=after_dms: a DMS failure costs no cluster
    rc, out, _ = run("dmsfail", "--var", "start_cluster=after_dms",
                     extra_env={"FLOWRUN_SIM_FAIL": "dms.task"})  # the env spelling
    tap.eq(rc, 1, "exit 1")
    tap.like(out, "FATAL_ERROR", "the DMS reason is printed")
    tap.eq(len(clusters(world("dmsfail"))), 0, "no cluster was created")


def dms_failure_early_cluster():
    # the default: the cluster boots while DMS loads, and the same cleanup terminates it
    rc, out, _ = run("dmsfail-early", "--sim-fail", "dms.task")
    tap.eq(rc, 1, "exit 1")
    tap.like(out, "FATAL_ERROR", "the DMS reason is printed")
    cs = clusters(world("dmsfail-early"))
    tap.eq(len(cs), 1, "one cluster, created while DMS loaded")
    tap.eq(cs and cs[0]["Status"]["State"], "TERMINATED", "terminated after the DMS failure")
    tap.eq(cs and step_states(cs[0]), [], "no step was added")
    tl = cs[0]["Status"]["Timeline"] if cs else {}
    task = world("dmsfail-early")["dms"]["tasks"][TASK]
    failed_at = task["sim_run"]["stopped_at"]
    tap.ok(tl.get("EndDateTime", 1e18) - failed_at <= 2 * 30 + 75 + 5,
           "terminated right after DMS failed, not after the cluster finished booting "
           "(%.0f s after)" % (tl.get("EndDateTime", 1e18) - failed_at))


def row_count_mismatch():
    # the source gains rows after DMS copied it: the check names the table
    os.makedirs(os.path.join(TMP, "mismatch"), exist_ok=True)
    rc, out, _ = run("mismatch", "--sim-fail", "dms.table", "--var", "start_cluster=after_dms")
    tap.eq(rc, 1, "an errored DMS table fails the run")
    tap.like(out, "public.order_items", "naming the table")
    tap.eq(len(clusters(world("mismatch"))), 0, "no cluster")


def s3_object(case, bucket, key):
    """An object's body from the simulated world (base64 in the state file, or a spilled blob)."""
    import base64
    o = world(case)["s3"]["buckets"][bucket]["objects"][key]
    if "blob" in o:
        with open(os.path.join(TMP, case, "sim.json") + "." + o["blob"], "rb") as f:
            return f.read().decode()
    return base64.b64decode(o["body64"]).decode()


def iceberg(case, db, table):
    """The simulated Iceberg table: (metadata, rows {key: digest}) read as a reader would."""
    w = world(case)
    loc = w["glue"]["databases"][db]["tables"][table]["Parameters"]["metadata_location"]

    def get(uri):
        b, k = uri[len("s3://"):].split("/", 1)
        return s3_object(case, b, k)
    meta = json.loads(get(loc))
    snap = [x for x in meta["snapshots"] if x["snapshot-id"] == meta["current-snapshot-id"]][0]
    rows = {}
    for f in json.loads(get(snap["manifest-list"]))["data_files"]:
        rows.update(pipeline_source.parse_lines(get(f["path"])[len("PAR1\n"):]))
    return meta, rows


def bookmark(meta):
    snaps = {x["snapshot-id"]: x for x in meta["snapshots"]}
    s = snaps.get(meta["current-snapshot-id"])
    while s:
        if "flowrun.raw-bookmark" in s["summary"]:
            return s["summary"]["flowrun.raw-bookmark"]
        s = snaps.get(s.get("parent-snapshot-id"))
    return None


def psql_source(sql):
    psql(source_conninfo(), "-c", sql)


def full_reload_after_deletes():
    case = "reload"
    rc, out, _ = run(case)
    tap.eq(rc, 0, "a first full load")
    meta, _ = iceberg(case, "lake", "orders")
    first = meta["current-snapshot-id"]
    psql_source("DELETE FROM public.order_items WHERE order_id > 11900; DELETE FROM public.orders WHERE id > 11900")
    rc, out, _ = run(case)
    tap.eq(rc, 0, "a full reload after deletes: verify's Athena counts equal the source's")
    if rc != 0:
        tap.diag(out[-3000:])
    tap.like(out, "lake.orders: 11900 rows in Iceberg (Athena), 11900 in the source", "the deleted rows are gone")
    meta, rows = iceberg(case, "lake", "orders")
    tap.eq(rows, pipeline_source.read(source_conninfo(), "public.orders"), "the table equals the source, row for row")
    tap.eq(len(meta["snapshots"]), 2, "one new snapshot")
    tap.ok(any(x["snapshot-id"] == first for x in meta["snapshots"]), "the previous load is still there (time travel)")
    psql_source("SET client_min_messages = warning")
    psql(source_conninfo(), "-q", "-c", "SET client_min_messages = warning", "-f",
         os.path.join(ROOT, "scripts", "demo-source.sql"))


def cdc_nightly():
    """Three nights of the incremental mode, the source changing in between."""
    case = "cdc"
    more = ["--var", "mode=incremental", "--var", "dms_task_arn=" + CDC_TASK, "--var",
            "raw_uri=s3://flowrun-demo-raw/cdc", "--var", "glue_database=lake_cdc",
            "--var", "cdc_count_check=true"]
    fast = {"FLOWRUN_SIM_DURATIONS": json.dumps({"dms_cdc_interval": 0})}

    def same_as_source(what):
        for full in TABLES:
            _, rows = iceberg(case, "lake_cdc", full.split(".")[1])
            if not tap.eq(rows, pipeline_source.read(source_conninfo(), full),
                          "%s: %s equals the source" % (what, full)):
                break

    rc, out, _ = run(case, *more, extra_env=fast)
    tap.eq(rc, 0, "night 1: the first run starts the task and loads")
    if rc != 0:
        tap.diag(out[-3000:])
    tap.eq(world(case)["dms"]["tasks"][CDC_TASK]["Status"], "running", "the task streams afterwards")
    same_as_source("night 1")
    b1 = bookmark(iceberg(case, "lake_cdc", "orders")[0])
    psql_source("INSERT INTO public.orders SELECT g, 1, 'new', 1.00, now() FROM generate_series(20001, 20010) g; "
                "UPDATE public.orders SET status = 'cancelled' WHERE id BETWEEN 200 AND 209; "
                "DELETE FROM public.order_items WHERE order_id BETWEEN 300 AND 302; "
                "DELETE FROM public.orders WHERE id BETWEEN 300 AND 302")
    rc, out, _ = run(case, *more, "--sim-fail", "emr.step", extra_env=fast)
    tap.eq(rc, 1, "night 2 fails (its step fails)")
    tap.like(out, "wait_dms: DMS task flowrun-demo-cdc streams changes: CDC latency 5 s",
             "the healthy stream was checked, not restarted")
    tap.eq(bookmark(iceberg(case, "lake_cdc", "orders")[0]), b1, "the bookmark stays where it was")
    rc, out, _ = run(case, *more, extra_env=fast)
    tap.eq(rc, 0, "night 2 re-run")
    if rc != 0:
        tap.diag(out[-3000:])
    tap.like(out, "public.orders: merge, 1 file(s) after %s" % b1, "the same CDC file applied now")
    tap.like(out, "lake_cdc.orders: 12007 rows in Iceberg (Athena), 12007 in the source",
             "inserts and deletes counted (cdc_count_check)")
    same_as_source("night 2")
    psql_source("UPDATE public.customers SET name = 'Renamed' WHERE id < 5; "
                "INSERT INTO public.customers VALUES (9001, 'x@example.com', 'X', now()); "
                "DELETE FROM public.order_items WHERE order_id = 400 AND line_no = 1")
    rc, out, _ = run(case, *more, extra_env=fast)
    tap.eq(rc, 0, "night 3")
    same_as_source("night 3")
    meta, _ = iceberg(case, "lake_cdc", "customers")
    rc, out, _ = run(case, *more, extra_env=fast)
    tap.eq(rc, 0, "night 3 run again")
    tap.like(out, "public.customers: none, 0 file(s)", "nothing left to apply")
    tap.like(out, "nothing new since the last run: no Spark job this time", "so no Spark job")
    newest = max(clusters(world(case)), key=lambda c: c["Status"]["Timeline"]["CreationDateTime"])
    tap.eq((step_states(newest), newest["Status"]["State"]), ([], "TERMINATED"),
           "the cluster started early was terminated without a step")
    tap.eq(len(iceberg(case, "lake_cdc", "customers")[0]["snapshots"]), len(meta["snapshots"]),
           "no new snapshot: re-running a succeeded night changes nothing")
    same_as_source("after the re-run")
    tap.eq(world(case)["dms"]["tasks"][CDC_TASK]["sim_starts"], 1, "the task was started once, by night 1")
    before = len(clusters(world(case)))
    rc, out, _ = run(case, *more, "--sim-fail", "dms.latency=900", extra_env=fast)
    tap.eq(rc, 1, "a stream lagging 15 minutes fails the night")
    tap.like(out, "CDC latency 900 s is above the limit of 600 s", "saying so")
    cs = clusters(world(case))
    tap.eq(len(cs), before + 1, "the night had started its cluster early")
    tap.eq(sorted(c["Status"]["State"] for c in cs), ["TERMINATED"] * len(cs),
           "every cluster of the five nights is terminated")
    psql(source_conninfo(), "-q", "-c", "SET client_min_messages = warning", "-f",
         os.path.join(ROOT, "scripts", "demo-source.sql"))


def throttled():
    rc, out, _ = run("throttle", "--sim-fail", "throttle=0.2")
    tap.eq(rc, 0, "one call in five throttled: retries absorb it, the run succeeds")
    if rc != 0:
        tap.diag(out[-3000:])
    tap.eq(len(clusters(world("throttle"))), 1, "still exactly one cluster")


def lost_answer():
    rc, out, _ = run("lost", "--sim-fail", "lost=emr.RunJobFlow")
    tap.eq(rc, 0, "RunJobFlow's answer lost once: the run succeeds")
    tap.eq(len(clusters(world("lost"))), 1, "and made one cluster, not two")
    tap.like(out, "was created by the call whose answer was lost", "found by its tags")


def timeout_during_step():
    # the same cancellation path as Ctrl-C, driven by --timeout: the step wait is cancelled
    # after an hour (the step would run for years), the step is cancelled, the cleanup task
    # terminates the cluster
    rc, out, _ = run("runtimeout", "--timeout", "1h", "--var", "step_timeout=100000h",
                     extra_env={"FLOWRUN_SIM_DURATIONS": json.dumps({"emr_step": 1e9})})
    tap.eq(rc, 1, "exit 1 after the run timeout")
    cs = clusters(world("runtimeout"))
    tap.eq(len(cs), 1, "one cluster")
    tap.eq(cs[0]["Status"]["State"], "TERMINATED", "terminated by the cleanup task")
    tap.eq(step_states(cs[0]), ["CANCELLED"], "the step was cancelled (CancelSteps)")
    tap.like(out, "cancel SUBMITTED", "CancelSteps was sent")


FAST = {"dms_start": 1, "dms_min_table": 1, "dms_rows_per_second": 1e9, "emr_starting": 1,
        "emr_bootstrapping": 1, "emr_step_pending": 1, "emr_terminating": 1, "emr_cancel": 1}


def start_long(case, virtual=True):
    """Starts the pipeline with a step that would run for years. Without virtual time, the
    durations and the polls are shrunk so that the run reaches the step in about a second."""
    os.makedirs(os.path.join(TMP, case), exist_ok=True)
    durations = dict(FAST, emr_step=1e9) if not virtual else {"emr_step": 1e9}
    e = env(case, FLOWRUN_SIM_DURATIONS=json.dumps(durations))
    a = args(case, "--var", "step_timeout=100000h")
    if not virtual:
        a.remove("--virtual-time")
        a += ["--var", "dms_poll_every=0.2", "--var", "emr_poll_every=0.2"]
    return subprocess.Popen(a, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def sigint_during_step(virtual=False):
    case = "sigint-virtual" if virtual else "sigint"
    p = start_long(case, virtual=virtual)
    running = wait_for(case, step_running)
    tap.ok(running, "the step is running")
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    tap.eq(p.returncode, 130, "exit 130" + (" (virtual time)" if virtual else ""))
    cs = clusters(world(case))
    tap.eq(len(cs), 1, "one cluster")
    tap.eq(cs[0]["Status"]["State"], "TERMINATED", "cluster terminated by the cleanup task")
    tap.eq(step_states(cs[0]), ["CANCELLED"], "the step was cancelled")
    tap.like(out[-4000:], "cancel", "the cancellation is logged")
    if virtual:
        # the cleanup terminated the cluster the step needed: resuming makes a new one (it does
        # not hand the step's wait a cluster that no longer exists)
        e = env(case, FLOWRUN_SIM_DURATIONS=json.dumps({"emr_step": 600}))
        r = subprocess.run([tap.FLOWRUN, "resume", "last", "--state-dir",
                            os.path.join(TMP, case, "state"), "--virtual-time", "--log-format", "text"],
                           cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        tap.eq(r.returncode, 0, "resume after Ctrl-C finishes the run")
        if r.returncode != 0:
            tap.diag(r.stdout[-3000:])
        cs = clusters(world(case))
        tap.eq(len(cs), 2, "a second cluster for the resumed step (the first was terminated)")
        tap.eq([c["Status"]["State"] for c in cs], ["TERMINATED", "TERMINATED"], "both terminated")
        tap.eq(sorted(s for c in cs for s in step_states(c)), ["CANCELLED", "COMPLETED"],
               "the cancelled step, then one completed step")


def sigint_during_step_virtual():
    # the clock only jumps while the step runs: the signal must get through all the same
    sigint_during_step(virtual=True)


def sigint_during_dms():
    # the run started the DMS load: cancelling the run stops it (StopReplicationTask), and the
    # cluster that booted meanwhile is terminated
    case = "sigint-dms"
    os.makedirs(os.path.join(TMP, case), exist_ok=True)
    e = env(case, FLOWRUN_SIM_DURATIONS=json.dumps({"dms_rows_per_second": 0.0001}))
    p = subprocess.Popen(args(case), cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    loading = wait_for(case, lambda w: w["dms"]["tasks"][TASK]["Status"] == "running" and clusters(w))
    tap.ok(loading, "DMS is loading (and the cluster booting)")
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    tap.eq(p.returncode, 130, "exit 130")
    w = world(case)
    tap.ok(w["dms"]["tasks"][TASK]["Status"] in ("stopping", "stopped"),
           "the DMS task this run started was stopped (%s)" % w["dms"]["tasks"][TASK]["Status"])
    tap.like(out, "stop requested (the run was cancelled)", "and the run says so")
    cs = clusters(w)
    tap.eq(len(cs), 1, "one cluster")
    tap.eq(cs and cs[0]["Status"]["State"], "TERMINATED", "terminated by the cleanup task")


def sigkill_then_resume():
    p = start_long("kill")
    tap.ok(wait_for("kill", step_running), "the step is running")
    p.kill()
    p.communicate()
    cs = clusters(world("kill"))
    tap.eq(len(cs), 1, "one cluster before the crash")
    tap.ok(cs[0]["Status"]["State"] in ("WAITING", "RUNNING"), "left running by SIGKILL")
    e = env("kill", FLOWRUN_SIM_DURATIONS=json.dumps({"emr_step": 600}))
    # no --sim here: the journal recorded that the run talks to the simulator, and resume
    # keeps it so (resuming against a real account by mistake would create real resources)
    r = subprocess.run([tap.FLOWRUN, "resume", "last", "--state-dir", os.path.join(TMP, "kill", "state"),
                        "--virtual-time", "--log-format", "text"], cwd=ROOT, env=e,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    tap.eq(r.returncode, 0, "resume finishes the run")
    if r.returncode != 0:
        tap.diag(r.stdout[-3000:])
    cs = clusters(world("kill"))
    tap.eq(len(cs), 1, "exactly one cluster was ever created")
    tap.eq(cs[0]["Status"]["State"], "TERMINATED", "and it is terminated")
    tap.eq(step_states(cs[0]), ["COMPLETED"], "exactly one step, completed")


SERVERLESS = ["--var", "compute=serverless", "--var",
              "serverless_execution_role=arn:aws:iam::123456789012:role/flowrun-serverless"]


def apps(w):
    a = (w.get("emr_serverless") or {}).get("applications") or {}
    return list(a.values()) if isinstance(a, dict) else []


def job_runs(app):
    r = app.get("runs") or {}
    return list(r.values()) if isinstance(r, dict) else []


def serverless_run():
    rc, out, _ = run("serverless", *SERVERLESS)
    tap.eq(rc, 0, "compute=serverless: exit 0")
    if rc != 0:
        tap.diag(out[-3000:])
    w = world("serverless")
    tap.eq(len(clusters(w)), 0, "no EMR cluster")
    a = apps(w)
    tap.eq(len(a), 1, "one EMR Serverless application, created")
    tap.eq(a and a[0]["state"], "STOPPED", "stopped at the end (this run started it)")
    runs = job_runs(a[0]) if a else []
    tap.eq([r["state"] for r in runs], ["SUCCESS"], "one job run, SUCCESS")
    tap.like(runs and runs[0]["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"] or "",
             "--conf spark.sql.catalog.glue_catalog=org.apache.iceberg.spark.SparkCatalog",
             "the Iceberg catalog configured")
    tap.like(out, "lake.order_items: 36000 rows in Iceberg (Athena), 36000 in the source",
             "the job's batch applied: verify counts the rows")
    rc, out, _ = run("serverless", *SERVERLESS)
    tap.eq(rc, 0, "a second run")
    a = apps(world("serverless"))
    tap.eq(len(a), 1, "finds the application by name instead of creating another")
    tap.eq(len(job_runs(a[0])), 2, "and starts its own job run")


def serverless_failure():
    rc, out, _ = run("serverless-fail", *SERVERLESS, "--sim-fail", "serverless.job")
    tap.eq(rc, 1, "a failed job run fails the run (exit 1)")
    tap.like(out, "emr_serverless.job_failed", "with the job's error")
    tap.like(out, "Job failed, please check complete logs", "its stateDetails")
    tap.like(out, "driver stderr (last lines)", "and the driver's stderr tail")
    tap.like(out, "TABLE_OR_VIEW_NOT_FOUND", "read from the job's S3 log location")
    a = apps(world("serverless-fail"))
    tap.eq(a and a[0]["state"], "STOPPED", "the application is stopped")
    tap.eq([r["state"] for r in job_runs(a[0])] if a else None, ["FAILED"], "one job run: not retried")


def serverless_sigint():
    case = "serverless-sigint"
    os.makedirs(os.path.join(TMP, case), exist_ok=True)
    e = env(case, FLOWRUN_SIM_DURATIONS=json.dumps({"serverless_job": 1e9}))
    p = subprocess.Popen(args(case, *SERVERLESS, "--var", "step_timeout=100000h"), cwd=ROOT, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = wait_for(case, lambda w: any(r["state"] == "RUNNING" for a in apps(w) for r in job_runs(a)))
    tap.ok(running, "the job run is running")
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    tap.eq(p.returncode, 130, "exit 130")
    a = apps(world(case))
    tap.eq([r["state"] for r in job_runs(a[0])] if a else None, ["CANCELLED"],
           "the job run was cancelled (CancelJobRun), and the cleanup waited for it")
    tap.eq(a and a[0]["state"], "STOPPED", "then stopped the application")
    tap.like(out, "cancel requested", "the cancellation is logged")
    e = env(case, FLOWRUN_SIM_DURATIONS=json.dumps({"serverless_job": 600}))
    r = subprocess.run([tap.FLOWRUN, "resume", "last", "--state-dir", os.path.join(TMP, case, "state"),
                        "--virtual-time", "--log-format", "text"], cwd=ROOT, env=e,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    tap.eq(r.returncode, 0, "resume after Ctrl-C finishes the run")
    if r.returncode != 0:
        tap.diag(r.stdout[-3000:])
    a = apps(world(case))
    tap.eq(sorted(r["state"] for r in job_runs(a[0])) if a else None, ["CANCELLED", "SUCCESS"],
           "a new job run for the resumed run (the cleanup cancelled the first), once")
    tap.eq(a and a[0]["state"], "STOPPED", "and the application stopped again at the end")


def notifications():
    hook = Webhook()
    try:
        rc, out, _ = run("notify", "--sim-fail", "emr.step", "--var", "notify_webhook=" + hook.url,
                         "--var", "notify_topic_arn=arn:aws:sns:us-east-1:123456789012:flowrun-demo-alerts")
    finally:
        hook.close()
    tap.eq(rc, 1, "the step fails the run")
    tap.eq(len(hook.received), 1, "the webhook got one message (one failed task)")
    m = hook.received[0] if hook.received else {"body": {}, "path": "", "type": ""}
    text = m["body"].get("text", "")
    tap.eq(m["type"], "application/json", "JSON")
    run_id = [l.split()[1] for l in out.splitlines() if l.startswith("run ") and "(dms_to_emr)" in l]
    tap.like(text, "run %s failed at wait_step" % (run_id[0] if run_id else "?"), "the run id and the failed task")
    tap.like(text, "emr.step_failed", "the error")
    tap.like(text, "reason: Unknown Error", "its FailureDetails")
    tap.like(text, "PATH_NOT_FOUND", "and the stderr tail")
    msgs = world("notify")["sns"]["messages"]
    tap.eq(len(msgs), 1, "one SNS message")
    tap.like(msgs[0]["Message"] if msgs else "", "PATH_NOT_FOUND", "with the same text")
    tap.ok("hushhushsecret" not in out, "the webhook URL (a secret parameter) is not in the output")
    leaked = []
    for d, _, files in os.walk(os.path.join(TMP, "notify")):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                if b"hushhushsecret" in fh.read():
                    leaked.append(os.path.relpath(os.path.join(d, f), TMP))
    tap.eq(leaked, [], "nor in the journal or any file the run wrote")


def main():
    try:
        setup()
        for fn in (success, step_failure, dms_failure, dms_failure_early_cluster, row_count_mismatch,
                   throttled, lost_answer, timeout_during_step, sigint_during_step,
                   sigint_during_step_virtual, sigint_during_dms, sigkill_then_resume,
                   full_reload_after_deletes, cdc_nightly, serverless_run, serverless_failure,
                   serverless_sigint, notifications):
            tap.test(fn)
    finally:
        if PG:
            subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(TMP, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
