#!/usr/bin/env bash
# A generated canonical dataset (valid by construction) loads completely: every
# row of every file is in the warehouse, and stored values agree with the files
# (LOS, ages, costs, codes, dispositions), computed independently with awk.
. "$(dirname "$0")/lib.sh"
DATA="$WORK/data"
px generate --patients 5000 --seed 3 --out "$DATA" >/dev/null
assert_exit 0 px etl load --format canonical --source "$DATA" --json
grep -q '"rows_rejected":0' "$WORK/out" || fail "a generated dataset had rejects: $(cat "$WORK/out")"

for pair in facilities:"dim_provider WHERE kind = 'facility'" providers:"dim_provider WHERE kind = 'clinician'" \
            patients:dim_patient encounters:fact_encounter diagnoses:fact_diagnosis procedures:fact_procedure; do
    f=${pair%%:*}; t=${pair#*:}
    assert_eq "$(sql "SELECT count(*) FROM wh.$t")" "$(($(wc -l < "$DATA/$f.csv") - 1))" "$f rows in the warehouse"
done
ok "every row of the six files is in the warehouse"

# independent sums from the files
want=$(python3 - "$DATA" <<'PY'
import csv, datetime, sys
d = sys.argv[1]
los = cost = emerg = expired = 0
for r in csv.DictReader(open(f"{d}/encounters.csv")):
    a = datetime.date.fromisoformat(r["admission_date"]); b = datetime.date.fromisoformat(r["discharge_date"])
    los += (b - a).days; cost += round(float(r["total_cost"]) * 100)
    emerg += r["admission_type"] == "emergency"; expired += r["discharge_disposition"] == "expired"
print(los, cost, emerg, expired)
PY
)
got=$(sql "SELECT sum(los_days) || ' ' || (sum(total_cost) * 100)::bigint || ' ' ||
    count(*) FILTER (WHERE admission_type = 'emergency') || ' ' ||
    count(*) FILTER (WHERE discharge_disposition = 'expired') FROM wh.fact_encounter")
assert_eq "$got" "$want" "sum LOS, sum cost (cents), emergency and expired counts"
# codes are stored without the dot, upper-case; ages from birth year
dots=$(awk -F, 'FNR > 1 {gsub(/\./, "", $4); n[$4]++} END {for (c in n) s += n[c] * length(c); print s}' "$DATA/diagnoses.csv")
assert_eq "$(sql 'SELECT sum(length(code)) FROM wh.fact_diagnosis')" "$dots" "total code length without dots"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter e JOIN wh.dim_patient p USING (patient_id)
    WHERE e.age_at_admission <> extract(year FROM e.admission_date) - p.birth_year')" 0 "age at admission"
assert_eq "$(sql "SELECT count(DISTINCT tableoid) FROM wh.fact_encounter")" \
          "$(awk -F, 'FNR > 1 {print substr($5, 1, 4)}' "$DATA/encounters.csv" | sort -u | wc -l)" "one partition per admission year"
ok "stored values agree with the files"
