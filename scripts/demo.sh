#!/usr/bin/env bash
# make demo: the DMS -> EMR pipeline on this machine, no AWS account needed.
#   Installs what is missing, builds, starts a throwaway PostgreSQL with a small shop database
#   (scripts/demo-source.sql), and runs workflows/dms_to_emr.lua with the example parameters
#   against the in-process AWS simulator (--sim). The simulated Secrets Manager holds the source
#   database's secret (given to the simulator as a seed); the pipeline's pre-flight and the
#   simulated DMS both read the local tables through it, as they would on AWS. The simulated
#   EMR step applies the batch to the Iceberg tables in Glue; Athena counts them. The ~15 simulated minutes play as a 60x time-lapse (about 20 s, with the live
#   progress view on a terminal); DEMO_SPEED=virtual jumps through them under virtual time (well
#   under a second), DEMO_SPEED=real takes the full 15 minutes. DEMO_FAIL=emr.step (or dms.task,
#   emr.cluster, dms.table, throttle=0.2) shows a failure path.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh
make -s all

tmp=$(mktemp -d /tmp/flowrun-demo.XXXXXX)
chmod 755 "$tmp"
cleanup() {
  tests/servers/pg.sh stop "$tmp/pg" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting a throwaway PostgreSQL (state in $tmp/pg)"
eval "$(tests/servers/pg.sh start "$tmp/pg")"
conninfo=$FLOWRUN_TEST_PG
psql "$conninfo" -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
  -f scripts/demo-source.sql >/dev/null
echo "== source tables:"
psql "$conninfo" -At -F ' ' -c "SELECT 'public.customers', count(*) FROM public.customers
  UNION ALL SELECT 'public.orders', count(*) FROM public.orders
  UNION ALL SELECT 'public.order_items', count(*) FROM public.order_items" | sed 's/^/   /'

# the simulated account's secret of the source database: this throwaway server
( umask 077
  printf '{"secrets": [{"Name": "flowrun/demo/source-db", "SecretJSON": {"engine": "postgres",
    "host": "%s", "port": %s, "username": "%s", "password": "%s", "dbname": "%s"}}]}\n' \
    "$FLOWRUN_TEST_PGHOST" "$FLOWRUN_TEST_PGPORT" "$FLOWRUN_TEST_PGUSER" "$FLOWRUN_TEST_PGPASSWORD" \
    "$FLOWRUN_TEST_PGDATABASE" >"$tmp/seed.json" )
export FLOWRUN_SIM_SEED=$tmp/seed.json

args=(workflows/dms_to_emr.lua --vars-file workflows/config/example.json
      --state-dir "$tmp/state" --sim)
case "${DEMO_SPEED:-lapse}" in
  virtual) args+=(--virtual-time) ;;
  real) ;;
  *)  # every simulated duration and poll interval divided by 60
    export FLOWRUN_SIM_DURATIONS='{"dms_start":1,"dms_rows_per_second":120000,"dms_min_table":0.4,
      "dms_stop":0.4,"emr_starting":5.5,"emr_bootstrapping":2,"emr_step":4,"emr_step_per_table":0.33,"emr_step_pending":0.2,
      "emr_cancel":0.3,"emr_terminating":1.3,"athena_query":0.1}'
    args+=(--var dms_poll_every=0.25 --var emr_poll_every=0.5 --var step_log_wait=2) ;;
esac
if [ -n "${DEMO_FAIL:-}" ]; then args+=(--sim-fail "$DEMO_FAIL"); fi

echo "== flowrun ${args[*]}"
rc=0
FLOWRUN_SIM_STATE="$tmp/sim-state.json" ./flowrun "${args[@]}" || rc=$?

if [ -f "$tmp/sim-state.json" ]; then
  echo "== what the simulated AWS account holds now:"
  python3 - "$tmp/sim-state.json" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))
for c in (w["emr"]["clusters"] or {}).values() if isinstance(w["emr"]["clusters"], dict) else []:
    steps = ", ".join(s["Name"] + " " + s["Status"]["State"] for s in c.get("steps") or [])
    print("   EMR cluster %s %s; steps: %s" % (c["Id"], c["Status"]["State"], steps or "none"))
dbs = w["glue"]["databases"]
for db in (dbs.values() if isinstance(dbs, dict) else []):
    for t in (db.get("tables") or {}).values() if isinstance(db.get("tables"), dict) else []:
        print("   Glue table %s.%s (%s) at %s" % (db["Name"], t["Name"], t["Parameters"]["table_type"],
                                               t["StorageDescriptor"]["Location"]))
raw = w["s3"]["buckets"].get("flowrun-demo-raw", {}).get("objects") or {}
print("   S3 raw zone: %d Parquet file(s) under s3://flowrun-demo-raw/raw/" % len(raw))
PY
fi
exit $rc
