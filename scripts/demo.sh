#!/usr/bin/env bash
# demo.sh: the main job on the embedded default. Installs and builds what is
# missing, starts the embedded warehouse in ./var, generates a synthetic hospital
# system, loads it (and the CMS DE-SynPUF sample, when ../shared has it), prints
# the load report, builds the feature tables, trains and registers the readmission,
# mortality and length-of-stay models, lists the registry, computes the risk-adjusted
# KPIs and writes the executive report ($PROGNOS_HOME/kpi-report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PX=build/engine/cli/prognos
export PROGNOS_HOME=${PROGNOS_HOME:-$(pwd)/var}
PATIENTS=${DEMO_PATIENTS:-20000}

$PX db init
DATA="$PROGNOS_HOME/demo-data"
[ -f "$DATA/truth.json" ] || $PX generate --patients "$PATIENTS" --seed 42 --out "$DATA"
set +e
$PX etl load --format canonical --source "$DATA"
rc=$?
[ -d ../shared/data/synpuf/sample-1 ] && $PX etl load --format synpuf --source ../shared/data/synpuf/sample-1
set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || exit $rc   # 3: loaded before, nothing new
$PX etl status
echo
$PX features build --set all
for m in readmission mortality los; do
    $PX train --model "$m" --no-build
done
echo
$PX registry list
echo
set +e
$PX kpi compute
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || exit $rc   # 3: computed before from the same models and data
$PX kpi report --period year --out "$PROGNOS_HOME/kpi-report.html" --json "$PROGNOS_HOME/kpi-report.json" \
    --csv "$PROGNOS_HOME/kpi-report.csv"
echo
echo "warehouse: psql \"\$($PX db url)\"    stop it: $PX db stop"
