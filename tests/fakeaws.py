#!/usr/bin/env python3
"""fakeaws — a small fault-injecting AWS endpoint for the AWS client's tests (what moto cannot
do): scripted answers (500s, throttling codes, connection resets, slow answers, truncated
bodies, huge bodies), the EC2 instance metadata (IMDSv2) and container credential endpoints, a
tiny STS (AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity naming the key that signed
the call), MWAA CreateCliToken, and a record of every request with its SigV4 signature checked
by botocore (an independent signer).

    python3 tests/fakeaws.py --port PORT

Control (JSON bodies):
    POST /_fake/reset                     forget the script and the records
    POST /_fake/script {"responses": [...], "secrets": {"AKID": "secret"}, "imds": {...},
                        "container_token": "..."}
        each response: {"status", "headers", "body", "delay", "reset", "truncate", "size",
                        "repeat"}; served in order to the next AWS requests (not to /_fake or
                        the credential endpoints); "repeat": n serves it n times.
    GET  /_fake/requests                  the records: method, path, query, headers, body,
                                          sig ("ok", "bad", "unsigned", "unknown-key"), t
"""
import argparse
import base64
import json
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

LOCK = threading.Lock()
STATE = {}
DEFAULT_SECRETS = {
    "AKIDTEST": "TESTSECRETKEY/abc+def",
    "AKIDSOURCE": "SOURCESECRET/xyz",
    "ASIAASSUMED": "ASSUMEDSECRET/123",
    "ASIAWEBID": "WEBIDSECRET/456",
    "ASIAIMDS1": "IMDSSECRET1/aaa",
    "ASIAIMDS2": "IMDSSECRET2/bbb",
    "ASIACONTAINER": "CONTAINERSECRET/ccc",
    "AKIDPROCESS": "PROCESSSECRET/ddd",
    "AKIDSIM": "sim",
}


def reset():
    STATE.clear()
    STATE.update(responses=[], records=[], secrets=dict(DEFAULT_SECRETS), imds_calls=0,
                 imds={"role": "test-role", "expiration_s": 3600}, container_token="ctoken-1")


reset()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def check_signature(method, raw_path, headers, body):
    auth = headers.get("authorization")
    if not auth:
        return "unsigned"
    try:
        cred = auth.split("Credential=")[1].split(",")[0]
        akid, date, region, service, _ = cred.split("/")
        signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        got = auth.split("Signature=")[1].strip()
    except Exception:
        return "bad"
    secret = STATE["secrets"].get(akid)
    if secret is None:
        return "unknown-key"
    token = headers.get("x-amz-security-token")
    creds = Credentials(akid, secret, token)
    host = headers.get("host")
    url = "http://" + host + raw_path
    sub = {h: headers[h] for h in signed if h in headers}
    req = AWSRequest(method=method, url=url, data=body, headers=sub)
    if service == "s3":
        signer = S3SigV4Auth(creds, service, region)
    else:
        signer = SigV4Auth(creds, service, region)
    req.context["timestamp"] = headers.get("x-amz-date")
    try:
        # botocore's own canonicalisation, over exactly the headers the client signed
        cr = signer.canonical_request(req)
        sts = signer.string_to_sign(req, cr)
        want = signer.signature(sts, req)
    except Exception as e:  # noqa
        return "bad: " + str(e)
    return "ok" if want == got else "bad"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body=b"", headers=None, truncate=False):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        hs = {"Content-Type": "application/json", "x-amzn-RequestId": "fake-req-%d" % len(STATE["records"])}
        hs.update(headers or {})
        for k, v in hs.items():
            self.send_header(k, v)
        if truncate:
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset_connection(self):
        # RST instead of FIN: SO_LINGER with a zero timeout
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def handle_one(self):
        body = self._body()
        parsed = urllib.parse.urlsplit(self.path)
        path, query = parsed.path, parsed.query
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        if path.startswith("/_fake/"):
            return self.control(path, body)
        if path.startswith("/latest/"):
            return self.imds(path, headers)
        if path.startswith("/container/"):
            return self.container(headers)
        with LOCK:
            sig = check_signature(self.command, self.path, headers, body)
            rec = {"method": self.command, "path": path, "query": query, "headers": headers,
                   "body": body.decode("utf-8", "replace"), "sig": sig, "t": time.monotonic(),
                   "peer": self.client_address[1], "target": self.path}
            STATE["records"].append(rec)
            scripted = None
            if STATE["responses"]:
                scripted = STATE["responses"][0]
                scripted["repeat"] = scripted.get("repeat", 1) - 1
                if scripted["repeat"] <= 0:
                    STATE["responses"].pop(0)
        if scripted is not None:
            if scripted.get("delay"):
                time.sleep(scripted["delay"])
            if scripted.get("reset"):
                return self._reset_connection()
            b = scripted.get("body", "")
            if scripted.get("size"):
                b = scripted.get("body_prefix", "") + ("x" * scripted["size"]) + scripted.get("body_suffix", "")
            return self._send(scripted.get("status", 200), b, scripted.get("headers"),
                              truncate=scripted.get("truncate", False))
        return self.default(path, headers, body, rec)

    def default(self, path, headers, body, rec):
        auth = headers.get("authorization", "")
        akid = auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else None
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(urllib.parse.parse_qsl(body.decode()))
            action = form.get("Action")
            ns = 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"'
            if action == "GetCallerIdentity":
                x = ('<GetCallerIdentityResponse %s><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/%s</Arn>'
                     '<UserId>%s</UserId><Account>123456789012</Account></GetCallerIdentityResult>'
                     '<ResponseMetadata><RequestId>sts-req-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>') % (ns, akid, akid)
                return self._send(200, x, {"Content-Type": "text/xml"})
            if action in ("AssumeRole", "AssumeRoleWithWebIdentity"):
                key = "ASIAASSUMED" if action == "AssumeRole" else "ASIAWEBID"
                if action == "AssumeRoleWithWebIdentity" and not form.get("WebIdentityToken"):
                    return self._send(400, "<ErrorResponse><Error><Code>MissingParameter</Code><Message>no token</Message></Error></ErrorResponse>", {"Content-Type": "text/xml"})
                x = ('<{a}Response {ns}><{a}Result><Credentials><AccessKeyId>{k}</AccessKeyId>'
                     '<SecretAccessKey>{s}</SecretAccessKey><SessionToken>TOKEN-{k}</SessionToken>'
                     '<Expiration>{e}</Expiration></Credentials><AssumedRoleUser><Arn>{r}</Arn>'
                     '<AssumedRoleId>AROA:{n}</AssumedRoleId></AssumedRoleUser></{a}Result>'
                     '<ResponseMetadata><RequestId>sts-req-2</RequestId></ResponseMetadata></{a}Response>').format(
                    a=action, ns=ns, k=key, s=STATE["secrets"][key], e=iso(time.time() + 3600),
                    r=form.get("RoleArn", ""), n=form.get("RoleSessionName", ""))
                return self._send(200, x, {"Content-Type": "text/xml"})
            return self._send(400, "<ErrorResponse><Error><Code>InvalidAction</Code><Message>unknown</Message></Error></ErrorResponse>", {"Content-Type": "text/xml"})
        if path.startswith("/clitoken/"):
            return self._send(200, json.dumps({"CliToken": "cli-token-SECRET", "WebServerHostname": "web.example"}))
        if "x-amz-target" in headers:
            return self._send(200, json.dumps({"Target": headers["x-amz-target"], "Signer": akid}))
        # S3-ish: echo as XML
        return self._send(200, "", {"Content-Type": "application/xml", "x-amz-request-id": "s3-req"})

    def control(self, path, body):
        if path == "/_fake/reset":
            with LOCK:
                reset()
            return self._send(200, "{}")
        if path == "/_fake/script":
            spec = json.loads(body or b"{}")
            with LOCK:
                STATE["responses"].extend(spec.get("responses", []))
                STATE["secrets"].update(spec.get("secrets", {}))
                STATE["imds"].update(spec.get("imds", {}))
                if "container_token" in spec:
                    STATE["container_token"] = spec["container_token"]
            return self._send(200, "{}")
        if path == "/_fake/requests":
            with LOCK:
                return self._send(200, json.dumps({"requests": STATE["records"],
                                                   "imds_calls": STATE["imds_calls"]}))
        return self._send(404, "{}")

    def imds(self, path, headers):
        with LOCK:
            STATE["imds_calls"] += 1
            cfg = dict(STATE["imds"])
            n = STATE["imds_calls"]
        if path == "/latest/api/token":
            if self.command != "PUT" or "x-aws-ec2-metadata-token-ttl-seconds" not in headers:
                return self._send(400, "bad token request")
            return self._send(200, "imds-session-token", {"Content-Type": "text/plain"})
        if headers.get("x-aws-ec2-metadata-token") != "imds-session-token":
            return self._send(401, "no token")
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            return self._send(200, cfg["role"], {"Content-Type": "text/plain"})
        if path == base + cfg["role"]:
            # alternate keys so a refresh is visible
            key = "ASIAIMDS1" if (n // 3) % 2 == 1 else "ASIAIMDS2"
            return self._send(200, json.dumps({
                "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": key,
                "SecretAccessKey": STATE["secrets"][key], "Token": "TOKEN-" + key,
                "Expiration": iso(time.time() + cfg["expiration_s"])}))
        return self._send(404, "not found")

    def container(self, headers):
        if headers.get("authorization") != STATE["container_token"]:
            return self._send(401, json.dumps({"message": "bad token"}))
        return self._send(200, json.dumps({
            "AccessKeyId": "ASIACONTAINER", "SecretAccessKey": STATE["secrets"]["ASIACONTAINER"],
            "Token": "TOKEN-ASIACONTAINER", "Expiration": iso(time.time() + 3600)}))

    def do_GET(self):
        self.handle_one()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    class Server(ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    srv = Server((a.host, a.port), Handler)
    print("fakeaws listening on %s:%d" % (a.host, a.port), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
