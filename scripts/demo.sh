#!/usr/bin/env bash
# make demo: the DMS -> EMR pipeline on this machine, no AWS account needed.
#   Installs what is missing, builds, starts a throwaway PostgreSQL with a small shop database
#   (scripts/demo-source.sql), and runs workflows/dms_to_emr.lua with the example parameters
#   against the in-process AWS simulator (--sim). The simulated Secrets Manager holds the source
#   database's secret (given to the simulator as a seed); the pipeline's pre-flight and the
#   simulated DMS both read the local tables through it, as they would on AWS. The simulated
#   EMR step applies the batch to the Iceberg tables in Glue; Athena counts them. The ~14
#   simulated minutes play as a 60x time-lapse (about 15 s, with the live progress view on a
#   terminal); DEMO_SPEED=virtual jumps through them under virtual time (well under a second),
#   DEMO_SPEED=real takes the full 14 minutes. DEMO_FAIL=emr.step (or dms.task, emr.cluster,
#   dms.table, serverless.job, throttle=0.2) shows a failure path. DEMO_COMPUTE=serverless runs
#   the job on EMR Serverless; DEMO_MODE=incremental runs two nights of the CDC mode (the first
#   loads, then the source changes, then the second MERGEs only those changes).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/deps.sh demo --check >/dev/null 2>&1 || scripts/deps.sh demo
make -s all

tmp=$(mktemp -d /tmp/flowrun-demo.XXXXXX)
chmod 755 "$tmp"
keep=0   # a run that did not succeed: its state (journal, simulated account) is kept to resume
cleanup() {
  tests/servers/pg.sh stop "$tmp/pg" >/dev/null 2>&1 || true
  if [ $keep = 1 ] && [ -d "$tmp/state" ]; then
    rm -rf "$tmp/pg" "$tmp/seed.json"
    echo "== the run's state and its simulated AWS account are kept in $tmp/state: the resume line"
    echo "   above continues it (the simulator plays its durations in real time: a few minutes);"
    echo "   rm -rf $tmp when done"
  else
    rm -rf "$tmp"
  fi
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
if [ "${DEMO_COMPUTE:-cluster}" = serverless ]; then
  args+=(--var compute=serverless
         --var serverless_execution_role=arn:aws:iam::123456789012:role/flowrun-demo-serverless)
fi
if [ "${DEMO_MODE:-full}" = incremental ]; then
  args+=(--var mode=incremental
         --var dms_task_arn=arn:aws:dms:us-east-1:123456789012:task:FLOWRUNDEMOCDCTASK0000000
         --var raw_uri=s3://flowrun-demo-raw/cdc --var glue_database=lake_cdc --var cdc_count_check=true)
fi
case "${DEMO_SPEED:-lapse}" in
  virtual) args+=(--virtual-time) ;;
  real) ;;
  *)  # every simulated duration and poll interval divided by 60
    export FLOWRUN_SIM_DURATIONS='{"dms_start":1,"dms_rows_per_second":120000,"dms_min_table":0.4,
      "dms_stop":0.4,"emr_starting":5.5,"emr_bootstrapping":2,"emr_step":4,"emr_step_per_table":0.33,
      "emr_step_pending":0.2,"emr_cancel":0.3,"emr_terminating":1.3,"athena_query":0.1,
      "dms_cdc_interval":1,"serverless_app_start":1.5,"serverless_app_stop":0.5,
      "serverless_scheduling":0.7,"serverless_job":4,"serverless_job_per_table":0.33,
      "serverless_cancel":0.3}'
    args+=(--var dms_poll_every=0.25 --var emr_poll_every=0.5 --var step_log_wait=2) ;;
esac
if [ -n "${DEMO_FAIL:-}" ]; then args+=(--sim-fail "$DEMO_FAIL"); fi

echo "== flowrun ${args[*]}"
rc=0
./flowrun "${args[@]}" || rc=$?
if [ $rc = 0 ] && [ "${DEMO_MODE:-full}" = incremental ]; then
  echo "== the source changes: 10 new orders, 10 cancelled, 3 deleted with their items"
  psql "$conninfo" -q -v ON_ERROR_STOP=1 -c "
    INSERT INTO public.orders SELECT g, 1, 'new', 9.99, now() FROM generate_series(20001, 20010) g;
    UPDATE public.orders SET status = 'cancelled' WHERE id BETWEEN 200 AND 209;
    DELETE FROM public.order_items WHERE order_id BETWEEN 300 AND 302;
    DELETE FROM public.orders WHERE id BETWEEN 300 AND 302;"
  [ "${DEMO_SPEED:-lapse}" = virtual ] || sleep 1   # DMS captures changes once a (lapsed) minute
  echo "== the next night: flowrun ${args[*]}"
  ./flowrun "${args[@]}" || rc=$?
fi

if [ -f "$tmp/state/sim-state.json" ]; then
  echo "== what the simulated AWS account holds now:"
  python3 - "$tmp/state/sim-state.json" <<'PY'
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
apps = (w.get("emr_serverless") or {}).get("applications") or {}
for a in (apps.values() if isinstance(apps, dict) else []):
    runs = a.get("runs") or {}
    runs = ", ".join(r["name"] + " " + r["state"] for r in (runs.values() if isinstance(runs, dict) else []))
    print("   EMR Serverless application %s %s; job runs: %s" % (a["applicationId"], a["state"], runs or "none"))
raw = w["s3"]["buckets"].get("flowrun-demo-raw", {}).get("objects") or {}
print("   S3 raw zone: %d Parquet file(s) under s3://flowrun-demo-raw/ (%d CDC)" % (len(raw),
      len([k for k in raw if not k.rsplit("/", 1)[-1].startswith("LOAD")])))
PY
fi
[ $rc = 0 ] || keep=1
exit $rc
