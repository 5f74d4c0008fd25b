-- httpd against clients that misbehave, driven from python3 raw sockets run with flow.exec
-- (so the server keeps serving while they run): a client that vanishes mid-stream, one that
-- stops reading, a slowloris, 200 idle connections, max_connections. Every writer that loses
-- its client gets http.closed and nothing is left behind (t.done).
local t = require "tap"
local flow = require "flow"
local http = require "http"
local httpd = require "httpd"
local json = require "json"

-- Runs a python3 client (code gets the port as sys.argv[1]); returns what it printed (JSON).
local function client(code, port, timeout, ...)
  local r = flow.exec({ "python3", "-c", code, tostring(port), ... }, { timeout = timeout or 60 })
  if r.status ~= 0 then error("python client failed (" .. tostring(r.status) .. "): " .. r.stderr, 0) end
  return json.decode(r.stdout)
end

local function serve(opts, handler)
  local srv = httpd.listen(opts)
  local task = flow.spawn(function() srv:serve(handler) end)
  return srv, task
end

local function wait_for(cond, timeout, what)
  local deadline = flow.now() + timeout
  while not cond() do
    if flow.now() > deadline then error("timed out waiting for " .. what, 0) end
    flow.sleep(0.02)
  end
end

local PY_PRELUDE = [[
import json, socket, sys, time, select
port = int(sys.argv[1])
def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
def get(s, path):
    s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode())
def closed_within(s, seconds):
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([s], [], [], max(0, end - time.time()))
        if r:
            try:
                if s.recv(65536) == b"":
                    return True
            except ConnectionResetError:
                return True
    return False
]]

t.test("a client that disconnects mid-stream: the writer gets http.closed", function()
  local outcome
  local srv, task = serve(nil, function(req)
    req:start(200, { ["content-type"] = "text/event-stream" })
    local chunk, n = ("x"):rep(4096), 0
    local ok, err = pcall(function()
      while true do
        req:write(chunk)
        n = n + 1
        flow.sleep(0.002)
      end
    end)
    outcome = { ok = ok, err = err, n = n }
  end)
  local got = client(PY_PRELUDE .. [[
s = conn()
get(s, "/stream")
got = 0
while got < 20000:
    got += len(s.recv(65536))
s.close()
print(json.dumps({"got": got}))
]], srv.port)
  t.ok(got.got >= 20000, "the client read part of the stream, then hung up")
  wait_for(function() return outcome end, 10, "the writer")
  t.eq(outcome.ok, false, "the writer's loop ended by an error")
  t.eq(type(outcome.err) == "table" and outcome.err.code, "http.closed", "http.closed")
  t.like(tostring(outcome.err), "client closed the connection", "saying the client went away")
  wait_for(function() return srv:stats().connections == 0 end, 5, "the connection to close")
  t.eq(srv:stats(), { connections = 0, requests = 0, queued = 0, state = "open" }, "nothing held for it")
  srv:close()
  task:wait()
end)

t.test("a client that stops reading: write waits (back-pressure), then idle_timeout cuts it", function()
  local outcome, written, t0 = nil, 0, nil
  local srv, task = serve({ limits = { idle_timeout = 1 } }, function(req)
    req:start(200)
    t0 = flow.now()
    local chunk = ("y"):rep(256 * 1024)
    local ok, err = pcall(function()
      while true do
        req:write(chunk)
        written = written + #chunk
      end
    end)
    outcome = { ok = ok, err = err, took = flow.now() - t0 }
  end)
  local client_task = flow.spawn(client, PY_PRELUDE .. [[
s = conn()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
get(s, "/never-read")
time.sleep(6)
print(json.dumps({}))
]], srv.port)
  wait_for(function() return outcome end, 15, "the writer")
  t.eq(type(outcome.err) == "table" and outcome.err.code, "http.closed", "the writer got http.closed")
  t.like(tostring(outcome.err), "stopped reading", "saying the client stopped reading")
  t.ok(outcome.took >= 0.9 and outcome.took < 5, ("after idle_timeout without progress (%.1f s)"):format(outcome.took))
  t.ok(written < 64 * 1024 * 1024, ("write waited instead of buffering (%d MiB handed over)"):format(written >> 20))
  wait_for(function() return srv:stats().connections == 0 end, 5, "the connection to close")
  t.eq(srv:stats().requests, 0, "nothing held for it")
  client_task:wait()
  srv:close()
  task:wait()
end)

t.test("slowloris: cut at header_timeout while other clients are served", function()
  local srv, task = serve({ limits = { header_timeout = 2 } }, function(req) req:respond(200, nil, "fast") end)
  local loris = flow.spawn(client, PY_PRELUDE .. [[
s = conn()
start = time.time()
sent = 0
for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 20:
    try:
        s.send(bytes([b]))
    except (BrokenPipeError, ConnectionResetError):
        break
    sent += 1
    if closed_within(s, 1.0):
        break
print(json.dumps({"closed_after": time.time() - start, "sent": sent}))
]], srv.port)
  local worst, n = 0, 0
  while not loris:done() do
    local t0 = flow.now()
    local r = assert(http.request { url = ("http://127.0.0.1:%d/other"):format(srv.port), timeout = 5 })
    assert(r.status == 200 and r.body == "fast")
    worst = math.max(worst, flow.now() - t0)
    n = n + 1
    flow.sleep(0.2)
  end
  local got = loris:wait()
  t.ok(got.closed_after >= 1.8 and got.closed_after < 4.5,
    ("the slow client was cut after %.1f s (%d bytes, one a second)"):format(got.closed_after, got.sent))
  t.ok(n >= 5, ("meanwhile %d other requests were served"):format(n))
  t.ok(worst < 1, ("each within a second (worst %.3f s)"):format(worst))
  srv:close()
  task:wait()
end)

t.test("200 idle connections do not slow down the others", function()
  local srv, task = serve(nil, function(req) req:respond(200, nil, "ok") end)
  local idle = flow.spawn(client, PY_PRELUDE .. [[
socks = []
for i in range(200):
    s = conn()
    if i % 2 == 0:                 # half of them after one request (keep-alive), half silent
        get(s, "/first")
        buf = b""
        while not buf.endswith(b"ok"):
            buf += s.recv(4096)
    socks.append(s)
time.sleep(3)
alive = sum(1 for s in socks if not closed_within(s, 0))
for s in socks:
    s.close()
print(json.dumps({"held": len(socks), "alive": alive}))
]], srv.port)
  wait_for(function() return srv:stats().connections >= 200 end, 20, "200 connections")
  local worst = 0
  for _ = 1, 30 do
    local t0 = flow.now()
    local r = assert(http.request { url = ("http://127.0.0.1:%d/busy"):format(srv.port) })
    assert(r.status == 200)
    worst = math.max(worst, flow.now() - t0)
  end
  t.ok(srv:stats().connections >= 200, ("%d connections open on the server"):format(srv:stats().connections))
  t.ok(worst < 0.5, ("30 requests on another connection, each within 0.5 s (worst %.3f s)"):format(worst))
  local got = idle:wait()
  t.eq({ got.held, got.alive }, { 200, 200 }, "the idle connections were all kept (idle_timeout 60 s)")
  wait_for(function() return srv:stats().connections <= 1 end, 10, "the idle connections to close")
  t.ok(true, "closed on the server once the client closed them")
  srv:close()
  task:wait()
end)

t.test("max_connections: the next connection waits until one closes", function()
  local srv, task = serve({ limits = { max_connections = 3 } }, function(req) req:respond(200, nil, "ok") end)
  local got = client(PY_PRELUDE .. [[
def answer(s, seconds):
    r, _, _ = select.select([s], [], [], seconds)
    return s.recv(4096).decode(errors="replace") if r else None
first = []
held = [conn() for _ in range(3)]
for s in held:
    get(s, "/held")
    first.append(answer(s, 5))
extra = conn()                      # the kernel completes the handshake; the server does not accept
get(extra, "/extra")
blocked = answer(extra, 1.0) is None
held[0].close()
start = time.time()
late = answer(extra, 5)
print(json.dumps({"first": [a is not None and a.startswith("HTTP/1.1 200") for a in first],
                  "blocked": blocked, "late": late and late.split("\r\n")[0],
                  "late_after": time.time() - start}))
]], srv.port)
  t.eq(got.first, { true, true, true }, "three connections served")
  t.ok(got.blocked, "a fourth one got no answer while three were open")
  t.eq(got.late, "HTTP/1.1 200 OK", "once one closed, the fourth was served")
  t.ok(got.late_after < 2, ("at once (%.3f s)"):format(got.late_after))
  wait_for(function() return srv:stats().connections == 0 end, 5, "the connections to close")
  srv:close()
  task:wait()
end)

t.test("TLS clients that reset right after the handshake leave nothing open", function()
  -- H2O 2.2 waits forever for a write libuv refused after the reset; the server completes it
  -- as failed (see rescue in runtime/httpd.c), so these connections close and close() returns
  local dir = os.getenv("FLOWRUN_TEST_TMP") or "/tmp"
  local cert, key = dir .. "/httpd_clients_cert.pem", dir .. "/httpd_clients_key.pem"
  assert(flow.exec({ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1" }).status == 0)
  local srv, task = serve({ tls = { cert = cert, key = key } }, function(req) req:respond(200, nil, "ok") end)
  local got = client(PY_PRELUDE .. [[
import ssl, struct
n = 0
for i in range(20):
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    ctx.set_alpn_protocols(["h2", "http/1.1"] if i % 2 == 0 else ["http/1.1"])
    ts = ctx.wrap_socket(conn(), server_hostname="127.0.0.1")
    ts.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
    ts.close()
    n += 1
print(json.dumps({"n": n}))
]], srv.port, 60, cert)
  t.eq(got.n, 20, "20 TLS clients (HTTP/2 and HTTP/1.1) handshook and reset")
  local t0 = flow.now()
  wait_for(function() return srv:stats().connections == 0 end, 8, "the reset connections to close")
  t.ok(true, ("all closed on the server (%.1f s)"):format(flow.now() - t0))
  t0 = flow.now()
  srv:close { grace = 1 }
  t.ok(flow.now() - t0 < 2, "close returns at once")
  task:wait()
  os.remove(cert)
  os.remove(key)
end)

t.done()
