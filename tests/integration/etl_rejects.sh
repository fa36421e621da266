#!/usr/bin/env bash
# One injected bad row of each kind (tests/fixtures/canonical-bad): exactly those
# rows are rejected, with the right reason; every other row loads; a second load
# of the same files adds nothing and exits 3.
. "$(dirname "$0")/lib.sh"
SRC="$FIXTURES/canonical-bad"

assert_exit 0 px etl load --format canonical --source "$SRC" --max-reject-rate 100 --quiet
got=$(sql "SELECT file_name || '|' || line || '|' || reason FROM etl.rejects ORDER BY 1")
diff <(sort "$SRC/expected-rejects.txt") <(echo "$got" | sort) || fail "rejects differ from expected-rejects.txt"
ok "each injected bad row rejected with its reason ($(echo "$got" | wc -l) rows)"

# every row read is loaded or rejected, per file; the loaded ones are in the warehouse
while IFS='|' read -r file read loaded rejected; do
    lines=$(($(wc -l < "$SRC/$file") - 1))
    assert_eq "$read" "$lines" "$file: rows read"
    assert_eq "$((loaded + rejected))" "$read" "$file: loaded + rejected"
    assert_eq "$rejected" "$(grep -c "^$file|" "$SRC/expected-rejects.txt")" "$file: rejected"
done < <(sql "SELECT file_name, rows_read, rows_loaded, rows_rejected FROM etl.batch_files")
assert_eq "$(sql 'SELECT count(*) FROM wh.dim_patient')" 4 "patients loaded"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter')" 2 "encounters loaded"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_diagnosis')" 4 "diagnoses loaded"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_procedure')" 2 "procedures loaded"
assert_eq "$(sql "SELECT count(*) FROM wh.dim_provider WHERE kind = 'facility'")" 2 "facilities"
# values as stored: birth year only, ZIP prefix, codes without dots, LOS and age derived
assert_eq "$(sql "SELECT birth_year || ' ' || zip3 || ' ' || sex FROM wh.dim_patient WHERE death_date = '2021-05-01'")" "1942 537 M" "patient P002 as stored"
assert_eq "$(sql "SELECT string_agg(code, ',' ORDER BY code) FROM wh.fact_diagnosis")" "25000,4280,E119,I509" "codes normalized"
assert_eq "$(sql "SELECT los_days || ' ' || age_at_admission || ' ' || total_cost FROM wh.fact_encounter WHERE total_cost = 12000.50")" "5 71 12000.50" "E001 as stored"
ok "loaded rows stored as specified"

before=$(sql "SELECT (SELECT count(*) FROM etl.rejects) || '/' || (SELECT count(*) FROM wh.fact_encounter)")
assert_exit 3 px etl load --format canonical --source "$SRC"
grep -q "nothing to load" "$WORK/out" || fail "second load does not say there is nothing to load"
assert_eq "$(sql "SELECT (SELECT count(*) FROM etl.rejects) || '/' || (SELECT count(*) FROM wh.fact_encounter)")" "$before" "second load changed the warehouse"
assert_eq "$(sql 'SELECT count(*) FROM etl.batches')" 1 "batches after a repeated load"
ok "loading the same files again adds nothing (exit 3)"

# a changed file is a new batch; its duplicates of loaded rows are rejected as such
cp -r "$SRC" "$WORK/src2"
echo 'E010,4,icd10,I10,N' >> "$WORK/src2/diagnoses.csv"
echo 'E010,1,icd10,I10,N' >> "$WORK/src2/diagnoses.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/src2" --max-reject-rate 100 --json
assert_eq "$(sql 'SELECT count(*) FROM etl.batch_files WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)')" 1 "only the changed file is loaded"
# 12 rows: 1 new code (E010 seq 4), 6 duplicates of loaded codes, 5 bad as before
assert_eq "$(sql "SELECT rows_loaded || '/' || rows_rejected FROM etl.batch_files WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)")" "1/11" "changed diagnoses.csv: loaded/rejected"
assert_eq "$(sql "SELECT count(*) FROM etl.rejects WHERE batch_id = (SELECT max(batch_id) FROM etl.batches) AND reason = 'duplicate_key'")" 6 "duplicates of an earlier batch"
ok "a changed file loads only what is new"

# an unknown column is ignored with one warning naming it (printed, and kept in etl.warnings)
mkdir "$WORK/src3"
printf 'facility_id,name,type,colour,Wing\nH9,X,acute,red,B\nH8,Y,rehab,blue,C\n' > "$WORK/src3/facilities.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/src3" --quiet
assert_eq "$(grep -c "ignored columns not in the canonical layout: 'colour', 'Wing'" "$WORK/err")" 1 "one warning naming the unknown columns"
assert_eq "$(sql "SELECT line || ' ' || reason || ' ' || field FROM etl.warnings WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)")" \
    "1 unknown_column 'colour', 'Wing'" "the warning as stored"
assert_eq "$(sql "SELECT string_agg(provider_id || ' ' || facility_type, ',' ORDER BY provider_id) FROM wh.dim_provider WHERE provider_id IN ('H8', 'H9')")" "H8 rehab,H9 acute" "rows of a file with unknown columns"
ok "unknown columns are ignored with one warning naming them"
batches=$(sql 'SELECT count(*) FROM etl.batches')

# structural errors: a missing required column stops the load, naming it; nothing stored
printf 'P1,MRN1,123-45-6789,Ann,Lee,1950-01-01,F,53703,,,\n' > "$WORK/src3/patients.csv"   # no header row
rm "$WORK/src3/facilities.csv"
assert_exit 1 px etl load --format canonical --source "$WORK/src3"
grep -q -e P1 -e 123-45 -e Ann "$WORK/err" "$PROGNOS_HOME/log/prognos.log" && fail "a data row taken for a header was echoed"
printf 'facility_id,name\nH9,X\n' > "$WORK/src3/facilities.csv"; rm "$WORK/src3/patients.csv"
assert_exit 1 px etl load --format canonical --source "$WORK/src3"
grep -q "lacks the required column 'type'" "$WORK/err" || fail "missing column: no clear error"
assert_exit 1 px etl load --format canonical --source "$WORK/nonexistent"
assert_eq "$(sql 'SELECT count(*) FROM etl.batches')" "$batches" "failed loads left a batch"
# each failed load that drew a batch id is listed as failed, with its reason
assert_eq "$(sql "SELECT string_agg(reason, ' | ' ORDER BY batch_id) FROM etl.failed_batches")" \
    "'patients.csv' lacks the required column 'patient_id' | 'facilities.csv' lacks the required column 'type'" "failed batches as recorded"
px etl status > "$WORK/status.txt"
grep -q "FAILED, nothing stored: 'facilities.csv' lacks the required column 'type'" "$WORK/status.txt" || fail "etl status does not show the failed load: $(cat "$WORK/status.txt")"
ok "malformed files are refused with a clear error and leave nothing"

# a reject whose value is cut for storage is cut on a UTF-8 character boundary
mkdir "$WORK/src4"
{ echo 'facility_id,name,type,state,beds'; printf 'H77,a%s,acute,WI,10\n' "$(printf 'é%.0s' $(seq 1 110))"; } > "$WORK/src4/facilities.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/src4" --max-reject-rate 100 --quiet
assert_eq "$(sql "SELECT reason || ' ' || length(row_data->>'name') FROM etl.rejects WHERE file_name = 'facilities.csv'")" "invalid_text 100" "long multibyte value rejected, cut at a character boundary"
ok "values cut for rejects stay valid UTF-8"

# a patient delivered again with a birth year after the death date already stored
mkdir "$WORK/p1" "$WORK/p2"
echo 'patient_id,birth_date,sex,death_date' > "$WORK/p1/patients.csv"
echo 'PX9,1950-01-01,F,1960-05-05' >> "$WORK/p1/patients.csv"
echo 'patient_id,birth_date,sex' > "$WORK/p2/patients.csv"
echo 'PX9,1970-01-01,F' >> "$WORK/p2/patients.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/p1" --quiet
assert_exit 0 px etl load --format canonical --source "$WORK/p2" --max-reject-rate 100 --quiet
assert_eq "$(sql "SELECT reason || ' ' || field FROM etl.rejects WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)")" "invalid_date birth_date" "re-delivered patient contradicting the stored death"
ok "a re-delivered patient that contradicts the warehouse is rejected, not a failed batch"

# a file that changes between its fingerprint and its parsing is refused
mkdir "$WORK/c1"
printf 'facility_id,name,type\nH54,Lakeside Hospital,acute\n' > "$WORK/c1/facilities.csv"
# (deterministic: the ETL's lock is held until the load is seen waiting for it, after
# its fingerprints; then the file changes and the lock is released)
psql -X -q "$(px db url)" -c "SELECT pg_advisory_lock(7070002), pg_sleep(3600)" >/dev/null 2>&1 &
locker=$!
lock_held() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7070002 AND granted")" = 1 ]; }
load_waiting() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'")" -ge 1 ]; }
wait_for "the ETL lock to be held" lock_held
px etl load --format canonical --source "$WORK/c1" --quiet >"$WORK/c1.out" 2>"$WORK/c1.err" &
loader=$!
wait_for "the load to wait for the ETL lock" load_waiting
echo 'H55,Changed Hospital,acute' >> "$WORK/c1/facilities.csv"
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_advisory_lock(7070002)%'" >/dev/null
set +e; wait "$loader"; rc=$?; set -e
wait "$locker" || true
assert_eq "$rc" 1 "exit of a load whose file changed under it"
grep -q "changed while it was being loaded" "$WORK/c1.err" || fail "no clear error for a file changed mid-load: $(cat "$WORK/c1.err")"
assert_exit 0 px etl load --format canonical --source "$WORK/c1" --quiet
assert_eq "$(sql "SELECT count(*) FROM wh.dim_provider WHERE provider_id = 'H55'")" 1 "the changed file loads on the next run"
ok "a file changed while it was loaded is refused; the next run loads it"

# --force: a file loaded before is loaded again; the encounter rejected for an
# unknown patient loads once that patient exists, the others are duplicates
mkdir "$WORK/late"
printf 'patient_id,birth_date,sex\nP999,1960-01-01,M\n' > "$WORK/late/patients.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/late" --quiet
mkdir "$WORK/again" && cp "$SRC/encounters.csv" "$WORK/again/"
assert_exit 3 px etl load --format canonical --source "$WORK/again"
before=$(sql 'SELECT count(*) FROM wh.fact_encounter')
assert_exit 0 px etl load --format canonical --source "$WORK/again" --force --max-reject-rate 100 --quiet
# E005 loads now that P999 exists. E004 loads too: its patient (born 2021-06-15,
# admitted 2021-03-01) is no longer in the batch, and the warehouse keeps only
# the birth year, so across batches birth_after_admission is checked by year.
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter')" "$((before + 2))" "encounters after a forced reload"
assert_eq "$(sql "SELECT rows_loaded || '/' || rows_rejected FROM etl.batch_files WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)")" "2/12" "forced reload: retried rows load, the rest are rejected again or duplicates"
ok "--force retries a file: only what was missing loads"

# a batch with its own patients: encounters checked in C go straight to the load
# table, but one delivered in an earlier batch is still a duplicate, and a
# re-delivered patient's stored death date still rejects a later admission
mkdir "$WORK/d1" "$WORK/d2"
E='encounter_id,patient_id,facility_id,admission_date,discharge_date,admission_type,admission_source,discharge_disposition,total_cost'
printf 'facility_id,name,type\nHD1,Dup Hospital,acute\n' > "$WORK/d1/facilities.csv"
printf 'patient_id,birth_date,sex,death_date\nPD1,1950-01-01,F,2020-01-01\n' > "$WORK/d1/patients.csv"
printf '%s\nED1,PD1,HD1,2019-03-01,2019-03-04,urgent,ed,home,100.25\n' "$E" > "$WORK/d1/encounters.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/d1" --quiet
printf 'patient_id,birth_date,sex\nPD1,1950-01-01,F\nPD2,1960-01-01,M\n' > "$WORK/d2/patients.csv"
{ echo "$E"; echo 'ED1,PD1,HD1,2019-03-01,2019-03-04,urgent,ed,home,100.25'
  echo 'ED2,PD1,HD1,2021-05-01,2021-05-02,urgent,ed,home,0.5'
  echo 'ED3,PD2,HD1,2021-05-01,2021-05-03,elective,clinic,home,-0'
  echo 'ED4,PD2,HD1,2022-06-01,2022-06-03,elective,clinic,home,1234567.891'; } > "$WORK/d2/encounters.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/d2" --max-reject-rate 100 --quiet
assert_eq "$(sql "SELECT string_agg(line || ' ' || reason, ', ' ORDER BY line) FROM etl.rejects WHERE batch_id = (SELECT max(batch_id) FROM etl.batches) AND file_name = 'encounters.csv'")" \
    "2 duplicate_key, 3 death_before_admission" "a direct load still finds earlier batches' encounters and stored deaths"
assert_eq "$(sql "SELECT rows_loaded || '/' || rows_rejected FROM etl.batch_files WHERE batch_id = (SELECT max(batch_id) FROM etl.batches) AND file_name = 'encounters.csv'")" "2/2" "d2 encounters loaded/rejected"
assert_eq "$(sql "SELECT string_agg(total_cost::text || ' ' || los_days || ' ' || age_at_admission, ', ' ORDER BY admission_date) FROM wh.fact_encounter WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)")" \
    "0.00 2 61, 1234567.89 2 62" "costs, LOS and ages as stored"
assert_eq "$(sql "SELECT count(*) FROM pg_class WHERE relname LIKE 'load\_%' OR relname ~ '^fact_encounter_p(19[0-9][0-9]|200[0-9])'")" 0 "no load tables or empty year partitions left"
ok "direct encounter loads keep the cross-batch rules"

# A load whose last statement before COMMIT fails (its INSERT into audit.events waits on a
# lock another session holds, and gives up after lock_timeout): exit 1 naming the failure,
# nothing of it visible, its batch id recorded in etl.failed_batches with the reason.
# (etl_kill.sh kills loads at that point; this is the same point failing cleanly.)
mkdir -p "$WORK/d3"
printf 'patient_id,birth_date,sex\nPD3,1955-01-01,F\n' > "$WORK/d3/patients.csv"
{ echo "$E"; echo 'ED5,PD3,HD1,2022-02-01,2022-02-03,urgent,ed,home,10'; } > "$WORK/d3/encounters.csv"
before=$(sql "SELECT count(*) || '/' || (SELECT count(*) FROM etl.batches) FROM wh.fact_encounter")
audit_hold
PGOPTIONS="-c lock_timeout=300" assert_exit 1 px etl load --format canonical --source "$WORK/d3" --quiet
audit_release
grep -q "lock timeout" "$WORK/err" || fail "the failed load does not name its failure: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT count(*) || '/' || (SELECT count(*) FROM etl.batches) FROM wh.fact_encounter")" "$before" \
    "stays and batches after the failed load"
assert_eq "$(sql "SELECT count(*) FROM etl.failed_batches WHERE reason LIKE '%lock timeout%' AND rows_read > 0")" 1 \
    "the failed batch recorded with its reason"
ok "a load failing at its last statement: exit 1, nothing visible, recorded in etl.failed_batches"
# and one whose server connection ends there (its backend terminated while it waits): exit 1
# naming the failure, nothing visible (the failure cannot be recorded without a connection)
audit_hold
set +e; px etl load --format canonical --source "$WORK/d3" --quiet >"$WORK/out" 2>"$WORK/err" & loader=$!; set -e
wait_for "the load to wait on audit.events" audit_insert_waits
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
     AND query LIKE 'INSERT INTO audit.events%'" >/dev/null
rc=0; wait "$loader" || rc=$?
audit_release
assert_eq "$rc" 1 "exit code of the load whose connection ended"
grep -qi "terminat" "$WORK/err" || fail "the load does not name the ended connection: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT count(*) || '/' || (SELECT count(*) FROM etl.batches) FROM wh.fact_encounter")" "$before" \
    "stays and batches after the load whose connection ended"
assert_exit 0 px etl load --format canonical --source "$WORK/d3" --quiet
assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)")" 1 \
    "the same files load once the lock is gone"
ok "a load whose connection ends at its last statement: exit 1, nothing visible; the files load when rerun"
