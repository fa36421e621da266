#!/usr/bin/env bash
# gates.sh: quality gates end to end (registry/gates.c), on a generated warehouse with
# a fixed pseudonymization key (so the holdout, and every gate's value, is the same
# on every run) and on one CMS DE-SynPUF sample when ../shared is there:
#  - a version that fails a gate is registered with the failure in its record, card
#    and output, is not champion, and train exits 3 naming the gate and the fix;
#  - registry promote refuses it as champion; --accept-failed-gates overrides, logged;
#  - kpi compute with one measure's model failed: that measure crude, the others
#    risk-adjusted; a failed model named explicitly is refused unless allowed;
#  - the server does not serve a champion that failed its gates;
#  - LOS and probabilities stay within the model's stored bounds however extreme the inputs;
#  - retrain exit codes: 4 when a candidate fails its gates while others are promoted,
#    4 for unchanged data whose version fails, 0 promoted, 3 nothing new.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
# lib.sh's cleanup runs this hook on every exit, then stops the clusters
gates_cleanup() {
    if [ -n "$SERVE_PID" ]; then kill -KILL "$SERVE_PID" 2>/dev/null; fi
}
CLEANUP_HOOKS+=(gates_cleanup)
J() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$2"; }

mkdir -p "$PROGNOS_HOME"
(umask 077; echo 5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed >"$PROGNOS_HOME/secret.key")
px generate --patients 3000 --seed 21 --out "$WORK/a" >/dev/null
px generate --patients 3000 --seed 22 --out "$WORK/b" >/dev/null
px etl load --format canonical --source "$WORK/a" --quiet >/dev/null
px features build --set all >/dev/null

# ---- train: pass, and fail ---------------------------------------------------------
for m in readmission los; do
    assert_exit 0 px train --model $m --no-build --hier-boot 0 --json
    assert_eq "$(J 'd["gates_passed"], d["champion"]' "$WORK/out")" "True True" "$m passes its gates and is champion"
done
# mortality: 421 events for 27 parameters (15.6 per parameter) against a demanded 50
assert_exit 3 px train --model mortality --no-build --hier-boot 0 --min-epp 50
grep -q "events_per_parameter" "$WORK/err" || fail "failed gate not named: $(cat "$WORK/err")"
grep -q "fix: more data" "$WORK/err" || fail "no fix given: $(cat "$WORK/err")"
grep -q "fewer features" "$WORK/err" || fail "no fix given: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT gates->>'passed', gates->'failed' FROM registry.versions WHERE name = 'mortality'")" \
    'false|["events_per_parameter"]' "the failure in registry.versions.gates"
assert_eq "$(sql "SELECT count(*) FROM registry.aliases WHERE name = 'mortality'")" 0 "a failing first version is not champion"
# the same again, --json: the same version, exit 3, the gate by name
assert_exit 3 px train --model mortality --no-build --hier-boot 0 --min-epp 50 --json
assert_eq "$(J 'd["version"], d["created"], d["gates_passed"], d["champion"], d["gates_failed"]' "$WORK/out")" \
    "1 False False False ['events_per_parameter']" "train --json on a failing version"
# the value in the record, recomputed from the split (training events) and the manifest
# (candidate parameters: one per numeric input, levels - 1 per categorical, 1 per dropped input)
sql "SELECT split FROM registry.versions WHERE name = 'mortality'" >"$WORK/split.json"
sql "SELECT gates FROM registry.versions WHERE name = 'mortality'" >"$WORK/gates.json"
python3 - "$WORK/split.json" "$PROGNOS_HOME/registry/mortality/1/manifest.json" "$WORK/gates.json" <<'PY' \
    || fail "events per parameter differs from its recomputation"
import json, sys
split, man, gates = (json.load(open(p)) for p in sys.argv[1:4])
ev = min(split["train_events"], split["train_rows"] - split["train_events"])
k = sum(1 if f["dropped"] or f["kind"] == "numeric" else len(f["levels"]) - 1 for f in man["features"])
got = next(c["value"] for c in gates["checks"] if c["gate"] == "events_per_parameter")
assert abs(got - ev / k) < 1e-9, (got, ev, k)
print(f"events per parameter: {ev:.0f} / {k} = {ev / k:.3f}")
PY
px registry show mortality >"$WORK/show.txt"
grep -q "FAILED: this version may not be champion" "$WORK/show.txt" || fail "registry show: $(cat "$WORK/show.txt")"
px registry card mortality >"$WORK/card.md"
grep -q "| events_per_parameter | \*\*failed\*\* |" "$WORK/card.md" || fail "card: $(sed -n '/Quality gates/,/Intended/p' "$WORK/card.md")"
ok "a failing version: registered, not champion, exit 3, gate and fix named in output, record, show and card"

assert_exit 1 px registry promote mortality 1
grep -q "failed its quality gates" "$WORK/err" || fail "promote: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT count(*) FROM registry.aliases WHERE name = 'mortality'")" 0 "refused promotion leaves no alias"
ok "registry promote refuses a failed version as champion"

# ---- kpi compute with one measure failed ---------------------------------------------
assert_exit 0 px kpi compute --period all,year --json
assert_eq "$(J 'd["crude"], d["models"]["readmission"], d["models"]["mortality"], d["models"]["los"]' "$WORK/out")" \
    "['mortality'] 1 0 1" "kpi compute: mortality crude, the others adjusted"
grep -q "mortality crude (not risk-adjusted).*v1 failed its quality gates (events_per_parameter)" "$WORK/err" \
    || fail "kpi compute does not say why mortality is crude: $(cat "$WORK/err")"
run=$(J 'd["run_id"]' "$WORK/out")
assert_eq "$(sql "SELECT count(*), count(model_version), count(expected), count(oe), count(*) FILTER (WHERE flag IN ('worse','better','no_different')),
                  bool_and(method LIKE '%NOT risk-adjusted%'), count(rate) > 0
                  FROM kpi.results WHERE run_id = $run AND measure = 'mortality'")" \
    "$(sql "SELECT count(*) FROM kpi.results WHERE run_id = $run AND measure = 'mortality'")|0|0|0|0|t|t" "crude mortality rows"
# the crude rate is the observed one: deaths / stays of the feature table, recomputed
assert_eq "$(sql "SELECT observed::bigint || '/' || n FROM kpi.results WHERE run_id = $run AND measure = 'mortality'
                  AND unit_type = 'system' AND period_kind = 'all'")" \
    "$(sql "SELECT sum(death_30d::int) || '/' || count(*) FROM features.mortality WHERE death_30d IS NOT NULL")" "crude mortality counts"
assert_eq "$(sql "SELECT count(*) = count(model_version) AND count(expected) > 0 AND bool_and(model_version = 1)
                  FROM kpi.results WHERE run_id = $run AND measure IN ('readmission', 'los') AND NOT suppressed")" t \
    "readmission and LOS risk-adjusted by v1"
assert_eq "$(sql "SELECT method->>'mortality_adjustment' LIKE 'crude, not risk-adjusted: risk model ''mortality''%' FROM kpi.runs WHERE run_id = $run")" t \
    "the run's method says why"
assert_exit 0 px kpi report --period all --run "$run" --out "$WORK/r.html"
grep -q "data-model='mortality' data-version='0' data-crude='1'>mortality: <b>not risk-adjusted</b>" "$WORK/r.html" \
    || fail "the report does not say mortality is not risk-adjusted"
grep -q "data-model='readmission' data-version='1'>" "$WORK/r.html" || fail "the report does not name readmission v1"
ok "kpi compute: mortality crude (model failed its gates), readmission and LOS adjusted"

assert_exit 1 px kpi compute --period all --model-version mortality=1
grep -q "failed its quality gates" "$WORK/err" || fail "explicit failed model: $(cat "$WORK/err")"
assert_exit 0 px kpi compute --period all --model-version mortality=1 --allow-failed-gates --json
assert_eq "$(J 'd["crude"], d["models"]["mortality"]' "$WORK/out")" "[] 1" "--allow-failed-gates adjusts with it"
ok "a failed model named explicitly is refused, --allow-failed-gates uses it"

# ---- the server: a champion that failed its gates is not served ----------------------
# (a champion set outside prognos, e.g. by hand in SQL, before the gates existed)
sql "INSERT INTO registry.aliases (name, alias, version) VALUES ('mortality', 'champion', 1)"
PRED=$(new_key predict)
start_server --poll-ms 200
for _ in $(seq 1 3000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" = 200 ] && break
    sleep 0.1
done
curl -s "$URL/readyz" >"$WORK/ready.json"
assert_eq "$(J 'sorted(m["name"] for m in d["models"])' "$WORK/ready.json")" "['los', 'readmission']" "models served"
code=$(curl -s -o "$WORK/pred.json" -w '%{http_code}' -H "Authorization: Bearer $PRED" -H 'Content-Type: application/json' \
       -d '{"instances":[{"age_years":80}]}' "$URL/v1/models/mortality/predict")
[ "$code" -ge 400 ] && [ "$code" -lt 500 ] || fail "predict with a failed champion: HTTP $code $(cat "$WORK/pred.json")"
J 'd["error"]["message"]' "$WORK/pred.json" >/dev/null || fail "not a JSON error: $(cat "$WORK/pred.json")"
# the readmission model beyond its training range: flagged, and a probability within the training range of its linear predictor
read -r elo ehi vlo vhi <<<"$(awk '$1 == "bounds" {print $2, $3, $4, $5}' "$PROGNOS_HOME/registry/readmission/1/model.bin")"
[ -n "$ehi" ] || fail "readmission model.bin has no bounds line"
python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))
print(json.dumps({"instances":[{f["name"]: (6 if f["name"] == "prior_adm_12m" else None) for f in m["features"]}]}))' \
    "$PROGNOS_HOME/registry/readmission/1/manifest.json" >"$WORK/inst.json"
code=$(curl -s -o "$WORK/pred.json" -w '%{http_code}' -H "Authorization: Bearer $PRED" -H 'Content-Type: application/json' \
       --data-binary @"$WORK/inst.json" "$URL/v1/models/readmission/predict")
# (6 is beyond the training range 0-5 but within the accepted quarter-width margin)
assert_eq "$code" 200 "readmission predict beyond the training range: $(cat "$WORK/pred.json")"
if [ "$code" = 200 ]; then
    python3 - "$WORK/pred.json" "$elo" "$ehi" <<'PY' || fail "served probability outside its bounds: $(cat "$WORK/pred.json")"
import json, math, sys
d = json.load(open(sys.argv[1])); lo, hi = float(sys.argv[2]), float(sys.argv[3])
p = d["predictions"][0]
v = p["value"]
assert 1 / (1 + math.exp(-lo)) - 1e-12 <= v <= 1 / (1 + math.exp(-hi)) + 1e-12, v
assert "prior_adm_12m" in p.get("extrapolated", []), p
PY
fi
stop_server
sql "DELETE FROM registry.aliases WHERE name = 'mortality'"
ok "the server does not serve a champion that failed its gates; served probabilities within bounds"

# ---- bounded LOS predictions ----------------------------------------------------------
# 20 stays get an age of +-32000 years (smallint): without bounds, exp(beta x) overflows or vanishes
read -r elo ehi vlo vhi <<<"$(awk '$1 == "bounds" {print $2, $3, $4, $5}' "$PROGNOS_HOME/registry/los/1/model.bin")"
[ -n "$vhi" ] || fail "los model.bin has no bounds line"
sql "CREATE TABLE t_ids AS SELECT encounter_id, (row_number() OVER (ORDER BY encounter_id)) % 2 AS s FROM features.los LIMIT 20;
     UPDATE features.los f SET age_years = CASE WHEN t.s = 0 THEN 32000 ELSE -32000 END FROM t_ids t WHERE t.encounter_id = f.encounter_id"
assert_exit 0 px kpi compute --period all --force --json
run=$(J 'd["run_id"]' "$WORK/out")
sql "SELECT predicted FROM kpi.predictions p JOIN t_ids t USING (encounter_id) WHERE p.measure = 'los'" >"$WORK/extreme.txt"
sql "SELECT max(predicted), min(predicted) FROM kpi.predictions WHERE measure = 'los'" >"$WORK/range.txt"
python3 - "$WORK/extreme.txt" "$WORK/range.txt" "$elo" "$ehi" "$vlo" "$vhi" <<'PY' || fail "LOS predictions outside the bounds"
import math, sys
ext = [float(x) for x in open(sys.argv[1]).read().split()]
mx, mn = (float(x) for x in open(sys.argv[2]).read().strip().split("|"))
elo, ehi, vlo, vhi = (float(x) for x in sys.argv[3:7])
assert len(ext) == 20, len(ext)
assert 0 <= vlo <= vhi <= 365, (vlo, vhi)
assert vlo <= mn <= mx <= vhi, (mn, mx, vlo, vhi)
top, bottom = min(math.exp(ehi), vhi), max(math.exp(elo), vlo)
# every extreme stay sits on one of the two bounds
for v in ext:
    assert abs(v - top) <= 1e-9 * top or abs(v - bottom) <= 1e-9 * max(bottom, 1e-300), (v, top, bottom)
print(f"LOS bounds {vlo:g}-{vhi:g} days, eta {elo:.4f}..{ehi:.4f}; extreme stays predicted {min(ext):.4g}-{max(ext):.4g}")
PY
sql "UPDATE features.los f SET age_years = w.age_years FROM (SELECT encounter_id, age_years FROM features.readmission) w, t_ids t
     WHERE f.encounter_id = t.encounter_id AND w.encounter_id = f.encounter_id; DROP TABLE t_ids"
ok "LOS predictions within the stored bounds (0-365 days) for absurd inputs"

# ---- --accept-failed-gates --------------------------------------------------------------
assert_exit 0 px train --model mortality --no-build --hier-boot 0 --min-epp 50 --accept-failed-gates --json
assert_eq "$(J 'd["version"], d["gates_passed"], d["gates_accepted"], d["champion"]' "$WORK/out")" "1 False True True" \
    "accepted failure becomes champion"
grep -q "accepted with --accept-failed-gates" "$WORK/err" || fail "acceptance not said: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT gates->>'accepted' FROM registry.versions WHERE name = 'mortality' AND version = 1")" true "accepted in the record"
assert_eq "$(sql "SELECT count(*) FROM registry.decisions WHERE name = 'mortality' AND decision = 'promoted'
                  AND message LIKE '%accept%' AND gates->>'passed' = 'false'")" 2 "the acceptance in the decision log"
assert_exit 0 px kpi compute --period all --json
assert_eq "$(J 'd["crude"], d["models"]["mortality"]' "$WORK/out")" "[] 1" "an accepted model adjusts"
grep -q "mortality adjusted by v1 although it failed its quality gates" "$WORK/err" || fail "kpi does not say so: $(cat "$WORK/err")"
ok "--accept-failed-gates: champion, logged, adjusts KPIs (and says so)"

# ---- retrain exit codes -----------------------------------------------------------------
px etl load --format canonical --source "$WORK/b" --quiet >/dev/null
# comparison gates that always pass: the outcome is decided by the quality gates alone;
# readmission (24.1 events per parameter) passes 18, mortality (12.8) does not
# (--hier-boot 0: the candidates' bootstrap intervals are not examined here)
R="--min-epp 18 --max-auc-drop 0.99 --slope-range -100,100 --max-rmse-rise 100 --hier-boot 0"
assert_exit 4 px retrain --model all $R
cat "$WORK/out"
assert_eq "$(sql "SELECT string_agg(name || ':' || version, ' ' ORDER BY name) FROM registry.aliases WHERE alias = 'champion'")" \
    "los:2 mortality:1 readmission:2" "champions after a retrain with one model failing its gates"
assert_eq "$(sql "SELECT decision, candidate_version, gates->>'passed' FROM registry.decisions WHERE name = 'mortality' ORDER BY decision_id DESC LIMIT 1")" \
    "kept|2|false" "mortality: the failing candidate is recorded, not promoted"
grep -q "mortality: candidate v2 failed its quality gates: events_per_parameter" "$WORK/out" || fail "retrain report: $(cat "$WORK/out")"
ok "retrain: readmission and LOS promoted, mortality failed its gates: exit 4"

assert_exit 4 px retrain --model all $R
grep -q "mortality: data and parameters unchanged since v2: nothing to train; v2 failed its quality gates" "$WORK/out" \
    || fail "unchanged failing model: $(cat "$WORK/out")"
assert_exit 3 px retrain --model readmission $R
assert_exit 0 px retrain --model mortality --max-auc-drop 0.99 --slope-range -100,100 --hier-boot 0
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'mortality' AND alias = 'champion'")" 3 "mortality v3 promoted"
assert_exit 2 px retrain --min-epp abc
assert_exit 2 px retrain --hier-boot -1
ok "retrain exit codes: 4 (gates failed, also on unchanged data), 3 (nothing new), 0 (promoted), 2 (usage)"

# ---- one SynPUF sample: the mortality model of 2 deaths ----------------------------------
# (the fixture subset under tests/fixtures/synpuf, or the full sample with PX_SYNPUF_DIR)
S1="$SYNPUF/sample-1"
use_new_home "$WORK/home-synpuf"
# a fixed key fixes the holdout patients: the same gates fail on every run
(umask 077; echo 0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed >"$PROGNOS_HOME/secret.key")
px etl load --format synpuf --source "$S1" --quiet >/dev/null || true
px features build --set all >/dev/null
assert_exit 3 px train --model mortality --no-build --hier-boot 0 --json
cat "$WORK/err"
for g in events_per_parameter holdout_events separation; do
    J 'd["gates_failed"]' "$WORK/out" | grep -q "'$g'" || fail "SynPUF mortality: $g not among the failed gates: $(cat "$WORK/out")"
done
assert_eq "$(sql "SELECT count(*) FROM registry.aliases WHERE name = 'mortality'")" 0 "SynPUF mortality not champion"
for m in readmission los; do
    assert_exit 0 px train --model $m --no-build --hier-boot 0 --accept-failed-gates --json
    echo "synpuf $m: $(cat "$WORK/out")"
done
assert_exit 0 px kpi compute --json
assert_eq "$(J 'd["crude"], d["models"]["readmission"], d["models"]["los"]' "$WORK/out")" "['mortality'] 1 1" \
    "SynPUF: mortality crude, readmission and LOS computed"
assert_eq "$(sql "SELECT count(model_version), count(expected) FROM kpi.results WHERE measure = 'mortality'")" "0|0" \
    "SynPUF mortality adjusts nothing"
assert_eq "$(sql "SELECT max(predicted) <= 365 AND min(predicted) >= 0 FROM kpi.predictions WHERE measure = 'los'")" t \
    "SynPUF LOS predictions within 0-365 days"
ok "SynPUF sample-1: mortality fails its gates (exit 3), KPIs: mortality crude, readmission and LOS computed"
