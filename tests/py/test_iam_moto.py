"""`flowrun iam` proven against an independent peer: moto, with IAM enforced, runs the dms_to_emr
pipeline over HTTP as an IAM user whose only permissions are the derived policy.

moto (5.x) is started here, in this process (ThreadedMotoServer), apart from the suite's server;
once the world is seeded, IAM is enforced as INITIAL_NO_AUTH_ACTION_COUNT does (its setting set to
0): every request is signed-checked and its action checked against the caller's policies. A
driver thread plays DMS and EMR as the moto pipeline test does (tests/lib/pipeline_moto.py), with
an IAM user of its own allowed everything.

moto's signature check is turned off here: it recomputes a request's signature from the body as
it re-encodes it, which differs from the bytes flowrun signed for a form body with spaces (SNS's
Publish) and for EMR Serverless's REST paths (it refuses even boto3's signatures there once IAM is
enforced). flowrun's SigV4 is proven against botocore's signer and AWS's test vectors
(test_aws_sigv4.py, tests/c/test_sigv4.c); what is proven here is authorization.

What moto checks, found by probing it here (an IAM user with no permission calls one operation
of each service the pipeline uses) and asserted, so that the README's account stays true:
  - the action, for DMS, EMR, EMR Serverless, Glue, S3, SNS, CloudWatch, Secrets Manager and
    Athena;
  - the resource only for S3 (bucket and key ARNs); every other service is authorized against
    "*", so a statement scoped to an ARN allows nothing there: the non-S3 statements are given
    Resource "*" for moto (their scoping is proven in the simulator, test_iam_sim.py);
  - no condition (tags, iam:PassedToService, s3:prefix) and no iam:PassRole.

Paths: success, a failed step (with a failure notification to SNS), Ctrl-C while the step runs.
Then each action is taken out in turn (of every statement: moto sees no resources but S3's, so
an action's statements are one to it; per statement is proven in the simulator): a path fails with
AccessDenied (moto names the action, except S3's "Access Denied", where the refused S3
operation is named instead). Actions the pipeline may call that these paths cannot reach in moto
are listed, and why."""
import copy
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
TMP = tempfile.mkdtemp(prefix="flowrun-iam-moto-")
DB = "flowrun_iam_moto_%d" % os.getpid()
TABLES = ["public.customers", "public.orders", "public.order_items"]
SOURCE = (PG or "") + " dbname=" + DB
WORKFLOW = os.path.join(ROOT, "workflows", "dms_to_emr.lua")

try:
    import boto3
    from moto import settings
    from moto.backends import get_backend
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequestBase
    from moto.server import ThreadedMotoServer
    import pipeline_moto
    from pipeline_moto import ACCOUNT, REGION, Driver, client
except ImportError as e:  # a missing moto fails the test, never skips it
    tap.ok(False, "moto and boto3 are importable: %s" % e)
    tap.done()

# S3 operations as flowrun names them in an error, by the IAM action moto checks for them
S3_OPERATION = {"s3:PutObject": "s3.put_object", "s3:GetObject": "s3.get_object",
                "s3:ListBucket": "s3.list_objects_v2"}
# Probed: the services whose calls moto refuses to a user without permissions
ENFORCED = {"dms", "elasticmapreduce", "emr-serverless", "glue", "s3", "sns", "cloudwatch",
            "secretsmanager", "athena"}


def seed(port):
    s3 = client("s3", port)
    for b in ("raw", "artifacts", "logs", "lake"):
        s3.create_bucket(Bucket=b)
    client("sns", port).create_topic(Name="alerts")
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
        ReplicationTaskIdentifier="flowrun-iam", SourceEndpointArn=src["Endpoint"]["EndpointArn"],
        TargetEndpointArn=dst["Endpoint"]["EndpointArn"],
        ReplicationInstanceArn=inst["ReplicationInstance"]["ReplicationInstanceArn"],
        MigrationType="full-load", TableMappings=json.dumps(mappings))
    arn = task["ReplicationTask"]["ReplicationTaskArn"]
    get_backend("dms")[ACCOUNT][REGION].replication_tasks[arn].ready()
    return arn


def user(iam, name, policy=None):
    iam.create_user(UserName=name)
    if policy:
        iam.put_user_policy(UserName=name, PolicyName="flowrun", PolicyDocument=json.dumps(policy))
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def params(task_arn):
    return {"source_conninfo": SOURCE, "tables": TABLES, "dms_task_arn": task_arn,
            "raw_uri": "s3://raw/raw", "check_row_counts": False,
            "artifacts_uri": "s3://artifacts/flowrun", "glue_database": "lake",
            "warehouse_uri": "s3://lake/warehouse", "log_uri": "s3://logs/emr/", "step_log_wait": 0,
            "athena_workgroup": "", "notify_topic_arn": "arn:aws:sns:%s:%s:alerts" % (REGION, ACCOUNT)}


def for_moto(policy):
    """moto authorizes every service but S3 against the resource "*"."""
    p = copy.deepcopy(policy)
    for s in p["Statement"]:
        acts = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if not all(a.startswith("s3:") for a in acts):
            s["Resource"] = "*"
    return p


def without(policy, action):
    """The policy with the action taken out of every statement: moto authorizes all but S3
    against "*", so an action's statements are one to it."""
    p = copy.deepcopy(policy)
    out = []
    for s in p["Statement"]:
        acts = [a for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]) if a != action]
        if acts:
            s["Action"] = acts
            out.append(s)
    p["Statement"] = out
    return p


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
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        task_arn = seed(port)
        iam = client("iam", port)
        pipeline_moto.CREDENTIALS = user(iam, "driver", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        nobody = user(iam, "nobody", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]})
        flowrun_keys = user(iam, "flowrun")
        vars_file = os.path.join(TMP, "vars.json")
        with open(vars_file, "w") as f:
            json.dump(params(task_arn), f)
        p = subprocess.run([tap.FLOWRUN, "iam", WORKFLOW, "--vars-file", vars_file], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        tap.eq(p.returncode, 0, "flowrun iam derives the policy for moto's parameters")
        derived = json.loads(p.stdout)
        policy = for_moto(derived)

        # IAM enforced from here on, as INITIAL_NO_AUTH_ACTION_COUNT=0 does (signatures unchecked)
        IAMRequestBase.check_signature = lambda self: None
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
        admin = client("iam", port)

        def set_policy(doc):
            admin.put_user_policy(UserName="flowrun", PolicyName="flowrun", PolicyDocument=json.dumps(doc))

        def probe():
            ep = "http://127.0.0.1:%d" % port
            refused = set()
            for svc, prefix, op in (("dms", "dms", "describe_replication_tasks"),
                                    ("emr", "elasticmapreduce", "list_clusters"),
                                    ("emr-serverless", "emr-serverless", "list_applications"),
                                    ("glue", "glue", "get_databases"), ("s3", "s3", "list_buckets"),
                                    ("sns", "sns", "list_topics"), ("cloudwatch", "cloudwatch", "list_metrics"),
                                    ("secretsmanager", "secretsmanager", "list_secrets"),
                                    ("athena", "athena", "list_work_groups")):
                c = boto3.client(svc, region_name=REGION, endpoint_url=ep, aws_access_key_id=nobody[0],
                                 aws_secret_access_key=nobody[1])
                try:
                    getattr(c, op)()
                except Exception as e:
                    if "AccessDenied" in str(e) or "not authorized" in str(e):
                        refused.add(prefix)
            tap.eq(refused, ENFORCED, "moto refuses calls without permission for: " + ", ".join(sorted(refused)))

        tap.test(probe)

        def env():
            e = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWRUN_VAR_", "FLOWRUN_SIM", "AWS_"))}
            e.update(AWS_ENDPOINT_URL="http://127.0.0.1:%d" % port, AWS_ACCESS_KEY_ID=flowrun_keys[0],
                     AWS_SECRET_ACCESS_KEY=flowrun_keys[1], AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
                     AWS_CONFIG_FILE=os.path.join(TMP, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(TMP, "none"),
                     AWS_MAX_ATTEMPTS="1")
            return e

        def cmd(case):
            return [tap.FLOWRUN, WORKFLOW, "--vars-file", vars_file, "--state-dir", os.path.join(TMP, case),
                    "--virtual-time", "--log-format", "text"]

        def clusters():
            return list(get_backend("emr")[ACCOUNT][REGION].clusters.values())

        def fresh_catalog():
            # each run starts without the Glue database, so that creating it is on every path
            get_backend("glue")[ACCOUNT][REGION].databases.pop("lake", None)

        def success(case):
            fresh_catalog()
            with Driver(port, SOURCE, TABLES):
                p = subprocess.run(cmd(case), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=300)
            return p.returncode, p.stdout, 0

        def step_failure(case):
            sns = get_backend("sns")[ACCOUNT][REGION]
            before = sum(len(t.sent_notifications) for t in sns.topics.values())
            fresh_catalog()
            with Driver(port, SOURCE, TABLES, fail_step=True):
                p = subprocess.run(cmd(case), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=300)
            sent = sum(len(t.sent_notifications) for t in sns.topics.values()) - before
            return p.returncode, p.stdout, sent

        def sigint(case):
            before = len(clusters())
            fresh_catalog()
            with Driver(port, SOURCE, TABLES, hold_steps=True):
                p = subprocess.Popen(cmd(case), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
                end = time.time() + 60
                running = False
                while time.time() < end and not running and p.poll() is None:
                    running = any(s.state == "RUNNING" for c in clusters()[before:] for s in c.steps)
                    time.sleep(0.05)
                if running:
                    p.send_signal(signal.SIGINT)
                try:
                    out, _ = p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, _ = p.communicate()
            return p.returncode, out, [c.state for c in clusters()[before:]]

        PATHS = [("success", success, 0), ("step-failure", step_failure, 1), ("sigint-during-step", sigint, 130)]

        def derived_policy_suffices():
            set_policy(policy)
            for name, fn, want in PATHS:
                rc, out, extra = fn("ok-" + name)
                if not tap.eq(rc, want, "%s: exit %d with only the derived policy" % (name, want)):
                    tap.diag(out[-3000:])
                tap.ok("AccessDenied" not in out and "Access Denied" not in out, "%s: nothing refused" % name)
                if name == "step-failure":
                    tap.eq(extra, 1, "the failure notification was published to SNS")
                if name == "sigint-during-step":
                    tap.eq(extra, ["TERMINATED"], "the cleanup terminated the cluster")
                    tap.like(out, "cancel failed", "CancelSteps was sent (moto has no CancelSteps: it fails)")

        tap.test(derived_policy_suffices)

        # Actions these paths cannot show missing in moto, and why
        UNPROVABLE = {
            "iam:PassRole": "moto does not check PassRole",
            "dms:StopReplicationTask": "only when a run is cancelled while DMS loads, which the driver "
                                       "finishes at once",
            "dms:DescribeTableStatistics": "moto does not implement it (check_row_counts=false here)",
            "elasticmapreduce:CancelSteps": "moto does not implement it",
        }

        def each_action_is_needed():
            actions = []
            for s in policy["Statement"]:
                for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]):
                    if a not in actions:
                        actions.append(a)
            skipped = sorted(a for a in actions if a in UNPROVABLE)
            tap.diag("not provable against moto: " + "; ".join("%s (%s)" % (a, UNPROVABLE[a]) for a in skipped))
            for action in actions:
                if action in UNPROVABLE:
                    continue
                set_policy(without(policy, action))
                name_said = S3_OPERATION.get(action, action)
                found = None
                for name, fn, want in PATHS:
                    rc, out, _ = fn("rm-%s-%s" % (action.replace(":", "_"), name))
                    if ("AccessDenied" in out or "Access Denied" in out) and name_said in out:
                        found = name
                        break
                if not tap.ok(found, "without %s: a path fails with AccessDenied naming %s%s" % (
                        action, name_said, " (%s)" % found if found else "")):
                    tap.diag(out[-2000:])
            set_policy(policy)

        tap.test(each_action_is_needed)
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()
        subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(TMP, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
