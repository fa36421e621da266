#!/usr/bin/env bash
# db_shards.sh: a sharded warehouse over postgres_fdw on this machine: a
# coordinator and three shards, each a separate embedded cluster (own data
# directory and socket). A single-node warehouse is loaded, its features, marts
# and KPIs (one risk-adjusted, two crude) computed and kept; `db shards add`
# registers the three shards and `db shards distribute` moves the fact tables to
# them, hash-partitioned by patient. Then: every row is on exactly one shard, a
# patient's stays, diagnoses and procedures on the same one; the feature build's
# per-stay aggregates and the KPI pass's sums over the stays ran on every shard
# (their plans, logged by auto_explain); every feature row, mart row and
# kpi.results row rebuilt on the sharded warehouse equals the single-node one; a
# write outside a sharded load is refused by name. First, migration 019 is
# replayed on the loaded single node (the codes' patient_id backfilled).
. "$(dirname "$0")/lib.sh"
COORD=$PROGNOS_HOME
new_shard_homes 3
assert_eq "$(printf '%s\n' "${SURL[@]}" | sort -u | wc -l)" 3 "three separate clusters"
export PROGNOS_HOME=$COORD
px generate --patients 1200 --seed 41 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
U=$(px db url)

# migration 019 on a warehouse loaded before it (made so by dropping the column and
# the migration's record): every diagnosis and procedure gets its stay's patient
want=$(sql "SELECT md5(string_agg(concat_ws(' ', encounter_id, seq, patient_id), ',' ORDER BY encounter_id, seq))
            FROM wh.fact_diagnosis")
sql "ALTER TABLE wh.fact_diagnosis DROP COLUMN patient_id; ALTER TABLE wh.fact_procedure DROP COLUMN patient_id;
     DELETE FROM public.prognos_migrations WHERE version = 19" >/dev/null
px etl status >/dev/null
assert_eq "$(sql "SELECT string_agg(attrelid::regclass || ':' || attnotnull, ' ' ORDER BY attrelid::regclass::text)
                  FROM pg_attribute WHERE attrelid IN ('wh.fact_diagnosis'::regclass, 'wh.fact_procedure'::regclass)
                  AND attname = 'patient_id' AND NOT attisdropped")" "wh.fact_diagnosis:true wh.fact_procedure:true" \
    "patient_id back on the code tables, NOT NULL"
assert_eq "$(sql "SELECT (SELECT count(*) FROM wh.fact_diagnosis d JOIN wh.fact_encounter e USING (encounter_id, admission_date)
                          WHERE e.patient_id = d.patient_id) = (SELECT count(*) FROM wh.fact_diagnosis)
                     AND (SELECT count(*) FROM wh.fact_procedure d JOIN wh.fact_encounter e USING (encounter_id, admission_date)
                          WHERE e.patient_id = d.patient_id) = (SELECT count(*) FROM wh.fact_procedure)")" t \
    "every code row carries its stay's patient"
assert_eq "$(sql "SELECT md5(string_agg(concat_ws(' ', encounter_id, seq, patient_id), ',' ORDER BY encounter_id, seq))
                  FROM wh.fact_diagnosis")" "$want" "backfilled patients equal the loader's"
ok "migration 019 backfills the patient of every diagnosis and procedure of an existing warehouse"

snapshot() { # dir: every feature, mart and KPI row, sorted, in CSV
    mkdir -p "$1"
    local t
    for t in features.readmission features.mortality features.los mart.cost_patient_year mart.cost_facility \
             mart.cost_drg mart.readmission mart.readmission_facility mart.provider_utilization; do
        psql -X -q "$U" -c "\\copy (SELECT * FROM $t) TO '$1/$t.csv' CSV" || fail "export $t"
        sort -o "$1/$t.csv" "$1/$t.csv"
    done
    # the latest run's results, without the run's id
    psql -X -q "$U" -c "\\copy (SELECT to_jsonb(r) - 'run_id' FROM kpi.results r
                                WHERE run_id = (SELECT max(run_id) FROM kpi.results)) TO '$1/kpi.results.json'" || fail "export kpi"
    sort -o "$1/kpi.results.json" "$1/kpi.results.json"
}
t0=$SECONDS
px features build >/dev/null
px features build --set marts >/dev/null
t_single=$((SECONDS - t0))
px train --model readmission --accept-failed-gates >/dev/null
px kpi compute >/dev/null 2>&1
snapshot "$WORK/single"
[ "$(grep -c '"model_version": 1' "$WORK/single/kpi.results.json")" -gt 100 ] || fail "no risk-adjusted KPI row"
ok "single-node warehouse: features, marts and KPIs (readmission risk-adjusted) kept"

assert_exit 2 px db shards add
assert_exit 1 px db shards distribute
grep -q "no shard to distribute to" "$WORK/err" || fail "distribute without shards: $(cat "$WORK/err")"
assert_exit 1 px db shards add "postgresql:///prognos?host=$WORK/nowhere"
grep -q "cannot connect to the shard" "$WORK/err" || fail "unreachable shard: $(cat "$WORK/err")"
for k in 1 2 3; do assert_exit 0 px db shards add "${SURL[$k]}"; done
assert_eq "$(sql "SELECT string_agg(server_name, ',' ORDER BY shard_id) FROM wh.shards")" "px_shard_0,px_shard_1,px_shard_2" "shards"
sql "SELECT conninfo FROM wh.shards" | grep -qi password && fail "a password in wh.shards"
ok "three shards registered (foreign servers, user mappings, empty tables)"

TOTAL=$(sql "SELECT count(*) || ' ' || (SELECT count(*) FROM wh.fact_diagnosis) || ' ' || (SELECT count(*) FROM wh.fact_procedure) FROM wh.fact_encounter")
assert_exit 0 px db shards distribute --json
assert_eq "$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["shards"], d["fact_encounter"], d["fact_diagnosis"], d["fact_procedure"])' "$WORK/out")" \
    "3 $TOTAL" "rows distributed"
assert_eq "$(sql "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'wh.fact_diagnosis'::regclass")" h "hash partitioned"
assert_eq "$(sql "SELECT count(*) FROM pg_inherits i JOIN pg_foreign_table f ON f.ftrelid = i.inhrelid
                  WHERE i.inhparent IN ('wh.fact_encounter'::regclass, 'wh.fact_diagnosis'::regclass, 'wh.fact_procedure'::regclass)")" \
    9 "foreign partitions"
assert_exit 3 px db shards distribute
sum=0
for k in 1 2 3; do
    n=$(psql -X -At "${SURL[$k]}" -c "SELECT count(*) FROM px_shard.fact_encounter")
    [ "$n" -gt 0 ] || fail "shard $k holds no stay"
    sum=$((sum + n))
    assert_eq "$(psql -X -At "${SURL[$k]}" -c "SELECT (SELECT count(*) FROM px_shard.fact_diagnosis d WHERE NOT EXISTS
                    (SELECT 1 FROM px_shard.fact_encounter e WHERE e.encounter_id = d.encounter_id AND e.patient_id = d.patient_id))
                  + (SELECT count(*) FROM px_shard.fact_procedure d WHERE NOT EXISTS
                    (SELECT 1 FROM px_shard.fact_encounter e WHERE e.encounter_id = d.encounter_id AND e.patient_id = d.patient_id))")" \
        0 "diagnoses and procedures on shard $k without their stay there"
    psql -X -At "${SURL[$k]}" -c "SELECT DISTINCT patient_id FROM px_shard.fact_encounter" >>"$WORK/patients.txt"
done
assert_eq "$sum" "${TOTAL%% *}" "stays over the three shards"
assert_eq "$(sort "$WORK/patients.txt" | uniq -d | wc -l)" 0 "patients on more than one shard"
ok "distributed: every stay on one shard, a patient's stays, diagnoses and procedures together"

# where aggregates run (what px_shards_tune sets for the feature build and the
# marts): grouped by the hash key, each shard computes its groups whole (an
# Async Foreign Scan per shard whose Remote SQL holds the aggregate); without
# enable_partitionwise_aggregate, and grouped by anything else (PostgreSQL 15
# pushes no partial aggregate), the shards only scan. Should a PostgreSQL push
# partial aggregates, the last check fails: README, Scale-out, must then say so.
plan() { # settings query -> the Remote SQL lines
    psql -X -q -At -v ON_ERROR_STOP=1 "$U" -c "$1" -c "EXPLAIN (VERBOSE, COSTS OFF) $2" | grep 'Remote SQL' || true
}
Q="SELECT patient_id, count(*), sum(total_cost) FROM wh.fact_encounter GROUP BY patient_id"
assert_eq "$(plan "SET enable_partitionwise_aggregate = on" "$Q" | grep -c 'count(\*), sum(total_cost) FROM px_shard.fact_encounter GROUP BY 1')" \
    3 "per-patient aggregate pushed to each shard: $(plan "SET enable_partitionwise_aggregate = on" "$Q")"
assert_eq "$(plan "SET enable_partitionwise_aggregate = off" "$Q" | grep -c 'count(')" 0 "aggregate pushed without partitionwise aggregation"
assert_eq "$(plan "SET enable_partitionwise_aggregate = on" "SELECT facility_id, count(*) FROM wh.fact_encounter GROUP BY facility_id" |
             grep -c 'count(')" 0 "a partial aggregate pushed (PostgreSQL 15 does not)"
ok "aggregates grouped by patient run on the shards (postgres_fdw pushdown); others on the coordinator"

# the same SQL on the sharded warehouse (the tables dropped so that the builds run
# again), with every statement's plan logged by auto_explain (VERBOSE: the Remote
# SQL each shard ran) for the checks below
sql "DROP TABLE features.readmission, features.mortality, features.los" >/dev/null
sql "ALTER DATABASE prognos SET session_preload_libraries = 'auto_explain';
     ALTER DATABASE prognos SET auto_explain.log_min_duration = 0;
     ALTER DATABASE prognos SET auto_explain.log_verbose = on;
     ALTER DATABASE prognos SET log_min_messages = log" >/dev/null
LOG=$COORD/pg/server.log
[ -f "$LOG" ] || fail "no server log at $LOG"
log0=$(wc -c <"$LOG")
t0=$SECONDS
px features build >/dev/null
t_features=$((SECONDS - t0))
tail -c +$((log0 + 1)) "$LOG" >"$WORK/build_plans.log"
sql "ALTER DATABASE prognos RESET ALL" >/dev/null
px features build --set marts >/dev/null
t_sharded=$((SECONDS - t0))

# where the feature build ran (features/sql/base.sql): its per-stay aggregates of
# diagnoses (comorbidity masks included) and procedures and the self-join of each
# patient's stays (prior-stay counts and lists, next admission) each ran whole on
# every shard (an aggregate over the shard's own table or join in its Remote
# SQL), and no diagnosis or procedure row crossed to the coordinator (every
# Remote SQL reading them groups)
/usr/bin/python3 - "$WORK/build_plans.log" <<'PY' || fail "the feature build's aggregates did not run on the shards"
import re, sys
log = open(sys.argv[1]).read()
rel = re.findall(r"Relations: (Aggregate on .*)", log)
remote = re.findall(r"Remote SQL: (.*)", log)
assert remote, "no plan logged (auto_explain)"
want = {
    "diagnoses per stay": r"Aggregate on \(wh\.fact_diagnosis_s{k} d\w*\)$",
    "procedures per stay": r"Aggregate on \(wh\.fact_procedure_s{k} \w+\)$",
    "prior and next stays": r"Aggregate on \(\(wh\.fact_encounter_s{k} i\w*\) INNER JOIN \(wh\.fact_encounter_s{k} p\w*\)\)$",
}
for what, pat in want.items():
    for k in range(3):
        n = sum(1 for r in rel if re.match(pat.format(k=k), r))
        assert n == 1, f"{what}: {n} pushed aggregates on shard {k}, expected 1; pushed: {rel}"
# the aggregates themselves are in the shards' SQL
assert sum(bool(re.search(r"bit_or\(\(\$\d+::jsonb -> \(\(code_system \|\| ':'\) \|\| \"left\"\(code, 3\)\)\)::bigint\)", r))
           and r.endswith("FROM px_shard.fact_diagnosis GROUP BY 1, 2") for r in remote) == 3, "mask aggregate not on 3 shards"
assert sum(r.endswith("FROM px_shard.fact_procedure GROUP BY 1, 2") and "count(*)" in r for r in remote) == 3
assert sum("array_agg(" in r and "min(" in r and "px_shard.fact_encounter" in r for r in remote) == 3, "pairs not on 3 shards"
for r in remote:
    if "px_shard.fact_diagnosis" in r or "px_shard.fact_procedure" in r:
        assert "GROUP BY" in r, f"codes fetched row by row: {r[:300]}"
print(f"{len(rel)} aggregates pushed to the shards, {len(remote)} remote queries")
PY
ok "the feature build's heavy aggregates ran on each of the three shards (EXPLAIN VERBOSE of the build: Remote SQL)"
# the KPI pass: the stays' sums per month, facility and department (volume and
# cost measures) and the stays' count and discharge range are each shard's
# aggregate (px_shards_union), added on the coordinator; the risk-adjusted
# measures read the coordinator's feature tables
sql "ALTER DATABASE prognos SET session_preload_libraries = 'auto_explain';
     ALTER DATABASE prognos SET auto_explain.log_min_duration = 0;
     ALTER DATABASE prognos SET auto_explain.log_verbose = on;
     ALTER DATABASE prognos SET log_min_messages = log" >/dev/null
log0=$(wc -c <"$LOG")
px kpi compute --force >/dev/null 2>&1
tail -c +$((log0 + 1)) "$LOG" >"$WORK/kpi_plans.log"
sql "ALTER DATABASE prognos RESET ALL" >/dev/null
/usr/bin/python3 - "$WORK/kpi_plans.log" <<'PY' || fail "the KPI pass's stay sums did not run on the shards"
import re, sys
remote = re.findall(r"Remote SQL: (.*)", open(sys.argv[1]).read())
enc = [r for r in remote if "px_shard.fact_encounter" in r]
cells = [r for r in enc if "count(total_cost), sum(total_cost), sum((total_cost * total_cost))" in r
         and r.endswith("GROUP BY 1, 2, 3")]
span = [r for r in enc if re.match(r"SELECT count\(\*\), min\(discharge_date\), max\(discharge_date\) FROM px_shard\.fact_encounter$", r)]
assert len(cells) == 3 and len(span) == 3, f"{len(cells)} cell sums, {len(span)} counts on the shards: {enc}"
assert all("GROUP BY" in r or r in span for r in enc), f"stays fetched row by row: {enc}"
print(f"KPI pass: {len(enc)} queries on the shards' stays, all aggregates")
PY
ok "the KPI pass's sums over the stays ran on each shard (EXPLAIN VERBOSE: Remote SQL)"
snapshot "$WORK/sharded"
for f in "$WORK/single"/*.csv; do
    b=$(basename "$f")
    [ -s "$f" ] || fail "$b is empty"
    cmp -s "$f" "$WORK/sharded/$b" || fail "$b differs between single-node and sharded: $(diff "$f" "$WORK/sharded/$b" | head -4)"
done
# kpi.results: every row, every text and integer field equal; doubles equal to 1e-9
# relative: kpi compute sums the risk models' doubles in the feature tables'
# physical row order, which a rebuild from shards changes (a difference in the
# last digit was seen), and the roll-up of cells to quarters and years adds
# doubles in the order the cells arrive; volume (counts) is exact
/usr/bin/python3 - "$WORK/single/kpi.results.json" "$WORK/sharded/kpi.results.json" <<'PY' || fail "kpi.results differ"
import json, math, sys
def load(p):
    rows = [json.loads(l.replace("\\\\", "\\")) for l in open(p)]
    return {(r["measure"], r["period_kind"], r["period"], r["unit_type"], r["unit"]): r for r in rows}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), (len(a), len(b))
bad = []
for k, r in a.items():
    for f, v in r.items():
        w = b[k].get(f)
        # volume: counts of stays, exact on both
        same = (math.isclose(v, w, rel_tol=1e-9, abs_tol=1e-12)
                if isinstance(v, float) and isinstance(w, (int, float)) and k[0] != "volume"
                else v == w)
        if not same:
            bad.append((k, f, v, w))
assert not bad, f"{len(bad)} fields differ, e.g. {bad[:3]}"
print(f"kpi.results: {len(a)} rows equal")
PY
ok "every feature, mart and kpi.results row equals the single-node warehouse's ($(cat "$WORK"/single/*.csv "$WORK"/single/*.json | wc -l) rows)"
echo "features + marts build: single node ${t_single} s, 3 shards on this machine ${t_sharded} s (features ${t_features} s, with auto_explain; reported only)"

# the loader's partition functions refuse a session that is not a sharded load
# (prognos etl load writes the shards with two-phase commit: db_shards_2pc.sh)
set +e
psql -X -q -At -v ON_ERROR_STOP=1 "$U" -c "SELECT wh.ensure_partition('fact_encounter', 2021)" >"$WORK/out" 2>"$WORK/err"
got=$?
set -e
assert_eq "$got" 1 "ensure_partition on a distributed table outside a sharded load"
grep -q "cannot load into wh.fact_encounter: the warehouse is sharded and this session is not a sharded load" "$WORK/err" ||
    fail "write outside a sharded load: $(cat "$WORK/err")"
ok "a write into the distributed fact tables outside a sharded load is refused by name"
