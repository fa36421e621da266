/* request.c: a request's life in libmicrohttpd's callbacks. Its struct (srv_req)
 * is allocated when libmicrohttpd sees its URI and freed in the completion
 * callback, with everything it acquired (a model version, buffers, the parsed
 * JSON). Limits are checked before work is done: the head (size, framing),
 * the route and the caller's credentials, then the body (size from
 * Content-Length and while reading, the request deadline); the route's handler
 * runs once the body is complete. */
#include "serve/internal.h"
#include <errno.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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
void srv_request_id(px_server *s, char out[33])
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
void srv_req_cache_flush(void)
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

void *srv_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)uri;
    (void)conn;
    px_server *s = cls;
    srv_req *r = req_new();
    if (!r) return NULL;
    r->s = s;
    r->t0_us = srv_mono_us();
    r->route = R_UNKNOWN;
    r->conn = srv_conn_of(conn);
    srv_request_id(s, r->request_id);
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

void srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    srv_req *r = *con_cls;
    *con_cls = NULL;
    /* a kept-alive connection: the next head is due within the idle timeout plus the request timeout */
    if (r && r->conn)
        srv_conn_set(r->conn, 1,
                 srv_mono_us() + ((uint64_t)r->s->p.idle_timeout_s * 1000u + r->s->p.request_timeout_ms) * 1000u);
    req_free(r);
}

/* libmicrohttpd logs a line for each connection a client drops or we cut: under a
 * slow-client attack that is thousands a second. At most 20 lines a second are
 * written, then one line saying how many were left out. */
void srv_on_mhd_log(void *cls, const char *fmt, va_list ap)
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

/* Checks the caller's credentials for a route that needs `need`: 0, or the
 * status of the error written into r->out (401 without valid credentials, 403
 * for a key of another role). */
static unsigned authorize(srv_req *r, struct MHD_Connection *conn, const char *url, int need)
{
    px_server *s = r->s;
    if (need == SRV_PUBLIC) return 0;
    if (need == SRV_NEED_CDS) {
        if (s->jwt) return srv_cds_authorize(r, conn, url);
        need = SRV_NEED_PREDICT; /* no --cds-jwks: a predict key (a gateway in front checks the EHR) */
    }
    const char *k = presented_key(conn);
    srv_keyset *ks = srv_acquire(&s->keys);
    r->has_key = k && srv_key_match(ks, k, &r->key);
    srv_release(ks);
    if (!r->has_key)
        return srv_error(r, 401, "unauthorized", NULL,
                         k ? "the API key is not valid (unknown, revoked or malformed)"
                           : "an API key is required (Authorization: Bearer <key>)");
    if (need == SRV_NEED_ANY_KEY) return 0;
    if (!srv_role_allows(r->key.role, (px_key_role)need))
        return srv_error(r, 403, "forbidden", NULL, "key %s has role '%s'; this route needs '%s'", r->key.id,
                         px_key_role_name(r->key.role), px_key_role_name((px_key_role)need));
    return 0;
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
    if (ex || (!te && (!cl || strcmp(cl, "0") == 0))) return srv_respond(conn, r, status);
    r->head_status = status; /* r->out holds the answer */
    r->bad_body = 1;         /* read and discarded */
    r->stage = 1;
    r->deadline_us = r->t0_us + (uint64_t)r->s->p.request_timeout_ms * 1000u;
    /* the discarded body is cut at twice the deadline, like any other body */
    srv_conn_set(r->conn, 0, r->t0_us + 2u * (uint64_t)r->s->p.request_timeout_ms * 1000u);
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

enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    px_server *s = cls;
    srv_req *r = *con_cls;
    if (!r) return srv_respond_oom(conn);
    if (r->stage == 2) { /* answered early (413 ...): the rest of the body is discarded */
        upload_consumed(upload_data, upload_data_size);
        return MHD_YES;
    }
    if (r->stage == 0) {
        srv_conn_set(r->conn, 0, 0); /* the head is complete: no deadline while the handler works */
        unsigned bad = check_head(r, conn, url, method, version);
        if (bad) {
            r->close = 1;
            return srv_respond(conn, r, bad);
        }
        r->origin = srv_cors_origin(s, conn);
        if (strcmp(method, "OPTIONS") == 0) return answer_head(conn, r, srv_cors_preflight(r, conn, url));
        int wrong = -1;
        int id = srv_route_match(method, url, r->model_name, r->path_arg2, &wrong);
        if (id < 0 && wrong < 0) {
            r->route = R_UNKNOWN;
            return answer_head(conn, r, srv_error(r, 404, "not_found", NULL, "no route %s %.100s", method, url));
        }
        if (id < 0) { /* counted as the route, with its Allow header */
            r->route = wrong;
            return answer_head(conn, r, srv_error(r, 405, "method_not_allowed", NULL, "%s is not allowed here", method));
        }
        r->route = id;
        const srv_route *rt = &srv_routes[id];
        unsigned denied = authorize(r, conn, url, srv_route_need(s, id));
        if (denied) return answer_head(conn, r, denied);
        if (rt->body != SRV_BODY_NONE) {
            const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            if (rt->body == SRV_BODY_JSON && (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
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
                        return srv_respond(conn, r, srv_error(r, 413, "body_too_large", NULL,
                                                          "the body is %llu bytes; the limit is %zu", n,
                                                          s->p.max_body_bytes));
                    r->bad_body = 1;
                }
            }
            r->stage = 1;
            r->deadline_us = r->t0_us + (uint64_t)s->p.request_timeout_ms * 1000u;
            /* the body gets the request's 408 at the deadline and is cut at twice it */
            srv_conn_set(r->conn, 0, r->t0_us + 2u * (uint64_t)s->p.request_timeout_ms * 1000u);
            return MHD_YES;
        }
        /* a route without a body; one sent anyway is read and wiped first */
        return answer_head(conn, r, srv_routes[r->route].handler(r, conn));
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
    if (r->head_status) return srv_respond(conn, r, r->head_status);
    if (r->late || now > r->deadline_us)
        return srv_respond(conn, r, srv_error(r, 408, "request_timeout", NULL, "the body did not arrive within %u ms",
                                          s->p.request_timeout_ms));
    if (r->oom) return srv_respond(conn, r, srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory"));
    if (r->bad_body)
        return srv_respond(conn, r, srv_error(r, 413, "body_too_large", NULL, "the body is over the limit of %zu bytes",
                                          s->p.max_body_bytes));
    if (body_add(&r->body, "", 1) != 0)
        return srv_respond(conn, r, srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory"));
    r->body.len--; /* NUL-terminated, not counted */
    srv_conn_set(r->conn, 0, 0); /* the body is complete: no deadline while the handler works */
    return srv_respond(conn, r, srv_routes[r->route].handler(r, conn));
}
