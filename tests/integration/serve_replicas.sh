#!/usr/bin/env bash
# serve_replicas.sh: two stateless `prognos serve` replicas on one warehouse behind
# the shipped nginx configuration (deploy/nginx/, its PROGNOS_REPLICA line enabled).
# A bounded load through nginx (no time limit decides anything): every request is
# answered 200, both replicas answer, and the answers equal each replica's own for
# the same instances. A promotion is picked up by both replicas within two of their
# polls (waited for by counting polls, not seconds): afterwards every answer through
# nginx names v2, again identical on both. After both stop, the audit trail holds
# exactly one row per answered request, the request ids and versions the clients saw.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || fail "nginx is not installed (scripts/setup.sh installs it)"
NGX="$WORK/nginx"
S1="" S2=""
replicas_cleanup() {
    [ -s "$NGX/logs/nginx.pid" ] && kill -QUIT "$(cat "$NGX/logs/nginx.pid")" 2>/dev/null
    for p in $S1 $S2; do kill -KILL "$p" 2>/dev/null; done
    serve_cleanup
}
CLEANUP_HOOKS+=(replicas_cleanup)

setup_model 4000 21
px generate --patients 3000 --seed 22 --out "$WORK/b" >/dev/null
fresh_ids "$WORK/b" N
px etl load --format canonical --source "$WORK/b" --quiet >/dev/null
px train --model readmission --accept-failed-gates --hier-boot 0 >/dev/null
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'readmission' AND alias = 'champion'")" 1 "champion before"
READ=$(new_key read); PRED=$(new_key predict replicas)
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 40) t" >"$WORK/rows.json"

# two replicas, each on its own port, polling every 200 ms
start_replica() { # n -> sets URLn, PORTn, PIDn
    rm -f "$WORK/port$1"
    "$PROGNOS_BIN" serve --listen 127.0.0.1:0 --port-file "$WORK/port$1" --poll-ms 200 >"$WORK/serve$1.log" 2>&1 &
    eval "S$1=$!"
}
replica_up() { [ -s "$WORK/port$1" ] || { kill -0 "$2" 2>/dev/null || { cat "$WORK/serve$1.log" >&2; fail "replica $1 did not start"; }; false; }; }
start_replica 1
start_replica 2
wait_for "replica 1's port" replica_up 1 "$S1"
wait_for "replica 2's port" replica_up 2 "$S2"
P1=$(cat "$WORK/port1"); P2=$(cat "$WORK/port2")
U1="http://127.0.0.1:$P1"; U2="http://127.0.0.1:$P2"
URL=$U1; wait_key "$READ"; wait_key "$PRED"
URL=$U2; wait_key "$READ"; wait_key "$PRED"
"$PY" -c '
import json, sys
sys.path.insert(0, sys.argv[4])
import serve_client as sc
feats, _ = sc.schema(sys.argv[1], sys.argv[2])
print(json.dumps({"instances": sc.instances_from_rows(json.load(open(sys.argv[3])), feats)}))
' "$U1" "$READ" "$WORK/rows.json" "$PROGNOS_SRC/tests/integration" >"$WORK/body.json"

# nginx: the shipped files, the marked lines pointed at this test's ports
source "$PROGNOS_SRC/tests/integration/nginx_shipped.sh"
nginx_shipped_start "$P1" "$P2"

metric() { curl -s -H "Authorization: Bearer $READ" "$1/metrics" | awk -v k="$2" '$1 == k {print $2}'; }
answered() { metric "$1" 'prognos_http_requests_total{route="predict",status="200"}'; }
served_version() { curl -s "$1/readyz" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["models"][0]["version"])'; }

# Sends N requests through nginx from 4 threads (each a kept-alive TLS connection)
# and through each replica directly; checks every answer and appends
# "request_id version" lines to $WORK/seen.txt.
load() { # n expected-version
    "$PY" - "$NPORT" "$P1" "$P2" "$NGX/conf/prognos.crt" "$PRED" "$WORK/body.json" "$1" "$2" "$WORK/seen.txt" <<'PYEOF'
import http.client, json, ssl, sys, threading
nport, p1, p2, crt, key, bodyf, n, want, seen = sys.argv[1:10]
n, want = int(n), int(want)
body = open(bodyf, "rb").read()
H = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
ctx = ssl.create_default_context(cafile=crt)

def predict(conn):
    conn.request("POST", "/v1/models/readmission/predict", body=body, headers=H)
    r = conn.getresponse()
    return r.status, r.read(), r.getheader("X-Request-Id")

direct = {}
for p in (p1, p2):
    st, b, rid = predict(http.client.HTTPConnection("127.0.0.1", int(p), timeout=30))
    assert st == 200, (p, st, b[:300])
    doc = json.loads(b)
    direct[p] = (doc["version"], doc["predictions"])
    with open(seen, "a") as f:
        f.write(f"{doc['request_id']} {doc['version']}\n")
assert direct[p1] == direct[p2], "the two replicas answer the same instances differently"
assert direct[p1][0] == want, f"replicas serve v{direct[p1][0]}, expected v{want}"

out, errors, lock = [], [], threading.Lock()
def worker(k):
    c = http.client.HTTPSConnection("localhost", int(nport), context=ctx, timeout=30)
    for i in range(k):
        try:
            st, b, rid = predict(c)
        except Exception as ex:  # a dropped connection is a failed request
            with lock:
                errors.append(repr(ex))
            c = http.client.HTTPSConnection("localhost", int(nport), context=ctx, timeout=30)
            continue
        with lock:
            out.append((st, b, rid))
ts = [threading.Thread(target=worker, args=(n // 4,)) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, f"{len(errors)} requests failed: {errors[:3]}"
assert len(out) == n - n % 4, len(out)
bad = [(st, b[:200]) for st, b, _ in out if st != 200]
assert not bad, f"{len(bad)} answers not 200: {bad[:3]}"
docs = [json.loads(b) for _, b, _ in out]
wrong = [d["version"] for d in docs if d["version"] != want]
assert not wrong, f"{len(wrong)} answers name another version than v{want}: {wrong[:5]}"
differ = [d for d in docs if d["predictions"] != direct[p1][1]]
assert not differ, f"{len(differ)} answers through nginx differ from the replicas' own"
assert all(d["request_id"] == rid for d, (_, _, rid) in zip(docs, out)), "X-Request-Id differs from the body's"
with open(seen, "a") as f:
    for d in docs:
        f.write(f"{d['request_id']} {d['version']}\n")
print(f"ok - {len(docs)} predictions through nginx, all 200 and v{want}, equal to each replica's own answer")
PYEOF
}

a1=$(answered "$U1"); a2=$(answered "$U2")
load 400 1
b1=$(answered "$U1"); b2=$(answered "$U2")
[ $((b1 - a1)) -gt 1 ] && [ $((b2 - a2)) -gt 1 ] ||
    fail "nginx did not spread the load: replica 1 answered $((b1 - a1)), replica 2 $((b2 - a2))"
assert_eq $((b1 - a1 + b2 - a2)) 402 "answers counted by the two replicas"
ok "both replicas answered (replica 1: $((b1 - a1)), replica 2: $((b2 - a2)))"

# promotion: a poll that starts after the promotion loads v2. Counted once the promotion
# command has returned (it can take longer than several poll intervals on a loaded
# machine), the second poll completed after that is one: the first may have started
# before the commit
px registry promote readmission 2 --reason "serve_replicas test" >/dev/null
q1=$(metric "$U1" prognos_polls_total); q2=$(metric "$U2" prognos_polls_total)
polls_at_least() { [ "$(metric "$1" prognos_polls_total)" -ge "$2" ]; }
wait_for "two polls of replica 1 after the promotion" polls_at_least "$U1" $((q1 + 2))
wait_for "two polls of replica 2 after the promotion" polls_at_least "$U2" $((q2 + 2))
assert_eq "$(served_version "$U1")" 2 "replica 1's version two polls after the promotion"
assert_eq "$(served_version "$U2")" 2 "replica 2's version two polls after the promotion"
ok "the promotion was picked up by both replicas within two poll intervals"

c1=$(answered "$U1"); c2=$(answered "$U2")
load 400 2
d1=$(answered "$U1"); d2=$(answered "$U2")
[ $((d1 - c1)) -gt 1 ] && [ $((d2 - c2)) -gt 1 ] ||
    fail "after the promotion nginx did not spread the load: $((d1 - c1)) and $((d2 - c2))"

# both stop (SIGTERM drains their audit queues); the audit trail is complete
kill -QUIT "$(cat "$NGX/logs/nginx.pid")"
for p in $S1 $S2; do kill -TERM "$p"; done
for p in $S1 $S2; do wait "$p" || fail "a replica exited with $?"; done
S1="" S2=""
sql "SELECT request_id || ' ' || version FROM audit.predictions WHERE key_id = (SELECT key_id FROM serve.api_keys WHERE name = 'replicas')" \
    | sort >"$WORK/audit.txt"
sort "$WORK/seen.txt" >"$WORK/seen.sorted"
assert_eq "$(wc -l <"$WORK/seen.sorted")" 804 "answers the clients saw"
assert_eq "$(sort -u "$WORK/seen.sorted" | wc -l)" 804 "distinct request ids across the replicas"
diff "$WORK/seen.sorted" "$WORK/audit.txt" >"$WORK/audit.diff" ||
    fail "the audit trail differs from the answers ($(wc -l <"$WORK/audit.diff") lines): $(head -5 "$WORK/audit.diff")"
ok "audit: one row per answered request from both replicas, with the version each answer named"
