#!/usr/bin/env bash
# tests/fakeaws.py (the fault-injecting AWS endpoint) on a free loopback port.
#   tests/servers/fakeaws.sh start DIR   prints: export FLOWRUN_TEST_FAKEAWS=http://127.0.0.1:PORT
#   tests/servers/fakeaws.sh stop DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/http_server.sh"
if [ "${1:-}" = start ]; then
  python3 -c 'import botocore' 2>/dev/null || { echo "fakeaws.sh: python3 has no botocore" >&2; exit 1; }
fi
http_server_main fakeaws FLOWRUN_TEST_FAKEAWS _fake/requests "$@" -- python3 "$here/../fakeaws.py" --port PORT
