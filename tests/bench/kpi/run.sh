#!/usr/bin/env bash
# KPI benchmark: every measure (volume, readmission, mortality, LOS, cost) for
# every period kind (month, quarter, year, all) and unit (system, facility,
# department) on ~1M encounters x 200 facilities x 36 months: generate, load,
# build features and train once (not timed), then time `prognos kpi compute
# --force` REPS times. Prints wall time, its phases (inputs, models compiled or
# scored in C, the one SQL pass, roll-ups and statistics, storing) and
# encounters per second; beside it, as a floor measured in the same run, one
# plain SELECT ... GROUP BY to the same finest cells over the same tables
# (the three feature tables and the stays, no model); then times one report.
# Beside each wall time, the CPU seconds (prognos and the PostgreSQL cluster,
# tests/bench/cpu_of.py): on a loaded machine those are the figures to compare.
#   usage: tests/bench/kpi/run.sh [--patients N] [--reps R]   (default 360000 patients: ~1.0M stays in
#   2021-2023; 3 reps)
# Timing is reported, never asserted: these machines are noisy. Not run by ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
PATIENTS=360000 REPS=3
bench_options 2,11p --patients=PATIENTS --reps=REPS -- "$@"
bench_prognos_work kpi
export PROGNOS_HOME="$WORK/home"
trap '"$PX" db stop >/dev/null 2>&1 || true; [ -L "$PROGNOS_HOME/pg" ] && rm -rf "$(readlink -f "$PROGNOS_HOME/pg")"; rm -rf "$WORK"' EXIT
now() { date +%s.%N; }

t0=$(now)
"$PX" generate --patients "$PATIENTS" --facilities 200 --years 2021-2023 --seed 1 --out "$WORK/data" >/dev/null
"$PX" etl load --format canonical --source "$WORK/data" --quiet >/dev/null
"$PX" features build --set all >/dev/null
for m in readmission mortality los; do "$PX" train --model "$m" --no-build --accept-failed-gates >/dev/null; done
printf 'setup (generate, load, features, train): %.0f s\n' "$(echo "$(now) - $t0" | bc)"
ENC=$(psql -X -At "$("$PX" db url)" -c "SELECT count(*) FROM wh.fact_encounter")
FAC=$(psql -X -At "$("$PX" db url)" -c "SELECT count(DISTINCT facility_id) FROM wh.fact_encounter")
MON=$(psql -X -At "$("$PX" db url)" -c "SELECT count(DISTINCT date_trunc('month', discharge_date)) FROM wh.fact_encounter")
echo "input: $ENC encounters, $FAC facilities, $MON discharge months; $REPS repetitions"

# the floor: the pass's GROUP BY without the models (count and label sums per cell)
FLOOR_SQL="SELECT count(*) FROM (
  SELECT 'r', extract(year FROM discharge_date)::int * 12 + extract(month FROM discharge_date)::int, facility_id,
         department, count(*), sum(readmit_30d::float8) FROM features.readmission WHERE readmit_30d IS NOT NULL GROUP BY 2, 3, 4
  UNION ALL SELECT 'm', extract(year FROM discharge_date)::int * 12 + extract(month FROM discharge_date)::int, facility_id,
         department, count(*), sum(death_30d::float8) FROM features.mortality WHERE death_30d IS NOT NULL GROUP BY 2, 3, 4
  UNION ALL SELECT 'l', extract(year FROM discharge_date)::int * 12 + extract(month FROM discharge_date)::int, facility_id,
         department, count(*), sum(los_days::float8) FROM features.los WHERE los_days IS NOT NULL GROUP BY 2, 3, 4
  UNION ALL SELECT 's', extract(year FROM discharge_date)::int * 12 + extract(month FROM discharge_date)::int, facility_id,
         department, count(*), sum(total_cost)::float8 FROM wh.fact_encounter GROUP BY 2, 3, 4) s"
PGDATA=$(readlink -f "$PROGNOS_HOME/pg")/data
CPU_OF="$ROOT/tests/bench/cpu_of.py"
secs=() floors=() cpus=() fcpus=()
for rep in $(seq 1 "$REPS"); do
    # CPU seconds beside wall time: on a loaded machine they are the figure to compare
    read -r ccpu pcpu _ < <("$CPU_OF" "$PGDATA" "$WORK/kpi.json" "$PX" kpi compute --force --json)
    out=$(cat "$WORK/kpi.json")
    read -r s si sc sq st so sco res < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["seconds"], j["seconds_inputs"], j["seconds_score"], j["seconds_sql"], j["seconds_stats"], j["seconds_store"], j["scored"], j["results"])' "$out")
    secs+=("$s")
    cpus+=("$(echo "$ccpu + $pcpu" | bc)")
    read -r fccpu fpcpu fl < <("$CPU_OF" "$PGDATA" /dev/null psql -X -q -At "$("$PX" db url)" -c "$FLOOR_SQL")
    floors+=("$fl")
    fcpus+=("$(echo "$fccpu + $fpcpu" | bc)")
    printf 'rep %d: kpi compute %.2f s (inputs %.2f, models %.2f, SQL pass %.2f, roll-ups + statistics %.2f, store %.2f): %s rows scored, %s results; %.0f encounters/s; CPU %.2f s (prognos %.2f, PostgreSQL %.2f); floor %.2f s, CPU %.2f s (ratio %.2f wall, %.2f CPU)\n' \
        "$rep" "$s" "$si" "$sc" "$sq" "$st" "$so" "$sco" "$res" "$(echo "$ENC / $s" | bc -l)" "${cpus[-1]}" "$ccpu" "$pcpu" \
        "$fl" "${fcpus[-1]}" "$(echo "$s / $fl" | bc -l)" "$(echo "${cpus[-1]} / ${fcpus[-1]}" | bc -l)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med=$(median "${secs[@]}") fmed=$(median "${floors[@]}") cmed=$(median "${cpus[@]}") fcmed=$(median "${fcpus[@]}")
printf 'median: %.2f s, %.0f encounters/s (every measure, period kind and unit); floor (plain GROUP BY) median %.2f s; ratio %.2f\n' \
    "$med" "$(echo "$ENC / $med" | bc -l)" "$fmed" "$(echo "$med / $fmed" | bc -l)"
printf 'median CPU: kpi compute %.2f s, floor %.2f s; ratio %.2f (load average now %s)\n' "$cmed" "$fcmed" \
    "$(echo "$cmed / $fcmed" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
t0=$(now)
"$PX" kpi report --period month --out "$WORK/report.html" --json "$WORK/report.json" --csv "$WORK/report.csv" >/dev/null
printf 'report (latest month, HTML + JSON + CSV): %.2f s, %d KiB of HTML\n' "$(echo "$(now) - $t0" | bc)" \
    "$(( $(wc -c < "$WORK/report.html") / 1024 ))"
