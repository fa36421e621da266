#!/usr/bin/env bash
# features_fhir.sh: one feature definition, two executions. The same generated
# data is loaded as canonical CSV (feature tables built in SQL) and written as
# FHIR R4 NDJSON (`generate --format fhir`); for every stay a CDS Hooks prefetch
# is assembled from the NDJSON (the patient, the stay's Encounter and ALL the
# patient's Encounters, Conditions and Procedures, later stays included, as
# arrays or searchset Bundles in turn) and `prognos features fhir` computes its
# instance. Every feature of every row of features.readmission, .mortality and
# .los must equal it: 0 differences, the same feature names as the catalog's.
# Then the rules a prefetch can break: a missing period.end at discharge, a
# stay without its patient, an unknown set; and --as-of filling an open stay.
. "$(dirname "$0")/lib.sh"
CSV="$WORK/csv" FHIR="$WORK/fhir"
px generate --patients 700 --seed 23 --out "$CSV" >/dev/null
px generate --patients 700 --seed 23 --out "$FHIR" --format fhir >/dev/null
cmp -s "$CSV/truth.json" "$FHIR/truth.json" || fail "the FHIR generation drew other data (truth.json differs)"
for t in Organization Practitioner Patient Encounter Condition Procedure; do
    [ -s "$FHIR/$t.ndjson" ] || fail "generate --format fhir wrote no $t.ndjson"
done
ok "generate --format fhir writes the six resource files of the same data"

px etl load --format canonical --source "$CSV" --quiet >/dev/null
px features build >/dev/null
U=$(px db url)

# the prefetches: grouping only, no feature logic
python3 - "$FHIR" "$WORK/prefetch.ndjson" "$WORK/order.txt" <<'PY'
import json, sys
from collections import defaultdict
d, out, order = sys.argv[1:4]
def load(t):
    return [json.loads(l) for l in open(f"{d}/{t}.ndjson")]
pat = {p["id"]: p for p in load("Patient")}
by = defaultdict(lambda: defaultdict(list))
for t in ("Encounter", "Condition", "Procedure"):
    for r in load(t):
        by[r["subject"]["reference"].split("/")[1]][t].append(r)
def bundle(rs):
    return {"resourceType": "Bundle", "type": "searchset", "total": len(rs),
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in rs]}
with open(out, "w") as f, open(order, "w") as o:
    k = 0
    for pid, g in by.items():
        for e in g["Encounter"]:
            wrap = bundle if k % 2 else (lambda rs: rs)
            pf = {"patient": pat[pid], "encounter": e, "encounters": wrap(g["Encounter"]),
                  "conditions": wrap(g["Condition"]), "procedures": wrap(g["Procedure"])}
            f.write(json.dumps(pf) + "\n")
            o.write(e["id"] + "\n")
            k += 1
PY
# The ASan pass compares nothing (below) and runs the FHIR path for its memory checks: on
# every third prefetch, spread over all the patients and both wrappings (arrays and
# Bundles alternate), the same code paths at a third of the cost (2,764 prefetches, 125 MB,
# took 3.3 CPU-s per set under ASan, 0.8 s in the normal build)
PF=$WORK/prefetch.ndjson
if ! checks_values; then awk 'NR % 3 == 1' "$WORK/prefetch.ndjson" >"$WORK/prefetch.asan.ndjson"; PF=$WORK/prefetch.asan.ndjson; fi
for t in readmission mortality los; do
    px features fhir --set $t --prefetch "$PF" --ndjson >"$WORK/$t.fhir.ndjson" \
        || fail "features fhir --set $t failed: $(grep -m3 error "$WORK/$t.fhir.ndjson")"
done
assert_eq "$(cat "$WORK"/{readmission,mortality,los}.fhir.ndjson | wc -l)" "$((3 * $(wc -l <"$PF")))" \
    "an instance for each prefetch of each set"

# The comparisons (Python) run none of our code: the normal pass's (checks_values, lib.sh);
# the ASan pass has run both paths.
if checks_values; then
for t in readmission mortality los; do
    psql -X -q "$U" -c "\\copy features.$t TO '$WORK/$t.csv' CSV HEADER" || fail "export $t"
    psql -X -q -At "$U" -c "SELECT columns FROM features.catalog WHERE set_name = '$t' ORDER BY build_id DESC LIMIT 1" \
        >"$WORK/$t.cols.json"
done
python3 - "$WORK" "$PROGNOS_HOME/secret.key" <<'PY' || fail "the FHIR features differ from the SQL feature tables"
import csv, hashlib, hmac, json, sys
work, keyfile = sys.argv[1:3]
key = bytes.fromhex(open(keyfile).read().strip())
def pseudo(domain, v):
    h = hmac.new(key, f"{domain}:{v.strip()}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
order = [l.strip() for l in open(f"{work}/order.txt")]
total_rows = total_vals = 0
for s in ("readmission", "mortality", "los"):
    feats = [c["name"] for c in json.loads(open(f"{work}/{s}.cols.json").read()) if c["role"] == "feature"]
    fhir = {}
    for eid, line in zip(order, open(f"{work}/{s}.fhir.ndjson")):
        fhir[pseudo("encounter", eid)] = json.loads(line)
    assert len(fhir) == len(order), (s, len(fhir), len(order))
    diffs, rows = [], 0
    with open(f"{work}/{s}.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows += 1
            inst = fhir[r["encounter_id"]]
            if sorted(inst) != sorted(feats):
                diffs.append((r["encounter_id"], "names", sorted(set(inst) ^ set(feats))))
                continue
            for c in feats:
                a, b = r[c], inst[c]
                if b is None: same = a == ""
                elif isinstance(b, str): same = a == b
                else: same = a != "" and float(a) == float(b)
                total_vals += 1
                if not same: diffs.append((r["encounter_id"], c, a, b))
    total_rows += rows
    assert rows > 500, (s, rows)
    if diffs:
        print(f"{s}: {len(diffs)} differences in {rows} rows, e.g. {diffs[:8]}", file=sys.stderr)
        sys.exit(1)
    # the comparison can fail: the flags and counts vary in the data
    for c in ("cci_chf", "elix_htn_cx", "prior_adm_12m", "n_diagnoses", "n_procedures", "charlson_index"):
        vals = {json.dumps(fhir[k][c]) for k in fhir}
        assert len(vals) > 1, (s, c, vals)
print(f"{total_rows} rows, {total_vals} values: 0 differences")
PY
ok "every feature of every stay: FHIR path = SQL feature tables (0 differences)"
else
ok "the FHIR path gave an instance for every third stay (all of them, compared with the SQL feature tables, in the normal pass)"
fi

# the map itself: every prefix of features.comorbidity_map, as the code of a stay's
# only Condition, flags exactly the categories whose prefixes it starts with (as the
# database holds them; the FHIR path reads the migration's text, not the table)
psql -X -q "$U" -c "\\copy (SELECT code_system, code_prefix, category FROM features.comorbidity_map) TO '$WORK/map.csv' CSV"
python3 - "$WORK/map.csv" "$WORK/prefetch.ndjson" "$WORK/mapcheck.ndjson" "$WORK/mapwant.json" <<'PY'
import csv, json, sys
from collections import defaultdict
mp, pf_path, out, want = sys.argv[1:5]
rows = list(csv.reader(open(mp)))
cats = defaultdict(set)
for s, p, c in rows: cats[(s, p)].add(c)
base = json.loads(open(pf_path).readline())
uri = {"icd10": "http://hl7.org/fhir/sid/icd-10-cm", "icd9": "http://hl7.org/fhir/sid/icd-9-cm"}
exp = []
with open(out, "w") as f:
    for (s, p) in sorted(cats):
        e = set()
        for k in range(3, 8):
            e |= cats.get((s, p[:k]), set())
        pf = {"patient": base["patient"], "encounter": base["encounter"], "encounters": [base["encounter"]],
              "conditions": [{"resourceType": "Condition", "id": "c", "code": {"coding": [{"system": uri[s], "code": p}]},
                              "encounter": {"reference": "Encounter/" + base["encounter"]["id"]}}]}
        f.write(json.dumps(pf) + "\n")
        exp.append(sorted(e))
json.dump({"n": len(rows), "want": exp}, open(want, "w"))
PY
px features fhir --set readmission --prefetch "$WORK/mapcheck.ndjson" --ndjson >"$WORK/mapcheck.out" || fail "map check run"
if checks_values; then
python3 - "$WORK/mapcheck.out" "$WORK/mapwant.json" <<'PY' || fail "the FHIR path's comorbidity map differs from features.comorbidity_map"
import json, sys
want = json.load(open(sys.argv[2]))
got = [sorted(k for k, v in json.loads(l).items() if (k.startswith("cci_") or k.startswith("elix_")) and k != "elix_count" and v == 1)
       for l in open(sys.argv[1])]
assert want["n"] > 1000 and len(got) == len(want["want"]), (want["n"], len(got))
bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want["want"])) if g != w]
assert not bad, (len(bad), bad[:5])
print(f"{want['n']} map rows, {len(got)} prefixes: the same categories")
PY
ok "every prefix of features.comorbidity_map flags the same categories on the FHIR path"
else
ok "every prefix of features.comorbidity_map run through the FHIR path (its categories compared in the normal pass)"
fi

# rules of the prefetch
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
pf = json.loads(open(f"{w}/prefetch.ndjson").readline())
open_ = json.loads(json.dumps(pf)); del open_["encounter"]["period"]["end"]
json.dump(open_, open(f"{w}/open.json", "w"))
nopat = json.loads(json.dumps(pf)); del nopat["patient"]
json.dump(nopat, open(f"{w}/nopat.json", "w"))
json.dump(pf, open(f"{w}/one.json", "w"))
PY
assert_exit 1 px features fhir --set readmission --prefetch "$WORK/open.json"
grep -q "no period.end" "$WORK/err" || fail "an open stay at discharge: $(cat "$WORK/err")"
assert_exit 1 px features fhir --set mortality --prefetch "$WORK/nopat.json"
grep -q "one Patient" "$WORK/err" || fail "no patient: $(cat "$WORK/err")"
assert_exit 2 px features fhir --set nope --prefetch "$WORK/one.json"
assert_exit 0 px features fhir --set mortality --prefetch "$WORK/open.json"
END=$(python3 -c "import json,sys; print(json.load(open('$WORK/one.json'))['encounter']['period']['end'])")
assert_exit 0 px features fhir --set readmission --prefetch "$WORK/open.json" --as-of "$END"
cp "$WORK/out" "$WORK/asof.json"
assert_exit 0 px features fhir --set readmission --prefetch "$WORK/one.json"
cmp -s "$WORK/out" "$WORK/asof.json" || fail "--as-of the discharge date differs from period.end"
ok "prefetch errors are named; --as-of fills an open stay's discharge"
