# lib.sh: shared by the integration tests. Each test gets its own PROGNOS_HOME
# (its own embedded PostgreSQL cluster) under $PROGNOS_TEST_TMP, stopped and
# removed on exit. Assertions print what differed and fail the test.
set -euo pipefail

: "${PROGNOS_BIN:?set PROGNOS_BIN to the prognos binary}"
: "${PROGNOS_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PROGNOS_TEST_TMP:=/tmp/prognos-tests}"
FIXTURES="$PROGNOS_SRC/tests/fixtures"
SHARED_DATA="$PROGNOS_SRC/../shared/data"

mkdir -p "$PROGNOS_TEST_TMP"
chmod 755 "$PROGNOS_TEST_TMP"
TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "$PROGNOS_TEST_TMP/${TEST_NAME}.XXXXXX")
chmod 755 "$WORK"   # the server user must reach $WORK/home/pg when we are root
export PROGNOS_HOME="$WORK/home"
unset PROGNOS_DB PROGNOS_KEY_FILE

px() { "$PROGNOS_BIN" "$@"; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$(px db url)" -c "$1"; }

cleanup() {
    local rc=$?
    for h in "$WORK"/home* "$WORK"/private/home*; do
        [ -d "$h/pg" ] && PROGNOS_HOME="$h" "$PROGNOS_BIN" db stop >/dev/null 2>&1 || true
        # a cluster placed outside the home (see pgctl.c) goes with it
        [ -L "$h/pg" ] && rm -rf "$(readlink -f "$h/pg")"
    done
    if [ $rc -eq 0 ]; then rm -rf "$WORK"; else echo "FAILED: $TEST_NAME (work dir kept: $WORK)" >&2; fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
assert_eq() { # actual expected message
    [ "$1" == "$2" ] || fail "$3: got '$1', expected '$2'"
}
assert_exit() { # expected-code command...
    local want=$1; shift
    set +e; "$@" >"$WORK/out" 2>"$WORK/err"; local got=$?; set -e
    [ "$got" -eq "$want" ] || { cat "$WORK/out" "$WORK/err" >&2; fail "'$*' exited $got, expected $want"; }
}
ok() { echo "ok - $*"; }
