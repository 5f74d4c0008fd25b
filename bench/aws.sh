#!/usr/bin/env bash
# AWS client benchmarks (issue 3), flowrun's figures beside the peers' measured in the same run:
#   1. SigV4 signatures per second: aws.sigv4 vs botocore's SigV4Auth (target >= 100x)
#   2. DescribeReplicationTasks against a local nginx answering a static JSON (its own ceiling
#      measured with wrk first):
#      a. one-shot `flowrun -e` end to end vs `aws dms describe-replication-tasks` (>= 30x)
#      b. 64 calls in flight from one flowrun vs boto3 with 64 threads (>= 5x, and >= 50% of
#         the stub's ceiling)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWRUN=${FLOWRUN:-./flowrun}
PY=${PY:-python3}          # the python3 with boto3/botocore (pyenv's on this machine)
SIGN_N=${BENCH_SIGN:-300000}
CALLS=${BENCH_CALLS:-20000}
BOTO_CALLS=${BENCH_BOTO_CALLS:-3000}

tmp=$(mktemp -d /tmp/flowrun-bench-aws.XXXXXX)
. bench/nginx.sh
cleanup() {
  nginx_stop
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== aws 1: SigV4 signatures per second =="
fs=$($FLOWRUN bench/aws_sign.lua "$SIGN_N")
ps=$($PY bench/aws_sign.py 20000)
$PY - "$fs" "$ps" <<'PYEOF'
import json, sys
f, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("%-30s %14s %16s %10s" % ("", "flowrun", "botocore", "ratio"))
print("%-30s %14.0f %16.0f %9.1fx" % ("signatures per second", f["per_second"], p["per_second"], f["per_second"] / p["per_second"]))
print("target: >= 100x")
PYEOF

# ---- the stub: nginx answering a DescribeReplicationTasks-shaped JSON on a free port ----
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
body='{"ReplicationTasks":[{"ReplicationTaskIdentifier":"orders-full-load","ReplicationTaskArn":"arn:aws:dms:us-east-1:123456789012:task:ORDERSFULLLOAD","SourceEndpointArn":"arn:aws:dms:us-east-1:123456789012:endpoint:SRC","TargetEndpointArn":"arn:aws:dms:us-east-1:123456789012:endpoint:TGT","ReplicationInstanceArn":"arn:aws:dms:us-east-1:123456789012:rep:INST","MigrationType":"full-load","Status":"running","ReplicationTaskCreationDate":1767225600.0,"ReplicationTaskStartDate":1767229200.0,"ReplicationTaskStats":{"FullLoadProgressPercent":42,"ElapsedTimeMillis":123456,"TablesLoaded":3,"TablesLoading":2,"TablesQueued":5,"TablesErrored":0}}]}'
nginx_start "$tmp" "$port" "location / {
      default_type application/x-amz-json-1.1;
      add_header x-amzn-RequestId bench-request-id;
      return 200 '$body';
    }"
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$port/" | $PY -c 'import json,sys; json.load(sys.stdin)' ||
  { echo "the stub does not answer JSON" >&2; exit 1; }

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=AKIDBENCH \
  AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE FLOWRUN_DEBUG

echo
echo "== aws 2: DescribeReplicationTasks against nginx (static JSON, 1 worker, 127.0.0.1:$port) =="
ceiling=$(wrk -t1 -c64 -d5s "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
echo "stub ceiling (wrk, 64 connections): $ceiling requests/s"

echo
echo "-- 2a: one-shot, end to end --"
hyperfine -N --warmup 3 --runs 30 --export-json "$tmp/f.json" \
  "$FLOWRUN -e 'return aws.dms.describe_replication_tasks{}'" >/dev/null
hyperfine -N --warmup 1 --runs 5 --export-json "$tmp/a.json" \
  "aws dms describe-replication-tasks" >/dev/null 2>&1
$PY - "$tmp/f.json" "$tmp/a.json" <<'PYEOF'
import json, sys
f = json.load(open(sys.argv[1]))["results"][0]
a = json.load(open(sys.argv[2]))["results"][0]
print("%-30s %14s %16s %10s" % ("", "flowrun -e", "aws cli", "ratio"))
print("%-30s %14.1f %16.1f %9.1fx" % ("mean wall time (ms)", f["mean"] * 1e3, a["mean"] * 1e3, a["mean"] / f["mean"]))
print("%-30s %14.1f %16.1f" % ("min wall time (ms)", f["min"] * 1e3, a["min"] * 1e3))
print("target: >= 30x")
PYEOF

echo
echo "-- 2b: 64 calls in flight --"
fc=$($FLOWRUN bench/aws_dms.lua "$CALLS" 64)
bc=$($PY bench/aws_dms.py "$BOTO_CALLS" 64)
hc=$($FLOWRUN bench/aws_http.lua "$CALLS" 64)
$PY - "$fc" "$bc" "$ceiling" "$hc" <<'PYEOF'
import json, sys
f, b, c, h = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
print("%-30s %14s %16s %10s" % ("", "flowrun", "boto3 64 thr", "ratio"))
print("%-30s %14.0f %16.0f %9.1fx" % ("calls per second", f["per_second"], b["per_second"], f["per_second"] / b["per_second"]))
print("%-30s %13.0f%% %15.0f%%" % ("of the stub's ceiling", 100 * f["per_second"] / c, 100 * b["per_second"] / c))
print("%-30s %14.0f %15.0f%%" % ("(http.request alone, /s)", h["per_second"], 100 * h["per_second"] / c))
print("(%d and %d calls; every answer parsed)" % (f["calls"], b["calls"]))
print("targets: >= 5x boto3, >= 50% of the stub's ceiling")
PYEOF
