#!/usr/bin/env bash
# features_pit.sh: point-in-time correctness on a hand-made fixture
# (tests/fixtures/canonical-pit). The prior windows' boundaries (365 in, 366 out;
# 182 in the 6-month window, 183 out), POA 'N' excluded at admission but not at
# discharge, a prior stay's codes only once it was discharged, the Charlson and
# Elixhauser hierarchies, and: adding later stays and diagnoses (batch2) changes
# labels but no feature of any stay.
. "$(dirname "$0")/lib.sh"
FIX="$FIXTURES/canonical-pit"
px etl load --format canonical --source "$FIX/batch1" --quiet >/dev/null
px features build >/dev/null
export_tables() { # dir
    mkdir -p "$1"
    for t in readmission mortality los; do
        psql -X -q "$(px db url)" -c "\\copy features.$t TO '$1/$t.csv' CSV HEADER" || fail "export $t"
    done
    psql -X -q "$(px db url)" -c "\\copy (SELECT DISTINCT ON (set_name) set_name, columns FROM features.catalog ORDER BY set_name, build_id DESC) TO '$1/catalog.csv' CSV HEADER"
}
export_tables "$WORK/b1"
px etl load --format canonical --source "$FIX/batch2" --quiet >/dev/null
px features build >/dev/null
export_tables "$WORK/b2"

python3 - "$WORK" "$PROGNOS_HOME/secret.key" <<'PY' || fail "point-in-time checks"
import csv, hashlib, hmac, json, sys
work, keyfile = sys.argv[1:3]
key = bytes.fromhex(open(keyfile).read().strip())
def pseudo(v):
    h = hmac.new(key, f"encounter:{v}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
def table(b, t):
    with open(f"{work}/{b}/{t}.csv", newline="") as f:
        return {r["encounter_id"]: r for r in csv.DictReader(f)}
bad = []
def expect(b, t, enc, **want):
    row = table(b, t).get(pseudo(enc))
    if row is None:
        bad.append(f"{b} {t}: stay {enc} missing"); return
    for col, v in want.items():
        if row[col] != str(v): bad.append(f"{b} {t} {enc}.{col} = '{row[col]}', expected '{v}'")

for b in ("b1", "b2"):
    # E5 at discharge (readmission). Prior stays admitted 1-365 days before: E1 (365 days), E2 (183),
    # E3 (182), E4 (11); not E0 (366). 6 months (1-182 days): E3, E4; through the ED: E3.
    # Codes: its own N39.0, E11.9 (diabetes), C34.90 (cancer, POA N: known at discharge); E1 I50.9 (chf),
    # E2 I10 (hypertension), E3 K70.30 (mild liver, alcohol), E4 I63.9 (cvd: E4 ended 07-03, before E5's
    # discharge); not E0's J44.9 (copd). Charlson 1+1+2+1+1 = 6; Elixhauser chf, htn_uncx, liver,
    # alcohol, diab_uncx, solid_tumor = 6; LACE = 4 (LOS 4) + 3 + 5 (Charlson >= 4) + 1 = 13.
    expect(b, "readmission", "E5", prior_adm_12m=4, prior_adm_6m=2, ed_visits_6m=1, cci_chf=1, cci_cpd=0, cci_diab=1,
           cci_cancer=1, cci_mild_liver=1, cci_cvd=1, cci_dementia=0, cci_mi=0, elix_htn_uncx=1, elix_alcohol=1,
           charlson_index=6, elix_count=6, n_diagnoses=3, n_procedures=2, los_days=4, lace_score=13, age_years=71,
           female=1, emergency=1, discharge_disposition="home_health")
    # E5 at admission (mortality, los): C34.90 (POA N) is not known yet; E3's K70.30 was POA N on E3 but E3
    # ended before, so it counts; E4 was still in hospital (discharged 07-03): its I63.9 is not known.
    # Charlson chf + diab + mild liver = 3; Elixhauser chf, htn_uncx, liver, alcohol, diab_uncx = 5;
    # diagnoses present on admission 2; procedures on the admission day 1.
    for t in ("mortality", "los"):
        expect(b, t, "E5", prior_adm_12m=4, prior_adm_6m=2, ed_visits_6m=1, cci_chf=1, cci_diab=1, cci_cancer=0,
               cci_mild_liver=1, cci_cvd=0, cci_cpd=0, elix_solid_tumor=0, charlson_index=3, elix_count=5,
               n_diagnoses=2, n_procedures=1)
    # boundaries seen from the other stays: E1 is 1 day after E0 (E0's J44.9 counts for E1); E2 is 182
    # days after E1 (both windows, and E1 came through the ED) and 183 after E0 (12 months only); E3 is
    # 183 days after E1 and 184 after E0 (12 months only), 1 day after E2 (ED)
    expect(b, "mortality", "E1", prior_adm_12m=1, prior_adm_6m=1, cci_cpd=1, ed_visits_6m=0)
    expect(b, "mortality", "E2", prior_adm_12m=2, prior_adm_6m=1, ed_visits_6m=1, cci_chf=1, cci_cpd=1)
    expect(b, "mortality", "E3", prior_adm_12m=3, prior_adm_6m=1, ed_visits_6m=1, cci_chf=1, cci_cpd=1, elix_htn_uncx=1)
    # the hierarchy (E7): raw flags all 1; Charlson counts diabetes with cc (2), metastatic (6), moderate/
    # severe liver (3) and chf from I13.0 (1) = 12; Elixhauser 9 flags minus 3 superseded = 6
    for t in ("readmission", "mortality"):
        expect(b, t, "E7", cci_diab=1, cci_diab_cc=1, cci_cancer=1, cci_mets=1, cci_mild_liver=1, cci_mod_liver=1,
               cci_chf=1, charlson_index=12, elix_diab_uncx=1, elix_diab_cx=1, elix_solid_tumor=1, elix_mets=1,
               elix_htn_uncx=1, elix_htn_cx=1, elix_liver=1, elix_alcohol=1, elix_chf=1, elix_count=6)
    expect(b, "readmission", "E7", lace_score=12)

# cohorts: E6 (the data end) has no follow-up; E4's overlap does not matter
for b in ("b1", "b2"):
    r, m = table(b, "readmission"), table(b, "mortality")
    if pseudo("E6") in r or pseudo("E6") in m: bad.append(f"{b}: the last stay has no follow-up but is in a cohort")
# labels see the future: E8, 15 days after E5's discharge, makes E5 (and E4) readmitted
expect("b1", "readmission", "E5", readmit_30d=0, days_to_readmission="")
expect("b2", "readmission", "E5", readmit_30d=1, days_to_readmission=15)
expect("b2", "readmission", "E4", readmit_30d=1, days_to_readmission=17)
# features do not: every feature of every stay of batch 1 is the same after batch 2
for t in ("readmission", "mortality", "los"):
    with open(f"{work}/b1/catalog.csv", newline="") as f:
        cols = {r["set_name"]: json.loads(r["columns"]) for r in csv.DictReader(f)}[t]
    feats = [c["name"] for c in cols if c["role"] == "feature"]
    one, two = table("b1", t), table("b2", t)
    if not set(one) <= set(two): bad.append(f"{t}: stays of batch 1 left the cohort after batch 2")
    changed = [(k, c) for k in one for c in feats if k in two and one[k][c] != two[k][c]]
    if changed: bad.append(f"{t}: {len(changed)} features changed after later stays were added, e.g. {changed[:3]}")
    if len(two) <= len(one) and t == "mortality": bad.append("mortality: batch 2's stays are missing")
    print(f"{t}: {len(one)} stays x {len(feats)} features unchanged by batch 2")
for b_ in bad: print("FAIL:", b_)
sys.exit(1 if bad else 0)
PY
ok "prior windows 182/183 and 365/366, POA N at admission, discharge rule, hierarchy; later stays change no feature"
