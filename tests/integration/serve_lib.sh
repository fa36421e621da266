# serve_lib.sh: shared by the server's integration tests (source after lib.sh).
# A test trains a small model, starts `prognos serve` on a free port and talks to it
# with Python's http.client (tests/integration/serve_client.py) and curl.
PY=/usr/bin/python3
CLIENT="$PROGNOS_SRC/tests/integration/serve_client.py"
SERVE_PID=""

# Generates and loads a small hospital system ($WORK/a) and trains the readmission
# model: a copy of the fixture home serve-P-S when ctest built it (fixture_home.sh;
# the generator is deterministic, so $WORK/a is what was loaded there), else built here.
setup_model() { # patients seed
    if restore_home "serve-${1:-3000}-${2:-21}"; then
        px generate --patients "${1:-3000}" --seed "${2:-21}" --out "$WORK/a" >/dev/null
        px db start >/dev/null   # (the fixture is a stopped cluster; psql does not start it)
    else
        build_model_home "${1:-3000}" "${2:-21}"
    fi
}
build_model_home() { # patients seed
    # A fixed pseudonymization key fixes the holdout patients, so the model, its
    # accepted input ranges and the warehouse rows the tests send are the same on every
    # run (with a random key a row could fall outside the training ranges and be refused).
    # (in its default place, $PROGNOS_HOME/secret.key, where serve_http.sh reads it)
    [ ! -e "$PROGNOS_HOME/pg" ] || stop_clusters "$PROGNOS_HOME"
    rm -rf "$PROGNOS_HOME"
    mkdir -p "$PROGNOS_HOME"
    (umask 077; echo 0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c >"$PROGNOS_HOME/secret.key")
    px generate --patients "$1" --seed "$2" --out "$WORK/a" >/dev/null
    px etl load --format canonical --source "$WORK/a" --quiet >/dev/null
    px train --model readmission --accept-failed-gates --hier-boot 0 >/dev/null
}

# Starts the server in the background (extra options passed on); sets PORT and URL.
# PX_SERVE_WRAP, when set, is a command put before it (`PX_SERVE_WRAP="nice -n 19"` starves
# the server beside a CPU hog: how the admission fixes of serve/conn.c were reproduced).
server_up() { [ -s "$WORK/port" ] || { kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; fail "the server did not start"; }; false; }; }
start_server() {
    rm -f "$WORK/port"
    ${PX_SERVE_WRAP:-} "$PROGNOS_BIN" serve --listen 127.0.0.1:0 --port-file "$WORK/port" "$@" >"$WORK/serve.log" 2>&1 &
    SERVE_PID=$!
    wait_for "the server's port file" server_up
    PORT=$(cat "$WORK/port")
    URL="http://127.0.0.1:$PORT"
}

# Stops it with SIGTERM and checks it exited cleanly (0); one that does not exit
# (within lib.sh's wait bound, PX_WAIT_S) fails the test.
server_gone() { ! kill -0 "$SERVE_PID" 2>/dev/null; }
stop_server() {
    [ -n "$SERVE_PID" ] || return 0
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    local rc=0
    wait_for "the server to stop on SIGTERM" server_gone
    wait "$SERVE_PID" || rc=$?
    SERVE_PID=""
    [ "$rc" -eq 0 ] || { cat "$WORK/serve.log" >&2; fail "the server exited $rc"; }
}

# on any exit (lib.sh's cleanup runs it before stopping the clusters)
serve_cleanup() {
    if [ -n "$SERVE_PID" ]; then kill -KILL "$SERVE_PID" 2>/dev/null || true; fi
}
CLEANUP_HOOKS+=(serve_cleanup)

new_key() { px apikey create --role "$1" --name "${2:-test}"; }

# Waits until a key is accepted: the server re-reads keys every poll.
key_accepted() { [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$URL/v1/drift")" != 401 ]; }
wait_key() { wait_for "the server to accept a new key" key_accepted "$1"; }

# Rewrites a generated dataset's patient and encounter ids with a prefix, so that a
# second dataset is new patients and stays rather than duplicates of the first.
fresh_ids() { # dir prefix
    "$PY" - "$1" "$2" <<'PYEOF'
import csv, os, sys
d, pre = sys.argv[1], sys.argv[2]
for name in ["patients.csv", "encounters.csv", "diagnoses.csv", "procedures.csv"]:
    path = os.path.join(d, name)
    rows = list(csv.reader(open(path, newline="")))
    head = rows[0]
    cols = [i for i, h in enumerate(head) if h in ("patient_id", "encounter_id", "mrn", "ssn")]
    for r in rows[1:]:
        for i in cols:
            if r[i]:
                r[i] = pre + r[i] if head[i] != "ssn" else "9" + r[i][1:]
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
PYEOF
}
