/* server.c: the server's life: its parameters, start-up (keys and models
 * first, then the audit writer, the poller, libmicrohttpd and the acceptor),
 * the signals' entry points, and shutdown in the reverse order. */
#include "serve/internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the server -------------------------------------------------------------------- */

px_serve_params px_serve_default_params(void)
{
    px_serve_params p;
    memset(&p, 0, sizeof p);
    p.listen = "127.0.0.1:8080";
    long cores = sysconf(_SC_NPROCESSORS_ONLN); /* one worker per core */
    p.threads = cores < 1 ? 1 : cores > 64 ? 64 : (unsigned)cores;
    p.max_connections = 512;
    p.max_per_ip = 128;
    p.idle_timeout_s = 10;
    p.request_timeout_ms = 5000;
    p.max_body_bytes = 1u << 20;
    p.max_instances = 1000;
    p.max_depth = 8;
    p.fast_parse = 1;
    p.poll_ms = 1000;
    p.audit_queue = 262144;
    p.audit_flush_ms = 200;
    p.drift_window = 1000;
    p.drift_window_s = 300;
    p.drift_min_n = 100;
    p.drift_min_interval_ms = 1000;
    p.drift_alpha = 0.01;
    p.psi_floor = 0.1;
    p.effect_floor = 0.1;
    return p;
}

static int parse_listen(const char *listen, char *host, size_t hostlen, unsigned *port, px_err *e)
{
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || colon == listen || (size_t)(colon - listen) >= hostlen)
        return px_err_set(e, PX_EINVAL, "cannot listen on '%s': expected HOST:PORT", listen ? listen : "");
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p > 65535)
        return px_err_set(e, PX_EINVAL, "cannot listen on '%s': bad port", listen);
    *port = (unsigned)p;
    return 0;
}

/* Reads --tls-cert and --tls-key for libmicrohttpd (which takes PEM in memory).
 * 0, or PX_EINVAL naming what is missing (TLS not built in, one of the two, an
 * unreadable or non-PEM file). */
static int tls_load(px_server *s, const px_serve_params *p, px_err *e)
{
    if (!p->tls_cert && !p->tls_key) return 0;
    if (!p->tls_cert || !p->tls_key)
        return px_err_set(e, PX_EINVAL, "--tls-cert and --tls-key go together (a certificate and its key)");
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        px_err_set(e, PX_EINVAL, "this libmicrohttpd has no TLS");
        px_err_hint(e, "install a libmicrohttpd built with GnuTLS (Debian's is), or terminate TLS in a proxy");
        return PX_EINVAL;
    }
    const char *paths[2] = {p->tls_cert, p->tls_key};
    char **dst[2] = {&s->tls_cert_pem, &s->tls_key_pem};
    for (int i = 0; i < 2; i++) {
        unsigned char *data = NULL;
        size_t len = 0;
        if (px_file_read(paths[i], 1u << 20, &data, &len, e) != 0) {
            px_err_hint(e, "%s needs a readable PEM file", i ? "--tls-key" : "--tls-cert");
            return PX_EINVAL;
        }
        *dst[i] = (char *)data;
        if (!strstr(*dst[i], "-----BEGIN ") || strlen(*dst[i]) != len)
            return px_err_set(e, PX_EINVAL, "%s '%s' is not a PEM file", i ? "--tls-key" : "--tls-cert", paths[i]);
    }
    return 0;
}

static int split_models(px_server *s, const char *list, px_err *e)
{
    if (!list || !*list) return 0;
    size_t n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    if (!(s->only = calloc(n + 1, sizeof *s->only))) return px_err_set(e, PX_ENOMEM, "out of memory");
    size_t k = 0;
    const char *p = list;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len > 0) {
            if (len >= 64) return px_err_set(e, PX_EINVAL, "model name '%.*s' is too long", (int)len, p);
            if (!(s->only[k] = strndup(p, len))) return px_err_set(e, PX_ENOMEM, "out of memory");
            k++;
        }
        p += len + (c ? 1 : 0);
        if (!c) break;
    }
    return 0;
}

static int listen_on(px_server *s, const struct sockaddr_in *addr, px_err *e)
{
    int one = 1;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0 || setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(s->listen_fd, (const struct sockaddr *)addr, sizeof *addr) != 0 || listen(s->listen_fd, 1024) != 0)
        return px_err_set(e, PX_EIO, "cannot listen on %s: %s", s->p.listen, strerror(errno));
    struct sockaddr_in got;
    socklen_t glen = sizeof got;
    if (getsockname(s->listen_fd, (struct sockaddr *)&got, &glen) != 0)
        return px_err_set(e, PX_EIO, "cannot listen on %s: %s", s->p.listen, strerror(errno));
    s->port = ntohs(got.sin_port);
    return 0;
}

px_server *px_serve_start(const px_config *cfg, const px_serve_params *p, px_err *e)
{
    px_server *s = calloc(1, sizeof *s);
    PGconn *c = NULL;
    if (!s) {
        px_err_set(e, PX_ENOMEM, "out of memory starting the server");
        return NULL;
    }
    s->cfg = *cfg;
    s->p = *p;
    s->poll_pipe[0] = s->poll_pipe[1] = s->stop_pipe[0] = s->stop_pipe[1] = -1;
    s->accept_pipe[0] = s->accept_pipe[1] = s->listen_fd = -1;
    s->dp = px_drift_default_params();
    s->dp.alpha = p->drift_alpha;
    s->dp.psi_floor = p->psi_floor;
    s->dp.effect_floor = p->effect_floor;
    s->dp.min_n = p->drift_min_n;
    for (int i = 0; i < SRV_MAX_MODELS; i++) srv_slot_init(&s->models[i]);
    srv_slot_init(&s->keys);
    srv_slot_init(&s->models_json);
    srv_slot_init(&s->alerts_json);
    pthread_mutex_init(&s->drift_mu, NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    atomic_store(&s->started_us, srv_wall_us());
    unsigned char rnd[4];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        px_err_set(e, PX_EIO, "no randomness for request ids");
        goto fail;
    }
    snprintf(s->req_prefix, sizeof s->req_prefix, "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);

    if (p->threads < 1 || p->threads > 64 || p->max_connections < 1 || p->max_per_ip < 1 || p->max_body_bytes < 64 ||
        p->max_instances < 1 || p->max_depth < 3 || p->max_depth > 64 || p->poll_ms < 50 || p->audit_queue < 1 ||
        p->drift_window < 10 || !(p->drift_alpha > 0 && p->drift_alpha < 1)) {
        px_err_set(e, PX_EINVAL, "invalid server limits");
        px_err_detail(e, "threads 1..64, connections >= 1, body >= 64 bytes, depth 3..64, poll >= 50 ms, "
                         "drift window >= 10, alpha in (0,1)");
        goto fail;
    }
    if (parse_listen(p->listen, s->listen_host, sizeof s->listen_host, &s->port, e) != 0) goto fail;
    if (srv_conn_tables_init(s, e) != 0) goto fail;
    if (split_models(s, p->models, e) != 0) goto fail;
    if (srv_cors_init(s, p->cors_origins, e) != 0) goto fail;
    if (tls_load(s, p, e) != 0) goto fail;
    if (p->cds_jwks && !(s->jwt = srv_jwt_new(p->cds_jwks, p->cds_issuers, e))) goto fail;
    if (pipe(s->poll_pipe) != 0 || pipe(s->stop_pipe) != 0 || pipe(s->accept_pipe) != 0 ||
        srv_set_cloexec_nonblock(s->accept_pipe[0]) || srv_set_cloexec_nonblock(s->accept_pipe[1]) ||
        srv_set_cloexec_nonblock(s->poll_pipe[0]) ||
        srv_set_cloexec_nonblock(s->poll_pipe[1]) || srv_set_cloexec_nonblock(s->stop_pipe[0]) ||
        srv_set_cloexec_nonblock(s->stop_pipe[1])) {
        px_err_set(e, PX_EIO, "cannot create the server's pipes: %s", strerror(errno));
        goto fail;
    }
    if (!(s->pseudo = px_pseudo_load(cfg->key_file, e))) goto fail;
    srv_cjson_hooks_install();
    s->hooks = 1;

    /* keys and models first: the server answers only once it can */
    if (!(c = px_db_connect(cfg, e))) goto fail;
    if (srv_poll_once(s, c, 1, e) != 0) goto fail;
    if (atomic_load(&s->nmodels) == 0) {
        px_err_set(e, PX_ENOTFOUND, "no model to serve: no champion%s%s", s->only ? " among " : "",
                   s->only ? p->models : "");
        px_err_hint(e, "train one first: prognos train --model readmission");
        goto fail;
    }
    PQfinish(c);
    c = NULL;

    if (srv_audit_start(&s->audit, &s->cfg, p->audit_queue, p->audit_flush_ms, &s->metrics,
                        (const char(*)[64])s->names, e) != 0)
        goto fail;
    if (pthread_create(&s->poller, NULL, srv_poller_main, s) != 0) {
        px_err_set(e, PX_EIO, "cannot start the poller thread");
        goto fail;
    }
    s->poller_started = 1;

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)s->port);
    if (inet_pton(AF_INET, s->listen_host, &addr.sin_addr) != 1) {
        px_err_set(e, PX_EINVAL, "cannot listen on '%s': '%s' is not an IPv4 address", p->listen, s->listen_host);
        goto fail;
    }
    if (listen_on(s, &addr, e) != 0) {
        px_err_hint(e, "is the port in use? (--listen HOST:PORT)");
        goto fail;
    }
    if (p->public_url) {
        size_t n = strlen(p->public_url);
        while (n > 0 && p->public_url[n - 1] == '/') n--;
        if (n == 0 || n >= sizeof s->public_url ||
            (strncmp(p->public_url, "https://", 8) != 0 && strncmp(p->public_url, "http://", 7) != 0)) {
            px_err_set(e, PX_EINVAL, "--public-url '%.100s' is not an http(s) URL", p->public_url);
            goto fail;
        }
        memcpy(s->public_url, p->public_url, n);
        s->public_url[n] = '\0';
    } else
        snprintf(s->public_url, sizeof s->public_url, "%s://%s:%u", s->tls_cert_pem ? "https" : "http", s->listen_host,
                 s->port);
    /* the per-connection memory pool holds the request line and headers, the header
     * records and the answer's head. libmicrohttpd 0.9.75 answers 431 for a head
     * that does not fit, but closes in silence for one that just fits and leaves
     * no room for the answer (7,860-8,060 bytes with an 8 KiB pool). So the pool is
     * twice our limit (SRV_MAX_HEAD, 8 KiB, as nginx's header buffers), which
     * check_head answers with a JSON 431, and the silent band lies beyond it (see
     * README). It is cleared for every request on a kept-alive connection: larger
     * costs time on every request. No listen socket of its own: the acceptor adds
     * connections (MHD_USE_ITC wakes the worker given one). */
    /* a pool only for more than one thread: libmicrohttpd logs a warning for a pool of one */
    struct MHD_OptionItem pool[] = {{MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)p->threads, NULL}, {MHD_OPTION_END, 0, NULL}};
    /* TLS: libmicrohttpd's own (GnuTLS in Debian's build), on the connections the acceptor adds */
    struct MHD_OptionItem tls[] = {{MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert_pem},
                                   {MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key_pem},
                                   {MHD_OPTION_END, 0, NULL}};
    s->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET |
            MHD_USE_ITC | (s->tls_cert_pem ? MHD_USE_TLS : 0),
        0, NULL, NULL, srv_on_request, s, MHD_OPTION_EXTERNAL_LOGGER, srv_on_mhd_log, s, MHD_OPTION_ARRAY,
        p->threads > 1 ? pool : pool + 1, MHD_OPTION_CONNECTION_LIMIT, srv_mhd_limit(p->max_connections),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, srv_mhd_limit(p->max_connections), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)p->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SRV_MHD_POOL, MHD_OPTION_URI_LOG_CALLBACK,
        srv_on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, srv_on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, srv_on_connection, s,
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, MHD_OPTION_ARRAY, s->tls_cert_pem ? tls : tls + 2, MHD_OPTION_END);
    if (!s->d) {
        px_err_set(e, PX_EIO, "cannot start the HTTP server on %s", p->listen);
        if (s->tls_cert_pem) px_err_hint(e, "are --tls-cert and --tls-key a matching PEM certificate and key?");
        goto fail;
    }
    if (pthread_create(&s->acceptor, NULL, srv_acceptor_main, s) != 0) {
        px_err_set(e, PX_EIO, "cannot start the acceptor thread");
        goto fail;
    }
    s->acceptor_started = 1;
    if (p->port_file) {
        char num[16];
        int n = snprintf(num, sizeof num, "%u\n", s->port);
        if (px_file_write_atomic(p->port_file, num, (size_t)n, 0644, e) != 0) goto fail;
    }
    px_log(PX_LOG_INFO, "serve: listening on %s:%u (%s) with %u threads, %d models", s->listen_host, s->port,
           s->tls_cert_pem ? "https" : "http", p->threads, atomic_load(&s->nmodels));
    return s;
fail:
    if (c) PQfinish(c);
    px_serve_free(s);
    return NULL;
}

unsigned px_serve_port(const px_server *s)
{
    return s ? s->port : 0;
}

static void poke(int fd)
{
    if (fd < 0) return;
    char b = 1;
    ssize_t n = write(fd, &b, 1); /* a full pipe already holds a wake-up */
    (void)n;
}

void px_serve_reload(px_server *s)
{
    if (!s) return;
    atomic_store(&s->reload_all, 1);
    poke(s->poll_pipe[1]);
}

void px_serve_stop(px_server *s)
{
    if (!s) return;
    atomic_store(&s->stopping, 1);
    poke(s->stop_pipe[1]);
    poke(s->poll_pipe[1]);
}

int px_serve_wait(px_server *s)
{
    while (!atomic_load(&s->stopping)) {
        struct pollfd pf = {.fd = s->stop_pipe[0], .events = POLLIN};
        if (poll(&pf, 1, 1000) > 0) {
            char buf[64];
            while (read(s->stop_pipe[0], buf, sizeof buf) > 0) {}
        }
    }
    return 0;
}

void px_serve_free(px_server *s)
{
    if (!s) return;
    atomic_store(&s->stopping, 1);
    if (s->acceptor_started) { /* no new connection once the daemon stops */
        poke(s->accept_pipe[1]);
        pthread_join(s->acceptor, NULL);
    }
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->d) {
        MHD_stop_daemon(s->d); /* waits for requests in flight */
        s->d = NULL;
        srv_req_cache_flush();
    }
    if (s->poller_started) {
        poke(s->poll_pipe[1]);
        pthread_join(s->poller, NULL);
    }
    srv_audit_stop(&s->audit, 5000);
    for (int i = 0; i < SRV_MAX_MODELS; i++) srv_slot_release(&s->models[i]);
    srv_slot_release(&s->keys);
    srv_slot_release(&s->models_json);
    srv_slot_release(&s->alerts_json);
    for (size_t i = 0; i < s->ndrifts; i++) srv_drift_free(s->drifts[i]);
    for (int i = 0; i < s->pool_n; i++) PQfinish(s->pool[i]);
    pthread_mutex_destroy(&s->drift_mu);
    pthread_mutex_destroy(&s->pool_mu);
    srv_conn_free_all(s); /* handed over, never announced */
    pthread_mutex_destroy(&s->conn_mu);
    free(s->conn_by_fd);
    free(s->conn_ip_key);
    free(s->conn_ip_count);
    for (int i = 0; i < 2; i++) {
        if (s->poll_pipe[i] >= 0) close(s->poll_pipe[i]);
        if (s->stop_pipe[i] >= 0) close(s->stop_pipe[i]);
        if (s->accept_pipe[i] >= 0) close(s->accept_pipe[i]);
    }
    if (s->only)
        for (char **o = s->only; *o; o++) free(*o);
    free(s->only);
    px_pseudo_free(s->pseudo);
    srv_cors_free(s);
    srv_jwt_free(s->jwt);
    free(s->tls_cert_pem);
    if (s->tls_key_pem) OPENSSL_cleanse(s->tls_key_pem, strlen(s->tls_key_pem));
    free(s->tls_key_pem);
    if (s->hooks) srv_cjson_hooks_remove();
    free(s);
}

