#!/usr/bin/env bash
# run.sh TARGET MINUTES [JOBS]: fuzzes one target (json, predict, csv, model, manifest, fhir, v2, cds, jwt) with libFuzzer under
# ASan and UBSan for MINUTES of CPU time per job (JOBS parallel jobs, default 1), in
# build-fuzz/ (clang; not part of the default build or of CI, whose ctest only replays
# the seed corpus). CPU time, not wall time: on a shared machine (run it with
# `nice -n 19`) a fuzzer may get a small share of a core, and the budget is what it
# actually ran; a watcher reads the fuzzer's CPU time from /proc and stops it with
# SIGINT (libFuzzer then prints its final statistics) when the budget is spent.
# PX_FUZZ_WALL_LIMIT_MIN (default 12 x MINUTES) bounds the wall time all the same.
# New inputs go to build-fuzz/fuzz-corpus/TARGET (the seed corpus in
# tests/fuzz/corpus/TARGET is read, never written); a crash is saved in
# build-fuzz/fuzz-artifacts/ and the script exits 1. Prints the executions, the
# executions per CPU-second and the coverage (libFuzzer's cov: edges, ft: features).
# Needs clang and libclang-rt-14-dev (Debian).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:?usage: run.sh TARGET MINUTES [JOBS]}
MIN=${2:?usage: run.sh TARGET MINUTES [JOBS]}
JOBS=${3:-1}
[ -f "tests/fuzz/fuzz_$T.c" ] || { echo "run.sh: no target '$T' (json, predict, csv, model, manifest, fhir, v2, cds, jwt)" >&2; exit 2; }
[[ "$MIN" =~ ^[0-9]+$ && "$MIN" -gt 0 ]] || { echo "run.sh: MINUTES must be a positive whole number, not '$MIN'" >&2; exit 2; }
[[ "$JOBS" =~ ^[0-9]+$ && "$JOBS" -gt 0 ]] || { echo "run.sh: JOBS must be a positive whole number, not '$JOBS'" >&2; exit 2; }
command -v clang >/dev/null || { echo "run.sh: clang is not installed (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROGNOS_FUZZ=ON -DPROGNOS_SANITIZE=ON \
    -DPROGNOS_WERROR=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "fuzz_$T" -- --no-print-directory >/dev/null
mkdir -p "build-fuzz/fuzz-corpus/$T" build-fuzz/fuzz-artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
PAR=()
[ "$JOBS" -gt 1 ] && PAR=(-jobs="$JOBS" -workers="$JOBS")
cd build-fuzz # libFuzzer writes fuzz-N.log for parallel jobs into the current directory
rm -f "fuzz-$T.log" fuzz-[0-9]*.log
tick=$(getconf CLK_TCK)
# CPU seconds of a process and all its descendants still running (the fuzzer, and with
# JOBS > 1 its worker processes)
tree_cpu() { # pid
    local p kids s=0
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        if [ "$p" = "$1" ]; then
            kids=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)
        else
            kids=$(tree_cpu "$p")
        fi
        s=$((s + ${kids:-0}))
    done
    echo "$s"
}
set +e
# -max_total_time only as the wall bound; the CPU budget is the watcher's
"tests/fuzz/fuzz_$T" -max_total_time=$((${PX_FUZZ_WALL_LIMIT_MIN:-$((12 * MIN))} * 60)) -print_final_stats=1 "${PAR[@]}" \
    -artifact_prefix=fuzz-artifacts/ -max_len=4096 "fuzz-corpus/$T" "../tests/fuzz/corpus/$T" >"fuzz-$T.log" 2>&1 &
fpid=$!
budget=$((MIN * 60 * JOBS * tick))
used=0
while kill -0 "$fpid" 2>/dev/null; do
    now=$(tree_cpu "$fpid")   # (0 once the fuzzer has exited: keep the last reading)
    [ "$now" -gt "$used" ] && used=$now
    if [ "$used" -ge "$budget" ]; then
        # SIGINT to the fuzzer (and its workers): final statistics, exit 0... or 72 (libFuzzer's
        # interrupt code in some versions); only a crash leaves an artifact
        pkill -INT -P "$fpid" 2>/dev/null
        kill -INT "$fpid" 2>/dev/null
        break
    fi
    sleep 2
done
wait "$fpid"
rc=$?
set -e
cpu_s=$((used / tick))
shopt -s nullglob
logs=("fuzz-$T.log" fuzz-[0-9]*.log)
cat "${logs[@]}" | grep -E "stat::|ERROR|SUMMARY|Test unit written|disagree|refuses|scored" || true
# a finding: a crash, leak, timeout or out-of-memory input (libFuzzer's slow-unit-* are
# slow by wall time, which on a shared machine measures the others' load, not ours)
new_art=$(grep -E "Test unit written to .*(crash|leak|timeout|oom)-" "${logs[@]}" 2>/dev/null || true)
runs=$(cat "${logs[@]}" | awk '$1 == "stat::number_of_executed_units:" {s += $2} END {print s + 0}')
cov=$(cat "${logs[@]}" | grep -oE "cov: [0-9]+ ft: [0-9]+" | tail -1)
echo "run.sh: $T: $runs executions in $cpu_s CPU-seconds ($(( cpu_s > 0 ? runs / cpu_s : 0 )) a CPU-second); last ${cov:-cov: ?}"
if [ -z "$new_art" ] && { [ $rc -eq 0 ] || [ $rc -eq 72 ] || [ $rc -eq 130 ]; }; then
    if [ "$used" -ge "$budget" ]; then
        echo "run.sh: $T: no finding in $MIN CPU-minute(s) per job"
    else # stopped early (the wall bound, or a signal): say so, not the budget
        echo "run.sh: $T: no finding in $cpu_s CPU-seconds, short of the $((MIN * 60 * JOBS)) asked for"
    fi
    exit 0
fi
echo "run.sh: $T: a finding (exit $rc; see build-fuzz/fuzz-artifacts/ and build-fuzz/fuzz-$T.log)"
exit 1
