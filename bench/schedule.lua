-- Schedule arithmetic: next() and prev() per second for mixed expressions and zones, chained
-- (each call starts at the previous answer, as a scheduler walks a schedule) and from random
-- instants; parse and to_local for scale; croniter's get_next (as Airflow calls it: naive local
-- time, then zoneinfo) on the same mix as the peer, when Debian's python3-croniter is there.
-- Prints figures only.   ./flowrun bench/schedule.lua [calls]
local flow = require "flow"
local cron = require "flow.schedule.cron"
local tz = require "flow.schedule.tz"

local N = tonumber(arg and arg[1]) or 200000

local EXPRS = { "0 2 * * *", "*/15 * * * *", "30 2 * * *", "0 9-17 * * MON-FRI", "@hourly",
  "0 0 1 * *", "5 4 * * SUN", "0 0 13 * FRI", "*/7 */5 * * *", "0 0 29 2 *", "0 */6 * * *",
  "45 1,2 * * *" }
local ZONES = { "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
  "America/Sao_Paulo" }

local scheds, zones = {}, {}
for i, e in ipairs(EXPRS) do scheds[i] = assert(cron.parse(e)) end
for i, z in ipairs(ZONES) do zones[i] = assert(tz.load(z)) end

local START = 1767225600 -- 2026-01-01T00:00:00Z
local YEARS6 = 6 * 365 * 86400

local function rate(label, calls, secs)
  print(("%-52s %12.0f /s  (%.2f us each)"):format(label, calls / secs, secs / calls * 1e6))
end

-- chained: every (expression, zone) pair walks its schedule for N / pairs calls
local pairs_n = #EXPRS * #ZONES
local per = math.max(1, N // pairs_n)
local c0 = os.clock()
local calls = 0
for i, s in ipairs(scheds) do
  for _, z in ipairs(zones) do
    local t = START + i * 7919
    local limit = per
    if s.expr == "0 0 29 2 *" then limit = math.min(per, 400) end -- 4 years a call
    for _ = 1, limit do t = s:next(t, z) end
    calls = calls + limit
  end
end
rate("next(), chained, 12 expressions x 6 zones", calls, os.clock() - c0)

c0 = os.clock()
calls = 0
for i, s in ipairs(scheds) do
  for _, z in ipairs(zones) do
    local t = START + YEARS6 + i * 7919
    local limit = per
    if s.expr == "0 0 29 2 *" then limit = math.min(per, 400) end
    for _ = 1, limit do t = s:prev(t, z) end
    calls = calls + limit
  end
end
rate("prev(), chained", calls, os.clock() - c0)

math.randomseed(42)
local starts = {}
for i = 1, 4096 do starts[i] = START + math.random(0, YEARS6) end
c0 = os.clock()
for k = 1, N do
  local s, z = scheds[k % #scheds + 1], zones[k % #zones + 1]
  s:next(starts[k % 4096 + 1], z)
end
rate("next() from random instants (2026-2031)", N, os.clock() - c0)

c0 = os.clock()
for k = 1, N // 10 do cron.parse(EXPRS[k % #EXPRS + 1]) end
rate("cron.parse", N // 10, os.clock() - c0)

local paris = zones[2]
c0 = os.clock()
for k = 1, N do paris:to_local(starts[k % 4096 + 1]) end
rate("zone:to_local (Europe/Paris)", N, os.clock() - c0)

local PEER = [[
import sys, time, datetime
from zoneinfo import ZoneInfo
from croniter import croniter
exprs, zones, n = sys.argv[1].split("|"), sys.argv[2].split("|"), int(sys.argv[3])
per = max(1, n // (len(exprs) * len(zones)))
calls = 0
t0 = time.process_time()
for i, e in enumerate(exprs):
    for zn in zones:
        z = ZoneInfo(zn)
        cur = datetime.datetime.fromtimestamp(1767225600 + (i + 1) * 7919, z)
        limit = min(per, 400) if e == "0 0 29 2 *" else per
        c = croniter(e, cur.replace(tzinfo=None))
        for _ in range(limit):
            c.get_next(datetime.datetime).replace(tzinfo=z).timestamp()
        calls += limit
el = time.process_time() - t0
print("%d %f" % (calls, el))
]]
local py = "/usr/bin/python3"
local ok, r = pcall(flow.exec, { py, "-c", PEER, table.concat(EXPRS, "|"), table.concat(ZONES, "|"),
  tostring(N // 10) }, { timeout = 600 })
if ok and r.status == 0 then
  local pc, ps = r.stdout:match("(%d+) ([%d.]+)")
  rate("peer: croniter 1.3.5 get_next, naive + zoneinfo", tonumber(pc), tonumber(ps))
else
  print("peer: croniter not available (" .. tostring(ok and r.stderr or r):gsub("\n.*", "") .. ")")
end
