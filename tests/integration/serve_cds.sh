#!/usr/bin/env bash
# serve_cds.sh: the CDS Hooks 2.0 services against a real client. The trained
# warehouse's data is written again as FHIR R4 (`generate --format fhir`, the same
# seed), and for generated stays a hook call is built from their FHIR resources
# (the prefetch: Patient, the Encounter, the patient's Conditions, Encounters and
# Procedures): every card's risk must equal /v1 predict on the same stay's feature
# row (readmission at encounter-discharge; mortality and length of stay at
# patient-view). Client JWTs are made with keys openssl generates here (ES384 and
# RS384); a call without a valid one is refused with 401, a replayed jti too. Then
# the warehouse fallback, 412, 400s, feedback in serve.cds_feedback (the free-text
# comment not stored), each card in the audit trail under its uuid, the metrics,
# and no patient identifier in the logs.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
setup_model 4000 21
px train --model mortality --accept-failed-gates --hier-boot 0 >/dev/null
px train --model los --accept-failed-gates --hier-boot 0 >/dev/null
px generate --patients 4000 --seed 21 --out "$WORK/fhir" --format fhir >/dev/null
cmp -s "$WORK/a/truth.json" "$WORK/fhir/truth.json" || fail "the FHIR files are not the warehouse's data"
READ=$(new_key read); PRED=$(new_key predict)

# the clients' keys, made by openssl; the JWKS the server trusts; a key it does not
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$WORK/es.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rs.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$WORK/other.pem" 2>/dev/null
openssl pkey -in "$WORK/es.pem" -pubout -outform DER -out "$WORK/es.der"
n_hex=$(openssl rsa -in "$WORK/rs.pem" -noout -modulus 2>/dev/null | cut -d= -f2)
"$PY" - "$WORK/es.der" "$n_hex" >"$WORK/jwks.json" <<'PYEOF'
import base64, json, sys
b64u = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
spki = open(sys.argv[1], "rb").read()
pt = spki[-97:]  # a P-384 SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y
assert pt[0] == 4, pt[:4]
n = bytes.fromhex(sys.argv[2])
print(json.dumps({"keys": [
    {"kty": "EC", "crv": "P-384", "kid": "ehr-es", "use": "sig", "alg": "ES384", "x": b64u(pt[1:49]), "y": b64u(pt[49:])},
    {"kty": "RSA", "kid": "ehr-rs", "use": "sig", "alg": "RS384", "n": b64u(n), "e": b64u((65537).to_bytes(3, "big"))}]}))
PYEOF
assert_exit 1 px serve --listen 127.0.0.1:0 --cds-jwks "$WORK/nosuch.json"
echo '{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA"}]}' >"$WORK/bad.jwks"
assert_exit 1 px serve --listen 127.0.0.1:0 --cds-jwks "$WORK/bad.jwks"
grep -q "P-384" "$WORK/err" || fail "a P-256 key: $(cat "$WORK/err")"
ok "serve: a missing or unusable JWKS is refused at start"

start_server --cds-jwks "$WORK/jwks.json" --cds-issuers "https://ehr.example.org" --poll-ms 300
wait_key "$READ"

# the stays: prefetches from the FHIR files; the feature rows of the same stays (by
# the ETL's pseudonym of the FHIR Encounter.id) as /v1 instances of each model
for m in readmission mortality los; do
    sql "SELECT json_object_agg(encounter_id, to_jsonb(f)) FROM features.$m f" >"$WORK/rows-$m.json"
done
"$PY" - "$WORK" "$PROGNOS_HOME/secret.key" "$URL" "$READ" >"$WORK/stays.ndjson" <<'PYEOF'
import hashlib, hmac, json, re, sys, urllib.request
from collections import defaultdict
w, keyfile, url, read = sys.argv[1:5]
key = bytes.fromhex(open(keyfile).read().strip())
def pseudo(v):
    h = hmac.new(key, f"encounter:{v}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
def inputs(m):
    req = urllib.request.Request(f"{url}/v1/models/{m}", headers={"Authorization": "Bearer " + read})
    return [f["name"] for f in json.load(urllib.request.urlopen(req))["serving"]["schema"]["features"]]
rows = {m: json.load(open(f"{w}/rows-{m}.json")) for m in ("readmission", "mortality", "los")}
names = {m: inputs(m) for m in rows}
load = lambda t: [json.loads(l) for l in open(f"{w}/fhir/{t}.ndjson")]
pat = {p["id"]: p for p in load("Patient")}
# the lines of each patient's resources, parsed only for the patients looked at (the
# first few of 4,000: parsing all 130,000 resources was most of this test's CPU time)
subject = re.compile(r'"subject":\{"reference":"Patient/([^"]+)"\}')
lines = defaultdict(lambda: defaultdict(list))
for t in ("Encounter", "Condition", "Procedure"):
    for l in open(f"{w}/fhir/{t}.ndjson"):
        lines[subject.findall(l)[0]][t].append(l)
class Parsed(dict):
    def __missing__(self, pid):
        g = self[pid] = defaultdict(list, {t: [json.loads(l) for l in ls] for t, ls in lines[pid].items()})
        for t, rs in g.items():   # the line's subject is the resource's
            assert all(r["subject"]["reference"] == "Patient/" + pid for r in rs), (pid, t)
        return g
by = Parsed()
bundle = lambda rs: {"resourceType": "Bundle", "type": "searchset", "total": len(rs),
                     "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in rs]}
k = 0
for pid in sorted(lines):
    g = by[pid]
    for e in g["Encounter"]:
        p = pseudo(e["id"])
        have = {m: {n: (int(v) if isinstance(v, bool) else v) for n, v in ((n, rows[m][p].get(n)) for n in names[m])}
                for m in rows if p in rows[m]}
        if "readmission" not in have or len(have) < 3:
            continue
        wrap = bundle if k % 2 else (lambda rs: rs)
        pf = {"patient": pat[pid], "encounter": e, "encounters": wrap(g["Encounter"]),
              "conditions": wrap(g["Condition"]), "procedures": wrap(g["Procedure"])}
        print(json.dumps({"patient_id": pid, "encounter_id": e["id"], "prefetch": pf, "rows": have}))
        k += 1
        if k == 24:
            sys.exit(0)
PYEOF
[ "$(wc -l <"$WORK/stays.ndjson")" -ge 20 ] || fail "only $(wc -l <"$WORK/stays.ndjson") stays in all three feature tables"

"$PY" "$HERE/serve_protocols.py" cds "$URL" --read "$READ" --predict "$PRED" --stays "$WORK/stays.ndjson" \
    --es-key "$WORK/es.pem" --rs-key "$WORK/rs.pem" --other-key "$WORK/other.pem" --cards-out "$WORK/cards.json" \
    --answers "$WORK/answers.jsonl"

# feedback: stored, the comment not; counted
assert_eq "$(sql "SELECT count(*) FROM serve.cds_feedback")" 2 "feedback rows"
assert_eq "$(sql "SELECT string_agg(outcome || ':' || coalesce(override_code, '-') || ':' || comment_given, ',' ORDER BY feedback_id) FROM serve.cds_feedback")" \
    "accepted:-:false,overridden:not-relevant:true" "feedback outcomes"
! sql "SELECT t::text FROM serve.cds_feedback t" | grep -q "Jane" || fail "a feedback comment was stored"
iss_hash=$(printf '%s' "https://ehr.example.org" | sha256sum | cut -c1-12)
assert_eq "$(sql "SELECT DISTINCT client FROM serve.cds_feedback")" "jwt:$iss_hash" "feedback client"
metric() { curl -s -H "Authorization: Bearer $READ" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
assert_eq "$(metric 'prognos_cds_feedback_total{outcome="accepted"}')" 1 "accepted feedback metric"
assert_eq "$(metric 'prognos_cds_feedback_total{outcome="overridden"}')" 1 "overridden feedback metric"
cards=$(metric prognos_cds_cards_total)
[ "$cards" -ge 70 ] || fail "cards counted: $cards"
[ "$(metric prognos_cds_jwt_refused_total)" -ge 12 ] || fail "JWT refusals counted: $(metric prognos_cds_jwt_refused_total)"
[ "$(metric prognos_cds_warehouse_total)" -ge 1 ] || fail "warehouse cards not counted"
ok "feedback stored (no comment text) and counted; $cards cards counted"

# every card is a prediction in the audit trail, under its uuid, by the client's issuer
audited() { [ "$(sql "SELECT count(*) FROM audit.predictions WHERE key_id = '$iss_hash'")" -ge "$1" ]; }
wait_for "the cards' audit rows" audited "$cards"
assert_eq "$(sql "SELECT count(*) FROM audit.predictions WHERE key_id = '$iss_hash'")" "$cards" "audited cards"
for u in $("$PY" -c 'import json,sys; print(" ".join(c["uuid"] for c in json.load(open(sys.argv[1]))))' "$WORK/cards.json"); do
    assert_eq "$(sql "SELECT count(*) FROM audit.predictions WHERE request_id = replace('$u', '-', '')")" 1 "the audit row of card $u"
done
assert_eq "$(sql "SELECT count(*) FROM serve.cds_feedback f JOIN audit.predictions a ON a.request_id = replace(f.card_uuid::text, '-', '')")" 2 \
    "feedback joined to the audit trail"
# drift-counted like predictions: the monitors saw the cards
drift_n=$(curl -s -H "Authorization: Bearer $READ" "$URL/v1/drift" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(sum(m["open_window_n"] + m["windows_tested"] for m in d["monitors"] if m["model"] in ("mortality", "los")))')
[ "$drift_n" -ge 20 ] || fail "the mortality and los monitors saw $drift_n instances"
ok "every card audited under its uuid ($cards) and drift-counted"

# no patient or encounter identifier in the logs
ids=$("$PY" -c 'import json,sys; print("\n".join(x for s in map(json.loads, open(sys.argv[1])) for x in (s["encounter_id"], s["patient_id"])))' "$WORK/stays.ndjson")
[ "$(wc -l <<<"$ids")" -ge 40 ] || fail "the ids to look for: $ids"
for f in "$PROGNOS_HOME/log/prognos.log" "$WORK/serve.log"; do
    ! grep -qwF -e "$ids" "$f" || fail "a patient or encounter id is in $f"
done
ok "no patient or encounter id in the logs"
stop_server

# without --cds-jwks a predict key calls the services (behind a gateway that checks the EHR)
start_server --poll-ms 300
wait_key "$READ"
body=$("$PY" -c 'import json,sys; s=json.loads(open(sys.argv[1]).readline()); print(json.dumps({"hook":"encounter-discharge","hookInstance":"x","context":{"patientId":s["patient_id"],"encounterId":s["encounter_id"]},"prefetch":s["prefetch"]}))' "$WORK/stays.ndjson")
code=$(curl -s -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $PRED" -H "Content-Type: application/json" \
    --data "$body" "$URL/cds-services/readmission-risk")
assert_eq "$code" 200 "a CDS call with a predict key and no JWKS"
grep -q '"cards":\[{' "$WORK/body" || fail "no card: $(head -c 300 "$WORK/body")"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $READ" -H "Content-Type: application/json" \
    --data "$body" "$URL/cds-services/readmission-risk")
assert_eq "$code" 403 "a CDS call with a read key"
stop_server
ok "without a JWKS the CDS services take a predict key"
