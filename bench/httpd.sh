#!/usr/bin/env bash
# bench/httpd.sh — the HTTP server (issue 14's HTTP layer): wrk with 64 connections against a
# Lua handler answering a fixed 2 KB JSON body (bench/httpd.lua: each request a task), beside
# nginx serving a static file of the same bytes, on the same machine, in the same run.
# Figures: requests/s, p50/p99 latency, and the flowrun server's RSS (peak). Measures only.
# Usage: bench/httpd.sh [SECONDS]   (per wrk run, default 10; each side is run twice, the
# better run is shown: the machine is shared). Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/nginx.sh
DUR=${1:-10}
FLOWRUN=${FLOWRUN:-./flowrun}
[ -x "$FLOWRUN" ] || make -s

tmp=$(mktemp -d /tmp/flowrun-bench-httpd.XXXXXX)
chmod 755 "$tmp" # nginx workers run as nobody
srv_pid=
cleanup() {
  [ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null || true
  nginx_stop
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# ---- flowrun ----
"$FLOWRUN" bench/httpd.lua >"$tmp/port" &
srv_pid=$!
for _ in $(seq 1 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
read -r port size <"$tmp/port"
curl -sf "http://127.0.0.1:$port/" -o "$tmp/body.json"

# ---- nginx: the same bytes as a static file ----
nport=$(free_port)
mkdir -p "$tmp/logs" "$tmp/www"
cp "$tmp/body.json" "$tmp/www/runs.json"
chmod -R a+rX "$tmp/www"
nginx_start "$tmp" "$nport" "root $tmp/www;
    location / { try_files /runs.json =404; }"
cmp -s "$tmp/body.json" <(curl -sf "http://127.0.0.1:$nport/") ||
  { echo "nginx does not serve the same body" >&2; exit 1; }

# wrk -> "requests_per_s p50_ms p99_ms"
measure() {
  wrk -t1 -c64 -d"${DUR}s" --latency "$1" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}
best() { # the run with more requests/s of two
  local a b
  a=$(measure "$1"); b=$(measure "$1")
  [ "${a%% *}" -ge "${b%% *}" ] && echo "$a" || echo "$b"
}

echo "== httpd: GET of a $size-byte JSON body, wrk -t1 -c64 -d${DUR}s (better of two runs) =="
read -r f_rps f_p50 f_p99 <<<"$(best "http://127.0.0.1:$port/")"
f_rss=$(awk '/^VmHWM/ {print $2}' "/proc/$srv_pid/status")
read -r n_rps n_p50 n_p99 <<<"$(best "http://127.0.0.1:$nport/")"
n_rss=$(for p in $(pgrep -P "$nginx_pid"); do awk '/^VmHWM/ {print $2}' "/proc/$p/status"; done | sort -n | tail -1)
awk -v fr="$f_rps" -v nr="$n_rps" -v f50="$f_p50" -v n50="$n_p50" -v f99="$f_p99" -v n99="$n_p99" \
  -v fm="$f_rss" -v nm="${n_rss:-0}" 'BEGIN {
  printf "%-26s %12s %12s %8s\n", "", "flowrun", "nginx", "ratio"
  printf "%-26s %12d %12d %7.0f%%\n", "requests/s", fr, nr, 100 * fr / nr
  printf "%-26s %12.3f %12.3f\n", "p50 latency (ms)", f50, n50
  printf "%-26s %12.3f %12.3f\n", "p99 latency (ms)", f99, n99
  printf "%-26s %12.1f %12.1f\n", "peak RSS (MB)", fm / 1024, nm / 1024 }'
echo "flowrun: one Lua task per request (srv:serve); nginx: 1 worker, static file (the ceiling)"
echo "issue 14's targets (for the runs list, later): p99 <= 10 ms, >= 30% of nginx's requests/s, RSS <= 100 MB"
