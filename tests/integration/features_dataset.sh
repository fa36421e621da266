#!/usr/bin/env bash
# features_dataset.sh: px_dataset_load on a real warehouse. Loads a small generated
# dataset, builds the feature tables, then runs the C test program
# (test_dataset_load.c) against the warehouse's URI.
. "$(dirname "$0")/lib.sh"
: "${PX_TEST_DATASET_LOAD:?set PX_TEST_DATASET_LOAD to the test_dataset_load binary}"
px generate --patients 1500 --seed 21 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
px features build >/dev/null
"$PX_TEST_DATASET_LOAD" "$(px db url)" || fail "test_dataset_load failed"
ok "px_dataset_load: values, order, roles, levels, escapes, dropped labels, errors"
