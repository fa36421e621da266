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
. "$ROOT/tests/bench/lib.sh"
PATIENTS=250000 REPS=3
bench_options 2,8p --patients=PATIENTS --reps=REPS -- "$@"
bench_prognos_work etl
trap 'for h in "$WORK"/home*; do PROGNOS_HOME=$h "$PX" db stop >/dev/null 2>&1 || true; done; rm -rf "$WORK"' EXIT
DATA="$WORK/data"
"$PX" generate --patients "$PATIENTS" --seed 1 --out "$DATA"
ROWS=0
for f in "$DATA"/*.csv; do ROWS=$((ROWS + $(wc -l < "$f") - 1)); done
BYTES=$(cat "$DATA"/*.csv | wc -c)
echo "input: $ROWS rows, $((BYTES / 1048576)) MiB in 6 files; $REPS repetitions"

now() { date +%s.%N; }
TCK=$(getconf CLK_TCK)
# CPU seconds used so far by the cluster's processes: the postmaster's own and
# its reaped children's (backends and parallel workers that have exited), plus
# the living children's. Unlike wall time, this barely moves when other jobs
# share the machine.
server_cpu() {
    local pm t
    pm=$(head -1 "$(readlink -f "$PROGNOS_HOME/pg")/data/postmaster.pid")
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
    for c in $(pgrep -P "$pm"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0))); done
    echo "$t / $TCK" | bc -l
}
etl_s=() raw_s=() etl_cpu=() raw_cpu=()
for rep in $(seq 1 "$REPS"); do
    export PROGNOS_HOME="$WORK/home$rep"
    "$PX" db init >/dev/null
    URL=$("$PX" db url)
    "$PX" db start >/dev/null
    c0=$(server_cpu)
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/time" "$PX" etl load --format canonical --source "$DATA" --quiet >/dev/null
    t1=$(now)
    sleep 0.5 # the backend's exit, reaped by the postmaster
    etl_s+=("$(echo "$t1 - $t0" | bc)")
    etl_cpu+=("$(echo "$(server_cpu) - $c0 + $(awk '{print $1 + $2}' "$WORK/time")" | bc -l)")
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
    c0=$(server_cpu)
    t0=$(now)
    echo "$cmds" | /usr/bin/time -f "%U %S" -o "$WORK/time" psql -X -q -v ON_ERROR_STOP=1 "$URL" >/dev/null
    t1=$(now)
    sleep 0.5
    raw_s+=("$(echo "$t1 - $t0" | bc)")
    raw_cpu+=("$(echo "$(server_cpu) - $c0 + $(awk '{print $1 + $2}' "$WORK/time")" | bc -l)")
    loaded=$(psql -X -At "$URL" -c "SELECT sum(rows_loaded) FROM etl.batches")
    [ "$loaded" = "$ROWS" ] || { echo "etl loaded $loaded of $ROWS rows" >&2; exit 1; }
    printf 'rep %d: etl %.2f s (%.0f rows/s, %.1f CPU s)   raw \\copy %.2f s (%.0f rows/s, %.1f CPU s)   load average %s\n' \
        "$rep" "${etl_s[-1]}" "$(echo "$ROWS / ${etl_s[-1]}" | bc -l)" "${etl_cpu[-1]}" "${raw_s[-1]}" \
        "$(echo "$ROWS / ${raw_s[-1]}" | bc -l)" "${raw_cpu[-1]}" "$(cut -d' ' -f1 /proc/loadavg)"
    "$PX" db stop >/dev/null
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
me=$(median "${etl_s[@]}") mr=$(median "${raw_s[@]}")
ce=$(median "${etl_cpu[@]}") cr=$(median "${raw_cpu[@]}")
printf 'median: etl %.2f s = %.0f rows/s; raw \\copy %.2f s = %.0f rows/s; ratio (etl throughput / raw) = %.3f\n' \
    "$me" "$(echo "$ROWS / $me" | bc -l)" "$mr" "$(echo "$ROWS / $mr" | bc -l)" "$(echo "$mr / $me" | bc -l)"
grep -h "streamed" "$WORK"/home1/log/prognos.log | sed 's/^[^]]*] /  phases (rep 1): /'
printf 'median CPU (server processes + client): etl %.1f s, raw \\copy %.1f s; the ETL needs %.1fx the CPU of the raw copy,\n' "$ce" "$cr" "$(echo "$ce / $cr" | bc -l)"
printf '  so on %d cores it cannot finish in less than %.1f s: a ratio of at most %.2f whatever the overlap\n' "$(nproc)" \
    "$(echo "$ce / $(nproc)" | bc -l)" "$(echo "$mr / ($ce / $(nproc))" | bc -l)"
