#!/usr/bin/env bash
# make test: install what is missing, build, start the servers the tests need on loopback, run
# every test through prove, stop the servers. ASAN=1 runs the same suite on an ASan+UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/deps.sh --check >/dev/null 2>&1 || scripts/deps.sh

if [ "${ASAN:-0}" = 1 ]; then
  build=build-asan
  san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  make -s BUILD=$build BIN=$build/flowrun CFLAGS="-O1 -g $san" LDFLAGS="$san" all ctests
  make -s fuzz-build
  export FLOWRUN=$root/$build/flowrun
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86"
  export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
else
  build=build
  make -s all ctests fuzz-build
  export FLOWRUN=$root/flowrun
fi
export FLOWRUN_BUILD=$root/$build
export FUZZ_BUILD=$root/build-fuzz
# The tests talk to loopback only: a credential chain that ran to its end must never reach the
# EC2 metadata address. Tests of IMDS point AWS_EC2_METADATA_SERVICE_ENDPOINT at a local server.
export AWS_EC2_METADATA_DISABLED=true
export FLOWRUN_ROOT=$root

tmp=$(mktemp -d /tmp/flowrun-test.XXXXXX)
chmod 755 "$tmp"
export FLOWRUN_TEST_TMP=$tmp
# runs the tests make without --state-dir are kept in the suite's own home, never the user's
export FLOWRUN_HOME=$tmp/home
started=()
stop_servers() {
  for s in "${started[@]}"; do "$s" stop "$tmp/$(basename "$s" .sh)" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

# Each tests/servers/NAME.sh: "start DIR" starts a server keeping its state in DIR and prints
# the "export VAR=value" lines the tests read; "stop DIR" stops it.
for s in tests/servers/*.sh; do
  [ -e "$s" ] || continue
  dir="$tmp/$(basename "$s" .sh)"
  mkdir -p "$dir"
  env_lines=$("$s" start "$dir") || { echo "test server $s failed to start" >&2; exit 1; }
  started+=("$s")
  eval "$env_lines"
done

# tests/fuzz/smoke.sh: each libFuzzer target over its committed corpus and a few seconds more
tests=( $build/tests/*.t tests/lua/*.lua tests/py/*.py tests/fuzz/smoke.sh )
[ -n "${TESTS:-}" ] && tests=( $TESTS )
prove --exec scripts/run-test --timer "${tests[@]}"
