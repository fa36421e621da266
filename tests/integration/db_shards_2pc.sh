#!/usr/bin/env bash
# db_shards_2pc.sh: ETL loads into a distributed warehouse, atomic across the
# shards by two-phase commit, under SIGKILL. A coordinator and three shards
# (separate embedded clusters, as in db_shards.sh) and a single-node reference
# warehouse load the same six batches: batch 1, then (after `db shards
# distribute` on the coordinator) five more, each with rows that need the
# warehouse (stays of batch 1 sent again, codes added to batch 1's stays, a
# batch-1 patient's new stay, a bad row). The coordinator's loader is killed
# (PX_TEST_KILL_AT: a SIGKILL it raises on itself) at each point of the commit
# protocol, and the load rerun: afterwards no prepared transaction is left on any
# shard, a second load of every batch adds nothing (exit 3), and every fact row,
# in total and per shard (by the hash partition of its patient), every dimension
# row, the rejects and the batch records equal the reference's.
. "$(dirname "$0")/lib.sh"
COORD=$PROGNOS_HOME
# The single-node reference warehouse, its loads and the comparisons with it run none of
# the sharded paths (one node's load is every other ETL test's): the normal pass's
# (checks_values, lib.sh). The ASan pass runs every sharded load, kill, recovery and add.
if checks_values; then new_ref_home; fi
REFNOTE=""; checks_values || REFNOTE=" (the rows against one node's: the normal pass)"
new_shard_homes 3
px generate --patients 400 --seed 41 --out "$WORK/b1" >/dev/null
# batches 2-6: other seeds, their patient and encounter ids made unique per
# batch (the generator numbers them from 1), plus rows that meet batch 1's
BATCHES=(b2 b3 b4 b5 b6)
for i in "${!BATCHES[@]}"; do
    b=${BATCHES[$i]} seed=$((50 + i))
    px generate --patients 150 --seed "$seed" --out "$WORK/$b.gen" >/dev/null
    mkdir -p "$WORK/$b"
    cp "$WORK/$b.gen/facilities.csv" "$WORK/$b.gen/providers.csv" "$WORK/$b/"
    for f in patients encounters diagnoses procedures; do
        sed -E "s/\\bP([0-9]{8})\\b/P\\1$b/g; s/\\bE([0-9]{9})\\b/E\\1$b/g" "$WORK/$b.gen/$f.csv" >"$WORK/$b/$f.csv"
    done
    # stays of batch 1 again (rejected: loaded in batch 1, found on the shards)
    sed -n "$((2 + i)),$((4 + i))p" "$WORK/b1/encounters.csv" >>"$WORK/$b/encounters.csv"
    # a new stay of a batch-1 patient (its shard is that patient's), with a code
    p=$(sed -n "$((10 + i))p" "$WORK/b1/patients.csv" | cut -d, -f1)
    fac=$(sed -n 2p "$WORK/b1/facilities.csv" | cut -d, -f1)
    echo "X$b,$p,$fac,,2023-11-0$((1 + i)),2023-11-1$((1 + i)),emergency,ed,home,medicine,,1000.00" >>"$WORK/$b/encounters.csv"
    echo "X$b,1,icd10,I10,Y" >>"$WORK/$b/diagnoses.csv"
    # codes for a batch-1 stay: a new seq (goes to that stay's shard) and a taken one
    e=$(sed -n "$((20 + i))p" "$WORK/b1/encounters.csv" | cut -d, -f1)
    echo "$e,77,icd10,E119,N" >>"$WORK/$b/diagnoses.csv"
    echo "$e,1,icd10,E119,N" >>"$WORK/$b/diagnoses.csv"
    # a bad row: discharged before admitted
    echo "Y$b,$p,$fac,,2023-10-10,2023-10-01,emergency,ed,home,medicine,,1.00" >>"$WORK/$b/encounters.csv"
done

# the reference: one node, every batch uninterrupted
if checks_values; then
    for b in b1 "${BATCHES[@]}"; do PROGNOS_HOME=$REF px etl load --format canonical --source "$WORK/$b" --quiet >/dev/null; done
    ok "single-node reference loaded (6 batches)"
fi

# the coordinator: batch 1, three shards, distribute
px etl load --format canonical --source "$WORK/b1" --quiet >/dev/null
for k in 1 2 3; do assert_exit 0 px db shards add "${SURL[$k]}"; done
assert_exit 0 px db shards distribute
U=$(px db url)
prepared() { # the prepared transactions of every shard, one line each
    local k
    for k in "${!SURL[@]}"; do psql -X -At "${SURL[$k]}" -c "SELECT $k || ' ' || gid FROM pg_prepared_xacts ORDER BY gid"; done
}
stays() { sql "SELECT count(*) FROM wh.fact_encounter"; }
load() { px etl load --format canonical --source "$WORK/$1" --quiet; }
killed_load() { # batch point: the loader must die by its own SIGKILL there
    set +e
    PX_TEST_KILL_AT=$2 px etl load --format canonical --source "$WORK/$1" --quiet >"$WORK/out" 2>"$WORK/err"
    local rc=$?
    set -e
    [ "$rc" -eq 137 ] || { cat "$WORK/err" >&2; fail "load of $1 killed at $2 exited $rc, expected 137 (SIGKILL)"; }
}

# b2: uninterrupted
assert_exit 0 load b2
assert_eq "$(prepared)" "" "prepared transactions after a load"
ok "a batch loaded into the distributed warehouse"

# b3: killed once every shard has its rows, before any PREPARE: nothing stays
n0=$(stays)
killed_load b3 ship
assert_eq "$(prepared)" "" "prepared transactions after a kill before PREPARE"
assert_eq "$(stays)" "$n0" "stays after a kill before PREPARE"
assert_exit 0 load b3
assert_eq "$(prepared)" "" "prepared transactions after the rerun"
ok "killed before PREPARE: nothing left; the rerun loads the batch"

# b4: killed after the first shard prepared: in doubt there, rolled back by the rerun
n0=$(stays)
killed_load b4 prepared
assert_eq "$(prepared | wc -l)" 1 "prepared transactions after a kill after the first PREPARE"
prepared | grep -Eq '^1 px_[0-9]+_0$' || fail "shard 1 holds no px_<batch>_0: $(prepared)"
assert_eq "$(stays)" "$n0" "stays while prepared"
assert_exit 0 load b4
grep -q "1 rolled back" "$WORK/out" "$WORK/err" || fail "the rerun did not report the rollback: $(cat "$WORK/out" "$WORK/err")"
assert_eq "$(prepared)" "" "prepared transactions after the rerun"
ok "killed between PREPAREs: the rerun rolls the prepared part back and loads the batch"

# b5: killed after the coordinator committed, before COMMIT PREPARED: the batch
# is recorded, its rows prepared on every shard. A reader of the fact tables
# (here the feature build) resolves them first: it must not build on a
# recorded batch whose rows are missing
n0=$(stays)
killed_load b5 committed
assert_eq "$(prepared | wc -l)" 3 "prepared transactions after a kill after the commit"
assert_eq "$(stays)" "$n0" "stays before recovery (prepared rows are not visible)"
px features build --set readmission >/dev/null || fail "features build after a kill after the commit"
assert_eq "$(prepared)" "" "prepared transactions after the feature build"
n1=$(stays)
[ "$n1" -gt "$n0" ] || fail "the feature build's recovery committed no stay"
assert_exit 3 load b5
ok "killed after the commit: the feature build commits every shard's part before it reads; the rerun adds nothing"

# b6: killed after the first COMMIT PREPARED: db start resolves the others
killed_load b6 commit_prepared
assert_eq "$(prepared | wc -l)" 2 "prepared transactions after a kill after the first COMMIT PREPARED"
px db stop >/dev/null
assert_exit 0 px db start
grep -q "2 in-doubt prepared transactions of an interrupted load committed" "$WORK/out" ||
    fail "db start did not resolve them: $(cat "$WORK/out" "$WORK/err")"
assert_eq "$(prepared)" "" "prepared transactions after db start"
ok "killed between COMMIT PREPAREDs: db start commits the rest"

# exactly once: a second load of every batch adds nothing, as on one node
for b in b1 "${BATCHES[@]}"; do
    assert_exit 3 load "$b"
    if checks_values; then assert_exit 3 env PROGNOS_HOME="$REF" "$PROGNOS_BIN" etl load --format canonical --source "$WORK/$b" --quiet; fi
done
assert_eq "$(prepared)" "" "prepared transactions at the end"
ok "every batch again: nothing to load (exit 3) on the shards${REF:+ and on one node}"

# ---- equality with the reference --------------------------------------------
dump() { # url query file
    psql -X -q -v ON_ERROR_STOP=1 "$1" -c "\\copy ($2) TO '$3' CSV" || fail "export: $2"
    sort -o "$3" "$3"
}
ENC="encounter_id, patient_id, facility_id, attending_id, admission_date, discharge_date, los_days,
     age_at_admission, admission_type, admission_source, discharge_disposition, department, drg, total_cost, source"
DX="encounter_id, admission_date, seq, code_system, code, present_on_admission"
PR="encounter_id, admission_date, seq, code_system, code, procedure_date"
# per shard: the reference's rows whose patient hashes to that shard's partition
# (shard k of n: REMAINDER k-1 of MODULUS n), computed on the reference by
# PostgreSQL's own routing
per_shard() { # n: every shard's rows equal the reference's of its remainder
    checks_values || return 0
    local n=$1 k t name cols
    psql -X -q -v ON_ERROR_STOP=1 "$RURL" -c "DROP TABLE IF EXISTS public.route" \
        -c "CREATE TABLE public.route (patient_id uuid, encounter_id uuid) PARTITION BY HASH (patient_id)" >/dev/null ||
        fail "routing the reference's rows"
    for k in $(seq 0 $((n - 1))); do
        psql -X -q -v ON_ERROR_STOP=1 "$RURL" -c "CREATE TABLE public.route_$k PARTITION OF public.route
            FOR VALUES WITH (MODULUS $n, REMAINDER $k)" >/dev/null || fail "routing the reference's rows"
    done
    psql -X -q -v ON_ERROR_STOP=1 "$RURL" -c "INSERT INTO public.route SELECT patient_id, encounter_id FROM wh.fact_encounter" \
        >/dev/null || fail "routing the reference's rows"
    for k in $(seq 1 "$n"); do
        for t in "fact_encounter|$ENC" "fact_diagnosis|$DX" "fact_procedure|$PR"; do
            name=${t%%|*} cols=${t#*|}
            dump "$RURL" "SELECT $cols FROM wh.$name x WHERE x.encounter_id IN (SELECT encounter_id FROM public.route_$((k - 1)))" \
                "$WORK/ref.$name.$k.csv"
            dump "${SURL[$k]}" "SELECT $cols FROM px_shard.$name" "$WORK/shard.$name.$k.csv"
            [ -s "$WORK/ref.$name.$k.csv" ] || fail "no reference rows of wh.$name for shard $k of $n"
            cmp -s "$WORK/ref.$name.$k.csv" "$WORK/shard.$name.$k.csv" ||
                fail "shard $k of $n: $name differs: $(diff "$WORK/ref.$name.$k.csv" "$WORK/shard.$name.$k.csv" | head -5)"
        done
    done
}
totals() { # every fact row equals the reference's
    checks_values || return 0
    local t name cols
    for t in "fact_encounter|$ENC" "fact_diagnosis|$DX" "fact_procedure|$PR"; do
        name=${t%%|*} cols=${t#*|}
        dump "$RURL" "SELECT $cols FROM wh.$name" "$WORK/ref.$name.csv"
        dump "$U" "SELECT $cols FROM wh.$name" "$WORK/coord.$name.csv"
        [ -s "$WORK/ref.$name.csv" ] || fail "reference wh.$name is empty"
        cmp -s "$WORK/ref.$name.csv" "$WORK/coord.$name.csv" ||
            fail "wh.$name differs from one node: $(diff "$WORK/ref.$name.csv" "$WORK/coord.$name.csv" | head -5)"
    done
}
totals
per_shard 3
# the dimensions, the rejects and the batch records, by batch order (the
# coordinator's killed loads used up batch ids)
ORD="(SELECT count(*) FROM etl.batches b2 WHERE b2.batch_id <= b.batch_id)"
if checks_values; then
    for q in "SELECT patient_id, source, mrn_pseudo, ssn_pseudo, birth_year, sex, zip3, death_date FROM wh.dim_patient" \
             "SELECT kind, provider_id, name, specialty, facility_id, facility_type, state, beds FROM wh.dim_provider" \
             "SELECT $ORD, rows_read, rows_loaded, rows_rejected, rows_skipped FROM etl.batches b" \
             "SELECT $ORD, file_name, table_name, sha256, rows_read, rows_loaded, rows_rejected FROM etl.batch_files b" \
             "SELECT $ORD, file_name, line, reason, field, regexp_replace(detail, 'batch [0-9]+', 'batch N') FROM etl.rejects b"; do
        dump "$RURL" "$q" "$WORK/ref.q"
        dump "$U" "$q" "$WORK/coord.q"
        [ -s "$WORK/ref.q" ] || fail "nothing in the reference for: $q"
        cmp -s "$WORK/ref.q" "$WORK/coord.q" || fail "differs from one node: $q: $(diff "$WORK/ref.q" "$WORK/coord.q" | head -5)"
    done
fi
assert_eq "$(sql "SELECT count(*) FROM etl.rejects WHERE reason = 'duplicate_key' AND file_name = 'encounters.csv'")" 15 \
    "batch-1 stays sent again, rejected as loaded"
if checks_values; then ok "every fact row (in total and per shard), dimension row, reject and batch record equals one node's ($(cat "$WORK"/ref.fact_*.csv | wc -l) fact rows)"
else ok "six batches loaded over 3 shards (their rows against one node's: the normal pass)"; fi

# ---- adding shards after distribute: the new shard takes its share ------------
for k in 4 5; do
    restore_home empty "$WORK/shard$k" || true
    PROGNOS_HOME="$WORK/shard$k" px db init >/dev/null
    SURL[$k]=$(PROGNOS_HOME="$WORK/shard$k" px db url)
done
# shard 4: the add killed once the first shard prepared its moves; a rerun rolls
# every prepared move back (the new server's too) and adds it
set +e
PX_TEST_KILL_AT=rebalance_prepared px db shards add "${SURL[4]}" >"$WORK/out" 2>"$WORK/err"
got=$?
set -e
assert_eq "$got" 137 "db shards add killed at rebalance_prepared"
assert_eq "$(prepared | wc -l)" 1 "prepared moves after the kill"
assert_eq "$(sql "SELECT count(*) FROM wh.shards")" 3 "shards after the killed add"
totals
assert_exit 0 px db shards add "${SURL[4]}"
assert_eq "$(psql -X -At "${SURL[4]}" -c "SELECT count(*) FROM pg_prepared_xacts")$(prepared)" "0" "prepared transactions after the add"
totals
per_shard 4
ok "db shards add after distribute, killed then rerun: 4 shards, each holding the rows of its hash remainder, the same rows as one node$REFNOTE"

# shard 5: killed after the coordinator committed the new layout: db shards
# recover commits the moves
set +e
PX_TEST_KILL_AT=rebalance_committed px db shards add "${SURL[5]}" >"$WORK/out" 2>"$WORK/err"
got=$?
set -e
assert_eq "$got" 137 "db shards add killed at rebalance_committed"
n=$(for k in 1 2 3 4 5; do psql -X -At "${SURL[$k]}" -c "SELECT count(*) FROM pg_prepared_xacts"; done | paste -sd+ | bc)
assert_eq "$n" 5 "prepared moves after the kill (one per shard)"
assert_exit 0 px db shards recover --json
assert_eq "$(cat "$WORK/out")" '{"shards":5,"committed":5,"rolled_back":0}' "recover"
totals
per_shard 5
ok "db shards add killed after its commit: db shards recover completes the move (5 shards)$REFNOTE"

# a load after the adds goes to the new layout; features equal one node's
px generate --patients 100 --seed 70 --out "$WORK/b7.gen" >/dev/null
mkdir -p "$WORK/b7"
cp "$WORK/b7.gen/facilities.csv" "$WORK/b7.gen/providers.csv" "$WORK/b7/"
for f in patients encounters diagnoses procedures; do
    sed -E 's/\bP([0-9]{8})\b/P\1b7/g; s/\bE([0-9]{9})\b/E\1b7/g' "$WORK/b7.gen/$f.csv" >"$WORK/b7/$f.csv"
done
# a shard that is down: the load fails before anything is stored, naming it
PROGNOS_HOME="$WORK/shard1" px db stop >/dev/null
assert_exit 1 load b7
grep -q "cannot connect to shard px_shard_0" "$WORK/err" || fail "load with a shard down: $(cat "$WORK/err")"
PROGNOS_HOME="$WORK/shard1" px db start >/dev/null
ok "a load with a shard down fails, naming the shard"
assert_exit 0 load b7
if checks_values; then PROGNOS_HOME=$REF px etl load --format canonical --source "$WORK/b7" --quiet >/dev/null; fi
# and the SynPUF format's loader (its own SQL merge) over the shards
assert_exit 0 px etl load --format synpuf --source "$SYNPUF/sample-1" --quiet
if checks_values; then PROGNOS_HOME=$REF px etl load --format synpuf --source "$SYNPUF/sample-1" --quiet >/dev/null; fi
[ "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE source = 'synpuf'")" -gt 100 ] || fail "no SynPUF stay on the shards"
totals
per_shard 5
px features build >/dev/null
if checks_values; then
    PROGNOS_HOME=$REF px features build >/dev/null
    for t in features.readmission features.mortality features.los; do
        dump "$RURL" "SELECT * FROM $t" "$WORK/ref.$t.csv"
        dump "$U" "SELECT * FROM $t" "$WORK/coord.$t.csv"
        [ -s "$WORK/ref.$t.csv" ] || fail "$t is empty"
        cmp -s "$WORK/ref.$t.csv" "$WORK/coord.$t.csv" || fail "$t differs from one node: $(diff "$WORK/ref.$t.csv" "$WORK/coord.$t.csv" | head -4)"
    done
fi
assert_eq "$(prepared)" "" "prepared transactions on the five shards at the end"
if checks_values; then ok "a canonical and a SynPUF batch loaded over 5 shards; every feature row equals one node's ($(cat "$WORK"/ref.features.*.csv | wc -l) rows)"
else ok "a canonical and a SynPUF batch loaded over 5 shards, features built (their rows against one node's: the normal pass)"; fi
