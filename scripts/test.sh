#!/usr/bin/env bash
# test.sh: the project's test command. Installs what is missing, builds the
# normal and the ASan+UBSan trees, and runs every test (unit and integration,
# the latter on real embedded PostgreSQL clusters) in both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --asan

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for dir in build build-asan; do
    echo "== tests in $dir"
    (cd "$dir" && ctest --output-on-failure -j2 --timeout 900) || status=1
done
[ $status -eq 0 ] && echo "all tests passed" || echo "some tests FAILED"
exit $status
