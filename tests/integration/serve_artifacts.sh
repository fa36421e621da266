#!/usr/bin/env bash
# serve_artifacts.sh: the server loads only what the registry registered.
# - A model.bin edited so that it still parses (intercept + 2.0, its checksum line
#   recomputed), its digest updated in manifest.json and the manifest re-signed with
#   this installation's own signing key: `registry verify` refuses it, and so must
#   the server, at start and at reload (the digests recorded in registry.versions
#   differ), while the version it already serves keeps answering as before.
# - A FIFO in place of manifest.json: `registry verify`, the server's start and its
#   reload are refused promptly (no open(2) that waits for a writer), and while the
#   reload is refused a revoked API key stops working within the poll interval.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
setup_model 4000 21
d1="$PROGNOS_HOME/registry/readmission/1"
cp -a "$d1" "$WORK/v1.good"
restore() { rm -rf "$d1"; cp -a "$WORK/v1.good" "$d1"; }
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 5) t" >"$WORK/rows.json"
READ=$(new_key read); PRED=$(new_key predict)

# The attack: intercept + 2.0 in model.bin (a valid model), model.bin's checksum line,
# manifest.json's digest and size for it, and manifest.sig re-signed with signing.key.
resign_attack() {
    "$PY" - "$d1" <<'PYEOF'
import hashlib, json, os, sys
d = sys.argv[1]
lines = open(os.path.join(d, "model.bin"), "rb").read().decode().split("\n")
assert lines[-1] == "" and lines[-2].startswith("sha256 "), "model.bin ends in its checksum line"
beta = [i for i, l in enumerate(lines) if l.startswith("beta ")]
assert len(beta) == 1, "one beta line"
b = lines[beta[0]].split(" ")
b[1] = repr(float(b[1]) + 2.0)
lines[beta[0]] = " ".join(b)
body = "\n".join(lines[:-2]) + "\n"
data = (body + "sha256 " + hashlib.sha256(body.encode()).hexdigest() + "\n").encode()
open(os.path.join(d, "model.bin"), "wb").write(data)
m = json.load(open(os.path.join(d, "manifest.json")))
m["files"]["model.bin"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
open(os.path.join(d, "manifest.json"), "w").write(json.dumps(m, indent="\t") + "\n")
PYEOF
    openssl pkeyutl -sign -inkey "$PROGNOS_HOME/signing.key" -rawin -in "$d1/manifest.json" -out "$WORK/sig.bin"
    { base64 -w0 "$WORK/sig.bin"; echo; } >"$d1/manifest.sig"
    # the attack is well formed: the signature checks out with the installation's public key
    openssl pkeyutl -verify -pubin -inkey "$PROGNOS_HOME/signing.pub" -rawin -in "$d1/manifest.json" \
        -sigfile "$WORK/sig.bin" >/dev/null || fail "the re-signed manifest does not verify with signing.pub"
}
# predict_one <answers file>: prints the number answered with 200 (0 or 1)
predict_one() { "$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 1 --answers "$1" | tail -1; }
# waits for a line of the log that contains $1 and appeared after line $2 (up to
# 300 s: a hang bound, far above any delay of a loaded machine)
wait_log() {
    for _ in $(seq 1 3000); do
        tail -n +"$(($2 + 1))" "$PROGNOS_HOME/log/prognos.log" 2>/dev/null | grep -qF -- "$1" && return 0
        sleep 0.1
    done
    fail "no log line '$1' within 300 s: $(tail -5 "$PROGNOS_HOME/log/prognos.log")"
}
loglines() { wc -l <"$PROGNOS_HOME/log/prognos.log" 2>/dev/null || echo 0; }

# ---- the good version: what it answers ---------------------------------------------
start_server --poll-ms 200
wait_key "$READ"
assert_eq "$(predict_one "$WORK/a0")" 1 "the registered v1 answers"
stop_server

# ---- re-signed model.bin: refused by verify, and by the server at start -------------
resign_attack
assert_exit 1 px registry verify readmission 1
err=$(px registry verify readmission 1 2>&1 || true)
grep -q "manifest.json differs from the one registered" <<<"$err" || fail "verify: $err"
n=$(loglines)
start_server --poll-ms 200
wait_log "cannot load model 'readmission' v1: manifest.json differs from the one registered" "$n"
wait_key "$READ"
rm -f "$WORK/a1"
out=$(predict_one "$WORK/a1" 2>&1 || true)
[ ! -s "$WORK/a1" ] || fail "the server answered from the re-signed model.bin at start: $(cat "$WORK/a1")"
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" 503 "/readyz without the refused model"
stop_server
ok "a model.bin re-signed with the installation's key is refused by verify and at the server's start"

# ---- the same attack at reload: refused, and v1 keeps answering as registered -------
restore
start_server --poll-ms 200
wait_key "$READ"
assert_eq "$(predict_one "$WORK/a2")" 1 "v1 answers after the restore"
cmp -s "$WORK/a0" "$WORK/a2" || fail "the restored v1 answers differently"
resign_attack
n=$(loglines)
kill -HUP "$SERVE_PID"
wait_log "cannot load model 'readmission' v1: manifest.json differs from the one registered" "$n"
assert_eq "$(predict_one "$WORK/a3")" 1 "v1 answers after the refused reload"
cmp -s "$WORK/a0" "$WORK/a3" || fail "after a reload of the re-signed model the answer moved: $(cat "$WORK/a0") -> $(cat "$WORK/a3")"
ok "the re-signed model.bin is refused at reload; the registered v1 keeps answering unchanged"

# ---- a FIFO in place of manifest.json: reload refused promptly, revocation works ----
restore
KEY=$(new_key predict fifo)
wait_key "$KEY"
rm "$d1/manifest.json"
mkfifo "$d1/manifest.json"
n=$(loglines)
kill -HUP "$SERVE_PID"
wait_log "cannot load model 'readmission' v1: manifest.json is not a regular file" "$n"
px apikey revoke "$(cut -d_ -f2 <<<"$KEY")" >/dev/null
code=""
for _ in $(seq 1 3000); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -d '{"instances":[]}' "$URL/v1/models/readmission/predict")
    [ "$code" = 401 ] && break
    sleep 0.1
done
assert_eq "$code" 401 "a key revoked while manifest.json is a FIFO (the poller is not stuck on it)"
assert_eq "$(predict_one "$WORK/a4")" 1 "v1 answers while manifest.json is a FIFO"
cmp -s "$WORK/a0" "$WORK/a4" || fail "the answer moved while manifest.json is a FIFO"
stop_server
ok "a FIFO manifest.json: the reload is refused, a revoked key stops working, v1 keeps answering"

# ---- ... and refused promptly by verify and at the server's start --------------------
set +e; timeout 30 "$PROGNOS_BIN" registry verify readmission 1 >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
assert_eq "$rc" 1 "registry verify with a FIFO manifest.json (124: it hung)"
grep -qF "manifest.json is not a regular file" "$WORK/err" || fail "verify: $(cat "$WORK/err")"
n=$(loglines)
start_server --poll-ms 200
wait_log "cannot load model 'readmission' v1: manifest.json is not a regular file" "$n"
rm -f "$WORK/a5"
out=$(predict_one "$WORK/a5" 2>&1 || true)
[ ! -s "$WORK/a5" ] || fail "the server answered with a FIFO manifest.json at start: $(cat "$WORK/a5")"
stop_server
# a symbolic link to a good manifest is not a regular file of the version either
rm "$d1/manifest.json"
cp "$WORK/v1.good/manifest.json" "$WORK/elsewhere.json"
ln -s "$WORK/elsewhere.json" "$d1/manifest.json"
set +e; timeout 30 "$PROGNOS_BIN" registry verify readmission 1 >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
assert_eq "$rc" 1 "registry verify with manifest.json a symbolic link"
grep -qF "manifest.json is not a regular file" "$WORK/err" || fail "verify (symlink): $(cat "$WORK/err")"
restore
assert_exit 0 px registry verify readmission 1
ok "a FIFO manifest.json is refused at once by verify and at the server's start"
