#!/usr/bin/env bash
# Commands that only read never create a warehouse (issue 17): with PROGNOS_HOME
# naming no warehouse (mistyped, or an empty directory) they exit 1 with a hint,
# create no cluster, start no server; once the warehouse exists they work.
. "$(dirname "$0")/lib.sh"

mkdir -p "$WORK/empty"
readers=("etl status" "etl status --json" "registry list" "registry show readmission" "registry verify"
         "registry card readmission --out $WORK/card.md" "kpi report --period all --out $WORK/r.html"
         "drift check" "features list" "apikey list" "apikey revoke 0123456789ab")
for home in "$WORK/home-typo" "$WORK/empty"; do
    for cmd in "${readers[@]}"; do
        # shellcheck disable=SC2086
        PROGNOS_HOME="$home" assert_exit 1 px $cmd
        grep -q "no warehouse in '$home'" "$WORK/err" || fail "'$cmd' in $home: no clear error: $(cat "$WORK/err")"
        grep -q "prognos db init" "$WORK/err" && grep -q "PROGNOS_HOME" "$WORK/err" || fail "'$cmd': no hint: $(cat "$WORK/err")"
        [ ! -e "$home/pg" ] || fail "'$cmd' created a cluster in $home"
        [ ! -e "$home/secret.key" ] || fail "'$cmd' created a key in $home"
    done
done
[ ! -e "$WORK/home-typo" ] || fail "a mistyped PROGNOS_HOME was created"
assert_eq "$(ls -A "$WORK/empty")" "" "files left in an empty PROGNOS_HOME"
pgrep -f -- "-D $WORK/" >/dev/null && fail "a server is running for a home that holds no warehouse"
ok "${#readers[@]} read-only commands refuse a home without a warehouse, create nothing, start nothing"

# the same commands in a real warehouse: etl status works, the others get past the check
assert_exit 0 px db init
assert_exit 0 px etl status
grep -q "no batches loaded yet" "$WORK/out" || fail "etl status on a new warehouse: $(cat "$WORK/out")"
for cmd in "registry list" "features list"; do
    # shellcheck disable=SC2086
    assert_exit 0 px $cmd
done
# stopped (but initialised): a reader starts it, as before
assert_exit 0 px db stop
assert_exit 0 px etl status
ok "in an initialised warehouse (running or stopped) the readers work"

# commands that write may still initialise a new home, as the README says
mkdir "$WORK/src"
printf 'facility_id,name,type\nH1,One,acute\n' > "$WORK/src/facilities.csv"
PROGNOS_HOME="$WORK/home-new" assert_exit 0 px etl load --format canonical --source "$WORK/src" --quiet
[ -e "$WORK/home-new/pg/data/PG_VERSION" ] || fail "etl load did not initialise a new home"
PROGNOS_HOME="$WORK/home-new" assert_exit 0 px etl status
ok "etl load still initialises a new home"
