#!/usr/bin/env bash
# bench/pipeline_start.sh — when to start the EMR cluster: while DMS loads (start_cluster=early,
# the default) or once the raw zone is good (after_dms, the seed's order). dms_to_emr in the
# simulator under virtual time with realistic durations: a 20-minute DMS load, an 8-minute
# cluster start (STARTING 6 min, BOOTSTRAPPING 2 min), a 10-minute Spark step, EMR's pollers at
# botocore's 30 s. For each order: the run's wall time (simulated) and the cluster-minutes it
# pays (the cluster's CreationDateTime to EndDateTime, termination included: EMR bills per
# second from provisioning to termination).
#   bench/pipeline_start.sh      (uses FLOWRUN_TEST_PG* or starts a throwaway server)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s all
tmp=$(mktemp -d /tmp/flowrun-bench-start.XXXXXX)
chmod 755 "$tmp"
started=0
db="flowrun_bench_start_$$"
cleanup() {
  psql "$FLOWRUN_TEST_PG" -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  [ $started = 1 ] && tests/servers/pg.sh stop "$tmp/pg" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -z "${FLOWRUN_TEST_PGPORT:-}" ]; then
  eval "$(tests/servers/pg.sh start "$tmp/pg")"
  started=1
fi
psql "$FLOWRUN_TEST_PG" -q -c "CREATE DATABASE $db"
psql "$FLOWRUN_TEST_PG dbname=$db" -q -c "SET client_min_messages = warning" \
  -f scripts/demo-source.sql >/dev/null
( umask 077
  printf '{"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": {"engine": "postgres",
    "host": "%s", "port": %s, "username": "%s", "password": "%s", "dbname": "%s"}}]}\n' \
    "$FLOWRUN_TEST_PGHOST" "$FLOWRUN_TEST_PGPORT" "$FLOWRUN_TEST_PGUSER" "$FLOWRUN_TEST_PGPASSWORD" \
    "$db" >"$tmp/seed.json" )
export FLOWRUN_SIM_SEED=$tmp/seed.json
# every table takes 19 min after the task's 1-minute start: the load ends 20 min after it starts
export FLOWRUN_SIM_DURATIONS='{"dms_start": 60, "dms_min_table": 1140, "dms_rows_per_second": 1e9,
  "emr_starting": 360, "emr_bootstrapping": 120, "emr_step": 600, "emr_step_per_table": 0,
  "emr_step_pending": 0}'

for order in after_dms early; do
  FLOWRUN_SIM_STATE="$tmp/sim-$order.json" ./flowrun workflows/dms_to_emr.lua \
    --vars-file workflows/config/example.json --var start_cluster=$order --var step_log_wait=0 \
    --state-dir "$tmp/state-$order" --sim --virtual-time --log-format json >"$tmp/out-$order" 2>&1 \
    || { echo "run ($order) failed:"; tail -20 "$tmp/out-$order"; exit 1; }
done

python3 - "$tmp" <<'PY'
import json, os, sys
tmp = sys.argv[1]
rows = {}
for order in ("after_dms", "early"):
    w = json.load(open(os.path.join(tmp, "sim-%s.json" % order)))
    c = list(w["emr"]["clusters"].values())[0]
    tl = c["Status"]["Timeline"]
    ends = []
    for line in open(os.path.join(tmp, "out-%s" % order)):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("time"), (int, float)):
            ends.append(r["time"])
    first, last = min(ends), max(ends)
    rows[order] = {"wall": (last - first) / 60,
                   "cluster": (tl["EndDateTime"] - tl["CreationDateTime"]) / 60}
print("dms_to_emr, simulated: a 20-min DMS load, an 8-min cluster start, a 10-min step")
print("  %-36s %12s %16s" % ("", "wall time", "cluster-minutes"))
for order, label in (("after_dms", "cluster after DMS (the seed's order)"), ("early", "cluster while DMS loads (early)")):
    r = rows[order]
    print("  %-36s %9.1f min %12.1f min" % (label, r["wall"], r["cluster"]))
a, e = rows["after_dms"], rows["early"]
print("  early: %.1f min sooner (%.0f%%), %+.1f cluster-minutes (the cluster waits for DMS)"
      % (a["wall"] - e["wall"], 100 * (a["wall"] - e["wall"]) / a["wall"], e["cluster"] - a["cluster"]))
PY
