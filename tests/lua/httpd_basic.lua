-- httpd: requests and responses through the project's own client (require "http", libcurl),
-- on real sockets on 127.0.0.1: methods, query, headers, bodies, keep-alive, large bodies,
-- streaming, limits (413, 431), unanswered requests, misuse, listen errors, graceful close, TLS.
local t = require "tap"
local flow = require "flow"
local http = require "http"
local httpd = require "httpd"
local json = require "json"

-- A server running handler for each request; returns it, its base URL and the accept task.
local function serve(opts, handler)
  local srv = httpd.listen(opts)
  local task = flow.spawn(function() srv:serve(handler) end)
  return srv, ("http://127.0.0.1:%d"):format(srv.port), task
end

local function stop(srv, task)
  srv:close { grace = 1 }
  task:wait()
end

local function echo(req)
  req:respond(200, { ["content-type"] = "application/json" }, json.encode {
    method = req.method, path = req.path, query = req.query or json.null, headers = req.headers,
    body = req.body, version = req.version, remote = req.remote,
  })
end

t.test("methods, path, query, headers and body reach the handler", function()
  local srv, base, task = serve(nil, echo)
  for _, m in ipairs { "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" } do
    local body = (m == "GET" or m == "OPTIONS") and nil or ("payload of " .. m)
    local r = assert(http.request { method = m, url = base .. "/p/q%20r?a=1&b=x%20y", body = body,
      headers = { { "X-Test", "Value" }, { "X-Multi", "1" }, { "X-Multi", "2" } } })
    local got = json.decode(r.body)
    t.eq({ r.status, got.method, got.path, got.query }, { 200, m, "/p/q%20r", "a=1&b=x%20y" },
      m .. ": method, path as sent, query without '?'")
    t.eq(got.body, body or "", m .. ": the body (empty when none)")
    t.eq({ got.headers["x-test"], got.headers["x-multi"], got.headers.host },
      { "Value", "1, 2", ("127.0.0.1:%d"):format(srv.port) },
      m .. ": lower-case names, repeated ones joined, host")
    t.eq(got.version, "1.1", m .. ": HTTP/1.1")
    t.like(got.remote, "^127%.0%.0%.1:%d+$", m .. ": remote address")
  end
  local r = assert(http.request { url = base .. "/plain" })
  t.eq(json.decode(r.body).query, json.null, "no '?': query is nil")
  r = assert(http.request { method = "HEAD", url = base .. "/head" })
  t.eq({ r.status, r.body }, { 200, "" }, "HEAD: no body sent")
  t.ok(tonumber(r.headers["content-length"]) > 0, "HEAD: the length of the body it would have")
  stop(srv, task)
end)

t.test("status, reason and response headers", function()
  local srv, base, task = serve(nil, function(req)
    if req.path == "/created" then
      req:respond(201, { { "Set-Cookie", "a=1" }, { "Set-Cookie", "b=2" }, { "X-N", 42 } }, "made")
    elseif req.path == "/none" then
      req:respond(204)
    else
      req:respond(404, { ["Content-Type"] = "text/plain" }, "no such thing")
    end
  end)
  local r = assert(http.request { url = base .. "/created" })
  t.eq({ r.status, r.body, r.headers["set-cookie"], r.headers["x-n"] }, { 201, "made", "a=1, b=2", "42" },
    "201 with repeated headers (array form) and a number value")
  t.eq(r.headers.server, "flowrun", "server header")
  r = assert(http.request { url = base .. "/none" })
  t.eq({ r.status, r.body }, { 204, "" }, "204 without a body")
  r = assert(http.request { url = base .. "/other" })
  t.eq({ r.status, r.body, r.headers["content-type"] }, { 404, "no such thing", "text/plain" }, "404 with a body")
  stop(srv, task)
end)

t.test("keep-alive: one connection for consecutive requests", function()
  local remotes = {}
  local srv, base, task = serve(nil, function(req)
    remotes[#remotes + 1] = req.remote
    req:respond(200, nil, "ok")
  end)
  for _ = 1, 5 do assert(http.request { url = base .. "/ka" }) end
  t.eq(#remotes, 5, "five requests")
  local same = true
  for i = 2, 5 do same = same and remotes[i] == remotes[1] end
  t.ok(same, "all from the same client port (the connection was reused)")
  t.eq(srv:stats().connections, 1, "one connection open on the server")
  stop(srv, task)
end)

t.test("large bodies both ways", function()
  local big = {}
  for i = 1, 8 * 1024 do big[i] = ("%08d"):format(i) .. ("x"):rep(1016) end
  big = table.concat(big) -- 8 MiB, every KiB numbered
  local srv, base, task = serve({ limits = { body_bytes = 1 << 20 } }, function(req)
    if req.path == "/big" then req:respond(200, nil, big) else req:respond(200, nil, tostring(#req.body)) end
  end)
  local r = assert(http.request { url = base .. "/big" })
  t.eq({ r.status, #r.body, r.headers["content-length"] }, { 200, #big, tostring(#big) }, "8 MiB response")
  t.ok(r.body == big, "byte for byte")
  r = assert(http.request { method = "POST", url = base .. "/len", body = ("b"):rep(1 << 20) })
  t.eq({ r.status, r.body }, { 200, tostring(1 << 20) }, "a body of exactly body_bytes is read")
  r = assert(http.request { method = "POST", url = base .. "/len", body = ("b"):rep((1 << 20) + 1) })
  t.eq(r.status, 413, "one byte more: 413")
  t.eq(srv:stats().requests, 0, "the handler never saw it")
  stop(srv, task)
end)

t.test("header limit: 431", function()
  local srv, base, task = serve({ limits = { header_bytes = 8192 } }, echo)
  local r = assert(http.request { url = base .. "/h", headers = { ["X-Big"] = ("a"):rep(6000) } })
  t.eq(r.status, 200, "6000 bytes of header under a limit of 8192: served")
  r = assert(http.request { url = base .. "/h", headers = { ["X-Big"] = ("a"):rep(9000) } })
  t.eq(r.status, 431, "9000 bytes: 431")
  r = assert(http.request { url = base .. "/h" })
  t.eq(r.status, 200, "the server still answers")
  stop(srv, task)
end)

t.test("a streamed response (chunked)", function()
  local srv, base, task = serve(nil, function(req)
    req:start(200, { ["content-type"] = "text/event-stream" })
    for i = 1, 50 do req:write(("data: %d\n\n"):format(i)) end
    req:finish()
  end)
  local r = assert(http.request { url = base .. "/events" })
  local want = {}
  for i = 1, 50 do want[i] = ("data: %d\n\n"):format(i) end
  t.eq({ r.status, r.body }, { 200, table.concat(want) }, "every chunk, in order")
  t.eq({ r.headers["transfer-encoding"], r.headers["content-type"] }, { "chunked", "text/event-stream" },
    "chunked, with the handler's headers")
  stop(srv, task)
end)

t.test("a request nobody answers gets a 500 when its object is closed or collected", function()
  local srv = httpd.listen {}
  local base = ("http://127.0.0.1:%d"):format(srv.port)
  local client = flow.spawn(function() return http.request { url = base .. "/a", timeout = 10 } end)
  do
    local req <close> = srv:accept()
    t.eq(req.path, "/a", "accepted")
  end -- <close>: nothing was sent
  local r = assert(client:wait())
  t.eq({ r.status, r.body }, { 500, "the request was not answered\n" }, "<close> answered 500")

  client = flow.spawn(function() return http.request { url = base .. "/b", timeout = 10 } end)
  local req = srv:accept()
  t.eq(req.path, "/b", "accepted")
  req = nil ---@diagnostic disable-line: cast-local-type
  collectgarbage()
  collectgarbage()
  r = assert(client:wait())
  t.eq(r.status, 500, "collected: answered 500")

  client = flow.spawn(function() return http.request { url = base .. "/c", timeout = 10 } end)
  req = srv:accept()
  t.ok(req:respond(200, nil, "fine"), "answered")
  req:close()
  req:close()
  t.eq(assert(client:wait()).status, 200, "closing an answered request changes nothing (and twice is fine)")
  t.raises(function() return req.respond(req, 200) end, "closed", "a closed request object refuses use")
  srv:close()
end)

t.test("misuse raises at once", function()
  local srv = httpd.listen {}
  local base = ("http://127.0.0.1:%d"):format(srv.port)
  local client = flow.spawn(function() return http.request { url = base .. "/m", timeout = 10 } end)
  local req <close> = srv:accept()
  t.raises(function() req:write("x") end, "call start first", "write before start")
  t.raises(function() req:finish() end, "no streamed response", "finish before start")
  t.raises(function() req:respond(99) end, "status", "a status below 200")
  t.raises(function() req:respond(200, { ["bad name"] = "x" }) end, "bad header name", "a header name with a space")
  t.raises(function() req:respond(200, { ["X-A"] = "a\r\nX-Injected: 1" }) end, "line break", "header injection")
  t.raises(function() req:respond(200, { ["Content-Length"] = "3" }) end, "server's to set", "framing headers are the server's")
  t.raises(function() req:respond(200, { ["X-A"] = {} }) end, "string expected", "a table as a header value")
  t.ok(req:respond(200, { ["X-Ok"] = "1" }, "ok"), "a good answer after the refused ones")
  t.raises(function() req:respond(200) end, "already answered", "a second answer")
  t.raises(function() req:start(200) end, "already answered", "start after respond")
  t.eq(assert(client:wait()).status, 200, "the client got the good answer")
  t.raises(function() httpd.listen { limits = { header_byte = 1 } } end, "unknown limit header_byte", "unknown limit")
  t.raises(function() httpd.listen { limits = { idle_timeout = -1 } } end, "positive", "a negative timeout")
  t.raises(function() httpd.listen { host = "localhost" } end, "numeric", "host names are not resolved")
  t.raises(function() httpd.listen { port = 70000 } end, "port", "port out of range")
  t.raises(function() httpd.listen { tls = { cert = "x" } } end, "cert and key", "tls without a key")
  srv:close()
end)

t.test("listen errors are error objects", function()
  local srv = httpd.listen {}
  t.ok(srv.port > 0, "port 0 picked a free port")
  local err = t.raises(function() httpd.listen { port = srv.port } end, "httpd.listen", "the port is taken")
  t.like(err and err.message, "address already in use", "says why")
  err = t.raises(function() httpd.listen { tls = { cert = "/nonexistent.pem", key = "/nonexistent.key" } } end,
    "httpd.tls", "a missing certificate")
  t.like(err and err.message, "/nonexistent.pem", "names the file")
  srv:close()
  t.eq(srv:accept(), nil, "accept on a closed server: nil")
  t.ok(srv:close(), "closing twice is fine")
end)

t.test("graceful close: an in-flight request finishes within the grace", function()
  local entered = false
  local srv, base, task = serve(nil, function(req)
    entered = true
    flow.sleep(0.5)
    req:respond(200, nil, "slow done")
  end)
  local client = flow.spawn(function() return http.request { url = base .. "/slow", timeout = 10 } end)
  while not entered do flow.sleep(0.01) end
  local t0 = flow.now()
  srv:close { grace = 5 }
  local took = flow.now() - t0
  local r = assert(client:wait())
  t.eq({ r.status, r.body }, { 200, "slow done" }, "the in-flight request was answered")
  t.ok(took >= 0.3 and took < 3, ("close waited for it, not for the whole grace (%.2f s)"):format(took))
  local _, e = http.request { url = base .. "/after", timeout = 2 }
  t.eq(e and e.code, "http.connect", "no longer accepting connections")
  t.eq(task:wait(), nil, "the accept loop ended (accept returned nil)")
  t.eq(srv:stats(), { connections = 0, requests = 0, queued = 0, state = "closed" }, "nothing left")
end)

t.test("graceful close: past the grace an unanswered request gets a 503", function()
  local entered, late = false, nil
  local srv, base, task = serve(nil, function(req)
    entered = true
    flow.sleep(1.5)
    late = { req:respond(200, nil, "too late") }
  end)
  local client = flow.spawn(function() return http.request { url = base .. "/slower", timeout = 10 } end)
  while not entered do flow.sleep(0.01) end
  local t0 = flow.now()
  srv:close { grace = 0.3 }
  local took = flow.now() - t0
  local r = assert(client:wait())
  t.eq(r.status, 503, "503 once the grace is over")
  t.ok(took >= 0.25 and took < 1.2, ("close took the grace (%.2f s)"):format(took))
  while not late do flow.sleep(0.05) end
  t.eq({ late[1], late[2] and late[2].code }, { nil, "http.closed" }, "the late respond: nil, http.closed")
  task:wait()
end)

t.test("graceful close ends streamed responses; their writers get http.closed", function()
  local writer_err
  local srv, base, task = serve(nil, function(req)
    req:start(200, { ["content-type"] = "text/event-stream" })
    local ok, err = pcall(function()
      while true do
        req:write("data: tick\n\n")
        flow.sleep(0.02)
      end
    end)
    writer_err = ok and "no error" or err
  end)
  local client = flow.spawn(function() return http.request { url = base .. "/stream", timeout = 10 } end)
  while srv:stats().requests == 0 do flow.sleep(0.01) end
  flow.sleep(0.2)
  srv:close { grace = 5 }
  local r = assert(client:wait())
  t.eq(r.status, 200, "the client saw the stream end normally")
  t.like(r.body, "^data: tick\n\n", "with what was written")
  while not writer_err do flow.sleep(0.01) end
  t.eq(type(writer_err) == "table" and writer_err.code, "http.closed", "the writer's next write raised http.closed")
  t.like(tostring(writer_err), "server is closing", "saying why")
  task:wait()
end)

t.test("TLS with a self-signed certificate (HTTP/2 through ALPN)", function()
  local dir = os.getenv("FLOWRUN_TEST_TMP") or "/tmp"
  local cert, key = dir .. "/httpd_basic_cert.pem", dir .. "/httpd_basic_key.pem"
  local gen = flow.exec({ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1" })
  t.eq(gen.status, 0, "openssl made a certificate")
  local big = ("0123456789abcdef"):rep(128 * 1024) -- 2 MiB
  local writer_err
  local srv, _, task = serve({ tls = { cert = cert, key = key } }, function(req)
    if req.path == "/big" then
      req:respond(200, nil, big)
    elseif req.path == "/stream" then
      req:start(200)
      for i = 1, 20 do req:write(i .. ";") end
      req:finish()
    elseif req.path == "/forever" then
      req:start(200)
      local ok, err = pcall(function()
        while true do req:write(("z"):rep(1000)); flow.sleep(0.01) end
      end)
      writer_err = ok and "no error" or err
    else
      echo(req)
    end
  end)
  t.ok(srv.tls, "srv.tls")
  local base = ("https://127.0.0.1:%d"):format(srv.port)
  local r = assert(http.request { url = base .. "/secure?x=1", method = "POST", body = "over tls", ca_file = cert })
  local got = json.decode(r.body)
  t.eq({ r.status, got.path, got.query, got.body }, { 200, "/secure", "x=1", "over tls" }, "a request over TLS")
  t.eq(got.version, "2", "curl and H2O agreed on HTTP/2")
  local _, err = http.request { url = base .. "/", timeout = 5 }
  t.eq(err and err.code, "http.tls", "a client that does not trust the certificate is refused")
  r = assert(http.request { url = base .. "/again", ca_file = cert })
  t.eq(r.status, 200, "and the server still answers")
  r = assert(http.request { url = base .. "/big", ca_file = cert })
  t.ok(r.status == 200 and r.body == big, "2 MiB over HTTP/2")
  r = assert(http.request { url = base .. "/stream", ca_file = cert })
  t.eq(r.body, "1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;", "a stream over HTTP/2")
  local _, e = http.request { url = base .. "/forever", ca_file = cert, timeout = 0.5 }
  t.eq(e and e.code, "http.timeout", "a client giving up on an endless HTTP/2 stream")
  -- curl queues its RST_STREAM on the shared connection; the next request sends it
  t.eq(assert(http.request { url = base .. "/after", ca_file = cert }).status, 200, "the connection goes on")
  local deadline = flow.now() + 5
  while not writer_err and flow.now() < deadline do flow.sleep(0.02) end
  t.eq(type(writer_err) == "table" and writer_err.code, "http.closed", "its writer got http.closed (stream reset)")
  t.eq(srv:stats().requests, 0, "nothing held for it")
  stop(srv, task)
  os.remove(cert)
  os.remove(key)
end)

t.done()
