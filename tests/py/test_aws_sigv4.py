"""flowrun's SigV4 signer (module aws.sigv4) against botocore's on generated requests: random
methods, paths (spaces, unicode, reserved characters), canonical queries with repeated keys,
headers with runs of spaces, bodies, session tokens, regions and services. Both must give the
same signature for every request."""
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

rnd = random.Random(20260101)
ALPHA = "abcXYZ019-_.~ /+=&%?#!*'()ü€ሴ"


def rstr(n):
    return "".join(rnd.choice(ALPHA) for _ in range(rnd.randint(1, n)))


def quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def gen(i):
    method = rnd.choice(["GET", "POST", "PUT", "DELETE", "HEAD"])
    # no "." or ".." segments: botocore keeps "/a/." as "/a", RFC 3986 (and the AWS suite,
    # and curl on the wire) make it "/a/"
    segs = [s for s in (quote(rstr(8)) for _ in range(rnd.randint(0, 3))) if s.strip(".")]
    path = "/" + "/".join(segs)
    q = []
    for _ in range(rnd.randint(0, 4)):
        k = quote(rstr(5))
        q.append((k, quote(rstr(6)) if rnd.random() < 0.8 else ""))
        if rnd.random() < 0.2:
            q.append((k, quote(rstr(3))))  # a repeated key
    query = "&".join("%s=%s" % kv for kv in q)
    headers = {"Host": "svc%d.example.amazonaws.com" % i,
               "X-Amz-Meta-%s" % rnd.choice(["A", "bb", "Cc"]): "  v  %s   w " % rnd.randint(0, 99),
               "Content-Type": rnd.choice(["application/json", "text/plain; charset=utf-8"])}
    body = rstr(40) if method in ("POST", "PUT") else ""
    token = "tok/" + rstr(20) if rnd.random() < 0.5 else None
    return {
        "method": method, "path": path, "query": query, "headers": headers, "body": body,
        "region": rnd.choice(["us-east-1", "eu-west-3", "ap-southeast-2"]),
        "service": rnd.choice(["dms", "glue", "elasticmapreduce", "secretsmanager"]),
        "access_key": "AKID%d" % i, "secret_key": "secret/%d+%s" % (i, rstr(10)), "token": token,
        "date": "20260115T%02d%02d%02dZ" % (rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59)),
    }


def botocore_sig(c):
    creds = Credentials(c["access_key"], c["secret_key"], c["token"])
    auth = SigV4Auth(creds, c["service"], c["region"])
    url = "http://" + c["headers"]["Host"] + c["path"] + ("?" + c["query"] if c["query"] else "")
    headers = dict(c["headers"])
    headers["X-Amz-Date"] = c["date"]
    if c["token"]:
        headers["X-Amz-Security-Token"] = c["token"]
    req = AWSRequest(method=c["method"], url=url, data=c["body"].encode(), headers=headers)
    req.context["timestamp"] = c["date"]
    cr = auth.canonical_request(req)
    return auth.signature(auth.string_to_sign(req, cr), req)


LUA = r'''
local json = require "json"
local sigv4 = require "aws.sigv4"
local f = assert(io.open(arg[1] or os.getenv("CASES")))
local cases = json.decode(f:read("a"))
f:close()
local out = {}
for i, c in ipairs(cases) do
  local s = sigv4.new{access_key = c.access_key, secret_key = c.secret_key,
                      token = c.token ~= json.null and c.token or nil}
  local h = {}
  for k, v in pairs(c.headers) do h[k] = v end
  out[i] = s:sign{method = c.method, path = c.path, query = c.query, headers = h, body = c.body,
                  region = c.region, service = c.service, date = c.date}
end
print(json.encode(out))
'''


@tap.test
def generated_requests():
    cases = [gen(i) for i in range(300)]
    want = [botocore_sig(c) for c in cases]
    with tempfile.TemporaryDirectory() as d:
        cf = os.path.join(d, "cases.json")
        with open(cf, "w") as f:
            json.dump(cases, f)
        lf = os.path.join(d, "sign.lua")
        with open(lf, "w") as f:
            f.write(LUA)
        env = dict(os.environ, CASES=cf)
        p = subprocess.run([tap.FLOWRUN, lf], capture_output=True, text=True, env=env, timeout=60)
        tap.eq(p.returncode, 0, "flowrun signed the generated requests")
        if p.returncode != 0:
            tap.diag(p.stderr)
            return
        got = json.loads(p.stdout)
    bad = [i for i in range(len(cases)) if got[i] != want[i]]
    tap.eq(len(got), 300, "300 signatures")
    tap.ok(not bad, "all 300 match botocore's signer (%d differ)" % len(bad))
    for i in bad[:3]:
        tap.diag(json.dumps(cases[i]))


LUA_PRESIGN = r'''
local json = require "json"
local sigv4 = require "aws.sigv4"
local f = assert(io.open(os.getenv("CASES")))
local cases = json.decode(f:read("a"))
f:close()
local out = {}
for i, c in ipairs(cases) do
  local s = sigv4.new{access_key = c.access_key, secret_key = c.secret_key,
                      token = c.token ~= json.null and c.token or nil}
  local _, info = s:sign{method = "GET", path = c.path, query = "", headers = {Host = c.host},
    payload_hash = "UNSIGNED-PAYLOAD", region = c.region, service = "s3", normalize = false,
    date = c.date, presign = c.expires}
  out[i] = info.query
end
print(json.encode(out))
'''


@tap.test
def presigned_s3_urls():
    import datetime as dt
    import botocore.auth as ba
    from botocore.auth import S3SigV4QueryAuth

    class Fixed(dt.datetime):
        @classmethod
        def utcnow(cls):
            return cls(2026, 1, 15, 12, 0, 0)

        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 15, 12, 0, 0, tzinfo=tz)

    ba.datetime.datetime = Fixed
    cases, want = [], []
    for i in range(60):
        key = "/".join(quote(rstr(10)) for _ in range(rnd.randint(1, 3)))
        c = {"path": "/bucket-%d/%s" % (i, key), "host": "s3.eu-west-1.amazonaws.com",
             "region": "eu-west-1", "access_key": "AKIDP%d" % i, "secret_key": "s/%d+%s" % (i, rstr(8)),
             "token": ("tok/" + rstr(12)) if i % 2 else None, "expires": rnd.randint(1, 604800),
             "date": "20260115T120000Z"}
        cases.append(c)
        auth = S3SigV4QueryAuth(Credentials(c["access_key"], c["secret_key"], c["token"]), "s3",
                                c["region"], expires=c["expires"])
        req = AWSRequest(method="GET", url="https://" + c["host"] + c["path"])
        auth.add_auth(req)
        q = urllib.parse.urlsplit(req.url).query
        want.append(dict(urllib.parse.parse_qsl(q))["X-Amz-Signature"])
    with tempfile.TemporaryDirectory() as d:
        cf = os.path.join(d, "cases.json")
        with open(cf, "w") as f:
            json.dump(cases, f)
        lf = os.path.join(d, "presign.lua")
        with open(lf, "w") as f:
            f.write(LUA_PRESIGN)
        p = subprocess.run([tap.FLOWRUN, lf], capture_output=True, text=True,
                           env=dict(os.environ, CASES=cf), timeout=60)
        tap.eq(p.returncode, 0, "flowrun presigned the generated S3 requests")
        if p.returncode != 0:
            tap.diag(p.stderr)
            return
        got = [dict(urllib.parse.parse_qsl(q))["X-Amz-Signature"] for q in json.loads(p.stdout)]
    bad = [i for i in range(len(cases)) if got[i] != want[i]]
    tap.ok(not bad, "all 60 presigned S3 URLs carry botocore's signature (%d differ)" % len(bad))
    for i in bad[:3]:
        tap.diag(json.dumps(cases[i]))


tap.done()
