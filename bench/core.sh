#!/usr/bin/env bash
# Runtime core benchmarks (issue 2), printed beside Python asyncio and lua5.4 measured now.
#   1. N concurrent tasks each sleeping a random 0-1 s: peak RSS per waiting task above the
#      empty runtime's, and p50/p99 lateness of wake-ups
#   2. spawn-and-complete of 1,000,000 trivial tasks: tasks per second
#   3. `flowrun -e 'return 1'` wall time beside `lua5.4 -e 'return 1'`
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWRUN=${FLOWRUN:-./flowrun}
PY=/usr/bin/python3   # Debian's python3, as the issue names it
N=${BENCH_TASKS:-100000}
S=${BENCH_SPAWN:-1000000}

field() { $PY -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo "== core 1: $N concurrent tasks, each sleeping a random 0-1 s =="
fb=$($FLOWRUN bench/core_sleep.lua "$N" baseline); fr=$($FLOWRUN bench/core_sleep.lua "$N")
pb=$($PY bench/core_sleep.py "$N" baseline);        pr=$($PY bench/core_sleep.py "$N")
$PY - "$N" "$fb" "$fr" "$pb" "$pr" <<'PYEOF'
import json, sys
n = int(sys.argv[1]); fb, fr, pb, pr = (json.loads(a) for a in sys.argv[2:6])
fbytes = (fr["peak_kb"] - fb["peak_kb"]) * 1024 / n
pbytes = (pr["peak_kb"] - pb["peak_kb"]) * 1024 / n
print("%-28s %14s %16s %10s" % ("", "flowrun", "python asyncio", "ratio"))
print("%-28s %14.0f %16.0f %9.1fx" % ("bytes per waiting task", fbytes, pbytes, pbytes / fbytes))
for k, label in (("p50_ms", "p50 wake-up lateness (ms)"), ("p99_ms", "p99 wake-up lateness (ms)"), ("max_ms", "max wake-up lateness (ms)")):
    print("%-28s %14.2f %16.2f %9.1fx" % (label, fr[k], pr[k], pr[k] / max(fr[k], 1e-6)))
print("targets: <= 1536 bytes per task, p99 <= 20 ms")
PYEOF

echo
echo "== core 2: spawn-and-complete of $S trivial tasks =="
fs=$($FLOWRUN bench/core_spawn.lua "$S"); ps=$($PY bench/core_spawn.py "$S")
$PY - "$fs" "$ps" <<'PYEOF'
import json, sys
f, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("%-28s %14s %16s %10s" % ("", "flowrun", "python asyncio", "ratio"))
print("%-28s %14.0f %16.0f %9.1fx" % ("tasks per second", f["per_second"], p["per_second"], f["per_second"] / p["per_second"]))
print("targets: >= 1,000,000 per second, >= 20x asyncio")
PYEOF

echo
echo "== core 3: start-up, -e 'return 1' =="
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 20 --runs 300 --export-json /tmp/flowrun-startup.json \
    "$FLOWRUN -e 'return 1'" "lua5.4 -e 'return 1'" >/dev/null 2>&1
  $PY - <<'PYEOF'
import json
r = json.load(open("/tmp/flowrun-startup.json"))["results"]
f, l = r[0]["mean"] * 1000, r[1]["mean"] * 1000
print("%-28s %14s %16s %10s" % ("", "flowrun", "lua5.4", "ratio"))
print("%-28s %14.2f %16.2f %9.2fx" % ("mean wall time (ms)", f, l, f / l))
print("target: <= 2x lua5.4")
PYEOF
else
  echo "hyperfine missing (scripts/deps.sh installs it)"
fi
