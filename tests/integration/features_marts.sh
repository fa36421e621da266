#!/usr/bin/env bash
# features_marts.sh: `prognos features build --set marts` on generated data equals
# an independent recomputation in pandas (marts_check.py, beside this test) of
# every mart table: cost of care per patient-year, facility and DRG, readmissions
# with their intervals, provider utilization. Costs are blanked for one stay in
# five and for every stay of one facility (an extract without costs), DRGs and
# attendings for some stays: NULL costs are unknown, never zero. The readmission
# mart agrees with features.readmission; a rebuild gives the same marts; each
# build is audited; an unknown set is a usage error.
. "$(dirname "$0")/lib.sh"
DATA="$WORK/data"
px generate --patients 1500 --seed 17 --out "$DATA" >/dev/null
/usr/bin/python3 - "$DATA/encounters.csv" <<'PY'
import csv, sys
p = sys.argv[1]
rows = list(csv.DictReader(open(p, newline="")))
for i, r in enumerate(rows):
    if i % 5 == 0 or r["facility_id"] == "H003": r["total_cost"] = ""
    if i % 11 == 0: r["drg"] = ""
    if i % 13 == 0: r["attending_id"] = ""
with open(p, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
PY
px etl load --format canonical --source "$DATA" --quiet >/dev/null

assert_exit 2 px features build --set mart
grep -q "unknown feature set 'mart'" "$WORK/err" || fail "usage error does not name the set: $(cat "$WORK/err")"
ok "an unknown set is a usage error"

assert_exit 0 px features build --set marts --json
/usr/bin/python3 - "$WORK/out" <<'PY' || fail "build output: $(cat "$WORK/out")"
import json, sys
b = json.load(open(sys.argv[1]))
t = b["tables"]
assert b["set"] == "marts" and list(t) == ["mart.cost_patient_year", "mart.cost_facility", "mart.cost_drg",
    "mart.readmission", "mart.readmission_facility", "mart.provider_utilization"], b
assert all(n > 0 for n in t.values()), b
PY
ok "features build --set marts builds six tables"

export_marts() { # dir
    mkdir -p "$1"
    local U t
    U=$(px db url)
    for t in cost_patient_year cost_facility cost_drg readmission readmission_facility provider_utilization; do
        psql -X -q "$U" -c "\\copy mart.$t TO '$1/$t.csv' CSV HEADER" || fail "export mart.$t"
    done
}
export_marts "$WORK/m1"
# (pandas runs none of our code: the normal pass's, checks_values in lib.sh)
if checks_values; then
/usr/bin/python3 "$PROGNOS_SRC/tests/integration/marts_check.py" "$DATA" "$WORK/m1" "$PROGNOS_HOME/secret.key" ||
    fail "the marts differ from the pandas recomputation"
ok "every mart row equals the pandas recomputation"
fi

# NULL costs: unknown, not zero
assert_eq "$(sql "SELECT count(*) FILTER (WHERE cost_total IS NULL AND stays_costed = 0 AND cost_mean IS NULL
                                           AND cost_median IS NULL AND cost_per_day IS NULL) || ' ' || count(*)
                  FROM mart.cost_facility WHERE facility_id = 'H003'")" \
          "$(sql "SELECT count(DISTINCT extract(year FROM admission_date)) || ' ' || count(DISTINCT extract(year FROM admission_date))
                  FROM wh.fact_encounter WHERE facility_id = 'H003'")" "a facility without costs has NULL cost columns"
[ "$(sql "SELECT count(*) FROM mart.cost_facility WHERE stays_costed < stays AND stays_costed > 0")" -gt 0 ] ||
    fail "no facility with some costs missing"
ok "missing costs: NULL when none is known, stays_costed < stays when some are"

# the readmission mart agrees with the feature table's label
px features build --set readmission >/dev/null
assert_eq "$(sql "SELECT count(*) FROM features.readmission f JOIN mart.readmission m USING (encounter_id)
                  WHERE m.readmit_30d IS DISTINCT FROM f.readmit_30d
                     OR (f.readmit_30d = 1 AND m.days_to_next IS DISTINCT FROM f.days_to_readmission)")" "0" \
          "mart.readmission vs features.readmission"
assert_eq "$(sql "SELECT count(*) FROM features.readmission")" \
          "$(sql "SELECT count(*) FROM mart.readmission WHERE index_eligible AND followup_complete")" \
          "index stays of the mart vs the feature table's cohort"
ok "mart.readmission's index stays and label equal features.readmission"

# a rebuild replaces the marts with the same content; each build is audited
assert_exit 0 px features build --set marts
export_marts "$WORK/m2"
for t in cost_patient_year cost_facility cost_drg readmission readmission_facility provider_utilization; do
    cmp -s <(sort "$WORK/m1/$t.csv") <(sort "$WORK/m2/$t.csv") || fail "mart.$t differs after a rebuild"
done
assert_eq "$(sql "SELECT sum(stays) FROM mart.cost_facility")" "$(sql "SELECT count(*) FROM wh.fact_encounter")" \
          "the facility rows add up to the stays"
assert_eq "$(sql "SELECT sum(stays) FROM mart.provider_utilization")" "$(sql "SELECT count(*) FROM wh.fact_encounter")" \
          "the attending rows add up to the stays"
assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'marts.build'
                  AND (detail->'rows'->>'readmission')::bigint > 0")" "2" "audit events of the two builds"
ok "a rebuild gives the same marts; each build is audited"
