#!/usr/bin/env bash
# Sharding benchmark: the same generated warehouse on one node and distributed
# over three shards (postgres_fdw; each shard a separate embedded cluster on this
# machine): times the first load (single node; the sharded warehouse is loaded the
# same way and distributed, which is timed apart), a second batch (a quarter as
# many new patients) loaded into each (on the shards: two-phase commit,
# engine/shard_load.c), the feature build (three sets), the marts and kpi compute
# (crude: no model is trained) on each, and prints the sharded / single-node
# ratios. On one machine the shards compete for the same cores and every row
# crosses a socket: the ratio measures postgres_fdw's cost, not what separate
# machines gain (README, Scale-out).
#   usage: tests/bench/shards/run.sh [--patients N]   (default 20000)
# Timing is reported, never asserted. Not run by ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
PATIENTS=20000
bench_options 2,13p --patients=PATIENTS -- "$@"
bench_prognos_work shards
cleanup() {
    for h in "$WORK"/*/; do PROGNOS_HOME="$h" "$PX" db stop >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

"$PX" generate --patients "$PATIENTS" --seed 7 --out "$WORK/data" >/dev/null
# batch 2: other patients and stays (the generator numbers ids from 1: renamed)
"$PX" generate --patients $((PATIENTS / 4)) --seed 8 --out "$WORK/gen2" >/dev/null
mkdir -p "$WORK/data2"
cp "$WORK/gen2/facilities.csv" "$WORK/gen2/providers.csv" "$WORK/data2/"
for f in patients encounters diagnoses procedures; do
    sed -E 's/\bP([0-9]{8})\b/P\1b2/g; s/\bE([0-9]{9})\b/E\1b2/g' "$WORK/gen2/$f.csv" >"$WORK/data2/$f.csv"
done
run_all() { # label -> prints times of features, marts, kpi
    local a b c d
    a=$(now); "$PX" features build >/dev/null
    b=$(now); "$PX" features build --set marts >/dev/null
    c=$(now); "$PX" kpi compute --force >/dev/null 2>&1
    d=$(now)
    echo "$(secs "$a" "$b") $(secs "$b" "$c") $(secs "$c" "$d")"
}
export PROGNOS_HOME="$WORK/single"
t0=$(now); "$PX" etl load --format canonical --source "$WORK/data" --quiet >/dev/null; t1=$(now)
load1=$(secs "$t0" "$t1")
t0=$(now); "$PX" etl load --format canonical --source "$WORK/data2" --quiet >/dev/null; t1=$(now)
b2s=$(secs "$t0" "$t1")
read -r f1 m1 k1 <<<"$(run_all)"
"$PX" db stop >/dev/null

for k in 1 2 3; do PROGNOS_HOME="$WORK/shard$k" "$PX" db init >/dev/null; done
export PROGNOS_HOME="$WORK/coord"
"$PX" etl load --format canonical --source "$WORK/data" --quiet >/dev/null
for k in 1 2 3; do "$PX" db shards add "$(PROGNOS_HOME="$WORK/shard$k" "$PX" db url)" >/dev/null; done
t0=$(now); "$PX" db shards distribute >/dev/null; t1=$(now)
dist=$(secs "$t0" "$t1")
t0=$(now); "$PX" etl load --format canonical --source "$WORK/data2" --quiet >/dev/null; t1=$(now)
b2d=$(secs "$t0" "$t1")
read -r f3 m3 k3 <<<"$(run_all)"
stays=$(psql -X -At "$("$PX" db url)" -c "SELECT count(*) FROM wh.fact_encounter")
printf '%s stays; seconds: single node | 3 shards | ratio\n' "$stays"
printf 'load            %8.2f | the same load, then distribute %.2f\n' "$load1" "$dist"
for row in "load batch 2 $b2s $b2d" "features $f1 $f3" "marts $m1 $m3" "kpi $k1 $k3"; do
    set -- $row
    [ $# -eq 5 ] && set -- "$1 $2 $3" "$4" "$5"
    printf '%-15s %8.2f | %8.2f | %5.2f\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"
done
