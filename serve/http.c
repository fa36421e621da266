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
#include <sys/socket.h>
#include <unistd.h>

uint64_t srv_mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

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
    /* so may a predict body; past len the buffer holds only what earlier
     * requests left, wiped as this one (or never a predict body) */
    if (r->route == R_PREDICT && r->body.data)
        OPENSSL_cleanse(r->body.data, r->body.len + 1 < r->body.cap ? r->body.len + 1 : r->body.cap);
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
    req_free(r);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_context;
    px_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) atomic_fetch_add(&s->metrics.connections, 1);
    else atomic_fetch_sub(&s->metrics.connections, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    px_server *s = cls;
    srv_req *r = *con_cls;
    if (!r) return respond_oom(conn);
    if (r->stage == 2) { /* answered early (413, 408, 401 ...): the rest of the body is discarded */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->stage == 0) {
        int need = match_route(s, r, method, url);
        if (need == -1) {
            r->route = R_UNKNOWN;
            return respond(conn, r, srv_error(r, 404, "not_found", NULL, "no route %s %.100s", method, url));
        }
        if (need == -2) return respond(conn, r, srv_error(r, 405, "method_not_allowed", NULL, "%s is not allowed here", method));
        if (need > 0) {
            const char *k = presented_key(conn);
            srv_keyset *ks = srv_acquire(&s->keys);
            r->has_key = k && srv_key_match(ks, k, &r->key);
            srv_release(ks);
            if (!r->has_key)
                return respond(conn, r,
                               srv_error(r, 401, "unauthorized", NULL,
                                         k ? "the API key is not valid (unknown, revoked or malformed)"
                                           : "an API key is required (Authorization: Bearer <key>)"));
            if (!srv_role_allows(r->key.role, (px_key_role)need))
                return respond(conn, r,
                               srv_error(r, 403, "forbidden", NULL, "key %s has role '%s'; this route needs '%s'",
                                         r->key.id, px_key_role_name(r->key.role), px_key_role_name((px_key_role)need)));
        }
        if (r->route == R_PREDICT || r->route == R_RELOAD) {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (r->route == R_PREDICT && (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
                                          (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')))
                return respond(conn, r, srv_error(r, 415, "unsupported_media_type", NULL,
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
            return MHD_YES;
        }
        return respond(conn, r, dispatch(r, conn));
    }
    /* stage 1: the body. libmicrohttpd accepts an answer only on the first call or
     * once the request is complete, so a body over the limit or past the deadline
     * is read and discarded to its end and answered then; one that is still
     * arriving at twice the deadline (or at 16 times the size limit) is cut. */
    uint64_t now = srv_mono_us();
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        r->discarded += r->bad_body || r->late ? n : 0;
        if (now > r->deadline_us) r->late = 1;
        if (now > r->deadline_us + (uint64_t)s->p.request_timeout_ms * 1000u || r->discarded > 16 * s->p.max_body_bytes) {
            px_log(PX_LOG_WARN, "serve: cut an upload that was too slow or too large (%zu bytes discarded)", r->discarded);
            return MHD_NO;
        }
        if (r->bad_body || r->late) return MHD_YES;
        if (r->body.len + n > s->p.max_body_bytes) {
            r->bad_body = 1;
            px_buf_release(&r->body);
            return MHD_YES;
        }
        if (px_buf_add(&r->body, upload_data, n) != 0) r->oom = 1, r->bad_body = 1;
        return MHD_YES;
    }
    if (r->late || now > r->deadline_us)
        return respond(conn, r, srv_error(r, 408, "request_timeout", NULL, "the body did not arrive within %u ms",
                                          s->p.request_timeout_ms));
    if (r->oom) return respond(conn, r, srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory"));
    if (r->bad_body)
        return respond(conn, r, srv_error(r, 413, "body_too_large", NULL, "the body is over the limit of %zu bytes",
                                          s->p.max_body_bytes));
    if (px_buf_addc(&r->body, '\0') != 0)
        return respond(conn, r, srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory"));
    r->body.len--; /* NUL-terminated, not counted */
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
    p.request_timeout_ms = 10000;
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
    while (!atomic_load(&s->stopping)) {
        if (poll(pf, 2, 1000) < 0 && errno != EINTR) break;
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
            /* refused (limits) or not, libmicrohttpd closes the socket */
            (void)MHD_add_connection(s->d, fd, (struct sockaddr *)&addr, alen);
        }
    }
    return NULL;
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
    /* the per-connection memory pool (8 KiB, as nginx's header buffers) bounds the request line and headers
     * (libmicrohttpd answers 431 above it) and is cleared for every request on a
     * kept-alive connection: larger costs time on every request. No listen socket of
     * its own: the acceptor adds connections (MHD_USE_ITC wakes the worker given one). */
    /* a pool only for more than one thread: libmicrohttpd logs a warning for a pool of one */
    struct MHD_OptionItem pool[] = {{MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)p->threads, NULL}, {MHD_OPTION_END, 0, NULL}};
    s->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET |
            MHD_USE_ITC,
        0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_ARRAY,
        p->threads > 1 ? pool : pool + 1, MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)p->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)p->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, MHD_OPTION_URI_LOG_CALLBACK,
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
