#!/usr/bin/env bash
# train_chain.sh: the whole chain on small data, as a scheduler drives it.
#  - train on generated data: first versions become champions;
#  - retrain twice on unchanged data: no second version, exit 3, decision 'unchanged';
#  - new data arrives: retrain trains v2, compares it with the champion on the same
#    holdout, and its exit code agrees with the recorded decision and the aliases;
#    impossible gates keep the champion (exit 3, 'kept');
#  - a tampered champion artifact makes retraining fail cleanly (exit 1), never crash;
#  - on the CMS DE-SynPUF samples (when ../shared is there) the chain registers all
#    three models with their metrics.
source "$(dirname "$0")/lib.sh"
px generate --patients 3000 --seed 21 --out "$WORK/a" >/dev/null
px generate --patients 3000 --seed 22 --out "$WORK/b" >/dev/null
px etl load --format canonical --source "$WORK/a" --quiet >/dev/null

assert_exit 2 px train
assert_exit 2 px train --model nosuch
assert_exit 2 px train --model readmission --algo nosuch
assert_exit 1 px train --model mine --table t.nosuch --label y
grep -q "nosuch" "$WORK/err" || fail "unknown table not named: $(cat "$WORK/err")"
ok "train usage errors"

for m in readmission mortality los; do
    assert_exit 0 px train --model $m --json
    assert_eq "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["version"])' "$WORK/out")" 1 "$m first version"
    assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = '$m' AND alias = 'champion'")" 1 "$m champion"
done
ok "first versions are champions"

assert_exit 0 px train --model readmission
grep -q "unchanged" "$WORK/out" || fail "training the same data again should say unchanged: $(cat "$WORK/out")"
assert_exit 3 px retrain --model readmission
assert_exit 3 px retrain --model all
assert_eq "$(sql "SELECT count(*) FROM registry.versions")" 3 "versions after retraining unchanged data"
assert_eq "$(sql "SELECT count(*) FROM registry.decisions WHERE decision = 'unchanged'")" 4 "'unchanged' decisions"
ok "retrain on unchanged data creates nothing and exits 3"

px etl load --format canonical --source "$WORK/b" --quiet >/dev/null
assert_exit 3 px retrain --model mortality --slope-range 5,6
assert_eq "$(sql "SELECT decision FROM registry.decisions WHERE name = 'mortality' ORDER BY decision_id DESC LIMIT 1")" kept "impossible gate"
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'mortality' AND alias = 'champion'")" 1 "champion kept"
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'mortality' AND alias = 'challenger'")" 2 "candidate is the challenger"
ok "a candidate failing a gate is kept as challenger, exit 3"

set +e; px retrain --model readmission >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
dec=$(sql "SELECT decision FROM registry.decisions WHERE name = 'readmission' ORDER BY decision_id DESC LIMIT 1")
champ=$(sql "SELECT version FROM registry.aliases WHERE name = 'readmission' AND alias = 'champion'")
case "$rc:$dec:$champ" in
    0:promoted:2|3:kept:1) ok "retrain with new data: exit $rc, decision $dec, champion v$champ";;
    *) cat "$WORK/out" "$WORK/err"; fail "retrain: exit $rc, decision '$dec', champion v$champ disagree";;
esac
grep -q "holdout rows" "$WORK/out" || fail "retrain report: $(cat "$WORK/out")"

# tamper with the los champion's model file: retraining must refuse to load it
f="$PROGNOS_HOME/registry/los/1/model.bin"
printf 'X' | dd of="$f" bs=1 seek=40 conv=notrunc 2>/dev/null
assert_exit 1 px retrain --model los
grep -qi "los" "$WORK/err" || fail "tampered champion: error does not name the model: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT decision FROM registry.decisions WHERE name = 'los' ORDER BY decision_id DESC LIMIT 1")" failed "decision after tampering"
assert_exit 1 px registry verify los 1
ok "tampered champion: retrain fails cleanly and records it"

if [ -d "$SHARED_DATA/synpuf/sample-1" ]; then
    export PROGNOS_HOME="$WORK/home-synpuf"
    px etl load --format synpuf --source "$SHARED_DATA/synpuf/sample-1" --quiet >/dev/null
    px etl load --format synpuf --source "$SHARED_DATA/synpuf/sample-2" --quiet >/dev/null
    for m in readmission mortality los; do
        assert_exit 0 px train --model $m
        echo "synpuf: $(cat "$WORK/out")"
    done
    assert_eq "$(sql "SELECT count(*) FROM registry.versions WHERE metrics ? 'overall'")" 3 "SynPUF versions with metrics"
    assert_exit 0 px registry verify readmission champion
    ok "SynPUF samples: all three models trained and registered"
else
    echo "skip: ../shared/data/synpuf not present"
fi
