#!/usr/bin/env bash
# serve_audit_spill.sh: no audit record is lost when the database is down.
# With PostgreSQL stopped the server answers predictions and holds their audit
# records; they go to $PROGNOS_HOME/audit/spill.bin (append-only, fsync'd) and are
# written exactly once when the database is back:
# - SIGTERM while the database is down, database up, restart: N rows, none twice,
#   the request ids the clients were given;
# - the spill file replayed a second time (as after a crash between the commit and
#   the truncation of the file): no row twice;
# - SIGKILL while the database is down, once the records are on disk: none lost;
# - a torn chunk at the end of the file (a crash while appending) is left out, and
#   the whole chunks before it are written.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
setup_model 4000 21
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 50) t" >"$WORK/rows.json"
READ=$(new_key read); PRED=$(new_key predict)
SPILL="$PROGNOS_HOME/audit/spill.bin"
audit_rows() { sql "SELECT count(*) FROM audit.predictions"; }
# records in the spill file (whole chunks: magic, id, n, n * 116 bytes, SHA-256)
spill_records() {
    "$PY" - "$SPILL" <<'PYEOF'
import hashlib, os, struct, sys
p = sys.argv[1]
d = open(p, "rb").read() if os.path.exists(p) else b""
at = n = 0
while at + 28 + 32 <= len(d) and d[at:at + 8] == b"PXAUDSP1":
    k = struct.unpack("<I", d[at + 24:at + 28])[0]
    end = at + 28 + 116 * k
    if end + 32 > len(d) or hashlib.sha256(d[at:end]).digest() != d[end:end + 32]:
        break
    n += k
    at = end + 32
print(n)
PYEOF
}
wait_rows() { # expected
    for _ in $(seq 1 3000); do [ "$(audit_rows)" = "$1" ] && return 0; sleep 0.1; done
    fail "audit rows: $(audit_rows), expected $1: $(grep 'audit' "$PROGNOS_HOME/log/prognos.log" | tail -5)"
}

start_server --poll-ms 200
wait_key "$READ"
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 3 --expect-200 >/dev/null
wait_rows 3
B=3
# the batches written so far (the replay may write its records in one batch or more:
# how many depends on when the writer runs, so the test takes every later batch)
B0=$(sql "SELECT coalesce(max(batch_id), 0) FROM audit.prediction_batches")

# ---- database down, N predictions, SIGTERM, database up, restart -------------------------
N=40
px db stop >/dev/null
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n $N --expect-200 \
    --ids "$WORK/ids1" >/dev/null
assert_eq "$(wc -l <"$WORK/ids1")" $N "predictions answered while the database is down"
stop_server
assert_eq "$(spill_records)" $N "records in the spill file after SIGTERM"
assert_eq "$(stat -c %a "$SPILL")" 600 "spill file mode"
# no identifier of an encounter or a patient in the file
"$PY" - "$SPILL" "$WORK/rows.json" <<'PYEOF'
import json, sys
d = open(sys.argv[1], "rb").read()
for r in json.load(open(sys.argv[2])):
    for k in ("encounter_id", "patient_id", "patient_key"):
        v = r.get(k)
        if v:
            assert str(v).encode() not in d and str(v).replace("-", "").encode() not in d, f"{k} in the spill file"
PYEOF
cp "$SPILL" "$WORK/spill.copy"
px db start >/dev/null
assert_eq "$(audit_rows)" $B "audit rows before the restart (the records are in the file only)"
# (one worker thread: the replay does not depend on the pool, and the ASan pass reaches the
# single-thread start here, which serve_memory.sh otherwise alone reaches)
start_server --poll-ms 200 --threads 1
wait_rows $((B + N))
stop_server
assert_eq "$(audit_rows)" $((B + N)) "audit rows after the restart"
assert_eq "$(sql "SELECT count(DISTINCT request_id) FROM audit.predictions")" $((B + N)) "distinct request ids"
sort "$WORK/ids1" >"$WORK/ids1.s"
sql "SELECT request_id FROM audit.predictions WHERE batch_id > $B0" | sort >"$WORK/db1.s"
cmp -s "$WORK/ids1.s" "$WORK/db1.s" || fail "the replayed request ids are not the ones answered: $(diff "$WORK/ids1.s" "$WORK/db1.s" | head -4)"
assert_eq "$(sql "SELECT count(*) FROM audit.predictions WHERE key_id = '$(cut -d_ -f2 <<<"$PRED")' AND model = 'readmission' AND version = 1 AND instances = 1")" $((B + N)) "replayed rows name the key, model and version"
assert_eq "$(stat -c %s "$SPILL")" 0 "the spill file is emptied after the replay"
ok "SIGTERM with the database down: $N records spilled, replayed at the next start, none twice"

# ---- the same file again (a crash after the commit, before the truncation) --------------
cp "$WORK/spill.copy" "$SPILL"
start_server --poll-ms 200
# the first replay's line is in the log too ("... (0 already in the database)"): wait for
# the second replay's own line, not for any line that mentions the database
for _ in $(seq 1 3000); do
    grep -q "0 records replayed from .* ($N already in the database)" "$PROGNOS_HOME/log/prognos.log" && break
    sleep 0.1
done
grep -q "0 records replayed from .* ($N already in the database)" "$PROGNOS_HOME/log/prognos.log" ||
    fail "the second replay: $(grep 'audit spill' "$PROGNOS_HOME/log/prognos.log" | tail -3)"
assert_eq "$(audit_rows)" $((B + N)) "audit rows after replaying the same file again"
assert_eq "$(stat -c %s "$SPILL")" 0 "the spill file is emptied after the second replay"
ok "a spill file replayed twice writes its records once"

# ---- SIGKILL once the records are on disk -------------------------------------------------
M=25
px db stop >/dev/null
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n $M --expect-200 \
    --ids "$WORK/ids2" >/dev/null
for _ in $(seq 1 3000); do [ "$(spill_records)" = $M ] && break; sleep 0.1; done
assert_eq "$(spill_records)" $M "records spilled while the database is down (before any stop)"
kill -KILL "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=""
px db start >/dev/null
start_server --poll-ms 200
wait_rows $((B + N + M))
assert_eq "$(sql "SELECT count(DISTINCT request_id) FROM audit.predictions")" $((B + N + M)) "distinct request ids after SIGKILL"
stop_server
ok "SIGKILL with the database down: the $M spilled records are written at the next start"

# ---- a torn chunk at the end ---------------------------------------------------------------
start_server --poll-ms 200
px db stop >/dev/null
"$PY" "$CLIENT" predict "$URL" --read "$READ" --predict "$PRED" --rows "$WORK/rows.json" --n 10 --expect-200 >/dev/null
stop_server
assert_eq "$(spill_records)" 10 "records spilled in a third outage"
head -c 100 "$WORK/spill.copy" >>"$SPILL" # a chunk cut short after 100 bytes
px db start >/dev/null
start_server --poll-ms 200
wait_rows $((B + N + M + 10))
for _ in $(seq 1 3000); do grep -q "not a whole chunk" "$PROGNOS_HOME/log/prognos.log" && break; sleep 0.1; done
grep -q "100 bytes of .* are not a whole chunk" "$PROGNOS_HOME/log/prognos.log" || fail "the torn chunk was not reported"
stop_server
assert_eq "$(audit_rows)" $((B + N + M + 10)) "audit rows after a torn chunk"
ok "a torn chunk at the end of the spill file is left out; the whole ones are written"
