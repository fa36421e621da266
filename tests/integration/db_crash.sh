#!/usr/bin/env bash
# db_crash.sh: `prognos db start` right after a crash of the embedded server.
# - A backend crash (SIGSEGV): the postmaster restarts its backends and recovers;
#   `db start` waits for the recovery instead of failing ("lock file exists").
# - The postmaster killed with SIGKILL and not yet reaped by its parent: its PID is
#   a zombie, which PostgreSQL takes for a live server. The zombie is held by a
#   subreaper (python3, prctl PR_SET_CHILD_SUBREAPER) that reaps only when told, so
#   the test does not depend on when init reaps. `db start` removes the stale
#   postmaster.pid (and the socket's lock file) and starts the server.
# - A postmaster.pid naming a live process that is not a postgres server (a PID
#   reused after a crash): removed, the server starts.
# In every case the rows committed before the crash are there afterwards.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
HOLDER=""; OTHER=""
# on any exit: no subreaper or stand-in process left behind (their zombies go to init)
db_crash_cleanup() {
    for p in $HOLDER $OTHER; do kill -KILL "$p" 2>/dev/null || true; done
}
CLEANUP_HOOKS+=(db_crash_cleanup)
px db init >/dev/null
sql "CREATE TABLE public.crash_probe (i integer); INSERT INTO public.crash_probe SELECT generate_series(1, 1000)"
DATA=$(readlink -f "$PROGNOS_HOME/pg")/data
probe() { assert_eq "$(sql "SELECT count(*) FROM public.crash_probe")" 1000 "rows after $1"; }

# ---- a backend crash: db start waits for the recovery -------------------------------------
psql -X -q "$(px db url)" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
PSQL_PID=$!
bp=""
for _ in $(seq 1 3000); do
    bp=$(sql "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
    [ -n "$bp" ] && break
    sleep 0.1
done
[ -n "$bp" ] || fail "no backend running pg_sleep"
kill -SEGV "$bp"
wait "$PSQL_PID" 2>/dev/null || true
set +e; px db start >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
assert_eq "$rc" 0 "db start right after a backend crash ($(cat "$WORK/err"))"
assert_eq "$(psql -X -At "$(px db url)" -c 'SELECT pg_is_in_recovery()')" f "the server after db start"
probe "a backend crash"
grep -q "terminated by signal 11" "$(readlink -f "$PROGNOS_HOME/pg")/server.log" || fail "the backend did not crash"
ok "db start right after a backend crash waits for the recovery"

# ---- the postmaster killed, its PID a zombie --------------------------------------------------
px db stop >/dev/null
mkfifo "$WORK/ctl"
"$PY" - "$PROGNOS_BIN" "$WORK/pm.pid" "$WORK/ctl" <<'PYEOF' &
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0, "PR_SET_CHILD_SUBREAPER"   # orphans of our children come to us
subprocess.run([sys.argv[1], "db", "start"], check=True, stdout=subprocess.DEVNULL)
open(sys.argv[2], "w").write("ready\n")
open(sys.argv[3]).read()           # blocks until the test writes "reap"
while True:                        # reap every zombie we hold, then go
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
PYEOF
HOLDER=$!
for _ in $(seq 1 3000); do [ -s "$WORK/pm.pid" ] && break; sleep 0.1; done
[ -s "$WORK/pm.pid" ] || fail "the subreaper did not start the server"
pm=$(head -1 "$DATA/postmaster.pid")
grep -q "^PPid:[[:space:]]*$HOLDER$" "/proc/$pm/status" || fail "the postmaster is not the subreaper's child"
kill -KILL "$pm"
for _ in $(seq 1 3000); do [ "$(awk '{print $3}' "/proc/$pm/stat" 2>/dev/null)" = Z ] && break; sleep 0.1; done
assert_eq "$(awk '{print $3}' "/proc/$pm/stat")" Z "the killed postmaster's state"
set +e; px db start >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
assert_eq "$rc" 0 "db start with the killed postmaster unreaped ($(cat "$WORK/err"))"
assert_eq "$(awk '{print $3}' "/proc/$pm/stat")" Z "the old postmaster is still unreaped (the case tested)"
[ "$(head -1 "$DATA/postmaster.pid")" != "$pm" ] || fail "postmaster.pid still names the killed server"
probe "the postmaster was killed"
grep -q "removed a stale postmaster.pid (PID $pm" "$PROGNOS_HOME/log/prognos.log" || fail "the stale file was not logged"
echo reap >"$WORK/ctl"
wait "$HOLDER"
HOLDER=""
ok "db start right after the postmaster was killed (its PID a zombie) removes the stale postmaster.pid"

# ---- a postmaster.pid naming another live program -------------------------------------------
px db stop >/dev/null
[ ! -e "$DATA/postmaster.pid" ] || fail "db stop left postmaster.pid"
sleep 300 &
OTHER=$!
printf '%s\n%s\n0\n5432\n%s\nlocalhost\n 0 0\nready\n' "$OTHER" "$DATA" "$(readlink -f "$PROGNOS_HOME/pg")/run" >"$DATA/postmaster.pid"
set +e; px db start >"$WORK/out" 2>"$WORK/err"; rc=$?; set -e
kill "$OTHER"
wait "$OTHER" 2>/dev/null || true
OTHER=""
assert_eq "$rc" 0 "db start with postmaster.pid naming a live non-postgres process ($(cat "$WORK/err"))"
probe "a postmaster.pid naming another program"
ok "a postmaster.pid naming another live program is stale: removed, the server starts"

# ---- the status of a server in recovery is not 'stopped', and db stop stops it -----------------
px db stop >/dev/null
assert_exit 1 px db status
px db start >/dev/null
assert_exit 0 px db status
ok "db status / stop after the crashes"
