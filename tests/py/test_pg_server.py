"""pg at process level: a server restart while a pool works (the pool recovers), and the
password never reaching stderr or the debug log (wrong password, --debug pg)."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

CI = os.environ.get("FLOWRUN_TEST_PG")
PGDATA = os.environ.get("FLOWRUN_TEST_PGDATA")
PGCTL = os.environ.get("FLOWRUN_TEST_PGCTL")
PASSWORD = os.environ.get("FLOWRUN_TEST_PGPASSWORD")
PGLOG = os.environ.get("FLOWRUN_TEST_PGLOG")
if not (CI and PGDATA and PGCTL and PASSWORD and PGLOG):
    tap.ok(False, "FLOWRUN_TEST_PG* not set: start tests/servers/pg.sh (scripts/test.sh does)")
    tap.done()

ENV = dict(os.environ)
ENV["LUA_PATH"] = os.path.join(tap.ROOT, "tests", "lib", "?.lua") + ";;"


def script(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(text)
    f.close()
    return f.name


WORKLOAD = r"""
local flow = require "flow"
local pg = require "pg"
local json = require "json"
local pool = pg.pool { conninfo = os.getenv("FLOWRUN_TEST_PG"), size = 4 }
local stop_file = arg[1]
local stats = { ok = 0, errors = {}, ok_after = 0 }
local restarted = false
local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
io.write("ready\n"); io.flush()
local hs = {}
for i = 1, 8 do
  hs[i] = flow.spawn(function()
    while not exists(stop_file) do
      local ok, err = pcall(pool.query, pool, "SELECT $1::int AS i, pg_sleep(0.01)", i)
      if ok then
        stats.ok = stats.ok + 1
        if restarted then stats.ok_after = stats.ok_after + 1 end
      else
        stats.errors[#stats.errors + 1] = { code = err.code, retryable = err.retryable,
          message = err.message }
        restarted = true
        flow.sleep(0.05)
      end
    end
  end)
end
flow.all(hs)
-- every connection the pool hands out now works
local after = {}
for i = 1, 8 do after[i] = flow.spawn(function() return pool:query("SELECT 1 AS x")[1].x end) end
stats.final = flow.all(after)
stats.open = pool:stats().open
pool:close()
io.write(json.encode(stats), "\n")
"""


@tap.test
def test_restart_pool_recovers():
    stop = tempfile.mktemp()
    path = script(WORKLOAD)
    p = subprocess.Popen([tap.FLOWRUN, path, stop], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    try:
        tap.eq(p.stdout.readline().strip(), "ready", "the workload started")
        time.sleep(0.7)
        # the restarted server must not inherit our pipes: its output goes to its log
        r = subprocess.run(PGCTL.split() + ["-D", PGDATA, "-l", PGLOG, "-m", "fast", "-w", "restart"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        tap.eq(r.returncode, 0, "pg_ctl restart")
        time.sleep(1.0)
        open(stop, "w").close()
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        os.unlink(path)
        if os.path.exists(stop):
            os.unlink(stop)
    tap.eq(p.returncode, 0, "the workload finished")
    if p.returncode != 0:
        tap.diag(err)
    stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    tap.ok(stats.get("ok", 0) > 50, "queries ran before the restart (%s)" % stats.get("ok"))
    errors = stats.get("errors") or []
    tap.ok(len(errors) >= 1, "the restart was felt: %d failed queries" % len(errors))
    tap.ok(all(e.get("retryable") for e in errors),
           "every failure is retryable: %s" % sorted({e.get("code") for e in errors}))
    tap.ok(all((e.get("code") or "").startswith("pg.") for e in errors), "pg error codes")
    tap.ok(stats.get("ok_after", 0) > 20, "queries succeeded after the restart (%s)" % stats.get("ok_after"))
    tap.eq(stats.get("final"), [1] * 8, "then every pooled query works")
    tap.ok(stats.get("open", 99) <= 4, "the pool stayed within its size")


RESET_SCRIPT = r"""
local flow = require "flow"
local pg = require "pg"
local json = require "json"
local c = pg.connect(arg[1])
io.write("connected\n"); io.flush()
local t0 = flow.now()
local ok, err = pcall(c.query, c, "SELECT pg_sleep(3)")
io.write(json.encode({ ok = ok, code = not ok and err.code or nil,
  retryable = not ok and err.retryable or nil, status = c:status(),
  elapsed = flow.now() - t0 }), "\n")
"""


def reset_proxy(target_port, hold_cancels=0.0):
    """A TCP proxy to the server that resets the client's connection (RST) on demand. With
    hold_cancels, cancel requests are swallowed: held open that many seconds, never forwarded
    (a server that ignores them)."""
    import socket
    import struct
    import threading
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    state = {"clients": []}

    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass

    def serve():
        while True:
            try:
                cl, _ = lst.accept()
            except OSError:
                return
            if hold_cancels:
                head = cl.recv(8, socket.MSG_PEEK)
                if len(head) == 8 and struct.unpack("!ii", head) == (16, 80877102):
                    threading.Timer(hold_cancels, cl.close).start()
                    continue
            up = socket.create_connection(("127.0.0.1", target_port))
            state["clients"].append((cl, up))
            threading.Thread(target=pump, args=(cl, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, cl), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()

    def reset():
        for cl, up in state["clients"]:
            # linger 0 makes close send RST; SHUT_RD first wakes the thread blocked in recv,
            # which would otherwise keep the socket open
            cl.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # the start of a message first: the client reads these bytes fine, then meets
            # the reset (POLLERR) while waiting for the rest
            cl.shutdown(socket.SHUT_RD)
            time.sleep(0.05)
            cl.sendall(b"N\x00\x00\x00\x40")
            cl.close()
            up.close()
        lst.close()

    return lst.getsockname()[1], reset


@tap.test
def test_connection_reset_mid_query():
    port, reset = reset_proxy(int(os.environ["FLOWRUN_TEST_PGPORT"]))
    ci = CI.replace("port=" + os.environ["FLOWRUN_TEST_PGPORT"], "port=%d" % port)
    path = script(RESET_SCRIPT)
    p = subprocess.Popen([tap.FLOWRUN, path, ci], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    try:
        tap.eq(p.stdout.readline().strip(), "connected", "connected through the proxy")
        time.sleep(0.3)
        reset()
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
        os.unlink(path)
    tap.eq(p.returncode, 0, "the script ended (no hang, no deadlock)")
    if p.returncode != 0:
        tap.diag(err)
    r = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    tap.eq(r.get("ok"), False, "the query failed")
    tap.eq(r.get("retryable"), True, "retryable: %s" % r.get("code"))
    tap.eq(r.get("status"), "broken", "the connection says broken")
    tap.ok((r.get("elapsed") or 99) < 2, "at once, not after the 3 s query")


IGNORED_CANCEL_SCRIPT = r"""
local flow = require "flow"
local pg = require "pg"
local json = require "json"
local c = pg.connect(arg[1])
c:cancel_timeout(0.5)
local ok1, e1 = pcall(flow.timeout, 0.2, function() return c:query("SELECT pg_sleep(3)") end)
local t0 = flow.now()
local ok2, e2 = pcall(c.query, c, "SELECT 1")
io.write(json.encode({ first = e1.code, ok = ok2, code = not ok2 and e2.code or nil,
  retryable = not ok2 and e2.retryable or nil, message = not ok2 and e2.message or nil,
  status = c:status(), elapsed = flow.now() - t0 }), "\n")
"""


@tap.test
def test_cancel_ignored_closes_connection():
    port, reset = reset_proxy(int(os.environ["FLOWRUN_TEST_PGPORT"]), hold_cancels=2.5)
    ci = CI.replace("port=" + os.environ["FLOWRUN_TEST_PGPORT"], "port=%d" % port)
    path = script(IGNORED_CANCEL_SCRIPT)
    try:
        r = subprocess.run([tap.FLOWRUN, path, ci], capture_output=True, text=True, env=ENV,
                           timeout=30)
    finally:
        os.unlink(path)
        reset()
    tap.eq(r.returncode, 0, "the script ended")
    if r.returncode != 0:
        tap.diag(r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    tap.eq(out.get("first"), "flow.timeout", "the query was cancelled by the timeout")
    tap.eq(out.get("ok"), False, "the next query on that connection fails")
    tap.eq(out.get("code"), "pg.08006", "as a lost connection")
    tap.eq(out.get("retryable"), True, "retryable, so a pool or retry policy replaces it")
    tap.like(out.get("message"), "cancel_timeout", "saying why")
    tap.eq(out.get("status"), "broken")
    tap.ok((out.get("elapsed") or 99) < 2, "after the cancel timeout, not the 3 s statement")


@tap.test
def test_password_never_printed():
    secret = "Wr0ng-pw-in-logs-41"
    ci = CI.replace("password=" + PASSWORD, "password=" + secret)
    path = script('local pg = require "pg"; pg.connect(arg[1])')
    try:
        r = subprocess.run([tap.FLOWRUN, "--debug", "pg", path, ci], capture_output=True, text=True,
                           env=ENV, timeout=30)
        tap.ok(r.returncode != 0, "a wrong password fails the script")
        tap.like(r.stderr, "pg.28P01", "with the SQLSTATE code")
        tap.like(r.stderr, "password authentication failed", "and a clear message")
        tap.ok(secret not in r.stderr and secret not in r.stdout, "the password is nowhere in the output")
        # the right password with debug logging: connection and queries logged, password not
        with open(path, "w") as f:
            f.write('local pg = require "pg"; local c = pg.connect(arg[1]); '
                    'c:query("SELECT $1::text AS s", "param"); c:close()')
        env = dict(ENV, FLOWRUN_DEBUG="pg")
        r = subprocess.run([tap.FLOWRUN, path, CI], capture_output=True, text=True, env=env, timeout=30)
        tap.eq(r.returncode, 0, "the right password connects")
        tap.like(r.stderr, "connected to", "the debug log shows the connection")
        tap.ok(PASSWORD not in r.stderr and PASSWORD not in r.stdout, "without the password")
        url = "postgresql://%s:%s@%s:%s/%s" % (
            os.environ["FLOWRUN_TEST_PGUSER"], PASSWORD, os.environ["FLOWRUN_TEST_PGHOST"],
            os.environ["FLOWRUN_TEST_PGPORT"], os.environ["FLOWRUN_TEST_PGDATABASE"])
        r = subprocess.run([tap.FLOWRUN, path, url], capture_output=True, text=True, env=env, timeout=30)
        tap.eq(r.returncode, 0, "a postgresql:// URL connects")
        tap.ok(PASSWORD not in r.stderr, "its password is not logged either")
    finally:
        os.unlink(path)


tap.done()
