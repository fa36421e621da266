/* route_table.c: every route of the server in one table, and the matcher.
 *
 * A row gives the method, the path template (as /openapi.json names it), the
 * role needed, whether a body is read, the handler, the metric label and the
 * OpenAPI operationId. request.c matches and authorizes with it, dispatch calls
 * its handler, metrics.c labels counters with it, and unit_serve_routes checks
 * that /openapi.json describes exactly these routes with these roles. Rows are
 * tried in order: predict first, as it is nearly all the traffic. */
#include "serve/internal.h"
#include <string.h>

static unsigned h_predict(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_predict(r);
}
static unsigned h_models(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_models(r, NULL);
}
static unsigned h_model(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_models(r, r->model_name);
}
static unsigned h_drift(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_drift(r);
}
static unsigned h_metrics(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_metrics(r);
}
static unsigned h_healthz(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_healthz(r);
}
static unsigned h_readyz(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_readyz(r);
}
static unsigned h_reload(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_reload(r);
}
static unsigned h_openapi(srv_req *r, struct MHD_Connection *c)
{
    (void)c;
    return srv_route_openapi(r);
}

#define P SRV_PUBLIC
const srv_route srv_routes[SRV_NROUTES] = {
    [R_PREDICT] = {"POST", "/v1/models/{model}/predict", SRV_NEED_PREDICT, SRV_BODY_JSON, h_predict, "predict", "predict"},
    [R_V2_INFER] = {"POST", "/v2/models/{model}/infer", SRV_NEED_PREDICT, SRV_BODY_JSON, srv_v2_infer, "v2_infer",
                    "v2ModelInfer"},
    [R_V2_INFER_VERSION] = {"POST", "/v2/models/{model}/versions/{version}/infer", SRV_NEED_PREDICT, SRV_BODY_JSON,
                            srv_v2_infer, "v2_infer", "v2ModelVersionInfer"},
    [R_CDS_CALL] = {"POST", "/cds-services/{id}", SRV_NEED_CDS, SRV_BODY_JSON, srv_cds_call, "cds_call", "cdsServiceCall"},
    [R_CDS_FEEDBACK] = {"POST", "/cds-services/{id}/feedback", SRV_NEED_CDS, SRV_BODY_JSON, srv_cds_feedback,
                        "cds_feedback", "cdsFeedback"},
    [R_MODELS] = {"GET", "/v1/models", SRV_NEED_READ, SRV_BODY_NONE, h_models, "models", "listModels"},
    [R_MODEL] = {"GET", "/v1/models/{model}", SRV_NEED_READ, SRV_BODY_NONE, h_model, "model", "getModel"},
    [R_KPI] = {"GET", "/v1/kpi", SRV_NEED_READ, SRV_BODY_NONE, srv_route_kpi, "kpi", "getKpi"},
    [R_DRIFT] = {"GET", "/v1/drift", SRV_NEED_READ, SRV_BODY_NONE, h_drift, "drift", "getDrift"},
    [R_ALERTS] = {"GET", "/v1/alerts", SRV_NEED_READ, SRV_BODY_NONE, srv_route_alerts, "alerts", "getAlerts"},
    [R_RELOAD] = {"POST", "/v1/admin/reload", SRV_NEED_ADMIN, SRV_BODY_ANY, h_reload, "reload", "reload"},
    [R_HEALTHZ] = {"GET", "/healthz", P, SRV_BODY_NONE, h_healthz, "healthz", "healthz"},
    [R_READYZ] = {"GET", "/readyz", P, SRV_BODY_NONE, h_readyz, "readyz", "readyz"},
    [R_METRICS] = {"GET", "/metrics", SRV_NEED_METRICS, SRV_BODY_NONE, h_metrics, "metrics", "metrics"},
    [R_OPENAPI] = {"GET", "/openapi.json", P, SRV_BODY_NONE, h_openapi, "openapi", "openapi"},
    [R_V2_LIVE] = {"GET", "/v2/health/live", P, SRV_BODY_NONE, srv_v2_live, "v2_live", "v2ServerLive"},
    [R_V2_READY] = {"GET", "/v2/health/ready", P, SRV_BODY_NONE, srv_v2_ready, "v2_ready", "v2ServerReady"},
    [R_V2_SERVER] = {"GET", "/v2", P, SRV_BODY_NONE, srv_v2_server, "v2_server", "v2ServerMetadata"},
    [R_V2_MODEL] = {"GET", "/v2/models/{model}", SRV_NEED_ANY_KEY, SRV_BODY_NONE, srv_v2_model, "v2_model",
                    "v2ModelMetadata"},
    [R_V2_MODEL_VERSION] = {"GET", "/v2/models/{model}/versions/{version}", SRV_NEED_ANY_KEY, SRV_BODY_NONE,
                            srv_v2_model, "v2_model", "v2ModelVersionMetadata"},
    [R_V2_MODEL_READY] = {"GET", "/v2/models/{model}/ready", SRV_NEED_ANY_KEY, SRV_BODY_NONE, srv_v2_model_ready,
                          "v2_model_ready", "v2ModelReady"},
    [R_V2_MODEL_VERSION_READY] = {"GET", "/v2/models/{model}/versions/{version}/ready", SRV_NEED_ANY_KEY,
                                  SRV_BODY_NONE, srv_v2_model_ready, "v2_model_ready", "v2ModelVersionReady"},
    [R_CARD] = {"GET", "/v1/models/{model}/card", P, SRV_BODY_NONE, srv_route_card, "card", "getModelCard"},
    [R_CDS_DISCOVERY] = {"GET", "/cds-services", P, SRV_BODY_NONE, srv_cds_discovery, "cds_discovery",
                         "cdsDiscovery"},
};
#undef P

const char *srv_route_label(int id)
{
    if (id >= 0 && id < SRV_NROUTES) return srv_routes[id].metric;
    return id == R_PREFLIGHT ? "preflight" : "unknown";
}

int srv_route_need(const px_server *s, int id)
{
    int need = srv_routes[id].need;
    if (need == SRV_NEED_METRICS) return s->p.public_metrics ? SRV_PUBLIC : SRV_NEED_READ;
    return need;
}

/* Does url follow the template pat? Parameters go to arg0 and arg1. */
static int path_match(const char *pat, const char *url, char *arg0, char *arg1)
{
    int na = 0;
    while (*pat) {
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            size_t n = strcspn(url, "/");
            if (!close || n == 0 || n >= 64 || na == 2) return 0;
            char *arg = na == 0 ? arg0 : arg1;
            memcpy(arg, url, n);
            arg[n] = '\0';
            na++;
            url += n;
            pat = close + 1;
            continue;
        }
        if (*pat != *url) return 0;
        pat++, url++;
    }
    return *url == '\0';
}

int srv_route_match(const char *method, const char *url, char arg0[64], char arg1[64], int *wrong_method)
{
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    int wrong = -1;
    for (int i = 0; i < SRV_NROUTES; i++) {
        const srv_route *rt = &srv_routes[i];
        if (!path_match(rt->path, url, arg0, arg1)) continue;
        if (rt->method[0] == 'G' ? is_get : is_post) return i;
        if (wrong < 0) wrong = i;
    }
    *wrong_method = wrong;
    return -1;
}
