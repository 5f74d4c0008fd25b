"""The dms_to_emr pipeline through the real HTTP path (signing, protocols, retries) against moto,
the open-source AWS emulator, running in this Python driver (moto.server.ThreadedMotoServer).

moto leaves a started DMS task as it is and EMR steps RUNNING forever and has no
DescribeTableStatistics, so a driver thread plays AWS's part (tests/lib/pipeline_moto.py): a
started DMS task loads the real source tables into raw files (and, for a full-load-and-cdc task,
streams their changes as CDC files when told to); a running step does what the Spark job does
with its batch (the Iceberg tables' metadata in S3 with the bookmark, the Glue table pointing at
it), or fails. The row-count check is turned off (check_row_counts=false), since moto cannot
answer it; the driver's Iceberg tables are compared with the source instead.

Cases: success; a failed step; SIGKILL during the step then resume (one cluster, one step); the
cluster started early and DMS failing (the cluster terminated, exit 1); a full reload after
deletes at the source (the table replaced, the previous snapshot kept); three nightly
incremental runs with inserts, updates and deletes between them, a failed run in the middle and
its re-run, and a re-run of a succeeded night (nothing applied twice)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

ROOT = tap.ROOT
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-moto-pipeline-")
DB = "flowrun_moto_pipeline_%d" % os.getpid()
TABLES = ["public.customers", "public.orders", "public.order_items"]
SOURCE = (PG or "") + " dbname=" + DB

try:
    from moto.backends import get_backend
    from moto.server import ThreadedMotoServer
    from pipeline_moto import ACCOUNT, REGION, Driver, client
except ImportError as e:  # a missing moto fails the test, never skips it
    tap.ok(False, "moto and boto3 are importable: %s" % e)
    tap.done()


def psql(sql):
    subprocess.run(["psql", SOURCE, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True)


def seed(port):
    s3 = client("s3", port)
    for b in ("raw", "artifacts", "logs", "lake"):
        s3.create_bucket(Bucket=b)
    dms = client("dms", port)
    inst = dms.create_replication_instance(ReplicationInstanceIdentifier="ri",
                                           ReplicationInstanceClass="dms.t3.micro")
    src = dms.create_endpoint(EndpointIdentifier="src", EndpointType="source", EngineName="postgres",
                              ServerName="127.0.0.1", Port=5432, DatabaseName="shop",
                              Username="u", Password="p")
    mappings = {"rules": [{"rule-type": "selection", "rule-id": "1", "rule-name": "1",
                           "object-locator": {"schema-name": "public", "table-name": "%"},
                           "rule-action": "include"}]}
    arns = []
    for ident, kind, folder in (("flowrun-moto", "full-load", "raw"),
                                ("flowrun-moto-cdc", "full-load-and-cdc", "cdc")):
        dst = dms.create_endpoint(EndpointIdentifier="dst-" + folder, EndpointType="target",
                                  EngineName="s3", S3Settings={"BucketName": "raw", "BucketFolder": folder})
        task = dms.create_replication_task(
            ReplicationTaskIdentifier=ident, SourceEndpointArn=src["Endpoint"]["EndpointArn"],
            TargetEndpointArn=dst["Endpoint"]["EndpointArn"],
            ReplicationInstanceArn=inst["ReplicationInstance"]["ReplicationInstanceArn"],
            MigrationType=kind, TableMappings=json.dumps(mappings))
        arn = task["ReplicationTask"]["ReplicationTaskArn"]
        get_backend("dms")[ACCOUNT][REGION].replication_tasks[arn].ready()
        arns.append(arn)
    return arns


def pipeline_env(port):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWRUN_VAR_", "FLOWRUN_SIM", "AWS_"))}
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:%d" % port, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.path.join(TMP, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(TMP, "none"))
    return env


def run_pipeline(port, case, task_arn, background=False, **more):
    params = {
        "source_conninfo": SOURCE, "tables": TABLES, "dms_task_arn": task_arn,
        "raw_uri": "s3://raw/raw", "check_row_counts": False, "artifacts_uri": "s3://artifacts/flowrun",
        "glue_database": "lake", "warehouse_uri": "s3://lake/warehouse", "log_uri": "s3://logs/emr/",
        "step_log_wait": 0, "athena_workgroup": "",
    }
    params.update(more)
    vars_file = os.path.join(TMP, case + ".json")
    with open(vars_file, "w") as f:
        json.dump(params, f)
    cmd = [tap.FLOWRUN, os.path.join(ROOT, "workflows", "dms_to_emr.lua"), "--vars-file", vars_file,
           "--state-dir", os.path.join(TMP, case), "--virtual-time", "--log-format", "text"]
    if background:
        return subprocess.Popen(cmd, cwd=ROOT, env=pipeline_env(port), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    p = subprocess.run(cmd, cwd=ROOT, env=pipeline_env(port), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    return p.returncode, p.stdout


def clusters():
    return list(get_backend("emr")[ACCOUNT][REGION].clusters.values())


def main():
    tap.ok(PG is not None, "FLOWRUN_TEST_PG is set (tests/servers/pg.sh)")
    if PG is None:
        tap.done()
    subprocess.run(["psql", PG, "-q", "-c", "CREATE DATABASE " + DB], check=True)
    subprocess.run(["psql", SOURCE, "-q", "-v", "ON_ERROR_STOP=1",
                    "-c", "SET client_min_messages = warning",
                    "-f", os.path.join(ROOT, "scripts", "demo-source.sql")],
                   check=True, stdout=subprocess.DEVNULL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port
    try:
        task_arn, cdc_arn = seed(port)

        def driver(**kw):
            return Driver(port, SOURCE, TABLES, **kw)

        def success():
            with driver() as d:
                rc, out = run_pipeline(port, "ok", task_arn)
            tap.eq(rc, 0, "the pipeline succeeds against moto over HTTP")
            if rc != 0:
                tap.diag(out[-4000:])
            tap.eq(len(d.dms_done), 1, "the DMS task was started once")
            cs = clusters()
            tap.eq(len(cs), 1, "one EMR cluster")
            tap.eq(cs[0].state, "TERMINATED", "terminated by the cleanup task")
            tap.eq(cs[0]._tags.get("flowrun:task"), "create_cluster", "tagged with its task")
            tap.eq([s.state for s in cs[0].steps], ["COMPLETED"], "one step, completed")
            args = cs[0].steps[0].args
            tap.eq(args[0], "spark-submit", "a spark-submit step through command-runner.jar")
            tap.ok("public.order_items:order_id+line_no" in args, "composite primary key passed to the job")
            s3 = client("s3", port)
            body = s3.get_object(Bucket="artifacts", Key="flowrun/jobs/raw_to_iceberg.py")["Body"].read()
            with open(os.path.join(ROOT, "workflows", "jobs", "raw_to_iceberg.py"), "rb") as f:
                tap.eq(body, f.read(), "the job script was uploaded as it is")
            names = sorted(t["Name"] for t in client("glue", port).get_tables(DatabaseName="lake")["TableList"])
            tap.eq(names, ["customers", "order_items", "orders"], "verify found the Iceberg tables")
            for full in TABLES:
                tap.eq(d.iceberg[("lake", full.split(".")[1])]["rows"], d.read(full),
                       "%s: the Iceberg table holds the source's rows" % full)

        def step_failure():
            before = len(clusters())
            with driver(fail_step=True):
                rc, out = run_pipeline(port, "fail", task_arn)
            tap.eq(rc, 1, "a failed step fails the run (exit 1)")
            if rc != 1:
                tap.diag(out[-4000:])
            tap.like(out, "emr.step_failed", "with the step's error")
            cs = clusters()
            tap.eq(len(cs), before + 1, "one more cluster")
            tap.eq(cs[-1].state, "TERMINATED", "and it was terminated")

        def sigkill_then_resume():
            before = len(clusters())
            with driver(hold_steps=True):
                p = run_pipeline(port, "kill", task_arn, background=True)
                end = time.time() + 60
                running = False
                while time.time() < end and not running:
                    running = any(s.state == "RUNNING" for c in clusters()[before:] for s in c.steps)
                    time.sleep(0.05)
                tap.ok(running, "the step is running")
                p.kill()
                p.wait()
            tap.eq(len(clusters()), before + 1, "one cluster before the crash")
            with driver():
                r = subprocess.run([tap.FLOWRUN, "resume", "last", "--state-dir", os.path.join(TMP, "kill"),
                                    "--virtual-time", "--log-format", "text"], cwd=ROOT, env=pipeline_env(port),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            tap.eq(r.returncode, 0, "resume over HTTP finishes the run")
            if r.returncode != 0:
                tap.diag(r.stdout[-3000:])
            cs = clusters()[before:]
            tap.eq(len(cs), 1, "exactly one cluster was ever created (found again by its tags)")
            tap.eq([s.state for s in cs[0].steps], ["COMPLETED"], "exactly one step")
            tap.eq(cs[0].state, "TERMINATED", "terminated")

        def early_cluster_dms_failure():
            before = len(clusters())
            with driver(fail_dms=True):
                rc, out = run_pipeline(port, "early-dms-fail", task_arn)
            tap.eq(rc, 1, "a failed DMS task fails the run (exit 1)")
            tap.like(out, "dms.task_failed", "with the DMS error")
            cs = clusters()[before:]
            tap.eq(len(cs), 1, "the cluster was started early, while DMS loaded: one cluster")
            tap.eq(cs and cs[0].state, "TERMINATED", "terminated by the same cleanup")
            tap.eq(cs and [s.state for s in cs[0].steps], [], "no step was added")

        def full_reload_after_deletes():
            with driver() as d:
                rc, out = run_pipeline(port, "reload-1", task_arn)
                tap.eq(rc, 0, "a first full load")
                orders = d.read("public.orders")
                psql("DELETE FROM public.order_items WHERE order_id <= 100; "
                     "DELETE FROM public.orders WHERE id <= 100")
                rc, out = run_pipeline(port, "reload-2", task_arn)
                tap.eq(rc, 0, "a full reload after deletes at the source")
                if rc != 0:
                    tap.diag(out[-3000:])
            ice = d.iceberg[("lake", "orders")]
            tap.eq(len(ice["rows"]), len(orders) - 100, "the 100 deleted orders are gone from Iceberg")
            tap.eq(ice["rows"], d.read("public.orders"), "the table equals the source")
            tap.eq(d.iceberg[("lake", "order_items")]["rows"], d.read("public.order_items"),
                   "and so does order_items")
            tap.like(out, "public.orders: load, 1 file(s)", "the plan replaces the table (a load, not a merge)")
            tap.eq(len(ice["meta"]["snapshots"]), 2, "one new snapshot: the previous load is still there")

        def cdc_nightly():
            common = {"mode": "incremental", "raw_uri": "s3://raw/cdc", "glue_database": "lake_cdc"}
            with driver() as d:
                rc, out = run_pipeline(port, "cdc-1", cdc_arn, **common)
                tap.eq(rc, 0, "night 1: the first incremental run starts the task and loads")
                if rc != 0:
                    tap.diag(out[-3000:])
                task = get_backend("dms")[ACCOUNT][REGION].replication_tasks[cdc_arn]
                tap.eq(task.status, "running", "the task streams changes afterwards")

                def same_as_source(what):
                    for full in TABLES:
                        got = d.iceberg[("lake_cdc", full.split(".")[1])]["rows"]
                        if not tap.eq(got, d.read(full), "%s: %s equals the source" % (what, full)):
                            break

                same_as_source("night 1")
                bookmark_1 = d.bookmark(d.iceberg[("lake_cdc", "orders")], "flowrun.raw-bookmark")
                psql("INSERT INTO public.orders SELECT g, 1, 'new', 1.00, now() FROM generate_series(20001, 20010) g; "
                     "UPDATE public.orders SET status = 'cancelled' WHERE id BETWEEN 200 AND 209; "
                     "DELETE FROM public.order_items WHERE order_id BETWEEN 300 AND 302; "
                     "DELETE FROM public.orders WHERE id BETWEEN 300 AND 302")
                d.capture()
            with driver(fail_step=True) as d2:
                d2.iceberg, d2.images = d.iceberg, d.images
                rc, out = run_pipeline(port, "cdc-2", cdc_arn, **common)
            tap.eq(rc, 1, "night 2 fails (its step fails)")
            tap.eq(d.bookmark(d.iceberg[("lake_cdc", "orders")], "flowrun.raw-bookmark"), bookmark_1,
                   "the bookmark stays where it was")
            with driver() as d3:
                d3.iceberg, d3.images = d.iceberg, d.images
                rc, out = run_pipeline(port, "cdc-2b", cdc_arn, **common)
                tap.eq(rc, 0, "night 2 re-run")
                if rc != 0:
                    tap.diag(out[-3000:])
                tap.like(out, "public.orders: merge, 1 file(s) after %s" % bookmark_1,
                         "picks up the same CDC file the failed run could not apply")
                d = d3
                same_as_source("night 2")
                psql("UPDATE public.customers SET name = 'Renamed' WHERE id < 5; "
                     "INSERT INTO public.customers VALUES (9001, 'x@example.com', 'X', now()); "
                     "DELETE FROM public.order_items WHERE order_id = 400 AND line_no = 1")
                d.capture()
                rc, out = run_pipeline(port, "cdc-3", cdc_arn, **common)
                tap.eq(rc, 0, "night 3")
                same_as_source("night 3")
                ice = d.iceberg[("lake_cdc", "customers")]
                snaps = len(ice["meta"]["snapshots"])
                rc, out = run_pipeline(port, "cdc-3b", cdc_arn, **common)
                tap.eq(rc, 0, "night 3 run again")
                tap.like(out, "public.customers: none, 0 file(s)", "nothing left to apply")
                last = clusters()[-1]
                tap.eq(([x.state for x in last.steps], last.state), ([], "TERMINATED"),
                       "no Spark step: the early cluster is terminated unused")
                tap.eq(len(d.iceberg[("lake_cdc", "customers")]["meta"]["snapshots"]), snaps,
                       "no new snapshot: re-running a succeeded night changes nothing")
                same_as_source("after the re-run")
                tap.eq(len([k for k in d.dms_done if k[0] == cdc_arn]), 0,
                       "the streaming task was never started again by these drivers")

        for fn in (success, step_failure, sigkill_then_resume, early_cluster_dms_failure,
                   full_reload_after_deletes, cdc_nightly):
            tap.test(fn)
    finally:
        server.stop()
        subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(TMP, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
