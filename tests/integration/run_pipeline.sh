#!/usr/bin/env bash
# prognos run: the chain as steps with state in run.runs / run.steps on a real
# embedded PostgreSQL. A full run and its rows; a step that fails (exit 1, status
# failed with its message) and --resume from that step after the fix; a lock held by
# another session waited out (the test holds the ETL lock from psql and releases it
# only once the runs table shows the step retrying: no timing decides) and, held
# throughout, given up on; nothing new (exit 3); a model failing its quality gates
# (exit 4); run status --json; usage errors (exit 2).
. "$(dirname "$0")/lib.sh"

# A fixed pseudonymization key fixes the holdout patients, so the models and their
# gates come out the same on every run (see serve_lib.sh). The key is only read at
# the first load: set on a home that holds no data yet.
fixed_key() { (umask 077; echo 0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c0ddba11c >"$PROGNOS_HOME/secret.key"); }
runs() { sql "SELECT $1 FROM run.runs WHERE run_id = $2"; }
step() { sql "SELECT $1 FROM run.steps WHERE run_id = $2 AND step = '$3'"; }
steps_of() { sql "SELECT string_agg(step || ':' || status || ':' || coalesce(exit_code::text, '-'), ' ' ORDER BY seq) FROM run.steps WHERE run_id = $1"; }

# ---- usage errors: told before any warehouse is looked for ---------------------------
assert_exit 2 px run
grep -q "the load step needs --source" "$WORK/err" || fail "run without --source: $(cat "$WORK/err")"
assert_exit 2 px run --steps load,bogus --source x
grep -q "steps 'load,bogus'" "$WORK/err" || fail "a bad step is not named: $(cat "$WORK/err")"
assert_exit 2 px run --steps kpi,kpi
assert_exit 2 px run --steps kpi --source x
assert_exit 2 px run --source x --retries many
assert_exit 2 px run --source x --backoff -1
assert_exit 2 px run --source x --format csv
assert_exit 2 px run --source x --as-of 2023-13-01
assert_exit 2 px run --resume 1 --steps kpi
assert_exit 2 px run --resume zero
assert_exit 2 px run --source x --hier-boot -1
assert_exit 2 px run status --limit 0
assert_exit 2 px run status --bogus
assert_exit 0 px run --help
for w in "--steps LIST" "--resume RUN" "--retries N" "--backoff S" "--hier-boot N" "run status" "Exit codes" "  4  "; do
    grep -qF -- "$w" "$WORK/out" || fail "run --help does not mention '$w'"
done
px --help | grep -q "^  run " || fail "run is not in prognos --help"
# status reads only: a home without a warehouse is an error, and none is created
PROGNOS_HOME="$WORK/nohome" assert_exit 1 px run status
[ ! -e "$WORK/nohome/pg" ] || fail "run status created a warehouse"
ok "usage errors exit 2 and name what is wrong; run status never creates a warehouse"

# Every run that retrains passes --hier-boot 0: the bootstrap intervals of the hierarchical
# models are not examined here (kpi_hier.sh does), and 20 refits per model were most of this
# test's CPU time. A run resumed keeps the option (checked below).

# ---- a model failing its quality gates: exit 4 ----------------------------------------
# 1,500 patients hold too few deaths for the mortality model's events-per-parameter gate
MAIN_HOME=$PROGNOS_HOME
use_new_home "$WORK/gates"
fixed_key
px generate --patients 1500 --seed 7 --out "$WORK/g" >/dev/null
assert_exit 4 px run --source "$WORK/g" --report-dir "$WORK/g-reports" --hier-boot 0
assert_eq "$(runs status,exit_code 1)" "gates|4" "the run that had a model fail its gates"
assert_eq "$(steps_of 1)" "load:ok:0 features:ok:0 retrain:gates:4 kpi:ok:0 report:ok:0 drift:nothing:3" "its steps"
assert_eq "$(step "result->>'mortality'" 1 retrain)" gates_failed "the mortality model's outcome"
assert_eq "$(step "result->>'readmission'" 1 retrain)" promoted "the readmission model's outcome"
grep -q "mortality failed its quality gates" <<<"$(step message 1 retrain)" || fail "retrain's message: $(step message 1 retrain)"
# --hier-boot reached the retrain step: the readmission model's hierarchical model has no draws
python3 - "$PROGNOS_HOME/registry/readmission/1/hierarchical.json" <<'PY' || fail "--hier-boot 0 did not reach the retrain step"
import json, sys
b = json.load(open(sys.argv[1]))["bootstrap"]
assert b["draws"] == 0, b
PY
assert_eq "$(runs "options->>'hier_boot'" 1)" 0 "the run's --hier-boot in its options"
PROGNOS_HOME="$WORK/gates" px db stop >/dev/null
export PROGNOS_HOME=$MAIN_HOME
ok "a model failing its gates: exit 4, step status gates, the other models promoted"

# ---- a failing step: exit 1, status failed with the message ---------------------------
fixed_key
px generate --patients 2500 --seed 7 --out "$WORK/b" >/dev/null
assert_exit 1 px run --source "$WORK/missing" --backoff 0 --hier-boot 0
assert_eq "$(runs status,exit_code 1)" "failed|1" "run 1 (bad --source)"
assert_eq "$(steps_of 1)" "load:failed:1 features:pending:- retrain:pending:- kpi:pending:- report:pending:- drift:pending:-" \
    "run 1's steps: the chain stops at the failed one"
grep -qF "$WORK/missing" <<<"$(step message 1 load)" || fail "the failed step's message does not name the source: $(step message 1 load)"
grep -qF "step load failed" <<<"$(runs message 1)" || fail "the run's message: $(runs message 1)"
assert_eq "$(step attempts 1 load)" 1 "a missing directory is not transient: no retry"
[ -n "$(step started_at 1 load)" ] && [ -n "$(step finished_at 1 load)" ] || fail "the failed step has no start or end"
grep -q "prognos run --resume 1" "$WORK/out" || fail "the failure does not say how to resume"
ok "a bad --source: exit 1, load failed with a message naming it, the other steps pending"

# ---- a lock held by another session: waited out ---------------------------------------
URL=$(px db url)
mkfifo "$WORK/lockctl"
psql -X -q -At -v ON_ERROR_STOP=1 "$URL" <"$WORK/lockctl" >"$WORK/lock.out" 2>&1 &
LOCKER=$!
exec 7>"$WORK/lockctl"
echo "SELECT pg_advisory_lock(7070002);" >&7   # the ETL's lock (engine/etl.c PX_ETL_LOCK)
lock_held() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7070002 AND granted")" = 1 ]; }
wait_for "psql to hold the ETL lock" lock_held
px run --steps load --source "$WORK/b" --retries 100 --backoff 1 >"$WORK/run2.out" 2>"$WORK/run2.err" 7>&- &
RUNNER=$!
retrying() {
    kill -0 "$RUNNER" 2>/dev/null || { cat "$WORK/run2.out" "$WORK/run2.err" >&2; fail "run 2 ended while the lock was held"; }
    [ "$(sql "SELECT count(*) FROM run.steps WHERE run_id = 2 AND step = 'load' AND status = 'retrying'")" = 1 ]
}
wait_for "run 2's load step to be retrying" retrying
grep -q "a lock the load step needs is held by another session (backend pid [0-9]*)" <<<"$(step message 2 load)" ||
    fail "the retrying step's message: $(step message 2 load)"
assert_eq "$(runs status 2)" running "run 2 while its step waits"
exec 7>&-                 # psql ends: the lock is released
wait "$LOCKER" || true
set +e; wait "$RUNNER"; rc=$?; set -e
[ "$rc" -eq 0 ] || { cat "$WORK/run2.out" "$WORK/run2.err" >&2; fail "run 2 exited $rc after the lock was released"; }
assert_eq "$(steps_of 2)" "load:ok:0" "run 2's step after the lock was released"
[ "$(step attempts 2 load)" -ge 2 ] || fail "run 2's load was not retried: $(step attempts 2 load) attempts"
grep -q "batch 1: 6 files loaded" <<<"$(step message 2 load)" || fail "run 2's load message: $(step message 2 load)"
assert_eq "$(step "result->>'batch_id'" 2 load)" 1 "the batch run 2 loaded"
ok "a held ETL lock: the step waits as 'retrying' with the holder named, and loads once it is released"

# held throughout: the retries run out, exit 1 with the cause
psql -X -q -At "$URL" <"$WORK/lockctl" >"$WORK/lock.out" 2>&1 &
LOCKER=$!
exec 7>"$WORK/lockctl"
echo "SELECT pg_advisory_lock(7070002);" >&7
wait_for "psql to hold the ETL lock again" lock_held
assert_exit 1 px run --steps load --source "$WORK/b" --retries 2 --backoff 0
assert_eq "$(steps_of 3)" "load:failed:1" "run 3 (the lock never released)"
assert_eq "$(step attempts 3 load)" 3 "run 3's attempts (--retries 2)"
grep -q "gave up after 3 attempts: a lock the load step needs is held" <<<"$(step message 3 load)" ||
    fail "run 3's message: $(step message 3 load)"
# one runner at a time: the runner's own lock held, it gives up (--retries 0)
echo "SELECT pg_advisory_lock(7070020);" >&7
runner_lock_held() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7070020 AND granted")" = 1 ]; }
wait_for "psql to hold the runner lock" runner_lock_held
assert_exit 1 px run --steps drift --retries 0
grep -q "another prognos run is in progress" "$WORK/err" || fail "a second runner: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT count(*) FROM run.runs")" 3 "a runner that could not start records no run"
exec 7>&-
wait "$LOCKER" || true
ok "a lock held throughout: 3 attempts, exit 1 naming the cause; a second runner exits 1"

# ---- --resume from the failed step ------------------------------------------------------
# run 1 failed at load: resumed with the source fixed, but with a report directory that
# is a file, so that the chain now fails at the report step
echo "not a directory" >"$WORK/afile"
assert_exit 1 px run --resume 1 --source "$WORK/b" --report-dir "$WORK/afile"
assert_eq "$(runs resumes 4)|$(runs resumed_by 1)" "1|4" "run 4 resumes run 1"
assert_eq "$(steps_of 4)" "load:nothing:3 features:ok:0 retrain:ok:0 kpi:ok:0 report:failed:1 drift:pending:-" \
    "run 4's steps (its load: the files run 2 loaded)"
assert_eq "$(sql "SELECT options->>'source' FROM run.runs WHERE run_id = 4")" "$WORK/b" "run 4's source (the fixed one)"
# resumed from the report step, the fixed directory given: only report and drift run
assert_exit 0 px run --resume 4 --report-dir "$WORK/reports"
assert_eq "$(steps_of 5)" "report:ok:0 drift:nothing:3" "run 5 runs the steps from the one that failed"
assert_eq "$(runs status,exit_code 5)" "ok|0" "run 5"
html=$(step "result->>'html'" 5 report)
assert_eq "$(dirname "$html")" "$WORK/reports" "the report's directory"
grep -q "<html" "$html" || fail "the report $html is not HTML"
[ -s "${html%.html}.json" ] || fail "no JSON beside the report"
assert_eq "$(step "result->>'period'" 5 report)" 2023 "the report's period (the latest complete year)"
assert_eq "$(sql "SELECT options->>'backoff' FROM run.runs WHERE run_id = 5")" 0 "run 5 keeps the --backoff 0 given to run 1"
assert_eq "$(sql "SELECT options->>'hier_boot' FROM run.runs WHERE run_id = 4")" 0 "run 4 keeps the --hier-boot 0 given to run 1"
ok "--resume continues from the failed step with the run's options, fixed ones replacing them"

# resuming what cannot be resumed
assert_exit 3 px run --resume 5
grep -q "run 5 has status 'ok': nothing to resume" "$WORK/err" || fail "resume of a finished run: $(cat "$WORK/err")"
assert_exit 1 px run --resume 1
grep -q "run 1 was resumed already, by run 4" "$WORK/err" || fail "resume of a resumed run: $(cat "$WORK/err")"
assert_exit 1 px run --resume 99
grep -q "there is no run 99" "$WORK/err" || fail "resume of no run: $(cat "$WORK/err")"
assert_eq "$(sql "SELECT count(*) FROM run.runs")" 5 "refused resumes record no run"
ok "--resume of a finished, an already resumed and a missing run are refused"

# ---- nothing new: exit 3 ----------------------------------------------------------------
assert_exit 3 px run --source "$WORK/b" --report-dir "$WORK/reports" --hier-boot 0
assert_eq "$(steps_of 6)" "load:nothing:3 features:nothing:3 retrain:nothing:3 kpi:nothing:3 report:nothing:3 drift:nothing:3" \
    "run 6's steps (nothing new)"
assert_eq "$(runs status,exit_code 6)" "nothing|3" "run 6"
ok "the same data again: every step has nothing to do, exit 3"

# ---- a runner that died: its run is interrupted, and resumable -------------------------
sql "INSERT INTO run.runs (steps, options, runner_pid) VALUES ('{kpi,report}', '{\"report_dir\":\"$WORK/reports\",\"report_period\":\"year\",\"retries\":3,\"backoff\":1}', 999999)"
sql "INSERT INTO run.steps (run_id, seq, step, status, attempts, started_at) VALUES (7, 1, 'kpi', 'running', 1, now()), (7, 2, 'report', 'pending', 0, NULL)"
assert_exit 3 px run --resume 7
assert_eq "$(runs status 7)" interrupted "a run left 'running' by a runner that is gone"
assert_eq "$(steps_of 8)" "kpi:nothing:3 report:nothing:3" "the resumed interrupted run"
ok "a run whose runner died is marked interrupted by the next runner and can be resumed"

# ---- run status ------------------------------------------------------------------------
px run status --json >"$WORK/status.json"
python3 - "$WORK/status.json" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))
assert [r["run_id"] for r in runs] == [8, 7, 6, 5, 4, 3, 2, 1], [r["run_id"] for r in runs]
by = {r["run_id"]: r for r in runs}
assert by[1]["status"] == "failed" and by[1]["exit_code"] == 1 and by[1]["resumed_by"] == 4, by[1]
load = by[1]["steps"][0]
assert load["step"] == "load" and load["status"] == "failed" and load["exit_code"] == 1 and "missing" in load["message"], load
assert load["started_at"].endswith("Z") and load["finished_at"].endswith("Z"), load
assert [s["status"] for s in by[5]["steps"]] == ["ok", "nothing"], by[5]["steps"]
assert by[5]["resumes"] == 4 and by[5]["options"]["report_dir"].endswith("/reports"), by[5]
assert by[2]["steps"][0]["attempts"] >= 2 and by[2]["steps"][0]["result"]["batch_id"] == 1, by[2]
assert by[6]["status"] == "nothing" and by[6]["exit_code"] == 3, by[6]
assert by[6]["steps_requested"] == ["load", "features", "retrain", "kpi", "report", "drift"], by[6]
EOF
assert_eq "$(px run status 5 --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(len(r), r[0]["run_id"])')" "1 5" "run status RUN --json"
px run status --limit 2 >"$WORK/status.txt"
grep -q "^run 8: nothing, exit 3" "$WORK/status.txt" || fail "run status text: $(cat "$WORK/status.txt")"
grep -q "^run 6" "$WORK/status.txt" && fail "run status --limit 2 shows run 6"
grep -q "^  1. kpi .*nothing .*attempts 1, exit 3" "$WORK/status.txt" || fail "run status text steps: $(cat "$WORK/status.txt")"
assert_exit 1 px run status 99
grep -q "there is no run 99" "$WORK/err" || fail "run status of no run: $(cat "$WORK/err")"
ok "run status (text and --json): runs, steps, attempts, exit codes, messages, times"

# ---- deploy/: the scheduler files --------------------------------------------------------
D="$PROGNOS_SRC/deploy"
# systemd: systemd-analyze verify (offline: no systemd needs to run) on the units as
# shipped, where the one complaint allowed is that /usr/local/bin/prognos is not
# installed on this machine, and with ExecStart pointing at this build: no complaint
mkdir -p "$WORK/units" "$WORK/units-shipped"
cp "$D/systemd/prognos-pipeline.service" "$D/systemd/prognos-pipeline.timer" "$WORK/units-shipped/"
sed "s|/usr/local/bin/prognos|$PROGNOS_BIN|" "$D/systemd/prognos-pipeline.service" >"$WORK/units/prognos-pipeline.service"
cp "$D/systemd/prognos-pipeline.timer" "$WORK/units/"
set +e
(cd "$WORK/units" && systemd-analyze verify prognos-pipeline.service prognos-pipeline.timer) >"$WORK/verify.out" 2>&1
rc=$?
(cd "$WORK/units-shipped" && systemd-analyze verify prognos-pipeline.service prognos-pipeline.timer) >"$WORK/verify2.out" 2>&1
set -e
[ "$rc" -eq 0 ] && [ ! -s "$WORK/verify.out" ] || { cat "$WORK/verify.out" >&2; fail "systemd-analyze verify: exit $rc"; }
assert_eq "$(grep -v 'Command /usr/local/bin/prognos is not executable' "$WORK/verify2.out" || true)" "" \
    "systemd-analyze verify on the shipped units (besides the binary not installed here)"
# the timer's schedule is a valid calendar expression
systemd-analyze calendar "$(sed -n 's/^OnCalendar=//p' "$D/systemd/prognos-pipeline.timer")" >/dev/null ||
    fail "the timer's OnCalendar"
# a dry run of the service's command line, its variables set as the unit sets them,
# on this warehouse (nothing new since run 6): exit 3, which SuccessExitStatus accepts
exec_start=$(sed -n 's/^ExecStart=//p' "$WORK/units/prognos-pipeline.service")
PROGNOS_SOURCE="$WORK/b" PROGNOS_FORMAT=canonical
exec_start=${exec_start//\$\{PROGNOS_SOURCE\}/$PROGNOS_SOURCE}
exec_start=${exec_start//\$\{PROGNOS_FORMAT\}/$PROGNOS_FORMAT}
read -r -a argv <<<"$exec_start"
assert_exit 3 "${argv[@]}" --report-dir "$WORK/reports" --hier-boot 0
grep -q "^SuccessExitStatus=3$" "$D/systemd/prognos-pipeline.service" || fail "the service does not accept exit 3"
assert_eq "$(steps_of 9)" "load:nothing:3 features:nothing:3 retrain:nothing:3 kpi:nothing:3 report:nothing:3 drift:nothing:3" \
    "the service's command line run on this warehouse"
ok "systemd: the service and timer verify, the service's command line runs (exit 3: nothing new)"

# cron: the /etc/cron.d line has five valid time fields, a user, and the same command
python3 - "$D/cron/prognos" <<'PYEOF'
import re, sys
ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
jobs = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
        continue
    f = line.split(None, 6)
    assert len(f) == 7, f"a cron.d line needs 5 time fields, a user and a command: {line}"
    for field, (lo, hi) in zip(f[:5], ranges):
        for part in field.split(","):
            m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
            assert m, f"bad cron field {field!r}"
            for n in (m.group(2), m.group(3)):
                assert n is None or lo <= int(n) <= hi, f"{field!r} out of {lo}-{hi}"
    jobs.append(f)
assert len(jobs) == 1, jobs
assert jobs[0][5] == "prognos", "the job runs as user prognos"
assert jobs[0][6].startswith("prognos run --source "), jobs[0][6]
PYEOF
cron_cmd=$(grep -v '^#' "$D/cron/prognos" | grep -v '^[A-Z_]*=' | grep . | cut -d' ' -f7- | sed 's/ >>.*//')
read -r -a argv <<<"${cron_cmd/--source \/srv\/prognos\/extracts\/latest/--source $WORK/b}"
argv[0]=$PROGNOS_BIN
assert_exit 3 "${argv[@]}" --report-dir "$WORK/reports" --hier-boot 0
ok "cron: the line parses (time fields, user) and its command runs (exit 3: nothing new)"

# Airflow is not installable here: the DAG file compiles, uses BashOperator on prognos
# run, and maps exit 3 to a skipped task
PYTHONPYCACHEPREFIX="$WORK/pycache" python3 -m py_compile "$D/airflow/prognos_dag.py"
python3 - "$D/airflow/prognos_dag.py" <<'PYEOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "BashOperator"]
assert len(calls) == 1, "one BashOperator"
kw = {k.arg: k.value for k in calls[0].keywords}
assert isinstance(kw["skip_on_exit_code"], ast.Constant) and kw["skip_on_exit_code"].value == 3
src = open(sys.argv[1]).read()
assert "run --source" in src and "from airflow.operators.bash import BashOperator" in src
PYEOF
ok "Airflow: the DAG compiles, one BashOperator calling prognos run, exit 3 skips"

# ---- the database unavailable: waited out ------------------------------------------------
# PROGNOS_DB names the warehouse's server, which is stopped: the runner cannot connect and
# retries; the server is started only once the runner has reported a retry
URL=$(px db url)
px db stop >/dev/null
PROGNOS_DB="$URL" "$PROGNOS_BIN" run --steps drift --retries 100 --backoff 1 >"$WORK/run11.out" 2>"$WORK/run11.err" &
RUNNER=$!
db_retry_seen() {
    kill -0 "$RUNNER" 2>/dev/null || { cat "$WORK/run11.out" "$WORK/run11.err" >&2; fail "the runner ended while the database was down"; }
    grep -q "prognos run: cannot connect to the database; retry 1 of 100 in 1 s" "$WORK/run11.err"
}
wait_for "the runner to retry its connection" db_retry_seen
px db start >/dev/null
set +e; wait "$RUNNER"; rc=$?; set -e
[ "$rc" -eq 3 ] || { cat "$WORK/run11.out" "$WORK/run11.err" >&2; fail "the runner exited $rc once the database was back"; }
assert_eq "$(steps_of 11)" "drift:nothing:3" "the run made once the database was back"
# and a database that stays away: the retries run out, exit 1
PROGNOS_DB="postgresql:///prognos?host=$WORK/nosocket" assert_exit 1 px run --steps drift --retries 2 --backoff 0
assert_eq "$(grep -c "retry [12] of 2" "$WORK/err")" 2 "the retries of a database that stays away"
grep -q "cannot connect to the database" "$WORK/err" || fail "no connection error: $(cat "$WORK/err")"
ok "the database unavailable: the runner retries its connection and runs once it is back; gives up after --retries"
