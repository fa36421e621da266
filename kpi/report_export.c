/* report_export.c: the report's JSON and CSV: every row of the period, suppressed
 * ones included, each number at full precision (NULL or empty when missing). */
#include "kpi/report_int.h"
#include <stdlib.h>

/* ---- JSON and CSV -------------------------------------------------------------- */

static void jnum(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

char *kpi_report_json(const rows *rs, const run_info *ri, const px_kpi_report_params *p, const goals *g)
{
    cJSON *d = cJSON_CreateObject();
    if (!d) return NULL;
    cJSON_AddStringToObject(d, "format", "prognos-kpi-report");
    cJSON_AddNumberToObject(d, "format_version", 1);
    cJSON_AddNumberToObject(d, "run_id", (double)ri->run_id);
    cJSON_AddStringToObject(d, "period", ri->period);
    cJSON_AddStringToObject(d, "period_kind", ri->kind);
    cJSON_AddStringToObject(d, "data_first", ri->first);
    cJSON_AddStringToObject(d, "data_last", ri->last);
    cJSON_AddStringToObject(d, "source_batches", ri->batches);
    cJSON_AddItemToObject(d, "models", cJSON_Duplicate(ri->models, 1));
    cJSON_AddItemToObject(d, "method", cJSON_Duplicate(ri->method, 1));
    if (p->dp_epsilon > 0) {
        cJSON *dp = cJSON_AddObjectToObject(d, "differential_privacy");
        cJSON_AddStringToObject(dp, "mechanism", "laplace, sensitivity 1 per count, rounded and floored at 0");
        cJSON_AddNumberToObject(dp, "epsilon_per_count", p->dp_epsilon);
        cJSON_AddNumberToObject(dp, "counts_per_stay", DP_COUNTS_PER_STAY);
        cJSON_AddNumberToObject(dp, "epsilon_per_stay", p->dp_epsilon * DP_COUNTS_PER_STAY);
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)p->dp_seed);
        cJSON_AddStringToObject(dp, "seed", seed);
    } else {
        cJSON_AddNullToObject(d, "differential_privacy");
    }
    /* the targets someone set and the national benchmarks the page compared with */
    cJSON *tj = cJSON_AddObjectToObject(d, "targets"), *bj = cJSON_AddObjectToObject(d, "benchmarks");
    for (int m = 0; m < PX_KPI__COUNT; m++) {
        if (isfinite(g->target[m].value)) {
            cJSON *o = cJSON_AddObjectToObject(tj, px_kpi_measure_name(m));
            cJSON_AddNumberToObject(o, "value", g->target[m].value);
            cJSON_AddStringToObject(o, "direction", g->target[m].higher_better ? "higher" : "lower");
            cJSON_AddStringToObject(o, "source", g->target[m].source);
        }
        for (int k = 0; k < 2; k++) {
            if (!isfinite(g->bench[m][k].value)) continue;
            cJSON *a = cJSON_GetObjectItem(bj, px_kpi_measure_name(m));
            if (!a) a = cJSON_AddArrayToObject(bj, px_kpi_measure_name(m));
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToArray(a, o);
            cJSON_AddNumberToObject(o, "value", g->bench[m][k].value);
            cJSON_AddStringToObject(o, "source", g->bench[m][k].source);
        }
    }
    cJSON *arr = cJSON_AddArrayToObject(d, "results");
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (strcmp(x->period, ri->period) != 0) continue;
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "measure", px_kpi_measure_name(x->measure));
        cJSON_AddStringToObject(o, "unit_type", kpi_utype_names[x->utype]);
        cJSON_AddStringToObject(o, "unit", x->unit);
        cJSON_AddStringToObject(o, "period", x->period);
        jnum(o, "n", x->n);
        jnum(o, "observed", x->o);
        jnum(o, "expected", x->e);
        jnum(o, "rate", x->rate);
        jnum(o, "rate_lo", x->rlo);
        jnum(o, "rate_hi", x->rhi);
        jnum(o, "expected_rate", x->erate);
        jnum(o, "oe", x->oe);
        jnum(o, "oe_lo", x->oelo);
        jnum(o, "oe_hi", x->oehi);
        if (x->oe_method[0])
            cJSON_AddStringToObject(o, "oe_method", x->oe_method);
        else
            cJSON_AddNullToObject(o, "oe_method");
        jnum(o, "rsr", x->rsr);
        jnum(o, "rsr_lo", x->rsrlo);
        jnum(o, "rsr_hi", x->rsrhi);
        jnum(o, "eb_rate", x->eb);
        jnum(o, "eb_weight", x->ebw);
        jnum(o, "sr", x->sr);
        jnum(o, "sr_lo", x->srlo);
        jnum(o, "sr_hi", x->srhi);
        jnum(o, "srsr", x->srsr);
        jnum(o, "srsr_lo", x->srsrlo);
        jnum(o, "srsr_hi", x->srsrhi);
        cJSON_AddStringToObject(o, "adjustment", x->adjustment);
        cJSON_AddStringToObject(o, "flag", x->flag);
        cJSON_AddBoolToObject(o, "suppressed", x->suppressed);
        if (x->version)
            cJSON_AddNumberToObject(o, "model_version", x->version);
        else
            cJSON_AddNullToObject(o, "model_version");
    }
    char *s = cJSON_Print(d);
    cJSON_Delete(d);
    return s;
}

static void csv_num(px_buf *b, double v)
{
    if (isfinite(v))
        px_buf_printf(b, ",%.12g", v);
    else
        px_buf_addc(b, ',');
}

static void csv_text(px_buf *b, const char *s)
{
    int quote = strpbrk(s, ",\"\n\r") != NULL;
    if (!quote) {
        px_buf_adds(b, s);
        return;
    }
    px_buf_addc(b, '"');
    for (; *s; s++) {
        if (*s == '"') px_buf_addc(b, '"');
        px_buf_addc(b, *s);
    }
    px_buf_addc(b, '"');
}

int kpi_report_csv(px_buf *b, const rows *rs, const run_info *ri)
{
    px_buf_adds(b, "run_id,measure,unit_type,unit,period,period_start,period_end,n,observed,expected,rate,rate_lo,"
                   "rate_hi,expected_rate,oe,oe_lo,oe_hi,oe_method,rsr,rsr_lo,rsr_hi,eb_rate,eb_weight,flag,"
                   "suppressed,model_version,sr,sr_lo,sr_hi,srsr,srsr_lo,srsr_hi,adjustment\n");
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (strcmp(x->period, ri->period) != 0) continue;
        px_buf_printf(b, "%lld,%s,%s,", ri->run_id, px_kpi_measure_name(x->measure), kpi_utype_names[x->utype]);
        csv_text(b, x->unit);
        px_buf_printf(b, ",%s,%s,%s", x->period, x->start, x->end);
        double v[] = {x->n, x->o, x->e, x->rate, x->rlo, x->rhi, x->erate, x->oe, x->oelo, x->oehi};
        for (size_t j = 0; j < sizeof v / sizeof *v; j++) csv_num(b, v[j]);
        px_buf_printf(b, ",%s", x->oe_method);
        double w[] = {x->rsr, x->rsrlo, x->rsrhi, x->eb, x->ebw};
        for (size_t j = 0; j < sizeof w / sizeof *w; j++) csv_num(b, w[j]);
        px_buf_printf(b, ",%s,%s,", x->flag, x->suppressed ? "true" : "false");
        if (x->version) px_buf_printf(b, "%d", x->version);
        double hs[] = {x->sr, x->srlo, x->srhi, x->srsr, x->srsrlo, x->srsrhi};
        for (size_t j = 0; j < sizeof hs / sizeof *hs; j++) csv_num(b, hs[j]);
        px_buf_printf(b, ",%s", x->adjustment);
        px_buf_addc(b, '\n');
    }
    return b->data ? 0 : PX_ENOMEM;
}

