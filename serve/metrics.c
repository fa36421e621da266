/* metrics.c: counters and the Prometheus text exposition (format 0.0.4).
 * Counters are relaxed atomics bumped on the request path; /metrics reads them
 * without stopping anyone, so a scrape is a consistent-enough snapshot, never a lock. */
#include "serve/internal.h"
#include <math.h>
#include <string.h>

static const unsigned statuses[SRV_NSTATUS - 1] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 412,
                                                   413, 415, 422, 429, 431, 500, 501, 503};
/* predict latency buckets, in microseconds */
static const unsigned buckets_us[SRV_NBUCKETS] = {100,  250,  500,   750,   1000,   2000,   3000,
                                                  5000, 10000, 25000, 50000, 100000, 250000, 1000000};

void srv_metrics_request(srv_metrics *m, int route, unsigned status, uint64_t latency_us)
{
    int si = SRV_NSTATUS - 1;
    for (int i = 0; i < SRV_NSTATUS - 1; i++)
        if (statuses[i] == status) {
            si = i;
            break;
        }
    if (route < 0 || route >= R__COUNT) route = R_UNKNOWN;
    atomic_fetch_add_explicit(&m->requests[route][si], 1, memory_order_relaxed);
    if (route != R_PREDICT) return;
    int b = 0;
    while (b < SRV_NBUCKETS && latency_us > buckets_us[b]) b++;
    atomic_fetch_add_explicit(&m->latency_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us, latency_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_count, 1, memory_order_relaxed);
}

static unsigned long long ld(atomic_ullong *x)
{
    return atomic_load_explicit(x, memory_order_relaxed);
}

/* Label values are model names and feature names: [a-z0-9_] in practice, but
 * escaped as the format requires anyway. */
static void label(px_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') px_buf_addc(b, '\\');
        if (*s == '\n') {
            px_buf_adds(b, "\\n");
            continue;
        }
        px_buf_addc(b, *s);
    }
}

void srv_metrics_render(px_server *s, px_buf *b)
{
    srv_metrics *m = &s->metrics;
    px_buf_adds(b, "# HELP prognos_http_requests_total HTTP requests answered, by route and status.\n"
                   "# TYPE prognos_http_requests_total counter\n");
    /* one series per label: routes that share a label (a V2 path with and
     * without its version) are summed under the first of them */
    for (int r = 0; r < R__COUNT; r++) {
        const char *lab = srv_route_label(r);
        int first = 1;
        for (int q = 0; q < r && first; q++) first = strcmp(srv_route_label(q), lab) != 0;
        if (!first) continue;
        for (int i = 0; i < SRV_NSTATUS; i++) {
            unsigned long long v = 0;
            for (int q = r; q < R__COUNT; q++)
                if (strcmp(srv_route_label(q), lab) == 0) v += ld(&m->requests[q][i]);
            if (!v) continue;
            if (i < SRV_NSTATUS - 1)
                px_buf_printf(b, "prognos_http_requests_total{route=\"%s\",status=\"%u\"} %llu\n", lab, statuses[i], v);
            else
                px_buf_printf(b, "prognos_http_requests_total{route=\"%s\",status=\"other\"} %llu\n", lab, v);
        }
    }
    px_buf_adds(b, "# HELP prognos_predict_latency_seconds Time from the request line to the queued answer.\n"
                   "# TYPE prognos_predict_latency_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i <= SRV_NBUCKETS; i++) {
        cum += ld(&m->latency_bucket[i]);
        if (i < SRV_NBUCKETS)
            px_buf_printf(b, "prognos_predict_latency_seconds_bucket{le=\"%g\"} %llu\n", buckets_us[i] / 1e6, cum);
        else
            px_buf_printf(b, "prognos_predict_latency_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    px_buf_printf(b, "prognos_predict_latency_seconds_sum %.6f\nprognos_predict_latency_seconds_count %llu\n",
                  ld(&m->latency_sum_us) / 1e6, ld(&m->latency_count));
    px_buf_printf(b,
                  "# HELP prognos_predict_instances_total Instances scored.\n"
                  "# TYPE prognos_predict_instances_total counter\nprognos_predict_instances_total %llu\n"
                  "# HELP prognos_encounter_lookups_total Instances given by encounter id and looked up.\n"
                  "# TYPE prognos_encounter_lookups_total counter\nprognos_encounter_lookups_total %llu\n"
                  "# HELP prognos_encounter_lookup_errors_total Encounter lookups that failed (database errors).\n"
                  "# TYPE prognos_encounter_lookup_errors_total counter\nprognos_encounter_lookup_errors_total %llu\n"
                  "# HELP prognos_predict_fast_parsed_total Predict bodies read by the one-pass reader (the rest: cJSON).\n"
                  "# TYPE prognos_predict_fast_parsed_total counter\nprognos_predict_fast_parsed_total %llu\n",
                  ld(&m->instances), ld(&m->encounter_lookups), ld(&m->encounter_lookup_errors), ld(&m->fast_parsed));
    px_buf_printf(b,
                  "# HELP prognos_audit_queue_depth Audit records waiting to be written.\n"
                  "# TYPE prognos_audit_queue_depth gauge\nprognos_audit_queue_depth %zu\n"
                  "# HELP prognos_audit_queue_capacity Audit records the queue holds before predict answers 503.\n"
                  "# TYPE prognos_audit_queue_capacity gauge\nprognos_audit_queue_capacity %zu\n"
                  "# HELP prognos_audit_written_total Audit records written to audit.predictions.\n"
                  "# TYPE prognos_audit_written_total counter\nprognos_audit_written_total %llu\n"
                  "# HELP prognos_audit_write_errors_total Failed audit batch writes (retried).\n"
                  "# TYPE prognos_audit_write_errors_total counter\nprognos_audit_write_errors_total %llu\n"
                  "# HELP prognos_audit_rejected_total Predictions refused because the audit queue was full.\n"
                  "# TYPE prognos_audit_rejected_total counter\nprognos_audit_rejected_total %llu\n"
                  "# HELP prognos_audit_up 1 when the last audit write succeeded.\n"
                  "# TYPE prognos_audit_up gauge\nprognos_audit_up %d\n",
                  srv_audit_depth(&s->audit), s->audit.cap, ld(&m->audit_written), ld(&m->audit_write_errors),
                  ld(&m->audit_rejected), atomic_load(&s->audit.db_ok));
    px_buf_printf(b,
                  "# HELP prognos_model_reloads_total Model versions loaded after start-up.\n"
                  "# TYPE prognos_model_reloads_total counter\nprognos_model_reloads_total %llu\n"
                  "# HELP prognos_model_reload_failures_total Loads refused (bad signature, digest, parse); the old version stays.\n"
                  "# TYPE prognos_model_reload_failures_total counter\nprognos_model_reload_failures_total %llu\n"
                  "# HELP prognos_http_connections Open HTTP connections.\n"
                  "# TYPE prognos_http_connections gauge\nprognos_http_connections %d\n"
                  "# HELP prognos_drift_windows_total Drift windows tested.\n"
                  "# TYPE prognos_drift_windows_total counter\nprognos_drift_windows_total %llu\n"
                  "# HELP prognos_drift_alerts_raised_total Drift alerts raised by this process (one per variable, test and window).\n"
                  "# TYPE prognos_drift_alerts_raised_total counter\nprognos_drift_alerts_raised_total %llu\n",
                  ld(&m->reloads), ld(&m->reload_failures), atomic_load(&m->connections), ld(&m->drift_windows),
                  ld(&m->drift_alerts));
    /* connection deadlines and admission (conn.c) */
    px_buf_printf(b,
                  "# HELP prognos_http_connections_cut_total Connections cut at their deadline or evicted.\n"
                  "# TYPE prognos_http_connections_cut_total counter\nprognos_http_connections_cut_total %llu\n"
                  "# HELP prognos_http_connections_evicted_total Waiting connections closed to admit another address's.\n"
                  "# TYPE prognos_http_connections_evicted_total counter\nprognos_http_connections_evicted_total %llu\n"
                  "# HELP prognos_http_connections_refused_total Connections refused with 503 (no room).\n"
                  "# TYPE prognos_http_connections_refused_total counter\nprognos_http_connections_refused_total %llu\n",
                  ld(&s->conn_cut), ld(&s->conn_evicted), ld(&s->conn_refused));
    px_buf_printf(b,
                  "# HELP prognos_cds_cards_total CDS Hooks cards returned (each scored and audited as a prediction).\n"
                  "# TYPE prognos_cds_cards_total counter\nprognos_cds_cards_total %llu\n"
                  "# HELP prognos_cds_warehouse_total CDS cards scored from the warehouse's row (no prefetch).\n"
                  "# TYPE prognos_cds_warehouse_total counter\nprognos_cds_warehouse_total %llu\n"
                  "# HELP prognos_cds_feedback_total CDS card feedback stored, by outcome.\n"
                  "# TYPE prognos_cds_feedback_total counter\n"
                  "prognos_cds_feedback_total{outcome=\"accepted\"} %llu\n"
                  "prognos_cds_feedback_total{outcome=\"overridden\"} %llu\n"
                  "# HELP prognos_cds_jwt_refused_total CDS calls refused for want of a valid client JWT.\n"
                  "# TYPE prognos_cds_jwt_refused_total counter\nprognos_cds_jwt_refused_total %llu\n",
                  ld(&m->cds_cards), ld(&m->cds_warehouse), ld(&m->cds_feedback_accepted),
                  ld(&m->cds_feedback_overridden), ld(&m->jwt_refused));
    px_buf_printf(b,
                  "# HELP prognos_polls_total Completed polls of keys, champion aliases and cached lists.\n"
                  "# TYPE prognos_polls_total counter\nprognos_polls_total %llu\n",
                  ld(&m->polls));

    /* per served model */
    px_buf_adds(b, "# HELP prognos_model_version The version each model serves.\n"
                   "# TYPE prognos_model_version gauge\n");
    int nm = atomic_load(&s->nmodels);
    for (int i = 0; i < nm; i++) {
        srv_model *sm = srv_acquire(&s->models[i]);
        if (!sm) continue;
        px_buf_adds(b, "prognos_model_version{model=\"");
        label(b, sm->name);
        px_buf_printf(b, "\"} %d\n", sm->version);
        srv_release(sm);
    }
    px_buf_adds(b, "# HELP prognos_predictions_total Instances scored, by model version.\n"
                   "# TYPE prognos_predictions_total counter\n");
    pthread_mutex_lock(&s->drift_mu);
    for (size_t i = 0; i < s->ndrifts; i++) {
        srv_drift *d = s->drifts[i];
        px_buf_adds(b, "prognos_predictions_total{model=\"");
        label(b, d->name);
        px_buf_printf(b, "\",version=\"%d\"} %llu\n", d->version, ld(&d->predictions));
    }
    px_buf_adds(b, "# HELP prognos_drift_psi PSI of each monitored variable in the last tested window.\n"
                   "# TYPE prognos_drift_psi gauge\n");
    for (size_t i = 0; i < s->ndrifts; i++) {
        srv_drift *d = s->drifts[i];
        pthread_mutex_lock(&d->mu);
        for (size_t j = 0; d->windows > 0 && j < d->nvars; j++) {
            if (!d->vars[j].nbins || !isfinite(d->vars[j].psi)) continue;
            px_buf_adds(b, "prognos_drift_psi{model=\"");
            label(b, d->name);
            px_buf_printf(b, "\",version=\"%d\",feature=\"", d->version);
            label(b, d->vars[j].name);
            px_buf_printf(b, "\"} %.6g\n", d->vars[j].psi);
        }
        pthread_mutex_unlock(&d->mu);
    }
    pthread_mutex_unlock(&s->drift_mu);

    /* open alerts, from the poller's copy of serve.drift_alerts */
    px_buf_adds(b, "# HELP prognos_drift_alert_open 1 for each open drift alert (serve.drift_alerts).\n"
                   "# TYPE prognos_drift_alert_open gauge\n");
    srv_text *t = srv_acquire(&s->alerts_json);
    cJSON *arr = t ? cJSON_ParseWithLength(t->s, t->len) : NULL;
    srv_release(t);
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(arr, "alerts"))
    {
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(a, "resolved_at");
        if (res && !cJSON_IsNull(res)) continue;
        const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "model"));
        const char *feat = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "feature"));
        const char *test = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "test"));
        const char *src = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "source"));
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(a, "version");
        if (!model || !feat || !test || !src || !cJSON_IsNumber(ver)) continue;
        px_buf_adds(b, "prognos_drift_alert_open{model=\"");
        label(b, model);
        px_buf_printf(b, "\",version=\"%d\",feature=\"", ver->valueint);
        label(b, feat);
        px_buf_printf(b, "\",test=\"%s\",source=\"%s\"} 1\n", test, src);
    }
    cJSON_Delete(arr);
}
