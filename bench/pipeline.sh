#!/usr/bin/env bash
# bench/pipeline.sh — the dms_to_emr pipeline (17 tasks, about 14 simulated minutes of DMS and
# EMR) in the simulator under virtual time: wall time per run and per task, next to Airflow's
# published scheduling overhead (Windmill's orchestrator benchmark: Airflow 2.7.3 ran 40 sequential
# ~10 ms tasks in 116.2 s, ~2.9 s per task). Airflow is not installed here: its figure is that
# published one, not measured.
# Then bench/pipeline_start.sh: the cluster started while DMS loads, or after.
#   bench/pipeline.sh [RUNS]      (default 5; uses FLOWRUN_TEST_PG or starts a throwaway server)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
make -s all
tmp=$(mktemp -d /tmp/flowrun-bench-pipeline.XXXXXX)
chmod 755 "$tmp"
started=0
cleanup() {
  [ $started = 1 ] && tests/servers/pg.sh stop "$tmp/pg" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -z "${FLOWRUN_TEST_PGPORT:-}" ]; then
  eval "$(tests/servers/pg.sh start "$tmp/pg")"
  started=1
fi
db="flowrun_bench_$$"
psql "$FLOWRUN_TEST_PG" -q -c "CREATE DATABASE $db"
trap 'psql "$FLOWRUN_TEST_PG" -q -c "DROP DATABASE IF EXISTS '$db'" >/dev/null 2>&1; cleanup' EXIT
psql "$FLOWRUN_TEST_PG dbname=$db" -q -c "SET client_min_messages = warning" \
  -f scripts/demo-source.sql >/dev/null
# the simulated account's secret of the source: the pre-flight and the simulated DMS read it
( umask 077
  printf '{"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": {"engine": "postgres",
    "host": "%s", "port": %s, "username": "%s", "password": "%s", "dbname": "%s"}}]}\n' \
    "$FLOWRUN_TEST_PGHOST" "$FLOWRUN_TEST_PGPORT" "$FLOWRUN_TEST_PGUSER" "$FLOWRUN_TEST_PGPASSWORD" \
    "$db" >"$tmp/seed.json" )
export FLOWRUN_SIM_SEED=$tmp/seed.json

total=0
for i in $(seq 1 "$runs"); do
  t0=$(date +%s.%N)
  FLOWRUN_SIM_STATE="$tmp/sim-$i.json" ./flowrun workflows/dms_to_emr.lua \
    --vars-file workflows/config/example.json \
    --state-dir "$tmp/state" --sim --virtual-time --log-format text >"$tmp/out-$i" 2>&1 \
    || { echo "run $i failed:"; tail -20 "$tmp/out-$i"; exit 1; }
  t1=$(date +%s.%N)
  total=$(echo "$total + $t1 - $t0" | bc -l)
done
calls=$(grep -c . "$tmp/out-1")
tasks=$(grep -Eo 'started \([0-9]+ tasks\)' "$tmp/out-1" | grep -Eo '[0-9]+')
simulated=$(grep -Eo 'SUCCESS in [0-9hms]+' "$tmp/out-1" | head -1 | cut -d' ' -f3)
per_run=$(echo "$total / $runs" | bc -l)
printf 'dms_to_emr in the simulator, %d runs (%d tasks, %s of simulated time each)\n' "$runs" "$tasks" "$simulated"
printf '  flowrun:  %.2f s wall per run, %.0f ms per task (%d log lines per run)\n' \
  "$per_run" "$(echo "$per_run * 1000 / $tasks" | bc -l)" "$calls"
printf '  Airflow:  ~%.0f s of scheduling overhead alone for %d tasks (2.9 s/task, Windmill benchmark)\n' \
  "$(echo "$tasks * 2.905" | bc -l)" "$tasks"
printf '  ratio:    %.0fx less overhead than the published Airflow figure\n' "$(echo "$tasks * 2.905 / $per_run" | bc -l)"
echo
bench/pipeline_start.sh
