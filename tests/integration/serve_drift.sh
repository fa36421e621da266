#!/usr/bin/env bash
# serve_drift.sh: drift monitoring. Unshifted feature rows fed to the server raise no
# alert; a feed with one input shifted on purpose raises an alert naming that input
# (stored in serve.drift_alerts, shown at /v1/alerts and in /metrics), and a clean
# window afterwards resolves it. `prognos drift check` does the same for newly
# loaded warehouse rows: nothing new (exit 3), unshifted (no alert), shifted (an
# alert naming the input, source 'drift check').
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
setup_model 4000 21
READ=$(new_key read); PRED=$(new_key predict)
# the training period's rows (the reference describes them)
cut=$(sql "SELECT split ->> 'holdout_from' FROM registry.versions WHERE name = 'readmission' AND version = 1")
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission WHERE ('$cut' = '' OR discharge_date < '$cut'::date)
     ORDER BY md5(encounter_id::text) LIMIT 3000) t" >"$WORK/rows.json"

# Windows are driven by the count alone (every 1000 rows; the age limit is out of
# reach), and each closed window is tested on its own however late the poller runs,
# so the number of windows and their sizes do not depend on the machine's load. The
# test waits for windows_recorded (tested and their alerts stored), then asserts.
start_server --drift-window 1000 --drift-min-n 100 --drift-min-interval 0 --drift-window-seconds 10000000 --poll-ms 200
wait_key "$READ"
windows() { curl -s -H "Authorization: Bearer $READ" "$URL/v1/drift" |
            "$PY" -c 'import json,sys; print(sum(m["windows_recorded"] for m in json.load(sys.stdin)["monitors"]))'; }
windows_reached() { [ "$(windows)" -ge "$1" ]; }
wait_windows() { # n: then exactly n
    wait_for "$1 drift windows" windows_reached "$1"
    assert_eq "$(windows)" "$1" "drift windows tested and recorded"
}
alerts_json() { curl -s -H "Authorization: Bearer $READ" "$URL/v1/alerts?model=readmission&open=true"; }

"$PY" "$CLIENT" feed "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 3000 --batch 50 --seed 1 >/dev/null
wait_windows 3
assert_eq "$(sql "SELECT count(*) FROM serve.drift_alerts")" 0 "alerts after unshifted windows"
assert_eq "$(alerts_json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["alerts"]))')" 0 "/v1/alerts after unshifted windows"
curl -s -H "Authorization: Bearer $READ" "$URL/v1/drift" >"$WORK/drift.json"
"$PY" - "$WORK/drift.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))["monitors"][0]["last_window"]
assert m["n"] == 1000 and m["alerts"] == 0, m
v = {x["name"]: x for x in m["variables"] if x["tested"]}
assert "age_years" in v and "score" in v and "admission_source" in v, list(v)
assert v["age_years"]["kind"] == "numeric" and v["admission_source"]["kind"] == "categorical"
assert all(x["psi"] <= x["psi_threshold"] for x in v.values()), [(k, x["psi"], x["psi_threshold"]) for k, x in v.items()]
print("ok - unshifted: 3 windows of 1000, no alert; largest PSI %.4f" % max(x["psi"] for x in v.values()))
PYEOF

# shifted: patients 12 years older
"$PY" "$CLIENT" feed "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 1000 --batch 50 --seed 2 \
    --shift age_years:12 >/dev/null
wait_windows 4
assert_eq "$(sql "SELECT string_agg(DISTINCT feature, ',') FROM serve.drift_alerts WHERE feature <> 'score'")" age_years \
    "the inputs named by alerts of an age-shifted feed"
assert_eq "$(sql "SELECT DISTINCT source FROM serve.drift_alerts")" serve "alert source"
# /v1/alerts is a cache the poller refreshes every poll after storing: wait for it
alerts_cached() { alerts_json | "$PY" -c 'import json,sys; sys.exit(not any(x["feature"] == "age_years" for x in json.load(sys.stdin)["alerts"]))'; }
wait_for "the age alert in /v1/alerts" alerts_cached
alerts_json | "$PY" -c '
import json, sys
a = [x for x in json.load(sys.stdin)["alerts"] if x["feature"] == "age_years"]
assert a and a[0]["open"] and a[0]["version"] == 1 and a[0]["window_n"] == 1000 and a[0]["statistic"] > a[0]["threshold"], a
print("ok - shifted age: alert on age_years (%s = %.3f > %.3f)" % (a[0]["test"], a[0]["statistic"], a[0]["threshold"]))'
curl -s -H "Authorization: Bearer $READ" "$URL/metrics" | grep -q 'prognos_drift_alert_open{model="readmission",version="1",feature="age_years"' \
    || fail "/metrics does not show the open alert"

# a categorical shift: half the stays transferred in from another hospital
"$PY" "$CLIENT" feed "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 1000 --batch 50 --seed 3 \
    --set 'admission_source:"transfer_hospital":0.5' >/dev/null
wait_windows 5
assert_eq "$(sql "SELECT count(*) FROM serve.drift_alerts WHERE feature = 'admission_source' AND resolved_at IS NULL")" 1 "admission_source alert"
assert_eq "$(sql "SELECT count(*) FROM serve.drift_alerts WHERE feature = 'age_years' AND resolved_at IS NOT NULL")" 1 \
    "the age alert is resolved by a window with unshifted ages"
ok "categorical shift: alert on admission_source; the age alert resolved"
stop_server

# windows that close while the poller cannot test them (the database away) wait in
# the queue, each tested on its own when it is back: 3 windows of 1000, not one of 3000
start_server --drift-window 1000 --drift-min-n 100 --drift-min-interval 0 --drift-window-seconds 10000000 \
    --poll-ms 200 --audit-queue 100000
wait_key "$READ"
px db stop >/dev/null
"$PY" "$CLIENT" feed "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 3000 --batch 50 --seed 4 >/dev/null
waiting() { curl -s -H "Authorization: Bearer $READ" "$URL/v1/drift" | "$PY" -c 'import json,sys; print(sum(m["windows_waiting"] for m in json.load(sys.stdin)["monitors"]))'; }
assert_eq "$(waiting)" 3 "windows waiting while the database is away"
assert_eq "$(windows)" 0 "windows recorded while the database is away"
px db start >/dev/null
wait_windows 3
curl -s -H "Authorization: Bearer $READ" "$URL/v1/drift" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)["monitors"][0]
assert m["last_window"]["n"] == 1000 and m["windows_tested"] == 3 and m["windows_waiting"] == 0, m
print("ok - 3 windows closed while the database was away, each tested on its own (n 1000)")'
stop_server

# prognos drift check on newly loaded rows
assert_exit 3 px drift check
px generate --patients 2000 --seed 22 --out "$WORK/b" >/dev/null
fresh_ids "$WORK/b" N
px etl load --format canonical --source "$WORK/b" --quiet >/dev/null
px features build --set readmission >/dev/null
assert_exit 0 px drift check --model readmission --json
"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
m = d["models"][0]
assert d["alerts"] == 0 and m["tested"] and m["new_rows"] > 500, (d["alerts"], m["new_rows"], [(v["name"], v["psi"], v["psi_threshold"]) for v in m["last_window"]["variables"] if v["alert"]])
print("ok - drift check, unshifted new batch: %d new rows, no alert" % m["new_rows"])' "$WORK/out"
batch=$(sql "SELECT max(batch_id) FROM etl.batches")
sql "UPDATE features.readmission f SET age_years = least(f.age_years + 12, 120) FROM wh.fact_encounter e
     WHERE e.encounter_id = f.encounter_id AND e.batch_id = $batch" >/dev/null
assert_exit 1 px drift check --model readmission --fail-on-alert
grep -q "ALERT age_years" "$WORK/out" || fail "drift check report: $(cat "$WORK/out")"
assert_eq "$(sql "SELECT string_agg(DISTINCT feature, ',') FROM serve.drift_alerts WHERE source = 'drift check' AND feature <> 'score'")" \
    age_years "inputs named by drift check alerts"
assert_exit 0 px drift check --since-batch "$batch"
grep -q "ALERT age_years" "$WORK/out" || fail "drift check --since-batch: $(cat "$WORK/out")"
assert_eq "$(sql "SELECT windows FROM serve.drift_alerts WHERE source = 'drift check' AND feature = 'age_years'")" 2 \
    "a repeated alert updates the open one"
ok "drift check: shifted new rows raise an alert naming age_years"
