-- The http module (runtime/http.c) the AWS client sends through, against tests/fakeaws.py
-- (FLOWRUN_TEST_FAKEAWS): methods, headers, keep-alive reuse, concurrency, timeouts,
-- cancellation, limits, failures as error objects, misuse.
local t = require "tap"
local flow = require "flow"
local json = require "json"
local http = require "http"

local fake = os.getenv("FLOWRUN_TEST_FAKEAWS")
t.ok(fake ~= nil and fake ~= "", "FLOWRUN_TEST_FAKEAWS is set (tests/servers/fakeaws.sh)")
if not fake then t.done() os.exit(1) end

local function control(path, body)
  local r = assert(http.request { method = "POST", url = fake .. path, body = json.encode(body or {}) })
  assert(r.status == 200)
end
local function records()
  return json.decode(assert(http.request { url = fake .. "/_fake/requests" }).body).requests
end
local function script(rs) control("/_fake/script", { responses = rs }) end

t.test("methods, headers, bodies", function()
  control("/_fake/reset")
  script {
    { status = 201, headers = { ["X-One"] = "1", ["Set-Cookie"] = "a=1" }, body = "created" },
    { status = 200, body = "" }, { status = 204, body = "" }, { status = 200, body = "x" },
  }
  local r, err = http.request { method = "PUT", url = fake .. "/obj", body = "payload\0bytes",
    headers = { ["X-Map"] = "m", ["X-Empty"] = "" } }
  t.ok(r, "PUT answered: " .. tostring(err))
  t.eq(r.status, 201, "status")
  t.eq(r.body, "created", "body")
  t.eq(r.headers["x-one"], "1", "response header names are lower-cased")
  t.eq(type(r.headers["content-length"]), "string", "values are strings")
  http.request { method = "DELETE", url = fake .. "/obj" }
  local h = http.request { method = "HEAD", url = fake .. "/obj" }
  t.eq(h.status, 204, "HEAD")
  http.request { url = fake .. "/obj?x=1&y=%20", headers = { { "X-Dup", "a" }, { "X-Dup", "b" } } }
  local rs = records()
  t.eq(rs[1].method, "PUT", "PUT sent")
  t.eq(rs[1].body, "payload\0bytes", "binary body sent whole")
  t.eq(rs[1].headers["x-map"], "m", "map header")
  t.eq(rs[1].headers["x-empty"], "", "empty header sent")
  t.eq(rs[1].headers["expect"], nil, "no Expect: 100-continue")
  t.eq(rs[1].headers["content-type"], nil, "no invented Content-Type")
  t.eq(rs[2].method, "DELETE", "DELETE")
  t.eq(rs[3].method, "HEAD", "HEAD")
  t.eq(rs[4].query, "x=1&y=%20", "query kept as given")
  t.eq(rs[4].headers["x-dup"], "a, b", "array headers: both sent")
  t.like(rs[4].headers["user-agent"] or "", "^flowrun/", "User-Agent")
end)

t.test("keep-alive and concurrency", function()
  control("/_fake/reset")
  for _ = 1, 5 do assert(http.request { url = fake .. "/a" }) end
  local rs = records()
  local ports = {}
  for _, r in ipairs(rs) do ports[r.peer] = true end
  local n = 0
  for _ in pairs(ports) do n = n + 1 end
  t.eq(n, 1, "five sequential requests share one connection")
  control("/_fake/reset")
  script { { delay = 0.3, body = "slow", ["repeat"] = 20 } }
  local t0 = flow.now()
  local hs = {}
  for i = 1, 20 do hs[i] = flow.spawn(function() return http.request { url = fake .. "/c" .. i }.body end) end
  local out = flow.all(hs)
  local dt = flow.now() - t0
  t.eq(out[20], "slow", "20 concurrent slow requests")
  t.ok(dt < 1.5, ("in parallel: %.2f s for 20 x 0.3 s"):format(dt))
end)

t.test("timeouts, cancellation, limits", function()
  control("/_fake/reset")
  script { { delay = 2, body = "late" } }
  local t0 = flow.now()
  local r, err = http.request { url = fake .. "/slow", timeout = 0.3 }
  t.eq(r, nil, "no answer")
  t.eq(err and err.code, "http.timeout", "http.timeout")
  t.eq(err and err.retryable, true, "retryable")
  t.like(tostring(err), "^http%.timeout: GET " .. fake:gsub("%p", "%%%0") .. "/slow", "message names the call")
  t.ok(flow.now() - t0 < 1.0, "after the timeout, not the answer")

  script { { delay = 2, body = "late" } }
  local h = flow.spawn(function() return http.request { url = fake .. "/cancelme" } end)
  flow.sleep(0.2)
  t0 = flow.now()
  h:cancel()
  local ok, e = pcall(h.wait, h)
  t.ok(not ok and flow.cancelled(e), "a cancelled request raises flow.cancelled")
  t.ok(flow.now() - t0 < 0.5, "at once")
  local r2 = http.request { url = fake .. "/after" }
  t.eq(r2 and r2.status, 200, "the next request works")

  local fr = flow.timeout
  if fr then
    script { { delay = 2, body = "late" } }
    local e2 = t.raises(function() fr(0.2, http.request, { url = fake .. "/ft" }) end, "flow.timeout",
      "flow.timeout around a request")
  end

  script { { size = 2 * 1024 * 1024 } }
  local big, berr = http.request { url = fake .. "/big", max_body = 1024 * 1024 }
  t.eq(big, nil, "answer above max_body")
  t.eq(berr and berr.code, "http.too_large", "http.too_large")
  script { { size = 12 * 1024 * 1024 } }
  big = http.request { url = fake .. "/big" }
  t.eq(big and #big.body, 12 * 1024 * 1024, "a 12 MB answer")
end)

t.test("failures and misuse", function()
  local r, err = http.request { url = "http://127.0.0.1:1/", connect_timeout = 1 }
  t.eq(err and err.code, "http.connect", "refused: http.connect")
  t.eq(err and err.retryable, true, "retryable")
  r, err = http.request { url = "http://nonexistent.invalid/" }
  t.eq(err and err.code, "http.connect", "unknown host: http.connect")
  control("/_fake/reset")
  script { { body = "abcdef", truncate = true } }
  r, err = http.request { url = fake .. "/trunc" }
  t.eq(err and err.code, "http.truncated", "short body: http.truncated")
  script { { reset = true } }
  r, err = http.request { url = fake .. "/reset" }
  t.ok(r == nil or r.status == 200, "a reset answers an error or, on a reused connection, curl's own retry")
  t.raises(function() http.request { url = "ftp://x/" } end, "http:// or https://", "other schemes refused")
  t.raises(function() http.request {} end, "url", "url required")
  t.raises(function() http.request { url = fake, headers = { ["X-A"] = "a\r\nX-Injected: 1" } } end,
    "bad header", "header injection refused")
  t.raises(function() http.request { url = fake, timeout = -1 } end, "timeout", "bad timeout")
  t.raises(function() http.request { url = fake, headers = { ["X"] = {} } } end, "header", "bad header value")
  local co = coroutine.create(function() return http.request { url = fake } end)
  local ok, msg = coroutine.resume(co)
  t.ok(not ok and tostring(msg):find("cannot wait here"), "a plain coroutine cannot wait")
  t.ok(http.stats().idle_handles <= 128, "the idle handle pool is bounded")
end)

t.done()
