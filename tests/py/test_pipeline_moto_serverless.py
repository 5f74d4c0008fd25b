"""The dms_to_emr pipeline with compute=serverless, and its failure notifications, through the real
HTTP path against moto (which implements EMR Serverless, SNS and SQS), with the driver of
tests/lib/pipeline_moto.py playing DMS and the Spark job (job runs are SUBMITTED, then RUNNING, then
do what the job does with their batch, or fail writing the driver's stderr where EMR Serverless
puts it).

Cases: a serverless run (the application created and stopped, one job run with a client token
derived from the run and the task); a failed job run (its stderr tail printed, exit 1); Ctrl-C
during the job run (cancelled, the application stopped, exit 130); SIGKILL during the job run then
resume (still one job run); a failure notified to an SNS topic (read back through an SQS
subscription) and to a local Slack-compatible webhook."""
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

ROOT = tap.ROOT
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-moto-serverless-")
DB = "flowrun_moto_serverless_%d" % os.getpid()
TABLES = ["public.customers", "public.orders", "public.order_items"]
SOURCE = (PG or "") + " dbname=" + DB
ROLE = "arn:aws:iam::123456789012:role/flowrun-serverless"

try:
    from moto.backends import get_backend
    from moto.server import ThreadedMotoServer
    from pipeline_moto import ACCOUNT, REGION, Driver, client
except ImportError as e:  # a missing moto fails the test, never skips it
    tap.ok(False, "moto and boto3 are importable: %s" % e)
    tap.done()

from webhook_server import Webhook  # noqa: E402


def seed(port):
    s3 = client("s3", port)
    for b in ("raw", "artifacts", "logs", "lake"):
        s3.create_bucket(Bucket=b)
    dms = client("dms", port)
    inst = dms.create_replication_instance(ReplicationInstanceIdentifier="ri",
                                           ReplicationInstanceClass="dms.t3.micro")
    src = dms.create_endpoint(EndpointIdentifier="src", EndpointType="source", EngineName="postgres",
                              ServerName="127.0.0.1", Port=5432, DatabaseName="shop", Username="u",
                              Password="p")
    dst = dms.create_endpoint(EndpointIdentifier="dst", EndpointType="target", EngineName="s3",
                              S3Settings={"BucketName": "raw", "BucketFolder": "raw"})
    mappings = {"rules": [{"rule-type": "selection", "rule-id": "1", "rule-name": "1",
                           "object-locator": {"schema-name": "public", "table-name": "%"},
                           "rule-action": "include"}]}
    task = dms.create_replication_task(
        ReplicationTaskIdentifier="flowrun-moto-sl", SourceEndpointArn=src["Endpoint"]["EndpointArn"],
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


def command(case, task_arn, **more):
    params = {
        "source_conninfo": SOURCE, "tables": TABLES, "dms_task_arn": task_arn,
        "raw_uri": "s3://raw/raw", "check_row_counts": False, "artifacts_uri": "s3://artifacts/flowrun",
        "glue_database": "lake", "warehouse_uri": "s3://lake/warehouse", "log_uri": "s3://logs/serverless/",
        "step_log_wait": 0, "athena_workgroup": "", "compute": "serverless",
        "serverless_execution_role": ROLE, "serverless_application_name": "flowrun-moto",
    }
    params.update(more)
    vars_file = os.path.join(TMP, case + ".json")
    with open(vars_file, "w") as f:
        json.dump(params, f)
    return [tap.FLOWRUN, os.path.join(ROOT, "workflows", "dms_to_emr.lua"), "--vars-file", vars_file,
            "--state-dir", os.path.join(TMP, case), "--virtual-time", "--log-format", "text"]


def run_pipeline(port, case, task_arn, **more):
    p = subprocess.run(command(case, task_arn, **more), cwd=ROOT, env=pipeline_env(port),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return p.returncode, p.stdout


def backend():
    return get_backend("emr-serverless")[ACCOUNT][REGION]


def all_runs():
    return [jr for runs in backend().job_runs.values() for jr in runs]


def wait_until(pred, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def main():
    tap.ok(PG is not None, "FLOWRUN_TEST_PG is set (tests/servers/pg.sh)")
    if PG is None:
        tap.done()
    subprocess.run(["psql", PG, "-q", "-c", "CREATE DATABASE " + DB], check=True)
    subprocess.run(["psql", SOURCE, "-q", "-v", "ON_ERROR_STOP=1", "-c", "SET client_min_messages = warning",
                    "-f", os.path.join(ROOT, "scripts", "demo-source.sql")], check=True, stdout=subprocess.DEVNULL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port
    try:
        task_arn = seed(port)

        def driver(**kw):
            return Driver(port, SOURCE, TABLES, **kw)

        def serverless_run():
            with driver() as d:
                rc, out = run_pipeline(port, "ok", task_arn)
            tap.eq(rc, 0, "compute=serverless succeeds against moto over HTTP")
            if rc != 0:
                tap.diag(out[-4000:])
            apps = list(backend().applications.values())
            tap.eq(len(apps), 1, "one application, created by the run")
            tap.eq(apps and apps[0].state, "STOPPED", "stopped at the end (the run started it)")
            runs = all_runs()
            tap.eq([r.state for r in runs], ["SUCCESS"], "one job run, SUCCESS")
            r = runs[0] if runs else None
            tap.ok(r and r.client_token.startswith("flowrun-"), "with the client token derived from the run and task")
            sub = r.job_driver["sparkSubmit"] if r else {}
            tap.eq(sub.get("entryPoint"), "s3://artifacts/flowrun/jobs/raw_to_iceberg.py", "the uploaded job")
            tap.ok("public.order_items:order_id+line_no" in sub.get("entryPointArguments", []), "its tables")
            tap.like(sub.get("sparkSubmitParameters", ""), "spark.jars=/usr/share/aws/iceberg/lib/", "Iceberg's runtime")
            tap.eq(len(get_backend("emr")[ACCOUNT][REGION].clusters), 0, "no EMR cluster")
            for full in TABLES:
                tap.eq(d.iceberg[("lake", full.split(".")[1])]["rows"], d.read(full),
                       "%s: the Iceberg table holds the source's rows" % full)

        def serverless_failure():
            before = len(all_runs())
            with driver(fail_job=True):
                rc, out = run_pipeline(port, "fail", task_arn)
            tap.eq(rc, 1, "a failed job run fails the run (exit 1)")
            tap.like(out, "emr_serverless.job_failed", "with the job's error")
            tap.like(out, "driver stderr (last lines)", "the driver's stderr tail")
            tap.like(out, "injected job failure", "read from the job's S3 log location")
            tap.eq([r.state for r in all_runs()[before:]], ["FAILED"], "one job run: not retried")
            tap.eq(list(backend().applications.values())[0].state, "STOPPED", "the application stopped")

        def serverless_sigint():
            before = len(all_runs())
            with driver(hold_jobs=True):
                p = subprocess.Popen(command("sigint", task_arn), cwd=ROOT, env=pipeline_env(port),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                tap.ok(wait_until(lambda: any(r.state == "RUNNING" for r in all_runs()[before:])),
                       "the job run is running")
                p.send_signal(signal.SIGINT)
                try:
                    out, _ = p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, _ = p.communicate()
            tap.eq(p.returncode, 130, "exit 130")
            tap.eq([r.state for r in all_runs()[before:]], ["CANCELLED"], "the job run was cancelled")
            tap.eq(list(backend().applications.values())[0].state, "STOPPED", "the application stopped")
            tap.like(out, "cancel requested", "logged")

        def sigkill_then_resume():
            before = len(all_runs())
            with driver(hold_jobs=True):
                p = subprocess.Popen(command("kill", task_arn), cwd=ROOT, env=pipeline_env(port),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                tap.ok(wait_until(lambda: any(r.state == "RUNNING" for r in all_runs()[before:])),
                       "the job run is running")
                p.kill()
                p.wait()
            with driver():
                r = subprocess.run([tap.FLOWRUN, "resume", "last", "--state-dir", os.path.join(TMP, "kill"),
                                    "--virtual-time", "--log-format", "text"], cwd=ROOT, env=pipeline_env(port),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            tap.eq(r.returncode, 0, "resume finishes the run")
            if r.returncode != 0:
                tap.diag(r.stdout[-3000:])
            tap.eq([x.state for x in all_runs()[before:]], ["SUCCESS"],
                   "exactly one job run was ever started (found again by its name)")

        def notifications():
            sns, sqs = client("sns", port), client("sqs", port)
            topic = sns.create_topic(Name="flowrun-alerts")["TopicArn"]
            queue = sqs.create_queue(QueueName="flowrun-alerts")["QueueUrl"]
            qarn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)
            hook = Webhook()
            try:
                with driver(fail_job=True):
                    rc, out = run_pipeline(port, "notify", task_arn, notify_topic_arn=topic,
                                           notify_webhook=hook.url)
            finally:
                hook.close()
            tap.eq(rc, 1, "the job fails the run")
            msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            tap.eq(len(msgs), 1, "one SNS notification, read back through the SQS subscription")
            env = json.loads(msgs[0]["Body"]) if msgs else {}
            run_id = [l.split()[1] for l in out.splitlines() if l.startswith("run ") and "(dms_to_emr)" in l]
            tap.eq(env.get("Subject"), "flowrun dms_to_emr: run %s failed at wait_job" % (run_id[0] if run_id else "?"),
                   "its subject: the run and the failed task")
            tap.like(env.get("Message", ""), "emr_serverless.job_failed", "its message: the error")
            tap.like(env.get("Message", ""), "injected job failure", "with the driver's stderr tail")
            tap.eq(len(hook.received), 1, "the webhook got the same failure")
            tap.like(hook.received[0]["body"].get("text", "") if hook.received else "", "wait_job failed",
                     "as Slack's {text}")
            tap.ok("hushhushsecret" not in out, "the webhook URL is not in the output")

        for fn in (serverless_run, serverless_failure, serverless_sigint, sigkill_then_resume, notifications):
            tap.test(fn)
    finally:
        server.stop()
        subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(TMP, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
