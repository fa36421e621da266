#!/usr/bin/env bash
# db_backup.sh: the README's backup and restore of an embedded warehouse (README, "Backup and
# restore"), step by step: pg_dump of the database, and the pseudonymization key, the signing pair
# and the registry's artifacts copied; then, in a new home at another path, the files put back,
# `prognos db init`, and pg_restore. After it:
#  - every table of every schema holds the same rows as the original at the dump (md5 of each
#    table's rows, in order);
#  - `registry verify` passes, and the server gives the same predictions as the original's, to an
#    API key made before the backup (its hash came with the dump);
#  - `kpi compute` finds the KPI run it would make already there (exit 3), and loading the same
#    extract again is refused as loaded (exit 3);
#  - a new extract loaded into both homes gives the same patients (the key came along: new loads
#    link to the pseudonyms already stored).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
setup_model 4000 21
A=$PROGNOS_HOME
px kpi compute >/dev/null 2>&1
READ=$(new_key read)
PRED=$(new_key predict)
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 40) t" >"$WORK/rows.json"
start_server
wait_key "$READ"
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 20 --expect-200 \
    --answers "$WORK/answers-a.txt" >/dev/null
stop_server

# one line per table: schema.table and the md5 of its rows in order (partitions through their parent)
digests() {
    local q
    q=$(sql "SELECT string_agg(format('SELECT %L || '' '' || coalesce(md5(string_agg(t::text, E''\\n'' ORDER BY t::text)), ''-'') FROM %I.%I t',
                                      n.nspname || '.' || c.relname, n.nspname, c.relname), ' UNION ALL ' ORDER BY 1)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'")
    psql -X -q -At -v ON_ERROR_STOP=1 "$(px_url)" -c "$q" | sort
}

# ---- the backup (README: the dump and the files, taken at the same time, the server stopped)
mkdir -m 700 "$WORK/backup"
pg_dump -Fc -d "$(px_url)" -f "$WORK/backup/prognos.dump"
cp -p "$A/secret.key" "$A/signing.key" "$A/signing.pub" "$WORK/backup/"
cp -a "$A/registry" "$WORK/backup/registry"
digests >"$WORK/digests-a.txt"
[ "$(wc -l <"$WORK/digests-a.txt")" -gt 20 ] || fail "too few tables digested: $(cat "$WORK/digests-a.txt")"
grep -q '^wh.fact_encounter [0-9a-f]\{32\}$' "$WORK/digests-a.txt" || fail "no rows in wh.fact_encounter's digest"
px db stop >/dev/null

# ---- the restore, into a new home at another path (README: the key files first, db init, pg_restore)
B="$WORK/restored/home"
mkdir -p "$B"
chmod 755 "$WORK/restored"
cp -p "$WORK/backup/secret.key" "$WORK/backup/signing.key" "$WORK/backup/signing.pub" "$B/"
cp -a "$WORK/backup/registry" "$B/registry"
export PROGNOS_HOME=$B
px db init >/dev/null
pg_restore --clean --if-exists --no-owner -d "$(px_url)" "$WORK/backup/prognos.dump" 2>"$WORK/restore.err" \
    || fail "pg_restore: $(head -c 2000 "$WORK/restore.err")"
digests >"$WORK/digests-b.txt"
diff "$WORK/digests-a.txt" "$WORK/digests-b.txt" >"$WORK/digests.diff" \
    || fail "tables differ after the restore: $(head -c 2000 "$WORK/digests.diff")"
ok "restored into a new home: every one of $(wc -l <"$WORK/digests-a.txt") tables holds the same rows"

assert_exit 0 px registry verify --all
start_server
wait_key "$READ"
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 20 --expect-200 \
    --answers "$WORK/answers-b.txt" >/dev/null
stop_server
[ "$(wc -l <"$WORK/answers-a.txt")" -eq 20 ] || fail "the original gave $(wc -l <"$WORK/answers-a.txt") answers"
cmp -s "$WORK/answers-a.txt" "$WORK/answers-b.txt" \
    || fail "the restored server's predictions differ: $(diff "$WORK/answers-a.txt" "$WORK/answers-b.txt" | head -4)"
ok "the restored registry verifies, and its server gives the same 20 predictions to a key made before the backup"

assert_exit 3 px kpi compute
assert_exit 3 px etl load --format canonical --source "$WORK/a" --quiet
ok "the restored warehouse knows its KPI run and its loaded files"

# a new extract into both homes: the same pseudonyms only with the same key
px generate --patients 300 --seed 23 --out "$WORK/c" >/dev/null
for h in "$A" "$B"; do
    PROGNOS_HOME=$h px etl load --format canonical --source "$WORK/c" --quiet >/dev/null
done
pat() { PROGNOS_HOME=$1 sql "SELECT count(*), md5(string_agg(patient_id::text, ',' ORDER BY patient_id)) FROM wh.dim_patient"; }
assert_eq "$(pat "$B")" "$(pat "$A")" "patients after loading a new extract into the original and the restored home"
ok "new loads link to the pseudonyms already stored"
