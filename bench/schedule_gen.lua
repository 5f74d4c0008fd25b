-- Writes N scheduled workflows into DIR for bench/schedule.sh: mixed cron expressions, presets
-- and intervals in mixed zones (minute-level ones too, so that a few minutes of the real clock
-- see hundreds of fires), each one trivial task, catchup off, max_active_runs 1000.
--   ./flowrun bench/schedule_gen.lua DIR N [idle]
-- With "idle", every workflow fires once a year (what a scheduler costs when nothing is due).
local sys = require "flow.sys"
local dir, n, idle = arg[1], tonumber(arg[2] or "1000"), arg[3] == "idle"
assert(dir and n, "usage: schedule_gen.lua DIR N [idle]")
assert(sys.mkdir_p(dir))
local EXPRS = { "* * * * *", "*/2 * * * *", "*/5 * * * *", "1-59/2 * * * *", "*/15 * * * *",
  "@hourly", "30 2 * * *", "0 9-17 * * MON-FRI", "90s", "0 */6 * * *", "5 4 * * SUN",
  "0 0 1 * *", "*/7 */5 * * *" }
local ZONES = { "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
  "America/Sao_Paulo" }
for i = 1, n do
  local expr = idle and "0 3 1 1 *" or EXPRS[(i - 1) % #EXPRS + 1]
  local zone = ZONES[((i - 1) // #EXPRS) % #ZONES + 1]
  local f = assert(io.open(string.format("%s/wf%04d.lua", dir, i), "w"))
  f:write(string.format([[
local flow = require "flow"
local wf = flow.workflow { name = "wf%04d", schedule = %q, timezone = %q,
  start_date = "2026-01-01T00:00:00Z", max_active_runs = 1000 }
wf:task("a", function() end)
return wf
]], i, expr, zone))
  f:close()
end
