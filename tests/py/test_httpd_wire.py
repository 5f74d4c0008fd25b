"""httpd on the wire: a flowrun script serving HTTP, driven by python3's http.client, raw sockets
and ssl: keep-alive, a chunked stream read while it is being written, the limits as the
protocol shows them (431, 413, a cut connection), 100-continue, pipelining, HTTP/1.0, garbage,
TLS (HTTP/1.1 and HTTP/2 by ALPN), and SIGTERM with clients still connected."""
import http.client
import json
import os
import shutil
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tap  # noqa: E402

tmp = tempfile.mkdtemp(prefix="flowrun-httpd-")
cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
               check=True, capture_output=True)

SERVER = r"""
local flow, httpd, json = require "flow", require "httpd", require "json"
local limits = { header_bytes = 4096, body_bytes = 4096 }
local plain = httpd.listen { limits = limits }
local tls = httpd.listen { limits = limits, tls = { cert = arg[1], key = arg[2] } }
local go = false
local function handler(req)
  if req.path == "/stream" then
    req:start(200, { ["content-type"] = "text/plain" })
    req:write("first\n")
    while not go do flow.sleep(0.01) end
    go = false
    req:write("second\n")
    req:finish()
  elseif req.path == "/go" then
    go = true
    req:respond(204)
  elseif req.path == "/forever" then
    req:start(200)
    while true do req:write("tick\n"); flow.sleep(0.05) end
  else
    req:respond(200, { ["content-type"] = "application/json" }, json.encode {
      method = req.method, path = req.path, query = req.query or json.null, body = req.body,
      headers = req.headers, version = req.version, remote = req.remote })
  end
end
print(json.encode { plain = plain.port, tls = tls.port })
io.stdout:flush()
flow.all { flow.spawn(plain.serve, plain, handler), flow.spawn(tls.serve, tls, handler) }
"""
script = os.path.join(tmp, "server.lua")
with open(script, "w") as f:
    f.write(SERVER)


def start():
    p = subprocess.Popen([tap.FLOWRUN, script, cert, key], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    ports = json.loads(p.stdout.readline())
    return p, ports["plain"], ports["tls"]


proc, PORT, TLS_PORT = start()


def raw(data, read_until_close=True, timeout=5):
    """Sends bytes on a new connection; returns what came back until the server closed it."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if not read_until_close:
                break
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out


@tap.test
def keep_alive_with_http_client():
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    remotes, socks = [], []
    for i in range(3):
        c.request("POST", "/echo?i=%d" % i, body=b"body %d" % i, headers={"X-Case": "MiXeD"})
        r = c.getresponse()
        got = json.loads(r.read())
        tap.eq((r.status, got["query"], got["body"], got["headers"]["x-case"]), (200, "i=%d" % i, "body %d" % i, "MiXeD"),
               "request %d answered" % i)
        remotes.append(got["remote"])
        socks.append(c.sock)
    tap.ok(len(set(remotes)) == 1 and socks[0] is socks[2], "one connection for all three (keep-alive)")
    c.request("HEAD", "/echo")
    r = c.getresponse()
    tap.eq((r.status, r.read()), (200, b""), "HEAD: headers only")
    c.close()


@tap.test
def chunked_stream_read_while_written():
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    c.request("GET", "/stream")
    r = c.getresponse()
    tap.eq((r.status, r.getheader("transfer-encoding")), (200, "chunked"), "a chunked response")
    tap.eq(r.readline(), b"first\n", "the first chunk arrives before the handler writes the second")
    g = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    g.request("GET", "/go")
    tap.eq(g.getresponse().status, 204, "told the handler to go on (another connection)")
    tap.eq(r.read(), b"second\n", "then the rest, and the end of the stream")
    c.request("GET", "/echo")
    tap.eq(c.getresponse().status, 200, "the connection is reused after the stream")
    c.close()
    g.close()


@tap.test
def limits_on_the_wire():
    out = raw(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    tap.like(out.decode(errors="replace"), "HTTP/1.1 431 Request Header Fields Too Large", "headers over header_bytes: 431")
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Endless: " + b"a" * 6000)
    t0 = time.time()
    r, _, _ = select.select([s], [], [], 5)
    try:
        cut = bool(r) and s.recv(100) == b""
    except ConnectionResetError:
        cut = True
    tap.ok(cut and time.time() - t0 < 4, "unfinished headers past header_bytes: the connection is cut")
    s.close()
    out = raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
    tap.like(out.decode(errors="replace"), "HTTP/1.1 413", "Content-Length of 100 MB: 413 before any body")
    out = raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6000\r\n\r\n" + b"b" * 6000)
    tap.like(out.decode(errors="replace"), "HTTP/1.1 413 Content Too Large", "a 6000-byte body over body_bytes: 413")
    body = b"".join(b"%x\r\n%s\r\n" % (1500, b"c" * 1500) for _ in range(4)) + b"0\r\n\r\n"
    out = raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    tap.like(out.decode(errors="replace"), "HTTP/1.1 413", "the same in chunks: 413")
    body = b"".join(b"%x\r\n%s\r\n" % (1000, b"d" * 1000) for _ in range(3)) + b"0\r\n\r\n"
    out = raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
    got = json.loads(out.split(b"\r\n\r\n", 1)[1])
    tap.eq(got["body"], "d" * 3000, "3000 bytes in chunks: read whole")


@tap.test
def protocol_details():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    tap.eq(s.recv(100), b"HTTP/1.1 100 Continue\r\n\r\n", "Expect: 100-continue is answered 100 first")
    s.sendall(b"hello")
    resp = b""
    while b"hello" not in resp:
        resp += s.recv(65536)
    tap.like(resp.decode(), "HTTP/1.1 200 OK", "then the request is served")
    s.close()
    out = raw(b"GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    parts = out.decode().split("HTTP/1.1 200 OK")
    tap.eq(len(parts), 3, "two pipelined requests, two responses")
    tap.ok('"n=1"' in parts[1] and '"n=2"' in parts[2], "in order")
    out = raw(b"GET /echo HTTP/1.0\r\n\r\n")
    text = out.decode()
    tap.like(text, "Connection: close", "HTTP/1.0: the server closes after the response")
    tap.eq(json.loads(text.split("\r\n\r\n", 1)[1])["version"], "1.0", "the handler sees version 1.0")
    out = raw(b"\x16\x03\x01 this is not http\r\n\r\n")
    tap.like(out.decode(errors="replace"), "HTTP/1.1 400 Bad Request", "garbage: 400")


@tap.test
def tls_http1_and_http2():
    ctx = ssl.create_default_context(cafile=cert)
    c = http.client.HTTPSConnection("127.0.0.1", TLS_PORT, context=ctx, timeout=5)
    c.request("GET", "/echo?secure=1")
    r = c.getresponse()
    got = json.loads(r.read())
    tap.eq((r.status, got["query"], got["version"]), (200, "secure=1", "1.1"), "HTTPS with http.client (HTTP/1.1)")
    c.close()
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as ts:
            tap.eq(ts.selected_alpn_protocol(), "h2", "ALPN offers HTTP/2")
    bad = ssl.create_default_context()  # the system store does not know the self-signed certificate
    try:
        with socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5) as s:
            bad.wrap_socket(s, server_hostname="127.0.0.1")
        tap.ok(False, "an untrusted certificate is refused by the client")
    except ssl.SSLCertVerificationError:
        tap.ok(True, "an untrusted certificate is refused by the client")


@tap.test
def sigterm_with_clients_connected():
    idle = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
    idle.request("GET", "/echo")
    idle.getresponse().read()
    stream = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    stream.sendall(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
    tap.like(stream.recv(4096).decode(), "HTTP/1.1 200", "a stream is flowing")
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    tap.eq(rc, 143, "SIGTERM: the server exits 143 (%.2f s)" % (time.time() - t0))
    stream.settimeout(5)
    rest = b""
    try:
        while True:
            b = stream.recv(65536)
            if not b:
                break
            rest += b
        ended = True
    except (ConnectionResetError, socket.timeout) as e:
        ended = not isinstance(e, socket.timeout)
    tap.ok(ended, "the streaming client saw its connection end")
    idle.sock.settimeout(5)
    try:
        tap.eq(idle.sock.recv(10), b"", "the idle keep-alive connection was closed")
    except ConnectionResetError:
        tap.ok(True, "the idle keep-alive connection was closed")
    err = proc.stderr.read()
    tap.ok("warning" not in err and "Assertion" not in err, "nothing odd on stderr: %r" % err[-300:])


if proc.poll() is None:
    proc.kill()
shutil.rmtree(tmp, ignore_errors=True)
tap.done()
