#!/usr/bin/env bash
# etl_fhir.sh: `etl load --format fhir` on a Synthea Bulk Data export (SNOMED-coded,
# files of every type) with hostile lines added, and on the generator's FHIR output.
#  - every non-blank line is loaded, rejected with a reason at its file and line, or
#    counted skipped with a reason, per file (rows_read = loaded + rejected + skipped);
#  - the warehouse holds the expected patients and inpatient stays (counted here from
#    the NDJSON), no plaintext identifier of the export anywhere;
#  - a second load of the same files adds nothing (exit 3);
#  - --code-map turns SNOMED-coded Conditions of the stays into diagnoses;
#  - generated data loaded as FHIR gives the same feature tables as the same data
#    loaded as canonical CSV (every column but the pseudonyms).
. "$(dirname "$0")/lib.sh"
SRC=${PX_FHIR_DIR:-}
[ -n "$SRC" ] || { [ -d "$SHARED_DATA/fhir/synthea-10" ] && SRC="$SHARED_DATA/fhir/synthea-10"; } || true
[ -n "$SRC" ] || SRC="$FIXTURES/fhir/synthea-sample"
IN="$WORK/synthea"
mkdir -p "$IN"
cp "$SRC"/*.ndjson "$IN/"
# hostile lines, in a file of their own, read last (files go by name; names and ids are made up)
python3 - "$IN" <<'PY'
import json, sys
d = sys.argv[1]
pat = json.loads(open(f"{d}/Patient.000.ndjson").readline())
org = json.loads(open(f"{d}/Organization.000.ndjson").readline())["id"]
enc = {"resourceType": "Encounter", "id": "hostile-enc-1", "status": "finished",
       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
       "subject": {"reference": "Patient/no-such-patient"},
       "period": {"start": "2020-01-01", "end": "2020-01-03"}, "serviceProvider": {"reference": "Organization/" + org}}
future = {"resourceType": "Patient", "id": "hostile-pat-future", "gender": "female", "birthDate": "2999-01-01"}
lines = [
    '{"resourceType": "Patient", "id": ',                       # 1 fhir_json
    '[1, 2, 3]',                                                  # 2 fhir_structure
    json.dumps({"resourceType": "Patient", "gender": "male"}),  # 3 fhir_structure (no id)
    json.dumps(pat),                                              # 4 duplicate_key (same Patient again)
    json.dumps(enc),                                              # 5 unknown_patient
    json.dumps({"resourceType": "Observation", "id": "o1"}),     # 6 skipped
    json.dumps(future),                                           # 7 future_date
    '',                                                           # 8 blank: no resource
    json.dumps({"resourceType": "Encounter", "id": "hostile-enc-2", "class": {"code": "IMP"},
                "subject": {"reference": "Patient/" + pat["id"]}, "period": {"start": "2020-02-01"},
                "serviceProvider": {"reference": "Organization/" + org}}),  # 9 missing_field (no end)
]
open(f"{d}/zz-hostile.ndjson", "w").write("\n".join(lines) + "\n")
PY

assert_exit 0 px etl load --format fhir --source "$IN" --json --max-reject-rate 100
cp "$WORK/out" "$WORK/load1.json"
U=$(px db url)
# The Python checks of this test run none of our code: the normal pass's (checks_values,
# lib.sh); the ASan pass runs every load.
if checks_values; then
psql -X -q "$U" -c "\\copy (SELECT file_name, rows_read, rows_loaded, rows_rejected, rows_skipped, skipped FROM etl.batch_files) TO '$WORK/files.csv' CSV HEADER"
psql -X -q "$U" -c "\\copy (SELECT file_name, line, reason, field, row_data FROM etl.rejects) TO '$WORK/rejects.csv' CSV HEADER"
psql -X -q "$U" -c "\\copy (SELECT file_name, line, reason, detail FROM etl.warnings) TO '$WORK/warnings.csv' CSV HEADER"
counts=$(sql "SELECT (SELECT count(*) FROM wh.dim_patient) || ' ' || (SELECT count(*) FROM wh.fact_encounter) || ' ' ||
                     (SELECT count(*) FROM wh.dim_provider WHERE kind = 'clinician') || ' ' || (SELECT count(*) FROM wh.dim_provider WHERE kind = 'facility')")
python3 - "$IN" "$WORK" "$counts" <<'PY' || fail "FHIR load accounting"
import csv, json, os, sys
d, w, counts = sys.argv[1:4]
npat, nenc, nprac, norg = map(int, counts.split())
files = {r["file_name"]: r for r in csv.DictReader(open(f"{w}/files.csv"))}
rej = list(csv.DictReader(open(f"{w}/rejects.csv")))
load = json.load(open(f"{w}/load1.json"))
# every file, every non-blank line
nonblank, total = {}, 0
for f in sorted(os.listdir(d)):
    n = sum(1 for l in open(f"{d}/{f}") if l.strip())
    nonblank[f] = n
    total += n
    r = files[f]
    assert int(r["rows_read"]) == n, (f, r, n)
    assert int(r["rows_loaded"]) + int(r["rows_rejected"]) + int(r["rows_skipped"]) == n, r
    sk = json.loads(r["skipped"])
    assert sum(sk.values()) == int(r["rows_skipped"]), (f, sk)
    assert int(r["rows_rejected"]) == sum(1 for x in rej if x["file_name"] == f), f
assert set(files) == set(nonblank), (set(files), set(nonblank))
assert load["rows_read"] == total and load["rows_loaded"] + load["rows_rejected"] + load["rows_skipped"] == total, load
# the hostile lines: each at its line with its reason
h = {int(x["line"]): (x["reason"], x["field"]) for x in rej if x["file_name"] == "zz-hostile.ndjson"}
want = {1: ("fhir_json", ""), 2: ("fhir_structure", "resourceType"), 3: ("fhir_structure", "id"),
        4: ("duplicate_key", "id"), 5: ("unknown_patient", "patient_id"), 7: ("future_date", "birth_date"),
        9: ("missing_field", "discharge_date")}
assert h == want, h
assert json.loads(files["zz-hostile.ndjson"]["skipped"]) == {"Observation: a resource type the warehouse does not hold": 1}
# every reject names a line of its file holding a resource
for x in rej:
    assert 1 <= int(x["line"]) <= sum(1 for _ in open(f"{d}/{x['file_name']}")), x
# what the warehouse holds, counted from the NDJSON
def res(t):
    for f in sorted(os.listdir(d)):
        for l in open(f"{d}/{f}"):
            if not l.strip(): continue
            try: r = json.loads(l)
            except ValueError: continue
            if isinstance(r, dict) and r.get("resourceType") == t and r.get("id"): yield r
pats = {r["id"] for r in res("Patient")} - {"hostile-pat-future"}
stays = [r for r in res("Encounter") if r["class"].get("code") in ("IMP", "ACUTE") and r["id"].startswith("hostile") is False]
assert npat == len(pats), (npat, len(pats))
assert nenc == len(stays) and nenc > 0, (nenc, len(stays))
npis = {i["value"] for r in res("Practitioner") for i in r.get("identifier", []) if i.get("system") == "http://hl7.org/fhir/sid/us-npi"}
assert nprac == len(npis) and norg == len({r["id"] for r in res("Organization")}), (nprac, len(npis), norg)
# SNOMED-only Conditions and Procedures of the stays: warnings, one each, naming the system
stay_ids = {s["id"] for s in stays}
snomed = [r for t in ("Condition", "Procedure") for r in res(t)
          if r.get("encounter", {}).get("reference", "").split("/")[-1] in stay_ids]
warn = list(csv.DictReader(open(f"{w}/warnings.csv")))
assert len(warn) == len(snomed) and all("http://snomed.info/sct" in x["detail"] for x in warn), (len(warn), len(snomed))
print(f"{total} resources: {load['rows_loaded']} loaded, {load['rows_rejected']} rejected, {load['rows_skipped']} skipped")
PY
ok "Synthea export: every resource loaded, rejected at its line with a reason, or skipped by reason"
else
ok "Synthea export loaded (its accounting checked in the normal pass)"
fi

# no plaintext identifier of the export in the database (clinicians' names are kept
# by design, and Synthea gives patients and clinicians the same family names)
if checks_values; then
pg_dump "$U" --data-only --schema=wh --schema=etl --exclude-table=wh.dim_provider >"$WORK/dump.sql"
python3 - "$IN" "$WORK/dump.sql" <<'PY' || fail "a plaintext identifier is in the warehouse"
import json, sys
d, dump = sys.argv[1], open(sys.argv[2]).read()
import os
for f in os.listdir(d):
    for l in open(f"{d}/{f}"):
        try: r = json.loads(l)
        except ValueError: continue
        if not isinstance(r, dict) or r.get("resourceType") not in ("Patient", "Encounter"): continue
        vals = [r.get("id", "")] + [i.get("value", "") for i in r.get("identifier", [])]
        for n in r.get("name", []):
            vals += [n.get("family", "")] + n.get("given", [])
        vals += [t.get("value", "") for t in r.get("telecom", [])]
        for v in vals:
            if len(v) >= 6 and v in dump: sys.exit(f"'{v}' of {r['resourceType']} found in the dump")
PY
ok "no patient or encounter identifier, name or telecom of the export is stored in plaintext"
fi

before=$(sql "SELECT (SELECT count(*) FROM wh.fact_encounter) || ' ' || (SELECT count(*) FROM etl.rejects) || ' ' || (SELECT count(*) FROM wh.dim_patient)")
assert_exit 3 px etl load --format fhir --source "$IN"
assert_eq "$(sql "SELECT (SELECT count(*) FROM wh.fact_encounter) || ' ' || (SELECT count(*) FROM etl.rejects) || ' ' || (SELECT count(*) FROM wh.dim_patient)")" "$before" "a second load"
ok "a second load of the same files adds nothing (exit 3)"

# --code-map: the SNOMED codes of the stays' Conditions mapped to ICD-10-CM
python3 - "$IN" "$WORK/map.csv" "$WORK/expect_dx" <<'PY'
import csv, json, os, sys
d, out, exp = sys.argv[1:4]
def res(t):
    for f in sorted(os.listdir(d)):
        for l in open(f"{d}/{f}"):
            try: r = json.loads(l)
            except ValueError: continue
            if isinstance(r, dict) and r.get("resourceType") == t and r.get("id"): yield r
stays = {r["id"] for r in res("Encounter") if r["class"].get("code") in ("IMP", "ACUTE") and not r["id"].startswith("hostile")}
conds = [r for r in res("Condition") if r.get("encounter", {}).get("reference", "").split("/")[-1] in stays]
codes = sorted({(c["system"], c["code"]) for r in conds for c in r["code"]["coding"]})
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["system", "code", "target_system", "target_code"])
    for s, c in codes: w.writerow([s, c, "icd10", "I50.9"])
open(exp, "w").write(str(len(conds)))
PY
use_new_home "$WORK/home2"
assert_exit 0 px etl load --format fhir --source "$IN" --code-map "$WORK/map.csv" --max-reject-rate 100
assert_eq "$(sql "SELECT count(*) FROM wh.fact_diagnosis WHERE code = 'I509'")" "$(cat "$WORK/expect_dx")" "mapped diagnoses"
assert_eq "$(sql "SELECT count(*) FROM etl.warnings WHERE detail LIKE 'Condition%'")" "0" "unmapped Conditions left"
printf 'system,code,target_system,target_code\nhttp://snomed.info/sct,1,icd11,X\n' >"$WORK/bad.csv"
use_new_home "$WORK/home3"
assert_exit 1 px etl load --format fhir --source "$IN" --code-map "$WORK/bad.csv"
grep -q "target_system must be icd10 or icd9" "$WORK/err" || fail "bad code map: $(cat "$WORK/err")"
assert_exit 2 px etl load --format canonical --source "$IN" --code-map "$WORK/map.csv"
ok "--code-map maps SNOMED-coded Conditions of the stays; a bad map is refused by line"

# generated data: FHIR load = canonical load, feature table by feature table
CSV="$WORK/gen-csv" FHIR="$WORK/gen-fhir"
px generate --patients 400 --seed 31 --out "$CSV" >/dev/null
px generate --patients 400 --seed 31 --out "$FHIR" --format fhir >/dev/null
for kind in csv fhir; do
    use_new_home "$WORK/home-$kind"
    if [ $kind = csv ]; then px etl load --format canonical --source "$CSV" --json >"$WORK/gen-$kind.json"
    else px etl load --format fhir --source "$FHIR" --json >"$WORK/gen-$kind.json"; fi
    px features build >/dev/null
    U=$(px db url)
    if checks_values; then
        for t in readmission mortality los; do
            psql -X -q "$U" -c "\\copy (SELECT * FROM features.$t) TO '$WORK/$kind.$t.csv' CSV HEADER"
        done
    fi
    psql -X -q "$U" -c "\\copy (SELECT reason, field, count(*) FROM etl.rejects GROUP BY 1, 2 ORDER BY 1, 2) TO '$WORK/$kind.rej.csv' CSV"
done
cmp -s "$WORK/csv.rej.csv" "$WORK/fhir.rej.csv" || fail "rejects differ: $(cat "$WORK/csv.rej.csv") vs $(cat "$WORK/fhir.rej.csv")"
if checks_values; then
python3 - "$WORK" <<'PY' || fail "the FHIR load gives other feature tables than the canonical load"
import csv, json, sys
w = sys.argv[1]
a, b = json.load(open(f"{w}/gen-csv.json")), json.load(open(f"{w}/gen-fhir.json"))
# one resource per canonical row: the same counts, nothing skipped
assert b["rows_skipped"] == 0 and all(a[k] == b[k] for k in ("rows_read", "rows_loaded", "rows_rejected")), (a, b)
for t in ("readmission", "mortality", "los"):
    rows = {}
    for k in ("csv", "fhir"):
        with open(f"{w}/{k}.{t}.csv", newline="") as f:
            rows[k] = sorted(tuple(v for c, v in r.items() if c not in ("encounter_id", "patient_id")) for r in csv.DictReader(f))
    assert len(rows["csv"]) > 300, (t, len(rows["csv"]))
    assert rows["csv"] == rows["fhir"], (t, len(rows["csv"]), len(rows["fhir"]),
                                         next(((x, y) for x, y in zip(rows["csv"], rows["fhir"]) if x != y), None))
print("feature tables equal")
PY
ok "generated data: the FHIR load gives the canonical load's feature tables, row for row"
else
ok "generated data: the FHIR and canonical loads reject the same (their feature tables compared in the normal pass)"
fi
