-- The zlib module as the binary loads it (a shared unit): a stream written by /bin/gzip, a
-- round trip, and the error objects for damage and for a bomb. tests/c/test_zlib.c has the rest.
local t = require "tap"
local flow = require "flow"
local zlib = require "zlib"

t.test("gunzip reads /bin/gzip's output", function()
  local text = ("a line of an EMR step log\n"):rep(5000)
  local r = flow.exec({ "/bin/gzip", "-c" }, { stdin = text })
  t.eq(r.status, 0, "gzip ran")
  t.eq(zlib.gunzip(r.stdout), text, "decompressed to the input")
  t.eq(zlib.gunzip(zlib.gzip(text)), text, "zlib.gzip round trip")
end)

t.test("damage and bombs are error objects, not raises", function()
  local gz = zlib.gzip(("x"):rep(100000))
  local out, err = zlib.gunzip(gz:sub(1, #gz - 10))
  t.eq(out, nil, "truncated: nil")
  t.ok(flow.is_error(err, "zlib.data"), "and zlib.data: " .. tostring(err))
  out, err = zlib.gunzip(gz, 1000)
  t.ok(out == nil and flow.is_error(err, "zlib.too_large"), "beyond max_bytes: zlib.too_large")
  t.raises(function() zlib.gunzip(nil) end, "string expected", "misuse raises")
end)

t.done()
