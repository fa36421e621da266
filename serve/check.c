/* check.c: prognos drift check. The batch counterpart of the server's drift
 * monitor: the feature rows of each champion's table whose encounters came from
 * etl batches the version was not trained on are scored and tested, as one
 * window, against the version's reference with the same tests and thresholds
 * (drift.c); alerts are stored with source 'drift check'. The rows are read
 * with the feature reader (features/reader.c) and turned into model input by
 * px_model_raw_row, as training and KPI scoring read them. */
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

/* The drift check's rows, scored and binned as the feature reader gives them. */
typedef struct check_scan {
    srv_model *sm;
    double *raw;
    uint16_t *bins;
    px_serve_params sp;
    size_t n;
} check_scan;

static int check_row(const px_feat_row *row, void *arg, px_err *e)
{
    check_scan *s = arg;
    size_t k = s->sm->k;
    px_model_raw_row(s->sm->m, row->num, row->text, s->raw);
    for (size_t j = 0; j < k; j++)
        if (!isfinite(s->raw[j])) s->raw[j] = NAN;   /* NaN or infinity stored in a column: imputed */
    double score;
    int rc = px_model_predict(s->sm->m, s->raw, &score, NULL, e);
    if (rc != 0) return rc;
    for (size_t j = 0; j < k; j++) s->bins[j] = (uint16_t)srv_drift_bin(s->sm->drift, j, s->raw[j]);
    s->bins[k] = (uint16_t)srv_drift_bin(s->sm->drift, k, score);
    srv_drift_add(s->sm->drift, s->bins, 1, &s->sp);
    s->n++;
    return 0;
}

/* One champion: returns rows tested (0 when too few), or a negative error. */
static long long check_one(PGconn *c, const px_config *cfg, const char *name, int version, const char *algo,
                           const char *task, const char *table, const char *batches, long long since_batch,
                           const px_drift_params *p, int json, cJSON *jout, FILE *out, int *alerts, px_err *e)
{
    srv_model *sm = srv_model_load(c, cfg, name, version, algo, task, table, e);
    px_feat_table *t = NULL;
    px_feat_field *f = NULL;
    char *lit = NULL;
    px_buf from = {0};
    check_scan s;
    memset(&s, 0, sizeof s);
    long long rc = 0;
    if (!sm) return e->code ? e->code : PX_EIO;
    if (!sm->drift) {
        rc = px_err_set(e, PX_ECORRUPT, "model '%s' v%d has no usable drift reference", name, version);
        goto done;
    }
    /* the new rows, read through the feature reader (binary COPY: the batch list inline, quoted) */
    char since[32];
    snprintf(since, sizeof since, "%lld", since_batch);
    const char *val = since_batch > 0 ? since : batches;
    size_t k = sm->k;
    if (!(t = px_feat_table_open(c, table, e))) {
        rc = e->code ? e->code : PX_EDB;
        goto done;
    }
    lit = PQescapeLiteral(c, val, strlen(val));
    f = calloc(k + 1, sizeof *f);
    s.sm = sm;
    s.raw = malloc((k ? k : 1) * sizeof *s.raw);
    s.bins = malloc((k + 1) * sizeof *s.bins);
    if (!lit || !f || !s.raw || !s.bins) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t j = 0; j < k && rc == 0; j++) {
        const px_feature_info *fi = px_model_feature(sm->m, j);
        rc = px_feat_table_field(c, t, "f", fi->name, fi->kind == PX_COL_CATEGORICAL, &f[j], e);
    }
    if (rc) goto done;
    if (px_buf_printf(&from, "FROM %s f WHERE %s", px_feat_table_quoted(t),
                      since_batch > 0 ? "f.encounter_id IN (SELECT e.encounter_id FROM wh.fact_encounter e WHERE "
                                        "e.batch_id >= "
                                      : "f.encounter_id IN (SELECT e.encounter_id FROM wh.fact_encounter e WHERE NOT "
                                        "(e.batch_id = ANY (ARRAY(SELECT jsonb_array_elements_text(") < 0 ||
        px_buf_printf(&from, "%s%s", lit, since_batch > 0 ? "::bigint)" : "::jsonb)::bigint))))") < 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    s.sp = px_serve_default_params();
    s.sp.drift_window = SIZE_MAX; /* one window: closed below */
    s.sp.drift_window_s = UINT32_MAX / 2;
    if ((rc = px_feat_scan(c, f, k, from.data, check_row, &s, e)) != 0) {
        if (rc == PX_EDB) px_err_wrap(e, PX_EDB, "cannot read new rows of '%s' for model '%s' v%d", table, name, version);
        goto done;
    }
    size_t n = s.n;
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
    px_feat_fields_release(f, sm ? sm->k : 0);
    free(f);
    px_feat_table_free(t);
    PQfreemem(lit);
    px_buf_release(&from);
    free(s.raw);
    free(s.bins);
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
