#!/usr/bin/env bash
# SIGKILL during a load, at several points from parsing to COMMIT, then a rerun:
# no partial batch is ever visible, and the final counts equal those of an
# uninterrupted load of the same files into another warehouse.
. "$(dirname "$0")/lib.sh"

DATA="$WORK/data"
px generate --patients 20000 --seed 7 --out "$DATA" >/dev/null
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
export PROGNOS_HOME="$WORK/home-ref"
px db init >/dev/null
t0=$(date +%s%N)
assert_exit 0 px etl load --format canonical --source "$DATA" --quiet
ms=$((($(date +%s%N) - t0) / 1000000))
want=$(counts)
ok "reference load: $want (${ms} ms)"

export PROGNOS_HOME="$WORK/home"
px db init >/dev/null
empty="0 0/0/0 0 0 0 0 0 0"
for pct in 5 20 40 60 80 95 99; do
    delay_ms=$((ms * pct / 100))
    px etl load --format canonical --source "$DATA" --quiet >/dev/null 2>&1 &
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
# is visible after a restart, and a rerun completes
export PROGNOS_HOME="$WORK/home-down"
px db init >/dev/null
px etl load --format canonical --source "$DATA" --quiet >"$WORK/down.out" 2>"$WORK/down.err" &
pid=$!
sleep "$(printf '%d.%03d' $((ms / 2 / 1000)) $((ms / 2 % 1000)))"
px db stop >/dev/null
set +e; wait "$pid"; rc=$?; set -e
if [ $rc -eq 0 ]; then
    echo "skip - the load finished before the server stopped"
else
    assert_eq "$rc" 1 "exit code of a load whose database went away"
    grep -q "^prognos: error: " "$WORK/down.err" || fail "no error message when the database went away: $(cat "$WORK/down.err")"
    px db start >/dev/null
    assert_eq "$(counts)" "$empty" "warehouse after the server died mid-load"
    assert_exit 0 px etl load --format canonical --source "$DATA" --quiet
    assert_eq "$(counts)" "$want" "counts after the server came back and a rerun"
    ok "database stopped mid-load: clear error ($(head -1 "$WORK/down.err" | cut -c1-70)...), nothing partial, rerun complete"
fi
