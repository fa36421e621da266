#!/usr/bin/env bash
# db_shards_retention.sh: `prognos db retention` on a distributed warehouse (a
# coordinator and three shards, separate embedded clusters as in db_shards.sh)
# against a single-node reference warehouse holding the same nine admission
# years and the same policies: archive (fact_encounter), detach (fact_diagnosis)
# and drop (fact_procedure) of the years that ended more than 8 years ago (the
# reference's archives first left waiting, which `distribute` refuses). Two
# policies are set before `db shards distribute` (which accepts them and takes
# the tables out of pg_partman's configuration), one after. An apply killed
# (PX_TEST_KILL_AT, a SIGKILL it raises on itself) after the first shard
# PREPAREd is rolled back by `db shards recover` (nothing removed anywhere); one
# killed after the decision and the first shard's COMMIT PREPARED is finished by
# the next apply's recovery (removed everywhere). Then: every remaining fact row,
# the removal records and the audited partitions equal the reference's; each
# archive's SHA-256 is the file's and its rows (from all shards) are the
# reference archive's; the detached rows (a table per shard) are the reference's
# detached partition; KPI requests for removed periods and KPIs from features
# built before fail and name the removal; a load of a removed year is refused.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/retention_lib.sh"
COORD=$PROGNOS_HOME
new_ref_home
new_shard_homes 3
U=$(px db url)
rsql() { psql -X -q -At -v ON_ERROR_STOP=1 "$RURL" -c "$1"; }
ssql() { psql -X -q -At -v ON_ERROR_STOP=1 "${SURL[$1]}" -c "$2"; }

# the data's years are relative to today (12 to 4 years ago), so that the policies below
# always find years to remove and years to keep, whatever the date the test runs on
Y0=$(( $(date +%Y) - 12 )); Y1=$(( $(date +%Y) - 4 ))
px generate --patients 500 --seed 31 --years "$Y0-$Y1" --out "$WORK/data" >/dev/null
PROGNOS_HOME=$REF px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null

read -r -a GONE <<<"$(/usr/bin/python3 -c '
import datetime, sys
t = datetime.datetime.now()
try: cut = t.replace(year=t.year - 8)
except ValueError: cut = t.replace(year=t.year - 8, day=28)
print(" ".join(str(y) for y in range(int(sys.argv[1]), int(sys.argv[2]) + 1) if datetime.datetime(y + 1, 1, 1) < cut))' "$Y0" "$Y1")"
[ ${#GONE[@]} -ge 1 ] && [ ${#GONE[@]} -le 8 ] || fail "the test needs some years removed and some kept: ${GONE[*]}"
echo "removing ${GONE[*]}"

# every row of a fact table, as text, sorted: equal between warehouses that hold the same rows
rows_md5() { # url table
    psql -X -q -At -v ON_ERROR_STOP=1 "$1" -c "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, E'\n' ORDER BY x::text)), '-') FROM $2 x"
}
for t in fact_encounter fact_diagnosis fact_procedure; do
    assert_eq "$(rows_md5 "$U" wh.$t)" "$(rows_md5 "$RURL" wh.$t)" "wh.$t loaded the same on both warehouses"
done

# the reference: single node, pg_partman
for ph in "$REF" "$COORD"; do
    PROGNOS_HOME=$ph px db retention set --table fact_encounter --older-than 8y --action archive >/dev/null
    PROGNOS_HOME=$ph px db retention set --table fact_diagnosis --older-than 8y --action detach >/dev/null
done
PROGNOS_HOME=$REF px db retention set --table fact_procedure --older-than 8y --action drop >/dev/null
# (first with an archive directory that cannot be made: the archives wait in
# wh_retired, and distribute refuses the warehouse until they are written)
touch "$WORK/not-a-dir"
PROGNOS_HOME=$REF assert_exit 1 px db retention apply --archive-dir "$WORK/not-a-dir/sub"
PROGNOS_HOME=$REF assert_exit 1 px db shards distribute
grep -q "cannot distribute: ${#GONE[@]} removed partitions still wait to be archived" "$WORK/err" ||
    fail "distribute with archives pending: $(cat "$WORK/err")"
PROGNOS_HOME=$REF px db retention apply --archive-dir "$WORK/ref-archive" >/dev/null
assert_eq "$(rsql "SELECT count(*) FROM wh.retention_removed WHERE archived_at IS NOT NULL OR action <> 'archive'")" \
    "$((3 * ${#GONE[@]}))" "reference: partitions removed and archived"

# the coordinator: distributed with two policies set, the third set afterwards
# (first the usage and state errors of `db shards`, which db_shards.sh checks too: here
# they run in the ASan pass, which leaves db_shards.sh to the normal pass)
assert_exit 2 px db shards add
grep -q "add needs the shard's URI" "$WORK/err" || fail "add without a URI: $(cat "$WORK/err")"
assert_exit 1 px db shards distribute
grep -q "no shard to distribute to" "$WORK/err" || fail "distribute without shards: $(cat "$WORK/err")"
assert_exit 1 px db shards add "postgresql:///prognos?host=$WORK/nowhere"
grep -q "cannot connect to the shard" "$WORK/err" || fail "unreachable shard: $(cat "$WORK/err")"
for k in 1 2 3; do assert_exit 0 px db shards add "${SURL[$k]}"; done
assert_exit 0 px db shards distribute --json
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["shards"] == 3 and d["fact_encounter"] > 0 else 1)' \
    "$WORK/out" || fail "distribute --json: $(cat "$WORK/out")"
assert_exit 3 px db shards distribute
grep -q "already distributed" "$WORK/out" || fail "distribute twice: $(cat "$WORK/out")"
assert_eq "$(sql "SELECT count(*) FROM partman.part_config WHERE parent_table LIKE 'wh.fact\_%'")" 0 \
    "fact tables left in pg_partman's configuration"
assert_exit 0 px db retention set --table fact_procedure --older-than 8y --action drop
assert_eq "$(sql "SELECT count(*) FROM partman.part_config")" 0 "pg_partman configured on a distributed warehouse"
assert_eq "$(sql "SELECT string_agg(table_name || ':' || older_than || ':' || action, ' ' ORDER BY table_name) FROM wh.retention_policy")" \
    "$(rsql "SELECT string_agg(table_name || ':' || older_than || ':' || action, ' ' ORDER BY table_name) FROM wh.retention_policy")" \
    "policies"
ok "db shards: usage and state errors; distribute accepts a warehouse with retention policies; a policy is set on the distributed one"

px features build >/dev/null   # on the shards, before the removal: these tables will hold removed years
declare -A BEFORE
for t in fact_encounter fact_diagnosis fact_procedure; do BEFORE[$t]=$(rows_md5 "$U" wh.$t); done
prepared() { # the prepared transactions of every shard, one line each
    local k
    for k in 1 2 3; do ssql "$k" "SELECT $k || ' ' || gid FROM pg_prepared_xacts ORDER BY gid"; done
}
killed_apply() { # point: the apply must die by its own SIGKILL there
    set +e
    PX_TEST_KILL_AT=$1 px db retention apply --archive-dir "$WORK/archive" >"$WORK/out" 2>"$WORK/err"
    local rc=$?
    set -e
    [ "$rc" -eq 137 ] || { cat "$WORK/err" >&2; fail "apply killed at $1 exited $rc, expected 137 (SIGKILL)"; }
}

# killed after the first shard prepared its removal: in doubt, not decided
killed_apply retention_prepared
assert_eq "$(prepared | sed -E 's/pxr_[0-9]+_/pxr_R_/')" "1 pxr_R_0" "prepared after a kill at retention_prepared"
assert_exit 0 px db shards recover
assert_eq "$(prepared)" "" "prepared transactions after recovery"
for t in fact_encounter fact_diagnosis fact_procedure; do
    assert_eq "$(rows_md5 "$U" wh.$t)" "${BEFORE[$t]}" "wh.$t after the rolled-back apply"
done
assert_eq "$(sql "SELECT (SELECT count(*) FROM wh.retention_removed) + (SELECT count(*) FROM wh.retention_runs)
                  + (SELECT count(*) FROM audit.events WHERE action LIKE 'retention.%' AND action <> 'retention.set')")" 0 \
    "records of the rolled-back apply"
for k in 1 2 3; do
    assert_eq "$(ssql "$k" "SELECT count(*) FROM pg_tables WHERE schemaname = 'px_shard' AND tablename LIKE 'fact\_diagnosis\_p%'")" 0 \
        "detached tables on shard $k after the rolled-back apply"
done
ok "an apply killed after a shard prepared is rolled back on every shard by recovery"

# killed after the decision and the first shard's COMMIT PREPARED: the next apply's recovery finishes it
killed_apply retention_commit_prepared
assert_eq "$(prepared | sed -E 's/pxr_[0-9]+_/pxr_R_/' | tr '\n' ' ')" "2 pxr_R_1 3 pxr_R_2 " "prepared after a kill at retention_commit_prepared"
assert_exit 3 px db retention apply --archive-dir "$WORK/archive"
assert_eq "$(prepared)" "" "prepared transactions after the next apply"
assert_eq "$(sql "SELECT count(*) FROM wh.retention_runs")" 1 "retention runs decided"
ok "an apply killed after its decision is committed on every shard by the next apply's recovery"

# the same rows left, the same removals recorded and audited as on one node
for t in fact_encounter fact_diagnosis fact_procedure; do
    assert_eq "$(rows_md5 "$U" wh.$t)" "$(rows_md5 "$RURL" wh.$t)" "wh.$t after retention: sharded and single-node"
done
Q="SELECT string_agg(concat_ws(':', table_name, partition_name, period_start, period_end, action, archive_rows), ' '
      ORDER BY table_name, period_start) FROM wh.retention_removed"
assert_eq "$(sql "$Q")" "$(rsql "$Q")" "removal records"
Q="SELECT string_agg(object || ':' || (detail->>'period_start') || ':' || (detail->>'action'), ' ' ORDER BY object)
   FROM audit.events WHERE action = 'retention.remove'"
assert_eq "$(sql "$Q")" "$(rsql "$Q")" "audited removals"
assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'retention.remove' AND (detail->>'shards')::int = 3
                  AND (detail->>'rows')::bigint > 0")" "$((3 * ${#GONE[@]}))" "removal events name the shards and rows"
assert_eq "$(sql "SELECT count(*) FROM audit.events WHERE action = 'retention.archive' AND detail->>'sha256' ~ '^[0-9a-f]{64}$'")" \
    "${#GONE[@]}" "archive events"
for y in "${GONE[@]}"; do
    f="$WORK/archive/fact_encounter_p$y.csv.gz"
    [ -f "$f" ] || fail "no archive $f"
    assert_eq "$(sha256sum "$f" | cut -d' ' -f1)" \
        "$(sql "SELECT archive_sha256 FROM wh.retention_removed WHERE partition_name = 'fact_encounter_p$y'")" "SHA-256 of $f"
    assert_eq "$(sql "SELECT archive_file FROM wh.retention_removed WHERE partition_name = 'fact_encounter_p$y'")" "$f" "archive file of $y"
    ref="$WORK/ref-archive/fact_encounter_p$y.csv.gz"
    assert_eq "$(zcat "$f" | head -1)" "$(zcat "$ref" | head -1)" "archive header of $y"
    cmp -s <(zcat "$f" | tail -n +2 | sort) <(zcat "$ref" | tail -n +2 | sort) ||
        fail "the sharded archive of $y holds other rows than the single-node one"
    [ "$(zcat "$f" | wc -l)" -gt 1 ] || fail "archive of $y is empty"
    # detach: each shard's rows of the year, a table there; together the reference's detached partition
    for k in 1 2 3; do
        ssql "$k" "SELECT x::text FROM px_shard.fact_diagnosis_p$y x"
    done | sort >"$WORK/det$y.txt"
    psql -X -q -At "$RURL" -c "SELECT x::text FROM wh.fact_diagnosis_p$y x" | sort >"$WORK/refdet$y.txt"
    [ -s "$WORK/det$y.txt" ] || fail "no detached diagnoses of $y"
    cmp -s "$WORK/det$y.txt" "$WORK/refdet$y.txt" || fail "detached diagnoses of $y differ from the single-node ones"
done
ok "sharded retention removed, archived (SHA-256 and rows checked), detached and audited exactly as one node"

# a 7-year policy removes one more year (the one that ended between 7 and 8 years
# ago, always in the data): killed after the decision, before any shard's COMMIT
# PREPARED, it is committed everywhere by `db shards recover`
# (the local year: PostgreSQL applies the rule with now() in the cluster's time zone, the system's)
Y7=$(( $(date +%Y) - 8 ))
{
    for ph in "$REF" "$COORD"; do
        PROGNOS_HOME=$ph px db retention set --table fact_encounter --older-than 7y --action archive >/dev/null
        PROGNOS_HOME=$ph px db retention set --table fact_diagnosis --older-than 7y --action detach >/dev/null
        PROGNOS_HOME=$ph px db retention set --table fact_procedure --older-than 7y --action drop >/dev/null
    done
    PROGNOS_HOME=$REF px db retention apply --archive-dir "$WORK/ref-archive" >/dev/null
    killed_apply retention_committed
    assert_eq "$(prepared | sed -E 's/pxr_[0-9]+_/pxr_R_/' | tr '\n' ' ')" "1 pxr_R_0 2 pxr_R_1 3 pxr_R_2 " \
        "prepared after a kill at retention_committed"
    assert_eq "$(sql "SELECT string_agg(partition_name, ' ' ORDER BY partition_name) FROM wh.retention_removed
                      WHERE period_start = '$Y7-01-01'")" "fact_diagnosis_p$Y7 fact_encounter_p$Y7 fact_procedure_p$Y7" \
        "the decision recorded $Y7's removal"
    assert_exit 0 px db shards recover --json
    assert_eq "$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["committed"], d["rolled_back"])' "$WORK/out")" \
        "3 0" "recovery of the decided run"
    assert_eq "$(prepared)" "" "prepared transactions after recovery"
    for t in fact_encounter fact_diagnosis fact_procedure; do
        assert_eq "$(rows_md5 "$U" wh.$t)" "$(rows_md5 "$RURL" wh.$t)" "wh.$t after the 7-year policy: sharded and single-node"
    done
    f="$WORK/archive/fact_encounter_p$Y7.csv.gz"
    assert_eq "$(sha256sum "$f" | cut -d' ' -f1)" \
        "$(sql "SELECT archive_sha256 FROM wh.retention_removed WHERE partition_name = 'fact_encounter_p$Y7'")" "SHA-256 of $f"
    cmp -s <(zcat "$f" | sort) <(zcat "$WORK/ref-archive/fact_encounter_p$Y7.csv.gz" | sort) ||
        fail "the sharded archive of $Y7 holds other rows than the single-node one"
    assert_eq "$(sql "SELECT count(*) FROM wh.retention_runs")" 2 "retention runs decided"
    ok "an apply killed after its decision, before any shard committed, is committed on every shard by recovery"
}

# requests for removed periods fail clearly
y=${GONE[-1]}
assert_exit 1 px kpi report --period "$y" --out "$WORK/r.html"
grep -q "KPI period $y covers .* which retention removed" "$WORK/err" || fail "kpi report $y: $(cat "$WORK/err")"
grep -q "fact_encounter $y-01-01..$y-12-31 (archive" "$WORK/err" || fail "kpi report $y does not name the removal: $(cat "$WORK/err")"
assert_exit 1 px kpi compute
grep -q "kpi compute would report periods that retention removed" "$WORK/err" || fail "kpi compute on stale features: $(cat "$WORK/err")"
ok "KPI requests for removed periods, and KPIs from features built before the removal, fail and name it"

# a load of a removed year into the distributed warehouse is refused, and loads nothing
refused_load_of_removed_year "$y"
assert_eq "$(prepared)" "" "prepared transactions after the refused load"
assert_exit 3 px db retention apply --archive-dir "$WORK/archive"
ok "a load of a removed year is refused; an apply with nothing to do exits 3"

# KPIs over the distributed warehouse after the removals: features rebuilt, then a KPI pass
# whose stay sums run on each of the three shards (px_shards_union)
px features build >/dev/null
assert_exit 0 px kpi compute --json
assert_eq "$(sql "SELECT count(*) > 0 FROM kpi.results WHERE run_id = (SELECT max(run_id) FROM kpi.results)")" t "KPI rows of the distributed warehouse"
ok "features and KPIs computed on the distributed warehouse after the removals"
