#!/usr/bin/env bash
# run.sh TARGET MINUTES [JOBS]: fuzzes one target (json, predict) with libFuzzer under
# ASan and UBSan for MINUTES of wall time per job (JOBS parallel jobs, default 1), in
# build-fuzz/ (clang; not part of the default build or of CI, whose ctest only replays
# the seed corpus). New inputs go to build-fuzz/fuzz-corpus/TARGET (the seed corpus in
# tests/fuzz/corpus/TARGET is read, never written); a crash is saved in
# build-fuzz/fuzz-artifacts/ and the script exits 1. Prints the executions per second.
# Needs clang and libclang-rt-14-dev (Debian).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:?usage: run.sh TARGET MINUTES [JOBS]}
MIN=${2:?usage: run.sh TARGET MINUTES [JOBS]}
JOBS=${3:-1}
[ -f "tests/fuzz/fuzz_$T.c" ] || { echo "run.sh: no target '$T' (json, predict)" >&2; exit 2; }
command -v clang >/dev/null || { echo "run.sh: clang is not installed (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROGNOS_FUZZ=ON -DPROGNOS_SANITIZE=ON \
    -DPROGNOS_WERROR=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "fuzz_$T" -- --no-print-directory >/dev/null
mkdir -p "build-fuzz/fuzz-corpus/$T" build-fuzz/fuzz-artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
set +e
"build-fuzz/tests/fuzz/fuzz_$T" -max_total_time=$((MIN * 60)) -print_final_stats=1 -jobs="$JOBS" -workers="$JOBS" \
    -artifact_prefix=build-fuzz/fuzz-artifacts/ -max_len=4096 \
    "build-fuzz/fuzz-corpus/$T" "tests/fuzz/corpus/$T" 2>&1 | tee "build-fuzz/fuzz-$T.log" \
    | grep -E "stat::|ERROR|SUMMARY|Test unit written|DONE|exec/s" | tail -20
rc=${PIPESTATUS[0]}
set -e
[ "$JOBS" -gt 1 ] && cat fuzz-*.log 2>/dev/null | grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" || true
exit $rc
