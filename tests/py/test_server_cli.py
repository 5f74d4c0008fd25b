"""`flowrun server` as a process and the commands that talk to it: refusing to start open on a
non-loopback address, bad options; `flowrun trigger` (--wait, bad parameters, no token, a viewer
token), `runs`, `show`, `logs -f`, `cancel` with --server; SIGTERM with a run going and a stream
open; TLS (Secure cookie, HSTS, HTTP/2); and load: slow clients and oversized requests while other
clients are answered. Tokens never appear in the server's output."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

ROOT, FLOWRUN = tap.ROOT, tap.FLOWRUN
TMP = tempfile.mkdtemp(prefix="flowrun-server-cli-")
WF = os.path.join(TMP, "workflows")
shutil.copytree(os.path.join(ROOT, "tests", "lib", "server_workflows"), WF)
os.remove(os.path.join(WF, "broken.lua"))
OPERATOR = "operator-secret-token-4f9a1c2b7d"
VIEWER = "viewer-secret-token-8e3d5a6f1c"
TOKENS = os.path.join(TMP, "tokens")
with open(TOKENS, "w") as f:
    f.write("viewer %s grafana\n" % VIEWER)
os.chmod(TOKENS, 0o600)


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRUN_VAR_") and k not in
         ("FLOWRUN_TOKEN", "FLOWRUN_SERVER")}
    e.update(extra)
    return e


class Server:
    def __init__(self, *args, token=OPERATOR, state=None, extra_env=None):
        self.state = state or tempfile.mkdtemp(dir=TMP, prefix="state-")
        self.log = open(os.path.join(self.state, "server.log") if os.path.isdir(self.state) else
                        os.path.join(TMP, "server.log"), "w+")
        e = env(**(extra_env or {}))
        if token:
            e["FLOWRUN_TOKEN"] = token
        self.p = subprocess.Popen([FLOWRUN, "server", "--listen", "127.0.0.1:0", "--workflows", WF,
                                   "--state-dir", self.state] + list(args),
                                  stdout=subprocess.DEVNULL, stderr=self.log, env=e)
        self.url = None
        deadline = time.time() + 15
        while time.time() < deadline and self.url is None:
            time.sleep(0.05)
            m = re.search(r"flowrun server on (https?://[\d.]+:\d+)", self.output())
            if m:
                self.url = m.group(1)
            if self.p.poll() is not None:
                break
        if not self.url:
            raise RuntimeError("the server did not start: " + self.output())
        self.port = int(self.url.rsplit(":", 1)[1])

    def output(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None


def cli(*args, token=OPERATOR, server=None, timeout=60):
    e = env()
    if token:
        e["FLOWRUN_TOKEN"] = token
    if server:
        e["FLOWRUN_SERVER"] = server
    return subprocess.run([FLOWRUN] + list(args), capture_output=True, text=True, env=e, timeout=timeout)


def api(srv, method, path, body=None, token=OPERATOR, headers=None):
    h = {"Accept": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data


@tap.test
def refuses_to_start():
    r = subprocess.run([FLOWRUN, "server", "--listen", "0.0.0.0:0", "--workflows", WF, "--state-dir",
                        os.path.join(TMP, "x")], capture_output=True, text=True, env=env(), timeout=20)
    tap.eq(r.returncode, 2, "0.0.0.0 without tokens: exit 2")
    tap.like(r.stderr, "needs tokens", "saying tokens are needed")
    for args, what, msg in [(["--listen", "nonsense"], "a bad --listen", "--listen expects"),
                            (["--listen", ":8080"], "--listen without an address", "give the address"),
                            (["--tls-cert", "x.pem"], "--tls-cert without --tls-key", "go together"),
                            (["--workflows", "/nonexistent"], "a missing --workflows", "not a directory")]:
        r = subprocess.run([FLOWRUN, "server", "--state-dir", os.path.join(TMP, "x")] + args,
                           capture_output=True, text=True, env=env(), timeout=20)
        tap.eq(r.returncode, 2, what + ": exit 2")
        tap.like(r.stderr, msg, what + ": said why")
    loose = os.path.join(TMP, "loose-tokens")
    with open(loose, "w") as f:
        f.write("operator %s\n" % OPERATOR)
    os.chmod(loose, 0o644)
    r = subprocess.run([FLOWRUN, "server", "--listen", "0.0.0.0:0", "--tokens", loose, "--state-dir",
                        os.path.join(TMP, "x")], capture_output=True, text=True, env=env(), timeout=20)
    tap.eq(r.returncode, 2, "a tokens file readable by others: exit 2")
    tap.like(r.stderr, "chmod 600", "saying how to fix it")
    tap.ok(OPERATOR not in r.stderr, "without printing the token")
    r = subprocess.run([FLOWRUN, "server", "--state-dir", os.path.join(TMP, "x")], capture_output=True,
                       text=True, env=env(FLOWRUN_TOKEN="short"), timeout=20)
    tap.eq(r.returncode, 2, "a short FLOWRUN_TOKEN: exit 2")


srv = Server("--tokens", TOKENS)


@tap.test
def trigger_and_read_through_the_api():
    r = cli("trigger", "hello", "--var", "target=ci", "--var", "n=5", "--wait", "--server", srv.url)
    tap.eq(r.returncode, 0, "trigger --wait: exit 0 when the run succeeded (%s)" % r.stderr.strip())
    lines = r.stdout.strip().splitlines()
    run_id = lines[0]
    tap.ok(re.match(r"^\d{8}T\d{6}-[0-9a-f]{4}$", run_id) is not None, "the run's id first")
    tap.like(lines[-1], "of hello: success", "then how it ended")
    r = cli("trigger", "hello", "--var", "n=lots", "--server", srv.url)
    tap.eq(r.returncode, 2, "bad parameters: exit 2")
    tap.like(r.stderr, "parameter target is required", "each problem, as flowrun run says it")
    tap.like(r.stderr, 'parameter n: expected a number, got "lots"', "naming the parameter")
    r = cli("trigger", "hello", "--var", "target=x", "--server", srv.url, token=None)
    tap.eq(r.returncode, 1, "no token: exit 1")
    tap.like(r.stderr, "set FLOWRUN_TOKEN", "saying so")
    r = cli("trigger", "hello", "--var", "target=x", "--server", srv.url, token=VIEWER)
    tap.eq(r.returncode, 1, "a viewer token: exit 1")
    tap.like(r.stderr, "operator role", "the operator role is needed")
    r = cli("trigger", "nope", "--server", srv.url)
    tap.eq(r.returncode, 2, "an unknown workflow: exit 2")
    r = cli("trigger", "hello", "--var", "target=x", server=srv.url)
    tap.eq(r.returncode, 0, "FLOWRUN_SERVER works as --server")
    r = cli("trigger", "hello", "--server", "http://127.0.0.1:1")
    tap.eq(r.returncode, 1, "an unreachable server: exit 1")
    tap.like(r.stderr, "cannot reach", "saying so")

    r = cli("runs", "--server", srv.url, token=VIEWER)
    tap.eq(r.returncode, 0, "runs --server with a viewer token")
    tap.like(r.stdout, "runs in " + srv.url, "the server is where they are")
    tap.like(r.stdout, run_id, "the run is listed")
    r = cli("runs", "--server", srv.url, "--json", token=VIEWER)
    tap.eq(len(json.loads(r.stdout)), 2, "--json: both runs")
    r = cli("show", run_id, "--server", srv.url, token=VIEWER)
    tap.eq(r.returncode, 0, "show --server")
    tap.like(r.stdout, "state     success (exit 0)", "as show prints a local run")
    tap.like(r.stdout, "token = *** (secret)", "the secret parameter by name only")
    tap.like(r.stdout, '=> {"n":5,"target":"ci"}', "results")
    r = cli("show", "last", "--server", srv.url, "--json", token=VIEWER)
    tap.eq(json.loads(r.stdout)["state"], "success", "show last --json")
    r = cli("logs", run_id, "greet", "--server", srv.url, token=VIEWER)
    tap.like(r.stdout, "greet#1: hello world <b>bold</b><script>alert(1)</script>", "logs --server")
    r = cli("show", "nope", "--server", srv.url, token=VIEWER)
    tap.eq(r.returncode, 2, "show of an unknown run: exit 2")

    marker = os.path.join(TMP, "marker")
    r = cli("trigger", "hello", "--var", "target=x", "--var", "fail_until=" + marker, "--wait",
            "--server", srv.url)
    tap.eq(r.returncode, 1, "trigger --wait: exit 1 when the run failed")
    failed_id = r.stdout.splitlines()[0]
    r = cli("show", failed_id, "check", "--server", srv.url, token=VIEWER)
    tap.like(r.stdout, "check failed: %s is missing\n    --- detail ---\n    line two" % marker,
             "show RUN TASK: the whole error, lines intact")


@tap.test
def follow_and_cancel():
    r = cli("trigger", "slow", "--var", "every=0.4", "--server", srv.url)
    run_id = r.stdout.strip()
    r = cli("logs", run_id, "-f", "--server", srv.url, token=VIEWER, timeout=30)
    tap.eq(r.returncode, 0, "logs -f returns once the run ended")
    tap.eq([l.split(": ", 1)[1] for l in r.stdout.strip().splitlines()],
           ["step 1 begins", "step 1 ends", "step 2 begins", "step 2 ends", "step 3 begins", "step 3 ends",
            "cleaning up"], "every line, followed")
    r = cli("trigger", "slow", "--var", "every=10", "--server", srv.url)
    run_id = r.stdout.strip()
    time.sleep(0.5)
    r = cli("cancel", run_id, "--server", srv.url, token=VIEWER)
    tap.eq(r.returncode, 1, "cancel with a viewer token: refused")
    r = cli("cancel", run_id, "--server", srv.url)
    tap.eq(r.returncode, 0, "cancel --server")
    tap.like(r.stdout, "cancelling", "cancelling")
    deadline, state = time.time() + 10, None
    while time.time() < deadline:
        st, run = api(srv, "GET", "/api/v1/runs/" + run_id)
        state = run["state"]
        if state != "running":
            break
        time.sleep(0.1)
    tap.eq(state, "cancelled", "the run ended cancelled")
    r = cli("cancel", run_id, "--server", srv.url)
    tap.eq(r.returncode, 2, "cancel of a finished run: exit 2")
    r = cli("cancel", run_id)
    tap.eq(r.returncode, 2, "cancel without --server: the local store is asked (exit 2 here)")
    tap.like(r.stderr, "no run " + run_id, "it says the run is not in the local store")


def slow_client(port, stop, sent):
    """A slowloris: headers one byte at a time, never finished."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while not stop.is_set():
            s.sendall(b"X")
            sent[0] += 1
            time.sleep(0.2)
    except OSError:
        pass


@tap.test
def load_slow_clients_and_oversized_requests():
    stop = threading.Event()
    sent = [0]
    threads = [threading.Thread(target=slow_client, args=(srv.port, stop, sent), daemon=True) for _ in range(50)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    worst = 0
    big_statuses = []
    for i in range(20):
        t0 = time.time()
        st, doc = api(srv, "GET", "/api/v1/runs?limit=5", token=VIEWER)
        worst = max(worst, time.time() - t0)
        if st != 200:
            break
        if i % 5 == 0:
            st2, _ = api(srv, "POST", "/api/v1/workflows/hello/runs", {"params": {"target": "x" * (1 << 20)}})
            big_statuses.append(st2)
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            c.request("GET", "/api/v1/health", headers={"X-Big": "y" * 40000})
            big_statuses.append(c.getresponse().status)
            c.close()
    tap.eq(st, 200, "with 50 slow clients holding connections, others are answered")
    tap.ok(worst < 2.0, "quickly (the slowest of 20 answers: %.3f s)" % worst)
    tap.eq(sorted(set(big_statuses)), [413, 431], "oversized bodies get 413, oversized headers 431")
    stop.set()
    for t in threads:
        t.join(timeout=5)
    st, _ = api(srv, "GET", "/api/v1/health")
    tap.eq(st, 200, "the server still answers afterwards")


@tap.test
def sigterm_with_a_run_and_a_stream():
    r = cli("trigger", "slow", "--var", "every=30", "--server", srv.url)
    run_id = r.stdout.strip()
    time.sleep(0.5)
    stream = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    stream.sendall(("GET /api/v1/runs/%s/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n"
                    % (run_id, VIEWER)).encode())
    head = stream.recv(65536).decode(errors="replace")
    tap.like(head, "text/event-stream", "a stream is open")
    t0 = time.time()
    rc = srv.stop(signal.SIGTERM)
    tap.eq(rc, 143, "SIGTERM: exit 143 (%.1f s)" % (time.time() - t0))
    ended = False
    try:
        while stream.recv(65536):
            pass
        ended = True
    except OSError:
        ended = True
    tap.ok(ended, "the stream was closed")
    journal = os.path.join(srv.state, "runs", run_id + ".jsonl")
    recs = [json.loads(l) for l in open(journal)]
    fin = [x for x in recs if x["ev"] == "run_finished"]
    tap.eq(fin and fin[0]["state"], "cancelled", "the run it was running ended cancelled, not abandoned")
    tap.ok(any(x["ev"] == "task_succeeded" and x["task"] == "cleanup" for x in recs), "its cleanup ran")
    out = srv.output()
    tap.ok(OPERATOR not in out and VIEWER not in out, "no token in the server's output")
    tap.like(out, "triggered by FLOWRUN_TOKEN", "who triggered, by name")


@tap.test
def tls():
    cert, key = os.path.join(TMP, "cert.pem"), os.path.join(TMP, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    s = Server("--tls-cert", cert, "--tls-key", key)
    try:
        tap.ok(s.url.startswith("https://"), "https")
        ctx = ssl.create_default_context(cafile=cert)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                tap.eq(t.selected_alpn_protocol(), "h2", "HTTP/2 offered by ALPN")
        c = http.client.HTTPSConnection("127.0.0.1", s.port, context=ssl.create_default_context(cafile=cert),
                                        timeout=10)
        c.request("POST", "/login", json.dumps({"token": OPERATOR}), {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        tap.eq(r.status, 200, "login over TLS")
        tap.like(r.getheader("set-cookie") or "", "Secure", "the session cookie is Secure")
        tap.like(r.getheader("strict-transport-security") or "", "max-age=", "HSTS")
        c.close()
        r = cli("runs", "--server", s.url, token=OPERATOR)
        tap.ok(r.returncode != 0, "an untrusted certificate is refused by the command line (%d)" % r.returncode)
    finally:
        s.stop()


shutil.rmtree(TMP, ignore_errors=True)
tap.done()
