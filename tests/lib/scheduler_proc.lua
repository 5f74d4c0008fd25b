-- A scheduler process whose clock runs SPEED times faster than the wall clock, for process tests
-- and the benchmark: at wall time R0 (epoch seconds) its clock reads T0, so several processes
-- started with the same arguments agree on the time.
--   flowrun tests/lib/scheduler_proc.lua STORE DIR T0 R0 SPEED
-- STORE: a postgresql:// URL or libpq key=value string, or file:DIR. Its log lines go to stdout;
-- SIGTERM stops it (exit 0), SIGKILL kills it.
local flow = require "flow"
local STORE, DIR = arg[1], arg[2]
local T0, R0, SPEED = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
assert(STORE and DIR and T0 and R0 and SPEED, "usage: scheduler_proc.lua STORE DIR T0 R0 SPEED")
local function clock() return T0 + (flow.time() - R0) * SPEED end
local store
local dir = STORE:match("^file:(.+)$")
if dir then
  store = require("flowrun.engine.store.file").open(dir, { clock = clock, fsync = false })
else
  store = require("flowrun.engine.store.pg").open(STORE, { clock = clock })
end
local s = require("flowrun.schedule.scheduler").new { store = store, dir = DIR, clock = clock,
  speed = SPEED, log = function(l)
    io.stdout:write(string.format("%.3f ", flow.time()), l, "\n")
    io.stdout:flush()
  end }
s:start()
local ok, err = pcall(s.wait, s)
if not ok and not flow.cancelled(err) then error(err, 0) end
local st = s:stats()
io.stdout:write(string.format("stats fired=%d skipped=%d decisions=%d late_n=%d late_p50=%s "
  .. "late_p99=%s late_max=%s cpu=%.3f\n", st.fired, st.skipped, st.decisions, st.lateness.n,
  tostring(st.lateness.p50), tostring(st.lateness.p99), tostring(st.lateness.max), os.clock()))
io.stdout:flush()
return 0
