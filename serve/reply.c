/* reply.c: answers. Every error the application gives is JSON
 * {"error":{"code","message","field"?},"request_id"} with a 4xx or 5xx status;
 * an answer is queued from r->out, which the request owns until completion. */
#include "serve/internal.h"
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (srv_route_is_v2(r->route)) { /* the protocol's error: a string, our code and field beside it */
        px_buf_adds(&r->out, "{\"error\":");
        json_str_utf8(&r->out, msg);
        px_buf_adds(&r->out, ",\"code\":");
        px_buf_json_str(&r->out, code, strlen(code));
        if (field) {
            px_buf_adds(&r->out, ",\"field\":");
            json_str_utf8(&r->out, field);
        }
        px_buf_adds(&r->out, ",\"request_id\":\"");
        px_buf_adds(&r->out, r->request_id);
        px_buf_adds(&r->out, "\"}\n");
        return status;
    }
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

/* Queues r->out with status; the body stays owned by r (freed on completion). */
enum MHD_Result srv_respond(struct MHD_Connection *conn, srv_req *r, unsigned status)
{
    r->status = status;
    r->stage = 2;
    srv_conn_set(r->conn, 0, srv_mono_us() + (uint64_t)r->s->p.request_timeout_ms * 1000u);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->out.len, r->out.data ? r->out.data : (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    if (status != 204)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                r->route == R_METRICS && status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                : r->route == R_CARD && status == 200  ? "text/markdown; charset=utf-8"
                                                                       : "application/json");
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    int routed = r->route >= 0 && r->route < SRV_NROUTES;
    int post = routed && srv_routes[r->route].method[0] == 'P';
    if (r->sm) { /* the version that answered, on errors too: "name/version" */
        MHD_add_response_header(resp, "X-Model-Version", r->sm->version_header);
    } else if (!post) /* a POST answer is not cached anyway */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 405 && routed) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, post ? "POST" : "GET, HEAD");
    if (r->origin) srv_cors_headers(r, resp);
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->close) /* the rest of what the client sent cannot be trusted to frame a next request */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == 503 && r->route == R_PREDICT)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    srv_metrics_request(&r->s->metrics, r->route, status, srv_mono_us() - r->t0_us);
    return ret;
}

/* An answer without a request struct (out of memory at the first callback): a
 * static body, so it needs no allocation of ours. */
enum MHD_Result srv_respond_oom(struct MHD_Connection *conn)
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

unsigned srv_send_json(srv_req *r, cJSON *o, unsigned status, int add_id)
{
    if (!o) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    if (add_id) cJSON_AddStringToObject(o, "request_id", r->request_id);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    r->out.len = 0;
    int rc = px_buf_adds(&r->out, txt);
    free(txt);
    if (rc == 0) rc = px_buf_addc(&r->out, '\n');
    return rc == 0 ? status : srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
}
