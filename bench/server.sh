#!/usr/bin/env bash
# bench/server.sh — `flowrun server` over 10,000 finished runs in the file store (issue 14):
#   * GET /api/v1/runs?limit=50 (the 50 newest) under wrk -t1 -c64: requests/s, p50, p99,
#     beside nginx serving a static file of the same bytes (the ceiling of this machine); the
#     server keeps an answer until a run changes, so it is measured twice: the same page
#     again and again (a dashboard), and a new query each time (the list built per request);
#   * 1,000 SSE clients following one live run (bench/server_sse.lua: ~40 changes in 5 s):
#     p50/p99/max delay from a state change to its event at each client (bench/server_sse.py);
#   * the server's RSS: after indexing the 10,000 runs, and with the 1,000 streams open;
#   * what 10,000 runs cost the file store: the server's index built at start (every journal
#     replayed once), and `flowrun runs` (the store's runs(): every journal replayed per call);
#   * the same runs list, RSS and start over the PostgreSQL store (a throwaway PostgreSQL 15,
#     tests/servers/pg.sh): lists from the store's indexed summaries, nothing kept in memory.
# Measures only; prints figures. Usage: bench/server.sh [SECONDS per wrk run, default 10] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx.sh
DUR=${1:-10}
NRUNS=${2:-10000}
FLOWRUN=${FLOWRUN:-./flowrun}
[ -x "$FLOWRUN" ] || make -s
ulimit -n 8192 2>/dev/null || true

tmp=$(mktemp -d /tmp/flowrun-bench-server.XXXXXX)
chmod 755 "$tmp"
srv_pid=
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null || true
  tests/servers/pg.sh stop "$tmp/pg" >/dev/null 2>&1 || true
  nginx_stop
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now() { date +%s.%N; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== writing $NRUNS finished runs of dms_to_emr (17 tasks each) =="
t0=$(now)
"$FLOWRUN" bench/server_runs.lua "$tmp/state" "$NRUNS" >/dev/null
printf "   %d journals, %s MB, in %.1f s\n" "$NRUNS" "$(du -sm "$tmp/state" | cut -f1)" "$(awk "BEGIN{print $(now)-$t0}")"

t0=$(now)
"$FLOWRUN" runs --state-dir "$tmp/state" >/dev/null
cli_runs=$(awk "BEGIN{printf \"%.2f\", $(now)-$t0}")

mkdir -p "$tmp/workflows"
cp workflows/dms_to_emr.lua bench/server_sse.lua "$tmp/workflows/"
port=$(free_port)
t0=$(now)
"$FLOWRUN" server --listen "127.0.0.1:$port" --workflows "$tmp/workflows" --state-dir "$tmp/state" \
  2>"$tmp/server.log" &
srv_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf -o /dev/null "$base/api/v1/health" && break; sleep 0.05; done
curl -sf -o "$tmp/runs.json" "$base/api/v1/runs?limit=50"
index_s=$(awk "BEGIN{printf \"%.2f\", $(now)-$t0}")
rss_index=$(rss_kb "$srv_pid")
size=$(wc -c <"$tmp/runs.json")

# ---- nginx: the same bytes as a static file ----
nport=$(free_port)
mkdir -p "$tmp/logs" "$tmp/www"
cp "$tmp/runs.json" "$tmp/www/runs.json"
chmod -R a+rX "$tmp/www"
nginx_start "$tmp" "$nport" "root $tmp/www;
    location / { try_files /runs.json =404; }"

# every request a new query: the server's answer cache never hits (the list is built each time)
cat >"$tmp/uncached.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/api/v1/runs?limit=50&nocache=" .. n)
end
LUA

# wrk -> "requests_per_s p50_ms p99_ms"
measure() {
  wrk -t1 -c64 -d"${DUR}s" --latency ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} "$1" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}
best() { # the run with more requests/s of two (the machine is shared)
  local a b
  a=$(measure "$1"); b=$(measure "$1")
  [ "${a%% *}" -ge "${b%% *}" ] && echo "$a" || echo "$b"
}

echo "== GET /api/v1/runs?limit=50 over $NRUNS runs ($size bytes), wrk -t1 -c64 -d${DUR}s (better of two) =="
read -r f_rps f_p50 f_p99 <<<"$(best "$base/api/v1/runs?limit=50")"
read -r u_rps u_p50 u_p99 <<<"$(WRK_SCRIPT="$tmp/uncached.lua" best "$base/api/v1/runs?limit=50")"
read -r n_rps n_p50 n_p99 <<<"$(best "http://127.0.0.1:$nport/")"
printf "   %-46s %10s %10s %10s\n" "" "req/s" "p50 ms" "p99 ms"
printf "   %-46s %10s %10s %10s\n" "flowrun server (the runs list)" "$f_rps" "$f_p50" "$f_p99"
printf "   %-46s %10s %10s %10s\n" "flowrun server (built for each request)" "$u_rps" "$u_p50" "$u_p99"
printf "   %-46s %10s %10s %10s\n" "nginx (a static file, same bytes)" "$n_rps" "$n_p50" "$n_p99"
awk -v f="$f_rps" -v n="$n_rps" 'BEGIN { printf "   flowrun / nginx: %.0f%%   (targets: p99 <= 10 ms, >= 30%% of nginx)\n", 100 * f / n }'

echo "== 1,000 SSE clients following one live run =="
id=$(curl -sf -X POST -H 'Content-Type: application/json' -d '{"params": {"lead": 6}}' \
  "$base/api/v1/workflows/sse_bench/runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
python3 bench/server_sse.py "$base" "/api/v1/runs/$id/events" 1000 40 >"$tmp/sse.out" &
sse_pid=$!
# the RSS with every stream open, while the run goes on
sleep 8
rss_sse=$(rss_kb "$srv_pid")
wait "$sse_pid"
python3 - "$tmp/sse.out" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().split("\n")
r = json.loads([l for l in lines if '"events"' in l][-1])
print("   %d clients, %d events received: delay from the state change to the event p50 %.1f ms, p99 %.1f ms, max %.1f ms"
      % (r["clients"], r["events"], r["p50"], r["p99"], r["max"]))
print("   (target: p99 <= 100 ms; the client is Python on the same 2 cores, its own lag is included)")
PY

echo "== memory and the file store at $NRUNS runs =="
printf "   server RSS: %.1f MB with %d runs indexed, %.1f MB with 1,000 streams open (target <= 100 MB)\n" \
  "$(awk "BEGIN{print $rss_index/1024}")" "$NRUNS" "$(awk "BEGIN{print $rss_sse/1024}")"
printf "   server start to its first runs list (every journal replayed once into the index): %s s\n" "$index_s"
printf "   flowrun runs (the file store's runs(): every journal replayed on each call): %s s\n" "$cli_runs"

echo "== the same list over the PostgreSQL store ($NRUNS runs) =="
kill "$srv_pid" 2>/dev/null || true
wait "$srv_pid" 2>/dev/null || true
srv_pid=
eval "$(tests/servers/pg.sh start "$tmp/pg")"
pgurl="postgresql://$FLOWRUN_TEST_PGUSER:$FLOWRUN_TEST_PGPASSWORD@$FLOWRUN_TEST_PGHOST:$FLOWRUN_TEST_PGPORT/$FLOWRUN_TEST_PGDATABASE"
t0=$(now)
"$FLOWRUN" bench/server_runs.lua "$pgurl" "$NRUNS" >/dev/null
printf "   %d runs written in %.1f s\n" "$NRUNS" "$(awk "BEGIN{print $(now)-$t0}")"
t0=$(now)
"$FLOWRUN" runs --store "$pgurl" >/dev/null
pg_cli_runs=$(awk "BEGIN{printf \"%.2f\", $(now)-$t0}")
port=$(free_port)
t0=$(now)
"$FLOWRUN" server --listen "127.0.0.1:$port" --workflows "$tmp/workflows" --store "$pgurl" \
  2>"$tmp/server-pg.log" &
srv_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf -o /dev/null "$base/api/v1/health" && break; sleep 0.05; done
curl -sf -o "$tmp/runs-pg.json" "$base/api/v1/runs?limit=50"
pg_index_s=$(awk "BEGIN{printf \"%.2f\", $(now)-$t0}")
read -r p_rps p_p50 p_p99 <<<"$(best "$base/api/v1/runs?limit=50")"
read -r q_rps q_p50 q_p99 <<<"$(WRK_SCRIPT="$tmp/uncached.lua" best "$base/api/v1/runs?limit=50")"
rss_pg=$(rss_kb "$srv_pid")
printf "   %-46s %10s %10s %10s\n" "" "req/s" "p50 ms" "p99 ms"
printf "   %-46s %10s %10s %10s\n" "flowrun server on PostgreSQL (the runs list)" "$p_rps" "$p_p50" "$p_p99"
printf "   %-46s %10s %10s %10s\n" "  built for each request (a query each)" "$q_rps" "$q_p50" "$q_p99"
awk -v f="$p_rps" -v n="$n_rps" 'BEGIN { printf "   flowrun on PostgreSQL / nginx: %.0f%%\n", 100 * f / n }'
printf "   server RSS %.1f MB after the load; start to its first runs list %s s; flowrun runs --store: %s s\n" \
  "$(awk "BEGIN{print $rss_pg/1024}")" "$pg_index_s" "$pg_cli_runs"
