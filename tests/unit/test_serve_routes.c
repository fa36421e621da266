/* test_serve_routes.c: the route table (serve/route_table.c) against the
 * OpenAPI document the server publishes (serve/openapi.json): every route is
 * described, with its operationId and role, and every described operation is a
 * route; every operation has responses with a schema for its success answer;
 * and the matcher finds each route from a concrete URL, its parameters, 405
 * for a known path with another method, 404 for the rest. */
#include "serve/internal.h"
#include "tests/unit/check.h"
#include <ctype.h>

/* The x-role the document gives for a table row's need. */
static const char *role_of(int need)
{
    switch (need) {
    case SRV_NEED_PREDICT: return "predict";
    case SRV_NEED_READ: return "read";
    case SRV_NEED_ADMIN: return "admin";
    case SRV_NEED_METRICS: return "read";
    case SRV_NEED_ANY_KEY: return "any";
    case SRV_NEED_CDS: return "cds";
    default: return NULL;
    }
}

/* The path template with each {param} replaced by a value ("x1"). */
static void concrete(const char *pat, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = pat; *p && o + 3 < n; p++) {
        if (*p == '{') {
            out[o++] = 'x', out[o++] = '1';
            p = strchr(p, '}');
        } else
            out[o++] = *p;
    }
    out[o] = '\0';
}

int main(void)
{
    cJSON *doc = cJSON_Parse(srv_openapi_json);
    CHECK(doc != NULL);
    if (!doc) return check_report("unit_serve_routes");
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    int described = 0;
    for (int i = 0; i < SRV_NROUTES; i++) {
        const srv_route *rt = &srv_routes[i];
        CHECK(rt->path && rt->method && rt->handler && rt->metric && rt->operation);
        char meth[8] = "";
        for (size_t c = 0; c + 1 < sizeof meth && rt->method[c]; c++) meth[c] = (char)tolower((unsigned char)rt->method[c]);
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(paths, rt->path), meth);
        if (!op) {
            fprintf(stderr, "route %s %s is not in openapi.json\n", rt->method, rt->path);
            CHECK(op != NULL);
            continue;
        }
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "operationId")), rt->operation);
        const char *role = role_of(rt->need);
        const cJSON *sec = cJSON_GetObjectItemCaseSensitive(op, "security");
        if (role) {
            CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(op, "x-role")), role);
            CHECK(cJSON_IsArray(sec) && cJSON_GetArraySize(sec) >= 1);
        } else
            CHECK(sec == NULL || cJSON_GetArraySize(sec) == 0);
        /* the success answer has a schema (metrics: text) */
        const cJSON *resp = cJSON_GetObjectItemCaseSensitive(op, "responses"), *ok = NULL, *x;
        cJSON_ArrayForEach(x, resp)
        {
            if (x->string[0] == '2' && !ok) ok = x;
        }
        CHECK(ok != NULL);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(ok, "content");
        if (ok && (ok->string[2] != '4') && !content) fprintf(stderr, "%s %s: no content for %s\n", rt->method, rt->path, ok->string);
        CHECK(!ok || strcmp(ok->string, "204") == 0 || content != NULL);
        if (content && cJSON_GetObjectItemCaseSensitive(content, "application/json"))
            CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(content, "application/json"),
                                                   "schema") != NULL);
        described++;
    }
    /* every operation of the document is a route */
    const cJSON *p, *m;
    int ops = 0;
    cJSON_ArrayForEach(p, paths)
    {
        cJSON_ArrayForEach(m, p)
        {
            if (strcmp(m->string, "get") != 0 && strcmp(m->string, "post") != 0) continue;
            ops++;
            int found = 0;
            for (int i = 0; i < SRV_NROUTES && !found; i++)
                found = strcmp(srv_routes[i].path, p->string) == 0 &&
                        strncasecmp(srv_routes[i].method, m->string, 4) == 0;
            if (!found) fprintf(stderr, "openapi.json describes %s %s, which is not a route\n", m->string, p->string);
            CHECK(found);
        }
    }
    CHECK_INT(ops, SRV_NROUTES);
    CHECK_INT(described, SRV_NROUTES);

    /* the matcher: every route from a concrete URL, with its parameters */
    for (int i = 0; i < SRV_NROUTES; i++) {
        char url[256], a0[64] = "", a1[64] = "";
        int wrong = 7;
        concrete(srv_routes[i].path, url, sizeof url);
        int id = srv_route_match(srv_routes[i].method, url, a0, a1, &wrong);
        CHECK_INT(id, i);
        if (strchr(srv_routes[i].path, '{')) CHECK_STR(a0, "x1");
        /* the other method: 405 for this route */
        id = srv_route_match(srv_routes[i].method[0] == 'G' ? "POST" : "GET", url, a0, a1, &wrong);
        CHECK_INT(id, -1);
        CHECK_INT(wrong, i);
    }
    char a0[64], a1[64];
    int wrong = 7;
    CHECK_INT(srv_route_match("POST", "/v1/models/readmission/predict", a0, a1, &wrong), R_PREDICT);
    CHECK_STR(a0, "readmission");
    CHECK_INT(srv_route_match("HEAD", "/v1/models/readmission", a0, a1, &wrong), R_MODEL);
    CHECK_INT(srv_route_match("GET", "/v1/models/", a0, a1, &wrong), -1);
    CHECK_INT(wrong, -1);
    CHECK_INT(srv_route_match("GET", "/v1/models/a/b", a0, a1, &wrong), -1);
    CHECK_INT(wrong, -1);
    CHECK_INT(srv_route_match("GET", "/healthz/", a0, a1, &wrong), -1);
    char longname[200];
    memset(longname, 'a', sizeof longname);
    memcpy(longname, "/v1/models/", 11);
    longname[sizeof longname - 1] = '\0';
    CHECK_INT(srv_route_match("GET", longname, a0, a1, &wrong), -1); /* a parameter of 64 bytes or more */
    CHECK_INT(wrong, -1);
    CHECK_INT(srv_route_match("DELETE", "/v1/models", a0, a1, &wrong), -1);
    CHECK_INT(wrong, R_MODELS);
    CHECK_STR(srv_route_label(R_UNKNOWN), "unknown");
    CHECK_STR(srv_route_label(R_PREFLIGHT), "preflight");
    cJSON_Delete(doc);
    return check_report("unit_serve_routes");
}
