#!/usr/bin/env bash
# test.sh: the project's test command. Installs what is missing, builds the
# normal and the ASan+UBSan trees, and runs every test once: unit tests in both trees;
# each integration test (on real embedded PostgreSQL clusters) in one of them: in the
# ASan+UBSan tree a set that reaches every C line and branch the suite reaches (label
# asan_only), in the normal tree the statistical long runs (label slow) and the tests
# whose C paths that set already reaches (label asan_redundant); it_features_fhir in both
# (PX_BOTH_BUILDS in tests/CMakeLists.txt); tests/README.md. The
# two passes run at the same time (one ctest each): a test spends much of its time
# waiting (PostgreSQL writing and syncing, a server's deadline running out), and the
# other pass's tests use the CPU meanwhile. The normal pass prints as it goes; the ASan
# pass's output follows (its log: build-asan/Testing/test-pass.log). Exit 0 when every
# test passed.
#
# PX_TEST_JOBS: tests at once per pass (default: three per core). PX_TEST_PASSES:
#   both    (default) as above: each integration test once
#   all     every test in the normal tree, and the ASan set again in the ASan tree (there
#           checking memory only: the Python, Chromium and Jupyter checks are the normal
#           tree's); for a release, or after changing the build flags
#   normal  every test in the normal tree
#   asan    the ASan set in the ASan tree
# Extra arguments go to both ctest runs (e.g. -R serve_ to run some tests only).
set -euo pipefail
# -h, --help: the comment above
case "${1:-}" in -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0;; esac
cd "$(dirname "$0")/.."
export PROGNOS_WERROR=${PROGNOS_WERROR:-ON} # warnings are errors here and in CI (off by default for users)
# (checked before the build)
passes=${PX_TEST_PASSES:-both}
case "$passes" in
    both) normal_filter=(-LE '^asan_only$'); export PX_CHECK_VALUES=1 ;;
    asan) normal_filter=(); export PX_CHECK_VALUES=1 ;;
    all|normal) normal_filter=(); unset PX_CHECK_VALUES ;;
    *) echo "test.sh: PX_TEST_PASSES is both, all, normal or asan, not '$passes'" >&2; exit 2;;
esac
scripts/setup.sh --asan

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Tests spend most of their time waiting (PostgreSQL writing, a server answering),
# and none depends on timing: run three per core in each pass (two per core left the
# cores idle about 8% of the run: 295 s against 283 s with three, 2026-12-06).
jobs=${PX_TEST_JOBS:-$(( $(nproc) * 3 ))}
start=$SECONDS
echo "== $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $jobs tests at once per pass"

# the ASan+UBSan build runs all but the statistical long runs (label `slow`) and the
# integration tests whose C lines and branches the others already reach (label
# `asan_redundant`, chosen by tests/cover_per_test.py): see tests/README.md, "The ASan
# pass", for what it covers and why
asan_pid=""
if [ "$passes" != normal ]; then
    # (PX_CHECK_VALUES, exported above unless the normal tree runs every test: the ASan
    # run of a test runs its value checks too, lib.sh checks_values)
    mkdir -p build-asan/Testing
    rm -f build-asan/Testing/test-pass.rc
    # (set +e: a failed test must not end this subshell before it records the exit code and time)
    (set +e; cd build-asan && ctest --output-on-failure -j"$jobs" --timeout 3600 -LE '^(slow|asan_redundant)$' "$@" \
        >Testing/test-pass.log 2>&1; echo "$?" >Testing/test-pass.rc; echo "$((SECONDS - start))" >Testing/test-pass.secs) &
    asan_pid=$!
fi
# stop the other pass when this command is interrupted
trap '[ -n "$asan_pid" ] && kill -TERM "$asan_pid" 2>/dev/null; exit 130' INT TERM

status=0
if [ "$passes" != asan ]; then
    echo "== tests in build$([ "$passes" = both ] && echo " (not label asan_only)")"
    (cd build && env -u PX_CHECK_VALUES ctest --output-on-failure -j"$jobs" --timeout 3600 ${normal_filter[@]+"${normal_filter[@]}"} "$@") || status=1
    echo "== build: $((SECONDS - start)) s"
fi
if [ -n "$asan_pid" ]; then
    wait "$asan_pid" || true
    echo "== tests in build-asan (not labels slow, asan_redundant)"
    cat build-asan/Testing/test-pass.log
    echo "== build-asan: $(cat build-asan/Testing/test-pass.secs 2>/dev/null) s"
    [ "$(cat build-asan/Testing/test-pass.rc 2>/dev/null)" = 0 ] || status=1
fi
echo "== $((SECONDS - start)) s in all; load now: $(cut -d' ' -f1-3 /proc/loadavg)"
[ $status -eq 0 ] && echo "all tests passed" || echo "some tests FAILED"
exit $status
