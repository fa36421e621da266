#!/usr/bin/env bash
# features_synpuf.sh: the feature tables on real CMS DE-SynPUF data (sample 1):
# ICD-9 codes, no POA, no admission type, source or disposition, and the
# chronic-condition flags of the beneficiary summary files. Cohort sizes are
# recounted with plain SQL on the warehouse, the ICD-9 comorbidity flags and the
# chronic-condition flags are checked against the warehouse's rows, and the row
# counts are reported. Data: $SYNPUF (lib.sh), the fixture subset unless PX_SYNPUF_DIR.
. "$(dirname "$0")/lib.sh"
S1="$SYNPUF/sample-1"
px etl load --format synpuf --source "$S1" --quiet >/dev/null
assert_exit 0 px features build --json
cat "$WORK/out"

# cohorts, recounted
end="(SELECT max(admission_date) FROM wh.fact_encounter)"
assert_eq "$(sql "SELECT count(*) FROM features.readmission")" \
          "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE discharge_disposition NOT IN ('expired', 'transfer_acute', 'ama') AND discharge_date + 30 <= $end")" \
          "readmission cohort"
assert_eq "$(sql "SELECT count(*) FROM features.mortality")" \
          "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE admission_date + 30 <= $end")" "mortality cohort"
assert_eq "$(sql "SELECT count(*) FROM features.los")" \
          "$(sql "SELECT count(*) FROM wh.fact_encounter WHERE discharge_disposition <> 'expired'")" "los cohort"
# labels, recounted
assert_eq "$(sql "SELECT sum(readmit_30d) FROM features.readmission")" \
          "$(sql "SELECT count(*) FROM wh.fact_encounter i WHERE discharge_disposition NOT IN ('expired', 'transfer_acute', 'ama')
                  AND discharge_date + 30 <= $end AND EXISTS (SELECT 1 FROM wh.fact_encounter n WHERE n.patient_id = i.patient_id
                  AND n.admission_date - i.discharge_date BETWEEN 1 AND 30)")" "readmissions"
assert_eq "$(sql "SELECT sum(death_30d) FROM features.mortality")" \
          "$(sql "SELECT count(*) FROM wh.fact_encounter e JOIN wh.dim_patient p USING (patient_id)
                  WHERE admission_date + 30 <= $end AND p.death_date - e.admission_date BETWEEN 0 AND 30")" "deaths within 30 days"
assert_eq "$(sql "SELECT sum(los_days) FROM features.los")" \
          "$(sql "SELECT sum(discharge_date - admission_date) FROM wh.fact_encounter WHERE discharge_disposition <> 'expired'")" "sum of LOS"
ok "cohorts and labels recount"

# ICD-9: a stay with its own 428.x has cci_chf and elix_chf (no POA in SynPUF, so also at admission);
# a stay with cci_chf has 428.x or another CHF code itself or on a prior stay
assert_eq "$(sql "SELECT count(*) FROM features.mortality m WHERE (cci_chf = 0 OR elix_chf = 0) AND EXISTS
                  (SELECT 1 FROM wh.fact_diagnosis d WHERE d.encounter_id = m.encounter_id AND d.code LIKE '428%')")" 0 \
          "stays with 428.x but no CHF flag"
chf=$(sql "SELECT count(*) FROM features.mortality WHERE cci_chf = 1")
[ "$chf" -gt 100 ] || fail "only $chf stays with CHF in SynPUF (Medicare): the ICD-9 map does not work"
assert_eq "$(sql "SELECT count(*) FROM features.mortality m WHERE cci_diab = 1 AND NOT EXISTS (
                  SELECT 1 FROM wh.fact_encounter p JOIN wh.fact_diagnosis d ON d.encounter_id = p.encounter_id
                  WHERE p.patient_id = m.patient_id AND p.admission_date BETWEEN m.admission_date - 365 AND m.admission_date
                  AND (p.encounter_id = m.encounter_id OR p.discharge_date <= m.admission_date)
                  AND d.code ~ '^250[0-389]')")" 0 "uncomplicated-diabetes flags without a 250.0-250.3/250.8/250.9 code"
# the chronic-condition flags are those of the admission year's beneficiary summary
assert_eq "$(sql "SELECT count(*) FROM features.mortality m JOIN wh.patient_year y ON y.patient_id = m.patient_id
                  AND y.year = extract(year FROM m.admission_date) WHERE m.cc_chf IS DISTINCT FROM y.chf::integer
                  OR m.cc_esrd IS DISTINCT FROM y.esrd::integer OR m.cc_diabetes IS DISTINCT FROM y.diabetes::integer")" 0 \
          "chronic-condition flags differ from wh.patient_year"
nn=$(sql "SELECT round(100.0 * count(cc_chf) / count(*)) FROM features.mortality")
[ "$nn" -ge 90 ] || fail "only $nn% of SynPUF stays have chronic-condition flags"
ok "ICD-9 comorbidity flags and chronic-condition flags agree with the warehouse"

echo "sample-1 row counts: $(sql "SELECT string_agg(set_name || ' ' || row_count || ' rows, ' || positives || ' positives', '; ' ORDER BY build_id) FROM features.catalog")"
echo "mean Charlson index (mortality): $(sql 'SELECT round(avg(charlson_index), 2) FROM features.mortality'), CHF $chf stays, chronic-condition flags on $nn% of stays"
assert_exit 0 px features build --json
grep -q '"unchanged":false' "$WORK/out" && fail "a second build was not a no-op"
ok "sample-1 built; a second build is a no-op"
