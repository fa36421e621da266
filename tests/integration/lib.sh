# lib.sh: shared by the integration tests. Each test gets its own PROGNOS_HOME
# (its own embedded PostgreSQL cluster) under $PROGNOS_TEST_TMP, stopped and
# removed on exit. Assertions print what differed and fail the test.
# How to add a test, use a fixture home (a trained warehouse built once per ctest
# run) or add one, and the rules that keep the suite fast and independent of the
# machine's load: tests/README.md.
set -euo pipefail

: "${PROGNOS_BIN:?set PROGNOS_BIN to the prognos binary}"
: "${PROGNOS_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PROGNOS_TEST_TMP:=/tmp/prognos-tests}"
FIXTURES="$PROGNOS_SRC/tests/fixtures"
SHARED_DATA="$PROGNOS_SRC/../shared/data"
# Real CMS DE-SynPUF data: the public-domain subset shipped in tests/fixtures/synpuf
# (sample-1, sample-2; see its README), so the tests that need it always run.
# PX_SYNPUF_DIR=/path/to/shared/data/synpuf runs them on the full samples instead.
SYNPUF="${PX_SYNPUF_DIR:-$FIXTURES/synpuf}"
[ -d "$SYNPUF/sample-1" ] || { echo "FAIL: no SynPUF data in $SYNPUF" >&2; exit 1; }

# Stops every embedded PostgreSQL under a work directory, whatever the home is
# called (home, home-ext, private/home, ...), a cluster relocated through a pg link
# included: `prognos db stop` first, then an immediate shutdown of a postmaster
# that is still there (a binary that no longer runs, a cluster of another user).
stop_clusters() { # work-dir
    local pg home data pid
    while IFS= read -r pg; do
        home=$(dirname "$pg")
        data=$(readlink -f "$pg")/data
        if [ -e "$data/postmaster.pid" ]; then   # else not running
            PROGNOS_HOME="$home" timeout 60 "$PROGNOS_BIN" db stop >/dev/null 2>&1 || true
        fi
        if [ -s "$data/postmaster.pid" ]; then
            pid=$(head -1 "$data/postmaster.pid")
            [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null || true
        fi
        # a cluster placed outside the home (see pgctl.c) goes with it
        if [ -L "$pg" ]; then rm -rf "$(readlink -f "$pg")"; fi
    done < <(find "$1" -maxdepth 4 \( -type d -o -type l \) -name pg -print -prune 2>/dev/null)
}

# A test killed outright (ctest's timeout sends SIGKILL) runs no trap: the next
# test that starts, and fixture_home.sh clean at the end of a ctest run, stop the
# clusters and processes of every work directory whose test is gone (owner: the
# pid and start time of the test's shell).
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
sweep_orphans() {
    local d pid start
    for d in "$PROGNOS_TEST_TMP"/*/; do
        [ -f "$d/owner" ] || continue
        read -r pid start <"$d/owner" || continue
        if [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$start" ]; then continue; fi
        stop_clusters "$d"
        # and what else the test left running there (a server, a load client): every
        # process whose PROGNOS_HOME lies in its work directory
        local p
        for p in /proc/[0-9]*; do
            grep -qzF "PROGNOS_HOME=${d%/}/" "$p/environ" 2>/dev/null &&
                { kill -KILL "${p#/proc/}" 2>/dev/null || true; }
        done
        mv "$d/owner" "$d/owner.swept" 2>/dev/null || true
        echo "note: stopped the servers of an abandoned test run: $d" >&2
    done
}

mkdir -p "$PROGNOS_TEST_TMP"
chmod 755 "$PROGNOS_TEST_TMP"
sweep_orphans
TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "$PROGNOS_TEST_TMP/${TEST_NAME}.XXXXXX")
chmod 755 "$WORK"   # the server user must reach $WORK/home/pg when we are root
echo "$$ $(proc_start $$)" >"$WORK/owner"
export PROGNOS_HOME="$WORK/home"
unset PROGNOS_DB PROGNOS_KEY_FILE

# Debian's python3, whose modules scripts/setup.sh installs (numpy, psycopg2, jsonschema,
# Pillow); a python3 found earlier in PATH (a pyenv shim) costs 0.1 s of CPU a call
[ -x /usr/bin/python3 ] && { python3() { /usr/bin/python3 "$@"; }; export -f python3; }

# PostgreSQL's own client programs (psql, pg_dump) before Debian's wrappers of the same
# names in /usr/bin, Perl scripts that cost 20-30 ms of CPU a call
for _pgbin in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$_pgbin/psql" ] && { PATH="$_pgbin:$PATH"; break; }
done
export PATH

px() { "$PROGNOS_BIN" "$@"; }
# Checks by independent programs that run no code of ours (a Python or R recomputation,
# Chromium, Jupyter) are written
#   if checks_values; then python3 ...; fi
# and must not produce anything a later step of the test uses. A test runs them unless
# it runs in the ASan+UBSan build (tests/CMakeLists.txt sets PX_SANITIZED=1 there) beside
# a normal-build run of the same test that does (scripts/test.sh PX_TEST_PASSES=all:
# that ASan run checks memory only). scripts/test.sh's default runs each integration
# test once and sets PX_CHECK_VALUES=1 for the ASan build: every check runs there.
checks_values() { [ -n "${PX_CHECK_VALUES:-}" ] || [ -z "${PX_SANITIZED:-}" ]; }
# The database URL of the current PROGNOS_HOME and PROGNOS_DB: `prognos db url` (a pure
# function of the two) asked once and kept in a file of $WORK, which subshells share; not
# kept for a cluster placed outside its home through a `pg` link, which a test may move.
px_url() {
    local k="${PROGNOS_HOME}|${PROGNOS_DB:-}" f u
    k=${k//[^A-Za-z0-9._-]/_}
    f="$WORK/.url.$k"
    if [ ${#k} -gt 200 ] || [ -L "$PROGNOS_HOME/pg" ]; then px db url; return; fi
    if [ -s "$f" ]; then printf '%s\n' "$(<"$f")"; return; fi
    u=$(px db url) || return
    # written whole, then renamed: a reader never sees it half written
    [ -z "$u" ] || { printf '%s\n' "$u" >"$f.$BASHPID" && mv -f "$f.$BASHPID" "$f"; }
    printf '%s\n' "$u"
}
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$(px_url)" -c "$1"; }

# Fixture homes (tests/CMakeLists.txt: built once per ctest run by fixture_home.sh
# under $PX_FIXTURE_HOMES, each a stopped cluster): `empty` is a home right after
# `prognos db init`; `serve-4000-21` holds setup_model's trained warehouse. A test
# starts from a copy of `empty` (the same state as its own db init, without paying
# for initdb and the migrations each time) unless it sets PX_FRESH_HOME=1 before
# sourcing lib.sh (tests of db init itself); outside ctest (no fixtures) every
# home is made from scratch as before.
restore_home() { # fixture-name [home]: 0, or 1 when there is no such fixture
    local src="${PX_FIXTURE_HOMES:-/nonexistent}/$1/home" home=${2:-$PROGNOS_HOME}
    [ -f "$src/.fixture-complete" ] || return 1
    # A fixture whose cluster lives outside its home (engine/pgctl.c's place_cluster: the
    # server's user cannot reach the home, e.g. a build under /root run as root when
    # /dev/shm is small) is not copied: the copy would be one more link to the fixture's
    # own cluster, shared by every test and removed by the first to finish.
    [ ! -L "$src/pg" ] || return 1
    [ ! -e "$home/pg" ] || stop_clusters "$home"
    rm -rf "$home"
    cp -a "$src" "$home"
    rm -f "$home/.fixture-complete"
    # (its cluster's socket directory names the fixture's home: `db start` sets it to this one's)
}
if [ -z "${PX_FRESH_HOME:-}" ]; then restore_home empty || mkdir -p "$PROGNOS_HOME"; fi
# Switches to another new home: a copy of `empty` when there is one (its key is the
# fixture's: a test that needs a different key makes the home with db init instead),
# else an empty directory (outside ctest: the first command initialises it, and a test
# can write a fixed secret.key there first).
use_new_home() { restore_home empty "$1" || mkdir -p "$1"; export PROGNOS_HOME="$1"; }
# Starts the single-node reference home a sharded test compares against ($WORK/ref, a copy of
# the empty fixture when there is one) and sets REF and RURL (its database URL).
new_ref_home() {
    REF=$WORK/ref
    restore_home empty "$REF" || true
    PROGNOS_HOME=$REF px db init >/dev/null
    RURL=$(PROGNOS_HOME=$REF px db url)
}
# Starts N more embedded clusters for a sharded warehouse, homes $WORK/shard1..N (copies of
# the empty fixture when there is one), and sets SURL[1..N] to their URLs.
new_shard_homes() { # N
    declare -g -a SURL
    local k
    for k in $(seq "$1"); do
        restore_home empty "$WORK/shard$k" || true
        PROGNOS_HOME="$WORK/shard$k" px db init >/dev/null
        SURL[$k]=$(PROGNOS_HOME="$WORK/shard$k" px db url)
    done
}

# Runs on every exit: success, a failed assertion, a command failing under set -e,
# and SIGTERM/SIGINT/SIGHUP (turned into an exit below). Background jobs of the
# test (servers, load generators) are killed, then every cluster is stopped.
CLEANUP_HOOKS=()
cleanup() {
    local rc=$? h j
    trap - EXIT TERM INT HUP
    set +e
    for h in "${CLEANUP_HOOKS[@]}"; do "$h"; done
    for j in $(jobs -p); do kill -TERM "$j" 2>/dev/null; done
    for j in $(jobs -p); do kill -0 "$j" 2>/dev/null && { sleep 0.5; kill -KILL "$j" 2>/dev/null; }; done
    stop_clusters "$WORK"
    rm -f "$WORK/owner"
    if [ $rc -eq 0 ]; then rm -rf "$WORK"; else echo "FAILED: $TEST_NAME (work dir kept: $WORK)" >&2; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# Waits until a command succeeds, polling every 0.1 s. The bound (PX_WAIT_S,
# default 300 s) only catches a hang: it is far above any delay a loaded machine
# makes, so no verdict depends on how fast something happens.
wait_for() { # description command...
    local what=$1 deadline=$((SECONDS + ${PX_WAIT_S:-300}))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "gave up waiting (${PX_WAIT_S:-300} s) for $what"
        sleep 0.1
    done
}

# A session holding a lock on audit.events stops an ETL load at its last statement before
# COMMIT (every row written, nothing committed), where it happens does not depend on
# timing: audit_hold starts it (its psql in $AUDIT_HOLDER) and waits for the lock,
# audit_release ends it, audit_insert_waits is true while a load waits there.
audit_hold() {
    psql -X -q "$(px db url)" -c "BEGIN; LOCK TABLE audit.events IN SHARE MODE; SELECT pg_sleep(3600)" >/dev/null 2>&1 &
    AUDIT_HOLDER=$!
    wait_for "the lock on audit.events" audit_held
}
audit_release() {
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'BEGIN; LOCK TABLE audit.events%'" >/dev/null
    wait "$AUDIT_HOLDER" 2>/dev/null || true
}
audit_held() { [ "$(sql "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                         WHERE c.relname = 'events' AND l.mode = 'ShareLock' AND l.granted")" = 1 ]; }
audit_insert_waits() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                                 AND query LIKE 'INSERT INTO audit.events%'")" -ge 1 ]; }

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
