#!/usr/bin/env bash
# ETL benchmark: load a generated canonical dataset of ~1M encounters (with its
# patients, diagnoses and procedures) end to end with `prognos etl load`, and in
# the same run, on the same server, `psql \copy` the same six files into plain
# unlogged tables (text columns, no indexes, no checks). Each repetition starts
# from an empty warehouse. Prints rows/s for both, medians and the ratio.
#   usage: tests/bench/etl/run.sh [--patients N] [--reps R]   (default 250000 patients, 3 reps)
# Timing is reported, never asserted: these machines are noisy.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PATIENTS=250000 REPS=3
while [ $# -gt 0 ]; do
    case $1 in
        --patients) PATIENTS=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
PX="$ROOT/build/engine/cli/prognos"
[ -x "$PX" ] || "$ROOT/scripts/setup.sh"
WORK=$(mktemp -d /tmp/prognos-bench-etl.XXXXXX)
chmod 755 "$WORK"
trap 'for h in "$WORK"/home*; do PROGNOS_HOME=$h "$PX" db stop >/dev/null 2>&1 || true; done; rm -rf "$WORK"' EXIT
DATA="$WORK/data"
"$PX" generate --patients "$PATIENTS" --seed 1 --out "$DATA"
ROWS=0
for f in "$DATA"/*.csv; do ROWS=$((ROWS + $(wc -l < "$f") - 1)); done
BYTES=$(cat "$DATA"/*.csv | wc -c)
echo "input: $ROWS rows, $((BYTES / 1048576)) MiB in 6 files; $REPS repetitions"

now() { date +%s.%N; }
etl_s=() raw_s=()
for rep in $(seq 1 "$REPS"); do
    export PROGNOS_HOME="$WORK/home$rep"
    "$PX" db init >/dev/null
    URL=$("$PX" db url)
    t0=$(now)
    "$PX" etl load --format canonical --source "$DATA" --quiet >/dev/null
    t1=$(now)
    etl_s+=("$(echo "$t1 - $t0" | bc)")
    # the reference: plain unlogged tables, one psql session, \copy of each file
    {
        echo "CREATE SCHEMA raw;"
        for f in facilities providers patients encounters diagnoses procedures; do
            echo "CREATE UNLOGGED TABLE raw.$f ($(head -1 "$DATA/$f.csv" | sed 's/,/ text, /g; s/$/ text/'));"
        done
    } | psql -X -q -v ON_ERROR_STOP=1 "$URL"
    cmds=""
    for f in facilities providers patients encounters diagnoses procedures; do
        cmds+="\\copy raw.$f FROM '$DATA/$f.csv' WITH (FORMAT csv, HEADER true)"$'\n'
    done
    t0=$(now)
    echo "$cmds" | psql -X -q -v ON_ERROR_STOP=1 "$URL" >/dev/null
    t1=$(now)
    raw_s+=("$(echo "$t1 - $t0" | bc)")
    loaded=$(psql -X -At "$URL" -c "SELECT sum(rows_loaded) FROM etl.batches")
    [ "$loaded" = "$ROWS" ] || { echo "etl loaded $loaded of $ROWS rows" >&2; exit 1; }
    printf 'rep %d: etl %.2f s (%.0f rows/s)   raw \\copy %.2f s (%.0f rows/s)\n' "$rep" "${etl_s[-1]}" \
        "$(echo "$ROWS / ${etl_s[-1]}" | bc -l)" "${raw_s[-1]}" "$(echo "$ROWS / ${raw_s[-1]}" | bc -l)"
    "$PX" db stop >/dev/null
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
me=$(median "${etl_s[@]}") mr=$(median "${raw_s[@]}")
printf 'median: etl %.2f s = %.0f rows/s; raw \\copy %.2f s = %.0f rows/s; ratio (etl throughput / raw) = %.3f\n' \
    "$me" "$(echo "$ROWS / $me" | bc -l)" "$mr" "$(echo "$ROWS / $mr" | bc -l)" "$(echo "$mr / $me" | bc -l)"
grep -h "streamed" "$WORK"/home1/log/prognos.log | sed 's/^[^]]*] /  phases (rep 1): /'
