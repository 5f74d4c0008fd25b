# http_server.sh — start/stop of a test HTTP server on a free loopback port, shared by
# tests/servers/*.sh. Source it, then:
#   http_server_main NAME ENV_VAR PROBE_PATH "$@" -- COMMAND... (PORT in COMMAND is replaced)
# "start DIR" runs COMMAND in its own process group, waits until http://127.0.0.1:PORT/PROBE_PATH
# answers and prints "export ENV_VAR=http://127.0.0.1:PORT"; "stop DIR" ends the group.
http_server_main() {
  local name=$1 var=$2 probe=$3 cmd=${4:?start|stop} dir=${5:?state directory}
  shift 5
  [ "${1:-}" = "--" ] && shift
  mkdir -p "$dir"
  case "$cmd" in
  start)
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    local argv=()
    for a in "$@"; do argv+=("${a//PORT/$port}"); done
    # setsid: its own process group, so stop can end it and anything it started
    setsid "${argv[@]}" >"$dir/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
    for _ in $(seq 1 150); do
      if python3 - "$port" "$probe" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen("http://127.0.0.1:%s/%s" % (sys.argv[1], sys.argv[2]), timeout=1).read()
PY
      then
        echo "export $var=http://127.0.0.1:$port"
        return 0
      fi
      kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || { cat "$dir/$name.log" >&2; return 1; }
      sleep 0.2
    done
    echo "$name: did not answer on port $port" >&2
    return 1
    ;;
  stop)
    if [ -f "$dir/$name.pid" ]; then
      local pid
      pid=$(cat "$dir/$name.pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 -- "-$pid" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    return 2
    ;;
  esac
}
