#!/usr/bin/env bash
# The postgres format: the canonical tables read from another database (here a
# second database on the embedded server). Same rows, same rejects as the CSV
# files; unchanged source tables are not loaded again.
. "$(dirname "$0")/lib.sh"
SRC="$FIXTURES/canonical-bad"

assert_exit 0 px db init
URL=$(px db url)
SRCURL=${URL/\/\/\/prognos/\/\/\/hospital_a}
sql "CREATE DATABASE hospital_a"
# source tables as a hospital would have them: typed columns; the rows that cannot
# be typed (bad dates, bad UTF-8, broken quoting) cannot exist in such a database,
# so the source holds the fixture's rows that parse as CSV, as text.
for f in facilities providers patients encounters diagnoses procedures; do
    cols=$(head -1 "$SRC/$f.csv" | sed 's/,/ text, /g; s/$/ text/')
    psql -X -q -v ON_ERROR_STOP=1 "$SRCURL" -c "CREATE TABLE $f ($cols)"
    # keep rows with the header's field count and valid quoting/UTF-8
    python3 - "$SRC/$f.csv" "$WORK/$f.csv" <<'PY'
import csv, sys
out = open(sys.argv[2], "w", newline="")
w = csv.writer(out)
with open(sys.argv[1], "rb") as fh:
    lines = fh.read().split(b"\n")
hdr = lines[0].decode().split(",")
w.writerow(hdr)
for raw in lines[1:]:
    if not raw:
        continue
    try:
        text = raw.decode("utf-8")
        row = next(csv.reader([text], strict=True))
    except Exception:
        continue
    if len(row) == len(hdr) and '"' not in text:
        w.writerow(row)
PY
    psql -X -q -v ON_ERROR_STOP=1 "$SRCURL" -c "\\copy $f FROM '$WORK/$f.csv' WITH (FORMAT csv, HEADER true)"
done

assert_exit 0 px etl load --format postgres --source "$SRCURL" --max-reject-rate 100 --quiet
# expected: the CSV rejects minus the three rows that cannot be in a database table
exp=$(grep -v -e 'csv_' "$SRC/expected-rejects.txt" | sed 's/\.csv|[0-9]*|/|/' | sort)
got=$(sql "SELECT file_name || '|' || reason FROM etl.rejects" | sort)
diff <(echo "$exp") <(echo "$got") || fail "postgres-source rejects differ from the CSV fixture's"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_encounter')" 2 "encounters from the source database"
assert_eq "$(sql 'SELECT count(*) FROM wh.fact_diagnosis')" 4 "diagnoses from the source database"
assert_eq "$(sql "SELECT format || ' ' || (source LIKE '%hospital_a%')::text FROM etl.batches")" "postgres true" "batch source"
ok "postgres source: same loads and rejects as the CSV files"

assert_exit 3 px etl load --format postgres --source "$SRCURL"
assert_eq "$(sql 'SELECT count(*) FROM etl.batches')" 1 "unchanged source loaded again"
ok "unchanged source tables are not loaded again (exit 3)"

# the same rows in another physical order are the same table
psql -X -q -v ON_ERROR_STOP=1 "$SRCURL" -c "CREATE TABLE d2 AS SELECT * FROM diagnoses ORDER BY random()" \
    -c "DROP TABLE diagnoses" -c "ALTER TABLE d2 RENAME TO diagnoses"
assert_exit 3 px etl load --format postgres --source "$SRCURL"
ok "a source table rewritten in another row order is still unchanged"

psql -X -q "$SRCURL" -c "INSERT INTO diagnoses VALUES ('E010', '9', 'icd10', 'I10', 'Y')"
assert_exit 0 px etl load --format postgres --source "$SRCURL" --max-reject-rate 100 --quiet
assert_eq "$(sql 'SELECT count(*) FROM etl.batch_files WHERE batch_id = (SELECT max(batch_id) FROM etl.batches)')" 1 "only the changed table is a new file"
assert_eq "$(sql "SELECT count(*) FROM wh.fact_diagnosis WHERE seq = 9")" 1 "the new source row is loaded"
# the two loads with nothing new gave their batch ids back: no gap, nothing listed as failed
assert_eq "$(sql "SELECT string_agg(batch_id::text, ',' ORDER BY batch_id) FROM etl.batches")" "1,2" "batch ids after loads with nothing new"
assert_eq "$(sql 'SELECT count(*) FROM etl.failed_batches')" 0 "loads with nothing new listed as failed"
ok "a changed source table is loaded; the unchanged ones are skipped"

# a password in the source URI is never recorded (the embedded server trusts, so any works)
psql -X -q "$SRCURL" -c "INSERT INTO diagnoses VALUES ('E010', '11', 'icd10', 'I10', 'Y')"
assert_exit 0 px etl load --format postgres --source "$SRCURL&password=hunter2secret" --max-reject-rate 100 --quiet
assert_eq "$(sql "SELECT count(*) FROM etl.batches WHERE source LIKE '%hunter2%'")" 0 "password recorded with the batch"
grep -q hunter2 "$PROGNOS_HOME/log/prognos.log" && fail "password in the log"
ok "the source's password is recorded nowhere"

assert_exit 1 px etl load --format postgres --source "postgresql:///nosuchdb?host=$PROGNOS_HOME/pg/run&user=prognos"
grep -q "cannot connect" "$WORK/err" || fail "bad source URI: no clear error"
ok "an unreachable source fails with a clear error"
