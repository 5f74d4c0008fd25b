#!/usr/bin/env bash
# moto's server (the open-source AWS emulator) on a free loopback port, for the AWS client's
# conformance tests.
#   tests/servers/moto.sh start DIR   prints: export FLOWRUN_TEST_MOTO=http://127.0.0.1:PORT
#   tests/servers/moto.sh stop DIR
set -euo pipefail
. "$(dirname "$0")/../lib/http_server.sh"
if [ "${1:-}" = start ]; then
  python3 -c 'import moto.server' 2>/dev/null ||
    { echo "moto.sh: python3 has no moto server (pip install 'moto[server]')" >&2; exit 1; }
fi
http_server_main moto FLOWRUN_TEST_MOTO moto-api/ "$@" -- python3 -m moto.server -H 127.0.0.1 -p PORT
