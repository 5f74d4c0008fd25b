"""`flowrun iam` proven in the simulator: the dms_to_emr pipeline runs with the derived policy as
its only permissions (--sim-policy: the simulator authorizes every call as AWS does, PassRole,
tags, Glue's catalog path, S3's prefixes and Athena's reads with the caller's permissions
included) on every path: success (twice: the second run reads the Iceberg tables' metadata), a
failed step, a failed DMS task, the run cancelled while DMS loads, while the step runs (then
resumed), while Athena counts; EMR Serverless (success, a failed job run, cancelled then
resumed); the incremental mode (the first night loads, the second checks the stream's CDC
latency). No path makes a call the policy refuses; every action of every statement is used by
some path; and with any one action taken out of one statement, the path that used it fails
with an AccessDenied naming that action.

The runs use the real source PostgreSQL (FLOWRUN_TEST_PG) through the simulated Secrets
Manager, as test_pipeline_sim.py does. A family of paths shares one derived policy (its
parameters select the paths)."""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

ROOT = tap.ROOT
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-iam-sim-")
DB = "flowrun_iam_sim_%d" % os.getpid()
WORKFLOW = os.path.join(ROOT, "workflows", "dms_to_emr.lua")
EXAMPLE = os.path.join(ROOT, "workflows", "config", "example.json")
CDC_TASK = "arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOCDCTASK0000000"
TOPIC = "arn:aws:sns:us-east-1:123456789012:flowrun-demo-alerts"


def psql(conninfo, *args):
    return subprocess.run(["psql", conninfo, "-v", "ON_ERROR_STOP=1", "-q"] + list(args),
                          check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def seed_file():
    path = os.path.join(TMP, "seed.json")
    secret = {"engine": "postgres", "host": os.environ["FLOWRUN_TEST_PGHOST"],
              "port": int(os.environ["FLOWRUN_TEST_PGPORT"]), "username": os.environ["FLOWRUN_TEST_PGUSER"],
              "password": os.environ["FLOWRUN_TEST_PGPASSWORD"], "dbname": DB}
    with open(path, "w") as f:
        json.dump({"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": secret}]}, f)
    return path


def clean_env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWRUN_VAR_", "FLOWRUN_SIM"))}
    e.update(extra)
    return e


def derive(vars_, fmt="json"):
    p = subprocess.run([tap.FLOWRUN, "iam", WORKFLOW, "--vars-file", EXAMPLE, "--format", fmt] +
                       [a for k, v in vars_ for a in ("--var", "%s=%s" % (k, v))],
                       cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


# A step of a path: a run (or a resume of the path's last run) with its options, its simulated
# durations and the exit status it must end with.
def step(rc, *more, durations=None, resume=False):
    return {"rc": rc, "more": list(more), "durations": durations or {}, "resume": resume}


FAMILIES = {
    "cluster": {
        "vars": [("notify_topic_arn", TOPIC), ("step_log_wait", "0")],
        "paths": {
            "success-twice": [step(0), step(0)],
            "step-failure": [step(1, "--sim-fail", "emr.step")],
            "dms-failure": [step(1, "--sim-fail", "dms.task")],
            "cancel-during-dms": [step(1, "--timeout", "30m", durations={"dms_rows_per_second": 0.0001})],
            "cancel-during-step-then-resume": [
                step(1, "--timeout", "1h", "--var", "step_timeout=100000h", durations={"emr_step": 1e9}),
                step(0, resume=True, durations={"emr_step": 600})],
            "athena-times-out": [step(1, durations={"athena_query": 1e9})],
        },
    },
    "serverless": {
        "vars": [("compute", "serverless"), ("step_log_wait", "0"),
                 ("serverless_execution_role", "arn:aws:iam::123456789012:role/flowrun-serverless")],
        "paths": {
            "success": [step(0)],
            "job-failure": [step(1, "--sim-fail", "serverless.job")],
            "cancel-during-job-then-resume": [
                step(1, "--timeout", "1h", "--var", "step_timeout=100000h", durations={"serverless_job": 1e9}),
                step(0, resume=True, durations={"serverless_job": 600})],
            "cancel-during-dms": [step(1, "--timeout", "30m", durations={"dms_rows_per_second": 0.0001})],
            "athena-times-out": [step(1, durations={"athena_query": 1e9})],
        },
    },
    "incremental": {
        "vars": [("mode", "incremental"), ("dms_task_arn", CDC_TASK), ("step_log_wait", "0"),
                 ("raw_uri", "s3://flowrun-demo-raw/cdc"), ("glue_database", "lake_cdc")],
        "paths": {
            "two-nights": [step(0, durations={"dms_cdc_interval": 0}), step(0, durations={"dms_cdc_interval": 0})],
            "cancel-during-first-load": [step(1, "--timeout", "30m", durations={"dms_rows_per_second": 0.0001})],
            "cancel-during-step": [step(1, "--timeout", "1h", "--var", "step_timeout=100000h",
                                        durations={"emr_step": 1e9})],
            "athena-times-out": [step(1, durations={"athena_query": 1e9})],
        },
    },
}


def run_path(family, name, policy_file, case):
    """Runs a path's steps with the policy; returns [(rc, output)], and the record's lines."""
    fam = FAMILIES[family]
    d = os.path.join(TMP, case)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    record = os.path.join(d, "record.jsonl")
    results = []
    for st in fam["paths"][name]:
        e = clean_env(FLOWRUN_SIM_STATE=os.path.join(d, "sim.json"), FLOWRUN_SIM_SEED=seed_file(),
                      FLOWRUN_SIM_RECORD=record,
                      FLOWRUN_SIM_DURATIONS=json.dumps(st["durations"]))
        if st["resume"]:
            cmd = [tap.FLOWRUN, "resume", "last"]
        else:
            cmd = [tap.FLOWRUN, WORKFLOW, "--vars-file", EXAMPLE] + \
                [a for k, v in fam["vars"] for a in ("--var", "%s=%s" % (k, v))]
        cmd += ["--state-dir", os.path.join(d, "state"), "--sim-policy", policy_file, "--virtual-time",
                "--log-format", "text"] + st["more"]
        p = subprocess.run(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=300)
        results.append((p.returncode, p.stdout))
        if p.returncode != st["rc"]:
            break
    lines = []
    if os.path.exists(record):
        with open(record) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    return results, lines


def checks(lines):
    for r in lines:
        for c in r.get("authz") or []:
            yield r, c


def without(policy, sid, action):
    p = copy.deepcopy(policy)
    out = []
    for s in p["Statement"]:
        if s["Sid"] == sid:
            acts = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            acts = [a for a in acts if a != action]
            if not acts:
                continue
            s["Action"] = acts
        out.append(s)
    p["Statement"] = out
    return p


def family(name):
    fam = FAMILIES[name]
    rc, out, err = derive(fam["vars"])
    tap.eq(rc, 0, "%s: flowrun iam derives a policy" % name)
    if rc != 0:
        tap.diag(err)
        return
    policy = json.loads(out)
    pfile = os.path.join(TMP, name + "-policy.json")
    with open(pfile, "w") as f:
        f.write(out)
    used = {}   # (sid, action) -> path that used it
    for path, steps in fam["paths"].items():
        results, lines = run_path(name, path, pfile, "%s-%s" % (name, path))
        want = [s["rc"] for s in steps]
        got = [r[0] for r in results]
        if not tap.eq(got, want, "%s/%s: the path runs with the derived policy only (exit %s)" % (name, path, want)):
            tap.diag(results[-1][1][-3000:])
        refused = ["%s %s on %s" % (r.get("task"), c["action"], c["resource"]) for r, c in checks(lines)
                   if c.get("decision") != "allow"]
        tap.eq(refused, [], "%s/%s: no call the policy does not allow" % (name, path))
        tap.ok(all("AccessDenied" not in r[1] for r in results), "%s/%s: no AccessDenied said" % (name, path))
        for _, c in checks(lines):
            if c.get("decision") == "allow":
                used.setdefault((c["sid"], c["action"]), path)
    pairs = []
    for s in policy["Statement"]:
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]):
            pairs.append((s["Sid"], a))
    unused = [p for p in pairs if p not in used]
    tap.eq(unused, [], "%s: every action of every statement is used by some path (%d)" % (name, len(pairs)))
    for sid, action in pairs:
        path = used.get((sid, action))
        if not path:
            continue
        reduced = without(policy, sid, action)
        rfile = os.path.join(TMP, "%s-without-%s-%s.json" % (name, sid, action.replace(":", "_")))
        with open(rfile, "w") as f:
            json.dump(reduced, f)
        results, lines = run_path(name, path, rfile, "%s-rm-%s-%s" % (name, sid, action.replace(":", "_")))
        denied = [c for _, c in checks(lines) if c.get("decision") != "allow"]
        said = any(("not authorized to perform: %s " % action) in r[1] for r in results)
        ok = tap.ok(said and any(c["action"] == action for c in denied),
                    "%s: without %s in %s, path %s fails with AccessDenied naming it" % (name, action, sid, path))
        if not ok:
            tap.diag("denied: %r" % [(c["action"], c["resource"]) for c in denied][:5])
            tap.diag(results[-1][1][-2500:])


def terraform_block():
    rc, out, err = derive(FAMILIES["cluster"]["vars"], fmt="terraform")
    tap.eq(rc, 0, "--format terraform")
    tap.like(out, 'data "aws_iam_policy_document" "dms_to_emr" {', "a data aws_iam_policy_document block")
    tap.like(out, 'variable = "aws:ResourceTag/flowrun:workflow"', "the EMR tag condition")
    tap.like(out, "# EmrList: ListClusters takes no resource", "unscoped statements say why")
    tap.ok("${" not in out.replace("$${", ""), "no unescaped template sequence")


def main():
    try:
        tap.ok(PG is not None, "FLOWRUN_TEST_PG is set (tests/servers/pg.sh)")
        if PG is None:
            tap.done()
        psql(PG, "-c", "CREATE DATABASE " + DB)
        psql(PG + " dbname=" + DB, "-f", os.path.join(ROOT, "scripts", "demo-source.sql"))
        only = os.environ.get("IAM_FAMILIES")
        for name in FAMILIES:
            if not only or name in only.split(","):
                def one(name=name):
                    family(name)
                one.__name__ = "family " + name
                tap.test(one)
        tap.test(terraform_block)
    finally:
        if PG:
            subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(TMP, ignore_errors=True)
    tap.done()


if __name__ == "__main__":
    main()
