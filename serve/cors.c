/* cors.c: Cross-Origin Resource Sharing for browser-based clients (a SMART app
 * or a CDS client running in the EHR's browser). No origin is allowed unless
 * --cors-origins names it (or is "*"); a request from an allowed origin gets
 * Access-Control-Allow-Origin with that origin (never "*" echoed with
 * credentials: the Authorization header is a credential), and a preflight
 * (OPTIONS with Access-Control-Request-Method) of a route that exists is
 * answered 204 with the method and headers the route takes. A preflight from
 * an origin not allowed, or for a method the route does not take, is refused
 * with 403 and no CORS header, so the browser blocks the call. */
#include "serve/internal.h"
#include <stdlib.h>
#include <string.h>

int srv_cors_init(px_server *s, const char *list, px_err *e)
{
    if (!list || !*list) return 0;
    size_t n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    if (!(s->cors = calloc(n + 1, sizeof *s->cors))) return px_err_set(e, PX_ENOMEM, "out of memory");
    size_t k = 0;
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        while (len && *p == ' ') p++, len--;
        while (len && p[len - 1] == ' ') len--;
        if (len) {
            int star = len == 1 && *p == '*';
            /* an origin is scheme://host[:port], no path, no trailing slash */
            const char *sep = memchr(p, ':', len);
            int ok = star || (sep && len > (size_t)(sep - p) + 3 && sep[1] == '/' && sep[2] == '/' &&
                              !memchr(sep + 3, '/', len - (size_t)(sep - p) - 3) &&
                              ((sep - p == 5 && strncmp(p, "https", 5) == 0) || (sep - p == 4 && strncmp(p, "http", 4) == 0)));
            if (!ok || len > 255) {
                px_err_set(e, PX_EINVAL, "--cors-origins: '%.*s' is not an origin", (int)(len > 80 ? 80 : len), p);
                px_err_hint(e, "an origin is scheme://host[:port], such as https://ehr.example.org, or *");
                return PX_EINVAL;
            }
            if (!(s->cors[k++] = strndup(p, len))) return px_err_set(e, PX_ENOMEM, "out of memory");
        }
        if (!c) break;
        p = c + 1;
    }
    return 0;
}

void srv_cors_free(px_server *s)
{
    if (s->cors)
        for (char **o = s->cors; *o; o++) free(*o);
    free(s->cors);
    s->cors = NULL;
}

const char *srv_cors_origin(const px_server *s, struct MHD_Connection *conn)
{
    if (!s->cors) return NULL;
    const char *o = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (!o) return NULL;
    for (char **c = s->cors; *c; c++)
        if (strcmp(*c, "*") == 0 || strcmp(*c, o) == 0) return o; /* valid while the request lives */
    return NULL;
}

unsigned srv_cors_preflight(srv_req *r, struct MHD_Connection *conn, const char *url)
{
    r->route = R_PREFLIGHT;
    char a0[64], a1[64];
    int wrong = -1;
    const char *want = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
    int id = srv_route_match(want ? want : "GET", url, a0, a1, &wrong);
    if (id < 0 && wrong < 0) return srv_error(r, 404, "not_found", NULL, "no route %.100s", url);
    if (!MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin")) { /* not CORS: the methods it takes */
        r->preflight_route = -1;
        r->route = id >= 0 ? id : wrong;
        return srv_error(r, 405, "method_not_allowed", NULL, "OPTIONS answers CORS preflights only (send Origin)");
    }
    if (!r->origin) {
        r->preflight_route = -1;
        return srv_error(r, 403, "origin_not_allowed", NULL, "this origin may not call the server (--cors-origins)");
    }
    if (id < 0) {
        r->preflight_route = -1;
        return srv_error(r, 403, "method_not_allowed", NULL, "%.16s is not allowed on %.100s", want ? want : "?", url);
    }
    r->preflight_route = id;
    r->out.len = 0;
    return 204;
}

void srv_cors_headers(const srv_req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
    MHD_add_response_header(resp, "Vary", "Origin");
    if (r->route == R_PREFLIGHT) {
        if (r->preflight_route < 0) return;
        MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                srv_routes[r->preflight_route].method[0] == 'G' ? "GET, HEAD" : "POST");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-API-Key");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    } else
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, X-Model-Version");
}
