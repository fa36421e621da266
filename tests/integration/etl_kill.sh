#!/usr/bin/env bash
# SIGKILL during a load, at several points from parsing to COMMIT, then a rerun:
# no partial batch is ever visible, and the final counts equal those of an
# uninterrupted load of the same files into another warehouse.
. "$(dirname "$0")/lib.sh"

DATA="$WORK/data"
# (4,000 patients, ~20,000 stays: the load lasts long enough for the timed kills below to
# land before COMMIT; the deterministic kills do not depend on its size)
px generate --patients 4000 --seed 7 --out "$DATA" >/dev/null
# a few bad rows, so that rejects are compared too
echo 'EBAD1,PNOPE,H001,,2021-01-01,2021-01-02,emergency,ed,home,medicine,291,100' >> "$DATA/encounters.csv"
echo 'EBAD2,,H001,,2021-01-01,2021-01-02,emergency,ed,home,medicine,291,100' >> "$DATA/encounters.csv"

counts() {
    sql "SELECT (SELECT count(*) FROM etl.batches) || ' ' || (SELECT coalesce(sum(rows_read), 0) || '/' ||
         coalesce(sum(rows_loaded), 0) || '/' || coalesce(sum(rows_rejected), 0) FROM etl.batches) || ' ' ||
         (SELECT count(*) FROM etl.rejects) || ' ' || (SELECT count(*) FROM wh.dim_patient) || ' ' ||
         (SELECT count(*) FROM wh.fact_encounter) || ' ' || (SELECT count(*) FROM wh.fact_diagnosis) || ' ' ||
         (SELECT count(*) FROM wh.fact_procedure) || ' ' || (SELECT count(*) FROM wh.dim_provider)"
}

# reference: an uninterrupted load
use_new_home "$WORK/home-ref"
px db init >/dev/null
t0=$(date +%s%N)
assert_exit 0 px etl load --format canonical --source "$DATA" --quiet
ms=$((($(date +%s%N) - t0) / 1000000))
want=$(counts)
ok "reference load: $want (${ms} ms)"

export PROGNOS_HOME="$WORK/home"
px db init >/dev/null
empty="0 0/0/0 0 0 0 0 0 0"
# (audit_hold in lib.sh: a load stopped at its last statement before COMMIT, every row
# written and nothing committed: a kill there is the worst case)
audit_hold
# (the binary itself in the background, not the px function: $! must be the loader)
"$PROGNOS_BIN" etl load --format canonical --source "$DATA" --quiet >/dev/null 2>&1 &
pid=$!
wait_for "the load to reach its last statement" audit_insert_waits
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
audit_release
assert_eq "$(counts)" "$empty" "after SIGKILL just before COMMIT"
ok "SIGKILL just before COMMIT (every row written): nothing visible"
# and at points in time through the load (where each lands varies; the verdict may not)
for pct in 10 50 90; do
    delay_ms=$((ms * pct / 100))
    "$PROGNOS_BIN" etl load --format canonical --source "$DATA" --quiet >/dev/null 2>&1 &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # the server ends the orphaned transaction; what is visible is all or nothing
    got=$(counts)
    if [ "$got" != "$empty" ] && [ "$got" != "$want" ]; then
        fail "after SIGKILL at ${pct}% the warehouse holds a partial batch: $got"
    fi
    [ "$got" = "$want" ] && break   # killed after COMMIT: complete
    ok "SIGKILL at ${pct}% (${delay_ms} ms): nothing visible"
done
set +e; px etl load --format canonical --source "$DATA" --quiet; rc=$?; set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "rerun after kills exited $rc"
assert_eq "$(counts)" "$want" "counts after kills and a rerun"
ok "rerun after SIGKILLs: same counts as an uninterrupted load"

# the database goes away mid-load: the load fails with a clear error, nothing
# is visible after a restart, and a rerun completes. Deterministic: a session holds
# a lock on audit.events, so the load stops at its last statement before COMMIT
# (every row written, nothing committed); once it is seen waiting there, the
# server is stopped.
use_new_home "$WORK/home-down"
px db init >/dev/null
audit_hold
px etl load --format canonical --source "$DATA" --quiet >"$WORK/down.out" 2>"$WORK/down.err" &
pid=$!
wait_for "the load to reach its last statement" audit_insert_waits
px db stop >/dev/null
set +e; wait "$pid"; rc=$?; set -e
wait "$AUDIT_HOLDER" 2>/dev/null || true   # its session ended with the server
assert_eq "$rc" 1 "exit code of a load whose database went away"
grep -q "^prognos: error: " "$WORK/down.err" || fail "no error message when the database went away: $(cat "$WORK/down.err")"
px db start >/dev/null
assert_eq "$(counts)" "$empty" "warehouse after the server died mid-load"
assert_exit 0 px etl load --format canonical --source "$DATA" --quiet
assert_eq "$(counts)" "$want" "counts after the server came back and a rerun"
ok "database stopped mid-load: clear error ($(head -1 "$WORK/down.err" | cut -c1-70)...), nothing partial, rerun complete"
