"""The AWS client from the outside, as shell scripts use it: `flowrun -e` printing JSON, the
exit status and message of a failed call, `--debug aws` / FLOWRUN_DEBUG=aws output with every
secret redacted (grep for them), and TLS: a self-signed local HTTPS endpoint is refused unless
its CA is given (AWS_CA_BUNDLE or ca_file). Needs FLOWRUN_TEST_FAKEAWS."""
import http.server
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

FAKE = os.environ.get("FLOWRUN_TEST_FAKEAWS")
tap.ok(bool(FAKE), "FLOWRUN_TEST_FAKEAWS is set (tests/servers/fakeaws.sh)")
if not FAKE:
    tap.done()

SECRET = "TESTSECRETKEY/abc+def"
TOKEN = "SESSIONTOKEN-very-secret-0123456789"
SECRET_STRING = "TOPSECRET-db-password-42"


def control(path, body=None):
    req = urllib.request.Request(FAKE + path, data=json.dumps(body or {}).encode(), method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def base_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=FAKE, AWS_ACCESS_KEY_ID="AKIDTEST", AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", HOME="/nonexistent")
    env.pop("FLOWRUN_DEBUG", None)
    env.update(extra)
    return env


def run(args, env, timeout=60):
    return subprocess.run([tap.FLOWRUN] + args, capture_output=True, text=True, env=env,
                          timeout=timeout)


@tap.test
def e_prints_json():
    control("/_fake/reset")
    p = run(["-e", "return aws.sts.get_caller_identity()"], base_env())
    tap.eq(p.returncode, 0, "flowrun -e exits 0")
    try:
        v = json.loads(p.stdout)
    except ValueError:
        v = {}
        tap.diag(p.stdout + p.stderr)
    tap.eq(v.get("UserId"), "AKIDTEST", "prints the result as JSON")
    tap.eq(v.get("Account"), "123456789012", "with its fields")


@tap.test
def sim_from_the_command_line_or_the_environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLOWRUN_SIM"))}
    env.update(HOME="/nonexistent", AWS_EC2_METADATA_DISABLED="true")
    code = "return aws.sts.get_caller_identity().UserId"
    for args, extra, what in ((["--sim", "-e", code], {}, "--sim"),
                              (["-e", code], {"FLOWRUN_SIM": "1"}, "FLOWRUN_SIM=1")):
        p = run(args, dict(env, **extra))
        tap.eq(p.returncode, 0, what + ": no credentials, region or network needed " + p.stderr)
        tap.like(p.stdout, "AIDASIMULATEDUSER", what + ": the simulator answers")
    p = run(["-e", code], env)
    tap.ok(p.returncode != 0, "without either, the real credential chain runs (and finds nothing)")


@tap.test
def failed_call_exit_and_message():
    control("/_fake/reset")
    control("/_fake/script", {"responses": [{"status": 400, "body": json.dumps(
        {"__type": "ResourceNotFoundFault", "message": "Replication task could not be found."})}]})
    p = run(["-e", "return aws.dms.start_replication_task{ReplicationTaskArn='arn:x', "
             "StartReplicationTaskType='reload-target'}"], base_env())
    tap.ok(p.returncode != 0, "a failed call exits non-zero")
    tap.like(p.stderr, "aws.ResourceNotFoundFault", "stderr names the code")
    tap.like(p.stderr, "request id fake-req-1", "and the request id")
    tap.ok(SECRET not in p.stderr, "no secret in the error output")


def debug_run(flag_env, args_prefix):
    control("/_fake/reset")
    body = json.dumps({"ARN": "arn:s", "Name": "db", "SecretString": SECRET_STRING,
                       "VersionId": "v1"})
    control("/_fake/script", {"responses": [{"status": 200, "body": body}],
                              "secrets": {"ASIADEBUG": SECRET}})
    script = ("local aws = require 'aws'\n"
              "local r = aws.secretsmanager.get_secret_value{SecretId='db'}\n"
              "assert(r.SecretString == %r)\n"
              "local ok, e = pcall(aws.secretsmanager.get_secret_value, {SecretId='x', "
              "ClientRequestToken='%s'})\n"
              "print('done')\n") % (SECRET_STRING, "c" * 40)
    fd, path = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(script)
    env = base_env(AWS_ACCESS_KEY_ID="ASIADEBUG", AWS_SESSION_TOKEN=TOKEN, **flag_env)
    p = run(args_prefix + [path], env)
    os.remove(path)
    return p


@tap.test
def debug_output_is_redacted():
    for label, flag_env, prefix in (("FLOWRUN_DEBUG=aws", {"FLOWRUN_DEBUG": "aws"}, []),
                                    ("--debug aws", {}, ["--debug", "aws"])):
        p = debug_run(flag_env, prefix)
        out = p.stdout + p.stderr
        tap.eq(p.returncode, 0, label + ": script ran")
        tap.like(p.stderr, "> secretsmanager.get_secret_value POST " + FAKE, label + ": request line")
        tap.like(p.stderr, "< secretsmanager.get_secret_value 200", label + ": response line")
        tap.like(p.stderr, "X-Amz-Target: secretsmanager.GetSecretValue", label + ": headers shown")
        tap.like(p.stderr, "Credential=ASIADEBUG/", label + ": the access key id may show")
        for name, secret in (("secret key", SECRET), ("session token", TOKEN),
                             ("SecretString", SECRET_STRING)):
            tap.ok(secret not in out, "%s: the %s never appears" % (label, name))
        sig = [l for l in p.stderr.splitlines() if "Signature=" in l]
        tap.ok(sig and all("Signature=<redacted>" in l for l in sig), label + ": signatures masked")
        tap.ok("<redacted>" in p.stderr, label + ": masks are visible")


@tap.test
def proxy_from_environment():
    control("/_fake/reset")
    code = ("local r, e = require('http').request{url='http://proxied.invalid/p?q=1'}; "
            "return r and r.status or e.code")
    p = run(["-e", code], base_env(http_proxy=FAKE, HTTP_PROXY=FAKE, no_proxy="", NO_PROXY=""))
    tap.eq(p.stdout.strip(), "200", "http_proxy: the request goes through the proxy")
    recs = json.loads(urllib.request.urlopen(FAKE + "/_fake/requests", timeout=5).read())["requests"]
    tap.ok(recs and recs[-1]["target"] == "http://proxied.invalid/p?q=1",
           "the proxy saw the absolute URL")
    p = run(["-e", code], base_env(http_proxy=FAKE, HTTP_PROXY=FAKE, no_proxy="proxied.invalid",
                                   NO_PROXY="proxied.invalid"))
    tap.like(p.stdout, "http.connect", "no_proxy: direct (and the name does not resolve)")


def make_ca(d):
    def sh(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
       "ca.pem", "-days", "2", "-subj", "/CN=flowrun test CA")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
       "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")


class JsonHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        b = json.dumps({"ReplicationTasks": [{"ReplicationTaskIdentifier": "over-tls"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)


@tap.test
def tls_self_signed():
    with tempfile.TemporaryDirectory() as d:
        make_ca(d)
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JsonHandler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(d, "srv.pem"), os.path.join(d, "srv.key"))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = "https://localhost:%d" % srv.server_address[1]
        code = "return aws.dms.describe_replication_tasks{}.ReplicationTasks[1].ReplicationTaskIdentifier"
        p = run(["-e", code], base_env(AWS_ENDPOINT_URL=url))
        tap.ok(p.returncode != 0, "self-signed endpoint refused without its CA")
        tap.like(p.stderr, "http.tls", "with http.tls")
        p = run(["-e", code], base_env(AWS_ENDPOINT_URL=url,
                                       AWS_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt"))
        tap.like(p.stderr, "http.tls", "the system store does not hold it either")
        p = run(["-e", code], base_env(AWS_ENDPOINT_URL=url, AWS_CA_BUNDLE=os.path.join(d, "ca.pem")))
        tap.eq(p.returncode, 0, "accepted with AWS_CA_BUNDLE=its CA")
        tap.like(p.stdout, "over-tls", "and answered")
        p = run(["-e", "aws.configure{ca_file=%r}; %s" % (os.path.join(d, "ca.pem"), code)],
                base_env(AWS_ENDPOINT_URL=url))
        tap.eq(p.returncode, 0, "accepted with aws.configure{ca_file=}")
        p = run(["-e", "local r, e = require('http').request{url=%r, ca_file=%r}; return r and r.status or e.code"
                 % (url + "/", os.path.join(d, "ca.pem"))], base_env())
        tap.like(p.stdout, "501", "http.request{ca_file=} verifies against the given CA (the "
                 "server then answers 501 to a GET)")
        p = run(["-e", "local r, e = require('http').request{url=%r}; return e.code" % (url + "/")],
                base_env())
        tap.like(p.stdout, "http.tls", "http.request without it: http.tls")
        srv.shutdown()


tap.done()
