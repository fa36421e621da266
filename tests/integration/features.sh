#!/usr/bin/env bash
# features.sh: the feature tables on generated data equal an independent
# recomputation, in Python, from the canonical CSV files and the stated
# definitions: cohorts, labels and every feature of every row (prior windows,
# comorbidities from the Quan 2005 map with POA and discharge rules, Charlson
# weights and hierarchy, Elixhauser count, LACE). The generator's seven
# comorbidities equal truth.json's definitions; the catalog records each build;
# a rebuild from the same batches does nothing, one after a new batch gives the
# same tables.
. "$(dirname "$0")/lib.sh"
DATA="$WORK/data"
px generate --patients 3000 --seed 9 --out "$DATA" >/dev/null
px etl load --format canonical --source "$DATA" --quiet >/dev/null

assert_exit 0 px features build --json
cp "$WORK/out" "$WORK/build1.json"
python3 - "$WORK/build1.json" <<'PY' || fail "first build: $(cat "$WORK/build1.json")"
import json, sys
b = json.load(open(sys.argv[1]))
assert [x["set"] for x in b] == ["readmission", "mortality", "los"], b
assert all(not x["unchanged"] and x["rows"] > 1000 and len(x["definition_hash"]) == 64 for x in b), b
assert len({x["definition_hash"] for x in b}) == 3, b
PY
ok "features build --set all builds three tables"

U=$(px db url)
# The recomputation runs none of our code: the normal pass's (checks_values, lib.sh); the
# ASan pass has run the build above.
if checks_values; then
for t in readmission mortality los; do
    psql -X -q "$U" -c "\\copy features.$t TO '$WORK/$t.csv' CSV HEADER" || fail "export $t"
done
psql -X -q "$U" -c "\\copy (SELECT code_system, category, code_prefix FROM features.comorbidity_map) TO '$WORK/map.csv' CSV HEADER"
psql -X -q "$U" -c "\\copy (SELECT set_name, table_name, row_count, positives, source_batches, columns, definition_hash FROM features.catalog ORDER BY build_id) TO '$WORK/catalog.csv' CSV HEADER"

python3 - "$DATA" "$WORK" "$PROGNOS_HOME/secret.key" <<'PY' || fail "the feature tables differ from the recomputation"
import csv, datetime, hashlib, hmac, json, sys
from collections import defaultdict

data, work, keyfile = sys.argv[1:4]
key = bytes.fromhex(open(keyfile).read().strip())
def pseudo(domain, v):
    h = hmac.new(key, f"{domain}:{v.strip()}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
D = datetime.date.fromisoformat

pat = {p["patient_id"]: p for p in rows(f"{data}/patients.csv")}
enc = rows(f"{data}/encounters.csv")
dx = defaultdict(list)
for r in rows(f"{data}/diagnoses.csv"):
    dx[r["encounter_id"]].append((int(r["seq"]), r["code_system"], r["code"].replace(".", "").upper(), r["present_on_admission"]))
pxs = defaultdict(list)
for r in rows(f"{data}/procedures.csv"):
    pxs[r["encounter_id"]].append(r["procedure_date"])

# the map as stored (its content is checked code by code in features_comorbidity.sh);
# matching, windows, weights and hierarchy are reimplemented here
prefixes = defaultdict(list)
for r in rows(f"{work}/map.csv"):
    prefixes[r["code_system"]].append((r["code_prefix"], r["category"]))
memo = {}
def cats(system, code):
    k = (system, code)
    if k not in memo:
        memo[k] = {c for p, c in prefixes[system] if code.startswith(p)}
    return memo[k]
CHARLSON = {"cci_mi": 1, "cci_chf": 1, "cci_pvd": 1, "cci_cvd": 1, "cci_dementia": 1, "cci_cpd": 1, "cci_rheum": 1,
            "cci_pud": 1, "cci_mild_liver": 1, "cci_diab": 1, "cci_diab_cc": 2, "cci_hemi": 2, "cci_renal": 2,
            "cci_cancer": 2, "cci_mod_liver": 3, "cci_mets": 6, "cci_aids": 6}
ELIX = ["elix_chf", "elix_arrhythmia", "elix_valve", "elix_pulm_circ", "elix_pvd", "elix_htn_uncx", "elix_htn_cx",
        "elix_paralysis", "elix_neuro_other", "elix_cpd", "elix_diab_uncx", "elix_diab_cx", "elix_hypothyroid",
        "elix_renal", "elix_liver", "elix_pud", "elix_aids", "elix_lymphoma", "elix_mets", "elix_solid_tumor",
        "elix_rheum", "elix_coag", "elix_obesity", "elix_weight_loss", "elix_fluid_lytes", "elix_blood_loss_anemia",
        "elix_deficiency_anemia", "elix_alcohol", "elix_drugs", "elix_psychoses", "elix_depression"]
def charlson(c):
    s = sum(w for k, w in CHARLSON.items() if k in c)
    if "cci_mod_liver" in c and "cci_mild_liver" in c: s -= 1
    if "cci_diab_cc" in c and "cci_diab" in c: s -= 1
    if "cci_mets" in c and "cci_cancer" in c: s -= 2
    return s
def elix_count(c):
    s = sum(1 for k in ELIX if k in c)
    for lo, hi in (("elix_htn_uncx", "elix_htn_cx"), ("elix_diab_uncx", "elix_diab_cx"), ("elix_solid_tumor", "elix_mets")):
        if lo in c and hi in c: s -= 1
    return s

stays = []
for e in enc:
    p = pat[e["patient_id"]]
    a, d = D(e["admission_date"]), D(e["discharge_date"])
    codes = dx[e["encounter_id"]]
    c_all, c_poa = set(), set()
    for seq, sy, code, poa in codes:
        c_all |= cats(sy, code)
        if poa != "N": c_poa |= cats(sy, code)
    stays.append(dict(e=e, p=p, pid=e["patient_id"], a=a, d=d, c_all=c_all, c_poa=c_poa,
                      death=D(p["death_date"]) if p["death_date"] else None,
                      n_dx=sum(1 for s in codes if s[0] >= 1), n_dx_poa=sum(1 for s in codes if s[0] >= 1 and s[3] != "N"),
                      n_px=len(pxs[e["encounter_id"]]), n_px0=sum(1 for x in pxs[e["encounter_id"]] if x == e["admission_date"])))
by_pat = defaultdict(list)
for s in stays: by_pat[s["pid"]].append(s)
data_end = max(s["a"] for s in stays)

def features(s, at_discharge):
    prior = [q for q in by_pat[s["pid"]] if 1 <= (s["a"] - q["a"]).days <= 365]
    t = s["d"] if at_discharge else s["a"]
    c = set(s["c_all"] if at_discharge else s["c_poa"])
    for q in prior:
        if q["d"] <= t: c |= q["c_all"]
    e = s["e"]
    six = [q for q in prior if (s["a"] - q["a"]).days <= 182]
    f = {"age_years": s["a"].year - int(s["p"]["birth_date"][:4]), "female": int(s["p"]["sex"] == "F"),
         "sex": s["p"]["sex"], "facility_id": e["facility_id"], "department": e["department"],
         "admission_type": e["admission_type"], "admission_source": e["admission_source"],
         "emergency": int(e["admission_type"] == "emergency"),
         "prior_adm_6m": min(5, len(six)), "prior_adm_12m": min(5, len(prior)),
         "ed_visits_6m": min(4, sum(1 for q in six if q["e"]["admission_source"] == "ed")),
         "n_diagnoses": s["n_dx"] if at_discharge else s["n_dx_poa"],
         "n_procedures": s["n_px"] if at_discharge else s["n_px0"],
         "charlson_index": charlson(c), "elix_count": elix_count(c),
         "admission_date": str(s["a"]), "discharge_date": str(s["d"]), "patient_id": pseudo("patient", s["pid"])}
    for k in list(CHARLSON) + ELIX: f[k] = int(k in c)
    for k in ("alzheimer", "chf", "chronic_kidney", "cancer", "copd", "depression", "diabetes", "ischemic_heart",
              "osteoporosis", "ra_oa", "stroke_tia", "esrd"):
        f["cc_" + k] = None   # canonical data has no SynPUF chronic-condition flags
    return f

def lace(los, emergency, ci, ed):
    L = 0 if los < 1 else los if los <= 3 else 4 if los <= 6 else 5 if los <= 13 else 7
    return L + 3 * emergency + (5 if ci >= 4 else ci) + ed

want = {"readmission": {}, "mortality": {}, "los": {}}
for s in stays:
    s["key"] = pseudo("encounter", s["e"]["encounter_id"])   # (once per stay: used again below)
    e, key_ = s["e"], s["key"]
    los = (s["d"] - s["a"]).days
    disp = e["discharge_disposition"]
    if disp not in ("expired", "transfer_acute", "ama") and (data_end - s["d"]).days >= 30:
        f = features(s, True)
        nxt = [(q["a"] - s["d"]).days for q in by_pat[s["pid"]] if 1 <= (q["a"] - s["d"]).days <= 30]
        f.update(los_days=los, discharge_disposition=disp, lace_score=lace(los, f["emergency"], f["charlson_index"], f["ed_visits_6m"]),
                 readmit_30d=int(bool(nxt)), days_to_readmission=min(nxt) if nxt else None,
                 died_30d_after_discharge=int(s["death"] is not None and 0 <= (s["death"] - s["d"]).days <= 30))
        want["readmission"][key_] = f
    dead30 = int(s["death"] is not None and 0 <= (s["death"] - s["a"]).days <= 30)
    if (data_end - s["a"]).days >= 30:
        f = features(s, False)
        f.update(death_30d=dead30, died_in_hospital=int(disp == "expired" or (s["death"] is not None and s["a"] <= s["death"] <= s["d"])))
        want["mortality"][key_] = f
    if disp != "expired":
        f = features(s, False)
        f.update(los_days=los, died_30d=dead30)
        want["los"][key_] = f

bad = []
# each exported table read once (the checks below all use it)
table = {t: rows(f"{work}/{t}.csv") for t in want}
def same(got, exp):
    if exp is None: return got == ""
    return got == str(exp)
for t, w in want.items():
    got = {r["encounter_id"]: r for r in table[t]}
    if set(got) != set(w):
        bad.append(f"{t}: cohort differs: {len(got)} rows, expected {len(w)} ({len(set(got) - set(w))} extra, {len(set(w) - set(got))} missing)")
        continue
    cols = list(next(iter(got.values())).keys())
    checked = set(cols) - {"encounter_id"}
    missing = checked - set(next(iter(w.values())))
    if missing: bad.append(f"{t}: columns not recomputed: {sorted(missing)}")
    diffs = defaultdict(int)
    for k, exp in w.items():
        for col in checked & set(exp):
            if not same(got[k][col], exp[col]):
                if diffs[col] < 3: print(f"{t}.{col}: got '{got[k][col]}', expected '{exp[col]}' ({got[k]['admission_date']})")
                diffs[col] += 1
    for col, n in diffs.items(): bad.append(f"{t}.{col}: {n} rows differ")
    label = {"readmission": "readmit_30d", "mortality": "death_30d", "los": "los_days"}[t]
    print(f"{t}: {len(w)} rows, label sum {sum(f[label] for f in w.values())}, {len(checked)} columns checked")

# the generator's seven comorbidities: the truth's prefix definitions on this stay's codes
truth = json.load(open(f"{data}/truth.json"))
cols = {"chf": ["cci_chf", "elix_chf"], "copd": ["cci_cpd", "elix_cpd"], "diabetes": ["cci_diab", "elix_diab_uncx"],
        "renal": ["cci_renal", "elix_renal"], "cancer": ["cci_cancer", "elix_solid_tumor"], "dementia": ["cci_dementia"],
        "liver": ["cci_mild_liver", "elix_liver"]}
# (whether a stay has each comorbidity does not depend on the table: computed once per stay)
has_cm = {s["key"]: [int(any(code.startswith(tuple(cm["code_prefixes"])) for _, _, code, _ in dx[s["e"]["encounter_id"]]))
                     for cm in truth["comorbidities"]] for s in stays}
for t in want:
    got = {r["encounter_id"]: r for r in table[t]}
    for s in stays:
        k = s["key"]
        if k not in got: continue
        for cm, has in zip(truth["comorbidities"], has_cm[k]):
            for col in cols[cm["name"]]:
                if int(got[k][col]) != has:
                    bad.append(f"{t}.{col} = {got[k][col]} but the truth's {cm['name']} = {has}"); break
    print(f"{t}: the seven comorbidities agree with truth.json")

# the catalog
cat = rows(f"{work}/catalog.csv")
if [c["set_name"] for c in cat] != ["readmission", "mortality", "los"]: bad.append(f"catalog sets: {[c['set_name'] for c in cat]}")
for c in cat:
    t = c["set_name"]
    if c["table_name"] != f"features.{t}" or int(c["row_count"]) != len(want[t]) or c["source_batches"] != "{1}":
        bad.append(f"catalog row {c}")
    cl = json.loads(c["columns"])
    names = [x["name"] for x in cl]
    header = list(table[t][0].keys())
    if names != header: bad.append(f"catalog columns of {t} differ from the table's")
    roles = {x["name"]: x["role"] for x in cl}
    label = {"readmission": "readmit_30d", "mortality": "death_30d", "los": "los_days"}[t]
    tcol = "discharge_date" if t == "readmission" else "admission_date"
    if [n for n, r in roles.items() if r == "label"] != [label] or [n for n, r in roles.items() if r == "time"] != [tcol] \
       or roles["encounter_id"] != "key" or roles["patient_id"] != "group" or roles["facility_id"] != "info":
        bad.append(f"catalog roles of {t}: {roles}")
    if t == "readmission" and int(c["positives"]) != sum(f["readmit_30d"] for f in want[t].values()): bad.append("positives")
    if not all(x["doc"] and x["kind"] in ("numeric", "categorical") for x in cl): bad.append(f"catalog docs/kinds of {t}")
for b in bad: print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
ok "cohorts, labels and every feature equal the recomputation; seven comorbidities equal the truth; catalog"
else
ok "features built (the tables recomputed in Python in the normal pass)"
fi

# the same batches, the same definition: nothing to do
sum_tables() { sql "SELECT string_agg(t || ':' || h, ' ') FROM (
    SELECT 'readmission' t, md5(string_agg(r::text, '|' ORDER BY encounter_id)) h FROM features.readmission r UNION ALL
    SELECT 'mortality', md5(string_agg(m::text, '|' ORDER BY encounter_id)) FROM features.mortality m UNION ALL
    SELECT 'los', md5(string_agg(l::text, '|' ORDER BY encounter_id)) FROM features.los l) x"; }
before=$(sum_tables)
assert_exit 0 px features build --json
python3 - "$WORK/build1.json" "$WORK/out" <<'PY' || fail "second build was not a no-op: $(cat "$WORK/out")"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert all(y["unchanged"] and y["build_id"] == x["build_id"] and y["rows"] == x["rows"]
           and y["definition_hash"] == x["definition_hash"] for x, y in zip(a, b)), b
PY
assert_eq "$(sql 'SELECT count(*) FROM features.catalog')" 3 "catalog rows after a no-op build"
assert_eq "$(sum_tables)" "$before" "tables after a no-op build"
ok "a rebuild from the same batches changes nothing"

# a new batch (the same files forced again: all duplicates) makes a real rebuild, with the same result
px etl load --format canonical --source "$DATA" --force --quiet >/dev/null || true
assert_exit 0 px features build --set mortality --json
grep -q '"unchanged":false' "$WORK/out" || fail "a new batch did not rebuild: $(cat "$WORK/out")"
assert_eq "$(sql "SELECT source_batches::text FROM features.catalog WHERE set_name = 'mortality' ORDER BY build_id DESC LIMIT 1")" "{1,2}" "batches of the rebuild"
assert_eq "$(sql "SELECT count(DISTINCT definition_hash) FROM features.catalog WHERE set_name = 'mortality'")" 1 "definition hash of the rebuild"
assert_eq "$(sum_tables)" "$before" "tables rebuilt from the same data"
assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'features.build'")" 4 "audit events of the builds"
ok "a new batch rebuilds; the result is identical"

# two builds at once: they queue; the second finds the first's result and does nothing
sql "DROP TABLE features.los"
px features build --set los --json >"$WORK/c1.json" &
p1=$!
px features build --set los --json >"$WORK/c2.json" &
p2=$!
wait $p1 || fail "concurrent build 1 failed"
wait $p2 || fail "concurrent build 2 failed"
assert_eq "$(cat "$WORK/c1.json" "$WORK/c2.json" | grep -o '"unchanged":[a-z]*' | sort | tr '\n' ' ')" \
          '"unchanged":false "unchanged":true ' "two concurrent builds: one builds, one finds it done"
assert_eq "$(sum_tables)" "$before" "tables after the concurrent builds"
ok "concurrent builds queue; the second is a no-op"

# usage and listing
assert_exit 2 px features build --set nosuch
grep -q "unknown feature set 'nosuch'" "$WORK/err" || fail "usage message: $(cat "$WORK/err")"
assert_exit 2 px features frobnicate
assert_exit 0 px features --help
grep -q "features build" "$WORK/out" || fail "--help"
assert_exit 0 px features list --json
python3 -c "
import json, sys
l = json.load(open('$WORK/out'))
assert [x['set'] for x in l] == ['los', 'mortality', 'readmission'], l
assert [x['source_batches'] for x in l] == [[1, 2], [1, 2], [1]], l
assert all(x['table_exists'] and x['rows'] > 0 for x in l), l
" || fail "features list --json: $(cat "$WORK/out")"
assert_exit 0 px features list
grep -q "features.mortality" "$WORK/out" || fail "features list: $(cat "$WORK/out")"
ok "usage errors exit 2; list shows the latest builds"
