#!/usr/bin/env bash
# make bench: every benchmark, our figures beside the peers' measured in the same run.
# BENCH=core,aws,... picks some. Benchmarks measure; they assert nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench --check >/dev/null 2>&1 || scripts/deps.sh bench
make -s all
areas=${BENCH:-core,engine,aws,pg,pipeline,store,httpd,server,schedule}
status=0
for area in ${areas//,/ }; do
  f=bench/$area.sh
  [ -x "$f" ] || { echo "(no benchmark $f)"; continue; }
  echo
  echo "################ $area ################"
  "$f" || { echo "benchmark $area failed (exit $?)"; status=1; }
done
exit $status
