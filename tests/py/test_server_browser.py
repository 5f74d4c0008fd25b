"""The web UI in a real Chromium (Debian's chromium driven by npm's playwright-core,
tests/browser/ui.mjs), against `flowrun server --sim` running the DMS -> EMR pipeline in a
time-lapse with the test suite's PostgreSQL as its source: log in, the grid, the trigger form,
the run's graph turning green live, a task's log followed, a log line with HTML staying text,
cancel, keyboard, dark mode; the server restarted with --sim-fail emr.step: a failed run and its
stderr tail; restarted again without it: that run retried from the failed task until it
succeeds. Screenshots go to build/test-artifacts/browser/ (not committed)."""
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

ROOT, FLOWRUN = tap.ROOT, tap.FLOWRUN
PG = os.environ.get("FLOWRUN_TEST_PG")
TMP = tempfile.mkdtemp(prefix="flowrun-browser-")
DB = "flowrun_browser_%d" % os.getpid()
BROWSER = os.path.join(ROOT, "tests", "browser")
ARTIFACTS = os.path.join(os.environ.get("FLOWRUN_BUILD") or os.path.join(ROOT, "build"), "test-artifacts", "browser")
TOKEN = "browser-operator-token-5b1e9c"
DURATIONS = {"dms_start": 1, "dms_rows_per_second": 120000, "dms_min_table": 0.4, "dms_stop": 0.4,
             "emr_starting": 5.5, "emr_bootstrapping": 2, "emr_step": 4, "emr_step_per_table": 0.33,
             "emr_step_pending": 0.2, "emr_cancel": 0.3, "emr_terminating": 1.3, "athena_query": 0.1}


def psql(conninfo, *args):
    subprocess.run(["psql", conninfo, "-v", "ON_ERROR_STOP=1", "-q"] + list(args), check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def setup():
    psql(PG, "-c", "CREATE DATABASE " + DB)
    psql(PG + " dbname=" + DB, "-c", "SET client_min_messages = warning", "-f",
         os.path.join(ROOT, "scripts", "demo-source.sql"))
    seed = {"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": {
        "engine": "postgres", "host": os.environ["FLOWRUN_TEST_PGHOST"],
        "port": int(os.environ["FLOWRUN_TEST_PGPORT"]), "username": os.environ["FLOWRUN_TEST_PGUSER"],
        "password": os.environ["FLOWRUN_TEST_PGPASSWORD"], "dbname": DB}}]}
    with open(os.path.join(TMP, "seed.json"), "w") as f:
        json.dump(seed, f)
    with open(os.path.join(TMP, "lapse.json"), "w") as f:
        json.dump({"dms_poll_every": 0.25, "emr_poll_every": 0.5, "step_log_wait": 2}, f)
    wf = os.path.join(TMP, "workflows")
    os.makedirs(wf)
    shutil.copy(os.path.join(ROOT, "workflows", "dms_to_emr.lua"), wf)
    os.symlink(os.path.join(ROOT, "workflows", "jobs"), os.path.join(wf, "jobs"))
    for name in ("hello.lua", "slow.lua"):
        shutil.copy(os.path.join(ROOT, "tests", "lib", "server_workflows", name), wf)
    with open(os.path.join(TMP, "tokens"), "w") as f:
        f.write("operator %s browser\n" % TOKEN)
    os.chmod(os.path.join(TMP, "tokens"), 0o600)
    os.makedirs(ARTIFACTS, exist_ok=True)


class Server:
    def __init__(self, *extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRUN_VAR_") and
               not k.startswith("FLOWRUN_SIM") and k != "FLOWRUN_TOKEN"}
        env["FLOWRUN_SIM_SEED"] = os.path.join(TMP, "seed.json")
        env["FLOWRUN_SIM_DURATIONS"] = json.dumps(DURATIONS)
        self.log = open(os.path.join(TMP, "server.log"), "a+")
        self.p = subprocess.Popen(
            [FLOWRUN, "server", "--listen", "127.0.0.1:0", "--workflows", os.path.join(TMP, "workflows"),
             "--state-dir", os.path.join(TMP, "state"), "--tokens", os.path.join(TMP, "tokens"), "--sim",
             "--vars-file", os.path.join(ROOT, "workflows", "config", "example.json"),
             "--vars-file", os.path.join(TMP, "lapse.json")] + list(extra),
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.url = None
        deadline = time.time() + 20
        while time.time() < deadline and not self.url and self.p.poll() is None:
            time.sleep(0.05)
            with open(self.log.name) as f:
                found = re.findall(r"flowrun server on (http://[\d.]+:\d+)", f.read())
            if len(found) > Server.started:
                self.url = found[-1]
        Server.started += 1
        if not self.url:
            raise RuntimeError("the server did not start")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        return self.p.wait(timeout=30)


Server.started = 0


def phase(name, srv):
    env = dict(os.environ, FLOWRUN_URL=srv.url, FLOWRUN_UI_TOKEN=TOKEN, ARTIFACTS=ARTIFACTS,
               STATE_FILE=os.path.join(TMP, "ui-state.json"))
    p = subprocess.run(["node", os.path.join(BROWSER, "ui.mjs"), name], cwd=BROWSER, env=env,
                       capture_output=True, text=True, timeout=400)
    n = 0
    for line in p.stdout.splitlines():
        m = re.match(r"^RESULT (ok|fail) (.*)$", line)
        if m:
            n += 1
            tap.ok(m.group(1) == "ok", "%s: %s" % (name, m.group(2)))
        else:
            tap.diag(line)
    if p.returncode != 0 or n == 0:
        tap.ok(False, "%s: the browser script ran (exit %d)" % (name, p.returncode))
        tap.diag(p.stderr[-3000:])


def main():
    tap.ok(PG is not None, "the test suite's PostgreSQL (FLOWRUN_TEST_PG)")
    tap.ok(os.path.exists("/usr/bin/chromium"), "Debian's chromium is installed (scripts/deps.sh)")
    tap.ok(os.path.isdir(os.path.join(BROWSER, "node_modules", "playwright-core")),
           "playwright-core is installed in tests/browser (scripts/deps.sh runs npm ci)")
    if not PG:
        return
    setup()
    srv = Server()
    try:
        phase("green", srv)
    finally:
        tap.eq(srv.stop(), 143, "the server stops on SIGTERM")
    srv = Server("--sim-fail", "emr.step")
    try:
        phase("fail", srv)
    finally:
        srv.stop()
    srv = Server()
    try:
        phase("retry", srv)
    finally:
        srv.stop()
    shots = sorted(f for f in os.listdir(ARTIFACTS) if f.endswith(".png"))
    tap.ok(len(shots) >= 8, "screenshots saved in %s: %s" % (ARTIFACTS, ", ".join(shots)))


try:
    main()
finally:
    if PG:
        subprocess.run(["psql", PG, "-q", "-c", "DROP DATABASE IF EXISTS " + DB], capture_output=True)
    if os.environ.get("KEEP_TMP") != "1":
        shutil.rmtree(TMP, ignore_errors=True)
    else:
        tap.diag("kept " + TMP)
tap.done()
