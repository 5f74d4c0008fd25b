#!/usr/bin/env bash
# bench/store.sh — the run store and the workers, beside their peers, on one throwaway PostgreSQL
# 15 (tests/servers/pg.sh) made durable for the run (fsync, synchronous_commit and
# full_page_writes on, as a production server has them):
#   1. submit-to-start latency of an idle worker, p50/p99, beside graphile-worker's
#      add-job-to-start (bench/store_latency.lua, bench/peers/graphile_latency.mjs), first, on
#      a server with nothing else to do;
#   2. the engine's per-task overhead on the 10,000-task layered DAG: file store beside
#      PostgreSQL store (bench/store_dag.lua);
#   3. 1,000 runs of 10 sequential no-op steps with 1 and 4 workers (16 runs each at once):
#      runs/s and steps/s, beside DBOS Transact doing the same durable 10-step workflow from a
#      queue (bench/store_steps.lua, bench/peers/dbos_steps.mjs).
# The peers are npm packages pinned in bench/peers/package-lock.json, installed (npm ci) when
# missing. Prints figures; asserts nothing. Usage: bench/store.sh [RUNS] [LATENCY_N]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000}
LN=${2:-200}
: "${FLOWRUN:=./flowrun}"
[ -x "$FLOWRUN" ] || make -s

if [ ! -d bench/peers/node_modules/@dbos-inc/dbos-sdk ] || [ ! -d bench/peers/node_modules/graphile-worker ]; then
  echo "installing the peers (npm ci in bench/peers)"
  (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

dir=$(mktemp -d /tmp/flowrun-bench-store.XXXXXX)
chmod 755 "$dir"
cleanup() { tests/servers/pg.sh stop "$dir/pg" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
eval "$(tests/servers/pg.sh start "$dir/pg")"
export PGPASSWORD=$FLOWRUN_TEST_PGPASSWORD
psql_() { "$PGBIN/psql" -qAtX -h "$FLOWRUN_TEST_PGHOST" -p "$FLOWRUN_TEST_PGPORT" -U "$FLOWRUN_TEST_PGUSER" "$@"; }
psql_ -d postgres -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
  -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" >/dev/null
fresh() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null 2>&1; }
ci() { echo "host=$FLOWRUN_TEST_PGHOST port=$FLOWRUN_TEST_PGPORT user=$FLOWRUN_TEST_PGUSER password=$FLOWRUN_TEST_PGPASSWORD dbname=$1"; }
url() { echo "postgresql://$FLOWRUN_TEST_PGUSER:$FLOWRUN_TEST_PGPASSWORD@$FLOWRUN_TEST_PGHOST:$FLOWRUN_TEST_PGPORT/$1"; }
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(('%.${3:-0}f' % d['$1']) if '$1' in d else '-')" <<<"$2"; }

echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), fsync and synchronous_commit on; $(nproc) cores"
echo

fresh lat
lat_fr=$("$FLOWRUN" bench/store_latency.lua "$(ci lat)" "$LN")
fresh glat
lat_gw=$(cd bench/peers && NODE_NO_WARNINGS=1 node graphile_latency.mjs "$(url glat)" "$LN" 2>/dev/null | tail -1)
printf 'submit-to-start latency of an idle worker, %d runs one after another (ms)\n' "$LN"
printf '  %-34s %8s %8s %8s %8s\n' "" "p50" "p99" "mean" "max"
printf '  %-34s %8s %8s %8s %8s\n' "flowrun (submit -> first task)" "$(field p50_ms "$lat_fr" 2)" \
  "$(field p99_ms "$lat_fr" 2)" "$(field mean_ms "$lat_fr" 2)" "$(field max_ms "$lat_fr" 2)"
printf '  %-34s %8s %8s %8s %8s\n' "graphile-worker 0.17 (addJob -> task)" "$(field p50_ms "$lat_gw" 2)" \
  "$(field p99_ms "$lat_gw" 2)" "$(field mean_ms "$lat_gw" 2)" "$(field max_ms "$lat_gw" 2)"
echo "  (target: flowrun's p50 no worse than graphile-worker's)"
echo
fresh dag
"$FLOWRUN" bench/store_dag.lua "$(ci dag)" 10000 1000
echo

declare -A R
for w in 1 4; do
  fresh fr$w
  R[fr$w]=$("$FLOWRUN" bench/store_steps.lua "$FLOWRUN" "$(ci fr$w)" "$RUNS" "$w" 16)
  fresh db$w
  R[db$w]=$(cd bench/peers && NODE_NO_WARNINGS=1 node dbos_steps.mjs "$(url db$w)" "$RUNS" "$w" 16 2>/dev/null | tail -1)
done
printf '%d runs of 10 sequential no-op steps (each step committed before the next), 16 runs at once per worker\n' "$RUNS"
printf '  %-34s %10s %10s %10s\n' "" "runs/s" "steps/s" "seconds"
for w in 1 4; do
  printf '  %-34s %10s %10s %10s\n' "flowrun, $w worker(s)" "$(field runs_per_s "${R[fr$w]}" 1)" \
    "$(field steps_per_s "${R[fr$w]}")" "$(field seconds "${R[fr$w]}" 2)"
  printf '  %-34s %10s %10s %10s\n' "DBOS Transact 5.3, $w worker(s)" "$(field runs_per_s "${R[db$w]}" 1)" \
    "$(field steps_per_s "${R[db$w]}")" "$(field seconds "${R[db$w]}" 2)"
done
for w in 1 4; do
  python3 - "${R[fr$w]}" "${R[db$w]}" "$w" <<'PY'
import json, sys
try:
    a, b = json.loads(sys.argv[1].splitlines()[-1]), json.loads(sys.argv[2].splitlines()[-1])
    print("  %s worker(s): flowrun / DBOS steps/s = %.2fx (target >= 2x)" % (sys.argv[3], a["steps_per_s"] / b["steps_per_s"]))
except Exception as e:
    print("  %s worker(s): no ratio (%s)" % (sys.argv[3], e))
PY
done
