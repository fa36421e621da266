#!/usr/bin/env bash
# By-encounter benchmark: POST /v1/models/readmission/predict with one
# {"encounter_id": ...} instance per request (the warehouse lookup on the hot
# route), sequential requests on one keep-alive connection, 2000 a round, rounds
# alternating between the binaries given (e.g. before and after a change), on the
# same home and data. Prints each binary's median of the rounds' median and p99
# latencies. The machine may be loaded: compare binaries within one run only.
#   usage: tests/bench/serve/encounter.sh [--rounds R] [--requests N] PROGNOS_BIN [PROGNOS_BIN ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
ROUNDS=3 N=2000
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --requests) N=$2; shift 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--rounds R] [--requests N] PROGNOS_BIN [PROGNOS_BIN ...]" >&2; exit 2; }
PX=$1
bench_serve_work enc
bench_serve_world 3000
for r in $(seq 1 "$ROUNDS"); do
    for bin in "$@"; do
        bench_serve_start "$bin" 2
        /usr/bin/python3 - "$PORT" "$KEY" "$PROGNOS_HOME/secret.key" "$WORK/data/encounters.csv" "$N" \
            "$bin" >>"$WORK/results" <<'PYEOF'
import csv, hashlib, hmac, http.client, json, statistics, sys, time
port, key, keyfile, enc, n, binary = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
ids = [r["encounter_id"] for r in csv.DictReader(open(enc))]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
h = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
def ask(i):
    c.request("POST", "/v1/models/readmission/predict", json.dumps({"instances": [{"encounter_id": i}]}), h)
    r = c.getresponse(); r.read(); return r.status
ok = [i for i in ids[:3000] if ask(i) == 200][:500]   # warm-up: encounters with a feature row
assert len(ok) >= 100, len(ok)
lat = []
for k in range(n):
    t = time.perf_counter(); st = ask(ok[k % len(ok)]); lat.append((time.perf_counter() - t) * 1e3)
    assert st == 200, st
lat.sort()
print(json.dumps({"bin": binary, "p50": statistics.median(lat), "p99": lat[int(0.99 * len(lat))]}))
PYEOF
        stop
    done
done
/usr/bin/python3 - "$WORK/results" <<'PYEOF'
import collections, json, statistics, sys
by = collections.defaultdict(list)
for l in open(sys.argv[1]): x = json.loads(l); by[x["bin"]].append(x)
for b, rs in by.items():
    print("%-60s median of %d rounds: p50 %.3f ms  p99 %.3f ms" % (b, len(rs), statistics.median(r["p50"] for r in rs),
                                                                 statistics.median(r["p99"] for r in rs)))
PYEOF
