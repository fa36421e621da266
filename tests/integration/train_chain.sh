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
# (Training and retraining here use --hier-boot 0: the hierarchical bootstrap intervals are
# not examined, and its 20 refits per model were most of the CPU time.)
# A fixed pseudonymization key fixes the holdout patients, so whether a model passes
# its quality gates is the same on every run (serve_lib.sh's setup_model does the same)
(umask 077; echo 7e57c4a17e57c4a17e57c4a17e57c4a17e57c4a17e57c4a17e57c4a17e57c4a1 >"$PROGNOS_HOME/secret.key")
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
    assert_exit 0 px train --model $m --hier-boot 0 --json
    assert_eq "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["version"])' "$WORK/out")" 1 "$m first version"
    assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = '$m' AND alias = 'champion'")" 1 "$m champion"
done
ok "first versions are champions"

# the split and the subgroup counts, recomputed from the feature tables (train_split_check.py)
for ms in readmission:discharge_date:readmit_30d mortality:admission_date:death_30d; do
    IFS=: read -r m tcol lab <<<"$ms"
    psql -X -q -At -v ON_ERROR_STOP=1 "$(px db url)" -c "COPY (SELECT patient_id, $tcol, $lab, female, age_years
        FROM features.$m WHERE $lab IS NOT NULL) TO STDOUT WITH CSV" >"$WORK/rows.csv"
    python3 "$PROGNOS_SRC/tests/integration/train_split_check.py" \
        "$(sql "SELECT split FROM registry.versions WHERE name = '$m' AND version = 1")" \
        "$(sql "SELECT metrics FROM registry.versions WHERE name = '$m' AND version = 1")" <"$WORK/rows.csv" \
        || fail "$m v1: split or subgroups differ from the recomputation"
done
ok "holdout split and subgroup counts recomputed independently"

# (with the default 20 bootstrap draws: an unchanged version's hierarchical model is not fitted again)
assert_exit 0 px train --model readmission
grep -q "unchanged" "$WORK/out" || fail "training the same data again should say unchanged: $(cat "$WORK/out")"
grep -q "^hierarchical model not refitted: v1 was trained on the same data with the same model parameters" "$WORK/out" \
    || fail "training unchanged data fitted the hierarchical model again: $(cat "$WORK/out")"
assert_exit 3 px retrain --model readmission --hier-boot 0
assert_exit 3 px retrain --model all --hier-boot 0
assert_eq "$(sql "SELECT count(*) FROM registry.versions")" 3 "versions after retraining unchanged data"
assert_eq "$(sql "SELECT count(*) FROM registry.decisions WHERE decision = 'unchanged'")" 4 "'unchanged' decisions"
ok "retrain on unchanged data creates nothing and exits 3"

# a data scientist's own model (--table) with its own settings: retraining keeps them
sql "CREATE SCHEMA t; CREATE TABLE t.r AS SELECT * FROM features.readmission"
# (four features on 3,000 patients may fail the quality gates: accepted, so that it is champion)
assert_exit 0 px train --model mine --table t.r --label readmit_30d --hier-boot 0 --features age_years,female,prior_adm_12m,emergency \
    --l2 0.5 --holdout-patients 0.2 --holdout-time 0.3 --accept-failed-gates
assert_exit 3 px retrain --model mine --hier-boot 0
assert_eq "$(sql "SELECT count(*) FROM registry.versions WHERE name = 'mine'")" 1 "own model: versions after retraining unchanged data"
assert_eq "$(sql "SELECT decision FROM registry.decisions WHERE name = 'mine' ORDER BY decision_id DESC LIMIT 1")" unchanged "own model: decision on unchanged data"
ok "retraining a user's own model on unchanged data: nothing new, exit 3"

px etl load --format canonical --source "$WORK/b" --quiet >/dev/null
assert_exit 3 px retrain --model mortality --hier-boot 0 --slope-range 5,6 --min-epp 0 --min-holdout-events 0 --gate-slope -100,100
assert_eq "$(sql "SELECT decision || ' ' || (gates->>'slope_ok') FROM registry.decisions WHERE name = 'mortality' ORDER BY decision_id DESC LIMIT 1")" "kept false" "impossible gate"
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'mortality' AND alias = 'champion'")" 1 "champion kept"
assert_eq "$(sql "SELECT version FROM registry.aliases WHERE name = 'mortality' AND alias = 'challenger'")" 2 "candidate is the challenger"
ok "a candidate failing a gate is kept as challenger, exit 3"

set +e; px retrain --model readmission --hier-boot 0 >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
dec=$(sql "SELECT decision FROM registry.decisions WHERE name = 'readmission' ORDER BY decision_id DESC LIMIT 1")
champ=$(sql "SELECT version FROM registry.aliases WHERE name = 'readmission' AND alias = 'champion'")
chal=$(sql "SELECT version FROM registry.aliases WHERE name = 'readmission' AND alias = 'challenger'")
case "$rc:$dec:$champ:$chal" in
    0:promoted:2:1|3:kept:1:2|4:kept:1:) ok "retrain with new data: exit $rc, decision $dec, champion v$champ, challenger v$chal";;
    *) cat "$WORK/out" "$WORK/err"; fail "retrain: exit $rc, decision '$dec', champion v$champ, challenger v$chal disagree";;
esac
grep -q "holdout rows" "$WORK/out" || fail "retrain report: $(cat "$WORK/out")"
# the decision follows from its own metrics and the default gates; the paired DeLong
# difference is candidate minus champion; both were scored on the candidate's holdout rows
assert_eq "$(sql "SELECT ((m->'candidate'->>'auc')::float8 >= (m->'champion'->>'auc')::float8 - 0.01
                          AND (m->'candidate'->>'cal_slope')::float8 BETWEEN 0.8 AND 1.2) = (decision = 'promoted'),
                         abs((m->'delong'->>'diff')::float8 - ((m->'candidate'->>'auc')::float8 - (m->'champion'->>'auc')::float8)) < 2e-6,
                         (m->>'holdout_rows')::int = (SELECT (split->>'holdout_rows')::int FROM registry.versions v
                                                     WHERE v.name = d.name AND v.version = d.candidate_version),
                         abs((m->'candidate'->>'auc')::float8 - (SELECT (metrics->'overall'->>'auc')::float8 FROM registry.versions v
                                                     WHERE v.name = d.name AND v.version = d.candidate_version)) < 1e-6
                  FROM (SELECT *, metrics AS m FROM registry.decisions WHERE name = 'readmission' ORDER BY decision_id DESC LIMIT 1) d")" \
    "t|t|t|t" "retrain decision vs its metrics"
ok "retrain decision agrees with its gates and metrics"

# the user's table grows: the candidate keeps the champion's features, penalty and holdout shares
sql "DROP TABLE t.r; CREATE TABLE t.r AS SELECT * FROM features.readmission"
set +e; px retrain --model mine --hier-boot 0 >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
dec=$(sql "SELECT decision FROM registry.decisions WHERE name = 'mine' ORDER BY decision_id DESC LIMIT 1")
case "$rc:$dec" in
    0:promoted|3:kept|4:kept) ;;
    *) cat "$WORK/out" "$WORK/err"; fail "own model retrain: exit $rc, decision '$dec'";;
esac
assert_eq "$(sql "SELECT params->>'l2', params->'features', split->>'holdout_patient_share', split->>'holdout_time_share'
                  FROM registry.versions WHERE name = 'mine' AND version = 2")" \
    '0.5|["age_years", "female", "prior_adm_12m", "emergency"]|0.2|0.3' "own model v2 settings"
ok "own model retrained on new data with the champion's settings: exit $rc, $dec"

# tamper with the los champion's model file: retraining must refuse to load it
f="$PROGNOS_HOME/registry/los/1/model.bin"
printf 'X' | dd of="$f" bs=1 seek=40 conv=notrunc 2>/dev/null
assert_exit 1 px retrain --model los --hier-boot 0
grep -qi "los" "$WORK/err" || fail "tampered champion: error does not name the model: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT decision FROM registry.decisions WHERE name = 'los' ORDER BY decision_id DESC LIMIT 1")" failed "decision after tampering"
assert_exit 1 px registry verify los 1
ok "tampered champion: retrain fails cleanly and records it"

# real CMS DE-SynPUF data (the fixture subset, or PX_SYNPUF_DIR)
use_new_home "$WORK/home-synpuf"
# A fixed key fixes the holdout patients. The fixture subset has a handful of deaths, and
# with the fixture's key (new in each ctest run) all of them could fall in the holdout:
# mortality then had one class to train on and exited 1 (seen once in a suite run). With
# this key mortality and readmission fail their gates (exit 3) and LOS passes (exit 0).
(umask 077; echo 0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed0b5e55ed >"$PROGNOS_HOME/secret.key")
px etl load --format synpuf --source "$SYNPUF/sample-1" --quiet >/dev/null
px etl load --format synpuf --source "$SYNPUF/sample-2" --quiet >/dev/null
# a model may fail its quality gates on real claims (few deaths): exit 3, registered, not champion
for m in readmission mortality los; do
    set +e; px train --model $m --hier-boot 0 >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
    echo "synpuf: exit $rc: $(cat "$WORK/out")"
    passed=$(sql "SELECT gates->>'passed' FROM registry.versions WHERE name = '$m' ORDER BY version DESC LIMIT 1")
    champ=$(sql "SELECT count(*) FROM registry.aliases WHERE name = '$m' AND alias = 'champion'")
    case "$rc:$passed:$champ" in
        0:true:1|3:false:0) ;;
        *) cat "$WORK/err"; fail "SynPUF $m: exit $rc, gates passed '$passed', champion $champ disagree";;
    esac
done
assert_eq "$(sql "SELECT count(*) FROM registry.versions WHERE metrics ? 'overall'")" 3 "SynPUF versions with metrics"
assert_exit 0 px registry verify readmission 1
ok "SynPUF samples: all three models trained and registered, champions only where the gates passed"
