#!/usr/bin/env bash
# export.sh: prognos export, the de-identified research extract (HIPAA Safe Harbor).
# On generated data (1,500 patients) and on the SynPUF fixture: every cohort in both
# formats; no plaintext identifier of the source CSV nor any warehouse pseudonym in any
# exported file; ages over 89 grouped; small facilities, states and ZIP3 areas hidden;
# dates shifted per patient by the keyed offset (recomputed here with Python's hmac
# from a key file) with intervals kept, and differing between exports without a key;
# the manifest's hashes verify with sha256sum; bad input exits 1/2 with nothing written.
# export_check.py (beside this file) does the checks on each export directory. It runs none
# of our code (about 1 CPU-s an export): the normal pass's (checks_values, lib.sh); the ASan
# pass runs every export.
. "$(dirname "$0")/lib.sh"
CHECK="$(dirname "$0")/export_check.py"
check() { if checks_values; then python3 "$CHECK" "$@"; fi; }
# what the ok lines claim: the checker's findings in the normal pass, the exports' in the ASan pass
checked() { if checks_values; then echo "$1"; else echo "$2 (export_check.py: normal pass)"; fi; }

# the feature table's rows and the warehouse ZIP3 as export_check.py reads them
source_tsv() { # cohort file
    psql -X -q -At -F $'\t' -v ON_ERROR_STOP=1 "$(px db url)" -c \
        "SELECT t.patient_id::text, t.encounter_id::text, t.admission_date, t.discharge_date, t.age_years,
                t.facility_id, coalesce(d.zip3, ''), '' FROM features.$1 t LEFT JOIN wh.dim_patient d USING (patient_id)" >"$2"
}
# every pseudonym the warehouse holds, with and without dashes
pseudonyms() {
    sql "SELECT patient_id::text FROM wh.dim_patient UNION ALL SELECT encounter_id::text FROM wh.fact_encounter
         UNION ALL SELECT replace(patient_id::text, '-', '') FROM wh.dim_patient
         UNION ALL SELECT replace(encounter_id::text, '-', '') FROM wh.fact_encounter
         UNION ALL SELECT mrn_pseudo::text FROM wh.dim_patient WHERE mrn_pseudo IS NOT NULL
         UNION ALL SELECT ssn_pseudo::text FROM wh.dim_patient WHERE ssn_pseudo IS NOT NULL"
}
nothing_written() { # dir
    [ ! -e "$1" ] || { ls -la "$1" >&2; fail "'$1' was written by a failed export"; }
}

# ---- bad input, before anything is built --------------------------------------
NOHOME="$WORK/nohome"
PROGNOS_HOME="$NOHOME" assert_exit 1 px export --cohort readmission --out "$WORK/x0"
grep -q "prognos db init" "$WORK/err" || fail "no hint to db init: $(cat "$WORK/err")"
[ ! -e "$NOHOME" ] || fail "export created a warehouse"
nothing_written "$WORK/x0"

px generate --patients 1500 --seed 11 --small-facilities 6 --out "$WORK/gen" >/dev/null
px etl load --format canonical --source "$WORK/gen" --quiet >/dev/null
assert_exit 1 px export --cohort readmission --out "$WORK/x1"
grep -q "no feature table 'features.readmission'" "$WORK/err" || fail "no clear error: $(cat "$WORK/err")"
grep -q "prognos features build --set readmission" "$WORK/err" || fail "no hint: $(cat "$WORK/err")"
nothing_written "$WORK/x1"
assert_exit 2 px export --cohort readmissions --out "$WORK/x1"
grep -q "unknown cohort 'readmissions'" "$WORK/err" || fail "unknown cohort: $(cat "$WORK/err")"
assert_exit 2 px export --cohort los --out "$WORK/x1" --format parquet
grep -q "unknown format 'parquet'" "$WORK/err" || fail "bad format: $(cat "$WORK/err")"
assert_exit 2 px export --out "$WORK/x1"
assert_exit 2 px export --cohort los
assert_exit 2 px export --cohort los --out "$WORK/x1" --min-cell 0
assert_exit 2 px export --cohort los --out "$WORK/x1" --dates month
nothing_written "$WORK/x1"
assert_exit 0 px export --help
grep -q -- "--date-shift-key" "$WORK/out" || fail "--help does not document --date-shift-key"
ok "bad input before a build: exit 1/2, clear messages, nothing written"

px features build >/dev/null
mkdir -p "$WORK/full" && echo keep >"$WORK/full/notes.txt"
assert_exit 1 px export --cohort los --out "$WORK/full"
grep -q "is not empty" "$WORK/err" || fail "non-empty dir: $(cat "$WORK/err")"
assert_eq "$(ls "$WORK/full")" "notes.txt" "a refused export wrote nothing"
echo short >"$WORK/short.key"
assert_exit 1 px export --cohort los --out "$WORK/x1" --date-shift-key "$WORK/short.key"
grep -q "at least 32" "$WORK/err" || fail "short key: $(cat "$WORK/err")"
assert_exit 1 px export --cohort los --out "$WORK/x1" --date-shift-key "$WORK/missing.key"
nothing_written "$WORK/x1"
ok "non-empty directory, bad key files: exit 1, nothing written"

# ---- identifiers of the source CSV and the warehouse's pseudonyms ---------------
{
    tail -n +2 "$WORK/gen/patients.csv" | cut -d, -f1-6,8-10 | tr ',' '\n'
    tail -n +2 "$WORK/gen/encounters.csv" | cut -d, -f1,4 | tr ',' '\n'
    pseudonyms
} | grep -v '^$' | sort -u >"$WORK/ids.txt"
grep -q '^P00000001$' "$WORK/ids.txt" && grep -q '^E000000001$' "$WORK/ids.txt" || fail "identifier list incomplete"

# ---- every cohort, both formats -------------------------------------------------
head -c 48 /dev/urandom >"$WORK/date.key"
for cohort in readmission mortality los; do
    source_tsv "$cohort" "$WORK/src_$cohort.tsv"
    for fmt in csv jsonl; do
        out="$WORK/ex_${cohort}_$fmt"
        assert_exit 0 px export --cohort "$cohort" --out "$out" --format "$fmt" --date-shift-key "$WORK/date.key" --json
        (cd "$out" && sha256sum --quiet -c SHA256SUMS) || fail "$out: SHA256SUMS does not verify"
        check "$out" "$WORK/src_$cohort.tsv" "$WORK/ids.txt" --key "$WORK/date.key"
        ! grep -aqF "$(od -An -tx1 "$WORK/date.key" | tr -d ' \n' | head -c 32)" "$out"/* || fail "key material in $out"
    done
    # the generator's tiny facilities (1-10 stays each) make small cells to suppress
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); sys.exit(0 if m['deidentification']['suppressed'].get('facility_id', 0) > 0 else 1)" \
        "$WORK/ex_${cohort}_csv/manifest.json" || fail "$cohort: no small facility suppressed: the test does not test suppression"
    assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'export.research' AND object = '$cohort'")" 2 \
        "exports of $cohort in audit.events"
done
# the checker can fail: a pseudonym or a name planted in a copy is found
if checks_values; then
cp -r "$WORK/ex_los_csv" "$WORK/tampered"
echo "$(head -1 "$WORK/src_los.tsv" | cut -f1)" >>"$WORK/tampered/manifest.json"
! python3 "$CHECK" "$WORK/tampered" "$WORK/src_los.tsv" "$WORK/ids.txt" 2>"$WORK/err" || fail "planted pseudonym not found"
grep -q "identifiers in the export" "$WORK/err" || fail "planted pseudonym: $(cat "$WORK/err")"
cp "$WORK/ex_los_csv/manifest.json" "$WORK/tampered/"
name=$(sed -n 2p "$WORK/gen/patients.csv" | cut -d, -f5)
sed -i "\$s/\$/ $name/" "$WORK/tampered/data_dictionary.csv"
! python3 "$CHECK" "$WORK/tampered" "$WORK/src_los.tsv" "$WORK/ids.txt" 2>"$WORK/err" || fail "planted name not found"
grep -q "name $name appears" "$WORK/err" || fail "planted name: $(cat "$WORK/err")"
# and a numeric identifier (a patient's ZIP code) as a whole number. The pseudonym above
# (hex and dashes) holds digit runs that may equal a ZIP code: those are not numbers (with
# some keys the check reported a ZIP code in the pseudonym's digits, not the pseudonym)
cp "$WORK/ex_los_csv/data_dictionary.csv" "$WORK/tampered/"
zip=$(sed -n 2p "$WORK/gen/patients.csv" | cut -d, -f8)
echo "$zip" >>"$WORK/tampered/manifest.json"
! python3 "$CHECK" "$WORK/tampered" "$WORK/src_los.tsv" "$WORK/ids.txt" 2>"$WORK/err" || fail "planted ZIP code not found"
grep -q "identifier $zip appears as a number" "$WORK/err" || fail "planted ZIP code: $(cat "$WORK/err")"
fi
ok "$(checked "three cohorts x two formats: identifiers absent, ages grouped, small cells hidden, keyed shifts exact" \
              "three cohorts x two formats exported: manifests verify, no key material, small facilities suppressed")"

# without a key: a fresh offset and fresh study ids per export; intervals kept
px export --cohort readmission --out "$WORK/r1" >/dev/null
px export --cohort readmission --out "$WORK/r2" >/dev/null
check "$WORK/r1" "$WORK/src_readmission.tsv" "$WORK/ids.txt"
check "$WORK/r2" "$WORK/src_readmission.tsv" "$WORK/ids.txt"
if checks_values; then
python3 - "$WORK/r1/data.csv" "$WORK/r2/data.csv" <<'EOF' || fail "two exports without a key can be linked"
import csv, sys
a, b = (list(csv.DictReader(open(f))) for f in sys.argv[1:3])
# the same patient (same sequence of stays) gets another study id and another offset
pa = {(r["study_id"], r["admission_date"]) for r in a}
pb = {(r["study_id"], r["admission_date"]) for r in b}
same = len(pa & pb) / len(pa)
print(f"  (study id, date) pairs common to two exports: {same:.3%}")
sys.exit(0 if same < 0.05 else 1)
EOF
fi
# the same key gives the same dates again
px export --cohort los --out "$WORK/k2" --date-shift-key "$WORK/date.key" >/dev/null
assert_eq "$(cut -d, -f3- "$WORK/k2/data.csv" | sort | sha256sum)" \
          "$(cut -d, -f3- "$WORK/ex_los_csv/data.csv" | sort | sha256sum)" "re-export with the same key"
ok "$(checked "without a key: study ids and offsets differ between exports; with one, the same rows again" \
              "with the same key, the same rows again")"

# --dates year: the year and days from the patient's first admission, no full date
px export --cohort mortality --out "$WORK/y" --dates year --format jsonl >/dev/null
check "$WORK/y" "$WORK/src_mortality.tsv" "$WORK/ids.txt" --dates year
! grep -qE '[0-9]{4}-[0-9]{2}-[0-9]{2}' "$WORK/y/data.jsonl" || fail "a full date in a --dates year export"
# thresholds are parameters: with K = 1000 every facility is suppressed
px export --cohort los --out "$WORK/k" --min-cell 1000 --min-zip3-patients 1000 >/dev/null
check "$WORK/k" "$WORK/src_los.tsv" "$WORK/ids.txt" --min-cell 1000 --min-zip3 1000
assert_eq "$(python3 -c "import csv,sys; print(sorted({r['facility_id'] for r in csv.DictReader(open(sys.argv[1]))}))" \
             "$WORK/k/data.csv")" "['suppressed']" "facilities with K = 1000"
assert_eq "$(python3 -c "import csv,sys; print(sorted({r['zip3'] for r in csv.DictReader(open(sys.argv[1]))}))" \
             "$WORK/k/data.csv")" "['000']" "ZIP3 with N = 1000"
# --force replaces an earlier export (and its other-format data file)
assert_exit 0 px export --cohort los --out "$WORK/k" --force --format jsonl
check "$WORK/k" "$WORK/src_los.tsv" "$WORK/ids.txt"
ok "$(checked "--dates year, thresholds, --force" "--dates year without full dates, thresholds, --force")"

# ---- SynPUF fixture ----------------------------------------------------------------
use_new_home "$WORK/home2"
px etl load --format synpuf --source "$SYNPUF/sample-1" --quiet >/dev/null
px features build >/dev/null
S1="$SYNPUF/sample-1"
{
    for f in "$S1"/*Beneficiary*.csv; do tail -n +2 "$f" | cut -d, -f1-2 | tr -d '"' | tr ',' '\n'; done
    tail -n +2 "$S1"/*Inpatient*.csv | cut -d, -f1,2,9,10,11 | tr -d '"' | tr ',' '\n'
    pseudonyms
} | grep -v '^$' | sort -u >"$WORK/ids_synpuf.txt"
for cohort in readmission mortality los; do
    source_tsv "$cohort" "$WORK/s_$cohort.tsv"
    out="$WORK/syn_$cohort"
    assert_exit 0 px export --cohort "$cohort" --out "$out" --date-shift-key "$WORK/date.key"
    cat "$WORK/out"
    (cd "$out" && sha256sum --quiet -c SHA256SUMS) || fail "$out: SHA256SUMS does not verify"
    check "$out" "$WORK/s_$cohort.tsv" "$WORK/ids_synpuf.txt" --key "$WORK/date.key"
done
ok "$(checked "SynPUF: three cohorts de-identified" "SynPUF: three cohorts exported, manifests verify")"
