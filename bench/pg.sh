#!/usr/bin/env bash
# bench/pg.sh — PostgreSQL: flowrun's pg module beside pgbench (the ceiling) and psycopg2, on the
# same throwaway server (tests/servers/pg.sh), in one run. Single-row SELECT by primary key on
# pgbench_accounts (scale 1, 100,000 rows):
#   - 20,000 queries from 16 concurrent clients (flowrun: 16 tasks on a pool of 16;
#     pgbench -S -c 16 -j 2; psycopg2: 16 threads, one connection each)
#   - 20,000 queries from one client, sequentially (round-trip bound)
#   - stretch: the same from one connection with libpq's pipeline mode (flowrun only)
# pgbench -S uses the simple protocol; "-M prepared" is shown too, since flowrun prepares its
# statements (once per connection) the way pgbench -M prepared does.
# Usage: bench/pg.sh [N]      (N queries per run, default 20000). Takes well under 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}

[ -x ./flowrun ] || make -s
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PY=/usr/bin/python3 # Debian's python3 with python3-psycopg2

dir=$(mktemp -d /tmp/flowrun-bench-pg.XXXXXX)
chmod 755 "$dir"
cleanup() { tests/servers/pg.sh stop "$dir/pg" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
eval "$(tests/servers/pg.sh start "$dir/pg")"
ci=$FLOWRUN_TEST_PG
export PGHOST=$FLOWRUN_TEST_PGHOST PGPORT=$FLOWRUN_TEST_PGPORT PGUSER=$FLOWRUN_TEST_PGUSER
export PGPASSWORD=$FLOWRUN_TEST_PGPASSWORD PGDATABASE=$FLOWRUN_TEST_PGDATABASE
"$PGBIN/pgbench" -i -s 1 -q >/dev/null 2>&1

pgbench_tps() { # clients threads transactions-per-client mode
  "$PGBIN/pgbench" -n -S -c "$1" -j "$2" -t "$3" -M "$4" 2>/dev/null |
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | cut -d. -f1
}

# warm the cache once
"$PGBIN/pgbench" -n -S -c 4 -j 2 -t 2000 >/dev/null 2>&1

# best of two consecutive runs each, to dampen the noise of a shared machine
best() { local a b; a=$("$@"); b=$("$@"); [ "${a:-0}" -gt "${b:-0}" ] && echo "$a" || echo "$b"; }

fr16=$(best ./flowrun bench/pg.lua "$ci" "$N" 16)
pb16=$(best pgbench_tps 16 2 $((N / 16)) simple)
pb16p=$(best pgbench_tps 16 2 $((N / 16)) prepared)
py16=$(best $PY bench/pg.py "$ci" "$N" 16)

fr1=$(best ./flowrun bench/pg.lua "$ci" "$N" 1)
pb1=$(best pgbench_tps 1 1 "$N" simple)
pb1p=$(best pgbench_tps 1 1 "$N" prepared)
py1=$(best $PY bench/pg.py "$ci" "$N" 1)

frpipe=$(best ./flowrun bench/pg.lua "$ci" "$N" 16 pipeline)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a ~ /^[0-9]+$/) printf "%.2fx", a / b; else print "-" }'; }

printf '\nPostgreSQL 15, single-row SELECT by primary key, %d queries (queries/s, best of 2)\n' "$N"
printf '%-34s %10s %12s %14s %10s   %s\n' "" "flowrun" "pgbench -S" "pgbench -M prep" "psycopg2" "flowrun vs pgbench / psycopg2"
printf '%-34s %10s %12s %14s %10s   %s / %s\n' "16 clients (pool of 16 / threads)" "$fr16" "$pb16" "$pb16p" "$py16" "$(ratio "$fr16" "$pb16")" "$(ratio "$fr16" "$py16")"
printf '%-34s %10s %12s %14s %10s   %s / %s\n' "1 client, sequential" "$fr1" "$pb1" "$pb1p" "$py1" "$(ratio "$fr1" "$pb1")" "$(ratio "$fr1" "$py1")"
printf '%-34s %10s %12s %14s %10s   %s / %s\n' "16 tasks on 1 conn, pipeline mode" "$frpipe" "$pb16" "$pb16p" "$py16" "$(ratio "$frpipe" "$pb16")" "$(ratio "$frpipe" "$py16")"
printf '(targets: 16 clients >= 0.8x pgbench -S and >= 1.5x psycopg2; sequential >= 1x psycopg2)\n'
