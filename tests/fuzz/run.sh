#!/usr/bin/env bash
# run.sh TARGET MINUTES [JOBS]: fuzzes one target (json, predict, csv, model, manifest, fhir) with libFuzzer under
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
[ -f "tests/fuzz/fuzz_$T.c" ] || { echo "run.sh: no target '$T' (json, predict, csv, model, manifest, fhir)" >&2; exit 2; }
command -v clang >/dev/null || { echo "run.sh: clang is not installed (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROGNOS_FUZZ=ON -DPROGNOS_SANITIZE=ON \
    -DPROGNOS_WERROR=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "fuzz_$T" -- --no-print-directory >/dev/null
mkdir -p "build-fuzz/fuzz-corpus/$T" build-fuzz/fuzz-artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
PAR=()
[ "$JOBS" -gt 1 ] && PAR=(-jobs="$JOBS" -workers="$JOBS")
cd build-fuzz # libFuzzer writes fuzz-N.log for parallel jobs into the current directory
set +e
"tests/fuzz/fuzz_$T" -max_total_time=$((MIN * 60)) -print_final_stats=1 "${PAR[@]}" \
    -artifact_prefix=fuzz-artifacts/ -max_len=4096 "fuzz-corpus/$T" "../tests/fuzz/corpus/$T" >"fuzz-$T.log" 2>&1
rc=$?
set -e
cat "fuzz-$T.log" fuzz-[0-9]*.log 2>/dev/null | grep -E "stat::|ERROR|SUMMARY|Test unit written|disagree|refuses|scored" || true
[ $rc -eq 0 ] && echo "run.sh: $T: no finding in $MIN minute(s)" || echo "run.sh: $T: a finding (see build-fuzz/fuzz-artifacts/)"
exit $rc
