#!/usr/bin/env bash
# Installs the Debian packages flowrun needs, only those missing, for what is about to run.
#   scripts/deps.sh [GROUP]          install what GROUP needs (with sudo when not root)
#   scripts/deps.sh [GROUP] --check  exit 1 when something GROUP needs is missing, install nothing
# GROUP: demo (build, run, the demo's throwaway PostgreSQL: make demo), test (the default: the
# demo's and what the test suite drives: make test), bench (the tests' and the benchmarks' peers
# and load generators: make bench).
set -euo pipefail

group=test
check=0
for a in "$@"; do
  case "$a" in
    --check) check=1 ;;
    demo|test|bench) group=$a ;;
    *) echo "usage: scripts/deps.sh [demo|test|bench] [--check]" >&2; exit 2 ;;
  esac
done

packages=(
  # build
  gcc make pkg-config
  liblua5.4-dev libuv1-dev libcurl4-openssl-dev libssl-dev libjansson-dev libpq-dev
  libexpat1-dev libedit-dev libh2o-dev zlib1g-dev
  # run time: the command line's option parser; Graphviz lays out the server's DAG pages
  lua-argparse graphviz
  # the demo: its throwaway PostgreSQL (server and psql) and the summary of the simulated account
  postgresql python3
)
if [ $group != demo ]; then
  packages+=(
    # tests
    lua5.4 lua-busted lua-lpeg lua-filesystem perl
    python3-botocore ca-certificates openssl
    python3-croniter  # oracle of tests/py/test_schedule_oracle.py (runs under /usr/bin/python3)
    clang libclang-rt-14-dev   # the libFuzzer targets (tests/fuzz) and their smoke run
    chromium          # the web UI's browser tests (tests/browser, driven by npm's playwright-core)
    tmux  # the terminal emulator tests/py/test_view_tty.py and test_repl_*.py drive
  )
fi
if [ $group = bench ]; then
  # benchmarks: the ceiling (nginx), load generators, the peers' drivers, CPU and memory
  packages+=(nginx-light wrk hyperfine python3-psycopg2 time)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm run the browser tests' driver (playwright-core); Debian's packages unless a node
# is already there (another distribution of it may already provide npm)
browser_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
browser_ok=1
moto_ok=1
if [ $group != demo ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing+=(nodejs npm)
  fi
  [ -d "$browser_dir/node_modules/playwright-core" ] || browser_ok=0
  # moto (the AWS emulator the tests talk to) comes with this machine's python3; Debian 12 has
  # no package of it, so its absence is reported, not silently skipped.
  python3 -c 'import moto.server, boto3, botocore' 2>/dev/null || moto_ok=0
fi

if [ $check = 1 ]; then
  [ ${#missing[@]} -eq 0 ] && [ $moto_ok = 1 ] && [ $browser_ok = 1 ] && exit 0
  [ ${#missing[@]} -gt 0 ] && echo "missing packages: ${missing[*]}" >&2
  [ $browser_ok = 0 ] && echo "missing: tests/browser/node_modules (npm ci)" >&2
  [ $moto_ok = 0 ] && echo "missing: python3 modules moto (with its server), boto3, botocore" >&2
  exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "scripts/deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Keep Debian's postgresql/nginx from starting system-wide servers: the tests start their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# the browser tests' driver, from the npm registry at the versions of its lock file
if [ $browser_ok = 0 ]; then
  echo "scripts/deps.sh: npm ci in tests/browser (playwright-core; the browser is Debian's chromium)" >&2
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

if [ $moto_ok = 0 ]; then
  echo "scripts/deps.sh: python3 lacks moto 5 (with its server), boto3 or botocore;" >&2
  echo "  install them into $(command -v python3) (pip install 'moto[server]' boto3)" >&2
  exit 1
fi
