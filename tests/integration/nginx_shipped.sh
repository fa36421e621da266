# nginx_shipped.sh: sourced by serve_nginx.sh and serve_replicas.sh (after lib.sh).
# nginx_shipped_start UPSTREAM_PORT [REPLICA_PORT]: runs nginx in $NGX with the
# shipped deploy/nginx files, the marked lines pointed at the server on
# UPSTREAM_PORT (and the replica line, uncommented, at REPLICA_PORT) and the TLS
# listener at a free port NPORT (a one-day self-signed certificate,
# $NGX/conf/prognos.crt); fails the test when a marked line is missing, nginx
# refuses the configuration or does not start (lib.sh's wait_for: no fixed
# few seconds on a loaded machine).
#
# NPORT is found free by binding port 0 and closing it; another process can take it
# before nginx binds it (the tests run a dozen at once). nginx then exits with
# "Address already in use" in its log, and this tries again with another port, up
# to five times; any other failure to start fails the test at once.
nginx_shipped_start() {
    local conf="$NGX/conf/prognos.conf" try
    mkdir -p "$NGX/conf" "$NGX/logs" "$NGX/tmp"
    cp "$PROGNOS_SRC/deploy/nginx/nginx.conf" "$NGX/conf/"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$NGX/conf/prognos.key" -out "$NGX/conf/prognos.crt" 2>/dev/null
    for try in 1 2 3 4 5; do
        NPORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        sed -e "s|server 127.0.0.1:8080;  # PROGNOS_UPSTREAM|server 127.0.0.1:$1;  # PROGNOS_UPSTREAM|" \
            -e "${2:+s|# server 127.0.0.1:8081;  # PROGNOS_REPLICA|server 127.0.0.1:$2;  # PROGNOS_REPLICA|}" \
            -e "s|listen 127.0.0.1:8443 ssl;  # PROGNOS_LISTEN|listen 127.0.0.1:$NPORT ssl;  # PROGNOS_LISTEN|" \
            "$PROGNOS_SRC/deploy/nginx/prognos.conf" >"$conf"
        grep -q "^ *server 127.0.0.1:$1;  # PROGNOS_UPSTREAM" "$conf" || fail "the upstream line was not found"
        if [ -n "${2:-}" ]; then
            grep -q "^ *server 127.0.0.1:$2;  # PROGNOS_REPLICA" "$conf" || fail "the replica line was not found"
        fi
        grep -q "127.0.0.1:$NPORT ssl;  # PROGNOS_LISTEN" "$conf" || fail "the listen line was not found"
        "$NGINX" -t -p "$NGX" -c "$NGX/conf/nginx.conf" -e logs/error.log 2>"$WORK/nginx-t.log" \
            || { cat "$WORK/nginx-t.log" >&2; fail "nginx refuses the configuration"; }
        : >"$NGX/logs/error.log"
        if "$NGINX" -p "$NGX" -c "$NGX/conf/nginx.conf" -e logs/error.log 2>"$WORK/nginx-start.log"; then
            wait_for "nginx to start (its log: $NGX/logs/error.log)" test -s "$NGX/logs/nginx.pid"
            return 0
        fi
        cat "$WORK/nginx-start.log" >>"$NGX/logs/error.log"
        grep -q "127.0.0.1:$NPORT failed (98: Address already in use)" "$NGX/logs/error.log" \
            || { cat "$NGX/logs/error.log" >&2; fail "nginx did not start"; }
        echo "nginx_shipped_start: port $NPORT was taken before nginx bound it; another one (try $try of 5)" >&2
    done
    fail "nginx found its port taken five times in a row"
}
