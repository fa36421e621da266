/* routes.c: the read routes (models, kpi, drift, alerts), health, readiness,
 * metrics, admin reload and the OpenAPI document. They answer from the poller's
 * cached copies, except /v1/kpi, which reads the warehouse with a statement
 * timeout (a KPI query is not on a clinician's critical path). */
#include "serve/internal.h"
#include "kpi/kpi.h"
#include <libpq-fe.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>


/* Prints o into r->out with the request id added; deletes o. */
static unsigned send_json(srv_req *r, cJSON *o, unsigned status)
{
    if (!o) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    cJSON_AddStringToObject(o, "request_id", r->request_id);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!txt) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    r->out.len = 0;
    int rc = px_buf_adds(&r->out, txt);
    free(txt);
    if (rc == 0) rc = px_buf_addc(&r->out, '\n');
    return rc == 0 ? status : srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
}

static cJSON *cached(srv_slot *slot)
{
    srv_text *t = srv_acquire(slot);
    cJSON *o = t ? cJSON_ParseWithLength(t->s, t->len) : NULL;
    srv_release(t);
    return o;
}

static cJSON *serving_json(const srv_model *sm)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "version", sm->version);
    cJSON_AddStringToObject(o, "algo", sm->algo);
    cJSON_AddStringToObject(o, "task", sm->task);
    cJSON_AddStringToObject(o, "feature_table", sm->feature_table);
    cJSON_AddStringToObject(o, "contribution_scale", srv_contribution_scale(sm));
    cJSON_AddNumberToObject(o, "loaded_at_unix", (double)(sm->loaded_at_us / 1000000u));
    cJSON_AddBoolToObject(o, "drift_monitored", sm->drift != NULL);
    cJSON *schema = cJSON_Parse(sm->schema_json);
    if (schema) cJSON_AddItemToObject(o, "schema", schema);
    return o;
}

unsigned srv_route_models(srv_req *r, const char *name)
{
    px_server *s = r->s;
    cJSON *root = cached(&s->models_json);
    if (!root) return srv_error(r, 503, "not_ready", NULL, "the model list is not loaded yet");
    cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    int nm = atomic_load(&s->nmodels);
    if (!name) {
        cJSON *m;
        cJSON_ArrayForEach(m, models)
        {
            const char *mn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "name"));
            for (int i = 0; mn && i < nm; i++) {
                if (strcmp(s->names[i], mn) != 0) continue;
                srv_model *sm = srv_acquire(&s->models[i]);
                if (sm) cJSON_AddNumberToObject(m, "serving_version", sm->version);
                srv_release(sm);
            }
        }
        return send_json(r, root, 200);
    }
    cJSON *m, *found = NULL;
    cJSON_ArrayForEach(m, models)
    {
        const char *mn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "name"));
        if (mn && strcmp(mn, name) == 0) found = m;
    }
    if (!found) {
        cJSON_Delete(root);
        return srv_error(r, 404, "unknown_model", NULL, "no model '%.64s' in the registry", name);
    }
    cJSON_DetachItemViaPointer(models, found);
    cJSON_Delete(root);
    for (int i = 0; i < nm; i++) {
        if (strcmp(s->names[i], name) != 0) continue;
        srv_model *sm = srv_acquire(&s->models[i]);
        if (sm) cJSON_AddItemToObject(found, "serving", serving_json(sm));
        srv_release(sm);
    }
    if (!cJSON_GetObjectItemCaseSensitive(found, "serving")) cJSON_AddNullToObject(found, "serving");
    return send_json(r, found, 200);
}

/* /v1/kpi: the newest run of `prognos kpi compute` (px_kpi_latest):
 * measure = volume | readmission | mortality | los | cost; period = a period
 * ("2023-06", "2023-Q2", "2023", "all") or a kind ("month", ...); unit = a unit
 * ("H035", "cardiology", "all") or a kind ("facility", "department", "system");
 * limit = rows (default 1000, at most 10000). */
unsigned srv_route_kpi(srv_req *r, struct MHD_Connection *conn)
{
    px_server *s = r->s;
    const char *q[4];
    static const char *const names[3] = {"measure", "period", "unit"};
    for (int i = 0; i < 3; i++) {
        q[i] = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, names[i]);
        if (!q[i]) q[i] = "";
        if (strlen(q[i]) > 128) return srv_error(r, 400, "invalid_value", names[i], "%s is too long", names[i]);
    }
    const char *lim = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
    char limbuf[16] = "1000";
    if (lim) {
        char *end;
        long v = strtol(lim, &end, 10);
        if (*lim == '\0' || *end != '\0' || v < 1 || v > 10000)
            return srv_error(r, 400, "invalid_value", "limit", "limit must be a whole number from 1 to 10000");
        snprintf(limbuf, sizeof limbuf, "%ld", v);
    }
    q[3] = limbuf;
    px_err e = {0};
    PGconn *c = srv_pool_get(s, &e);
    if (!c) return srv_error(r, 503, "database_unavailable", NULL, "the warehouse is unreachable");
    char *json = NULL;
    int rc = px_kpi_latest(c, q[0], q[1], q[2], atoi(limbuf), &json, &e);
    int broken = rc != 0 && PQstatus(c) != CONNECTION_OK;
    unsigned st;
    if (rc == PX_ENOTFOUND)
        st = srv_error(r, 404, "not_available", NULL, "no KPIs have been computed (prognos kpi compute)");
    else if (rc != 0 || !json) {
        px_log(PX_LOG_WARN, "serve: /v1/kpi: %s: %s", e.msg, e.detail);
        st = srv_error(r, 503, "database_unavailable", NULL, "cannot read KPIs");
    } else
        st = send_json(r, cJSON_Parse(json), 200);
    free(json);
    srv_pool_put(s, c, broken);
    return st;
}

unsigned srv_route_drift(srv_req *r)
{
    px_server *s = r->s;
    cJSON *o = cJSON_CreateObject(), *mons = cJSON_AddArrayToObject(o, "monitors");
    cJSON *p = cJSON_AddObjectToObject(o, "params");
    if (p) {
        cJSON_AddNumberToObject(p, "window", (double)s->p.drift_window);
        cJSON_AddNumberToObject(p, "window_seconds", s->p.drift_window_s);
        cJSON_AddNumberToObject(p, "min_interval_ms", s->p.drift_min_interval_ms);
        cJSON_AddNumberToObject(p, "min_n", (double)s->dp.min_n);
        cJSON_AddNumberToObject(p, "alpha", s->dp.alpha);
        cJSON_AddNumberToObject(p, "psi_floor", s->dp.psi_floor);
        cJSON_AddNumberToObject(p, "effect_floor", s->dp.effect_floor);
    }
    pthread_mutex_lock(&s->drift_mu);
    for (size_t i = 0; mons && i < s->ndrifts; i++) {
        cJSON *d = srv_drift_json(s->drifts[i]);
        if (d) cJSON_AddItemToArray(mons, d);
    }
    pthread_mutex_unlock(&s->drift_mu);
    return send_json(r, o, 200);
}

unsigned srv_route_alerts(srv_req *r, struct MHD_Connection *conn)
{
    px_server *s = r->s;
    const char *model = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "model");
    const char *open = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "open");
    if (open && strcmp(open, "true") != 0 && strcmp(open, "false") != 0)
        return srv_error(r, 400, "invalid_value", "open", "open must be true or false");
    cJSON *root = cached(&s->alerts_json);
    if (!root) return srv_error(r, 503, "not_ready", NULL, "the alert list is not loaded yet");
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "alerts");
    for (cJSON *a = arr ? arr->child : NULL; a;) {
        cJSON *next = a->next;
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "model"));
        int is_open = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "open"));
        if ((model && (!m || strcmp(m, model) != 0)) || (open && is_open != (strcmp(open, "true") == 0)))
            cJSON_Delete(cJSON_DetachItemViaPointer(arr, a));
        a = next;
    }
    return send_json(r, root, 200);
}

unsigned srv_route_metrics(srv_req *r)
{
    r->out.len = 0;
    srv_metrics_render(r->s, &r->out);
    return 200;
}

unsigned srv_route_healthz(srv_req *r)
{
    uint64_t up = (srv_wall_us() - atomic_load(&r->s->started_us)) / 1000000u;
    r->out.len = 0;
    px_buf_printf(&r->out, "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%llu,\"request_id\":\"%s\"}\n",
                  PX_VERSION, (unsigned long long)up, r->request_id);
    return 200;
}

unsigned srv_route_readyz(srv_req *r)
{
    px_server *s = r->s;
    size_t depth = srv_audit_depth(&s->audit);
    int models_ok = atomic_load(&s->ready), audit_ok = depth < s->audit.cap;
    px_buf *b = &r->out;
    b->len = 0;
    px_buf_adds(b, "{");
    if (!models_ok || !audit_ok)
        px_buf_printf(b, "\"error\":{\"code\":\"not_ready\",\"message\":\"%s\"},",
                      !models_ok ? "not every served model is loaded" : "the audit queue is full");
    px_buf_printf(b, "\"status\":\"%s\",\"models\":[", models_ok && audit_ok ? "ready" : "not_ready");
    int nm = atomic_load(&s->nmodels), first = 1;
    for (int i = 0; i < nm; i++) {
        srv_model *sm = srv_acquire(&s->models[i]);
        if (!sm) continue;
        px_buf_printf(b, "%s{\"name\":", first ? "" : ",");
        px_buf_json_str(b, sm->name, strlen(sm->name));
        px_buf_printf(b, ",\"version\":%d}", sm->version);
        first = 0;
        srv_release(sm);
    }
    px_buf_printf(b, "],\"audit\":{\"queue\":%zu,\"capacity\":%zu,\"writing\":%s},\"database\":%s,\"request_id\":\"%s\"}\n",
                  depth, s->audit.cap, atomic_load(&s->audit.db_ok) ? "true" : "false",
                  atomic_load(&s->db_ok) ? "true" : "false", r->request_id);
    return models_ok && audit_ok ? 200 : 503;
}

unsigned srv_route_reload(srv_req *r)
{
    px_serve_reload(r->s);
    r->out.len = 0;
    px_buf_printf(&r->out, "{\"status\":\"reload requested\",\"request_id\":\"%s\"}\n", r->request_id);
    return 202;
}

unsigned srv_route_openapi(srv_req *r)
{
    r->out.len = 0;
    return px_buf_adds(&r->out, srv_openapi_json) == 0 ? 200
                                                       : srv_error(r, 503, "out_of_memory", NULL, "out of memory");
}
