#!/usr/bin/env bash
# serve_nginx.sh: the shipped reverse-proxy configuration (deploy/nginx/) run by an
# unprivileged nginx in front of a real `prognos serve`: a prediction over TLS gives
# the server's answer; a client trickling its head is cut by nginx's header timeout;
# a head that libmicrohttpd would answer twice or not at all (a Content-Length that is
# not a number, two Content-Length headers, a large head) gets one JSON 400 from nginx.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/serve_lib.sh"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || fail "nginx is not installed (scripts/setup.sh installs it)"
NGX="$WORK/nginx"
nginx_cleanup() {
    [ -s "$NGX/logs/nginx.pid" ] && kill -QUIT "$(cat "$NGX/logs/nginx.pid")" 2>/dev/null
    serve_cleanup
}
CLEANUP_HOOKS+=(nginx_cleanup)

setup_model 4000 21
READ=$(new_key read); PRED=$(new_key predict proxy)
sql "SELECT json_agg(t) FROM (SELECT * FROM features.readmission ORDER BY encounter_id LIMIT 5) t" >"$WORK/rows.json"
start_server
wait_key "$READ"
"$PY" -c '
import json, sys
sys.path.insert(0, sys.argv[4])
import serve_client as sc
feats, _ = sc.schema(sys.argv[1], sys.argv[2])
print(json.dumps({"instances": sc.instances_from_rows(json.load(open(sys.argv[3]))[:1], feats)}))
' "$URL" "$READ" "$WORK/rows.json" "$PROGNOS_SRC/tests/integration" >"$WORK/body.json"

# the shipped files, with the two marked lines pointed at this test's ports
source "$PROGNOS_SRC/tests/integration/nginx_shipped.sh"
nginx_shipped_start "$PORT"

"$PY" - "$NPORT" "$PORT" "$NGX/conf/prognos.crt" "$PRED" "$WORK/body.json" "$PROGNOS_SRC/tests/integration" <<'PYEOF'
import http.client, json, re, socket, ssl, sys, time
sys.path.insert(0, sys.argv[6])
from serve_client import trickle_head
nport, port, crt, key, body = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], open(sys.argv[5], "rb").read()
ctx = ssl.create_default_context(cafile=crt)
H = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

def predict(conn):
    conn.request("POST", "/v1/models/readmission/predict", body=body, headers=H)
    r = conn.getresponse()
    return r.status, r.read(), r

# a prediction through the proxy equals the server's own
st, direct, _ = predict(http.client.HTTPConnection("127.0.0.1", port, timeout=60))
st2, proxied, r = predict(http.client.HTTPSConnection("localhost", nport, context=ctx, timeout=60))
assert st == 200 and st2 == 200, (st, st2, proxied[:200])
a, b = json.loads(direct), json.loads(proxied)
assert a["predictions"] == b["predictions"], (a, b)
assert r.getheader("X-Model-Version") == "readmission/1" and r.getheader("Strict-Transport-Security"), r.getheaders()
print("ok - a prediction over TLS through nginx equals the server's answer:", b["predictions"][0]["value"])

# (a generous read timeout: nginx answers each of these at once; a slow answer on a loaded
# machine must not read as no answer)
def raw(data, timeout=60):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", nport), timeout=timeout), server_hostname="localhost")
    s.sendall(data)
    buf = b""
    try:
        while True:
            got = s.recv(65536)
            if not got:
                break
            buf += got
    except (socket.timeout, ConnectionResetError, ssl.SSLError):
        pass
    s.close()
    return buf

def one_json(buf, status, what):
    n = len(re.findall(rb"HTTP/1\.[01] \d{3}", buf))
    assert n == 1, f"{what}: {n} answers: {buf[:300]!r}"
    m = re.match(rb"HTTP/1\.1 (\d{3})", buf)
    assert m and int(m.group(1)) == status, f"{what}: {buf[:200]!r}"
    doc = json.loads(buf.partition(b"\r\n\r\n")[2].decode("utf-8"))
    assert doc["error"]["code"], doc
    print(f"ok - {what}: one JSON {status} from the proxy")

P = (b"POST /v1/models/readmission/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
     b"Authorization: Bearer " + key.encode() + b"\r\nConnection: close\r\n")
one_json(raw(P + b"Content-Length: abc\r\n\r\n" + body), 400, "a Content-Length that is not a number")
one_json(raw(P + b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(body) + body), 400, "two Content-Length headers")
one_json(raw(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 16000 + b"\r\nConnection: close\r\n\r\n"),
         400, "a 16 KB header line")
one_json(raw(P + b"Transfer-Encoding: gzip\r\n\r\n" + body), 501, "Transfer-Encoding: gzip")

# slowloris through the proxy: one header line a second; nginx's 5 s header deadline is not restarted by each line
# (counted from before the connect: nginx starts the deadline at the accept, and the TLS
# handshake before the first line takes a while on a loaded machine)
t0 = time.monotonic()
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", nport), timeout=30), server_hostname="localhost")
closed = trickle_head(s, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n", 1.0, 120, t0=t0)
assert closed is not None, "a client trickling its head through nginx is still connected after 120 s"
assert 4.5 <= closed, f"cut after {closed:.1f} s, before the 5 s header timeout"
print(f"ok - a client trickling its head through nginx was cut after {closed:.1f} s")
PYEOF
kill -QUIT "$(cat "$NGX/logs/nginx.pid")"
for _ in $(seq 1 3000); do [ -e "$NGX/logs/nginx.pid" ] || break; sleep 0.1; done
stop_server
ok "serve_nginx"
