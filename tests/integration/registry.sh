#!/usr/bin/env bash
# registry.sh: the model registry against a real embedded PostgreSQL, with real
# fitted models (tests/integration/reg_tool.c registers them). Versions and
# duplicates, deterministic artifacts across two homes, list/show/promote/card
# values, independent checks (OpenSSL's CLI verifies the signatures; numpy
# recomputes the reference distributions and Wald intervals), then every kind of
# tampering refused with exit 1 and a message naming model, version and file.
PX_FRESH_HOME=1   # tests what db init makes (the signing key pair)
. "$(dirname "$0")/lib.sh"
: "${REG_TOOL:?set REG_TOOL to the reg_tool binary}"
tool() { "$REG_TOOL" "$@"; }
reg() { echo "$PROGNOS_HOME/registry/$1/$2"; }
# the system python has numpy (a pyenv shim on PATH may not)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

# ---- db init creates the signing key pair and the registry schema -----------
px db init >/dev/null
[ -f "$PROGNOS_HOME/signing.key" ] || fail "db init made no signing.key"
assert_eq "$(stat -c %a "$PROGNOS_HOME/signing.key")" 600 "signing.key mode"
assert_eq "$(stat -c %a "$PROGNOS_HOME/signing.pub")" 644 "signing.pub mode"
head -1 "$PROGNOS_HOME/signing.key" | grep -qx -- '-----BEGIN PRIVATE KEY-----' || fail "signing.key is not PKCS#8 PEM"
openssl pkey -in "$PROGNOS_HOME/signing.key" -noout -text > "$WORK/key.txt"
grep -q ED25519 "$WORK/key.txt" || fail "signing key is not Ed25519"
assert_eq "$(openssl pkey -in "$PROGNOS_HOME/signing.key" -pubout)" "$(cat "$PROGNOS_HOME/signing.pub")" "signing.pub is the key's"
keybefore=$(sha256sum "$PROGNOS_HOME/signing.key")
px db init >/dev/null
assert_eq "$(sha256sum "$PROGNOS_HOME/signing.key")" "$keybefore" "db init again keeps the key"
assert_eq "$(sql "SELECT string_agg(version::text, ',' ORDER BY version) FROM public.prognos_migrations WHERE version = 3")" 3 "migration 003 applied"
assert_eq "$(sql "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'registry'")" 4 "registry tables"
ok "db init: Ed25519 key pair (0600 PKCS#8), registry schema"

# ---- registering versions -------------------------------------------------------
mkdir -p "$WORK/dump"
assert_eq "$(tool register readmission --seed 1 --set readmission --dump "$WORK/dump")" "version 1" "first version"
set +e; out=$(tool register readmission --seed 1 --set readmission); rc=$?; set -e
assert_eq "$rc:$out" "3:existing 1" "same data and settings: nothing registered"
assert_eq "$(tool register readmission --seed 1 --set readmission --l2 0.5)" "version 2" "other params: a new version"
assert_eq "$(tool register readmission --seed 2 --set readmission)" "version 3" "other data: a new version"
assert_eq "$(tool register los --seed 3 --algo poisson --set los)" "version 1" "versions number per model"
assert_eq "$(sql "SELECT string_agg(name || ':' || version, ',' ORDER BY name, version) FROM registry.versions")" \
    "los:1,readmission:1,readmission:2,readmission:3" "registry rows"
assert_eq "$(ls "$PROGNOS_HOME/registry/readmission" | tr '\n' ' ')" "1 2 3 " "artifact directories (no .tmp left)"
assert_eq "$(ls "$(reg readmission 1)" | tr '\n' ' ')" \
    "calibration.csv coefficients.csv manifest.json manifest.sig metrics.json model.bin reference.json " "artifact files"
assert_eq "$(ls "$(reg los 1)" | tr '\n' ' ')" \
    "coefficients.csv manifest.json manifest.sig metrics.json model.bin reference.json " "regression: no calibration.csv"
# the row records the manifest's and the model's digests
d1=$(reg readmission 1)
assert_eq "$(sql "SELECT manifest_sha256 || ' ' || model_sha256 FROM registry.versions WHERE name = 'readmission' AND version = 1")" \
    "$(sha256sum "$d1/manifest.json" | cut -c1-64) $(sha256sum "$d1/model.bin" | cut -c1-64)" "row digests"
ok "register: versions from 1 per model, duplicates refused (exit 3), digests recorded"

# ---- independent checks of the artifacts ---------------------------------------------
"$PY" - "$d1" "$WORK/dump" <<'EOF'
import json, hashlib, os, sys, math
import numpy as np
d, dump = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(d, "manifest.json")))
assert m["format"] == "prognos-manifest 1" and m["name"] == "readmission" and m["version"] == 1, m
assert m["algo"] == "logit" and m["task"] == "binary" and m["feature_set"] == "readmission"
assert m["split"]["n_train"] == 1500 and m["params"] == {"algo": "logit", "l2": 0}
assert [f["name"] for f in m["features"]] == ["age_years", "sex", "charlson", "admit_type"]
assert m["features"][1]["levels"] == ["F", "M"] and m["features"][3]["reference"] == "emergency"
listed = sorted(m["files"])
assert listed == sorted(f for f in os.listdir(d) if not f.startswith("manifest.")), listed
for f, e in m["files"].items():
    b = open(os.path.join(d, f), "rb").read()
    assert e["bytes"] == len(b) and e["sha256"] == hashlib.sha256(b).hexdigest(), f
# reference.json against numpy: decile edges (type 7 = numpy 'linear'), right-closed bins
import csv
rows = list(csv.DictReader(open(os.path.join(dump, "train.csv"))))
ref = json.load(open(os.path.join(d, "reference.json")))
assert ref["n"] == len(rows) == 1500
def check_numeric(r, vals):
    x = np.array([float(v) for v in vals if v != ""])
    assert r["n"] == len(x) and r["missing"] == len(vals) - len(x), (r["n"], len(x))
    assert abs(r["missing_share"] - (len(vals) - len(x)) / len(vals)) < 1e-15
    edges = np.unique(np.quantile(x, np.arange(1, 10) / 10))
    assert np.allclose(r["edges"], edges, rtol=0, atol=1e-12), (r["edges"], edges)
    counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
    assert r["counts"] == counts.tolist(), (r["counts"], counts)
    assert np.allclose(r["shares"], counts / len(x), atol=1e-15)
    assert abs(r["mean"] - x.mean()) < 1e-9 and r["min"] == x.min() and r["max"] == x.max()
for f in ref["features"]:
    vals = [row[f["name"]] for row in rows]
    if f["kind"] == "numeric":
        check_numeric(f, vals)
    else:
        assert f["counts"] == [vals.count(l) for l in f["levels"]], f
        assert f["other"] == 0 and f["missing"] == 0
charlson = next(f for f in ref["features"] if f["name"] == "charlson")
assert charlson["missing"] > 0 and len(charlson["edges"]) < 9  # missing values and merged edges exercised
check_numeric(ref["score"], [row["score"] for row in rows])
# coefficients.csv: 95% Wald intervals and odds ratios from the model's terms
terms = list(csv.DictReader(open(os.path.join(dump, "terms.csv"))))
coef = list(csv.DictReader(open(os.path.join(d, "coefficients.csv"))))
assert [c["term"] for c in coef] == [t["term"] for t in terms] and len(coef) == 6
z = 1.959963984540054
for c, t in zip(coef, terms):
    b, se = float(t["beta"]), float(t["se"])
    for k, v in (("estimate", b), ("se", se), ("lower", b - z * se), ("upper", b + z * se),
                 ("odds_ratio", math.exp(b)), ("or_lower", math.exp(b - z * se)), ("or_upper", math.exp(b + z * se))):
        assert abs(float(c[k]) - v) <= 1e-9 * max(1, abs(v)), (c["term"], k, c[k], v)
# the planted effects come back (the data are simulated with these log-odds), within 3 SE
for term, planted in (("age_years", 0.03), ("charlson", 0.3)):
    c = next(c for c in coef if c["term"] == term)
    assert abs(float(c["estimate"]) - planted) < 3 * float(c["se"]), c
EOF
# OpenSSL's own implementation accepts our signature over the manifest's exact bytes
base64 -d "$d1/manifest.sig" > "$WORK/sig.bin"
assert_eq "$(stat -c %s "$WORK/sig.bin")" 64 "signature bytes"
openssl pkeyutl -verify -pubin -inkey "$PROGNOS_HOME/signing.pub" -rawin -in "$d1/manifest.json" \
    -sigfile "$WORK/sig.bin" >/dev/null || fail "openssl does not verify manifest.sig"
# and its signature of the same bytes is ours (Ed25519 is deterministic)
openssl pkeyutl -sign -inkey "$PROGNOS_HOME/signing.key" -rawin -in "$d1/manifest.json" -out "$WORK/sig2.bin"
cmp -s "$WORK/sig.bin" "$WORK/sig2.bin" || fail "openssl's signature differs from manifest.sig"
ok "artifacts: digests, reference distributions (numpy), Wald intervals, signature (openssl)"

# ---- loading --------------------------------------------------------------------------
want=$(cat "$WORK/dump/predict.txt")
assert_eq "$(tool load readmission 1)" "loaded v1 logit 4 features predict $want" "loaded model predicts as fitted"
assert_eq "$(tool load-dir "$d1")" "loaded v0 logit 4 features predict $want" "load-dir"
assert_eq "$(tool load readmission latest | cut -d' ' -f1-2)" "loaded v3" "latest"
assert_eq "$(tool read readmission 1 calibration.csv | head -1)" "decile,n,events,mean_predicted,observed_rate" "read_file"
assert_exit 1 tool read readmission 1 manifest.json
grep -q "lists no file 'manifest.json'" "$WORK/err" || fail "read of an unlisted file: $(cat "$WORK/err")"
ok "load, load-dir, read_file: the loaded model predicts what the fitted one did"

# ---- aliases ------------------------------------------------------------------------------
assert_exit 1 px registry show readmission champion
grep -q "model 'readmission' has no champion" "$WORK/err" || fail "no champion: $(cat "$WORK/err")"
assert_eq "$(px registry promote readmission 1 --reason 'first model')" "model 'readmission' champion is now v1" promote
assert_eq "$(px registry promote readmission v3 --alias challenger)" "model 'readmission' challenger is now v3" challenger
assert_exit 3 px registry promote readmission 1
grep -q "already the champion" "$WORK/err" || fail "promote twice: $(cat "$WORK/err")"
assert_eq "$(px registry promote readmission challenger --reason 'better AUC')" "model 'readmission' champion is now v3" "promote the challenger"
assert_exit 1 px registry promote readmission 9
grep -q "model 'readmission' has no version 9" "$WORK/err" || fail "promote a missing version: $(cat "$WORK/err")"
assert_exit 2 px registry promote readmission 1 --alias boss
assert_eq "$(sql "SELECT string_agg(alias || ':' || version, ',' ORDER BY alias) FROM registry.aliases")" "challenger:3,champion:3" aliases
assert_eq "$(sql "SELECT string_agg(alias || ':' || coalesce(from_version::text, '-') || '>' || to_version || ':' || reason, ',' ORDER BY history_id) FROM registry.alias_history")" \
    "champion:->1:first model,challenger:->3:,champion:1>3:better AUC" "alias history"
assert_eq "$(sql "SELECT count(*) || ' ' || max(detail->>'to_version') FROM audit.events WHERE action = 'registry.promote' AND object = 'readmission'")" \
    "3 3" "audit events"
set +e; sql "DELETE FROM registry.alias_history" 2>"$WORK/err"; rc=$?; set -e
[ $rc -ne 0 ] && grep -q "append-only" "$WORK/err" || fail "alias_history is not append-only"
assert_eq "$(tool load readmission champion | cut -d' ' -f1-2)" "loaded v3" "champion resolves"
assert_eq "$(tool load readmission | cut -d' ' -f1-2)" "loaded v3" "no reference: the champion"
assert_eq "$(tool load los | cut -d' ' -f1-2)" "loaded v1" "no champion: the latest"
ok "promote: aliases, history, audit events, references resolve"

# ---- list, show, card --------------------------------------------------------------------
px registry list > "$WORK/list.txt"
grep -Eq '^readmission +v3 +logit +binary +challenger,champion +AUC 0\.[0-9]{3} ' "$WORK/list.txt" || fail "list: $(cat "$WORK/list.txt")"
grep -Eq '^los +v1 +poisson +regression +- +RMSE [0-9.]+, R2 0\.[0-9]{3} ' "$WORK/list.txt" || fail "list los"
px registry list --json > "$WORK/list.json"
px registry show readmission 1 --json > "$WORK/show.json"
px registry show readmission 1 > "$WORK/show.txt"
"$PY" - "$WORK" "$d1" <<'EOF'
import json, sys, os
w, d = sys.argv[1], sys.argv[2]
l = json.load(open(os.path.join(w, "list.json")))
models = {m["name"]: m for m in l["models"]}
assert sorted(models) == ["los", "readmission"], models.keys()
r = models["readmission"]
assert r["aliases"] == {"challenger": 3, "champion": 3}, r["aliases"]
assert [v["version"] for v in r["versions"]] == [1, 2, 3]
met = json.load(open(os.path.join(d, "metrics.json")))
assert r["versions"][0]["metrics"]["auc"] == met["overall"]["auc"] and r["versions"][0]["metrics"]["n"] == 500
s = json.load(open(os.path.join(w, "show.json")))
assert s["name"] == "readmission" and s["version"] == 1 and s["algo"] == "logit" and s["aliases"] == []
assert s["metrics"] == met and s["split"]["n_train"] == 1500 and s["source_batches"] == [1]
assert s["manifest_sha256"] == __import__("hashlib").sha256(open(os.path.join(d, "manifest.json"), "rb").read()).hexdigest()
assert [c["term"] for c in s["coefficients"]][:2] == ["(intercept)", "age_years"] and len(s["coefficients"]) == 6
assert isinstance(s["coefficients"][1]["odds_ratio"], float)
assert s["reference"]["n"] == 1500 and len(s["features"]) == 4
h = s["alias_history"]
assert [(x["alias"], x["from_version"], x["to_version"]) for x in h] == [("champion", None, 1), ("champion", 1, 3)], h
assert s["model_aliases"] == {"champion": 3, "challenger": 3}
EOF
auc=$("$PY" -c "import json;print('%.3f' % json.load(open('$d1/metrics.json'))['overall']['auc'])")
ci=$("$PY" -c "import json;o=json.load(open('$d1/metrics.json'))['overall'];print('%.3f-%.3f' % (o['auc_lo'], o['auc_hi']))")
grep -q "^  overall  .* AUC $auc (95% CI $ci)" "$WORK/show.txt" || fail "show: overall AUC $auc ($ci) missing"
grep -q "^  sex F " "$WORK/show.txt" && grep -q "^  age_band 80+ " "$WORK/show.txt" || fail "show: subgroups"
grep -Eq "^  age_years +0\.03[0-9]+ " "$WORK/show.txt" || fail "show: coefficients"
grep -Eq "^  charlson .*missing +5\.[0-9]%" "$WORK/show.txt" || fail "show: reference summary"
grep -q "champion   - -> v1  by .*: first model" "$WORK/show.txt" || fail "show: alias history"
# a decision record (written by retraining) shows up with its version
sql "INSERT INTO registry.decisions (name, candidate_version, champion_version, decision, message) VALUES ('readmission', 3, 1, 'promoted', 'AUC up 0.01')"
px registry show readmission 3 > "$WORK/show3.txt"
grep -q "promoted   candidate v3, champion v1: AUC up 0.01" "$WORK/show3.txt" || fail "show: decisions"
ok "list, show (text and JSON) carry the registered values"

assert_eq "$(px registry card readmission 1 --out "$WORK/card.md")" "wrote $WORK/card.md" "card --out"
px registry card readmission 1 | cmp -s - "$WORK/card.md" || fail "card to stdout and --out differ"
c="$WORK/card.md"
head -1 "$c" | grep -qx "# Model card: readmission v1" || fail "card title"
for s in "## Intended use" "## Cohort and label" "## Features" "## Holdout performance" \
    "## Calibration by decile of risk" "## Subgroups" "## Coefficients" "## Limitations" "## Training data"; do
    grep -qx "$s" "$c" || fail "card: no section '$s'"
done
grep -q "(all-cause: planned readmissions are not removed) within 30 days" "$c" || fail "card: intended use"
grep -q "^30-day all-cause readmission" "$c" || fail "card: cohort from the feature set's doc"
grep -q "^| overall | 500 | [0-9]* | $auc ($ci) | " "$c" || fail "card: overall metrics"
assert_eq "$(grep -c '^| [0-9]* | 150 | ' "$c")" 0 "calibration rows are holdout deciles"
assert_eq "$(sed -n '/^## Calibration/,/^## Subgroups/p' "$c" | grep -c '^| [0-9]\{1,2\} | 50 | ')" 10 "card: 10 calibration deciles"
grep -q "^| F | " "$c" && grep -q "^| M | " "$c" && grep -q "^| 65-79 | " "$c" || fail "card: subgroups"
grep -q "^| age_years | numeric | 18.000 to 94.000 | " "$c" || fail "card: feature ranges"
grep -q "^| admit_type | categorical | elective, emergency, urgent (reference: emergency)" "$c" || fail "card: levels"
grep -q "^| age_years | 0.03" "$c" || fail "card: coefficients"
grep -q "has only [0-9]* holdout rows" "$c" || fail "card: computed limitations"
grep -q "fingerprint (SHA-256 of the training data): \`$(sql "SELECT fingerprint FROM registry.versions WHERE name='readmission' AND version=1")\`" "$c" ||
    fail "card: fingerprint"
grep -q "ETL batches: \[1\]" "$c" || fail "card: batches"
px registry card los > "$WORK/los.md"
grep -q "^| overall | 500 | " "$WORK/los.md" && grep -q "rate ratio (95% CI)" "$WORK/los.md" || fail "card: regression"
grep -q "## Calibration" "$WORK/los.md" && fail "card: regression has no calibration section"
ok "card: every section, with the version's values"

# ---- verify and tampering --------------------------------------------------------------------
assert_exit 0 px registry verify --all
assert_eq "$(tail -1 "$WORK/out")" "4 versions checked, 0 failed" "verify --all"
assert_exit 0 px registry verify readmission 1
assert_eq "$(cat "$WORK/out")" "ok      readmission v1" "verify one"
cp -a "$d1" "$WORK/v1.good"
cp "$PROGNOS_HOME/signing.pub" "$WORK/signing.pub.good"
restore() { rm -rf "$d1"; cp -a "$WORK/v1.good" "$d1"; cp "$WORK/signing.pub.good" "$PROGNOS_HOME/signing.pub"; }
# tamper <description> <expected message part> <shell action>
tamper() {
    local what=$1 expect=$2 action=$3
    restore
    eval "$action"
    for cmd in "px registry verify readmission 1" "tool load readmission 1" "px registry show readmission 1" \
        "px registry card readmission 1" "px registry promote readmission 1"; do
        set +e; $cmd >"$WORK/out" 2>"$WORK/err"; local rc=$?; set -e
        [ $rc -eq 1 ] || { cat "$WORK/out" "$WORK/err" >&2; fail "$what: '$cmd' exited $rc, expected 1"; }
        grep -q "model 'readmission' v1" "$WORK/err" || fail "$what: '$cmd' does not name the version: $(cat "$WORK/err")"
        grep -qF -- "$expect" "$WORK/err" || fail "$what: '$cmd' says '$(head -1 "$WORK/err")', expected '$expect'"
        grep -qi "sanitizer\|segmentation" "$WORK/err" && fail "$what: '$cmd' crashed"
    done
    # the server's path (no database) refuses it too, unless only the row knows
    if [ "${4:-}" != db-only ]; then
        set +e; tool load-dir "$d1" >"$WORK/out" 2>"$WORK/err"; local rc=$?; set -e
        [ $rc -eq 1 ] && grep -qF -- "$expect" "$WORK/err" || fail "$what: load-dir: rc $rc, $(cat "$WORK/err")"
    fi
    echo "  refused: $what ($(head -1 "$WORK/err" | sed 's/^prognos: error: //'))"
}
flip='/usr/bin/env python3 -c "import sys;p=sys.argv[1];b=bytearray(open(p,\"rb\").read());b[len(b)//2]^=1;open(p,\"wb\").write(b)"'
tamper "a flipped byte in model.bin" "model.bin failed its integrity check" "$flip '$d1/model.bin'"
tamper "model.bin truncated" "model.bin is truncated" "truncate -s 100 '$d1/model.bin'"
tamper "model.bin emptied" "model.bin is truncated (0 bytes" ": > '$d1/model.bin'"
tamper "bytes appended to model.bin" "model.bin is longer than signed" "echo x >> '$d1/model.bin'"
tamper "model.bin deleted" "model.bin is missing" "rm '$d1/model.bin'"
tamper "model.bin replaced by a directory" "model.bin is not a regular file" "rm '$d1/model.bin'; mkdir '$d1/model.bin'"
tamper "metrics.json edited" "metrics.json failed its integrity check" "sed -i 's/\"auc\"/\"AUC\"/' '$d1/metrics.json'"
tamper "reference.json deleted" "reference.json is missing" "rm '$d1/reference.json'"
tamper "manifest.json edited" "signature mismatch" "sed -i 's/\"l2\":\t0/\"l2\":\t1/' '$d1/manifest.json'"
tamper "manifest.json truncated" "signature mismatch" "truncate -s 200 '$d1/manifest.json'"
tamper "manifest.json deleted" "manifest.json is missing" "rm '$d1/manifest.json'"
tamper "manifest.sig of another version" "signature mismatch" "cp '$(reg readmission 2)/manifest.sig' '$d1/'"
tamper "manifest.sig garbled" "manifest.sig is malformed" "echo 'AAAA' > '$d1/manifest.sig'"
tamper "manifest.sig with bytes appended" "manifest.sig is malformed" "echo 'AAAA' >> '$d1/manifest.sig'"
tamper "manifest.sig deleted" "manifest.sig is missing" "rm '$d1/manifest.sig'"
tamper "signed by another key" "signature mismatch" \
    "openssl genpkey -algorithm ED25519 -out '$WORK/evil.key' 2>/dev/null; openssl pkeyutl -sign -inkey '$WORK/evil.key' -rawin -in '$d1/manifest.json' | base64 -w0 > '$d1/manifest.sig'; echo >> '$d1/manifest.sig'"
tamper "another installation's public key" "signature mismatch" "openssl pkey -in '$WORK/evil.key' -pubout > '$PROGNOS_HOME/signing.pub'"
grep -q "the manifest names signing key [0-9a-f]\{16\}\.\.\., the public key '.*signing.pub' is [0-9a-f]\{16\}" "$WORK/err" ||
    fail "key mismatch not explained: $(cat "$WORK/err")"
tamper "the whole directory swapped for v2's" "signed for model 'readmission' v2" "rm -rf '$d1'; cp -a '$(reg readmission 2)' '$d1'"
tamper "the directory deleted" "artifact directory" "rm -rf '$d1'"
# an edit re-signed with the installation's own key passes the signature, not the registered digest
tamper "manifest re-signed after an edit" "manifest.json differs from the one registered" \
    "sed -i 's/\"l2\":\t0/\"l2\":\t1/' '$d1/manifest.json'; openssl pkeyutl -sign -inkey '$PROGNOS_HOME/signing.key' -rawin -in '$d1/manifest.json' | base64 -w0 > '$d1/manifest.sig'; echo >> '$d1/manifest.sig'" db-only
restore
echo extra > "$d1/notes.txt"
assert_exit 1 px registry verify readmission 1
grep -q "cannot verify model 'readmission' v1: unexpected file 'notes.txt'" "$WORK/err" || fail "extra file: $(cat "$WORK/err")"
restore
assert_exit 0 px registry verify --all
# verify --all reports each version and fails if any does
truncate -s 10 "$(reg los 1)/model.bin"
assert_exit 1 px registry verify --all --json
"$PY" -c "
import json,sys; r=json.load(open('$WORK/out'))
assert r['checked'] == 4 and r['failed'] == 1, r
bad = [x for x in r['results'] if not x['ok']]
assert bad[0]['name'] == 'los' and 'model.bin is truncated' in bad[0]['error'], bad"
ok "verify: every kind of tampering refused (exit 1, model, version and file named, no crash)"

# ---- a failed insert leaves no artifacts; leftovers are cleaned; concurrency --------------------
sql "CREATE FUNCTION pg_temp.x() RETURNS int LANGUAGE sql AS 'SELECT 1'" # warm up psql
sql "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN RAISE EXCEPTION 'refused by test'; END\$\$;
     CREATE TRIGGER refuse BEFORE INSERT ON registry.versions FOR EACH ROW EXECUTE FUNCTION public.refuse()"
assert_exit 1 tool register readmission --seed 5
grep -q "cannot record the version in the registry" "$WORK/err" || fail "failed insert: $(cat "$WORK/err")"
[ ! -e "$(reg readmission 4)" ] && [ ! -e "$(reg readmission 4).tmp" ] || fail "a failed insert left artifacts"
sql "DROP TRIGGER refuse ON registry.versions"
mkdir -p "$(reg readmission 4).tmp" "$(reg readmission 4)"
echo junk > "$(reg readmission 4)/model.bin"
assert_eq "$(tool register readmission --seed 5)" "version 4" "register over leftovers"
assert_exit 0 px registry verify readmission 4
[ ! -e "$(reg readmission 4).tmp" ] || fail "stale .tmp left"
pids=()
for s in 11 12 13 14; do tool register conc --seed $s > "$WORK/conc.$s" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent registration failed"; done
assert_eq "$(cat "$WORK"/conc.* | sort | tr '\n' ' ')" "version 1 version 2 version 3 version 4 " "concurrent versions"
assert_exit 0 px registry verify conc --all
ok "failed insert removes the directory; leftovers replaced; 4 concurrent registrations: versions 1-4"

# ---- an SVM: LibSVM's parser only ever sees verified bytes -----------------------------------
mkdir -p "$WORK/dsvm"
assert_eq "$(tool register svcm --seed 4 --n 800 --algo svc --dump "$WORK/dsvm")" "version 1" "register an SVC"
assert_eq "$(tool load svcm)" "loaded v1 svc 4 features predict $(cat "$WORK/dsvm/predict.txt")" "the loaded SVC predicts as fitted"
[ ! -e "$(reg svcm 1)/coefficients.csv" ] || fail "an SVM has no coefficients.csv"
px registry card svcm > "$WORK/svm.md"
grep -q "^This algorithm has no coefficients." "$WORK/svm.md" || fail "card of an SVM"
for cut in 1 200 5000; do
    cp "$(reg svcm 1)/model.bin" "$WORK/svm.bin"
    truncate -s "$cut" "$(reg svcm 1)/model.bin"
    assert_exit 1 tool load svcm
    grep -q "cannot load model 'svcm' v1: model.bin is truncated ($cut bytes" "$WORK/err" || fail "SVM cut at $cut: $(cat "$WORK/err")"
    cp "$WORK/svm.bin" "$(reg svcm 1)/model.bin"
done
assert_exit 0 px registry verify svcm
ok "SVM: registered, loaded, truncations refused before LibSVM"

# ---- an external server (PROGNOS_DB): the key pair and artifacts still live in PROGNOS_HOME ------
ext="$WORK/ext"
url=$(px db url)
PROGNOS_HOME="$ext" PROGNOS_DB="$url" "$PROGNOS_BIN" db init >/dev/null
[ -f "$ext/signing.key" ] && [ -f "$ext/signing.pub" ] && [ ! -e "$ext/pg" ] || fail "external server: keys not in PROGNOS_HOME"
assert_eq "$(PROGNOS_HOME="$ext" PROGNOS_DB="$url" tool register extm --seed 1)" "version 1" "register against PROGNOS_DB"
[ -f "$ext/registry/extm/1/manifest.sig" ] || fail "external server: artifacts not in PROGNOS_HOME"
PROGNOS_HOME="$ext" PROGNOS_DB="$url" "$PROGNOS_BIN" registry verify extm >/dev/null || fail "verify against PROGNOS_DB"
ok "PROGNOS_DB: signing key and artifacts in PROGNOS_HOME"

# ---- usage ------------------------------------------------------------------------------------
assert_exit 0 px registry --help
grep -q "^usage: prognos registry list" "$WORK/out" || fail "help text"
assert_exit 2 px registry
assert_exit 2 px registry frobnicate
assert_exit 2 px registry show
assert_exit 2 px registry list --all
assert_exit 2 px registry verify readmission 1 --all
assert_exit 1 px registry show readmission v99
grep -q "model 'readmission' has no version 99" "$WORK/err" || fail "missing version message"
assert_exit 1 px registry show nosuch
grep -q "no model named 'nosuch'" "$WORK/err" || fail "missing model message"
assert_exit 1 px registry show readmission v0x
grep -q "invalid version reference 'v0x'" "$WORK/err" || fail "bad reference message"
assert_exit 1 px registry show 'Bad/Name'
ok "usage: help, exit 2 on bad usage, clear errors"

# ---- deterministic bytes: same data in two homes, same key ---------------------------
openssl genpkey -algorithm ED25519 -out "$WORK/shared.key" 2>/dev/null
chmod 600 "$WORK/shared.key"
for h in homeA homeB; do
    # (a copy of the empty fixture without its signing key pair, when there is one: db init
    # then only checks the cluster, and must still make no key with PROGNOS_SIGNING_KEY set)
    restore_home empty "$WORK/$h" && rm -f "$WORK/$h/signing.key" "$WORK/$h/signing.pub"
    PROGNOS_HOME="$WORK/$h" PROGNOS_SIGNING_KEY="$WORK/shared.key" "$PROGNOS_BIN" db init >/dev/null
    assert_eq "$(PROGNOS_HOME="$WORK/$h" PROGNOS_SIGNING_KEY="$WORK/shared.key" tool register mortality --seed 7 --set mortality)" \
        "version 1" "register in $h"
done
diff -r "$WORK/homeA/registry" "$WORK/homeB/registry" >/dev/null || fail "two homes, same inputs: artifacts differ"
[ ! -f "$WORK/homeA/signing.key" ] || fail "PROGNOS_SIGNING_KEY set: no key should be made in the home"
for h in homeA homeB; do PROGNOS_HOME="$WORK/$h" "$PROGNOS_BIN" db stop >/dev/null; done
# with the main home's own key only manifest.sig (and the key id in the manifest) differ
assert_eq "$(tool register mortality --seed 7 --set mortality)" "version 1" "register in the main home"
for f in model.bin metrics.json reference.json calibration.csv coefficients.csv; do
    cmp -s "$WORK/homeA/registry/mortality/1/$f" "$(reg mortality 1)/$f" || fail "$f differs across homes"
done
assert_eq "$(diff "$WORK/homeA/registry/mortality/1/manifest.json" "$(reg mortality 1)/manifest.json" | grep -c '^[<>]')" \
    2 "manifests differ in key_id only"
cmp -s "$WORK/homeA/registry/mortality/1/manifest.sig" "$(reg mortality 1)/manifest.sig" &&
    fail "two keys gave the same signature"
ok "deterministic: identical bytes in every file across two homes"
