#!/usr/bin/env bash
# serve_http.sh: the prediction server against a real HTTP client (serve_client.py,
# http.client and raw sockets): every route and error path as JSON, the hostile-input
# corpus, slow clients and connection limits; predictions by encounter id (the
# plaintext id is never echoed, logged or stored); every answered prediction is in
# audit.predictions; with the database down predictions are held for audit up to the
# queue's size, then refused with 503 (never answered unaudited), and the backlog is
# written when the database is back.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
setup_model 4000 21
READ=$(new_key read); PRED=$(new_key predict cds); ADMIN=$(new_key admin)
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 2000) t" >"$WORK/rows.json"

assert_exit 2 px serve --threads 0
assert_exit 2 px serve --bogus
assert_exit 2 px serve --audit-flush 0
grep -q -- "--audit-flush needs a number from 1 to 60000" "$WORK/err" || fail "--audit-flush 0: $(cat "$WORK/err")"
assert_exit 2 px serve --no-fast-parse=1
assert_exit 1 px serve --listen nonsense
assert_exit 1 px serve --models nosuch --listen 127.0.0.1:0
grep -q "no model to serve" "$WORK/err" || fail "serving no model: $(cat "$WORK/err")"
ok "serve usage errors"

start_server --max-per-ip 40 --request-timeout 1500 --idle-timeout 3 --poll-ms 300
wait_key "$READ"
"$PY" "$CLIENT" routes "$URL" --read "$READ" --predict "$PRED" --admin "$ADMIN" --rows "$WORK/rows.json" \
    --max-per-ip 40 --request-timeout-ms 1500 --idle-timeout 3

# encounter ids: the ETL's pseudonym (HMAC-SHA256 under the key) finds the feature row
"$PY" - "$PROGNOS_HOME/secret.key" "$WORK/a/encounters.csv" >"$WORK/pseudo.sql" <<'PYEOF'
import csv, hashlib, hmac, sys
key = bytes.fromhex(open(sys.argv[1]).read().strip())
ids = [r["encounter_id"] for r in csv.DictReader(open(sys.argv[2]))][:3000]
vals = ",".join(f"('{i}','{hmac.new(key, f'encounter:{i}'.encode(), hashlib.sha256).hexdigest()[:32]}')" for i in ids)
print(f"SELECT json_agg(x) FROM (SELECT json_build_object('id', m.id, 'row', to_jsonb(f)) AS x FROM (VALUES {vals})"
      f" m(id, p) JOIN features.readmission f ON f.encounter_id = m.p::uuid ORDER BY m.id LIMIT 25) s")
PYEOF
psql -X -q -At -v ON_ERROR_STOP=1 "$(px db url)" -f "$WORK/pseudo.sql" >"$WORK/pairs.json"
n=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/pairs.json")
[ "$n" -ge 10 ] || fail "only $n encounters of the CSV are in features.readmission"
"$PY" "$CLIENT" encounter "$URL" --read "$READ" --predict "$PRED" --pairs "$WORK/pairs.json" --unknown "E999999999"
ids=$("$PY" -c 'import json,sys; print("\n".join(p["id"] for p in json.load(open(sys.argv[1]))))' "$WORK/pairs.json")
for f in "$PROGNOS_HOME/log/prognos.log" "$WORK/serve.log"; do
    ! grep -qF -e "$ids" -e "E999999999" "$f" || fail "a plaintext encounter id is in $f"
done
dump=$(sql "SELECT string_agg(t::text, ' ') FROM audit.predictions t")$(sql "SELECT coalesce(string_agg(t::text, ' '), '') FROM audit.events t")
! grep -qF -e "$ids" <<<"$dump" || fail "a plaintext encounter id is in the audit tables"
ok "no plaintext encounter id in logs or audit tables"

# kpi compute with one risk model: readmission adjusted, the two measures without a model
# or a feature table skipped, and the message says what to do
assert_exit 0 px kpi compute --period year --json
assert_eq "$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["models"], d["skipped"], d["crude"])' "$WORK/out")" \
    "{'readmission': 1, 'mortality': 0, 'los': 0} ['mortality', 'los'] []" "kpi compute with the readmission model only"
grep -q "los not computed: no champion of risk model 'los' (train it: prognos train --model los), and no feature table features.los" \
    "$WORK/err" || fail "kpi compute does not say why los is skipped: $(cat "$WORK/err")"
ok "kpi compute with one of three risk models: the other two skipped, and why"

# /v1/kpi: the newest run of prognos kpi compute, filtered
px train --model mortality --accept-failed-gates --hier-boot 0 >/dev/null
px train --model los --accept-failed-gates --hier-boot 0 >/dev/null
px kpi compute --period year >/dev/null
kpi() { curl -s -H "Authorization: Bearer $READ" "$URL/v1/kpi?$1"; }
kpi "measure=readmission&period=year&unit=system" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
k = d["kpis"]
assert d["run_id"] >= 1 and k, d
assert all(r["measure"] == "readmission" and r["period_kind"] == "year" and r["unit_type"] == "system" for r in k), k
assert all(r["model_name"] == "readmission" and r["model_version"] == 1 for r in k), k
assert any(r["oe"] is not None and r["expected"] > 0 for r in k), k'
kpi "unit=facility&limit=3" | "$PY" -c '
import json, sys
k = json.load(sys.stdin)["kpis"]
assert len(k) == 3 and all(r["unit_type"] == "facility" for r in k), k'
assert_eq "$(kpi "measure=nosuch" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["kpis"]))')" 0 "an unknown measure"
ok "/v1/kpi: the newest KPI run by measure, period and unit"

# every answered prediction is audited: audit.predictions = predict answers with 200
metric() { curl -s -H "Authorization: Bearer $READ" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
answered=$(metric 'prognos_http_requests_total{route="predict",status="200"}')
audited() { [ "$(sql "SELECT count(*) FROM audit.predictions")" -ge "$1" ]; }
wait_for "the audit rows of the answered predictions" audited "$answered"
assert_eq "$(sql "SELECT count(*) FROM audit.predictions")" "$answered" "audit rows vs answered predictions"
assert_eq "$(sql "SELECT count(DISTINCT request_id) FROM audit.predictions")" "$answered" "distinct request ids"
pred_id=$(cut -d_ -f2 <<<"$PRED")
[ "$(sql "SELECT count(*) FROM audit.predictions WHERE key_id = '$pred_id' AND model = 'readmission' AND version = 1")" -gt 0 ] \
    || fail "audit rows do not name the predict key and model version"
[ "$(sql "SELECT sum(by_encounter) FROM audit.predictions")" -ge "$n" ] || fail "by_encounter not counted"
ok "every answered prediction ($answered) is in audit.predictions"

# the one-pass reader took the plain bodies; its answers are compared with cJSON's below
fast=$(metric prognos_predict_fast_parsed_total)
[ "${fast:-0}" -gt 0 ] || fail "no predict body was read by the one-pass reader"
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 60 --expect-200 \
    --answers "$WORK/answers-fast.jsonl" >/dev/null
[ "$(metric prognos_predict_fast_parsed_total)" -ge $((fast + 30)) ] || fail "the one-pass reader took under half of 60 bodies"
ok "the one-pass reader read $fast of the bodies so far"

# revoked keys stop working within the poll interval
kid=$(cut -d_ -f2 <<<"$ADMIN")
px apikey revoke "$kid" >/dev/null
assert_exit 1 px apikey revoke "$kid"
# a poll that starts after the revocation drops the key: two completed polls later
polls_at_least() { [ "$(metric prognos_polls_total)" -ge "$1" ]; }
p0=$(metric prognos_polls_total)
wait_for "two polls after the revocation" polls_at_least $((p0 + 2))
code=$(curl -s -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $ADMIN" "$URL/v1/models")
assert_eq "$code" 401 "a revoked key"
grep -q '"unauthorized"' "$WORK/body" || fail "revoked key body: $(cat "$WORK/body")"
px apikey list --json | "$PY" -c 'import json,sys; k=json.load(sys.stdin); assert all("key" not in x and "secret" not in str(x) for x in k), k; assert len(k)==3, k'
! sql "SELECT key_id || secret_sha256 || name FROM serve.api_keys" | grep -qF -e "${PRED:17}" || fail "a secret is stored"
ok "keys: revocation, list shows no secrets"
stop_server

# auditing down: records are held (queue of 5), then predict answers 503; /readyz says
# so; when the database is back the backlog is written and predictions resume
start_server --audit-queue 5 --poll-ms 200
before=$(sql "SELECT count(*) FROM audit.predictions")
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 3 --expect-200 >/dev/null
wait_for "3 audit rows" audited $((before + 3))
px db stop >/dev/null
out=$("$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 8 || true)
assert_eq "$(tail -1 <<<"$out")" 5 "predictions answered while the database is down (queue of 5)"
grep -c "503 audit_unavailable" <<<"$out" | grep -qx 3 || fail "the 3 over the queue are not 503 audit_unavailable: $out"
code=$(curl -s -o "$WORK/body" -w '%{http_code}' "$URL/readyz")
assert_eq "$code" 503 "/readyz with a full audit queue"
grep -q '"not_ready"' "$WORK/body" || fail "readyz body: $(cat "$WORK/body")"
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" 200 "/healthz while the database is down"
px db start >/dev/null
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" = 200 ]; }
wait_for "/readyz after the database is back" ready
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" 200 "/readyz after the database is back"
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 2 --expect-200 >/dev/null
wait_for "the held audit rows" audited $((before + 10))
assert_eq "$(sql "SELECT count(*) FROM audit.predictions")" $((before + 10)) "audit rows after the outage (3 + 5 held + 2)"
stop_server
ok "auditing down: held up to the queue, then 503; nothing answered unaudited; backlog written"

# --no-fast-parse: every body through cJSON, and the same answers as the one-pass reader's
start_server --no-fast-parse
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 60 --expect-200 \
    --answers "$WORK/answers-cjson.jsonl" >/dev/null
metric() { curl -s -H "Authorization: Bearer $READ" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
assert_eq "$(metric prognos_predict_fast_parsed_total)" 0 "bodies read in one pass with --no-fast-parse"
assert_eq "$(wc -l <"$WORK/answers-cjson.jsonl")" 60 "answers with --no-fast-parse"
cmp -s "$WORK/answers-fast.jsonl" "$WORK/answers-cjson.jsonl" ||
    fail "the one-pass reader and cJSON answered differently: $(diff "$WORK/answers-fast.jsonl" "$WORK/answers-cjson.jsonl" | head -4)"
stop_server
ok "--no-fast-parse: cJSON for every body, the same 60 answers"
