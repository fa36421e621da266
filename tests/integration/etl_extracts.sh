#!/usr/bin/env bash
# Real extracts (issue 17): a research extract with per-patient shifted dates, no
# costs, partial birth dates, observation stays and extra columns loads every
# valid row in one batch; the age rule is checked against each stay; a load over
# --max-reject-rate is rolled back, leaves nothing behind, exits 1, is listed as
# failed, and loads without --force once the options are right; the same files
# load with --force a third time. Each with bad input as well.
. "$(dirname "$0")/lib.sh"

px generate --patients 50 --seed 17 --out "$WORK/gen" >/dev/null
python3 "$PROGNOS_SRC/tests/integration/etl_extract_shift.py" "$WORK/gen" "$WORK/x"
exp() { sed -n "s/^$1 //p" "$WORK/x.expected"; }
rows=$(($(cat "$WORK"/x/*.csv | wc -l) - 6))

# ---- the reference date's rules refuse the shifted extract: over the rate, rolled back
assert_exit 1 px etl load --format canonical --source "$WORK/x" --as-of 2030-06-30 --quiet
grep -q "more than --max-reject-rate 5%: rolled back, nothing was stored" "$WORK/err" || fail "no rollback message: $(cat "$WORK/err")"
grep -q "future_date [0-9]* (e.g. [a-z]*.csv line [0-9]*: '[a-z_]*' is after the reference date 2030-06-30 (--as-of); for extracts whose dates are shifted, load with --future-dates allow)" "$WORK/err" \
    || fail "the future_date summary does not name the reference date and the option: $(cat "$WORK/err")"
grep -q "no --force is needed" "$WORK/err" || fail "no hint on retrying"
assert_eq "$(sql "SELECT (SELECT count(*) FROM etl.batches) || ' ' || (SELECT count(*) FROM etl.batch_files) || ' ' || (SELECT count(*) FROM etl.rejects) || ' ' || (SELECT count(*) FROM etl.warnings) || ' ' || (SELECT count(*) FROM wh.dim_patient) || ' ' || (SELECT count(*) FROM wh.fact_encounter) || ' ' || (SELECT count(*) FROM wh.fact_diagnosis) || ' ' || (SELECT count(*) FROM wh.dim_provider)")" \
    "0 0 0 0 0 0 0 0" "what a rolled-back load left behind"
assert_eq "$(sql "SELECT count(*) FROM pg_class WHERE relname LIKE 'load\_%' OR relname ~ '^fact_.*_p[0-9]{4}$'")" 0 "tables left by a rolled-back load"
assert_eq "$(sql "SELECT batch_id || ' ' || rows_read || ' ' || (rows_rejected > 0) || ' ' || (reason LIKE 'batch 1 rejected % of $rows rows (%), more than --max-reject-rate 5%: rolled back%future_date%') FROM etl.failed_batches")" \
    "1 $rows true true" "the rolled-back load as recorded"
px etl status > "$WORK/status.txt"
grep -q "^1 .*canonical" "$WORK/status.txt" && grep -q "FAILED, nothing stored: batch 1 rejected" "$WORK/status.txt" || fail "etl status: $(cat "$WORK/status.txt")"
assert_eq "$(px etl status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["batches"]), [(b["batch_id"], b["status"]) for b in d["failed_batches"]])')" \
    "0 [(1, 'failed')]" "etl status --json"
assert_exit 1 px etl load --format canonical --source "$WORK/x" --as-of 2030-06-30 --json
assert_eq "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["rolled_back_for_rejects"], d["rows_read"], "future_date" in d["detail"], d["error"].startswith("batch 2 rejected"))' "$WORK/out")" \
    "True $rows True True" "--json on a rolled-back load"
assert_eq "$(sql "SELECT string_agg(batch_id::text, ',' ORDER BY batch_id) FROM etl.failed_batches")" "1,2" "both rolled-back loads listed"
ok "over --max-reject-rate: rolled back, exit 1, reasons summarized, listed as failed (batches 1, 2)"

# ---- the same files with --future-dates allow: every row in one batch, no --force
assert_exit 0 px etl load --format canonical --source "$WORK/x" --future-dates allow --json
assert_eq "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["batch_id"], d["files_loaded"], d["rows_read"], d["rows_loaded"], d["rows_rejected"])' "$WORK/out")" \
    "3 6 $rows $rows 0" "batch, files, rows read/loaded/rejected"
assert_eq "$(sql 'SELECT count(*) FROM wh.dim_patient')" "$(exp patients)" "patients"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter')" "$(exp encounters)" "encounters"
assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE admission_type = 'observation'")" "$(exp observation)" "observation stays"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter WHERE total_cost IS NOT NULL')" 0 "costs of an extract without them (NULL, not 0)"
assert_eq "$(sql "SELECT string_agg(birth_year::text, ',' ORDER BY birth_year) FROM wh.dim_patient")" "$(exp birth_years)" "birth years from full, YYYY-MM and YYYY dates"
assert_eq "$(sql "SELECT min(extract(year FROM admission_date)) > 2100 AND max(extract(year FROM admission_date)) > 2400 FROM wh.fact_encounter")" t "stays in future centuries"
assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE age_at_admission <> extract(year FROM admission_date) - (SELECT birth_year FROM wh.dim_patient p WHERE p.patient_id = fact_encounter.patient_id)")" 0 "ages at admission"
assert_eq "$(sql "SELECT string_agg(file_name || ' ' || field, '; ' ORDER BY file_name) FROM etl.warnings WHERE reason = 'unknown_column'")" \
    "encounters.csv 'note_flag'; patients.csv 'race_src'" "one warning per file naming the extra columns"
assert_eq "$(grep -c "prognos: warning: .*ignored a column not in the canonical layout" "$WORK/err")" 2 "warnings printed"
ok "shifted dates, no costs, partial birth dates, observation stays, extra columns: all $rows rows in batch 3"

# ---- the age rule against the stay, with the reference date off
mkdir "$WORK/age"
{ echo 'patient_id,birth_date,sex'; echo 'A1,2301,F'; echo 'A2,2390-05,M'; } > "$WORK/age/patients.csv"
{ echo 'encounter_id,patient_id,facility_id,admission_date,discharge_date,admission_type,admission_source,discharge_disposition,total_cost'
  echo 'EA1,A1,H001,2420-01-05,2420-01-09,observation,ed,home,'          # age 119: loads
  echo 'EA2,A1,H001,2425-03-01,2425-03-02,urgent,ed,home,'               # age 124
  echo 'EA3,A2,H001,2389-12-30,2390-01-02,urgent,ed,home,'               # born 2390
  echo 'EA4,A2,H001,2390-05-20,2390-05-21,newborn,ed,home,1500'          # age 0: loads
  echo 'EA5,P00000001,H001,2500-01-01,2500-01-02,urgent,ed,home,'        # a stored patient, over 120
} > "$WORK/age/encounters.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/age" --future-dates allow --max-reject-rate 50 --quiet
assert_eq "$(sql "SELECT string_agg(line || ' ' || reason, ', ' ORDER BY line) FROM etl.rejects WHERE batch_id = 4")" \
    "3 age_out_of_range, 4 birth_after_admission, 6 age_out_of_range" "ages checked against each stay"
assert_eq "$(sql "SELECT string_agg(age_at_admission || ' ' || coalesce(total_cost::text, 'null'), ', ' ORDER BY admission_date) FROM wh.fact_encounter WHERE batch_id = 4")" \
    "0 1500.00, 119 null" "the stays that load"
ok "age at admission 0-120 checked per stay when the reference date is off"

# ---- partial dates, the new type and cost: bad values are still rejected
mkdir "$WORK/bad"
{ echo 'patient_id,birth_date,sex'; echo 'B1,2020-13,F'; echo 'B2,20,F'; echo 'B3,1990-1,M'; echo 'B4,1990-02-30,M'; echo 'B5,1990,M'; echo 'B6,1990-07,F'; } > "$WORK/bad/patients.csv"
{ echo 'encounter_id,patient_id,facility_id,admission_date,discharge_date,admission_type,admission_source,discharge_disposition,total_cost,extra'
  echo 'EB1,B5,H001,2021-01-05,2021-01-09,observ,ed,home,,1'
  echo 'EB2,B5,H001,2021-02-05,2021-02-09,observation,ed,home,-5,1'
  echo 'EB3,B5,H001,2021-03-05,2021-03-09,observation,ed,home,abc,1'
  echo 'EB4,B6,H001,2021-04-05,2021-04-09,OBSERVATION,ed,home,,1'
  echo 'EB5,B6,H001,2031-04-05,2031-04-09,urgent,ed,home,10,1'
} > "$WORK/bad/encounters.csv"
assert_exit 0 px etl load --format canonical --source "$WORK/bad" --as-of 2030-01-01 --max-reject-rate 100 --quiet
assert_eq "$(sql "SELECT string_agg(file_name || ':' || line || ' ' || reason || ' ' || field, ', ' ORDER BY file_name, line) FROM etl.rejects WHERE batch_id = 5")" \
    "encounters.csv:2 invalid_enum admission_type, encounters.csv:3 cost_out_of_range total_cost, encounters.csv:4 invalid_number total_cost, encounters.csv:6 future_date admission_date, patients.csv:2 invalid_date birth_date, patients.csv:3 invalid_date birth_date, patients.csv:4 invalid_date birth_date, patients.csv:5 invalid_date birth_date" \
    "bad partial dates, admission types and costs"
assert_eq "$(sql "SELECT detail FROM etl.rejects WHERE batch_id = 5 AND line = 2 AND file_name = 'patients.csv'")" "'birth_date' is not a date in the form YYYY-MM-DD, YYYY-MM or YYYY" "invalid partial date detail"
assert_eq "$(sql "SELECT detail FROM etl.rejects WHERE batch_id = 5 AND reason = 'future_date'")" \
    "'admission_date' is after the reference date 2030-01-01 (--as-of); for extracts whose dates are shifted, load with --future-dates allow" "future_date detail"
assert_eq "$(sql "SELECT string_agg(admission_type || ' ' || coalesce(total_cost::text, 'null'), ', ') FROM wh.fact_encounter WHERE batch_id = 5")" "observation null" "observation in any case; empty cost is NULL"
ok "bad partial dates, admission types, costs and future dates rejected with their reason"

# ---- missing required column: named, nothing stored, listed as failed
mkdir "$WORK/nocol"
{ echo 'encounter_id,patient_id,facility_id,discharge_date,admission_type,admission_source,discharge_disposition'
  echo 'EC1,B5,H001,2021-01-09,urgent,ed,home'; } > "$WORK/nocol/encounters.csv"
assert_exit 1 px etl load --format canonical --source "$WORK/nocol"
grep -q "'encounters.csv' lacks the required column 'admission_date'" "$WORK/err" || fail "missing column not named: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT batch_id || ' ' || reason FROM etl.failed_batches ORDER BY batch_id DESC LIMIT 1")" \
    "6 'encounters.csv' lacks the required column 'admission_date'" "the failed load as recorded"
assert_eq "$(sql "SELECT string_agg(batch_id::text, ',' ORDER BY batch_id) FROM (SELECT batch_id FROM etl.batches UNION ALL SELECT batch_id FROM etl.failed_batches) t")" "1,2,3,4,5,6" "batch ids without a gap"
ok "a missing required column is named; the failed load keeps its batch id"

# ---- usage errors
assert_exit 2 px etl load --format canonical --source "$WORK/x" --future-dates maybe
grep -q "reject or allow" "$WORK/err" || fail "bad --future-dates: $(cat "$WORK/err")"
for bad in 101 -1 abc 5%; do
    assert_exit 2 px etl load --format canonical --source "$WORK/x" --max-reject-rate "$bad"
    grep -q "percentage 0-100" "$WORK/err" || fail "bad --max-reject-rate $bad: $(cat "$WORK/err")"
done
ok "bad --future-dates and --max-reject-rate values are usage errors"

# ---- the same files with --force, three times (was: "more than one row returned by a subquery")
use_new_home "$WORK/home2"   # another warehouse (lib.sh stops $WORK/home* on exit)
assert_exit 0 px etl load --format canonical --source "$WORK/gen" --quiet
first=$(sql "SELECT rows_read FROM etl.batches WHERE batch_id = 1")
for i in 2 3 4; do
    assert_exit 0 px etl load --format canonical --source "$WORK/gen" --force --quiet
done
assert_exit 3 px etl load --format canonical --source "$WORK/gen"
grep -q "loaded before (batch 4)" "$WORK/out" || fail "the latest batch is not named: $(cat "$WORK/out")"
assert_eq "$(sql "SELECT string_agg(batch_id || ':' || rows_read || ':' || (rows_rejected = (SELECT count(*) FROM etl.rejects r WHERE r.batch_id = b.batch_id AND reason = 'duplicate_key')), ' ' ORDER BY batch_id) FROM etl.batches b")" \
    "1:$first:true 2:$first:true 3:$first:true 4:$first:true" "forced reloads: only duplicates rejected"
assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter")" "$(($(wc -l < "$WORK/gen/encounters.csv") - 1))" "encounters after four loads"
ok "the same files load with --force a third (and fourth) time; duplicates do not count against the reject rate"

# ---- cost measures leave out stays without a cost (NULL is unknown, not zero)
use_new_home "$WORK/home3"
# enough stays that every model's holdout is large whatever the key (pseudonyms, and
# so the patients' split, depend on it): 50 patients are not
px generate --patients 400 --seed 18 --out "$WORK/halfcost" >/dev/null
python3 - "$WORK/halfcost/encounters.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
ic, ifac = rows[0].index("total_cost"), rows[0].index("facility_id")
for i, r in enumerate(rows[1:]):
    if i % 2 == 0 or r[ifac] == "H001":   # every other stay, and every stay of H001
        r[ic] = ""
csv.writer(open(sys.argv[1], "w"), lineterminator="\n").writerows(rows)
PY
assert_exit 0 px etl load --format canonical --source "$WORK/halfcost" --quiet
px features build --set all >/dev/null
for m in readmission mortality los; do px train --model $m --no-build --accept-failed-gates --hier-boot 0 >/dev/null; done
assert_exit 0 px kpi compute --period all --min-cases 1
assert_eq "$(sql "SELECT count(*) > 0 AND count(*) < (SELECT count(*) FROM wh.fact_encounter) FROM wh.fact_encounter WHERE total_cost IS NULL")" t "some stays without a cost"
assert_eq "$(sql "SELECT n || ' ' || round(observed::numeric, 2) || ' ' || round(rate::numeric, 4) FROM kpi.results WHERE measure = 'cost' AND unit_type = 'system'")" \
    "$(sql "SELECT count(total_cost) || ' ' || sum(total_cost) || ' ' || round(avg(total_cost), 4) FROM wh.fact_encounter")" "system cost: stays with a cost, their mean"
assert_eq "$(sql "SELECT count(*) FROM kpi.results WHERE measure = 'cost' AND unit_type = 'facility' AND unit = 'H001'")" 0 "a facility without any cost has no cost measure"
assert_eq "$(sql "SELECT count(*) FROM kpi.results WHERE measure = 'volume' AND unit_type = 'facility' AND unit = 'H001' AND n > 0")" 1 "... but its volume"
assert_eq "$(sql "SELECT count(*) FROM kpi.results k WHERE measure = 'cost' AND unit_type = 'facility' AND n <> (SELECT count(total_cost) FROM wh.fact_encounter WHERE facility_id = k.unit)")" 0 "facility cost denominators"
ok "cost KPIs count only stays with a recorded cost; a unit with none has no cost measure"
