#!/usr/bin/env bash
# serve_memory.sh: no plaintext encounter id stays readable in the server's memory.
# Predictions by encounter id (one at a time, in batches, kept-alive, chunked, with
# JSON escapes, refused ones: unknown, malformed JSON after the id, over-long ids,
# sent to the wrong route), then every readable mapping of the server process is
# read through /proc/PID/mem (python3, as root or with ptrace rights) and searched
# for every id sent: request bodies, cJSON's strings, the pseudonymizer's buffers
# and libmicrohttpd's read buffer must all have been wiped.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
setup_model 4000 21
READ=$(new_key read); PRED=$(new_key predict)
# ids of encounters in the feature table (their pseudonyms find the rows)
"$PY" - "$PROGNOS_HOME/secret.key" "$WORK/a/encounters.csv" >"$WORK/pseudo.sql" <<'PYEOF'
import csv, hashlib, hmac, sys
key = bytes.fromhex(open(sys.argv[1]).read().strip())
ids = [r["encounter_id"] for r in csv.DictReader(open(sys.argv[2]))][:3000]
vals = ",".join(f"('{i}','{hmac.new(key, f'encounter:{i}'.encode(), hashlib.sha256).hexdigest()[:32]}')" for i in ids)
print(f"SELECT json_agg(m.id ORDER BY m.id) FROM (SELECT m.id FROM (VALUES {vals}) m(id, p)"
      f" JOIN features.readmission f ON f.encounter_id = m.p::uuid ORDER BY m.id LIMIT 60) m")
PYEOF
psql -X -q -At -v ON_ERROR_STOP=1 "$(px db url)" -f "$WORK/pseudo.sql" >"$WORK/ids.json"
n=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/ids.json")
[ "$n" -ge 43 ] || fail "only $n encounters of the CSV are in features.readmission"

cat >"$WORK/scan.py" <<'PYEOF'
import json, os, re, sys
pid, ids = int(sys.argv[1]), json.load(open(sys.argv[2]))
ids = ids[:int(sys.argv[3])]
needles = [i.encode() for i in ids]
hits, scanned, skipped = [], 0, 0
STEP, LONGEST = 64 << 20, max(len(n) for n in needles)
PREFIX = os.path.commonprefix(needles)
assert PREFIX, "the ids share no prefix"
BY_NEEDLE = dict(zip(needles, ids))
LENGTHS = sorted({len(n) for n in needles})
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)", line)
        lo, hi, perm, name = int(m[1], 16), int(m[2], 16), m[3], m[4]
        if perm[0] != "r" or name in ("[vvar]", "[vsyscall]", "[vdso]"):
            continue
        if hi - lo > 4 << 30:  # a sanitizer's shadow or reserve (terabytes, never data of ours)
            skipped += hi - lo
            continue
        for off in range(lo, hi, STEP):  # in pieces that overlap by an id's length
            try:
                mem.seek(off)
                data = mem.read(min(STEP + LONGEST, hi - off))
            except OSError:
                continue
            scanned += min(STEP, len(data))
            # one pass for all ids: every place their common prefix starts, then which id
            # (if any) starts there (a pass per id took most of the test's CPU time)
            at = data.find(PREFIX)
            while 0 <= at < STEP:
                for n in LENGTHS:
                    i = BY_NEEDLE.get(data[at:at + n])
                    if i is not None:
                        hits.append((i, name or "anonymous", hex(off + at), data[max(0, at - 24):at + n + 24]))
                at = data.find(PREFIX, at + 1)
assert scanned > 1 << 20, f"only {scanned} bytes of the server's memory read"
for h in hits[:12]:
    print("found", h, file=sys.stderr)
assert not hits, f"{len(hits)} copies of {len(set(h[0] for h in hits))} plaintext encounter ids in the server's memory"
print(f"ok - no plaintext encounter id in {scanned >> 20} MiB of the server's memory ({len(ids)} ids sent; {sys.argv[4]})")
PYEOF

# the scan can fail: it finds every id in the memory of a process that holds them
"$PY" -c 'import json, sys, time
held = [bytearray(i.encode()) for i in json.load(open(sys.argv[1]))]
print("ready", flush=True)
time.sleep(3600)' "$WORK/ids.json" >"$WORK/holder.out" &
HOLDER=$!
wait_for "the process holding the ids" grep -q ready "$WORK/holder.out"
if "$PY" "$WORK/scan.py" "$HOLDER" "$WORK/ids.json" 43 control 2>"$WORK/control.err"; then
    fail "the scan found no id in a process that holds 43"
fi
grep -q "copies of 43 plaintext encounter ids" "$WORK/control.err" || { cat "$WORK/control.err" >&2; fail "the scan did not find all 43 ids held"; }
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null || true
ok "the scan finds the 43 ids in a process that holds them"

# one worker: its request structs are reused in a known order
start_server --threads 1
wait_key "$READ"
"$PY" - "$PORT" "$PRED" "$WORK/ids.json" <<'PYEOF'
import http.client, json, socket, sys
port, key, ids = int(sys.argv[1]), sys.argv[2], json.load(open(sys.argv[3]))
pp = "/v1/models/readmission/predict"
H = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
def post(c, body, path=pp, headers=H):
    c.request("POST", path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.read()
st = {}
def count(s):
    st[s] = st.get(s, 0) + 1
# one at a time, on one kept-alive connection
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i in ids[:10]:
    s, b = post(c, json.dumps({"instances": [{"encounter_id": i}]}))
    assert s == 200, (s, b)
    assert i.encode() not in b
c.close()
# batches, a new connection each
for k in range(10, 30, 5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    s, b = post(c, json.dumps({"instances": [{"encounter_id": i} for i in ids[k:k + 5]]}))
    assert s == 200, (s, b)
    c.close()
# a large batch: a body over libmicrohttpd's buffer, arriving in pieces (the body
# buffer grows, the parse needs arena chunks)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
s, b = post(c, json.dumps({"instances": [{"encounter_id": ids[k % 5 + 25]} for k in range(400)]}))
assert s == 200, (s, b[:200])
c.close()
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
# JSON escapes: the plaintext exists only once decoded
esc = "".join("\\u%04x" % ord(ch) for ch in ids[30])
s, b = post(c, '{"instances":[{"encounter_id":"' + esc + '"}]}')
assert s == 200, (s, b)
# chunked
def chunks():
    body = json.dumps({"instances": [{"encounter_id": ids[31]}, {"encounter_id": ids[32]}]}).encode()
    for j in range(0, len(body), 7):
        yield body[j:j + 7]
c.request("POST", pp, body=chunks(), headers=H, encode_chunked=True)
r = c.getresponse(); r.read()
assert r.status == 200, r.status
# refused: an unknown id, malformed JSON after an id, an over-long id holding a real one,
# an id beside inputs, the wrong route
for body in ['{"instances":[{"encounter_id":"%s"},{"encounter_id":"NO-SUCH-%s"}]}' % (ids[33], ids[33]),
             '{"instances":[{"encounter_id":"%s"}, {' % ids[34],
             '{"instances":[{"encounter_id":"%s%s"}]}' % (ids[35], "x" * 80),
             '{"instances":[{"encounter_id":"%s","age":70}]}' % ids[36]]:
    s, b = post(c, body)
    assert 400 <= s < 500, (s, b)
    count(s)
c.close()
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
s, b = post(c, json.dumps({"instances": [{"encounter_id": ids[37]}]}), path="/v1/models")
assert 400 <= s < 500, (s, b)
c.close()
print("requests done", st)
PYEOF
# scan <how many ids were sent> <what was last>
# (once the server holds no connection socket: libmicrohttpd closes one after its
# requests' completion and close callbacks, which wipe; a state, not a pause; asked of
# the kernel, not of the server, whose answer to a request would overwrite the
# leftovers of the last one)
settled() { ! ss -Htanp "( sport = :$PORT )" | grep -v "^LISTEN" | grep -q "pid=$SERVE_PID,"; }
scan() {
    wait_for "the server's connections to close" settled
    "$PY" "$WORK/scan.py" "$SERVE_PID" "$WORK/ids.json" "$1" "$2"
}
scan 38 "a mix"
# the last request of the only worker a refused one, whose leftovers nothing overwrote since
last() { # body path id-count what
    "$PY" - "$PORT" "$PRED" "$1" "$2" <<'PYEOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
c.request("POST", sys.argv[4], body=sys.argv[3],
          headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"})
r = c.getresponse(); r.read()
assert 400 <= r.status < 500, r.status
c.close()
PYEOF
    scan "$3" "$4"
}
id() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])])' "$WORK/ids.json" "$1"; }
last '{"instances":[{"encounter_id":"'"$(id 38)"'"},{' /v1/models/readmission/predict 39 "last: JSON cut after an id"
last '{"instances":[{"encounter_id":"'"$(id 39)"'"}]}' /v1/models 40 "last: a body to the wrong route"
"$PY" - "$PORT" "$READ" '{"instances":[{"encounter_id":"'"$(id 42)"'"}]}' <<'PYEOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
c.request("GET", "/v1/models", body=sys.argv[3], headers={"Authorization": "Bearer " + sys.argv[2]})
r = c.getresponse(); r.read()
assert r.status == 200, r.status
c.close()
PYEOF
scan 43 "last: a body sent with a GET"
last '{"instances":[{"encounter_id":"'"$(id 40)"'","x":[1,{"encounter_id":"'"$(id 41)"'"}]}]}' \
    /v1/models/readmission/predict 43 "last: ids where no id belongs"
stop_server
