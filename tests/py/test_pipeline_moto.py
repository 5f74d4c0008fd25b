"""The dms_to_emr pipeline through the real HTTP path (signing, protocols, retries) against moto,
the open-source AWS emulator, running in this Python driver (moto.server.ThreadedMotoServer).

moto leaves a started DMS task running and EMR steps RUNNING forever and has no
DescribeTableStatistics, so the driver plays AWS's part: when the DMS task runs it writes the raw
Parquet objects DMS would write and stops the task; when a step runs it registers the Iceberg
tables in Glue (as the Spark job does) and completes the step (or fails it). The row-count check
is turned off (check_row_counts=false), since moto cannot answer it."""
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

ROOT = tap.ROOT
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-moto-pipeline-")
DB = "flowrun_moto_pipeline_%d" % os.getpid()
ACCOUNT, REGION = "123456789012", "us-east-1"
TABLES = ["public.customers", "public.orders", "public.order_items"]

try:
    import boto3
    from moto.backends import get_backend
    from moto.server import ThreadedMotoServer
except ImportError as e:  # a missing moto fails the test, never skips it
    tap.ok(False, "moto and boto3 are importable: %s" % e)
    tap.done()


logging.getLogger("werkzeug").setLevel(logging.ERROR)


def client(name, port):
    return boto3.client(name, region_name=REGION, endpoint_url="http://127.0.0.1:%d" % port,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


class Driver(threading.Thread):
    """Moves moto's resources the way AWS would, while flowrun polls them."""

    def __init__(self, port, fail_step=False, hold_steps=False):
        super().__init__(daemon=True)
        self.port, self.fail_step, self.hold_steps = port, fail_step, hold_steps
        self.stop_flag = threading.Event()
        self.dms_done, self.steps_done = set(), set()

    def run(self):
        s3 = client("s3", self.port)
        glue = client("glue", self.port)
        while not self.stop_flag.is_set():
            try:
                self.tick(s3, glue)
            except Exception as e:  # keep driving; the assertions will tell
                print("# driver: %r" % (e,), flush=True)
            time.sleep(0.05)

    def tick(self, s3, glue):
        dms = get_backend("dms")[ACCOUNT][REGION]
        for arn, task in list(dms.replication_tasks.items()):
            if task.status == "running" and arn not in self.dms_done:
                for full in TABLES:
                    schema, name = full.split(".")
                    s3.put_object(Bucket="raw", Key="raw/%s/%s/LOAD00000001.parquet" % (schema, name),
                                  Body=b"PAR1 moto PAR1")
                task.stop()
                self.dms_done.add(arn)
        emr = get_backend("emr")[ACCOUNT][REGION]
        for cluster in list(emr.clusters.values()):
            for step in cluster.steps:
                if step.state == "RUNNING" and step.id not in self.steps_done and not self.hold_steps:
                    self.steps_done.add(step.id)
                    if self.fail_step:
                        step.state = "FAILED"
                    else:
                        args = step.args
                        db = args[args.index("--database") + 1]
                        for i, a in enumerate(args):
                            if a == "--table":
                                name = args[i + 1].split(":")[0].split(".")[1]
                                try:
                                    glue.create_table(DatabaseName=db, TableInput={
                                        "Name": name, "TableType": "EXTERNAL_TABLE",
                                        "Parameters": {"table_type": "ICEBERG"}})
                                except glue.exceptions.AlreadyExistsException:
                                    pass  # a later run MERGEs into the same table
                        step.state = "COMPLETED"
                    cluster.state = "WAITING"


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
    dst = dms.create_endpoint(EndpointIdentifier="dst", EndpointType="target", EngineName="s3",
                              S3Settings={"BucketName": "raw", "BucketFolder": "raw"})
    mappings = {"rules": [{"rule-type": "selection", "rule-id": "1", "rule-name": "1",
                           "object-locator": {"schema-name": "public", "table-name": "%"},
                           "rule-action": "include"}]}
    task = dms.create_replication_task(
        ReplicationTaskIdentifier="flowrun-moto", SourceEndpointArn=src["Endpoint"]["EndpointArn"],
        TargetEndpointArn=dst["Endpoint"]["EndpointArn"],
        ReplicationInstanceArn=inst["ReplicationInstance"]["ReplicationInstanceArn"],
        MigrationType="full-load", TableMappings=json.dumps(mappings))
    arn = task["ReplicationTask"]["ReplicationTaskArn"]
    get_backend("dms")[ACCOUNT][REGION].replication_tasks[arn].ready()
    return arn


def pipeline_env(port):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWRUN_VAR_", "FLOWRUN_SIM", "AWS_"))}
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:%d" % port, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.path.join(TMP, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(TMP, "none"))
    return env


def run_pipeline(port, case, task_arn, background=False):
    params = {
        "source_conninfo": PG + " dbname=" + DB, "tables": TABLES, "dms_task_arn": task_arn,
        "raw_uri": "s3://raw/raw", "check_row_counts": False, "artifacts_uri": "s3://artifacts/flowrun",
        "glue_database": "lake", "warehouse_uri": "s3://lake/warehouse", "log_uri": "s3://logs/emr/",
        "step_log_wait": 0, "athena_workgroup": "",
    }
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
    subprocess.run(["psql", PG + " dbname=" + DB, "-q", "-v", "ON_ERROR_STOP=1",
                    "-c", "SET client_min_messages = warning",
                    "-f", os.path.join(ROOT, "scripts", "demo-source.sql")],
                   check=True, stdout=subprocess.DEVNULL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port
    try:
        task_arn = seed(port)

        def success():
            d = Driver(port)
            d.start()
            rc, out = run_pipeline(port, "ok", task_arn)
            d.stop_flag.set()
            d.join()
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

        def step_failure():
            d = Driver(port, fail_step=True)
            d.start()
            before = len(clusters())
            rc, out = run_pipeline(port, "fail", task_arn)
            d.stop_flag.set()
            d.join()
            tap.eq(rc, 1, "a failed step fails the run (exit 1)")
            if rc != 1:
                tap.diag(out[-4000:])
            tap.like(out, "emr.step_failed", "with the step's error")
            cs = clusters()
            tap.eq(len(cs), before + 1, "one more cluster")
            tap.eq(cs[-1].state, "TERMINATED", "and it was terminated")

        def sigkill_then_resume():
            before = len(clusters())
            d = Driver(port, hold_steps=True)
            d.start()
            p = run_pipeline(port, "kill", task_arn, background=True)
            end = time.time() + 60
            running = False
            while time.time() < end and not running:
                running = any(s.state == "RUNNING" for c in clusters()[before:] for s in c.steps)
                time.sleep(0.05)
            tap.ok(running, "the step is running")
            p.kill()
            p.wait()
            d.stop_flag.set()
            d.join()
            tap.eq(len(clusters()), before + 1, "one cluster before the crash")
            d = Driver(port)
            d.start()
            r = subprocess.run([tap.FLOWRUN, "resume", "last", "--state-dir", os.path.join(TMP, "kill"),
                                "--virtual-time", "--log-format", "text"], cwd=ROOT, env=pipeline_env(port),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            d.stop_flag.set()
            d.join()
            tap.eq(r.returncode, 0, "resume over HTTP finishes the run")
            if r.returncode != 0:
                tap.diag(r.stdout[-3000:])
            cs = clusters()[before:]
            tap.eq(len(cs), 1, "exactly one cluster was ever created (found again by its tags)")
            tap.eq([s.state for s in cs[0].steps], ["COMPLETED"], "exactly one step")
            tap.eq(cs[0].state, "TERMINATED", "terminated")

        for fn in (success, step_failure, sigkill_then_resume):
            tap.test(fn)
    finally:
        server.stop()
        subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(TMP, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
