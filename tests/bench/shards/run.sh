#!/usr/bin/env bash
# Sharding benchmark: the same generated warehouse on one node and distributed
# over three shards (postgres_fdw; each shard a separate embedded cluster on this
# machine): times the first load (single node; the sharded warehouse is loaded the
# same way and distributed, which is timed apart), a second batch (a quarter as
# many new patients) loaded into each (on the shards: two-phase commit,
# engine/shard_load.c), the feature build (three sets: its heavy aggregates run
# on the shards), the marts and kpi compute (crude: no model is trained) on each,
# and prints the sharded / single-node ratios of wall time and of CPU seconds
# (prognos plus every PostgreSQL cluster involved: tests/bench/cpu_of.py), the
# figure that compares on a loaded machine. On one machine the shards compete for
# the same cores and every row crosses a socket: the ratio measures postgres_fdw's
# cost, not what separate machines gain (README, Scale-out).
#   usage: tests/bench/shards/run.sh [--patients N]   (default 20000)
# Timing is reported, never asserted. Not run by ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
PATIENTS=20000
bench_options 2,15p --patients=PATIENTS -- "$@"
bench_prognos_work shards
CPU_OF="$ROOT/tests/bench/cpu_of.py"
cleanup() {
    for h in "$WORK"/*/; do PROGNOS_HOME="$h" "$PX" db stop >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$PX" generate --patients "$PATIENTS" --seed 7 --out "$WORK/data" >/dev/null
# batch 2: other patients and stays (the generator numbers ids from 1: renamed)
"$PX" generate --patients $((PATIENTS / 4)) --seed 8 --out "$WORK/gen2" >/dev/null
mkdir -p "$WORK/data2"
cp "$WORK/gen2/facilities.csv" "$WORK/gen2/providers.csv" "$WORK/data2/"
for f in patients encounters diagnoses procedures; do
    sed -E 's/\bP([0-9]{8})\b/P\1b2/g; s/\bE([0-9]{9})\b/E\1b2/g' "$WORK/gen2/$f.csv" >"$WORK/data2/$f.csv"
done
# timed CMD...: "cpu wall" (CPU: prognos and the clusters of $CLUSTERS); each
# cluster's CPU seconds (shards first, the coordinator last) go to $WORK/split
timed() {
    local p c w each
    read -r p c w each <<<"$("$CPU_OF" "$CLUSTERS" "$WORK/out" "$@")"
    echo "${*:2}: prognos $p, clusters $each" >>"$WORK/split"
    echo "$(echo "$p + $c" | bc) $w"
}
run_all() { # -> cpu and wall of features, marts, kpi
    echo "$(timed "$PX" features build) $(timed "$PX" features build --set marts) $(timed "$PX" kpi compute --force)"
}
export PROGNOS_HOME="$WORK/single"
"$PX" db init >/dev/null
CLUSTERS="$PROGNOS_HOME/pg/data"
read -r lc1 lw1 <<<"$(timed "$PX" etl load --format canonical --source "$WORK/data" --quiet)"
read -r bc1 bw1 <<<"$(timed "$PX" etl load --format canonical --source "$WORK/data2" --quiet)"
read -r fc1 fw1 mc1 mw1 kc1 kw1 <<<"$(run_all)"
"$PX" db stop >/dev/null

CLUSTERS=""
for k in 1 2 3; do
    PROGNOS_HOME="$WORK/shard$k" "$PX" db init >/dev/null
    CLUSTERS="$CLUSTERS$WORK/shard$k/pg/data:"
done
export PROGNOS_HOME="$WORK/coord"
"$PX" db init >/dev/null
CLUSTERS="$CLUSTERS$PROGNOS_HOME/pg/data"
"$PX" etl load --format canonical --source "$WORK/data" --quiet >/dev/null
for k in 1 2 3; do "$PX" db shards add "$(PROGNOS_HOME="$WORK/shard$k" "$PX" db url)" >/dev/null; done
read -r dc dw <<<"$(timed "$PX" db shards distribute)"
read -r bc3 bw3 <<<"$(timed "$PX" etl load --format canonical --source "$WORK/data2" --quiet)"
rm -f "$WORK/split"
read -r fc3 fw3 mc3 mw3 kc3 kw3 <<<"$(run_all)"
stays=$(psql -X -At "$("$PX" db url)" -c "SELECT count(*) FROM wh.fact_encounter")
printf '%s stays; wall seconds and CPU seconds (prognos + every cluster): single node | 3 shards | ratio\n' "$stays"
printf '%-13s wall %7.2f cpu %7.2f | the same load, then distribute: wall %.2f cpu %.2f\n' load "$lw1" "$lc1" "$dw" "$dc"
for row in "batch2 $bw1 $bw3 $bc1 $bc3" "features $fw1 $fw3 $fc1 $fc3" "marts $mw1 $mw3 $mc1 $mc3" "kpi $kw1 $kw3 $kc1 $kc3"; do
    set -- $row
    printf '%-13s wall %7.2f | %7.2f | %5.2f    cpu %7.2f | %7.2f | %5.2f\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)" \
        "$4" "$5" "$(echo "$5 / $4" | bc -l)"
done
echo "CPU seconds on the sharded warehouse (clusters: shard 1, 2, 3, coordinator):"
sed 's/^/  /' "$WORK/split"
