#!/usr/bin/env bash
# kpi_indb.sh: KPIs computed inside PostgreSQL with the risk models compiled to
# SQL (issue 15), on the fixed pipeline of tests/fixtures/kpi_indb/pipeline.sh:
#  - every kpi.results row equals, to 1e-9 relative, the row the C scoring path
#    wrote before the models were compiled (results_ref.csv: make_ref.sh with
#    the binary of commit 91f0360); texts (flags, methods, units) identical;
#    the same with --reference facility (results_ref_facility.csv, shift_ref.json);
#  - on every labelled row of the three feature tables, the compiled model's
#    score (kpi.predictions of an SQL run) equals the C score (px_model_predict
#    through the feature reader, kpi.scored_c of a --score-in-c run) to 1e-12
#    relative, and the two runs' kpi.results agree to 1e-9;
#  - `prognos registry sql` prints a function that PostgreSQL runs over the
#    feature table and that gives the same scores to 1e-12;
#  - an SVM (svr) is scored in C, and kpi compute says so;
#  - one reader, one encoder: for each model, every labelled row's design vector
#    by training's route (px_dataset_load + px_model_design) equals, bit for bit,
#    the one by the reader's route that KPI scoring in C and the drift check take
#    (px_feat_scan + px_model_raw_row + px_model_design_row): test_feature_encode.c,
#    which also runs each logit/poisson model compiled to SQL on the rows (1e-12);
#    the same on a table whose levels hold quotes, a backslash and dollar quotes.
source "$(dirname "$0")/lib.sh"
REF="$PROGNOS_SRC/tests/fixtures/kpi_indb"

# (without the hierarchical bootstrap: kpi compute applies the analytic intervals only, so
# the results are the reference's; the 20 refits per model were a third of this test's CPU)
PIPELINE_TRAIN_OPTS="--hier-boot 0" "$REF/pipeline.sh" "$PROGNOS_BIN" "$WORK"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert not any(j["scored_in_c"].values()), j' \
    "$WORK/compute.json" || fail "a GLM was scored in C: $(cat "$WORK/compute.json")"
U=$(px db url)
# The dumps of kpi.results and their comparison (psql, Python: 1.8 MB each) run none of our
# code: the normal pass's (checks_values, lib.sh); the ASan pass runs every computation.
if checks_values; then "$REF/dump.sh" "$U" > "$WORK/sql.csv"; fi

: "${PX_TEST_FEATURE_ENCODE:?set PX_TEST_FEATURE_ENCODE to the test_feature_encode binary}"
for m in readmission:readmit_30d mortality:death_30d los:los_days; do
    "$PX_TEST_FEATURE_ENCODE" "$(px db url)" "$PROGNOS_HOME/registry/${m%%:*}/1" "$PROGNOS_HOME/signing.pub" \
        "features.${m%%:*}" "${m##*:}" "$WORK/expect_${m%%:*}.jsonl" ||
        fail "design rows of ${m%%:*} differ between the two routes"
done
ok "one encoder: training's and the reader's routes give identical design rows (bit for bit) for the three models"

# the third consumer: the server's by-encounter lookup (/v1 predict with encounter_id).
# For 300 labelled rows of each model, the answer equals, as the server prints it
# (value and every contribution through srv_fmt6, and the imputed / extrapolated /
# unknown_level lists), what px_model_predict gives on training's vector for the row.
source "$(dirname "$0")/serve_lib.sh"
PRED=$(px apikey create --role predict --name encode 2>/dev/null)
server_compare() { # "models" least-flagged: 300 rows of each (flagged ones first) through the server
    start_server --threads 2
    "$PY" - "$URL" "$PRED" "$PROGNOS_HOME/secret.key" "$WORK/gen/encounters.csv" "$WORK" "$1" "$2" <<'PYEOF' ||
import csv, hashlib, hmac, http.client, json, sys, urllib.parse
url, key, keyfile, enc, w, models, least = sys.argv[1:8]
hk = bytes.fromhex(open(keyfile).read().strip())
def pseudo(v):
    h = hmac.new(hk, f"encounter:{v}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
plain = {pseudo(r["encounter_id"]): r["encounter_id"] for r in csv.DictReader(open(enc))}
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
for model in models.split():
    want = [json.loads(l) for l in open(f"{w}/expect_{model}.jsonl")]
    want.sort(key=lambda x: not (x["imputed"] or x["unknown_level"]))   # stable: flagged rows first
    want = [x for x in want if x["id"] in plain][:300]
    assert len(want) == 300, f"{model}: only {len(want)} labelled rows with a known encounter id"
    same = imputed = unknown = 0
    for b in range(0, len(want), 100):
        batch = want[b:b + 100]
        body = json.dumps({"instances": [{"encounter_id": plain[x["id"]]} for x in batch]})
        conn.request("POST", f"/v1/models/{model}/predict", body,
                     {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read()
        assert resp.status == 200, (model, resp.status, text[:300])
        got = json.loads(text, parse_float=str, parse_int=str)
        assert got["version"] == "1", (model, got["version"])
        for x, p in zip(batch, got["predictions"]):
            assert p["source"] == "encounter", p
            c = {q["feature"]: q["value"] for q in p["contributions"]}
            for f in ("imputed", "extrapolated", "unknown_level"):
                assert sorted(p.get(f, [])) == sorted(x[f]), (model, x["id"], f, p.get(f), x[f])
            assert p["value"] == x["value"] and c == x["contributions"], (model, x["id"], p, x)
            same += 1
            imputed += bool(x["imputed"])
            unknown += bool(x["unknown_level"])
    print(f"{model}: {same} of {len(want)} by-encounter answers equal training's route "
          f"({imputed} with imputed inputs, {unknown} with an unknown level)")
    assert imputed >= int(least) and unknown >= int(least), f"{model}: too few flagged rows"
PYEOF
        fail "the server's by-encounter answers differ from training's route"
    stop_server
}
server_compare "readmission mortality los" 0
ok "the server's by-encounter lookup gives training's answers for 300 rows of each model"

# hostile level texts (quotes, a backslash, dollar quotes) through both routes and the compiled SQL
sql "CREATE TABLE public.hostile AS SELECT md5(i::text)::uuid AS encounter_id,
     (ARRAY['plain', 'it''s', 'back\\slash', '\$\$dollar\$\$', 'E''x'''])[1 + (i % 5)] AS a,
     (i % 97)::float8 / 10 AS b, ((i * 7919) % 13 < 4 + (i % 5))::int AS y FROM generate_series(1, 3000) i"
assert_eq "$(sql "SELECT count(DISTINCT a) FILTER (WHERE strpos(a, chr(92)) > 0 OR strpos(a, chr(36) || chr(36)) > 0
                  OR strpos(a, chr(39)) > 0) FROM public.hostile")" 4 "the hostile levels are in the table"
assert_exit 0 px train --model hostile --table public.hostile --label y --features a,b --accept-failed-gates
"$PX_TEST_FEATURE_ENCODE" "$(px db url)" "$PROGNOS_HOME/registry/hostile/1" "$PROGNOS_HOME/signing.pub" \
    public.hostile y || fail "hostile levels: the routes or the compiled SQL differ"
ok "levels with quotes, a backslash and dollar quotes: identical design rows, compiled SQL equal to C"

# compares two dumps: same rows and texts, numbers to a relative tolerance
compare() { # a.csv b.csv tolerance what
    python3 - "$@" <<'PY' || fail "$4"
import csv, math, sys
a = list(csv.reader(open(sys.argv[1]))); b = list(csv.reader(open(sys.argv[2]))); tol = float(sys.argv[3])
assert len(a) == len(b), f"{len(a)} rows against {len(b)}"
assert a[0] == b[0], "columns differ"
worst = 0.0
for ra, rb in zip(a[1:], b[1:]):
    key = ra[:7]
    assert ra[:7] == rb[:7], f"row {key} against {rb[:7]}"
    for name, x, y in zip(a[0], ra, rb):
        if x == y: continue
        try: fx, fy = float(x), float(y)
        except ValueError: raise AssertionError(f"{key} {name}: {x!r} against {y!r}")
        d = abs(fx - fy) / max(abs(fx), abs(fy))
        worst = max(worst, d)
        assert d <= tol, f"{key} {name}: {x} against {y} (relative {d:.3g})"
print(f"{len(a) - 1} rows, largest relative difference {worst:.3g}")
PY
}
if checks_values; then
compare "$REF/results_ref.csv" "$WORK/sql.csv" 1e-9 "kpi.results differ from the C path's reference"
ok "kpi.results of the in-database run equal the reference of the C path ($(wc -l < "$WORK/sql.csv") lines) to 1e-9"
fi

# the average-facility reference: the shift computed from the compiled scores, applied in SQL
px kpi compute --force --reference facility --json > "$WORK/facility.json"
if checks_values; then
"$REF/dump.sh" "$U" > "$WORK/facility.csv"
compare "$REF/results_ref_facility.csv" "$WORK/facility.csv" 1e-9 "kpi.results (--reference facility) differ from the C path's"
python3 - "$WORK/facility.json" "$REF/shift_ref.json" <<'PY' || fail "reference shifts differ from the C path's"
import json, sys
got = json.load(open(sys.argv[1]))["reference_shift"]; want = json.load(open(sys.argv[2]))
for k, v in want.items():
    assert abs(got[k] - v) <= 1e-5 * abs(v), (k, got[k], v)   # the reference has 6 digits (%.6g)
PY
ok "--reference facility: shifts and kpi.results equal the C path's reference"
fi

# the C path, forced: its scores beside the compiled ones
px kpi compute --force --score-in-c --json > "$WORK/c.json"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert all(j["scored_in_c"].values()), j' "$WORK/c.json" ||
    fail "--score-in-c did not score in C: $(cat "$WORK/c.json")"
if checks_values; then
"$REF/dump.sh" "$U" > "$WORK/c.csv"
compare "$WORK/c.csv" "$WORK/sql.csv" 1e-9 "kpi.results of the C and SQL paths differ"
fi
sql "CREATE TABLE public.c_scores AS SELECT * FROM kpi.scored_c"
for m in readmission mortality los; do
    assert_eq "$(sql "SELECT count(*) FROM public.c_scores WHERE measure = '$m'")" \
        "$(sql "SELECT count(*) FROM features.$m WHERE $(case $m in readmission) echo readmit_30d;; mortality) echo death_30d;; los) echo los_days;; esac) IS NOT NULL")" \
        "C scores of every labelled row of features.$m"
done
px kpi compute --force --json > "$WORK/sql2.json"
worst=$(sql "SELECT count(*) || ' ' || coalesce(max(abs(p.predicted - c.predicted) / c.predicted), 0)
             FROM kpi.predictions p JOIN public.c_scores c USING (measure, encounter_id)")
read -r n rel <<< "$worst"
assert_eq "$n" "$(sql "SELECT count(*) FROM public.c_scores")" "every C score has its SQL score"
python3 -c "import sys; sys.exit(0 if float('$rel') <= 1e-12 else 1)" || fail "SQL and C scores differ by $rel (relative)"
ok "the compiled models' scores equal the C scores on all $n labelled rows (largest relative difference $rel)"

# registry sql: the function, run by PostgreSQL over the table
px registry sql readmission@1 > "$WORK/readmission.sql"
grep -q 'CREATE OR REPLACE FUNCTION scores."readmission_v1"' "$WORK/readmission.sql" || fail "registry sql: $(head -3 "$WORK/readmission.sql")"
psql -X -q -v ON_ERROR_STOP=1 "$(px db url)" -f "$WORK/readmission.sql"
args=$(sed -n 's/^CREATE OR REPLACE FUNCTION scores."readmission_v1"(\(.*\))$/\1/p' "$WORK/readmission.sql" |
    sed 's/ float8//g; s/ text//g')
[ -n "$args" ] || fail "registry sql: no argument list"
rel=$(sql "SELECT coalesce(max(abs(scores.readmission_v1($args) - c.predicted) / c.predicted), 1)
           FROM features.readmission JOIN public.c_scores c ON c.encounter_id = features.readmission.encounter_id
           AND c.measure = 'readmission'")
python3 -c "import sys; sys.exit(0 if float('$rel') <= 1e-12 else 1)" || fail "registry sql's function differs by $rel"
assert_exit 1 px registry sql nosuchmodel
assert_exit 2 px registry sql readmission@1 2
ok "registry sql: scores.readmission_v1 over features.readmission equals the C scores (relative $rel)"

# an SVM keeps the C path, and says so
# (--svm-max-rows 1500: what is checked is the SVM's route through kpi compute, not its
# fit; the default 10,000-row fit was two thirds of this test's CPU time)
assert_exit 0 px train --model los --algo svr --no-build --accept-failed-gates --svm-max-rows 1500
assert_eq "$(sql "SELECT (params->>'max_rows') || ' ' || (metrics->'fit'->>'svm_rows_used')
                  FROM registry.versions WHERE name = 'los' AND version = 2")" "1500 1500" "the SVM's row limit, recorded and used"
assert_exit 2 px train --model los --algo svr --svm-max-rows 1
assert_exit 0 px kpi compute --force --model-version los=2 --json
grep -q '"scored_in_c":{"readmission":false,"mortality":false,"los":true}' "$WORK/out" || fail "svr not scored in C: $(cat "$WORK/out")"
grep -q "los v2 scored in C (an SVM does not compile to SQL)" "$WORK/err" || fail "kpi compute did not say the SVM was scored in C: $(cat "$WORK/err")"
assert_exit 1 px registry sql los@2
grep -q "svr model cannot be compiled to SQL" "$WORK/err" || fail "registry sql of an SVM: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT count(*) FROM kpi.predictions WHERE measure = 'los' AND predicted IS NOT NULL")" \
    "$(sql "SELECT count(*) FROM kpi.scored_c WHERE measure = 'los'")" "the SVM's predictions come from kpi.scored_c"
ok "an svr model is scored in C and kpi compute says so"

# NULLs and a level training never saw: imputed and unknown-level inputs through the
# server's lookup and training's route alike (last: this changes features.readmission)
sql "UPDATE features.readmission SET age_years = NULL, admission_source = 'never seen in training'
     WHERE encounter_id IN (SELECT encounter_id FROM features.readmission WHERE readmit_30d IS NOT NULL
                            ORDER BY encounter_id LIMIT 400)"
"$PX_TEST_FEATURE_ENCODE" "$(px db url)" "$PROGNOS_HOME/registry/readmission/1" "$PROGNOS_HOME/signing.pub" \
    features.readmission readmit_30d "$WORK/expect_readmission.jsonl" || fail "rows with NULLs and unseen levels differ"
server_compare readmission 100
ok "rows with NULLs and an unseen level: the server's by-encounter answers equal training's route"

# Migrations 021 and 022 on a warehouse of the former schema (kpi.results a table whose rows
# carried their method in words and their run's batch ids): that table rebuilt from the view,
# 022's triggers and functions dropped, both migrations run again; every row of every run comes
# back unchanged, each method text once, the references checked by 022's triggers (no foreign key).
results_digest() { sql "SELECT count(*), md5(string_agg(t::text, E'\n' ORDER BY t::text)) FROM kpi.results t"; }
before=$(results_digest)
texts=$(sql "SELECT count(DISTINCT method) FROM kpi.results")
[ "$(sql "SELECT count(DISTINCT run_id) FROM kpi.results")" -ge 3 ] || fail "too few KPI runs to replay migration 021 on"
sql "BEGIN;
     CREATE TABLE kpi.results_former AS SELECT * FROM kpi.results;
     DROP FUNCTION kpi.result_rows_refs() CASCADE; DROP FUNCTION kpi.runs_cascade() CASCADE;
     DROP FUNCTION kpi.refuse_change() CASCADE;
     DROP VIEW kpi.latest_results; DROP VIEW kpi.results; DROP TABLE kpi.result_rows; DROP TABLE kpi.methods;
     ALTER TABLE kpi.results_former RENAME TO results;
     ALTER TABLE kpi.results ADD PRIMARY KEY (run_id, measure, period_kind, period, unit_type, unit);
     CREATE VIEW kpi.latest_results AS SELECT r.* FROM kpi.results r WHERE r.run_id = (SELECT max(run_id) FROM kpi.runs);
     DELETE FROM public.prognos_migrations WHERE version IN (21, 22);
     COMMIT"
assert_eq "$(sql "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kpi.runs'::regclass AND NOT tgisinternal")" 0 \
    "022's triggers on kpi.runs before the replay"
assert_eq "$(sql "SELECT relkind FROM pg_class WHERE oid = 'kpi.results'::regclass")" r "kpi.results a table again"
assert_exit 0 px db migrate
assert_eq "$(sql "SELECT relkind FROM pg_class WHERE oid = 'kpi.results'::regclass")" v "kpi.results a view after the migration"
assert_eq "$(results_digest)" "$before" "kpi.results after migration 021 ran on the former table"
assert_eq "$(sql "SELECT count(*) FROM kpi.methods")" "$texts" "method texts stored"
assert_eq "$(sql "SELECT count(*) FROM kpi.latest_results")" \
    "$(sql "SELECT count(*) FROM kpi.result_rows WHERE run_id = (SELECT max(run_id) FROM kpi.runs)")" "kpi.latest_results rows"
assert_eq "$(sql "SELECT count(*) FROM pg_constraint WHERE conrelid = 'kpi.result_rows'::regclass AND contype = 'f'")" 0 \
    "foreign keys of kpi.result_rows after 022"
assert_eq "$(sql "SELECT string_agg(tgrelid::regclass || ':' || tgname, ' ' ORDER BY tgrelid::regclass::text, tgname) FROM pg_trigger
                  WHERE tgrelid IN ('kpi.runs'::regclass, 'kpi.result_rows'::regclass, 'kpi.methods'::regclass)
                  AND NOT tgisinternal")" \
    "kpi.methods:methods_append_only kpi.methods:methods_no_truncate kpi.result_rows:result_rows_refs_insert kpi.result_rows:result_rows_refs_update kpi.runs:runs_cascade_delete kpi.runs:runs_cascade_truncate kpi.runs:runs_id_fixed" \
    "022's triggers after the replay"
assert_exit 3 px kpi compute
ok "migrations 021 and 022 move the former kpi.results unchanged ($(cut -d'|' -f1 <<<"$before") rows, $texts method texts) and check its references by trigger"
