/* report.c: px_kpi_report, one period of a stored KPI run as a self-contained
 * HTML page (inline CSS and SVG, no script, no network), JSON and CSV. Numbers
 * come from kpi.results as stored; the page carries each one at full precision
 * in data-* attributes beside its rounded text, so tests can compare the two.
 * With dp_epsilon > 0 the counts are released through the Laplace mechanism and
 * everything shown is recomputed from the noisy counts (post-processing).
 * This file reads the run and applies the release; the page is report_html.c
 * (with report_league.c), the JSON and CSV report_export.c, targets and
 * benchmarks report_goals.c, shared formatting report_fmt.c (report_int.h). */
#include "kpi/report_int.h"
#include <gsl/gsl_errno.h>
#include <stdlib.h>

px_kpi_report_params px_kpi_report_default_params(void)
{
    px_kpi_report_params p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < PX_KPI__COUNT; i++) p.target[i] = NAN;
    return p;
}

static int load_rows(PGconn *c, const run_info *ri, rows *out, px_err *e)
{
    char rid[32];
    snprintf(rid, sizeof rid, "%lld", ri->run_id);
    const char *pp[2] = {rid, ri->kind};
    PGresult *r = PQexecParams(
        c,
        "SELECT measure, unit_type, unit, period, period_start, period_end, n, observed, expected, rate, rate_lo,"
        " rate_hi, expected_rate, oe, oe_lo, oe_hi, rsr, rsr_lo, rsr_hi, eb_rate, eb_weight, funnel_x,"
        " funnel95_lo, funnel95_hi, funnel998_lo, funnel998_hi, funnel_phi, funnel_var, flag, suppressed,"
        " coalesce(oe_method, ''), coalesce(model_version, 0), sr, sr_lo, sr_hi, srsr, srsr_lo, srsr_hi,"
        " coalesce(adjustment, '')"
        " FROM kpi.results WHERE run_id = $1::bigint AND period_kind = $2"
        " ORDER BY period_start, measure, unit_type, unit",
        2, NULL, pp, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_db_fail(e, c, r, "cannot read kpi.results");
        goto out;
    }
    size_t n = (size_t)PQntuples(r);
    if (!(out->v = calloc(n ? n : 1, sizeof *out->v))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        row *x = &out->v[i];
        int t = (int)i;
        px_kpi_measure m = PX_KPI_VOLUME;
        px_kpi_measure_parse(PQgetvalue(r, t, 0), &m);
        x->measure = m;
        const char *ut = PQgetvalue(r, t, 1);
        x->utype = strcmp(ut, "facility") == 0 ? 1 : strcmp(ut, "department") == 0 ? 2 : 0;
        snprintf(x->unit, sizeof x->unit, "%s", PQgetvalue(r, t, 2));
        snprintf(x->period, sizeof x->period, "%s", PQgetvalue(r, t, 3));
        snprintf(x->start, sizeof x->start, "%s", PQgetvalue(r, t, 4));
        snprintf(x->end, sizeof x->end, "%s", PQgetvalue(r, t, 5));
        double *d[] = {&x->n, &x->o, &x->e, &x->rate, &x->rlo, &x->rhi, &x->erate, &x->oe, &x->oelo, &x->oehi,
                       &x->rsr, &x->rsrlo, &x->rsrhi, &x->eb, &x->ebw, &x->fx, &x->f95lo, &x->f95hi,
                       &x->f998lo, &x->f998hi, &x->phi, &x->fvar};
        for (int j = 0; j < 22; j++) *d[j] = kpi_res_dbl(r, t, 6 + j);
        snprintf(x->flag, sizeof x->flag, "%s", PQgetvalue(r, t, 28));
        x->suppressed = PQgetvalue(r, t, 29)[0] == 't';
        snprintf(x->oe_method, sizeof x->oe_method, "%s", PQgetvalue(r, t, 30));
        x->version = atoi(PQgetvalue(r, t, 31));
        double *h[] = {&x->sr, &x->srlo, &x->srhi, &x->srsr, &x->srsrlo, &x->srsrhi};
        for (int j = 0; j < 6; j++) *h[j] = kpi_res_dbl(r, t, 32 + j);
        snprintf(x->adjustment, sizeof x->adjustment, "%s", PQgetvalue(r, t, 38));
    }
    out->n = n;
out:
    PQclear(r);
    return rc;
}

/* Period label -> kind; 0 when the text is not a period. */
static int label_kind(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < 4 && i < n; i++)
        if (s[i] < '0' || s[i] > '9') return strcmp(s, "all") == 0 ? PX_KPI_ALL : 0;
    if (n == 4) return PX_KPI_YEAR;
    if (n == 7 && s[4] == '-' && s[5] == 'Q' && s[6] >= '1' && s[6] <= '4') return PX_KPI_QUARTER;
    if (n == 7 && s[4] == '-' && s[5] >= '0' && s[5] <= '1' && s[6] >= '0' && s[6] <= '9') {
        int m = (s[5] - '0') * 10 + (s[6] - '0');
        return m >= 1 && m <= 12 ? PX_KPI_MONTH : 0;
    }
    return 0;
}

/* Finds the run and the period the report is about. */
static int resolve(PGconn *c, const px_kpi_report_params *p, run_info *ri, px_err *e)
{
    const char *want = p->period ? p->period : "year";
    int kind = kpi_kind_flag(want), is_kind = kind && strcmp(want, "all") != 0;
    if (!kind) kind = label_kind(want);
    if (!kind)
        return px_err_set(e, PX_EINVAL, "'%s' is not a period: use 2023, 2023-Q2, 2023-06, all, or month|quarter|year",
                          want);
    snprintf(ri->kind, sizeof ri->kind, "%s", kpi_kind_name(kind));
    char rid[32];
    snprintf(rid, sizeof rid, "%lld", p->run_id);
    const char *pp[3] = {rid, ri->kind, want};
    /* a kind: its latest period that the data covers completely (else its latest) */
    PGresult *r = PQexecParams(
        c,
        is_kind ? "SELECT r.run_id, r.period FROM kpi.results r JOIN kpi.runs u USING (run_id)"
                  " WHERE ($1::bigint = 0 OR r.run_id = $1::bigint) AND r.period_kind = $2 AND r.unit_type = 'system'"
                  " AND r.measure = 'volume' AND $3 = $3"
                  " ORDER BY r.run_id DESC, (r.period_end <= u.data_last) DESC, r.period_start DESC LIMIT 1"
                : "SELECT r.run_id, r.period FROM kpi.results r"
                  " WHERE ($1::bigint = 0 OR r.run_id = $1::bigint) AND r.period_kind = $2 AND r.period = $3"
                  " AND r.unit_type = 'system' AND r.measure = 'volume' ORDER BY r.run_id DESC LIMIT 1",
        3, NULL, pp, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_db_fail(e, c, r, "cannot read kpi.results");
        goto out;
    }
    if (PQntuples(r) == 0) {
        if (p->run_id)
            rc = px_err_set(e, PX_ENOTFOUND, "KPI run %lld holds no period '%s'", p->run_id, want);
        else
            rc = px_err_set(e, PX_ENOTFOUND, "no KPI run holds period '%s'", want);
        px_err_hint(e, "compute it first: prognos kpi compute --period %s", ri->kind);
        goto out;
    }
    ri->run_id = atoll(PQgetvalue(r, 0, 0));
    snprintf(ri->period, sizeof ri->period, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    snprintf(rid, sizeof rid, "%lld", ri->run_id);
    const char *pq[1] = {rid};
    r = PQexecParams(c,
                     "SELECT to_char(computed_at, 'YYYY-MM-DD HH24:MI TZ'), computed_by, models::text,"
                     " source_batches::text, method::text, coalesce(data_first::text, ''),"
                     " coalesce(data_last::text, ''), encounters FROM kpi.runs WHERE run_id = $1::bigint",
                     1, NULL, pq, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = px_db_fail(e, c, r, "cannot read kpi.runs");
        goto out;
    }
    snprintf(ri->computed_at, sizeof ri->computed_at, "%s", PQgetvalue(r, 0, 0));
    snprintf(ri->computed_by, sizeof ri->computed_by, "%s", PQgetvalue(r, 0, 1));
    ri->models = cJSON_Parse(PQgetvalue(r, 0, 2));
    ri->batches = strdup(PQgetvalue(r, 0, 3));
    ri->method = cJSON_Parse(PQgetvalue(r, 0, 4));
    snprintf(ri->first, sizeof ri->first, "%s", PQgetvalue(r, 0, 5));
    snprintf(ri->last, sizeof ri->last, "%s", PQgetvalue(r, 0, 6));
    ri->encounters = atoll(PQgetvalue(r, 0, 7));
    if (!ri->models || !ri->method || !ri->batches) rc = px_err_set(e, PX_ENOMEM, "out of memory");
out:
    PQclear(r);
    return rc;
}

/* ---- differential privacy ---------------------------------------------------- */

/* Counts one stay can enter in a release: volume (n) and, for readmission and
 * mortality, n, observed and expected, each at system, facility and department. */

static void dp_apply(rows *rs, const px_kpi_report_params *p, double conf, double byar, double min_cases)
{
    px_rng g;
    px_rng_seed(&g, p->dp_seed);
    double eps = p->dp_epsilon;
    for (size_t i = 0; i < rs->n; i++) {
        row *x = &rs->v[i];
        double keep_n = x->n;
        x->rate = x->rlo = x->rhi = x->erate = x->oe = x->oelo = x->oehi = NAN;
        x->rsr = x->rsrlo = x->rsrhi = x->eb = x->ebw = NAN;
        x->sr = x->srlo = x->srhi = x->srsr = x->srsrlo = x->srsrhi = NAN;   /* flags below come from the noisy O/E */
        if (x->adjustment[0] && strcmp(x->adjustment, "none") != 0)
            snprintf(x->adjustment, sizeof x->adjustment, "indirect");
        x->fx = x->f95lo = x->f95hi = x->f998lo = x->f998hi = x->phi = x->fvar = NAN;
        x->oe_method[0] = 0;
        if (x->measure == PX_KPI_LOS || x->measure == PX_KPI_COST) {
            /* sums of days and dollars have no small sensitivity: not released */
            x->n = x->o = x->e = NAN;
            snprintf(x->flag, sizeof x->flag, "withheld");
            x->suppressed = 1;
            continue;
        }
        (void)keep_n;
        x->n = px_kpi_dp_count(&g, x->n, 1, eps);
        if (x->measure == PX_KPI_VOLUME) {
            x->o = x->n;
            continue;
        }
        /* suppressed cells were stored without counts: they stay suppressed */
        if (x->suppressed || !isfinite(x->o)) {
            x->o = x->e = NAN;
            x->suppressed = 1;
            snprintf(x->flag, sizeof x->flag, x->utype ? "suppressed" : "reference");
            continue;
        }
        x->o = px_kpi_dp_count(&g, x->o, 1, eps);
        /* expected is a sum of probabilities: one stay moves it by at most 1 */
        x->e = fmax(0, x->e + px_kpi_laplace(&g, 1 / eps));
        if (x->o > x->n) x->o = x->n;
        x->suppressed = x->n < min_cases;
        if (x->suppressed) {
            x->o = x->e = NAN;
            snprintf(x->flag, sizeof x->flag, x->utype ? "suppressed" : "reference");
            continue;
        }
        px_ci ci;
        if (px_kpi_wilson(x->o, x->n, conf, &ci) == 0) x->rate = ci.est, x->rlo = ci.lo, x->rhi = ci.hi;
        x->erate = x->e / x->n;
        px_kpi_ci_method cm;
        snprintf(x->flag, sizeof x->flag, x->utype ? "no_different" : "reference");
        if (px_kpi_oe(x->o, x->e, conf, byar, &ci, &cm) == 0) {
            x->oe = ci.est, x->oelo = ci.lo, x->oehi = ci.hi;
            snprintf(x->oe_method, sizeof x->oe_method, "%s", px_kpi_ci_method_name(cm));
            if (x->utype) snprintf(x->flag, sizeof x->flag, "%s", px_kpi_flag(ci.lo, ci.hi));
        }
    }
    /* risk-standardized rates from the noisy system rate of the same period */
    for (size_t i = 0; i < rs->n; i++) {
        row *x = &rs->v[i];
        if (!kpi_is_rate(x->measure) || !isfinite(x->oe)) continue;
        for (size_t j = 0; j < rs->n; j++) {
            row *s = &rs->v[j];
            if (s->utype == 0 && s->measure == x->measure && strcmp(s->period, x->period) == 0) {
                x->rsr = x->oe * s->rate, x->rsrlo = x->oelo * s->rate, x->rsrhi = x->oehi * s->rate;
                break;
            }
        }
    }
}

int px_kpi_report(PGconn *c, const px_kpi_report_params *p, px_kpi_report_info *info, px_err *e)
{
    run_info ri;
    rows rs = {0};
    px_buf b = {0};
    char *js = NULL;
    int rc;
    memset(&ri, 0, sizeof ri);
    memset(info, 0, sizeof *info);
    gsl_set_error_handler_off();
    if (p->dp_epsilon < 0 || !isfinite(p->dp_epsilon))
        return px_err_set(e, PX_EINVAL, "the privacy budget epsilon must be a positive number");
    /* targets and benchmarks first: a bad file fails before any database work */
    goals g;
    for (int m = 0; m < PX_KPI__COUNT; m++) {
        g.target[m] = (goal){NAN, m == PX_KPI_VOLUME, ""};
        g.bench[m][0] = g.bench[m][1] = (goal){NAN, 0, ""};
        if (isfinite(p->target[m])) {
            g.target[m].value = p->target[m];
            snprintf(g.target[m].source, sizeof g.target[m].source, "--target");
        }
    }
    if (p->targets_path) {
        goals f;
        for (int m = 0; m < PX_KPI__COUNT; m++) f.target[m] = (goal){NAN, 0, ""};
        if ((rc = kpi_targets_load(&f, p->targets_path, e)) != 0) return rc;
        for (int m = 0; m < PX_KPI__COUNT; m++)
            if (isfinite(f.target[m].value)) g.target[m] = f.target[m];
    }
    if (p->benchmarks_dir && (rc = kpi_benchmarks_load(&g, p->benchmarks_dir, e)) != 0) return rc;
    if ((rc = resolve(c, p, &ri, e)) != 0) goto out;
    if ((rc = load_rows(c, &ri, &rs, e)) != 0) goto out;
    info->run_id = ri.run_id;
    snprintf(info->period, sizeof info->period, "%s", ri.period);
    snprintf(info->period_kind, sizeof info->period_kind, "%s", ri.kind);
    if (p->dp_epsilon > 0) {
        double conf = cJSON_GetNumberValue(cJSON_GetObjectItem(ri.method, "conf"));
        double byar = cJSON_GetNumberValue(cJSON_GetObjectItem(ri.method, "byar_min_events"));
        double minc = cJSON_GetNumberValue(cJSON_GetObjectItem(ri.method, "min_cases"));
        dp_apply(&rs, p, conf, byar, minc);
    }
    if (p->html_path) {
        if ((rc = kpi_report_html(c, &b, &rs, &ri, p, &g, info)) != 0) {
            rc = px_err_set(e, rc, "cannot render the KPI report");
            goto out;
        }
        if ((rc = px_file_write_atomic(p->html_path, b.data, b.len, 0644, e)) != 0) goto out;
    }
    /* what the period holds: facilities, and facility x risk-measure cells by flag */
    info->units = info->flagged_worse = info->flagged_better = info->suppressed = 0;
    for (size_t i = 0; i < rs.n; i++) {
        const row *x = &rs.v[i];
        if (x->utype != 1 || strcmp(x->period, ri.period) != 0) continue;
        if (x->measure == PX_KPI_VOLUME) info->units++;
        if (!kpi_is_rate(x->measure) && x->measure != PX_KPI_LOS) continue;
        info->flagged_worse += strcmp(x->flag, "worse") == 0;
        info->flagged_better += strcmp(x->flag, "better") == 0;
        info->suppressed += strcmp(x->flag, "suppressed") == 0;
    }
    if (p->json_path) {
        if (!(js = kpi_report_json(&rs, &ri, p, &g))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = px_file_write_atomic(p->json_path, js, strlen(js), 0644, e)) != 0) goto out;
    }
    if (p->csv_path) {
        b.len = 0;
        if ((rc = kpi_report_csv(&b, &rs, &ri)) != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = px_file_write_atomic(p->csv_path, b.data, b.len, 0644, e)) != 0) goto out;
    }
out:
    free(rs.v);
    px_buf_release(&b);
    free(js);
    cJSON_Delete(ri.models);
    cJSON_Delete(ri.method);
    free(ri.batches);
    return rc;
}
