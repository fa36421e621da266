#!/usr/bin/env bash
# db_retention.sh: `prognos db retention` on a warehouse of nine admission years,
# applied by pg_partman: per table, archive (fact_encounter), detach
# (fact_diagnosis) and drop (fact_procedure) of the years that ended more than 8
# years ago (the expected years computed here from today's date). An archive run
# that cannot write its files leaves the partitions waiting and the next run
# writes them; each archive's SHA-256 is the file's and its content is the
# partition's rows as they were; an audit event names every partition removed.
# Afterwards: KPI reports of removed periods fail and name them, a table that lost
# a year another kept makes features and KPIs refuse, a load of a removed year is
# refused, and an apply with nothing to do exits 3.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/retention_lib.sh"
# nine admission years ending four years ago (relative to today, as the rule is: fixed
# years would all pass the 8-year line one day and leave nothing kept)
Y0=$(( $(date +%Y) - 12 )); Y1=$(( $(date +%Y) - 4 ))
px generate --patients 800 --seed 31 --years "$Y0-$Y1" --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
U=$(px db url)

# the years whose partitions end more than 8 years before now (pg_partman's rule:
# upper bound < now - retention), computed independently
read -r -a GONE <<<"$(/usr/bin/python3 -c '
import datetime
t = datetime.datetime.now()
try: cut = t.replace(year=t.year - 8)
except ValueError: cut = t.replace(year=t.year - 8, day=28)
print(" ".join(str(y) for y in range('"$Y0"', '"$Y1"' + 1) if datetime.datetime(y + 1, 1, 1) < cut))')"
[ ${#GONE[@]} -ge 1 ] && [ ${#GONE[@]} -le 8 ] || fail "the test needs some years removed and some kept: ${GONE[*]}"
KEPT=$(( ${GONE[-1]} + 1 ))
echo "removing ${GONE[*]}, keeping $KEPT-$Y1"

# what the partitions hold before, to compare with the archives and the detached tables
declare -A ROWS
for y in "${GONE[@]}"; do
    for t in fact_encounter fact_diagnosis fact_procedure; do
        ROWS[$t$y]=$(sql "SELECT count(*) FROM wh.${t}_p$y")
        [ "${ROWS[$t$y]}" -gt 0 ] || fail "wh.${t}_p$y is empty before retention"
    done
    psql -X -q "$U" -c "\\copy (SELECT * FROM wh.fact_encounter_p$y) TO '$WORK/enc$y.csv' CSV HEADER"
done
TOTAL_BEFORE=$(sql "SELECT count(*) FROM wh.fact_encounter")
px features build >/dev/null   # before the removal: these tables will hold removed years

assert_exit 2 px db retention set --older-than 8 --action archive
grep -q "'8' is not an age" "$WORK/err" || fail "bad age message: $(cat "$WORK/err")"
assert_exit 2 px db retention set --older-than 8y --action shred
assert_exit 2 px db retention set --older-than 8y --action drop --table wh.stays
ok "bad ages, actions and tables are usage errors"

assert_exit 0 px db retention set --table fact_encounter --older-than 8y --action archive
assert_exit 0 px db retention set --table fact_diagnosis --older-than 8y --action detach
assert_exit 0 px db retention set --table fact_procedure --older-than 8y --action drop
assert_eq "$(sql "SELECT string_agg(parent_table || ':' || retention || ':' || retention_keep_table || ':' ||
                  coalesce(retention_schema, '-') || ':' || automatic_maintenance, ' ' ORDER BY parent_table)
                  FROM partman.part_config")" \
    "wh.fact_diagnosis:8 years:true:-:off wh.fact_encounter:8 years:false:wh_retired:off wh.fact_procedure:8 years:false:-:off" \
    "pg_partman's configuration"
ok "policies set and configured in pg_partman"

# an archive directory that cannot be made: the removal commits, the archives wait
touch "$WORK/not-a-dir"
assert_exit 1 px db retention apply --archive-dir "$WORK/not-a-dir/sub"
assert_eq "$(sql "SELECT count(*) FROM pg_tables WHERE schemaname = 'wh_retired'")" "${#GONE[@]}" "partitions waiting in wh_retired"
assert_eq "$(sql "SELECT count(*) FROM wh.retention_removed WHERE action = 'archive' AND archived_at IS NULL")" "${#GONE[@]}" \
    "archives pending"
assert_exit 0 px db retention apply --archive-dir "$WORK/archive" --json
cp "$WORK/out" "$WORK/apply.json"
/usr/bin/python3 - "$WORK/apply.json" "${#GONE[@]}" <<'PY' || fail "apply output: $(cat "$WORK/apply.json")"
import json, sys
a, n = json.load(open(sys.argv[1])), int(sys.argv[2])
assert a["removed"] == 0 and a["archived"] == n, a
assert all(p["action"] == "archive" and len(p["archive_sha256"]) == 64 for p in a["partitions"]), a
PY
ok "an interrupted archive run is finished by the next"

for y in "${GONE[@]}"; do
    f="$WORK/archive/fact_encounter_p$y.csv.gz"
    [ -f "$f" ] || fail "no archive $f"
    assert_eq "$(sha256sum "$f" | cut -d' ' -f1)" \
        "$(sql "SELECT archive_sha256 FROM wh.retention_removed WHERE partition_name = 'fact_encounter_p$y'")" "SHA-256 of $f"
    cmp -s <(zcat "$f") "$WORK/enc$y.csv" || fail "the archive of $y differs from the partition's rows"
    assert_eq "$(sql "SELECT archive_rows FROM wh.retention_removed WHERE partition_name = 'fact_encounter_p$y'")" \
        "${ROWS[fact_encounter$y]}" "archived rows of $y"
    assert_eq "$(sql "SELECT to_regclass('wh.fact_encounter_p$y') IS NULL AND to_regclass('wh_retired.fact_encounter_p$y') IS NULL")" \
        t "archived partition $y dropped"
    # detach: a table of its own, out of the partition set, rows intact
    assert_eq "$(sql "SELECT count(*) FROM wh.fact_diagnosis_p$y")" "${ROWS[fact_diagnosis$y]}" "detached rows of $y"
    assert_eq "$(sql "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'wh.fact_diagnosis_p$y'::regclass")" 0 "detached $y"
    assert_eq "$(sql "SELECT to_regclass('wh.fact_procedure_p$y') IS NULL")" t "dropped procedures of $y"
done
assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter")" \
    "$((TOTAL_BEFORE - $(IFS=+; echo "$(for y in "${GONE[@]}"; do printf '%s+' "${ROWS[fact_encounter$y]}"; done)0" | bc)))" \
    "stays left"
assert_eq "$(sql "SELECT min(extract(year FROM admission_date)) FROM wh.fact_encounter")" "$KEPT" "first year left"
assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'retention.remove'")" "$((3 * ${#GONE[@]}))" "removal events"
assert_eq "$(sql "SELECT count(DISTINCT object) FROM audit.events WHERE action = 'retention.remove'
                  AND detail->>'by' = 'pg_partman drop_partition_time'")" "$((3 * ${#GONE[@]}))" "one event per partition"
assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'retention.archive' AND detail->>'sha256' ~ '^[0-9a-f]{64}$'")" \
    "${#GONE[@]}" "archive events"
ok "archived (SHA-256 and content checked), detached and dropped the partitions of ${GONE[*]}; every one audited"

# requests for removed periods fail clearly
y=${GONE[-1]}
for p in "$y" "$y-Q2" "$y-06"; do
    assert_exit 1 px kpi report --period "$p" --out "$WORK/r.html"
    grep -q "KPI period $p covers .* which retention removed" "$WORK/err" || fail "kpi report $p: $(cat "$WORK/err")"
    grep -q "fact_encounter $y-01-01..$y-12-31 (archive" "$WORK/err" || fail "kpi report $p does not name the removal: $(cat "$WORK/err")"
done
ok "kpi report of a removed period fails and names the removal"

# feature tables built before the removal: kpi compute refuses them until they are rebuilt
assert_exit 1 px kpi compute
grep -q "kpi compute would report periods that retention removed" "$WORK/err" || fail "kpi compute on stale features: $(cat "$WORK/err")"
grep -Eq "features.readmission holds [0-9]+ stays admitted ${GONE[0]}-01-[0-9]{2}\.\.${GONE[-1]}-12-[0-9]{2}, in removed periods" "$WORK/err" || fail "stale features not named: $(cat "$WORK/err")"
ok "kpi compute refuses feature tables built before the removal"

# features and KPIs on the years left work; a table that loses a year the others keep makes them refuse
assert_exit 0 px features build
assert_eq "$(sql "SELECT min(extract(year FROM admission_date)) FROM features.mortality")" "$KEPT" "first year of the rebuilt features"
assert_exit 0 px kpi compute
assert_exit 0 px db retention set --table fact_procedure --older-than 7y --action drop
set +e; px db retention apply >"$WORK/out" 2>&1; rc=$?; set -e
removed7=$(sql "SELECT count(*) FROM wh.retention_removed WHERE table_name = 'fact_procedure'")
if [ "$removed7" -gt "${#GONE[@]}" ]; then
    assert_eq "$rc" 0 "apply of the 7-year policy"
    assert_exit 1 px features build --set readmission
    grep -q "features build would read stays whose rows retention removed from another fact table" "$WORK/err" ||
        fail "features build: $(cat "$WORK/err")"
    assert_exit 1 px kpi compute
    grep -q "kpi compute would read stays" "$WORK/err" || fail "kpi compute: $(cat "$WORK/err")"
    assert_exit 1 px features build --set marts
    ok "features and KPIs refuse stays whose procedures were removed"
    px db retention set --table fact_encounter --older-than 7y --action archive >/dev/null
    px db retention set --table fact_diagnosis --older-than 7y --action drop >/dev/null
    assert_exit 0 px db retention apply --archive-dir "$WORK/archive"
    assert_exit 0 px features build --set readmission
    ok "once every table lost the same years, features build again"
else
    assert_eq "$rc" 3 "apply with nothing to remove (today's date leaves no year between 7 and 8 years old)"
fi

# a load of a removed year is refused, and loads nothing
refused_load_of_removed_year "$y"
ok "a load of a removed year is refused"

assert_exit 3 px db retention apply --archive-dir "$WORK/archive"
assert_exit 0 px db retention show --json
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["policies"]) == 3 and len(d["removed"]) >= 3, d' "$WORK/out" ||
    fail "show --json: $(cat "$WORK/out")"
ok "apply with nothing to do exits 3; show lists policies and removals"
