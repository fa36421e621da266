#!/usr/bin/env bash
# Serve benchmark: wrk against POST /v1/models/readmission/predict (one instance of
# the model's 26 inputs per request, taken in turn from 500 real feature rows: a
# realistic CDS body; the answer has value, band and 25 contributions, and is
# audited and drift-counted) and, in the same run, against nginx
# returning a fixed JSON body of the same size on another loopback port, with the
# same request. All get the same connections, threads and duration; wrk shares
# the machine with them. Prints requests/s, p50 and p99 for each and the ratio.
# A third server, mhd_static.c (built here with gcc and libmicrohttpd-dev, which
# scripts/setup.sh installs), is libmicrohttpd with the server's daemon options,
# answering nginx's fixed body with no work: the library's own floor.
#   usage: tests/bench/serve/run.sh [--connections C] [--duration S] [--threads T] [--rounds R]
#          [--server-threads N] [--think-ms MS]
#          (default 64 connections, 15 s, 2 wrk threads, 3 rounds; server threads = cores;
#          think time 1 ms, 0 = no paced runs)
# Each round runs nginx, the floor, then predict, so that all see the same load from
# whatever else runs on the machine; the medians and the median of the rounds' ratios
# are reported.
# Each round also runs both paced: the same connections, each waiting MS between a
# response and its next request, so that latency is also measured below saturation.
# Installs wrk and nginx (Debian packages) if missing. Target: ratio >= 0.6, p99 < 5 ms
# (saturated runs; the paced runs are reported beside them, not in the target).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
CONN=64 DUR=15 WRK_THREADS=2 ROUNDS=3 SERVER_THREADS=$(nproc) THINK_MS=1
bench_options 2,22p --connections=CONN --duration=DUR --threads=WRK_THREADS --rounds=ROUNDS \
    --server-threads=SERVER_THREADS --think-ms=THINK_MS -- "$@"
for v in "$CONN" "$DUR" "$WRK_THREADS" "$ROUNDS" "$SERVER_THREADS" "$THINK_MS"; do
    case $v in ''|*[!0-9]*) echo "run.sh: options take whole numbers (got '$v'); see --help" >&2; exit 2 ;; esac
done
if [ "$CONN" -lt 1 ] || [ "$DUR" -lt 1 ] || [ "$WRK_THREADS" -lt 1 ] || [ "$ROUNDS" -lt 1 ] || [ "$SERVER_THREADS" -lt 1 ] ||
    [ "$THINK_MS" -gt 1000 ]; then
    echo "run.sh: connections, duration, threads, rounds and server threads must be at least 1, think time at most 1000 ms" >&2
    exit 2
fi
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
bench_prognos_work serve
SERVE_PID="" NGINX_PID="" FLOOR_PID=""
cleanup() {
    bench_stop "$SERVE_PID"; bench_stop "$NGINX_PID"; bench_stop "$FLOOR_PID"
    PROGNOS_HOME="$WORK/home" "$PX" db stop >/dev/null 2>&1 || true
    if [ -L "$WORK/home/pg" ]; then rm -rf "$(readlink -f "$WORK/home/pg")"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export PROGNOS_HOME="$WORK/home"
bench_serve_world 5000
psql -X -q -At "$("$PX" db url)" -c "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY md5(encounter_id::text) LIMIT 500) t" >"$WORK/rows.json"

bench_serve_start "$PX" "$SERVER_THREADS"
# the bodies: 500 real feature rows (the model's inputs only), sent in turn, so that
# the server sees a realistic mix (a single repeated instance would also be one huge
# drift alert); nginx's fixed answer: a real answer
/usr/bin/python3 - "$WORK" "http://127.0.0.1:$PORT" "$READ" "$KEY" "$THINK_MS" <<'PYEOF'
import json, sys, urllib.request
work, url, read, key = sys.argv[1:5]
think = int(sys.argv[5])
get = lambda path, k, body=None: urllib.request.urlopen(urllib.request.Request(
    url + path, data=body, headers={"Authorization": "Bearer " + k, "Content-Type": "application/json"})).read()
feats = json.loads(get("/v1/models/readmission", read))["serving"]["schema"]["features"]
rows = json.load(open(work + "/rows.json"))
bodies = [json.dumps({"instances": [{f["name"]: r[f["name"]] for f in feats}]}, separators=(",", ":")) for r in rows]
answer = get("/v1/models/readmission/predict", key, bodies[0].encode()).decode().strip()
assert "'" not in answer and "$" not in answer
open(work + "/answer.json", "w").write(answer)
lua = ("bodies = {%s}\n" % ",".join(json.dumps(b) for b in bodies) +
       'local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}\n' % key +
       "local i = 0\n"
       "request = function()\n  i = i % #bodies + 1\n"
       "  return wrk.format(\"POST\", nil, headers, bodies[i])\nend\n")
open(work + "/post.lua", "w").write(lua)
sizes = [len(b) for b in bodies]
# the paced runs: the same requests, with a think time between a response and the next
# request on each connection (wrk's delay(), in whole milliseconds)
open(work + "/paced.lua", "w").write(lua + "delay = function()\n  return %d\nend\n" % think)
print(f"{len(bodies)} request bodies of {min(sizes)}-{max(sizes)} bytes, {len(feats)} inputs; answer {len(answer)} bytes")
PYEOF

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NPORT=$(free_port)
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

# the floor: libmicrohttpd set up as the server sets it up (tests/bench/serve/mhd_static.c),
# answering the same fixed body with no work: the least any server on the library spends
gcc -O2 -Wall -Wextra -Werror -o "$WORK/mhd_static" "$ROOT/tests/bench/serve/mhd_static.c" -lmicrohttpd
printf '%s\n' "$(cat "$WORK/answer.json")" >"$WORK/answer.body"
MPORT=$(free_port)
"$WORK/mhd_static" "$MPORT" "$SERVER_THREADS" "$WORK/answer.body" epoll &
FLOOR_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$MPORT/" && break; sleep 0.1; done
cmp -s <(curl -sf -d x "http://127.0.0.1:$MPORT/") <(curl -sf -d x "http://127.0.0.1:$NPORT/") ||
    { echo "the floor server and nginx give different answers" >&2; exit 1; }

to_ms() { case $1 in *us) echo "${1%us} / 1000" | bc -l;; *ms) echo "${1%ms}";; *s) echo "${1%s} * 1000" | bc -l;; esac; }
# CPU time the hypervisor took from this machine (steal) and left idle, in % of
# all CPU time, between two readings of /proc/stat: the machine's own noise
cpu_ticks() { awk '/^cpu / {print $5 + $6, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
run() { # name url round [script] -> appends "rps p50_ms p99_ms non2xx" to $WORK/res-name
    local idle0 steal0 all0 idle1 steal1 all1
    read -r idle0 steal0 all0 < <(cpu_ticks)
    wrk -t"$WRK_THREADS" -c"$CONN" -d"${DUR}s" --latency -s "$WORK/${4:-post}.lua" "$2" >"$WORK/wrk-$1-$3.txt"
    read -r idle1 steal1 all1 < <(cpu_ticks)
    local noise
    noise=$(awk -v i=$((idle1 - idle0)) -v s=$((steal1 - steal0)) -v a=$((all1 - all0)) \
        'BEGIN {printf "steal %4.1f%%, idle %4.1f%%", 100 * s / a, 100 * i / a}')
    local f="$WORK/wrk-$1-$3.txt" rps p50 p99 bad
    rps=$(awk '/^Requests\/sec/ {print $2}' "$f")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
    bad=$(awk '/Non-2xx/ {print $NF} /Socket errors/ {n = split($0, a, /[ ,]+/); for (i = 1; i <= n; i++) if (a[i] ~ /^[0-9]+$/) s += a[i]; print s}' "$f" | paste -sd+ | bc 2>/dev/null)
    echo "$rps $p50 $p99 ${bad:-0}" >>"$WORK/res-$1"
    printf '  round %d %-13s %10.0f req/s   p50 %6.2f ms   p99 %6.2f ms   errors %s   (%s)\n' "$3" "$1" "$rps" "$p50" "$p99" "${bad:-0}" "$noise"
}
echo "wrk: $WRK_THREADS threads, $CONN connections, ${DUR} s per run, $ROUNDS rounds, on $(nproc) cores shared with the servers"
echo "load average before (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
url() { echo "http://127.0.0.1:$1/v1/models/readmission/predict"; }
for port in "$PORT" "$NPORT" "$MPORT"; do  # warm-up
    wrk -t"$WRK_THREADS" -c"$CONN" -d3s -s "$WORK/post.lua" "$(url "$port")" >/dev/null
done
for r in $(seq 1 "$ROUNDS"); do
    run nginx "$(url "$NPORT")" "$r"
    run mhd-floor "$(url "$MPORT")" "$r"
    run predict "$(url "$PORT")" "$r"
    if [ "$THINK_MS" -gt 0 ]; then
        run nginx-paced "$(url "$NPORT")" "$r" paced
        run predict-paced "$(url "$PORT")" "$r" paced
    fi
done
/usr/bin/python3 - "$WORK" "$THINK_MS" >"$WORK/summary" <<'PYEOF'
import os, statistics, sys
w, think = sys.argv[1], int(sys.argv[2])
rows = lambda name: [list(map(float, l.split())) for l in open(w + "/res-" + name)] if os.path.exists(w + "/res-" + name) else []
n, p, n2, p2, fl = rows("nginx"), rows("predict"), rows("nginx-paced"), rows("predict-paced"), rows("mhd-floor")
med = lambda rs, i: statistics.median(r[i] for r in rs)
ratios = [b[0] / a[0] for a, b in zip(n, p)]
errors = int(sum(r[3] for r in p + p2))
line = lambda label, rs: print("median %-13s %10.0f req/s   p50 %6.2f ms   p99 %6.2f ms" % (label, med(rs, 0), med(rs, 1), med(rs, 2)))
line("nginx", n)
line("mhd-floor", fl)
line("predict", p)
print("ratio predict/nginx (median of the rounds): %.2f (target >= 0.6); predict p99 %.2f ms (target < 5 ms)" %
      (statistics.median(ratios), med(p, 2)))
print("ratio of the libmicrohttpd floor (no work) to nginx: %.2f" % statistics.median(b[0] / a[0] for a, b in zip(n, fl)))
under = lambda rs: "%d of %d" % (sum(r[2] < 5 for r in rs), len(rs))
print("p99 under 5 ms in: nginx %s rounds, the floor %s, predict %s" % (under(n), under(fl), under(p)))
if n2:
    print("paced (each connection waits %d ms between a response and its next request):" % think)
    line("nginx-paced", n2)
    line("predict-paced", p2)
    print("  paced load: %.2f of nginx's saturated throughput for nginx, %.2f for predict" %
          (med(n2, 0) / med(n, 0), med(p2, 0) / med(n, 0)))
print("predict non-2xx/socket errors (all runs): %d" % errors)
print("TARGET %r %r %d" % (statistics.median(ratios), med(p, 2), errors))
PYEOF
grep -v '^TARGET' "$WORK/summary"
read -r _ ratio p99ms errors < <(grep '^TARGET' "$WORK/summary")
sleep 1
audited=$(psql -X -q -At "$("$PX" db url)" -c "SELECT count(*) FROM audit.predictions")
echo "audited predictions (warm-up included): $audited; server counters:"
curl -s -H "Authorization: Bearer $READ" "http://127.0.0.1:$PORT/metrics" |
    grep -E '^prognos_(http_requests_total\{route="predict"|audit_(written|rejected|write_errors)_total|predict_latency_seconds_(sum|count))' |
    sed 's/^/  /'
echo "load average (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$(echo "$ratio >= 0.6 && $p99ms < 5 && $errors == 0" | bc)" = 1 ]; then echo "target met"; else echo "target NOT met"; fi
