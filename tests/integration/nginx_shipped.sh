# nginx_shipped.sh: sourced by serve_nginx.sh and serve_replicas.sh (after lib.sh).
# nginx_shipped_start UPSTREAM_PORT [REPLICA_PORT]: runs nginx in $NGX with the
# shipped deploy/nginx files, the marked lines pointed at the server on
# UPSTREAM_PORT (and the replica line, uncommented, at REPLICA_PORT) and the TLS
# listener at a free port NPORT (a one-day self-signed certificate,
# $NGX/conf/prognos.crt); fails the test when a marked line is missing, nginx
# refuses the configuration or does not start (lib.sh's wait_for: no fixed
# few seconds on a loaded machine).
nginx_shipped_start() {
    local conf="$NGX/conf/prognos.conf"
    mkdir -p "$NGX/conf" "$NGX/logs" "$NGX/tmp"
    NPORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cp "$PROGNOS_SRC/deploy/nginx/nginx.conf" "$NGX/conf/"
    sed -e "s|server 127.0.0.1:8080;  # PROGNOS_UPSTREAM|server 127.0.0.1:$1;  # PROGNOS_UPSTREAM|" \
        -e "${2:+s|# server 127.0.0.1:8081;  # PROGNOS_REPLICA|server 127.0.0.1:$2;  # PROGNOS_REPLICA|}" \
        -e "s|listen 127.0.0.1:8443 ssl;  # PROGNOS_LISTEN|listen 127.0.0.1:$NPORT ssl;  # PROGNOS_LISTEN|" \
        "$PROGNOS_SRC/deploy/nginx/prognos.conf" >"$conf"
    grep -q "^ *server 127.0.0.1:$1;  # PROGNOS_UPSTREAM" "$conf" || fail "the upstream line was not found"
    if [ -n "${2:-}" ]; then
        grep -q "^ *server 127.0.0.1:$2;  # PROGNOS_REPLICA" "$conf" || fail "the replica line was not found"
    fi
    grep -q "127.0.0.1:$NPORT ssl;  # PROGNOS_LISTEN" "$conf" || fail "the listen line was not found"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$NGX/conf/prognos.key" -out "$NGX/conf/prognos.crt" 2>/dev/null
    "$NGINX" -t -p "$NGX" -c "$NGX/conf/nginx.conf" -e logs/error.log 2>"$WORK/nginx-t.log" \
        || { cat "$WORK/nginx-t.log" >&2; fail "nginx refuses the configuration"; }
    "$NGINX" -p "$NGX" -c "$NGX/conf/nginx.conf" -e logs/error.log
    wait_for "nginx to start (its log: $NGX/logs/error.log)" test -s "$NGX/logs/nginx.pid"
}
