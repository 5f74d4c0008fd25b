#!/usr/bin/env bash
# The libFuzzer targets built by `make fuzz-build` (in $FUZZ_BUILD, default build-fuzz).
#   run.sh run [TARGET...]    each target for FUZZ_TIME seconds (default 60), seeded from its
#                             committed corpus; new inputs go to $FUZZ_BUILD/corpus/<target>,
#                             a crash to $FUZZ_BUILD/crashes/; ends with the exec counts
#   run.sh merge [TARGET...]  what run found, minimised into tests/fuzz/corpus/<target> (files
#                             named regress-* are inputs that once crashed a target: kept)
#   run.sh smoke [TARGET...]  TAP for prove (make test): each target over its committed corpus
#                             and FUZZ_SMOKE more seconds (default 3); a crash fails
# FUZZ_JOBS targets run at once in `run` (default 1; the machine is shared: nice 19).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
mode=${1:-}
shift || true
build=${FUZZ_BUILD:-build-fuzz}
case "$build" in /*) ;; *) build=$root/$build ;; esac
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(sigv4 json xml pg_values zlib)
# leaks are checked per input; the harnesses close their Lua state each time
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

execs() { sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$1" | tail -1; }

case "$mode" in
run)
  time=${FUZZ_TIME:-60}
  jobs=${FUZZ_JOBS:-1}
  mkdir -p "$build/crashes" "$build/logs"
  status=0
  running=0
  for t in "${targets[@]}"; do
    mkdir -p "$build/corpus/$t"
    log=$build/logs/$t.log
    echo "fuzz_$t: ${time} s (log $log)"
    nice -n 19 "$build/fuzz_$t" -max_total_time="$time" -timeout=20 -print_final_stats=1 \
      -artifact_prefix="$build/crashes/$t-" "$build/corpus/$t" "tests/fuzz/corpus/$t" \
      >"$log" 2>&1 &
    running=$((running + 1))
    if [ $running -ge "$jobs" ]; then wait -n || status=1; running=$((running - 1)); fi
  done
  while [ $running -gt 0 ]; do wait -n || status=1; running=$((running - 1)); done
  for t in "${targets[@]}"; do
    log=$build/logs/$t.log
    if grep -q "^==[0-9]*==ERROR\|^SUMMARY\|deadly signal\|fuzz invariant broken" "$log"; then
      echo "fuzz_$t: CRASH (see $log and $build/crashes/)"
      status=1
    else
      echo "fuzz_$t: $(execs "$log"), corpus $(ls "$build/corpus/$t" | wc -l) new + $(ls "tests/fuzz/corpus/$t" | wc -l) committed"
    fi
  done
  exit $status
  ;;
merge)
  for t in "${targets[@]}"; do
    mkdir -p "tests/fuzz/corpus/$t" "$build/corpus/$t"
    tmp=$(mktemp -d)
    # keep the smallest set covering both: the committed corpus and what run found
    nice -n 19 "$build/fuzz_$t" -merge=1 -timeout=20 "$tmp" "tests/fuzz/corpus/$t" "$build/corpus/$t" \
      >"$build/merge-$t.log" 2>&1 || { echo "merge of $t failed: $build/merge-$t.log"; exit 1; }
    # regress-*: inputs that once crashed a target stay whatever coverage they add
    find "tests/fuzz/corpus/$t" -type f ! -name 'regress-*' -delete
    cp "$tmp"/* "tests/fuzz/corpus/$t"/ 2>/dev/null || true
    rm -rf "$tmp"
    echo "$t: $(ls "tests/fuzz/corpus/$t" | wc -l) inputs, $(du -sk "tests/fuzz/corpus/$t" | cut -f1) KB"
  done
  ;;
smoke)
  smoke=${FUZZ_SMOKE:-3}
  echo "1..${#targets[@]}"
  n=0
  for t in "${targets[@]}"; do
    n=$((n + 1))
    bin=$build/fuzz_$t
    if [ ! -x "$bin" ]; then
      echo "not ok $n - fuzz_$t: not built (make fuzz-build)"
      continue
    fi
    tmp=$(mktemp -d)
    ninputs=$(ls "tests/fuzz/corpus/$t" 2>/dev/null | wc -l)
    if nice -n 10 "$bin" -max_total_time="$smoke" -timeout=20 -artifact_prefix="$tmp/" \
        "$tmp" "tests/fuzz/corpus/$t" >"$tmp/log" 2>&1; then
      echo "ok $n - fuzz_$t: its $ninputs corpus inputs and ${smoke} s more, clean ($(execs "$tmp/log"))"
    else
      echo "not ok $n - fuzz_$t crashed (reproduce: $bin <the input below>)"
      grep -m 20 "ERROR\|SUMMARY\|invariant broken\|deadly signal\|Test unit written\|#[0-9] " \
        "$tmp/log" | sed 's/^/# /'
      for f in "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-* "$tmp"/oom-*; do
        [ -e "$f" ] && echo "# input (base64): $(base64 -w0 "$f" | head -c 2000)"
      done
    fi
    rm -rf "$tmp"
  done
  ;;
*)
  echo "usage: $0 run|merge|smoke [target...]" >&2
  exit 2
  ;;
esac
