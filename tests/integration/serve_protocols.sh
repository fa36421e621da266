#!/usr/bin/env bash
# serve_protocols.sh: the server's other protocols against real clients: the Open
# Inference Protocol V2 (infer equals /v1 predict on generated feature rows; the
# same checks, audit and metrics), HTTPS through libmicrohttpd's TLS with a
# certificate made here by openssl (curl verifies it), CORS (none allowed by
# default; a configured origin's preflight), and the OpenAPI document (validated
# against the OpenAPI 3.0 JSON Schema, every answer of the run checked against its schema).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
# The OpenAPI check uses Debian's python3-jsonschema and the OpenAPI 3.0 schema
# shipped in tests/fixtures/openapi (Debian 12 has no openapi-spec-validator).
OAPY=/usr/bin/python3
"$OAPY" -c 'import jsonschema' 2>/dev/null || fail "python3-jsonschema is missing (scripts/setup.sh installs it)"
setup_model 4000 21
READ=$(new_key read); PRED=$(new_key predict)
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 400) t" >"$WORK/rows.json"
ANS="$WORK/answers.jsonl"; : >"$ANS"

assert_exit 1 px serve --listen 127.0.0.1:0 --tls-cert /nonexistent
grep -q -- "--tls-cert and --tls-key go together" "$WORK/err" || fail "--tls-cert alone: $(cat "$WORK/err")"
assert_exit 1 px serve --listen 127.0.0.1:0 --cors-origins "ehr.example.org"
grep -q "is not an origin" "$WORK/err" || fail "a bad origin: $(cat "$WORK/err")"
assert_exit 2 px serve --tls-key
ok "serve: TLS and CORS usage errors"

# ---- plain HTTP: V2 against /v1, CORS off by default, OpenAPI ------------------------------
start_server --poll-ms 300
wait_key "$READ"
metric() { curl -s -H "Authorization: Bearer $READ" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
before=$(sql "SELECT count(*) FROM audit.predictions")
"$PY" "$HERE/serve_protocols.py" v2 "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 300 --answers "$ANS"
"$PY" "$HERE/serve_protocols.py" cors "$URL" --read "$READ" --no-origins
# every V2 infer is audited and counted as a prediction
v2ok=$(metric 'prognos_http_requests_total{route="v2_infer",status="200"}')
v1ok=$(metric 'prognos_http_requests_total{route="predict",status="200"}')
[ "${v2ok:-0}" -ge 10 ] || fail "V2 infer answers counted: ${v2ok:-0}"
audited() { [ "$(sql "SELECT count(*) FROM audit.predictions")" -ge "$1" ]; }
wait_for "the audit rows of V2 and /v1 answers" audited $((before + v2ok + v1ok))
assert_eq "$(sql "SELECT count(*) FROM audit.predictions")" $((before + v2ok + v1ok)) "audit rows vs answered /v1 + V2"
[ "$(metric 'prognos_http_requests_total{route="v2_infer",status="400"}')" -ge 8 ] || fail "V2 refusals not counted"
ok "V2 infer: audited and counted like /v1 ($v2ok answers)"
stop_server

# ---- HTTPS with a certificate made here; CORS with an allowed origin -------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
start_server --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" --cors-origins "https://ehr.example.org, http://localhost:3000"
HTTPS="https://127.0.0.1:$PORT"
code=$(curl -s --cacert "$WORK/tls.crt" -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $READ" "$HTTPS/v1/models")
assert_eq "$code" 200 "GET /v1/models over HTTPS (certificate verified by curl)"
grep -q '"readmission"' "$WORK/body" || fail "HTTPS body: $(head -c 300 "$WORK/body")"
row=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; print(json.dumps(r))' "$WORK/rows.json")
code=$(curl -s --cacert "$WORK/tls.crt" -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $PRED" \
    -H "Content-Type: application/json" --data "{\"inputs\":[{\"name\":\"age_years\",\"datatype\":\"FP64\",\"shape\":[1],\"data\":[70]}]}" \
    "$HTTPS/v2/models/readmission/infer")
assert_eq "$code" 400 "V2 infer over HTTPS with inputs missing"
grep -q '"code":"missing_field"' "$WORK/body" || fail "HTTPS V2 body: $(cat "$WORK/body")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$HTTPS/healthz" || true)
[ "$code" = 000 ] || fail "an unverified certificate was accepted by curl ($code)"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" || true)
[ "$code" != 200 ] || fail "plain HTTP answered on the HTTPS port"
assert_eq "$(curl -s --cacert "$WORK/tls.crt" -o /dev/null -w '%{http_code}' "$HTTPS/healthz")" 200 "HTTPS after a plain-HTTP attempt"
grep -q "listening on 127.0.0.1:$PORT (https)" "$PROGNOS_HOME/log/prognos.log" || fail "the log does not say https"
ok "HTTPS: curl verifies the certificate made by openssl; plain HTTP is not answered"
# CORS through the HTTPS port (the Python client speaks HTTP: check with curl)
h=$(curl -s --cacert "$WORK/tls.crt" -D - -o /dev/null -X OPTIONS -H "Origin: https://ehr.example.org" \
    -H "Access-Control-Request-Method: POST" "$HTTPS/v2/models/readmission/infer")
grep -qi "^access-control-allow-origin: https://ehr.example.org" <<<"$h" || fail "HTTPS preflight: $h"
grep -qi "^access-control-allow-methods: POST" <<<"$h" || fail "HTTPS preflight methods: $h"
stop_server
start_server --cors-origins "https://ehr.example.org"
wait_key "$READ"
"$PY" "$HERE/serve_protocols.py" cors "$URL" --read "$READ" --answers "$ANS"
ok "CORS: an allowed origin's preflight and requests; a foreign one gets no CORS header"

"$OAPY" "$HERE/serve_protocols.py" openapi "$URL" --answers "$ANS" --min-answers 40
stop_server
ok "OpenAPI: the document validates and describes every answer of the run"
