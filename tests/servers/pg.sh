#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the tests and the benchmark.
#   tests/servers/pg.sh start DIR   initdb into DIR/data, listen on a Unix socket in DIR and a
#                                   free 127.0.0.1 port; prints the export lines tests read
#   tests/servers/pg.sh stop DIR    stop the server and remove DIR
# As root the server runs as the unprivileged `postgres` user (initdb refuses root).
# Auth: scram-sha-256 for every connection, so a wrong password fails as it would in production.
# Exports:
#   FLOWRUN_TEST_PG        conninfo (TCP, with the password) for user flowrun, database flowrun
#   FLOWRUN_TEST_PG_SOCKET conninfo over the Unix socket
#   FLOWRUN_TEST_PGHOST / PGPORT / PGUSER / PGPASSWORD / PGDATABASE parts of it
#   FLOWRUN_TEST_PGDATA    the data directory, FLOWRUN_TEST_PGLOG its log, PGBIN the binaries
#   FLOWRUN_TEST_PGCTL     a command prefix that runs pg_ctl as the server's user
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PGBIN/pg_ctl" ]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[ -x "$PGBIN/pg_ctl" ] || { echo "pg.sh: PostgreSQL server binaries not found" >&2; exit 1; }

as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
fi

user=flowrun
password=flowrun-test-pw-7Hq2
db=flowrun

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    chmod 755 "$dir"
    # the server user must be able to reach DIR
    d=$(dirname "$dir")
    while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  fi
  pwfile="$dir/.pw"
  ( umask 077; printf '%s\n' "$password" >"$pwfile" )
  [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
  "${as_pg[@]}" "$PGBIN/initdb" -D "$dir/data" -U "$user" --pwfile="$pwfile" \
    --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$pwfile"
  port=$(free_port)
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 120
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_line_prefix = '%m [%p] '
log_min_error_statement = error
logging_collector = off
EOF
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
    >"$dir/pg_ctl.log" 2>&1 || { cat "$dir/pg_ctl.log" "$dir/server.log" >&2; exit 1; }
  PGPASSWORD=$password "$PGBIN/psql" -qX -h "$dir" -p "$port" -U "$user" -d postgres \
    -c "CREATE DATABASE $db" >/dev/null
  echo "$port" >"$dir/port"
  echo "export FLOWRUN_TEST_PG='host=127.0.0.1 port=$port user=$user password=$password dbname=$db'"
  echo "export FLOWRUN_TEST_PG_SOCKET='host=$dir port=$port user=$user password=$password dbname=$db'"
  echo "export FLOWRUN_TEST_PGHOST=127.0.0.1"
  echo "export FLOWRUN_TEST_PGPORT=$port"
  echo "export FLOWRUN_TEST_PGUSER=$user"
  echo "export FLOWRUN_TEST_PGPASSWORD=$password"
  echo "export FLOWRUN_TEST_PGDATABASE=$db"
  echo "export FLOWRUN_TEST_PGDATA=$dir/data"
  echo "export FLOWRUN_TEST_PGLOG=$dir/server.log"
  echo "export PGBIN=$PGBIN"
  echo "export FLOWRUN_TEST_PGCTL='${as_pg[*]} $PGBIN/pg_ctl'"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
