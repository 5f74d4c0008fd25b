#!/usr/bin/env bash
# bench/schedule.sh — schedules: the cron arithmetic (bench/schedule.lua, beside croniter), then a
# scheduler serving 1,000 scheduled workflows (bench/schedule_gen.lua: mixed cron expressions,
# presets and intervals in six zones) from a throwaway PostgreSQL 15 (tests/servers/pg.sh, made
# durable as bench/store.sh makes it), run by the scheduler process the tests use
# (tests/lib/scheduler_proc.lua, the object `flowrun scheduler` runs, on a clock that may run
# faster than the wall clock):
#   1. CPU per hour of schedule time: the clock 120 times faster than the wall clock for
#      BENCH_SCHEDULE_VHOURS hours (default 2): every tick of those hours fired; the scheduler
#      process's CPU (user + system) per hour, and the server's share apart;
#   2. idle: 1,000 workflows with nothing due for 30 s: the CPU a scheduler costs while it
#      sleeps until its next due time;
#   3. lateness on the real clock for BENCH_SCHEDULE_SECONDS (default 180): each fired run, from
#      its due time (the end of its interval) to its commit, p50/p99/max, as the scheduler
#      measured it and as the store recorded it (runs.created - interval_end).
# Meanwhile a stand-in for the workers marks the fired runs succeeded every second, so that the
# active runs stay few, as they are when workers keep up. Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FLOWRUN:=./flowrun}"
[ -x "$FLOWRUN" ] || make -s
N=${BENCH_SCHEDULE_WORKFLOWS:-1000}
VHOURS=${BENCH_SCHEDULE_VHOURS:-2}
REAL=${BENCH_SCHEDULE_SECONDS:-180}
SPEED=120

echo "cron arithmetic (bench/schedule.lua)"
"$FLOWRUN" bench/schedule.lua
echo

dir=$(mktemp -d /tmp/flowrun-bench-schedule.XXXXXX)
chmod 755 "$dir"
procs=()
cleanup() {
  for p in "${procs[@]}"; do kill "$p" 2>/dev/null || true; done
  tests/servers/pg.sh stop "$dir/pg" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
eval "$(tests/servers/pg.sh start "$dir/pg")"
export PGPASSWORD=$FLOWRUN_TEST_PGPASSWORD
psql_() { "$PGBIN/psql" -qAtX -h "$FLOWRUN_TEST_PGHOST" -p "$FLOWRUN_TEST_PGPORT" -U "$FLOWRUN_TEST_PGUSER" "$@"; }
psql_ -d postgres -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
  -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" >/dev/null
fresh() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null 2>&1; }
ci() { echo "host=$FLOWRUN_TEST_PGHOST port=$FLOWRUN_TEST_PGPORT user=$FLOWRUN_TEST_PGUSER password=$FLOWRUN_TEST_PGPASSWORD dbname=$1"; }
# CPU seconds (user + system) of the server's processes so far
pg_cpu() {
  local pids
  pids=$(pgrep -d' ' -f "postgres" || true)
  python3 - $pids <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    try:
        f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    except OSError:
        pass
print("%.2f" % (total / tick))
PY
}
# the stand-in for the workers: fired runs end at once
finisher() {
  while sleep 1; do
    psql_ -d "$1" -c "UPDATE flowrun.runs SET state = 'success', finished = extract(epoch FROM now()) WHERE state = 'queued'" >/dev/null 2>&1 || true
  done
}
stat_field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$2" | tail -1; }

echo "a scheduler serving $N scheduled workflows, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (fsync, synchronous_commit on); $(nproc) cores"
"$FLOWRUN" bench/schedule_gen.lua "$dir/wf" "$N"
"$FLOWRUN" bench/schedule_gen.lua "$dir/idle" "$N" idle

# 1. CPU per hour of schedule time
fresh cpu
psql_ -d cpu -c "SELECT 1" >/dev/null
"$FLOWRUN" -e "local s = require('flowrun.engine.store.pg').open('$(ci cpu)'); s:init()" >/dev/null
finisher cpu & procs+=($!)
t0=$(date +%s.%N)
r0=$(python3 -c "import time; print(repr(time.time() + 2))")
t_start=$(python3 -c "import time; print(int(time.time()) // 3600 * 3600 + 3600)")  # from the next whole hour
pg0=$(pg_cpu)
"$FLOWRUN" tests/lib/scheduler_proc.lua "$(ci cpu)" "$dir/wf" "$t_start" "$r0" "$SPEED" >"$dir/cpu.log" 2>&1 &
sp=$!; procs+=($sp)
sleep "$(python3 -c "print(2 + $VHOURS * 3600 / $SPEED)")"
kill -TERM "$sp"; wait "$sp" 2>/dev/null || true
pg1=$(pg_cpu)
kill "${procs[0]}" 2>/dev/null || true; wait "${procs[0]}" 2>/dev/null || true
procs=()
fired=$(stat_field fired "$dir/cpu.log")
cpu=$(stat_field cpu "$dir/cpu.log")
runs=$(psql_ -d cpu -c "SELECT count(*) FROM flowrun.runs")
python3 - "$VHOURS" "$fired" "$cpu" "$pg0" "$pg1" "$runs" <<'PY'
import sys
h, fired, cpu, pg0, pg1, runs = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
print("  1. %g hours of schedule time in %g s (clock x120): %d runs fired (%d in the store), %.0f per hour" % (h, h * 3600 / 120, fired, runs, fired / h))
print("     scheduler CPU per hour of schedule time: %.2f s (%.0f us per run fired); PostgreSQL's: %.2f s" % (cpu / h, cpu / max(fired, 1) * 1e6, (pg1 - pg0) / h))
PY

# 2. idle
fresh idle
"$FLOWRUN" -e "local s = require('flowrun.engine.store.pg').open('$(ci idle)'); s:init()" >/dev/null
now=$(python3 -c "import time; print(repr(time.time()))")
"$FLOWRUN" tests/lib/scheduler_proc.lua "$(ci idle)" "$dir/idle" "$now" "$now" 1 >"$dir/idle.log" 2>&1 &
sp=$!; procs+=($sp)
sleep 5
c0=$(python3 -c "
f=open('/proc/$sp/stat').read().rsplit(')',1)[1].split(); import os; print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))")
sleep 30
c1=$(python3 -c "
f=open('/proc/$sp/stat').read().rsplit(')',1)[1].split(); import os; print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))")
kill -TERM "$sp"; wait "$sp" 2>/dev/null || true
procs=()
python3 -c "print('  2. idle (%d workflows, nothing due): %.3f s of CPU in 30 s (after a start that loaded them: %.2f s)' % ($N, $c1 - $c0, $c0))"

# 3. lateness on the real clock
fresh lat
"$FLOWRUN" -e "local s = require('flowrun.engine.store.pg').open('$(ci lat)'); s:init()" >/dev/null
finisher lat & procs+=($!)
now=$(python3 -c "import time; print(repr(time.time()))")
start=$(python3 -c "print(int($now) + 2)")
"$FLOWRUN" tests/lib/scheduler_proc.lua "$(ci lat)" "$dir/wf" "$now" "$now" 1 >"$dir/lat.log" 2>&1 &
sp=$!; procs+=($sp)
sleep "$REAL"
kill -TERM "$sp"; wait "$sp" 2>/dev/null || true
kill "${procs[0]}" 2>/dev/null || true; wait "${procs[0]}" 2>/dev/null || true
procs=()
store=$(psql_ -d lat -c "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l) FROM (SELECT created - extract(epoch FROM interval_end) AS l FROM flowrun.runs WHERE extract(epoch FROM interval_end) >= $start) x")
python3 - "$REAL" "$(stat_field late_n "$dir/lat.log")" "$(stat_field late_p50 "$dir/lat.log")" \
  "$(stat_field late_p99 "$dir/lat.log")" "$(stat_field late_max "$dir/lat.log")" "$store" <<'PY'
import sys
real, n, p50, p99, mx, store = sys.argv[1:7]
c, s50, s99, smax = store.split("|")
ms = lambda v: "%.1f ms" % (float(v) * 1000)
print("  3. lateness on the real clock over %s s, from due to committed (target p99 <= 1 s):" % real)
print("     the scheduler's measure: %s runs, p50 %s, p99 %s, max %s" % (n, ms(p50), ms(p99), ms(mx)))
print("     the store's record (created - interval_end, runs due after the start): %s runs, p50 %s, p99 %s, max %s" % (c, ms(s50), ms(s99), ms(smax)))
PY
echo "  (Airflow's scheduler: seconds to minutes between a run's due time and its creation under this load; no Airflow here to measure beside it)"
