/* http.c: the libmicrohttpd daemon, the request lifecycle and the server's life.
 *
 * A request's struct (srv_req) is allocated when libmicrohttpd sees its URI and
 * freed in the completion callback, with everything it acquired (a model
 * version, buffers, the parsed JSON). Every answer the application gives is
 * JSON with an explicit status; limits are checked before work is done: body
 * size (from Content-Length, then while reading), request deadline, JSON depth
 * (before cJSON), batch size. Connection limits and the idle timeout are
 * libmicrohttpd's options, set explicitly (its defaults set none). */
#include "serve/internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <math.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

uint64_t srv_mono_us(void) { return px_mono_us(); }

uint64_t srv_wall_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* ---- reference counting ---------------------------------------------------------- */

void srv_slot_init(srv_slot *s)
{
    pthread_mutex_init(&s->mu, NULL);
    s->cur = NULL;
}

void *srv_acquire(srv_slot *s)
{
    pthread_mutex_lock(&s->mu);
    srv_rc *o = s->cur;
    if (o) atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    return o;
}

void srv_release(void *obj)
{
    srv_rc *o = obj;
    if (o && atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1) o->destroy(o);
}

void srv_slot_swap(srv_slot *s, void *obj)
{
    pthread_mutex_lock(&s->mu);
    void *old = s->cur;
    s->cur = obj;
    pthread_mutex_unlock(&s->mu);
    srv_release(old);
}

void srv_slot_release(srv_slot *s)
{
    srv_slot_swap(s, NULL);
    pthread_mutex_destroy(&s->mu);
}

static void text_destroy(void *p)
{
    free(p);
}

srv_text *srv_text_new(const char *s, size_t len)
{
    srv_text *t = malloc(sizeof *t + len + 1);
    if (!t) return NULL;
    atomic_init(&t->rc.refs, 1);
    t->rc.destroy = text_destroy;
    t->len = len;
    memcpy(t->s, s, len);
    t->s[len] = '\0';
    return t;
}

/* ---- numbers ---------------------------------------------------------------------- */

size_t srv_fmt_double(char *out, double v)
{
    if (!isfinite(v)) {
        memcpy(out, "null", 5);
        return 4;
    }
    /* %.15g round-trips almost every value a model produces and is much shorter
     * than %.17g; a value that does not round-trip gets the 17 digits */
    int n = snprintf(out, 32, "%.15g", v);
    if (strtod(out, NULL) != v) n = snprintf(out, 32, "%.17g", v);
    return (size_t)n;
}

/* ---- the database pool (request-path reads) ------------------------------------- */

PGconn *srv_db_open(const px_config *cfg, const char *app, int statement_timeout_ms, px_err *e)
{
    char url[4200], full[4400];
    if (px_pg_url(cfg, url, sizeof url, e) != 0) return NULL;
    /* a short connect timeout: someone waits for it; never px_db_connect, which
     * would start an embedded server that an operator stopped */
    if (strncmp(url, "postgres", 8) == 0)
        snprintf(full, sizeof full, "%s%sconnect_timeout=2", url, strchr(url, '?') ? "&" : "?");
    else
        snprintf(full, sizeof full, "%s connect_timeout=2", url);
    PGconn *c = PQconnectdb(full);
    if (PQstatus(c) != CONNECTION_OK) {
        px_err_set(e, PX_EDB, "cannot connect to the warehouse");
        px_err_detail(e, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    char set[160];
    snprintf(set, sizeof set, "SET statement_timeout = %d; SET application_name = '%s'", statement_timeout_ms, app);
    PGresult *r = PQexec(c, set);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        px_err_set(e, PX_EDB, "cannot set up a warehouse connection");
        px_err_detail(e, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

PGconn *srv_pool_get(px_server *s, px_err *e)
{
    PGconn *c = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (s->pool_n > 0) c = s->pool[--s->pool_n];
    pthread_mutex_unlock(&s->pool_mu);
    if (c && PQstatus(c) == CONNECTION_OK) return c;
    if (c) PQfinish(c);
    /* bound every statement a request waits for */
    return srv_db_open(&s->cfg, "prognos serve", 2000, e);
}

void srv_pool_put(px_server *s, PGconn *c, int broken)
{
    if (!c) return;
    if (broken || PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return;
    }
    pthread_mutex_lock(&s->pool_mu);
    if (s->pool_n < (int)(sizeof s->pool / sizeof s->pool[0])) {
        s->pool[s->pool_n++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (c) PQfinish(c);
}

/* ---- errors ------------------------------------------------------------------------- */

/* Appends s as a JSON string of valid UTF-8: a byte that does not start a valid
 * sequence (one cut by a "%.64s", a client's raw bytes echoed in a name or a
 * path) becomes U+FFFD, so that an error body is always valid JSON. */
static void json_str_utf8(px_buf *b, const char *s)
{
    const unsigned char *t = (const unsigned char *)s;
    size_t len = strnlen(s, 1024), o = 0, i = 0;
    char clean[3 * 1024];
    while (i < len) {
        size_t n = t[i] < 0x80 ? 1 : px_utf8_seq(t, len, i);
        if (n) {
            memcpy(clean + o, s + i, n);
            o += n, i += n;
        } else {
            memcpy(clean + o, "\xef\xbf\xbd", 3);
            o += 3, i++;
        }
    }
    px_buf_json_str(b, clean, o);
}

unsigned srv_error(srv_req *r, unsigned status, const char *code, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->out.len = 0;
    px_buf_adds(&r->out, "{\"error\":{\"code\":");
    px_buf_json_str(&r->out, code, strlen(code));
    px_buf_adds(&r->out, ",\"message\":");
    json_str_utf8(&r->out, msg);
    if (field) {
        px_buf_adds(&r->out, ",\"field\":");
        json_str_utf8(&r->out, field);
    }
    px_buf_adds(&r->out, "},\"request_id\":\"");
    px_buf_adds(&r->out, r->request_id);
    px_buf_adds(&r->out, "\"}\n");
    return status;
}

/* ---- requests ------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 32 hex digits: a per-process random half and a bijective mix of a counter, so
 * ids never repeat within a process and do not repeat across restarts but by chance. */
static void make_request_id(px_server *s, char out[33])
{
    uint64_t seq = atomic_fetch_add_explicit(&s->req_seq, 1, memory_order_relaxed);
    uint64_t lo = mix64(seq);
    static const char hx[] = "0123456789abcdef";
    memcpy(out, s->req_prefix, 8);
    uint64_t salt = atomic_load_explicit(&s->started_us, memory_order_relaxed);
    uint32_t mid = (uint32_t)mix64(salt);
    for (int i = 0; i < 8; i++) out[8 + i] = hx[(mid >> (28 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++) out[16 + i] = hx[(lo >> (60 - 4 * i)) & 15];
    out[32] = '\0';
}

/* Finished request structs kept per thread for the next requests, with their
 * body and answer buffers (a struct with its inline arena is 9 KiB: malloc'ing
 * and freeing that per request is a visible share of a small request's cost).
 * A libmicrohttpd worker runs a connection's callbacks, so a struct usually comes
 * back to the thread that took it; a thread's cache is freed when it exits. */
#define REQ_CACHE 4
#define REQ_KEEP_BUF (64u << 10) /* larger buffers are not kept */
typedef struct req_cache {
    int n;
    srv_req *r[REQ_CACHE];
} req_cache;
static __thread req_cache *tcache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void req_destroy(srv_req *r)
{
    px_buf_release(&r->body);
    px_buf_release(&r->out);
    px_buf_release(&r->scratch);
    free(r);
}

static void cache_free(void *p)
{
    req_cache *c = p;
    for (int i = 0; c && i < c->n; i++) req_destroy(c->r[i]);
    free(c);
}

static void cache_key_make(void)
{
    pthread_key_create(&cache_key, cache_free);
}

/* Frees the calling thread's cache now (the thread that stops the daemon). */
static void cache_flush(void)
{
    pthread_once(&cache_once, cache_key_make);
    cache_free(tcache);
    tcache = NULL;
    pthread_setspecific(cache_key, NULL);
}

static srv_req *req_new(void)
{
    req_cache *c = tcache;
    srv_req *r = c && c->n > 0 ? c->r[--c->n] : NULL;
    px_buf body = {0}, out = {0}, scratch = {0};
    if (r) {
        body = r->body, out = r->out, scratch = r->scratch;
        body.len = out.len = scratch.len = 0;
    } else if (!(r = malloc(sizeof *r + SRV_ARENA_INLINE)))
        return NULL;
    memset(r, 0, sizeof *r); /* the arena's inline bytes stay as they are */
    r->body = body, r->out = out, r->scratch = scratch;
    srv_arena_init(&r->arena, r->arena_buf, SRV_ARENA_INLINE);
    return r;
}

/* Keeps r for the thread's next request, or frees it. */
static void req_recycle(srv_req *r)
{
    req_cache *c = tcache;
    if (!c) {
        pthread_once(&cache_once, cache_key_make);
        if ((c = calloc(1, sizeof *c)) && pthread_setspecific(cache_key, c) != 0) {
            free(c);
            c = NULL;
        }
        tcache = c;
    }
    if (!c || c->n == REQ_CACHE) {
        req_destroy(r);
        return;
    }
    if (r->body.cap > REQ_KEEP_BUF) px_buf_release(&r->body);
    if (r->out.cap > REQ_KEEP_BUF) px_buf_release(&r->out);
    if (r->scratch.cap > REQ_KEEP_BUF) px_buf_release(&r->scratch);
    c->r[c->n++] = r;
}

/* ---- connections: deadlines and admission ---------------------------------------------
 *
 * libmicrohttpd's idle timeout restarts on every byte, so a client sending one
 * header line every few seconds would hold a connection for ever, and enough of
 * them fill the server. Every connection the acceptor hands over is tracked here
 * (in accept order, and by socket) with a deadline: its request head must be
 * complete --request-timeout after it was accepted (after its previous answer plus
 * the idle timeout, on a kept-alive connection); a body gets the request's own 408
 * at the deadline and is cut at twice it; an answer must be sent within it. The
 * acceptor sweeps the list every 100 ms and cuts overdue connections with
 * shutdown(2): libmicrohttpd then sees the peer gone and closes the socket itself
 * (closing it here would race with its use of the descriptor). An entry leaves the
 * list in the close notification, before libmicrohttpd closes the socket, and the
 * list's mutex is held around every shutdown, so a socket is never shut down after
 * its number was reused.
 *
 * Admission: when an address has --max-per-ip connections, its oldest connection
 * waiting for a request head (a slow client, or an idle kept-alive one) makes room
 * for the new one; when the server has --max-connections, the oldest waiting
 * connection of the address holding the most makes room, but only for an address
 * holding at least two fewer (so that a few addresses cannot crowd out the others,
 * and equal shares do not churn); failing that (many addresses holding a few
 * each), the connection waiting longest makes room if it has waited a quarter of
 * the deadline (a client sends its head at once). A connection that no one makes room for is
 * answered 503 and closed. libmicrohttpd's own limits are set above these, as a
 * backstop, with room for the connections cut and not yet closed. */
typedef struct srv_conn {
    struct srv_conn *prev, *next;
    int fd;
    uint32_t addr;             /* IPv4, network order */
    int started;               /* libmicrohttpd announced it (its socket context is set) */
    int cut;                   /* shut down by us; closing */
    atomic_int waiting;        /* 1: no request head in progress (evictable) */
    atomic_ullong since_us;    /* monotonic: when it began waiting */
    atomic_ullong deadline_us; /* monotonic; 0: none */
} srv_conn;

static void conn_set(srv_conn *c, int waiting, uint64_t deadline_us)
{
    if (!c) return;
    if (waiting) atomic_store_explicit(&c->since_us, srv_mono_us(), memory_order_relaxed);
    atomic_store_explicit(&c->waiting, waiting, memory_order_relaxed);
    atomic_store_explicit(&c->deadline_us, deadline_us, memory_order_relaxed);
}

static void conn_unlink(px_server *s, srv_conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else s->conn_head = c->next;
    if (c->next) c->next->prev = c->prev;
    else s->conn_tail = c->prev;
    if (c->fd >= 0 && (size_t)c->fd < s->conn_by_fd_n && s->conn_by_fd[c->fd] == c) s->conn_by_fd[c->fd] = NULL;
    if (!c->cut) s->conn_live--;
}

/* Cuts c (conn_mu held). */
static void conn_cut(px_server *s, srv_conn *c)
{
    c->cut = 1;
    s->conn_live--;
    shutdown(c->fd, SHUT_RDWR);
    atomic_fetch_add_explicit(&s->conn_cut, 1, memory_order_relaxed);
}

/* The per-address count slot of addr in the scratch table (conn_mu held). */
static unsigned *ip_slot(px_server *s, uint32_t addr)
{
    size_t m = s->conn_ip_n - 1, i = (size_t)(addr * 2654435761u) & m;
    while (s->conn_ip_count[i] && s->conn_ip_key[i] != addr) i = (i + 1) & m;
    s->conn_ip_key[i] = addr;
    return &s->conn_ip_count[i];
}

/* Makes room for a connection from addr, evicting one if the policy above allows.
 * Returns 0 when it may be handed over, -1 to refuse it (conn_mu held). */
static int conn_admit(px_server *s, uint32_t addr)
{
    unsigned live = 0;
    memset(s->conn_ip_count, 0, s->conn_ip_n * sizeof *s->conn_ip_count);
    for (srv_conn *c = s->conn_head; c; c = c->next)
        if (!c->cut) (*ip_slot(s, c->addr))++, live++;
    unsigned mine = *ip_slot(s, addr);
    srv_conn *victim = NULL;
    unsigned vcount = 0;
    if (mine >= s->p.max_per_ip) {
        for (srv_conn *c = s->conn_head; c && !victim; c = c->next)
            if (!c->cut && c->started && c->addr == addr && atomic_load(&c->waiting)) victim = c;
    } else if (live >= s->p.max_connections) {
        for (srv_conn *c = s->conn_head; c; c = c->next) {
            if (c->cut || !c->started || !atomic_load(&c->waiting)) continue;
            unsigned n = *ip_slot(s, c->addr);
            if (n > vcount) victim = c, vcount = n; /* the oldest of the address holding most */
        }
        if (victim && vcount < mine + 2) victim = NULL;
        if (!victim) { /* many addresses with a few each: the one waiting longest, if it is slow */
            uint64_t oldest = srv_mono_us() - (uint64_t)s->p.request_timeout_ms * 250u; /* a quarter of it */
            for (srv_conn *c = s->conn_head; c; c = c->next) {
                if (c->cut || !c->started || !atomic_load(&c->waiting)) continue;
                uint64_t since = atomic_load_explicit(&c->since_us, memory_order_relaxed);
                if (since <= oldest) victim = c, oldest = since;
            }
        }
    } else
        return 0;
    if (!victim) return -1;
    conn_cut(s, victim);
    atomic_fetch_add_explicit(&s->conn_evicted, 1, memory_order_relaxed);
    return 0;
}

/* Cuts every connection past its deadline (the acceptor, every 100 ms). */
static void conn_sweep(px_server *s)
{
    uint64_t now = srv_mono_us();
    pthread_mutex_lock(&s->conn_mu);
    for (srv_conn *c = s->conn_head; c; c = c->next) {
        uint64_t d = atomic_load_explicit(&c->deadline_us, memory_order_relaxed);
        if (!c->cut && c->started && d && now > d) conn_cut(s, c);
    }
    pthread_mutex_unlock(&s->conn_mu);
}

/* Answers a connection that no one made room for, and closes it: it was never
 * handed to libmicrohttpd, so the socket is ours. */
static void conn_refuse(px_server *s, int fd)
{
    static const char body[] = "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server is full\"},"
                               "\"request_id\":\"\"}\n";
    char msg[320];
    int len = snprintf(msg, sizeof msg,
                       "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       "Retry-After: 1\r\nContent-Length: %zu\r\n\r\n%s",
                       sizeof body - 1, body);
    ssize_t n = send(fd, msg, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(fd);
    atomic_fetch_add_explicit(&s->conn_refused, 1, memory_order_relaxed);
}

/* Tracks fd and hands it to libmicrohttpd (the acceptor). */
static void conn_hand_over(px_server *s, int fd, const struct sockaddr_in *addr, socklen_t alen)
{
    if ((size_t)fd >= s->conn_by_fd_n) { /* cannot be tracked: refused rather than unbounded */
        conn_refuse(s, fd);
        return;
    }
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) {
        conn_refuse(s, fd);
        return;
    }
    c->fd = fd;
    c->addr = addr->sin_addr.s_addr;
    conn_set(c, 1, srv_mono_us() + (uint64_t)s->p.request_timeout_ms * 1000u);
    pthread_mutex_lock(&s->conn_mu);
    srv_conn *stale = s->conn_by_fd[fd]; /* libmicrohttpd closed it without announcing it */
    if (stale && !stale->started) {
        conn_unlink(s, stale);
        free(stale);
    }
    if (conn_admit(s, c->addr) != 0) {
        pthread_mutex_unlock(&s->conn_mu);
        free(c);
        conn_refuse(s, fd);
        return;
    }
    c->prev = s->conn_tail;
    if (s->conn_tail) s->conn_tail->next = c;
    else s->conn_head = c;
    s->conn_tail = c;
    s->conn_by_fd[fd] = c;
    s->conn_live++;
    pthread_mutex_unlock(&s->conn_mu);
    /* refused (its own limits) or not, libmicrohttpd closes the socket */
    if (MHD_add_connection(s->d, fd, (const struct sockaddr *)addr, alen) != MHD_YES) {
        pthread_mutex_lock(&s->conn_mu);
        if (s->conn_by_fd[fd] == c && !c->started) {
            conn_unlink(s, c);
            free(c);
        }
        pthread_mutex_unlock(&s->conn_mu);
    }
}

static srv_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)uri;
    (void)conn;
    px_server *s = cls;
    srv_req *r = req_new();
    if (!r) return NULL;
    r->s = s;
    r->t0_us = srv_mono_us();
    r->route = R_UNKNOWN;
    r->conn = conn_of(conn);
    make_request_id(s, r->request_id);
    return r;
}

static void req_free(srv_req *r)
{
    if (!r) return;
    srv_release(r->sm);
    if (r->json) { /* the parsed JSON may hold plaintext encounter ids */
        const cJSON *inst, *v;
        cJSON_ArrayForEach(inst, cJSON_GetObjectItemCaseSensitive(r->json, "instances"))
        {
            cJSON_ArrayForEach(v, inst)
            {
                if (srv_is_encounter_key(v->string) && cJSON_IsString(v))
                    OPENSSL_cleanse(v->valuestring, strlen(v->valuestring));
            }
        }
    }
    /* so may any body (sent to any route); past len the buffer holds only what
     * earlier requests left, wiped as this one */
    if (r->body.data) OPENSSL_cleanse(r->body.data, r->body.len + 1 < r->body.cap ? r->body.len + 1 : r->body.cap);
    /* r->json and the per-instance arrays live in the arena: released with it */
    srv_arena_release(&r->arena);
    free(r->pseudo);
    req_recycle(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    srv_req *r = *con_cls;
    *con_cls = NULL;
    /* a kept-alive connection: the next head is due within the idle timeout plus the request timeout */
    if (r && r->conn)
        conn_set(r->conn, 1,
                 srv_mono_us() + ((uint64_t)r->s->p.idle_timeout_s * 1000u + r->s->p.request_timeout_ms) * 1000u);
    req_free(r);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    px_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->metrics.connections, 1);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        int fd = ci ? ci->connect_fd : -1;
        pthread_mutex_lock(&s->conn_mu);
        srv_conn *c = fd >= 0 && (size_t)fd < s->conn_by_fd_n ? s->conn_by_fd[fd] : NULL;
        if (c && !c->started) {
            c->started = 1;
            *socket_context = c;
        }
        pthread_mutex_unlock(&s->conn_mu);
    } else {
        atomic_fetch_sub(&s->metrics.connections, 1);
        srv_conn *c = *socket_context;
        if (c) { /* before libmicrohttpd closes the socket */
            pthread_mutex_lock(&s->conn_mu);
            conn_unlink(s, c);
            pthread_mutex_unlock(&s->conn_mu);
            free(c);
            *socket_context = NULL;
        }
    }
}

/* libmicrohttpd logs a line for each connection a client drops or we cut: under a
 * slow-client attack that is thousands a second. At most 20 lines a second are
 * written, then one line saying how many were left out. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    px_server *s = cls;
    uint64_t sec = srv_mono_us() / 1000000u;
    if (atomic_exchange(&s->log_sec, sec) != sec) {
        unsigned long long left = atomic_exchange(&s->log_left, 0);
        atomic_store(&s->log_n, 0);
        if (left) px_log(PX_LOG_WARN, "serve: libmicrohttpd: %llu more messages left out", left);
    }
    if (atomic_fetch_add(&s->log_n, 1) >= 20) {
        atomic_fetch_add(&s->log_left, 1);
        return;
    }
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    px_log(PX_LOG_WARN, "serve: libmicrohttpd: %s", msg);
}

/* Queues r->out with status; the body stays owned by r (freed on completion). */
static enum MHD_Result respond(struct MHD_Connection *conn, srv_req *r, unsigned status)
{
    r->status = status;
    r->stage = 2;
    conn_set(r->conn, 0, srv_mono_us() + (uint64_t)r->s->p.request_timeout_ms * 1000u);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->out.len, r->out.data ? r->out.data : (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->route == R_METRICS && status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                                                   : "application/json");
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->sm) { /* the version that answered, on errors too: "name/version" */
        MHD_add_response_header(resp, "X-Model-Version", r->sm->version_header);
    } else if (r->route != R_PREDICT) /* a POST answer is not cached anyway */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                r->route == R_PREDICT || r->route == R_RELOAD ? "POST" : "GET, HEAD");
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->close) /* the rest of what the client sent cannot be trusted to frame a next request */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == 503 && r->route == R_PREDICT) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    srv_metrics_request(&r->s->metrics, r->route, status, srv_mono_us() - r->t0_us);
    return ret;
}

/* An answer without a request struct (out of memory at the first callback): a
 * static body, so it needs no allocation of ours. */
static enum MHD_Result respond_oom(struct MHD_Connection *conn)
{
    static const char body[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server is out of memory\"},"
                               "\"request_id\":\"\"}\n";
    struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, 503, resp);
    MHD_destroy_response(resp);
    return ret;
}

typedef struct route_def {
    int route;
    const char *method;   /* "GET" (HEAD too) or "POST" */
    int need;             /* 0: public, else the px_key_role needed */
} route_def;

/* Matches method and path. Fills r->route, r->model_name; returns the needed
 * role (0 public, -1 unknown path, -2 known path with the wrong method). */
static int match_route(px_server *s, srv_req *r, const char *method, const char *url)
{
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    const char *want = NULL;
    int need = 0;
    if (strncmp(url, "/v1/models/", 11) == 0) { /* predict first: it is nearly all the traffic */
        const char *name = url + 11, *slash = strchr(name, '/');
        size_t n = slash ? (size_t)(slash - name) : strlen(name);
        if (n == 0 || n >= sizeof r->model_name) return -1;
        memcpy(r->model_name, name, n);
        r->model_name[n] = '\0';
        if (!slash) r->route = R_MODEL, want = "GET", need = PX_KEY_READ;
        else if (strcmp(slash, "/predict") == 0) r->route = R_PREDICT, want = "POST", need = PX_KEY_PREDICT;
        else return -1;
    } else if (strcmp(url, "/healthz") == 0) r->route = R_HEALTHZ, want = "GET";
    else if (strcmp(url, "/readyz") == 0) r->route = R_READYZ, want = "GET";
    else if (strcmp(url, "/openapi.json") == 0) r->route = R_OPENAPI, want = "GET";
    else if (strcmp(url, "/metrics") == 0) r->route = R_METRICS, want = "GET", need = s->p.public_metrics ? 0 : PX_KEY_READ;
    else if (strcmp(url, "/v1/models") == 0) r->route = R_MODELS, want = "GET", need = PX_KEY_READ;
    else if (strcmp(url, "/v1/kpi") == 0) r->route = R_KPI, want = "GET", need = PX_KEY_READ;
    else if (strcmp(url, "/v1/drift") == 0) r->route = R_DRIFT, want = "GET", need = PX_KEY_READ;
    else if (strcmp(url, "/v1/alerts") == 0) r->route = R_ALERTS, want = "GET", need = PX_KEY_READ;
    else if (strcmp(url, "/v1/admin/reload") == 0) r->route = R_RELOAD, want = "POST", need = PX_KEY_ADMIN;
    else
        return -1;
    if (strcmp(want, "GET") == 0 ? !is_get : !is_post) return -2;
    return need;
}

/* The key a request presents: Authorization: Bearer <key>, or X-API-Key. */
static const char *presented_key(struct MHD_Connection *conn)
{
    const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (a) {
        if (strncasecmp(a, "Bearer ", 7) == 0) {
            a += 7;
            while (*a == ' ') a++;
            return a;
        }
        return NULL;
    }
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-API-Key");
}

static unsigned dispatch(srv_req *r, struct MHD_Connection *conn)
{
    switch (r->route) {
    case R_PREDICT: return srv_route_predict(r);
    case R_MODELS: return srv_route_models(r, NULL);
    case R_MODEL: return srv_route_models(r, r->model_name);
    case R_KPI: return srv_route_kpi(r, conn);
    case R_DRIFT: return srv_route_drift(r);
    case R_ALERTS: return srv_route_alerts(r, conn);
    case R_METRICS: return srv_route_metrics(r);
    case R_HEALTHZ: return srv_route_healthz(r);
    case R_READYZ: return srv_route_readyz(r);
    case R_RELOAD: return srv_route_reload(r);
    case R_OPENAPI: return srv_route_openapi(r);
    default: return srv_error(r, 404, "not_found", NULL, "no such route");
    }
}

/* Appends upload bytes to the body. Growing copies into a new buffer and wipes
 * the old one (realloc would leave the old bytes readable in freed memory: a
 * body may hold plaintext encounter ids). */
static int body_add(px_buf *b, const void *p, size_t n)
{
    if (n > SIZE_MAX / 4 - b->len) return PX_ENOMEM;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = malloc(cap);
        if (!d) return PX_ENOMEM;
        if (b->len) memcpy(d, b->data, b->len);
        if (b->data) OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* The upload bytes libmicrohttpd handed over, consumed: wiped in its read buffer,
 * which it frees without clearing when it closes a connection. */
static void upload_consumed(const char *upload_data, size_t *upload_data_size)
{
    if (*upload_data_size) OPENSSL_cleanse((void *)(uintptr_t)upload_data, *upload_data_size);
    *upload_data_size = 0;
}

/* An error decided from the head alone. With a body to come it is answered once
 * the body has been read (and wiped) rather than now: answered now, the body
 * would stay in libmicrohttpd's read buffer. */
static enum MHD_Result answer_head(struct MHD_Connection *conn, srv_req *r, unsigned status)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    if (ex || (!te && (!cl || strcmp(cl, "0") == 0))) return respond(conn, r, status);
    r->head_status = status; /* r->out holds the answer */
    r->bad_body = 1;         /* read and discarded */
    r->stage = 1;
    r->deadline_us = r->t0_us + (uint64_t)r->s->p.request_timeout_ms * 1000u;
    /* the discarded body is cut at twice the deadline, like any other body */
    conn_set(r->conn, 0, r->t0_us + 2u * (uint64_t)r->s->p.request_timeout_ms * 1000u);
    return MHD_YES;
}

/* The request head as libmicrohttpd parsed it, checked before any route sees it:
 * the cases where it is lenient and a proxy in front might read the request
 * otherwise (request smuggling), or where it would answer with silence. */
typedef struct head_scan {
    size_t bytes;             /* header names and values, with ": " and CRLF */
    int n_cl, cl_differ, cl_bad, has_host, n_te;
    const char *cl, *te;
} head_scan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    head_scan *h = cls;
    value = value ? value : "";
    h->bytes += strlen(key) + strlen(value) + 4;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (h->n_cl++ > 0 && strcmp(h->cl, value) != 0) h->cl_differ = 1;
        h->cl = value;
        if (!*value || strspn(value, "0123456789") != strlen(value)) h->cl_bad = 1;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        h->n_te++;
        h->te = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0)
        h->has_host = 1;
    return MHD_YES;
}

/* 0 when the head is acceptable; else the status, with r->out filled. */
static unsigned check_head(srv_req *r, struct MHD_Connection *conn, const char *url, const char *method,
                           const char *version)
{
    head_scan h = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &h);
    h.bytes += strlen(method) + strlen(url) + strlen(version) + 4;
    head_scan args = {0}; /* the query string, parsed apart from url */
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, scan_header, &args);
    h.bytes += args.bytes;
    if (h.bytes > SRV_MAX_HEAD)
        return srv_error(r, 431, "header_too_large", NULL, "the request line and headers are over %u bytes",
                         (unsigned)SRV_MAX_HEAD);
    if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 && !h.has_host)
        return srv_error(r, 400, "invalid_http", NULL, "an HTTP/1.1 request needs a Host header");
    if (h.cl_differ)
        return srv_error(r, 400, "invalid_http", NULL, "the request has two different Content-Length headers");
    if (h.cl_bad) return srv_error(r, 400, "invalid_http", NULL, "Content-Length is not a number");
    if (h.n_te > 1 || (h.te && strcasecmp(h.te, "chunked") != 0))
        return srv_error(r, 501, "not_implemented", NULL, "Transfer-Encoding '%.64s' is not supported (only chunked)",
                         h.n_te > 1 ? "(twice)" : h.te);
    if (h.te && h.n_cl)
        return srv_error(r, 400, "invalid_http", NULL, "the request has both Transfer-Encoding and Content-Length");
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    px_server *s = cls;
    srv_req *r = *con_cls;
    if (!r) return respond_oom(conn);
    if (r->stage == 2) { /* answered early (413 ...): the rest of the body is discarded */
        upload_consumed(upload_data, upload_data_size);
        return MHD_YES;
    }
    if (r->stage == 0) {
        conn_set(r->conn, 0, 0); /* the head is complete: no deadline while the handler works */
        unsigned bad = check_head(r, conn, url, method, version);
        if (bad) {
            r->close = 1;
            return respond(conn, r, bad);
        }
        int need = match_route(s, r, method, url);
        if (need == -1) {
            r->route = R_UNKNOWN;
            return answer_head(conn, r, srv_error(r, 404, "not_found", NULL, "no route %s %.100s", method, url));
        }
        if (need == -2)
            return answer_head(conn, r, srv_error(r, 405, "method_not_allowed", NULL, "%s is not allowed here", method));
        if (need > 0) {
            const char *k = presented_key(conn);
            srv_keyset *ks = srv_acquire(&s->keys);
            r->has_key = k && srv_key_match(ks, k, &r->key);
            srv_release(ks);
            if (!r->has_key)
                return answer_head(conn, r,
                               srv_error(r, 401, "unauthorized", NULL,
                                         k ? "the API key is not valid (unknown, revoked or malformed)"
                                           : "an API key is required (Authorization: Bearer <key>)"));
            if (!srv_role_allows(r->key.role, (px_key_role)need))
                return answer_head(conn, r,
                               srv_error(r, 403, "forbidden", NULL, "key %s has role '%s'; this route needs '%s'",
                                         r->key.id, px_key_role_name(r->key.role), px_key_role_name((px_key_role)need)));
        }
        if (r->route == R_PREDICT || r->route == R_RELOAD) {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (r->route == R_PREDICT && (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
                                          (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')))
                return answer_head(conn, r, srv_error(r, 415, "unsupported_media_type", NULL,
                                                  "the body must be JSON (Content-Type: application/json)"));
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl) {
                char *end;
                errno = 0;
                unsigned long long n = strtoull(cl, &end, 10);
                const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                /* answered now when the client waits for "100 Continue" or the body is
                 * huge; otherwise read and dropped, so that the client, still sending,
                 * is not cut off before it can read the answer */
                if (errno == 0 && *end == '\0' && n > s->p.max_body_bytes) {
                    if (ex || n > 16ull * s->p.max_body_bytes)
                        return respond(conn, r, srv_error(r, 413, "body_too_large", NULL,
                                                          "the body is %llu bytes; the limit is %zu", n,
                                                          s->p.max_body_bytes));
                    r->bad_body = 1;
                }
            }
            r->stage = 1;
            r->deadline_us = r->t0_us + (uint64_t)s->p.request_timeout_ms * 1000u;
            /* the body gets the request's 408 at the deadline and is cut at twice it */
            conn_set(r->conn, 0, r->t0_us + 2u * (uint64_t)s->p.request_timeout_ms * 1000u);
            return MHD_YES;
        }
        /* a route without a body; one sent anyway is read and wiped first */
        return answer_head(conn, r, dispatch(r, conn));
    }
    /* stage 1: the body. libmicrohttpd accepts an answer only on the first call or
     * once the request is complete, so a body over the limit or past the deadline
     * is read and discarded to its end and answered then; one that is still
     * arriving at twice the deadline (or at 16 times the size limit) is cut. */
    uint64_t now = srv_mono_us();
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        r->discarded += r->bad_body || r->late ? n : 0;
        if (now > r->deadline_us) r->late = 1;
        if (now > r->deadline_us + (uint64_t)s->p.request_timeout_ms * 1000u || r->discarded > 16 * s->p.max_body_bytes) {
            px_log(PX_LOG_WARN, "serve: cut an upload that was too slow or too large (%zu bytes discarded)", r->discarded);
            upload_consumed(upload_data, upload_data_size);
            return MHD_NO;
        }
        if (r->bad_body || r->late) {
            upload_consumed(upload_data, upload_data_size);
            return MHD_YES;
        }
        if (r->body.len + n > s->p.max_body_bytes) {
            r->bad_body = 1;
            if (r->body.data) OPENSSL_cleanse(r->body.data, r->body.cap);
            px_buf_release(&r->body);
        } else if (body_add(&r->body, upload_data, n) != 0)
            r->oom = 1, r->bad_body = 1;
        /* copied (or discarded), and wiped in libmicrohttpd's buffer */
        upload_consumed(upload_data, upload_data_size);
        return MHD_YES;
    }
    if (r->head_status) return respond(conn, r, r->head_status);
    if (r->late || now > r->deadline_us)
        return respond(conn, r, srv_error(r, 408, "request_timeout", NULL, "the body did not arrive within %u ms",
                                          s->p.request_timeout_ms));
    if (r->oom) return respond(conn, r, srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory"));
    if (r->bad_body)
        return respond(conn, r, srv_error(r, 413, "body_too_large", NULL, "the body is over the limit of %zu bytes",
                                          s->p.max_body_bytes));
    if (body_add(&r->body, "", 1) != 0)
        return respond(conn, r, srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory"));
    r->body.len--; /* NUL-terminated, not counted */
    conn_set(r->conn, 0, 0); /* the body is complete: no deadline while the handler works */
    return respond(conn, r, dispatch(r, conn));
}

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

static int set_cloexec_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ? -1 : 0;
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

/* The acceptor. libmicrohttpd's pool workers share its listen socket and each
 * accepts up to ten connections per wake-up, so a burst of connections lands
 * mostly on one worker (measured: 55 of 64 on one of two), whose clients then
 * queue behind each other while the other worker idles. Connections accepted
 * here and given to MHD_add_connection are spread over the workers by socket
 * number (libmicrohttpd's own round robin), with its connection and per-IP
 * limits applied as before. */
static void *acceptor_main(void *arg)
{
    px_server *s = arg;
    struct pollfd pf[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->accept_pipe[0], .events = POLLIN}};
    uint64_t swept = srv_mono_us();
    while (!atomic_load(&s->stopping)) {
        int rc = poll(pf, 2, 100);
        if (rc < 0 && errno != EINTR) break;
        if (srv_mono_us() - swept >= 100000) {
            conn_sweep(s);
            swept = srv_mono_us();
        }
        if (rc <= 0) continue;
        if (pf[1].revents) break;
        if (!(pf[0].revents & POLLIN)) continue;
        for (;;) {
            struct sockaddr_in addr;
            socklen_t alen = sizeof addr;
            int fd = accept(s->listen_fd, (struct sockaddr *)&addr, &alen);
            if (fd >= 0 && set_cloexec_nonblock(fd) != 0) {
                close(fd);
                continue;
            }
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    px_log(PX_LOG_WARN, "serve: cannot accept a connection: %s", strerror(errno));
                    poll(NULL, 0, 100); /* the backlog waits; no busy loop */
                }
                break; /* EAGAIN: all taken; anything else: the client is gone */
            }
            conn_hand_over(s, fd, &addr, alen);
        }
    }
    return NULL;
}

/* libmicrohttpd's limit for one of ours: above it by the connections that were cut
 * and are not yet closed (see "connections" above). */
static unsigned mhd_limit(unsigned ours)
{
    unsigned room = ours / 2 > 16 ? ours / 2 : 16;
    return ours + room;
}

/* The connection tables, sized by the descriptor limit (raised to what the
 * connection limit needs, when the hard limit allows). */
static int conn_tables_init(px_server *s, px_err *e)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)mhd_limit(s->p.max_connections) + 128; /* the database, logs, pipes */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return px_err_set(e, PX_EIO, "cannot read the descriptor limit");
    if (rl.rlim_cur < need && rl.rlim_max != rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) /* served anyway: connections past the limit are refused at accept */
        px_log(PX_LOG_WARN, "serve: the descriptor limit (%llu) is below what %u connections need (%llu): "
               "raise it (ulimit -n) or lower --max-connections", (unsigned long long)rl.rlim_cur,
               s->p.max_connections, (unsigned long long)need);
    s->conn_by_fd_n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_cur;
    size_t n = 64;
    while (n < 2 * ((size_t)mhd_limit(s->p.max_connections) + 2)) n *= 2;
    s->conn_ip_n = n;
    s->conn_by_fd = calloc(s->conn_by_fd_n, sizeof *s->conn_by_fd);
    s->conn_ip_key = calloc(n, sizeof *s->conn_ip_key);
    s->conn_ip_count = calloc(n, sizeof *s->conn_ip_count);
    if (!s->conn_by_fd || !s->conn_ip_key || !s->conn_ip_count)
        return px_err_set(e, PX_ENOMEM, "out of memory starting the server");
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
    if (conn_tables_init(s, e) != 0) goto fail;
    if (split_models(s, p->models, e) != 0) goto fail;
    if (pipe(s->poll_pipe) != 0 || pipe(s->stop_pipe) != 0 || pipe(s->accept_pipe) != 0 ||
        set_cloexec_nonblock(s->accept_pipe[0]) || set_cloexec_nonblock(s->accept_pipe[1]) ||
        set_cloexec_nonblock(s->poll_pipe[0]) ||
        set_cloexec_nonblock(s->poll_pipe[1]) || set_cloexec_nonblock(s->stop_pipe[0]) ||
        set_cloexec_nonblock(s->stop_pipe[1])) {
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
    s->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET |
            MHD_USE_ITC,
        0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_ARRAY,
        p->threads > 1 ? pool : pool + 1, MHD_OPTION_CONNECTION_LIMIT, mhd_limit(p->max_connections),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, mhd_limit(p->max_connections), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)p->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SRV_MHD_POOL, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, MHD_OPTION_END);
    if (!s->d) {
        px_err_set(e, PX_EIO, "cannot start the HTTP server on %s", p->listen);
        goto fail;
    }
    if (pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0) {
        px_err_set(e, PX_EIO, "cannot start the acceptor thread");
        goto fail;
    }
    s->acceptor_started = 1;
    if (p->port_file) {
        char num[16];
        int n = snprintf(num, sizeof num, "%u\n", s->port);
        if (px_file_write_atomic(p->port_file, num, (size_t)n, 0644, e) != 0) goto fail;
    }
    px_log(PX_LOG_INFO, "serve: listening on %s:%u with %u threads, %d models", s->listen_host, s->port, p->threads,
           atomic_load(&s->nmodels));
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
        cache_flush();
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
    for (srv_conn *c = s->conn_head, *next; c; c = next) { /* handed over, never announced */
        next = c->next;
        free(c);
    }
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
    if (s->hooks) srv_cjson_hooks_remove();
    free(s);
}
