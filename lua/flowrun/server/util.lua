-- flowrun.server.util — the small pieces of HTTP the server's policy needs and H2O leaves to
-- it: percent-decoding, query strings, form bodies, cookies, JSON answers, random tokens and a
-- comparison of secrets whose time does not depend on where they differ.
local json = require "json"

local M = {}

local function hexval(h) return string.char(tonumber(h, 16)) end

-- unescape(s, plus) -> s with %XX decoded (and + as a space when plus, for forms and queries).
function M.unescape(s, plus)
  if plus then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", hexval))
end

-- escape(s) -> s with everything but unreserved characters percent-encoded (RFC 3986).
function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- parse_query("a=1&b=x%20y") -> {a = "1", b = "x y"}; a repeated name keeps its last value.
function M.parse_query(q)
  local out = {}
  if not q or q == "" then return out end
  for pair in q:gmatch("[^&;]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    if k and k ~= "" then out[M.unescape(k, true)] = M.unescape(v, true) end
  end
  return out
end
M.parse_form = M.parse_query

-- segments("/api/v1/runs/abc") -> {"api", "v1", "runs", "abc"}, or nil when the path is not a
-- plain absolute path: a segment "." or "..", or one that decodes to a "/", "\" or NUL (a
-- segment is a name here, never a path: "js%2F..%2F..%2Fsecret" must not climb out).
function M.segments(path)
  if path:sub(1, 1) ~= "/" then return nil end
  local out = {}
  for raw in path:gmatch("[^/]+") do
    local seg = M.unescape(raw)
    if seg == "." or seg == ".." or seg:find("[/\\%z]") then return nil end
    out[#out + 1] = seg
  end
  return out
end

-- cookies("a=1; b=2") -> {a = "1", b = "2"}
function M.cookies(header)
  local out = {}
  if not header then return out end
  for pair in header:gmatch("[^;]+") do
    local k, v = pair:match("^%s*([^=%s]+)%s*=%s*(.-)%s*$")
    if k then out[k] = v:gsub('^"(.*)"$', "%1") end
  end
  return out
end

-- Secrets compared in constant time: both sides are hashed first (so their lengths do not show
-- either), then every byte of the two digests is looked at, whatever the first difference.
local sha256
function M.digest(s)
  sha256 = sha256 or require("aws.sigv4").sha256_hex
  return sha256(s)
end

function M.equal_digests(a, b)
  if #a ~= #b then return false end
  local acc = 0
  for i = 1, #a do acc = acc | (a:byte(i) ~ b:byte(i)) end
  return acc == 0
end

-- random_hex(n) -> 2n hex digits from the kernel's random source.
function M.random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(n)
  f:close()
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

M.JSON_HEADERS = {
  ["content-type"] = "application/json; charset=utf-8",
  ["cache-control"] = "no-store",
}

-- encode(v) -> JSON text; tables marked as arrays stay arrays when empty.
function M.encode(v) return json.encode(v) end

-- iso(t) -> "2026-01-02T03:04:05.678Z" (UTC, milliseconds) or nil.
function M.iso(t)
  if type(t) ~= "number" then return nil end
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", math.floor((t - s) * 1000))
end

-- parse_time("2026-01-02T03:04:05Z" | "1767323045" | "2026-01-02") -> epoch seconds or nil.
function M.parse_time(s)
  if not s or s == "" then return nil end
  local n = tonumber(s)
  if n then return n end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  local h, mi, sec, frac, zone = 0, 0, 0, 0, "Z"
  if rest ~= "" then
    local hh, mm, ss, tail = rest:match("^[T ](%d%d):(%d%d):?(%d?%d?)(.*)$")
    if not hh then return nil end
    h, mi, sec = tonumber(hh), tonumber(mm), tonumber(ss) or 0
    local f, z = tail:match("^%.(%d+)(.*)$")
    if f then frac, tail = tonumber("0." .. f), z end
    zone = tail == "" and "Z" or tail
  end
  local offset = 0
  if zone ~= "Z" then
    local sign, oh, om = zone:match("^([%+%-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  -- days from the civil date (Howard Hinnant's algorithm), so no local time zone is involved
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
  local yy = mo <= 2 and y - 1 or y
  local era = (yy >= 0 and yy or yy - 399) // 400
  local yoe = yy - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + h * 3600 + mi * 60 + sec + frac - offset
end

return M
