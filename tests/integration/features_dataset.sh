#!/usr/bin/env bash
# features_dataset.sh: px_dataset_load on a real warehouse. Loads a small generated
# dataset, builds the feature tables, then runs the C test program
# (test_dataset_load.c) against the warehouse's URI; then lists the builds.
. "$(dirname "$0")/lib.sh"
: "${PX_TEST_DATASET_LOAD:?set PX_TEST_DATASET_LOAD to the test_dataset_load binary}"
px generate --patients 1500 --seed 21 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
px features build >/dev/null
"$PX_TEST_DATASET_LOAD" "$(px db url)" || fail "test_dataset_load failed"
ok "px_dataset_load: values, order, roles, levels, escapes, dropped labels, errors"

# the catalog of the builds, as a user lists it; usage errors exit 2
assert_exit 0 px features list --json
assert_eq "$(python3 -c 'import json,sys; print(" ".join(x["set"] + ":" + str(x["table_exists"]) for x in json.load(open(sys.argv[1]))))' "$WORK/out")" \
    "los:True mortality:True readmission:True" "features list --json"
assert_exit 0 px features list
assert_eq "$(awk 'NR > 1 {print $1, $2}' "$WORK/out" | tr '\n' ' ')" "los features.los mortality features.mortality readmission features.readmission " \
    "features list"
assert_exit 2 px features list --bogus
grep -q "unknown option '--bogus'" "$WORK/err" || fail "features list --bogus: $(cat "$WORK/err")"
assert_exit 2 px features frobnicate
grep -q "unknown subcommand 'frobnicate'" "$WORK/err" || fail "features frobnicate: $(cat "$WORK/err")"
assert_exit 0 px features --help
grep -q "features build" "$WORK/out" || fail "features --help"
ok "features list (text and JSON) names the three sets; usage errors exit 2"
