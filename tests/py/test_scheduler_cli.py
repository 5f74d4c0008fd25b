"""Schedules from the command line, on the real clock, against the file store and PostgreSQL:
`flowrun scheduler` beside `flowrun worker`, and `flowrun worker --schedule` as both in one process;
a file added while it runs is scheduled, a broken one reported while the others go on; `flowrun
schedules` lists them (last run, state, next fire times); `flowrun pause` / `unpause` take effect
on a running scheduler at once; SIGTERM stops it. `flowrun backfill` over a range that crosses a
DST change: one run per fire time, never more than max_active_runs at once, with progress and
its exit status; again with --reprocess none (nothing done), failed (only the failed date's run,
resumed) and all (every task again). Input it refuses (exit 2)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import storetest  # noqa: E402

storetest.require_pg()
DB = storetest.Db("sched_cli")
TMP = tempfile.mkdtemp(prefix="flowrun-sched-cli-")
MARK = os.path.join(TMP, "fixed")


def env(**extra):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("FLOWRUN_VAR_") or k in ("FLOWRUN_STORE", "FLOWRUN_CONFIG", "FLOWRUN_SIM"):
            del e[k]
    e["FLOWRUN_HOME"] = os.path.join(TMP, "home")
    e["XDG_CONFIG_HOME"] = os.path.join(TMP, "xdg")
    e["SCHED_MARK"] = MARK
    e.update(extra)
    return e


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def flowrun(*args, timeout=120):
    p = subprocess.run([tap.FLOWRUN] + list(args), cwd=TMP, env=env(), capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def spawn(name, *args):
    out = open(os.path.join(TMP, name + ".log"), "w")
    p = subprocess.Popen([tap.FLOWRUN] + list(args), cwd=TMP, env=env(), stdout=out,
                         stderr=subprocess.STDOUT)
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


def wait_for(pred, timeout=15.0, every=0.1):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(every)
    return pred()


def runs(store_args, workflow=None):
    args = ["runs", "--json"] + store_args + (["--workflow", workflow] if workflow else [])
    rc, out, err = flowrun(*args)
    if rc != 0:
        raise RuntimeError(err)
    return json.loads(out)


def show(store_args, rid):
    rc, out, err = flowrun("show", rid, "--json", *store_args)
    if rc != 0:
        raise RuntimeError(err)
    return json.loads(out)


TICK = """local flow = require "flow"
local wf = flow.workflow { name = "%s", schedule = "1s", start_date = "2026-01-01",
  max_active_runs = 3 }
wf:task("a", function(ctx)
  flow.sleep(0.2)
  return { ld = ctx.logical_date, s = ctx.data_interval.start, e = ctx.data_interval["end"] }
end)
return wf
"""


def check_schedules(store_args, wf_dir, name):
    rc, out, err = flowrun("schedules", "--workflows", wf_dir, *store_args)
    tap.eq(rc, 0, "flowrun schedules: exit 0")
    tap.like(out, name, "  lists %s" % name)
    tap.like(out, "1s UTC", "  its schedule")
    tap.like(out, "active", "  active")
    rc, out, err = flowrun("schedules", "--workflows", wf_dir, "--json", *store_args)
    doc = json.loads(out)
    row = [w for w in doc["workflows"] if w["workflow"] == name][0]
    tap.ok(row["last_run"] and row["last_run"]["id"].startswith(name + "@"), "  --json: its last run")
    tap.eq(len(row["next"]), 5, "  --json: its next 5 fire times")
    tap.ok(row["next"][0]["due_epoch"] > time.time() - 2, "  which are ahead")
    return doc


@tap.test
def test_scheduler_and_worker_file_store():
    state = os.path.join(TMP, "fs")
    wf_dir = os.path.join(TMP, "wf-fs")
    write(os.path.join(wf_dir, "tick.lua"), TICK % "tick")
    write(os.path.join(wf_dir, "README.md"), "not a workflow")
    sa = ["--state-dir", state]
    sched = spawn("sched-fs", "scheduler", "--workflows", wf_dir, *sa)
    work = spawn("worker-fs", "worker", "--poll", "0.2s", "--concurrency", "4", *sa)
    tap.ok(wait_for(lambda: len([r for r in runs(sa, "tick") if r["state"] == "success"]) >= 3),
           "the scheduler fires, the worker runs: 3 runs succeeded")
    rs = runs(sa, "tick")
    r = show(sa, rs[-1]["id"])
    res = r["tasks"][0]["result"]
    tap.eq(r["kind"], "scheduled", "kind scheduled")
    tap.eq(res["s"], res["ld"], "the run saw its logical date: the start of its interval")
    tap.eq(r["logical_date"], r["data_interval"][0], "show --json: logical date and interval")
    tap.eq(r["data_interval"][1] - r["data_interval"][0], 1, "an interval of one second")
    tap.ok(r["id"] == "tick@" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(r["logical_date"])),
           "its id: the workflow and the logical date")
    check_schedules(sa, wf_dir, "tick")
    # a file added, a broken one: without a restart
    write(os.path.join(wf_dir, "second.lua"), TICK % "second")
    write(os.path.join(wf_dir, "broken.lua"), "return flow.workflow {")
    tap.ok(wait_for(lambda: len(runs(sa, "second")) >= 2), "a file added is scheduled at once")
    log = read(sched.log_path)
    tap.like(log, "broken.lua", "a broken file is reported")
    tap.ok(sched.poll() is None, "and the scheduler goes on")
    # pause: nothing more fired; unpause: fired again
    rc, out, err = flowrun("pause", "tick", "--workflows", wf_dir, *sa)
    tap.eq(rc, 0, "pause: exit 0")
    tap.like(out, "paused tick", "  says so")
    time.sleep(0.5)
    n = len(runs(sa, "tick"))
    time.sleep(2.5)
    tap.eq(len(runs(sa, "tick")), n, "paused: no run fired for 2.5 s")
    tap.ok(len(runs(sa, "second")) > 2, "the other workflow goes on")
    rc, out, err = flowrun("schedules", "--workflows", wf_dir, *sa)
    tap.like(out, "paused", "flowrun schedules shows it paused")
    rc, out, err = flowrun("unpause", os.path.join(wf_dir, "tick.lua"), *sa)
    tap.eq(rc, 0, "unpause (the workflow named by its file): exit 0")
    tap.ok(wait_for(lambda: len(runs(sa, "tick")) > n, timeout=3), "unpaused: fired again")
    tap.eq(stop(sched), 143, "SIGTERM: the scheduler stops (143)")
    tap.like(read(sched.log_path), "scheduler: stopped", "  saying so")
    stop(work)


@tap.test
def test_worker_schedule_postgresql():
    wf_dir = os.path.join(TMP, "wf-pg")
    write(os.path.join(wf_dir, "pgtick.lua"), TICK % "pgtick")
    sa = ["--store", DB.url]
    both = spawn("both-pg", "worker", "--schedule", "--workflows", wf_dir, "--poll", "0.5s", *sa)
    tap.ok(wait_for(lambda: len([r for r in runs(sa, "pgtick") if r["state"] == "success"]) >= 3),
           "worker --schedule: one process fires and runs")
    check_schedules(sa, wf_dir, "pgtick")
    rc, out, err = flowrun("pause", "pgtick", "--workflows", wf_dir, *sa)
    tap.eq(rc, 0, "pause")
    n = len(runs(sa, "pgtick"))
    time.sleep(2.5)
    tap.ok(len(runs(sa, "pgtick")) <= n + 1, "paused: at most a run in flight when it paused")
    n = len(runs(sa, "pgtick"))
    t0 = time.time()
    rc, out, err = flowrun("unpause", "pgtick", "--workflows", wf_dir, *sa)
    tap.ok(wait_for(lambda: len(runs(sa, "pgtick")) > n, timeout=3, every=0.02),
           "unpaused: the scheduler is told at once (NOTIFY) and fires (%.2fs)" % (time.time() - t0))
    tap.eq(stop(both), 143, "SIGTERM stops both")
    log = read(both.log_path)
    tap.like(log, "scheduler: stopped", "  the scheduler")
    tap.like(log, "stopped (signal 15)", "  and the worker")
    tap.eq(DB.value("SELECT count(*) FROM flowrun.runs WHERE state = 'running' AND owner IS NOT NULL "
                    "AND lease_until > now()"), "0", "its runs handed back, none left held")


HOURLY = """local flow = require "flow"
local wf = flow.workflow { name = "hourly", schedule = "0 * * * *", timezone = "Europe/Paris",
  start_date = "2026-01-01", max_active_runs = 2 }
wf:task("a", function(ctx)
  flow.sleep(0.3)
  if ctx.logical_date:find("T05:00") then
    local f = io.open(os.getenv("SCHED_MARK") or "", "r")
    if not f then error("the 05:00 data is bad") end
    f:close()
  end
  return ctx.logical_date
end)
return wf
"""


def overlapping(rows):
    evs = []
    for r in rows:
        evs.append((r["started"], 1))
        evs.append((r.get("finished") or 1e18, -1))
    evs.sort()
    cur = best = 0
    for _, d in evs:
        cur += d
        best = max(best, cur)
    return best


def backfill_case(label, sa):
    wf_dir = os.path.join(TMP, "wf-bf-" + label)
    write(os.path.join(wf_dir, "hourly.lua"), HOURLY)
    if os.path.exists(MARK):
        os.remove(MARK)
    work = spawn("worker-bf-" + label, "worker", "--poll", "0.2s", "--concurrency", "8", *sa)
    rng = ["--from", "2026-03-29T00:00", "--to", "2026-03-29T08:00"]
    rc, out, err = flowrun("backfill", "hourly", "--workflows", wf_dir, *(rng + sa))
    tap.eq(rc, 1, "%s: backfill: exit 1 (a run failed)" % label)
    tap.like(out, "8 dates from 2026-03-29T00:00:00+01:00 to 2026-03-29T08:00:00+02:00",
             "  8 fire times: 02:00 does not exist that night")
    tap.like(out, "8 runs made", "  8 runs made")
    tap.like(out, "to make", "  with its progress")
    rs = runs(sa, "hourly")
    tap.eq(len(rs), 8, "  8 runs")
    tap.ok(all(r["kind"] == "backfill" for r in rs), "  of kind backfill")
    tap.eq(sorted(r["state"] for r in rs), ["failed"] + ["success"] * 7, "  7 succeeded, 1 failed")
    tap.eq(overlapping(rs), 2, "  never more than max_active_runs (2) at once")
    lds = sorted(show(sa, r["id"])["logical_date"] for r in rs)
    tap.eq([time.strftime("%H", time.gmtime(x)) for x in lds],
           ["23", "00", "01", "02", "03", "04", "05", "06"], "  their logical dates (UTC hours)")
    bad = [r for r in rs if r["state"] == "failed"][0]["id"]

    rc, out, err = flowrun("backfill", "hourly", "--workflows", wf_dir, *(rng + sa))
    tap.eq(rc, 1, "%s: again, reprocess none: exit 1 (that run still failed)" % label)
    tap.like(out, "0 runs made, 0 queued again, 8 left as they were", "  nothing done")
    tap.eq(len(runs(sa, "hourly")), 8, "  still 8 runs")

    write(MARK, "the data is fixed")
    rc, out, err = flowrun("backfill", "hourly", "--workflows", wf_dir, "--reprocess", "failed",
                           *(rng + sa))
    tap.eq(rc, 0, "%s: reprocess failed: exit 0, all succeeded" % label)
    tap.like(out, "0 runs made, 1 queued again, 7 left as they were", "  the failed run only")
    attempts = {r["id"]: show(sa, r["id"])["tasks"][0]["attempts"] for r in runs(sa, "hourly")}
    tap.eq(attempts[bad], 2, "  its task ran again (attempt 2)")
    tap.eq(sorted(v for k, v in attempts.items() if k != bad), [1] * 7, "  the others not")
    tap.eq(show(sa, bad)["resumed"], 1, "  resumed, in place (the same run)")

    rc, out, err = flowrun("backfill", "hourly", "--workflows", wf_dir, "--reprocess", "all",
                           *(rng + sa))
    tap.eq(rc, 0, "%s: reprocess all: exit 0" % label)
    tap.like(out, "0 runs made, 8 queued again", "  every run queued again")
    rs = runs(sa, "hourly")
    attempts = {r["id"]: show(sa, r["id"])["tasks"][0]["attempts"] for r in rs}
    tap.eq(attempts[bad], 3, "  the once-failed date: attempt 3")
    tap.eq(sorted(v for k, v in attempts.items() if k != bad), [2] * 7, "  every other: attempt 2")
    tap.eq(len(rs), 8, "  still one run per date")
    stop(work)


@tap.test
def test_backfill_file_store():
    backfill_case("file", ["--state-dir", os.path.join(TMP, "bf-fs")])


@tap.test
def test_backfill_postgresql():
    db = storetest.Db("sched_cli_bf")
    try:
        backfill_case("postgresql", ["--store", db.url])
    finally:
        db.drop()


@tap.test
def test_refused():
    wf_dir = os.path.join(TMP, "wf-refuse")
    write(os.path.join(wf_dir, "hourly.lua"), HOURLY)
    write(os.path.join(wf_dir, "plain.lua"), """local flow = require "flow"
local wf = flow.workflow { name = "plain" }
wf:task("a", function() end)
return wf
""")
    sa = ["--state-dir", os.path.join(TMP, "refuse")]
    cases = [
        (["backfill", "hourly", "--workflows", wf_dir, "--to", "2026-03-29"], "needs --from"),
        (["backfill", "nope", "--workflows", wf_dir, "--from", "2026-03-29", "--to", "2026-03-29"],
         "no workflow nope in"),
        (["backfill", "plain", "--workflows", wf_dir, "--from", "2026-03-29", "--to", "2026-03-29"],
         "has no schedule"),
        (["backfill", "hourly", "--workflows", wf_dir, "--from", "2026-03-29", "--to", "2026-03-28"],
         "--to is before --from"),
        (["backfill", "hourly", "--workflows", wf_dir, "--from", "2026-03-29T00:10", "--to",
          "2026-03-29T00:20"], "no fire time"),
        (["backfill", "hourly", "--workflows", wf_dir, "--from", "yesterday", "--to", "2026-03-28"],
         "--from: bad time"),
        (["backfill", "hourly", "--workflows", wf_dir, "--from", "2026-03-29", "--to", "2026-03-29",
          "--reprocess", "some"], "reprocess"),
        (["pause", "nope", "--workflows", wf_dir], "no workflow nope in"),
        (["scheduler", "--workflows", os.path.join(TMP, "missing")], "is not a directory"),
        (["worker", "--workflows", wf_dir], "--workflows is for --schedule"),
    ]
    for args, want in cases:
        rc, out, err = flowrun(*(args + sa))
        tap.eq(rc, 2, "%s: exit 2" % " ".join(args[:2]))
        tap.like(err, want, "  " + want)
    rc, out, err = flowrun("schedules", "--workflows", wf_dir, *sa)
    tap.eq(rc, 0, "schedules on a store with no runs")
    tap.like(out, "hourly", "  lists the scheduled workflow")
    tap.ok("plain" not in out, "  not the one without a schedule")


try:
    pass
finally:
    DB.drop()
    if tap._failed == 0:
        subprocess.run(["rm", "-rf", TMP])
    else:
        tap.diag("kept " + TMP)
tap.done()
