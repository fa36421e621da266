/* check.c: prognos drift check. The batch counterpart of the server's drift
 * monitor: the feature rows of each champion's table whose encounters came from
 * etl batches the version was not trained on are scored and tested, as one
 * window, against the version's reference with the same tests and thresholds
 * (drift.c); alerts are stored with source 'drift check'. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void report_text(FILE *out, const srv_drift *d, size_t rows, const srv_drift_alert *a, int na,
                        const px_drift_params *p)
{
    fprintf(out, "%s v%d: %zu new rows", d->name, d->version, rows);
    if (rows < p->min_n) {
        fprintf(out, ": too few to test (at least %zu)\n", p->min_n);
        return;
    }
    fprintf(out, ", %d alert%s\n", na, na == 1 ? "" : "s");
    fprintf(out, "  %-28s %9s %9s %9s %10s  %s\n", "variable", "PSI", "limit", "KS/V", "p", "");
    for (size_t j = 0; j < d->nvars; j++) {
        const srv_var *v = &d->vars[j];
        if (!v->nbins) continue;
        double eff = v->numeric ? v->ks : v->cramer_v, pv = v->numeric ? v->ks_p : v->chi2_p;
        fprintf(out, "  %-28s %9.4f %9.4f %9.4f %10.3g  %s\n", v->name, v->psi, v->psi_crit, eff, pv,
                v->alert ? v->alert_test : "");
    }
    for (int i = 0; i < na; i++)
        fprintf(out, "  ALERT %s: %s = %.4g (limit %.4g)\n", a[i].feature, a[i].test, a[i].statistic, a[i].threshold);
}

/* One champion: returns rows tested (0 when too few), or a negative error. */
static long long check_one(PGconn *c, const px_config *cfg, const char *name, int version, const char *algo,
                           const char *task, const char *table, const char *batches, long long since_batch,
                           const px_drift_params *p, int json, cJSON *jout, FILE *out, int *alerts, px_err *e)
{
    srv_model *sm = srv_model_load(c, cfg, name, version, algo, task, table, e);
    PGresult *r = NULL;
    char *sql = NULL;
    double *raw = NULL;
    unsigned char *flags = NULL;
    uint16_t *bins = NULL;
    long long rc = 0;
    if (!sm) return e->code ? e->code : PX_EIO;
    if (!sm->drift) {
        rc = px_err_set(e, PX_ECORRUPT, "model '%s' v%d has no usable drift reference", name, version);
        goto done;
    }
    char since[32];
    snprintf(since, sizeof since, "%lld", since_batch);
    const char *where = since_batch > 0
                            ? "f.encounter_id IN (SELECT e.encounter_id FROM wh.fact_encounter e WHERE e.batch_id >= $1::bigint)"
                            : "f.encounter_id IN (SELECT e.encounter_id FROM wh.fact_encounter e WHERE NOT (e.batch_id = ANY"
                              " (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::bigint))))";
    if (!(sql = srv_model_select_sql(sm, where))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    const char *vals[1] = {since_batch > 0 ? since : batches};
    r = PQexecParams(c, sql, 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_err_set(e, PX_EDB, "cannot read new rows of '%s' for model '%s' v%d", table, name, version);
        px_err_detail(e, "%s", PQerrorMessage(c));
        goto done;
    }
    size_t n = (size_t)PQntuples(r), k = sm->k;
    raw = malloc((k ? k : 1) * sizeof *raw);
    flags = calloc(k ? k : 1, 1);
    bins = malloc((k + 1) * sizeof *bins);
    if (!raw || !flags || !bins) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    px_serve_params sp = px_serve_default_params();
    sp.drift_window = SIZE_MAX; /* one window: closed below */
    sp.drift_window_s = UINT32_MAX / 2;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < k; j++)
            raw[j] = srv_table_value(&sm->f[j], PQgetvalue(r, (int)i, (int)j + 1), PQgetisnull(r, (int)i, (int)j + 1),
                                     flags);
        double score;
        if (px_model_predict(sm->m, raw, &score, NULL, e) != 0) {
            rc = e->code ? e->code : PX_EINVAL;
            goto done;
        }
        for (size_t j = 0; j < k; j++) bins[j] = (uint16_t)srv_drift_bin(sm->drift, j, raw[j]);
        bins[k] = (uint16_t)srv_drift_bin(sm->drift, k, score);
        srv_drift_add(sm->drift, bins, 1, &sp);
    }
    srv_drift_close(sm->drift);
    srv_drift_alert al[64];
    int na = 0;
    if (n >= p->min_n) {
        na = srv_drift_evaluate(sm->drift, p, al, 64);
        if (na < 0) na = 0;
        if ((rc = srv_alerts_store(c, name, version, al, na, "drift check", e)) != 0) goto done;
        *alerts += na;
        rc = (long long)n;
    }
    if (json) {
        cJSON *o = srv_drift_json(sm->drift);
        if (o) {
            cJSON_AddNumberToObject(o, "new_rows", (double)n);
            cJSON_AddBoolToObject(o, "tested", n >= p->min_n);
            cJSON_AddItemToArray(jout, o);
        }
    } else
        report_text(out, sm->drift, n, al, na, p);
done:
    PQclear(r);
    free(sql);
    free(raw);
    free(flags);
    free(bins);
    if (sm) {
        srv_drift_free(sm->drift);
        sm->drift = NULL;
        srv_release(sm);
    }
    return rc;
}

int px_drift_check(PGconn *c, const px_config *cfg, const char *model, long long since_batch,
                   const px_drift_params *p, int json, FILE *out, int *alerts, px_err *e)
{
    int rc = 0, tested = 0;
    *alerts = 0;
    cJSON *jroot = json ? cJSON_CreateObject() : NULL, *jmodels = jroot ? cJSON_AddArrayToObject(jroot, "models") : NULL;
    px_reg_version_brief *ch = NULL;
    size_t nch = 0;
    if (json && !jmodels) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = px_reg_champions(c, model, 0, "cannot read the champions", &ch, &nch, e)) != 0) goto done;
    if (nch == 0) {
        rc = model ? px_err_set(e, PX_ENOTFOUND, "model '%s' has no champion", model)
                   : px_err_set(e, PX_ENOTHING, "no model has a champion: nothing to check");
        goto done;
    }
    for (size_t i = 0; i < nch; i++) {
        long long n = check_one(c, cfg, ch[i].name, ch[i].version, ch[i].algo, ch[i].task, ch[i].feature_table,
                                ch[i].source_batches, since_batch, p, json, jmodels, out, alerts, e);
        if (n < 0) {
            rc = (int)n;
            goto done;
        }
        tested += n > 0;
    }
    if (json) {
        cJSON_AddNumberToObject(jroot, "alerts", *alerts);
        char *txt = cJSON_PrintUnformatted(jroot);
        if (txt) fprintf(out, "%s\n", txt);
        free(txt);
    }
    if (!tested) rc = px_err_set(e, PX_ENOTHING, "no champion has enough new rows to test");
done:
    px_reg_briefs_free(ch, nch);
    cJSON_Delete(jroot);
    return rc;
}
