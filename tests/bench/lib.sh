# Shared pieces of the benchmark scripts (sourced by tests/bench/*/*.sh, not run).
# Each script sets ROOT (the source tree) before sourcing this file.

# bench_options HELP_RANGE --name=VAR ... -- ARGS...: sets VAR from "--name VALUE" for
# each option given; -h/--help prints the script's header (sed range HELP_RANGE,
# e.g. 2,8p) and exits 0; an unknown option or one without its value exits 2.
bench_options() {
    local help=$1 spec
    local -A var=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do spec=$1; var[${spec%%=*}]=${spec#*=}; shift; done
    [ $# -gt 0 ] && shift
    while [ $# -gt 0 ]; do
        case $1 in -h|--help) sed -n "$help" "$0"; exit 0 ;; esac
        [ -n "${var[$1]+x}" ] || { echo "unknown option $1" >&2; exit 2; }
        [ $# -ge 2 ] || { echo "option $1 needs a value" >&2; exit 2; }
        printf -v "${var[$1]}" '%s' "$2"
        shift 2
    done
}

# bench_prognos_work NAME: PX = the built prognos (building the tree when it is
# missing); WORK = a new world-readable scratch folder /tmp/prognos-bench-NAME.*
bench_prognos_work() {
    PX="$ROOT/build/engine/cli/prognos"
    [ -x "$PX" ] || "$ROOT/scripts/setup.sh"
    WORK=$(mktemp -d "/tmp/prognos-bench-$1.XXXXXX")
    chmod 755 "$WORK"
}

# bench_stop PID: ends a background process this script started and reaps it.
bench_stop() {
    if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}

# bench_serve_work NAME: for a server benchmark with PX set: WORK = a new scratch
# folder /tmp/prognos-bench-NAME.*, PROGNOS_HOME = $WORK/home (exported); stop()
# ends the server SERVE_PID; on exit, the server and the home's cluster are
# stopped and WORK removed.
bench_serve_work() {
    WORK=$(mktemp -d "/tmp/prognos-bench-$1.XXXXXX")
    SERVE_PID=""
    stop() { bench_stop "$SERVE_PID"; SERVE_PID=""; }
    trap 'stop; PROGNOS_HOME="$WORK/home" "$PX" db stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
    export PROGNOS_HOME="$WORK/home"
}

# bench_serve_world PATIENTS: in PROGNOS_HOME, generates PATIENTS patients (seed 7)
# into $WORK/data, loads them, trains the readmission model; KEY = a predict key,
# READ = a read key.
bench_serve_world() {
    echo "setting up: $1 patients, the readmission model"
    "$PX" generate --patients "$1" --seed 7 --out "$WORK/data" >/dev/null
    "$PX" etl load --format canonical --source "$WORK/data" --quiet >/dev/null
    "$PX" train --model readmission --accept-failed-gates >/dev/null
    KEY=$("$PX" apikey create --role predict --name bench 2>/dev/null)
    READ=$("$PX" apikey create --role read --name bench 2>/dev/null)
}

# bench_serve_start BIN THREADS: starts BIN serve on a free loopback port with
# THREADS threads (log in $WORK/serve.log); SERVE_PID, PORT; waits until
# GET /v1/drift answers 200 with the READ key (or 5 s have passed).
bench_serve_start() {
    rm -f "$WORK/port"
    "$1" serve --listen 127.0.0.1:0 --port-file "$WORK/port" --threads "$2" >"$WORK/serve.log" 2>&1 &
    SERVE_PID=$!
    for _ in $(seq 1 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
    PORT=$(cat "$WORK/port")
    for _ in $(seq 1 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $READ" "http://127.0.0.1:$PORT/v1/drift")" = 200 ] && break
        sleep 0.1
    done
}
