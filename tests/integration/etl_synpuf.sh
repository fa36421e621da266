#!/usr/bin/env bash
# CMS DE-SynPUF samples ($SYNPUF: the subset in tests/fixtures/synpuf, or the full
# samples with PX_SYNPUF_DIR): every row is loaded or rejected with a reason, claim
# segments merge into one encounter, death dates come from the beneficiary files,
# and a second load adds nothing.
. "$(dirname "$0")/lib.sh"
S1="$SYNPUF/sample-1"

assert_exit 0 px etl load --format synpuf --source "$S1" --quiet
lines=0
for f in "$S1"/*.csv; do lines=$((lines + $(wc -l < "$f") - 1)); done
read -r rd ld rj <<<"$(sql "SELECT rows_read, rows_loaded, rows_rejected FROM etl.batches" | tr '|' ' ')"
assert_eq "$rd" "$lines" "rows read = data lines of the four files"
assert_eq "$((ld + rj))" "$rd" "read = loaded + rejected"
[ "$rj" -gt 0 ] || fail "no bad row of $S1 was rejected"
assert_eq "$(sql 'SELECT count(*) FROM etl.rejects')" "$rj" "every rejected row is in etl.rejects"
assert_eq "$(sql "SELECT count(*) FROM etl.rejects WHERE reason IS NULL OR detail = ''")" 0 "rejects without a reason"
ok "sample-1: $rd rows read = $ld loaded + $rj rejected"

# claims: one encounter per CLM_ID among the claim rows loaded
claims=$(awk -F, 'FNR > 1 {print $2}' "$S1"/*Inpatient_Claims*.csv | sort -u | wc -l)
rejected_claims=$(sql "SELECT count(DISTINCT row_data->>'CLM_ID') FROM etl.rejects WHERE file_name LIKE '%Inpatient%'")
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter')" "$((claims - rejected_claims))" "encounters = distinct loaded claims"
# a two-segment claim is one encounter spanning both segments
seg2=$(awk -F, 'FNR > 1 && $3 == 2 {print $2; exit}' "$S1"/*Inpatient_Claims*.csv)
[ -n "$seg2" ] || fail "no two-segment claim in $S1"
if [ -n "$seg2" ]; then
    span=$(awk -F, -v c="$seg2" 'FNR > 1 && $2 == c {a = ($12 != "" ? $12 : $4); d = ($19 != "" ? $19 : $5);
           if (min == "" || a < min) min = a; if (max == "" || d > max) max = d; pay += $7}
           END {printf "%s-%s-%s-%s-%s/%s-%s-%s %.2f", substr(min,1,4), substr(min,5,2), substr(min,7,2), "", "", substr(max,1,4), substr(max,5,2), substr(max,7,2), pay}' "$S1"/*Inpatient_Claims*.csv)
    want=$(echo "$span" | sed 's/--\//\//; s/-\//\//')
    # compare by the dates and payment; the encounter key is a pseudonym of CLM_ID, not CLM_ID
    got=$(sql "SELECT to_char(admission_date, 'YYYY-MM-DD') || '/' || to_char(discharge_date, 'YYYY-MM-DD') || ' ' || total_cost
               FROM wh.fact_encounter e WHERE EXISTS (SELECT 1 FROM etl.batch_files) AND e.total_cost = ${span##* }
               AND admission_date = '${want%%/*}'")
    [ -n "$got" ] || fail "the two-segment claim is not one merged encounter ($want)"
    ok "a two-segment claim merged into one encounter ($got)"
fi

# death dates from the beneficiary files; in-hospital deaths get disposition expired
deaths=$(awk -F, 'FNR > 1 && $3 != "" {print $1}' "$S1"/*Beneficiary*.csv | sort -u | wc -l)
assert_eq "$(sql 'SELECT count(*) FROM wh.dim_patient WHERE death_date IS NOT NULL')" "$deaths" "patients with a death date"
assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter e JOIN wh.dim_patient p USING (patient_id)
    WHERE (p.death_date BETWEEN e.admission_date AND e.discharge_date) <> (e.discharge_disposition = 'expired')")" 0 "expired disposition"
assert_eq "$(sql 'SELECT count(DISTINCT year) FROM wh.patient_year')" 3 "chronic-condition years"
assert_eq "$(sql "SELECT count(*) FROM wh.fact_diagnosis WHERE code_system <> 'icd9'")" 0 "SynPUF codes are ICD-9"
ok "deaths, dispositions, chronic-condition flags and codes"

assert_exit 3 px etl load --format synpuf --source "$S1"
assert_eq "$(sql 'SELECT count(*) FROM etl.batches')" 1 "second load made a batch"
ok "a second load of sample-1 adds nothing"

# one claim split over two claims files of one batch: loaded once, the other file's segment is a duplicate
seg2=$(awk -F, 'FNR > 1 && $3 == 2 {print $2; exit}' "$S1"/*Inpatient_Claims*.csv)
if [ -n "$seg2" ]; then
    use_new_home "$WORK/home-split"
    mkdir "$WORK/split"
    cp "$S1"/*Beneficiary*.csv "$WORK/split/"
    awk -F, -v c="$seg2" 'FNR == 1 || !($2 == c && $3 == 2)' "$S1"/*Inpatient_Claims*.csv > "$WORK/split/DE1_0_2008_to_2010_Inpatient_Claims_A.csv"
    awk -F, -v c="$seg2" 'FNR == 1 || ($2 == c && $3 == 2)' "$S1"/*Inpatient_Claims*.csv > "$WORK/split/DE1_0_2008_to_2010_Inpatient_Claims_B.csv"
    assert_exit 0 px etl load --format synpuf --source "$WORK/split" --quiet
    assert_eq "$(sql "SELECT reason FROM etl.rejects WHERE file_name LIKE '%Claims_B.csv'")" "duplicate_key" "the second file's segment of a loaded claim"
    assert_eq "$(sql 'SELECT sum(rows_read) - sum(rows_loaded) - sum(rows_rejected) FROM etl.batch_files')" 0 "accounting with a split claim"
    ok "a claim split over two files of one batch loads once"
    export PROGNOS_HOME="$WORK/home"
fi

# a claim loads whole or not at all: a bad second segment rejects the first too
if [ -n "$seg2" ]; then
    use_new_home "$WORK/home-seg"
    mkdir "$WORK/seg"
    cp "$S1"/*Beneficiary*.csv "$WORK/seg/"
    awk -F, -v OFS=, -v c="$seg2" 'FNR > 1 && $2 == c && $3 == 2 {$21 = "ZZZZ"} {print}' \
        "$S1"/*Inpatient_Claims*.csv > "$WORK/seg/DE1_0_2008_to_2010_Inpatient_Claims_S.csv"
    assert_exit 0 px etl load --format synpuf --source "$WORK/seg" --quiet
    assert_eq "$(sql "SELECT string_agg(reason || ':' || (detail LIKE 'another segment%')::text, ',' ORDER BY detail LIKE 'another segment%')
        FROM etl.rejects WHERE reason = 'invalid_icd9'")" "invalid_icd9:false,invalid_icd9:true" "both segments of the claim rejected"
    assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter')" "$((claims - rejected_claims - 1))" "the claim is not loaded"
    ok "a claim with a bad segment is rejected whole"
    export PROGNOS_HOME="$WORK/home"
fi

S2="$SYNPUF/sample-2"
assert_exit 0 px etl load --format synpuf --source "$S2" --quiet
assert_eq "$(sql 'SELECT count(*) FROM etl.batches')" 2 "sample-2 is a second batch"
assert_eq "$(sql 'SELECT sum(rows_read) - sum(rows_loaded) - sum(rows_rejected) FROM etl.batches')" 0 "accounting over batches"
ok "sample-2 loads as a second batch"
