#!/usr/bin/env bash
# demo.sh: the main job on the embedded default. Installs and builds what is
# missing, starts the embedded warehouse in ./var, generates a synthetic hospital
# system, loads it (and the CMS DE-SynPUF sample, when ../shared has it), prints
# the load report, builds the feature tables, trains and registers the readmission,
# mortality and length-of-stay models, lists the registry, computes the risk-adjusted
# KPIs, writes the executive report ($PROGNOS_HOME/kpi-report.html), starts the
# prediction server in the background and makes one prediction with curl.
set -euo pipefail
# -h, --help: the comment above
case "${1:-}" in -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0;; esac
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
    rc=0
    $PX train --model "$m" --no-build || rc=$?
    # 3: the version failed a quality gate: registered, not champion; its KPIs are computed crude
    [ $rc -eq 0 ] || [ $rc -eq 3 ] || exit $rc
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
# the prediction server: in the background on DEMO_LISTEN, one prediction with curl
LISTEN=${DEMO_LISTEN:-127.0.0.1:8080}
KEY=$($PX apikey create --role predict --name demo 2>/dev/null)
READ=$($PX apikey create --role read --name demo 2>/dev/null)
nohup $PX serve --listen "$LISTEN" >"$PROGNOS_HOME/log/serve.out" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do curl -sf "http://$LISTEN/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://$LISTEN/readyz" >/dev/null || { cat "$PROGNOS_HOME/log/serve.out"; exit 1; }
for _ in $(seq 1 50); do curl -sf -H "Authorization: Bearer $READ" "http://$LISTEN/v1/models/readmission" >"$PROGNOS_HOME/schema.json" && break; sleep 0.2; done
BODY=$(psql -X -q -At "$($PX db url)" -c "SELECT row_to_json(t) FROM features.readmission t ORDER BY discharge_date DESC LIMIT 1" |
       python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["serving"]["schema"]["features"]; r=json.load(sys.stdin)
print(json.dumps({"instances": [{f["name"]: r[f["name"]] for f in s}]}))' "$PROGNOS_HOME/schema.json")
echo "server: http://$LISTEN (pid $SERVE_PID; stop it: kill $SERVE_PID); API: http://$LISTEN/openapi.json"
echo "curl -s -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\"
echo "     --data '$BODY' http://$LISTEN/v1/models/readmission/predict"
curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' --data "$BODY" \
     "http://$LISTEN/v1/models/readmission/predict"
echo
echo "warehouse: psql \"\$($PX db url)\"    stop it: $PX db stop"
