#!/usr/bin/env bash
# Protocols benchmark: wrk against /v1 predict, the Open Inference Protocol V2
# infer and the CDS Hooks readmission-risk service, each with one instance (one
# stay) per request from the same 200 generated stays, on one warehouse and one
# server. With --baseline PROGNOS, /v1 predict is also measured on that binary
# (an older build) in alternate rounds on the same warehouse, so that the
# before/after ratio sees the same machine load.
#   usage: tests/bench/serve/protocols.sh [--duration S] [--rounds R] [--connections C] [--baseline BIN]
#          (default 10 s, 3 rounds, 32 connections, 2 wrk threads; server threads = cores)
# CDS calls carry their FHIR prefetch (the stay's Patient, Encounter, the patient's
# Conditions, Encounters and Procedures) and a predict key (no --cds-jwks: a JWT's
# jti cannot repeat, and wrk replays bodies); the features are computed from the
# FHIR resources on every call. Prints req/s, p50 and p99 per route and round, and
# the medians.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
DUR=10 ROUNDS=3 CONN=32 BASE=""
bench_options 2,15p --duration=DUR --rounds=ROUNDS --connections=CONN --baseline=BASE -- "$@"
command -v wrk >/dev/null || { echo "protocols.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }
PX="$ROOT/build/engine/cli/prognos"
bench_serve_work proto
bench_serve_world 5000
echo "and the same data as FHIR"
"$PX" generate --patients 5000 --seed 7 --out "$WORK/fhir" --format fhir >/dev/null
psql -X -q -At "$("$PX" db url)" -c "SELECT json_object_agg(encounter_id, to_jsonb(f)) FROM features.readmission f" >"$WORK/rows.json"

start() { bench_serve_start "$1" "$(nproc)"; } # binary
start "$PX"
/usr/bin/python3 - "$WORK" "http://127.0.0.1:$PORT" "$READ" "$KEY" "$PROGNOS_HOME/secret.key" <<'PYEOF'
import hashlib, hmac, json, sys, urllib.request
from collections import defaultdict
w, url, read, key, keyfile = sys.argv[1:6]
get = lambda path, k, body=None: urllib.request.urlopen(urllib.request.Request(
    url + path, data=body, headers={"Authorization": "Bearer " + k, "Content-Type": "application/json"})).read()
feats = json.loads(get("/v1/models/readmission", read))["serving"]["schema"]["features"]
hk = bytes.fromhex(open(keyfile).read().strip())
def pseudo(v):
    h = hmac.new(hk, f"encounter:{v}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
rows = json.load(open(w + "/rows.json"))
load = lambda t: [json.loads(l) for l in open(f"{w}/fhir/{t}.ndjson")]
pat = {p["id"]: p for p in load("Patient")}
by = defaultdict(lambda: defaultdict(list))
for t in ("Encounter", "Condition", "Procedure"):
    for r in load(t):
        by[r["subject"]["reference"].split("/")[1]][t].append(r)
v1, v2, cds = [], [], []
for pid, g in sorted(by.items()):
    for e in g["Encounter"]:
        r = rows.get(pseudo(e["id"]))
        if not r or len(v1) == 200:
            continue
        inst = {f["name"]: r[f["name"]] for f in feats}
        v1.append(json.dumps({"instances": [inst]}, separators=(",", ":")))
        v2.append(json.dumps({"inputs": [{"name": f["name"], "datatype": "FP64" if f["kind"] != "categorical" else "BYTES",
                                          "shape": [1], "data": [inst[f["name"]]]} for f in feats if f["used"]]},
                             separators=(",", ":")))
        cds.append(json.dumps({"hook": "encounter-discharge", "hookInstance": "00000000-0000-4000-8000-000000000000",
                               "context": {"patientId": pid, "encounterId": e["id"], "userId": "Practitioner/1"},
                               "prefetch": {"patient": pat[pid], "encounter": e, "encounters": g["Encounter"],
                                            "conditions": g["Condition"], "procedures": g["Procedure"]}},
                              separators=(",", ":")))
for name, bodies in (("v1", v1), ("v2", v2), ("cds", cds)):
    lua = ("bodies = {%s}\n" % ",".join(json.dumps(b) for b in bodies) +
           'local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}\n' % key +
           "local i = 0\nrequest = function()\n  i = i % #bodies + 1\n"
           "  return wrk.format(\"POST\", nil, headers, bodies[i])\nend\n")
    open(f"{w}/{name}.lua", "w").write(lua)
    sizes = [len(b) for b in bodies]
    print(f"{name}: {len(bodies)} bodies of {min(sizes)}-{max(sizes)} bytes")
# every body answers 200 before it is timed
for path, bodies in (("/v1/models/readmission/predict", v1), ("/v2/models/readmission/infer", v2),
                     ("/cds-services/readmission-risk", cds)):
    for b in bodies[:20]:
        get(path, key, b.encode())
PYEOF
to_ms() { case $1 in *us) echo "${1%us} / 1000" | bc -l;; *ms) echo "${1%ms}";; *s) echo "${1%s} * 1000" | bc -l;; esac; }
run() { # label script path round
    local f="$WORK/wrk-$1-$4.txt"
    wrk -t2 -c"$CONN" -d"${DUR}s" --latency -s "$WORK/$2.lua" "http://127.0.0.1:$PORT$3" >"$f"
    local rps p50 p99 bad
    rps=$(awk '/^Requests\/sec/ {print $2}' "$f")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
    bad=$(awk '/Non-2xx/ {print $NF}' "$f")
    echo "$rps $p50 $p99 ${bad:-0}" >>"$WORK/res-$1"
    printf '  round %d %-10s %9.0f req/s   p50 %6.2f ms   p99 %6.2f ms   non-2xx %s   (load %s)\n' "$4" "$1" "$rps" "$p50" \
        "$p99" "${bad:-0}" "$(cut -d' ' -f1 /proc/loadavg)"
}
echo "wrk: 2 threads, $CONN connections, ${DUR} s per run, $ROUNDS rounds, on $(nproc) cores shared with the server"
echo "load average before (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    if [ -n "$BASE" ]; then
        stop; start "$BASE"
        run v1-before v1 /v1/models/readmission/predict "$r"
        stop; start "$PX"
    fi
    run v1 v1 /v1/models/readmission/predict "$r"
    run v2 v2 /v2/models/readmission/infer "$r"
    run cds cds /cds-services/readmission-risk "$r"
done
/usr/bin/python3 - "$WORK" <<'PYEOF'
import os, statistics, sys
w = sys.argv[1]
res = {}
for name in ("v1-before", "v1", "v2", "cds"):
    p = f"{w}/res-{name}"
    if os.path.exists(p):
        res[name] = [list(map(float, l.split())) for l in open(p)]
med = lambda rs, i: statistics.median(r[i] for r in rs)
for name, rs in res.items():
    print("median %-10s %9.0f req/s   p50 %6.2f ms   p99 %6.2f ms   non-2xx %d" % (name, med(rs, 0), med(rs, 1), med(rs, 2),
                                                                                 sum(r[3] for r in rs)))
if "v1-before" in res:
    ratios = [b[0] / a[0] for a, b in zip(res["v1-before"], res["v1"])]
    print("v1 after/before throughput (median of the rounds' ratios): %.2f; p99 %.2f -> %.2f ms" %
          (statistics.median(ratios), med(res["v1-before"], 2), med(res["v1"], 2)))
print("v2/v1 throughput %.2f; cds/v1 %.2f" % (med(res["v2"], 0) / med(res["v1"], 0), med(res["cds"], 0) / med(res["v1"], 0)))
PYEOF
