#!/usr/bin/env bash
# test.sh: the project's test command. Installs what is missing, builds the
# normal and the ASan+UBSan trees, and runs every test (unit and integration,
# the latter on real embedded PostgreSQL clusters) in the first and all but the
# statistical long runs (label slow) in the second.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROGNOS_WERROR=${PROGNOS_WERROR:-ON} # warnings are errors here and in CI (off by default for users)
scripts/setup.sh --asan

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
# Tests spend most of their time waiting (PostgreSQL writing, a server answering),
# and none depends on timing: run two per core (PX_TEST_JOBS overrides).
jobs=${PX_TEST_JOBS:-$(( $(nproc) * 2 ))}
# the normal build runs everything; the ASan+UBSan build all but the statistical
# long runs (label `slow`, see tests/CMakeLists.txt)
echo "== tests in build"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900) || status=1
echo "== tests in build-asan (not label slow)"
(cd build-asan && ctest --output-on-failure -j"$jobs" --timeout 900 -LE slow) || status=1
[ $status -eq 0 ] && echo "all tests passed" || echo "some tests FAILED"
exit $status
