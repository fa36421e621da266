#!/usr/bin/env bash
# Serve benchmark: wrk against POST /v1/models/readmission/predict (one instance of
# the model's 26 inputs, a realistic CDS body: answer with value, band and 25
# contributions, audited, drift-counted) and, in the same run, against nginx
# returning a fixed JSON body of the same size on another loopback port, with the
# same request. Both get the same connections, threads and duration; wrk shares
# the machine with them. Prints requests/s, p50 and p99 for both and the ratio.
#   usage: tests/bench/serve/run.sh [--connections C] [--duration S] [--threads T]
#          (default 64 connections, 15 s, 2 wrk threads; server threads = cores)
# Installs wrk and nginx (Debian packages) if missing. Target: ratio >= 0.6, p99 < 5 ms.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CONN=64 DUR=15 WRK_THREADS=2
while [ $# -gt 0 ]; do
    case $1 in
        --connections) CONN=$2; shift 2 ;;
        --duration) DUR=$2; shift 2 ;;
        --threads) WRK_THREADS=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    # no service start from the package: the benchmark runs its own nginx
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d.prognos >/dev/null
    had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ $had_policy -eq 1 ] || { $SUDO cp /usr/sbin/policy-rc.d.prognos /usr/sbin/policy-rc.d; $SUDO chmod 755 /usr/sbin/policy-rc.d; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ $had_policy -eq 1 ] || $SUDO rm -f /usr/sbin/policy-rc.d
    $SUDO rm -f /usr/sbin/policy-rc.d.prognos
fi
PX="$ROOT/build/engine/cli/prognos"
[ -x "$PX" ] || "$ROOT/scripts/setup.sh"
WORK=$(mktemp -d /tmp/prognos-bench-serve.XXXXXX)
chmod 755 "$WORK"
SERVE_PID="" NGINX_PID=""
cleanup() {
    if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
    if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    PROGNOS_HOME="$WORK/home" "$PX" db stop >/dev/null 2>&1 || true
    if [ -L "$WORK/home/pg" ]; then rm -rf "$(readlink -f "$WORK/home/pg")"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export PROGNOS_HOME="$WORK/home"
echo "setting up: 5000 patients, the readmission model"
"$PX" generate --patients 5000 --seed 7 --out "$WORK/data" >/dev/null
"$PX" etl load --format canonical --source "$WORK/data" --quiet >/dev/null
"$PX" train --model readmission >/dev/null
KEY=$("$PX" apikey create --role predict --name bench 2>/dev/null)
READ=$("$PX" apikey create --role read --name bench 2>/dev/null)
psql -X -q -At "$("$PX" db url)" -c "SELECT row_to_json(t) FROM features.readmission t ORDER BY discharge_date DESC LIMIT 1" >"$WORK/row.json"

"$PX" serve --listen 127.0.0.1:0 --port-file "$WORK/port" --threads "$(nproc)" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT=$(cat "$WORK/port")
for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $READ" "http://127.0.0.1:$PORT/v1/drift")" = 200 ] && break
    sleep 0.1
done
# the body: the model's inputs from one feature row; nginx's fixed answer: a real answer
/usr/bin/python3 - "$WORK" "http://127.0.0.1:$PORT" "$READ" "$KEY" <<'PYEOF'
import json, sys, urllib.request
work, url, read, key = sys.argv[1:5]
get = lambda path, k, body=None: urllib.request.urlopen(urllib.request.Request(
    url + path, data=body, headers={"Authorization": "Bearer " + k, "Content-Type": "application/json"})).read()
feats = json.loads(get("/v1/models/readmission", read))["serving"]["schema"]["features"]
row = json.load(open(work + "/row.json"))
body = json.dumps({"instances": [{f["name"]: row[f["name"]] for f in feats}]}, separators=(",", ":"))
open(work + "/body.json", "w").write(body)
answer = get("/v1/models/readmission/predict", key, body.encode()).decode().strip()
assert "'" not in answer and "$" not in answer
open(work + "/answer.json", "w").write(answer)
lua = ('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
       'wrk.headers["Authorization"] = "Bearer %s"\n' % (json.dumps(body), key))
open(work + "/post.lua", "w").write(lua)
print(f"request body {len(body)} bytes, {len(feats)} inputs; answer {len(answer)} bytes")
PYEOF

NPORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/nginx.conf" <<NGINX
worker_processes $(nproc);
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 60;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx-body;
    server {
        listen 127.0.0.1:$NPORT;
        location / { default_type application/json; return 200 '$(cat "$WORK/answer.json")\n'; }
    }
}
NGINX
/usr/sbin/nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$NPORT/" && break; sleep 0.1; done

run() { # name url
    wrk -t"$WRK_THREADS" -c"$CONN" -d"${DUR}s" --latency -s "$WORK/post.lua" "$2" >"$WORK/wrk-$1.txt"
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk-$1.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk-$1.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk-$1.txt")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk-$1.txt" | tr '\n' ' ')
    printf '%-8s %12s req/s   p50 %9s   p99 %9s   %s\n' "$1" "$rps" "$p50" "$p99" "$errs"
    eval "${1}_rps=$rps ${1}_p99=$p99"
}
echo "wrk: $WRK_THREADS threads, $CONN connections, ${DUR} s each, on $(nproc) cores shared with the servers"
wrk -t"$WRK_THREADS" -c"$CONN" -d3s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/models/readmission/predict" >/dev/null  # warm-up
wrk -t"$WRK_THREADS" -c"$CONN" -d3s -s "$WORK/post.lua" "http://127.0.0.1:$NPORT/v1/models/readmission/predict" >/dev/null
run nginx "http://127.0.0.1:$NPORT/v1/models/readmission/predict"
run predict "http://127.0.0.1:$PORT/v1/models/readmission/predict"
to_ms() { case $1 in *us) echo "${1%us} / 1000" | bc -l;; *ms) echo "${1%ms}";; *s) echo "${1%s} * 1000" | bc -l;; esac; }
ratio=$(echo "$predict_rps / $nginx_rps" | bc -l)
p99ms=$(to_ms "$predict_p99")
printf 'ratio predict/nginx: %.2f (target >= 0.6); predict p99 %.2f ms (target < 5 ms)\n' "$ratio" "$p99ms"
audited=$(psql -X -q -At "$("$PX" db url)" -c "SELECT count(*) FROM audit.predictions")
echo "audited predictions so far: $audited"
if [ "$(echo "$ratio >= 0.6 && $p99ms < 5" | bc)" = 1 ]; then echo "target met"; else echo "target NOT met"; fi
