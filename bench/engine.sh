#!/usr/bin/env bash
# The workflow engine's per-task overhead (bench/engine.lua), journal on and off, with the
# Airflow figure beside ours. Usage: bench/engine.sh [TASKS] [WIDTH]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FLOWRUN:=./flowrun}"
exec "$FLOWRUN" bench/engine.lua "${1:-10000}" "${2:-1000}"
