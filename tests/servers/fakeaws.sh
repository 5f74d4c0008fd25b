#!/usr/bin/env bash
# tests/fakeaws.py (the fault-injecting AWS endpoint) on a free loopback port.
#   tests/servers/fakeaws.sh start DIR   prints: export FLOWRUN_TEST_FAKEAWS=http://127.0.0.1:PORT
#   tests/servers/fakeaws.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?state directory}
mkdir -p "$dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

case "$cmd" in
start)
  here=$(cd "$(dirname "$0")" && pwd)
  python3 -c 'import botocore' 2>/dev/null || { echo "fakeaws.sh: python3 has no botocore" >&2; exit 1; }
  port=$(free_port)
  # setsid: its own process group, so stop can end it and anything it started
  setsid python3 "$here/../fakeaws.py" --port "$port" >"$dir/fakeaws.log" 2>&1 < /dev/null &
  echo $! >"$dir/fakeaws.pid"
  for _ in $(seq 1 150); do
    if python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/_fake/requests" % sys.argv[1], timeout=1).read()
PY
    then
      echo "export FLOWRUN_TEST_FAKEAWS=http://127.0.0.1:$port"
      exit 0
    fi
    kill -0 "$(cat "$dir/fakeaws.pid")" 2>/dev/null || { cat "$dir/fakeaws.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "fakeaws.sh: fakeaws did not answer on port $port" >&2
  exit 1
  ;;
stop)
  if [ -f "$dir/fakeaws.pid" ]; then
    pid=$(cat "$dir/fakeaws.pid")
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || true
    rm -f "$dir/fakeaws.pid"
  fi
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
