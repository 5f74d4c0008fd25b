"""Playing AWS's part beside moto for the dms_to_emr pipeline tests (tests/py/test_pipeline_moto*.py).

moto answers the API over HTTP, but leaves a started DMS task as it is, EMR steps RUNNING forever,
and EMR Serverless job runs SUCCESS at once; it has no DMS table statistics and no Spark. A Driver
thread, in the same process as moto's ThreadedMotoServer, moves moto's resources as AWS would
while flowrun polls them:

- DMS: a started task loads: the driver reads the source tables (psql, the test's real PostgreSQL)
  and writes one load file per table under the target's folder, then stops a full-load task or
  leaves a full-load-and-cdc task running; capture() writes the source's changes since the last
  load or capture as a CDC file per table (Op I/U/D), and CloudWatch gets CDCLatencySource/Target;
- the Spark job (an EMR step, or an EMR Serverless job run): the driver applies the batch of the
  job's --config to Iceberg tables it keeps, writes their metadata JSON to S3 (the bookmark in the
  snapshot summary) and points the Glue table at it, as the real job does through Iceberg; or
  fails the job (fail_step / fail_job), writing a stderr log where EMR puts it.

The raw files are the simulator's format ("PAR1", a JSON line, one line per row, "PAR1"): the
pipeline only lists them; the driver's job reads them."""
import gzip
import io
import json
import logging
import threading
import time
import uuid

import boto3
import pipeline_source
from moto.backends import get_backend
from moto.core.utils import utcnow
from moto.dms.models import FakeReplicationTask

ACCOUNT, REGION = "123456789012", "us-east-1"
BOOKMARK = "flowrun.raw-bookmark"

logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # moto answers 500 for what it lacks


def _start(self):
    # AWS: starting, then the load; moto would be running (at "100%") at once
    self.status = "starting"
    self.start_date = utcnow()
    return self


FakeReplicationTask.start = _start

# AWS: a job run is SUBMITTED, then runs; moto's succeed at once. An application is CREATED, not
# started, until asked to start or a job run starts it.
import moto.emrserverless.models as _es_models  # noqa: E402
_es_models.JOB_STATUS = "SUBMITTED"
_es_models.APPLICATION_STATUS = "CREATED"
_list_job_runs = _es_models.EMRServerlessBackend.list_job_runs


def _list_job_runs_of_any_application(self, application_id, *args, **kwargs):
    # AWS lists no job runs for an application without any; moto says it does not exist
    self.get_application(application_id)
    self.job_runs.setdefault(application_id, [])
    return _list_job_runs(self, application_id, *args, **kwargs)


_es_models.EMRServerlessBackend.list_job_runs = _list_job_runs_of_any_application


# The driver's keys: a test that makes moto enforce IAM gives it an IAM user allowed everything.
CREDENTIALS = ("testing", "testing")


def client(name, port):
    return boto3.client(name, region_name=REGION, endpoint_url="http://127.0.0.1:%d" % port,
                        aws_access_key_id=CREDENTIALS[0], aws_secret_access_key=CREDENTIALS[1])


class Driver(threading.Thread):
    """Moves moto's resources the way AWS would, while flowrun polls them."""

    def __init__(self, port, conninfo, tables, fail_step=False, hold_steps=False, fail_job=False,
                 hold_jobs=False, latency=5.0, fail_dms=False):
        super().__init__(daemon=True)
        self.port, self.conninfo, self.tables = port, conninfo, tables
        self.fail_dms = fail_dms
        self.fail_step, self.hold_steps = fail_step, hold_steps
        self.fail_job, self.hold_jobs = fail_job, hold_jobs
        self.latency = latency
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.dms_done, self.steps_done, self.jobs_done = set(), set(), set()
        self.images = {}        # task arn -> {table: {key: digest}}
        self.iceberg = {}       # (db, table) -> {"rows", "meta", "n"}
        self.job_errors = []
        self.s3 = client("s3", port)
        self.glue = client("glue", port)
        self.cw = client("cloudwatch", port)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.join()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                with self.lock:
                    self.tick()
            except Exception as e:  # keep driving; the assertions will tell
                print("# driver: %r" % (e,), flush=True)
            time.sleep(0.05)

    # ---- the source ----------------------------------------------------------------------
    def read(self, full):
        """The table as {key: digest} (pipeline_source.read)."""
        return pipeline_source.read(self.conninfo, full)

    # ---- DMS -------------------------------------------------------------------------------
    def target(self, task):
        eps = get_backend("dms")[ACCOUNT][REGION].endpoints.values()
        ep = [e for e in eps if e.endpoint_arn == task.target_endpoint_arn][0]
        s = ep.s3_settings or {}
        return s.get("BucketName") or s.get("bucket_name"), (s.get("BucketFolder") or "").strip("/")

    def folder(self, task, full):
        bucket, folder = self.target(task)
        schema, table = full.split(".")
        return bucket, "%s%s/%s/" % (folder + "/" if folder else "", schema, table)

    def put(self, bucket, key, body):
        self.s3.put_object(Bucket=bucket, Key=key, Body=body.encode())

    def load(self, arn, task):
        image = {}
        for full in self.tables:
            rows = self.read(full)
            image[full] = rows
            bucket, prefix = self.folder(task, full)
            for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                self.s3.delete_object(Bucket=bucket, Key=o["Key"])   # DROP_AND_CREATE
            lines = "".join("%s\t%s\n" % (k, rows[k]) for k in sorted(rows))
            self.put(bucket, prefix + "LOAD00000001.parquet", "PAR1\n" + json.dumps(
                {"sim": "dms full load", "table": full, "rows": len(rows), "lines": True}) + "\n" +
                lines + "PAR1")
        self.images[arn] = image
        if task.migration_type == "full-load":
            task.status = "running"
            task.stop()
        else:
            task.run()
            self.put_latency(task)

    def capture(self, arn=None):
        """DMS streams what changed at the source since the last load or capture."""
        with self.lock:
            backend = get_backend("dms")[ACCOUNT][REGION]
            for a, task in backend.replication_tasks.items():
                if (arn and a != arn) or task.status != "running" or a not in self.images:
                    continue
                for full in self.tables:
                    old, new = self.images[a].get(full, {}), self.read(full)
                    changes = [("D", k, old[k]) for k in sorted(old) if k not in new]
                    changes += [("U" if k in old else "I", k, new[k]) for k in sorted(new)
                                if old.get(k) != new[k]]
                    if changes:
                        time.sleep(0.002)   # distinct millisecond names
                        t = time.time()
                        name = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t)) + "%03d" % int(t * 1000 % 1000)
                        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
                        bucket, prefix = self.folder(task, full)
                        body = "".join("%s\t%s\t%s\t%s\n" % (op, k, h, stamp) for op, k, h in changes)
                        self.put(bucket, prefix + name + ".parquet", "PAR1\n" + json.dumps(
                            {"sim": "dms cdc", "table": full, "rows": len(changes), "lines": True}) +
                            "\n" + body + "PAR1")
                    self.images[a][full] = new
                self.put_latency(task)

    def put_latency(self, task):
        inst = get_backend("dms")[ACCOUNT][REGION].replication_instances[task.replication_instance_arn]
        dims = [{"Name": "ReplicationInstanceIdentifier", "Value": inst.id},
                {"Name": "ReplicationTaskIdentifier", "Value": task.arn.split(":")[-1]}]
        self.cw.put_metric_data(Namespace="AWS/DMS", MetricData=[
            {"MetricName": m, "Dimensions": dims, "Value": self.latency, "Unit": "Seconds"}
            for m in ("CDCLatencySource", "CDCLatencyTarget")])

    # ---- the Spark job ---------------------------------------------------------------------
    def object(self, uri):
        b, k = uri[len("s3://"):].split("/", 1)
        return self.s3.get_object(Bucket=b, Key=k)["Body"].read().decode()

    def run_job(self, args):
        """What raw_to_iceberg.py does with its batch. Returns None, or the failure message."""
        a = {}
        for i, x in enumerate(args):
            if x in ("--database", "--warehouse", "--config", "--run-id") and i + 1 < len(args):
                a[x[2:]] = args[i + 1]
        cfg = json.loads(self.object(a["config"]))
        db = a["database"]
        try:
            self.glue.create_database(DatabaseInput={"Name": db})
        except self.glue.exceptions.AlreadyExistsException:
            pass
        prop = cfg.get("bookmark_property", BOOKMARK)
        for full in sorted(cfg["tables"]):
            b = cfg["tables"][full]
            name = b["target"]
            t = self.iceberg.get((db, name))
            current = self.bookmark(t, prop)
            action = b["action"]
            if action == "none":
                continue
            if action == "merge" and current != b.get("since"):
                if current is not None and current == b.get("until"):
                    continue
                return ("flowrun.job.BookmarkMoved: %s.%s is at %r, the batch starts at %r"
                        % (db, name, current, b.get("since")))
            rows = dict(t["rows"]) if (t and action == "merge") else {}
            for uri in b["files"]:
                body = self.object(uri)
                head, _, rest = body[len("PAR1\n"):].partition("\n")
                info = json.loads(head)
                for line in rest[:-len("PAR1")].splitlines():
                    parts = line.split("\t")
                    if info["sim"] == "dms full load":
                        rows[parts[0]] = parts[1]
                    elif parts[0] == "D":
                        rows.pop(parts[1], None)
                    else:
                        rows[parts[1]] = parts[2]
            self.commit(db, name, a["warehouse"], rows, {prop: b.get("until") or "",
                        "flowrun.run-id": a.get("run-id", ""), "operation": "overwrite"})
        return None

    @staticmethod
    def bookmark(t, prop):
        if not t:
            return None
        snaps = {s["snapshot-id"]: s for s in t["meta"]["snapshots"]}
        s = snaps.get(t["meta"]["current-snapshot-id"])
        while s:
            if prop in s["summary"]:
                return s["summary"][prop]
            s = snaps.get(s.get("parent-snapshot-id"))
        return None

    def commit(self, db, name, warehouse, rows, summary):
        t = self.iceberg.get((db, name))
        location = "%s/%s.db/%s" % (warehouse.rstrip("/"), db, name)
        meta = t["meta"] if t else {"format-version": 2, "table-uuid": str(uuid.uuid4()),
                                    "location": location, "last-sequence-number": 0,
                                    "current-snapshot-id": -1, "snapshots": [], "snapshot-log": []}
        seq = meta["last-sequence-number"] + 1
        sid = int(time.time() * 1000) * 1000 + seq
        summary = dict(summary, **{"total-records": str(len(rows))})
        snap = {"snapshot-id": sid, "sequence-number": seq, "timestamp-ms": int(time.time() * 1000),
                "manifest-list": "%s/metadata/snap-%d.avro" % (location, sid), "summary": summary}
        if meta["current-snapshot-id"] != -1:
            snap["parent-snapshot-id"] = meta["current-snapshot-id"]
        meta["snapshots"].append(snap)
        meta["snapshot-log"].append({"timestamp-ms": snap["timestamp-ms"], "snapshot-id": sid})
        meta["current-snapshot-id"], meta["last-sequence-number"] = sid, seq
        uri = "%s/metadata/%05d-%s.metadata.json" % (location, seq, uuid.uuid4())
        b, k = uri[len("s3://"):].split("/", 1)
        self.s3.put_object(Bucket=b, Key=k, Body=json.dumps(meta).encode())
        params = {"table_type": "ICEBERG", "metadata_location": uri}
        table_input = {"Name": name, "TableType": "EXTERNAL_TABLE", "Parameters": params,
                       "StorageDescriptor": {"Location": location}}
        if t:
            self.glue.update_table(DatabaseName=db, TableInput=table_input)
        else:
            try:
                self.glue.create_table(DatabaseName=db, TableInput=table_input)
            except self.glue.exceptions.AlreadyExistsException:
                self.glue.update_table(DatabaseName=db, TableInput=table_input)
        self.iceberg[(db, name)] = {"rows": rows, "meta": meta}

    def write_stderr(self, uri, text):
        b, k = uri[len("s3://"):].split("/", 1)
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb") as f:
            f.write(text.encode())
        self.s3.put_object(Bucket=b, Key=k, Body=buf.getvalue())

    # ---- one turn --------------------------------------------------------------------------
    def tick(self):
        dms = get_backend("dms")[ACCOUNT][REGION]
        for arn, task in list(dms.replication_tasks.items()):
            if task.status == "starting" and (arn, task.start_date) not in self.dms_done:
                self.dms_done.add((arn, task.start_date))
                if self.fail_dms:
                    task.status = "failed"
                else:
                    self.load(arn, task)
        emr = get_backend("emr")[ACCOUNT][REGION]
        for cluster in list(emr.clusters.values()):
            for step in cluster.steps:
                if step.state == "RUNNING" and step.id not in self.steps_done and not self.hold_steps:
                    self.steps_done.add(step.id)
                    err = "injected step failure" if self.fail_step else self.run_job(step.args)
                    if err:
                        self.job_errors.append(err)
                    step.state = "FAILED" if err else "COMPLETED"
                    cluster.state = "WAITING"
        es = get_backend("emr-serverless")[ACCOUNT][REGION]
        for app_id, runs in list(es.job_runs.items()):
            for jr in runs:
                self.tick_job(es, app_id, jr)

    def tick_job(self, es, app_id, jr):
        if jr.id in self.jobs_done or jr.state == "CANCELLED":
            return
        app = es.applications[app_id]
        if jr.state == "SUBMITTED":
            if app.state in ("CREATED", "STOPPED"):
                app.state = "STARTED"   # auto-start
            jr.state = "RUNNING"
            return
        if jr.state != "RUNNING" or self.hold_jobs:
            return
        self.jobs_done.add(jr.id)
        sub = jr.job_driver.get("sparkSubmit", {})
        err = "injected job failure" if self.fail_job else self.run_job(sub.get("entryPointArguments", []))
        if err:
            self.job_errors.append(err)
            logs = (((jr.configuration_overrides or {}).get("monitoringConfiguration") or {})
                    .get("s3MonitoringConfiguration") or {}).get("logUri")
            if logs:
                self.write_stderr("%s/applications/%s/jobs/%s/SPARK_DRIVER/stderr.gz"
                                  % (logs.rstrip("/"), app_id, jr.id),
                                  "Traceback (most recent call last):\n  File \"raw_to_iceberg.py\"\n"
                                  "pyspark.errors.exceptions.captured.AnalysisException: " + err + "\n")
            jr.state, jr.state_details = "FAILED", "Job failed, please check complete logs in configured logging destination. ExitCode: 1."
        else:
            jr.state = "SUCCESS"
