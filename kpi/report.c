/* report.c: px_kpi_report, one period of a stored KPI run as a self-contained
 * HTML page (inline CSS and SVG, no script, no network), JSON and CSV. Numbers
 * come from kpi.results as stored; the page carries each one at full precision
 * in data-* attributes beside its rounded text, so tests can compare the two.
 * With dp_epsilon > 0 the counts are released through the Laplace mechanism and
 * everything shown is recomputed from the noisy counts (post-processing). */
#include "kpi/internal.h"
#include "engine/internal.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gsl/gsl_errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

px_kpi_report_params px_kpi_report_default_params(void)
{
    px_kpi_report_params p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < PX_KPI__COUNT; i++) p.target[i] = NAN;
    return p;
}

/* ---- the rows of a run ----------------------------------------------------- */

typedef struct row {
    int measure, utype;
    char unit[128], period[16], start[16], end[16];
    double n, o, e, rate, rlo, rhi, erate, oe, oelo, oehi, rsr, rsrlo, rsrhi, eb, ebw;
    double fx, f95lo, f95hi, f998lo, f998hi, phi, fvar;
    char flag[16], oe_method[16];
    int suppressed, version;
    double sr, srlo, srhi, srsr, srsrlo, srsrhi;   /* hierarchical (facilities), NAN when none */
    char adjustment[16];                          /* none, indirect, hierarchical */
} row;

typedef struct run_info {
    long long run_id;
    char kind[16], period[16], computed_at[64], computed_by[64], first[16], last[16];
    long long encounters;
    cJSON *models, *method;
    char *batches;      /* the run's source_batches as array text; owned */
} run_info;

typedef struct rows {
    row *v;
    size_t n;
} rows;

static const char *const utype_names[3] = {"system", "facility", "department"};

static double dbl(PGresult *r, int i, int j)
{
    return PQgetisnull(r, i, j) ? NAN : strtod(PQgetvalue(r, i, j), NULL);
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
        for (int j = 0; j < 22; j++) *d[j] = dbl(r, t, 6 + j);
        snprintf(x->flag, sizeof x->flag, "%s", PQgetvalue(r, t, 28));
        x->suppressed = PQgetvalue(r, t, 29)[0] == 't';
        snprintf(x->oe_method, sizeof x->oe_method, "%s", PQgetvalue(r, t, 30));
        x->version = atoi(PQgetvalue(r, t, 31));
        double *h[] = {&x->sr, &x->srlo, &x->srhi, &x->srsr, &x->srsrlo, &x->srsrhi};
        for (int j = 0; j < 6; j++) *h[j] = dbl(r, t, 32 + j);
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
#define DP_COUNTS_PER_STAY 21

static int is_rate_m(int m)
{
    return m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY;
}

static void dp_apply(rows *rs, const px_kpi_report_params *p, double conf, double byar, double min_cases)
{
    px_kpi_rng g;
    px_kpi_rng_seed(&g, p->dp_seed);
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
            if (x->utype) snprintf(x->flag, sizeof x->flag, "%s", ci.lo > 1 ? "worse" : ci.hi < 1 ? "better" : "no_different");
        }
    }
    /* risk-standardized rates from the noisy system rate of the same period */
    for (size_t i = 0; i < rs->n; i++) {
        row *x = &rs->v[i];
        if (!is_rate_m(x->measure) || !isfinite(x->oe)) continue;
        for (size_t j = 0; j < rs->n; j++) {
            row *s = &rs->v[j];
            if (s->utype == 0 && s->measure == x->measure && strcmp(s->period, x->period) == 0) {
                x->rsr = x->oe * s->rate, x->rsrlo = x->oelo * s->rate, x->rsrhi = x->oehi * s->rate;
                break;
            }
        }
    }
}

/* ---- formatting ------------------------------------------------------------------ */

static const char *const mlabel[PX_KPI__COUNT] = {"Volume (discharges)", "30-day readmission rate",
                                                  "30-day mortality rate", "Average length of stay",
                                                  "Cost per encounter"};

static void thousands(char *out, size_t len, double v)
{
    char t[64];
    snprintf(t, sizeof t, "%.0f", fabs(v));
    size_t n = strlen(t), o = 0;
    if (v < 0 && o + 1 < len) out[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        out[o++] = t[i];
        if ((n - i - 1) % 3 == 0 && i + 1 < n) out[o++] = ',';
    }
    out[o] = 0;
}

/* A value on its measure's scale, for reading: "14.2%", "4.71 days", "$18,020", "1,234". */
static void fmt_val(char *out, size_t len, int m, double v)
{
    char t[40];
    if (!isfinite(v)) {
        snprintf(out, len, "&ndash;");
        return;
    }
    switch (m) {
    case PX_KPI_READMISSION:
    case PX_KPI_MORTALITY: snprintf(out, len, "%.1f%%", v * 100); break;
    case PX_KPI_LOS: snprintf(out, len, "%.2f days", v); break;
    case PX_KPI_COST: thousands(t, sizeof t, v); snprintf(out, len, "$%s", t); break;
    default: thousands(out, len, v); break;
    }
}

static void fmt_num(char *out, size_t len, const char *f, double v)
{
    if (isfinite(v))
        snprintf(out, len, f, v);
    else
        snprintf(out, len, "&ndash;");
}

/* data-NAME='%.12g' (empty when NULL): the stored value at full precision */
static void data_attr(px_buf *b, const char *name, double v)
{
    if (isfinite(v))
        px_buf_printf(b, " data-%s='%.12g'", name, v);
    else
        px_buf_printf(b, " data-%s=''", name);
}

static const char *flag_words(const char *f)
{
    if (strcmp(f, "worse") == 0) return "worse than expected";
    if (strcmp(f, "better") == 0) return "better than expected";
    if (strcmp(f, "no_different") == 0) return "no different from expected";
    if (strcmp(f, "suppressed") == 0) return "suppressed (too few cases)";
    if (strcmp(f, "withheld") == 0) return "withheld";
    return f;
}

static int lower_is_better_m(int m)
{
    return m != PX_KPI_VOLUME;
}

/* ---- targets and national benchmarks ---------------------------------------------- */

/* A value someone set for a measure (--target, --targets FILE) or a national
 * rate from the public CMS files (--benchmarks DIR). */
typedef struct goal {
    double value;              /* on the measure's scale (proportion, days, dollars) */
    int higher_better;         /* direction: 1 when higher is better */
    char source[160];
} goal;

typedef struct goals {
    goal target[PX_KPI__COUNT];
    goal bench[PX_KPI__COUNT][2];   /* Hospital Compare, HRRP */
} goals;

static int parse_num(const char *s, double *v)
{
    char *end;
    while (*s == ' ') s++;
    if (!*s) return -1;
    double x = strtod(s, &end);
    while (*end == ' ') end++;
    if (*end || !isfinite(x)) return -1;
    *v = x;
    return 0;
}

/* One target, from its fields as text; where names the place ("targets.csv line 3"). */
static int target_set(goals *g, const char *path, const char *where, const char *measure, const char *value,
                      const char *direction, const char *source, px_err *e)
{
    px_kpi_measure m;
    double v;
    if (!measure || px_kpi_measure_parse(measure, &m) != 0)
        return px_err_set(e, PX_EINVAL, "%s, field measure: '%s' is not a measure (volume, readmission, mortality, los, cost)",
                          where, measure ? measure : "(missing)");
    if (!value || parse_num(value, &v) != 0 || v < 0)
        return px_err_set(e, PX_EINVAL, "%s, field value: '%s' is not a non-negative number", where,
                          value ? value : "(missing)");
    if ((m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY) && v > 1) {
        px_err_set(e, PX_EINVAL, "%s, field value: %s for %s is not a proportion", where, value, measure);
        px_err_hint(e, "rates are proportions: 0.15 for 15%%");
        return PX_EINVAL;
    }
    int hb = !lower_is_better_m(m);
    if (direction && *direction) {
        if (strcmp(direction, "lower") == 0 || strcmp(direction, "lower_is_better") == 0)
            hb = 0;
        else if (strcmp(direction, "higher") == 0 || strcmp(direction, "higher_is_better") == 0)
            hb = 1;
        else
            return px_err_set(e, PX_EINVAL, "%s, field direction: '%s' is not lower or higher", where, direction);
    }
    if (isfinite(g->target[m].value))
        return px_err_set(e, PX_EINVAL, "%s: a second target for %s in %s", where, measure, path);
    g->target[m].value = v;
    g->target[m].higher_better = hb;
    snprintf(g->target[m].source, sizeof g->target[m].source, "%s", source && *source ? source : path);
    return 0;
}

static int targets_json(goals *g, const char *path, const char *text, px_err *e)
{
    cJSON *d = cJSON_Parse(text);
    if (!d) {
        const char *at = cJSON_GetErrorPtr();
        int line = 1;
        for (const char *q = text; at && q < at && *q; q++) line += *q == '\n';
        return px_err_set(e, PX_EINVAL, "%s line %d: not valid JSON", path, line);
    }
    cJSON *arr = cJSON_IsArray(d) ? d : cJSON_GetObjectItem(d, "targets");
    int rc = 0;
    if (!cJSON_IsArray(arr)) {
        rc = px_err_set(e, PX_EINVAL, "%s: expected an array of targets (or {\"targets\": [...]})", path);
        px_err_hint(e, "[{\"measure\": \"readmission\", \"value\": 0.15, \"direction\": \"lower\", \"source\": \"board 2024\"}]");
        goto out;
    }
    int i = 0;
    cJSON *t;
    cJSON_ArrayForEach(t, arr)
    {
        char where[600], val[64] = "";
        snprintf(where, sizeof where, "%s target %d", path, i++ + 1);
        if (!cJSON_IsObject(t)) {
            rc = px_err_set(e, PX_EINVAL, "%s: not an object", where);
            goto out;
        }
        cJSON *f;
        cJSON_ArrayForEach(f, t)
        {
            if (strcmp(f->string, "measure") && strcmp(f->string, "value") && strcmp(f->string, "direction") &&
                strcmp(f->string, "source")) {
                rc = px_err_set(e, PX_EINVAL, "%s: unknown field '%s' (measure, value, direction, source)", where,
                                f->string);
                goto out;
            }
        }
        cJSON *v = cJSON_GetObjectItem(t, "value");
        if (cJSON_IsNumber(v))
            snprintf(val, sizeof val, "%.17g", v->valuedouble);
        else if (v) {
            rc = px_err_set(e, PX_EINVAL, "%s, field value: not a number", where);
            goto out;
        }
        cJSON *dj = cJSON_GetObjectItem(t, "direction"), *sj = cJSON_GetObjectItem(t, "source");
        if ((dj && !cJSON_IsString(dj)) || (sj && !cJSON_IsString(sj))) {
            rc = px_err_set(e, PX_EINVAL, "%s: direction and source are strings", where);
            goto out;
        }
        if ((rc = target_set(g, path, where, cJSON_GetStringValue(cJSON_GetObjectItem(t, "measure")), v ? val : NULL,
                             cJSON_GetStringValue(dj), cJSON_GetStringValue(sj), e)) != 0)
            goto out;
    }
out:
    cJSON_Delete(d);
    return rc;
}

static int targets_csv(goals *g, const char *path, int fd, px_err *e)
{
    px_csv *c = px_csv_new(fd);
    if (!c) return px_err_set(e, PX_ENOMEM, "out of memory");
    int col[4] = {-1, -1, -1, -1}, rc = 0, got, nrows = 0;
    static const char *const names[4] = {"measure", "value", "direction", "source"};
    px_csv_status st;
    while ((got = px_csv_next(c, &st)) == 1) {
        long long line = px_csv_line(c);
        char where[600];
        snprintf(where, sizeof where, "%s line %lld", path, line);
        if (st != PX_CSV_OK) {
            rc = px_err_set(e, PX_EINVAL, "%s: %s", where, st == PX_CSV_BAD_UTF8 ? "not UTF-8" : "malformed CSV quoting");
            break;
        }
        int nf = px_csv_nfields(c);
        if (col[0] < 0 && col[1] < 0) {   /* the header */
            for (int i = 0; i < nf; i++) {
                int k = 0;
                while (k < 4 && strcmp(px_csv_field(c, i), names[k]) != 0) k++;
                if (k == 4) {
                    rc = px_err_set(e, PX_EINVAL, "%s: unknown column '%s' (measure, value, direction, source)", where,
                                    px_csv_field(c, i));
                    break;
                }
                col[k] = i;
            }
            if (rc == 0 && (col[0] < 0 || col[1] < 0)) {
                rc = px_err_set(e, PX_EINVAL, "%s: the header needs the columns measure and value", where);
                px_err_hint(e, "measure,value,direction,source");
            }
            if (rc) break;
            continue;
        }
        if (nf == 1 && !*px_csv_field(c, 0)) continue;   /* a blank line */
        const char *f[4];
        for (int k = 0; k < 4; k++) f[k] = col[k] >= 0 && col[k] < nf ? px_csv_field(c, col[k]) : NULL;
        if ((rc = target_set(g, path, where, f[0], f[1], f[2], f[3], e)) != 0) break;
        nrows++;
    }
    if (rc == 0 && got < 0) rc = px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (rc == 0 && col[0] < 0) rc = px_err_set(e, PX_EINVAL, "%s: empty (expected a header measure,value,direction,source)", path);
    if (rc == 0 && nrows == 0) rc = px_err_set(e, PX_EINVAL, "%s: a header but no target", path);
    px_csv_free(c);
    return rc;
}

/* --targets FILE: JSON when the first non-blank byte is [ or {, else CSV. */
static int targets_load(goals *g, const char *path, px_err *e)
{
    unsigned char *text = NULL;
    size_t len = 0;
    int rc = px_file_read(path, 1 << 20, &text, &len, e);
    if (rc) return rc;
    const char *s = (const char *)text;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    if (*s == '[' || *s == '{') {
        rc = targets_json(g, path, (const char *)text, e);
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            rc = px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
        else {
            rc = targets_csv(g, path, fd, e);
            close(fd);
        }
    }
    free(text);
    if (rc && rc != PX_EIO && rc != PX_ENOMEM) rc = PX_EINVAL;
    return rc;
}

/* The patient-weighted national rate of a set of CMS columns: each hospital's
 * rate (percent) in column RATE weighted by its patients in column N, over the
 * conditions whose column names contain the text. */
typedef struct bench_acc {
    double sum, w;
    long long hospitals;
} bench_acc;

static int bench_file(const char *dir, const char *file, int (*row_fn)(px_csv *, int *, bench_acc *, int),
                      const char *const *cols, int ncols, bench_acc *acc, int *found, px_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
    }
    *found = 1;
    px_csv *c = px_csv_new(fd);
    if (!c) {
        close(fd);
        return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    int idx[64], rc = 0, got, header = 1;
    for (int k = 0; k < ncols && k < 64; k++) idx[k] = -1;
    px_csv_status st;
    while ((got = px_csv_next(c, &st)) == 1) {
        if (st != PX_CSV_OK) {
            rc = px_err_set(e, PX_EINVAL, "%s line %lld: %s", path, px_csv_line(c),
                            st == PX_CSV_BAD_UTF8 ? "not UTF-8" : "malformed CSV quoting");
            break;
        }
        int nf = px_csv_nfields(c);
        if (header) {
            header = 0;
            for (int k = 0; k < ncols; k++)
                for (int i = 0; i < nf; i++)
                    if (strcmp(px_csv_field(c, i), cols[k]) == 0) idx[k] = i;
            for (int k = 0; k < ncols; k++)
                if (idx[k] < 0) {
                    rc = px_err_set(e, PX_EINVAL, "%s line 1: no column '%s'", path, cols[k]);
                    px_err_hint(e, "--benchmarks expects the CMS files as published (Hospital Compare "
                                   "outcome-of-care-measures.csv, HRRP FY_*_Hospital.csv)");
                    break;
                }
            if (rc) break;
            continue;
        }
        row_fn(c, idx, acc, nf);
    }
    if (rc == 0 && got < 0) rc = px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(errno));
    px_csv_free(c);
    close(fd);
    return rc;
}

static int num_field(px_csv *c, int i, int nf, double *v)
{
    return i >= 0 && i < nf && parse_num(px_csv_field(c, i), v) == 0 ? 0 : -1;
}

/* Hospital Compare: readmission (acc[0]) and mortality (acc[1]) over AMI, HF, pneumonia. */
static int hc_row(px_csv *c, int *idx, bench_acc *acc, int nf)
{
    for (int k = 0; k < 12; k += 2) {
        double r, n;
        if (num_field(c, idx[k], nf, &r) || num_field(c, idx[k + 1], nf, &n) || r < 0 || r > 100 || n <= 0) continue;
        bench_acc *a = &acc[k < 6 ? 0 : 1];
        a->sum += r / 100 * n, a->w += n, a->hospitals++;
    }
    return 0;
}

/* HRRP: the national rate a hospital's case mix predicts (expected readmission
 * rate, percent) weighted by its discharges. */
static int hrrp_row(px_csv *c, int *idx, bench_acc *acc, int nf)
{
    double r, n;
    if (num_field(c, idx[0], nf, &r) || num_field(c, idx[1], nf, &n) || r < 0 || r > 100 || n <= 0) return 0;
    acc[0].sum += r / 100 * n, acc[0].w += n, acc[0].hospitals++;
    return 0;
}

static int benchmarks_load(goals *g, const char *dir, px_err *e)
{
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return px_err_set(e, PX_EINVAL, "--benchmarks '%s': not a folder", dir);
    static const char *const hc[12] = {
        "Hospital 30-Day Readmission Rates from Heart Attack",
        "Number of Patients - Hospital 30-Day Readmission Rates from Heart Attack",
        "Hospital 30-Day Readmission Rates from Heart Failure",
        "Number of Patients - Hospital 30-Day Readmission Rates from Heart Failure",
        "Hospital 30-Day Readmission Rates from Pneumonia",
        "Number of Patients - Hospital 30-Day Readmission Rates from Pneumonia",
        "Hospital 30-Day Death (Mortality) Rates from Heart Attack",
        "Number of Patients - Hospital 30-Day Death (Mortality) Rates from Heart Attack",
        "Hospital 30-Day Death (Mortality) Rates from Heart Failure",
        "Number of Patients - Hospital 30-Day Death (Mortality) Rates from Heart Failure",
        "Hospital 30-Day Death (Mortality) Rates from Pneumonia",
        "Number of Patients - Hospital 30-Day Death (Mortality) Rates from Pneumonia"};
    bench_acc a[2] = {{0}}, h[1] = {{0}};
    int f1 = 0, f2 = 0, rc;
    if ((rc = bench_file(dir, "outcome-of-care-measures.csv", hc_row, hc, 12, a, &f1, e)) != 0) return rc;
    /* HRRP: the newest FY_*_Hospital_Readmissions_Reduction_Program_Hospital.csv */
    char hrrp[512] = "";
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (strncmp(de->d_name, "FY_", 3) == 0 && strstr(de->d_name, "Readmissions_Reduction_Program") &&
                strcmp(de->d_name, hrrp) > 0 && strlen(de->d_name) < sizeof hrrp)
                snprintf(hrrp, sizeof hrrp, "%s", de->d_name);
        closedir(d);
    }
    static const char *const hr[2] = {"Expected Readmission Rate", "Number of Discharges"};
    if (hrrp[0] && (rc = bench_file(dir, hrrp, hrrp_row, hr, 2, h, &f2, e)) != 0) return rc;
    if (!f1 && !f2) {
        px_err_set(e, PX_EINVAL, "--benchmarks '%s': holds neither outcome-of-care-measures.csv nor an HRRP file", dir);
        px_err_hint(e, "download them from data.cms.gov (Hospital Compare / Care Compare, HRRP)");
        return PX_EINVAL;
    }
    if (f1 && !(a[0].w > 0) && !(a[1].w > 0))
        return px_err_set(e, PX_EINVAL, "%s/outcome-of-care-measures.csv: no hospital with a rate and patients", dir);
    if (a[0].w > 0) {
        g->bench[PX_KPI_READMISSION][0].value = a[0].sum / a[0].w;
        snprintf(g->bench[PX_KPI_READMISSION][0].source, sizeof g->bench[0][0].source,
                 "national, CMS Hospital Compare (heart attack, heart failure, pneumonia; %lld hospital rates, "
                 "patient-weighted)", a[0].hospitals);
    }
    if (a[1].w > 0) {
        g->bench[PX_KPI_MORTALITY][0].value = a[1].sum / a[1].w;
        snprintf(g->bench[PX_KPI_MORTALITY][0].source, sizeof g->bench[0][0].source,
                 "national, CMS Hospital Compare (heart attack, heart failure, pneumonia; %lld hospital rates, "
                 "patient-weighted)", a[1].hospitals);
    }
    if (h[0].w > 0) {
        g->bench[PX_KPI_READMISSION][1].value = h[0].sum / h[0].w;
        snprintf(g->bench[PX_KPI_READMISSION][1].source, sizeof g->bench[0][0].source,
                 "national, CMS HRRP %.7s (expected rate, six conditions, discharge-weighted)", hrrp);
    }
    return 0;
}

static const char css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;"
    "max-width:1100px;color:#1d2430;padding:0 16px;background:#fff}"
    "h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:2px solid #dde3ea;"
    "padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}p.sub{color:#5a6472;margin:0 0 16px}"
    ".cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #d5dbe3;border-radius:8px;padding:12px 14px;"
    "width:190px;background:#f7f9fb}.card .v{font-size:26px;font-weight:600;margin:4px 0}.card .l{font-size:13px;"
    "color:#4a5563}.card .s{font-size:12px;color:#4a5563}.ok{color:#1a7f37}.bad{color:#b42318}.neutral{color:#4a5563}"
    "table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}th,td{border-bottom:1px solid #e3e8ee;"
    "padding:4px 6px;text-align:right}th{background:#eef2f6}td.u,th.u{text-align:left}"
    "tr.worse td.f{color:#b42318;font-weight:600}tr.better td.f{color:#1a7f37;font-weight:600}"
    "tr.suppressed td{color:#8a94a3;font-style:italic}ul.flags li{margin:4px 0}"
    "svg{background:#fff;max-width:100%;height:auto}svg .grid{stroke:#e6eaef;stroke-width:1}"
    "svg .tick{font-size:10px;fill:#4a5563}svg .axis{font-size:11px;fill:#1d2430}"
    "svg .ref{stroke:#1d2430;stroke-width:1.2;stroke-dasharray:3 3}svg .ci{stroke:#5a6472;stroke-width:1.6}"
    "svg g.worse circle,svg circle.worse{fill:#b42318}svg g.better circle,svg circle.better{fill:#1a7f37}"
    "svg g.no_different circle,svg circle.no_different{fill:#3b6fb6}svg .lim95{fill:none;stroke:#d08c00;"
    "stroke-dasharray:5 4;stroke-width:1.4}svg .lim998{fill:none;stroke:#b42318;stroke-width:1.4}"
    "svg .band{fill:#3b6fb6;fill-opacity:.18;stroke:none}svg .line{fill:none;stroke:#3b6fb6;stroke-width:2}"
    "svg .expected{fill:none;stroke:#d08c00;stroke-width:1.6;stroke-dasharray:6 4}svg .pt{fill:#3b6fb6}"
    ".dp{border:2px solid #d08c00;background:#fff7e6;padding:8px 12px;border-radius:6px}"
    ".method p,.method li{font-size:14px;line-height:1.45}"
    /* the first screen (1280x800): title, cautions, cards, flagged units */
    "body{margin:12px auto}h1{font-size:22px}#headline h2,#flagged h2{margin:10px 0 4px;font-size:17px}"
    "#headline p.sub,#flagged p.sub{font-size:12.5px;margin:0 0 6px}.cards{gap:8px}"
    ".card{width:198px;padding:8px 10px}.card .s{font-size:11.5px}.card .v{font-size:22px;margin:2px 0}.card.missing{background:#fbfbfb;"
    "border-style:dashed}.card svg{display:block;margin-top:4px}svg .spark{fill:none;stroke:#3b6fb6;stroke-width:1.5}"
    ".caution{border:2px solid #b42318;background:#fdecea;padding:4px 10px;border-radius:6px;margin:4px 0;"
    "font-size:12.5px}.card .spk{font-size:11px;color:#4a5563;margin-top:4px}.warn{color:#b42318;font-weight:600}.flagcols{display:grid;grid-template-columns:1fr 1fr;"
    "gap:16px}.flagcols h3{margin:4px 0;font-size:14px}ol.flags{margin:0;padding-left:22px;font-size:12.5px}"
    "ol.flags li{margin:2px 0}ol.flags li.more,ol.flags li.none{list-style:none;color:#4a5563}"
    "svg path.dots{fill:none;stroke:#3b6fb6;stroke-width:7;stroke-linecap:round}"
    "@media print{.card{break-inside:avoid}svg{break-inside:avoid}h2,h3{break-after:avoid}}";

static const row *find_row(const rows *rs, int m, int utype, const char *unit, const char *period)
{
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (x->measure == m && x->utype == utype && strcmp(x->period, period) == 0 && (!unit || strcmp(x->unit, unit) == 0))
            return x;
    }
    return NULL;
}

/* The periods of the run in order (distinct labels of the system volume rows). */
static size_t periods_list(const rows *rs, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n && n < max; i++)
        if (rs->v[i].measure == PX_KPI_VOLUME && rs->v[i].utype == 0) out[n++] = rs->v[i].period;
    return n;
}

/* A unit the report names: not the department of stays that had none. */
static int named_unit(const row *x)
{
    return !(x->utype == 2 && (strcmp(x->unit, "unknown") == 0 || !x->unit[0]));
}

/* The ratio a flag comes from: the hierarchical standardized ratio where there is one, else O/E. */
static double flag_ratio(const row *x)
{
    return strcmp(x->adjustment, "hierarchical") == 0 && isfinite(x->sr) ? x->sr : x->oe;
}

/* Is this risk measure computed crude in this run (no usable model)? */
static int measure_crude(const run_info *ri, int m)
{
    static const int risk[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
    for (int k = 0; k < 3; k++)
        if (risk[k] == m) return cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(ri->models, kpi_risk_model[k]), "crude"));
    return 0;
}

/* Caution banners above the headline: a measure computed crude (its risk model is
 * missing or failed its quality gates), a champion whose holdout AUC interval
 * includes 0.5 or that had no holdout events. */
static int cautions(px_buf *b, PGconn *c, const run_info *ri)
{
    int n = 0;
    static const int risk[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
    for (int k = 0; k < 3; k++) {
        cJSON *mj = cJSON_GetObjectItem(ri->models, kpi_risk_model[k]);
        if (!mj) continue;
        if (cJSON_IsTrue(cJSON_GetObjectItem(mj, "crude"))) {
            const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "adjustment"));
            px_buf_printf(b, "<p class='caution' data-caution='crude' data-measure='%s'><b>Caution: %s is not "
                             "risk-adjusted.</b> Its rates are crude (no expected count, O/E or flag): ",
                          px_kpi_measure_name(risk[k]), mlabel[risk[k]]);
            static const char pre[] = "crude, not risk-adjusted: ";
            if (why && strncmp(why, pre, sizeof pre - 1) == 0) why += sizeof pre - 1;
            kpi_html_esc(b, why && *why ? why : "its risk model is missing or failed its quality gates");
            px_buf_adds(b, ". Differences between units may reflect their case mix.</p>");
            n++;
            continue;
        }
        if (risk[k] == PX_KPI_LOS) continue;   /* a regression: no AUC */
        char ver[32];
        snprintf(ver, sizeof ver, "%d", (int)cJSON_GetNumberValue(cJSON_GetObjectItem(mj, "version")));
        px_reg_version_row vr;
        if (px_reg_version_info(c, kpi_risk_model[k], atoi(ver), &vr, NULL) == 0) {
            double auc = vr.auc, lo = vr.auc_lo, hi = vr.auc_hi, ev = vr.events;
            const char *why = NULL;
            char text[256];
            if (isfinite(ev) && ev == 0)
                why = "its holdout had no events, so its discrimination is unknown";
            else if (!isfinite(auc) || !isfinite(lo) || !isfinite(hi))
                why = "its holdout AUC has no interval";
            else if (lo <= 0.5 && hi >= 0.5) {
                snprintf(text, sizeof text, "its holdout AUC %.3f (95%% CI %.3f &ndash; %.3f) includes 0.5: it may "
                                            "not rank patients better than chance", auc, lo, hi);
                why = text;
            }
            if (why) {
                px_buf_printf(b, "<p class='caution' data-caution='auc' data-measure='%s'><b>Caution: the risk model "
                                 "of %s (version %s) is weak.</b> %s%s; expected counts and flags of this measure are "
                                 "uncertain.</p>",
                              px_kpi_measure_name(risk[k]), mlabel[risk[k]], ver, why, "");
                n++;
            }
        }
        px_reg_version_row_free(&vr);
    }
    return n;
}

/* The system's values of a measure over the periods of the report's kind (complete
 * periods and the report's own), for the sparkline; returns how many, *cur the
 * report's period. */
static size_t spark_values(const rows *rs, const run_info *ri, int m, double *y, size_t max, size_t *cur)
{
    size_t n = 0;
    *cur = (size_t)-1;
    for (size_t i = 0; i < rs->n && n < max; i++) {
        const row *v = &rs->v[i];
        if (v->measure != PX_KPI_VOLUME || v->utype != 0) continue;
        if (strcmp(v->period, ri->period) != 0 && strcmp(v->end, ri->last) > 0) continue;
        const row *x = find_row(rs, m, 0, NULL, v->period);
        if (strcmp(v->period, ri->period) == 0) *cur = n;
        y[n++] = !x ? NAN : m == PX_KPI_VOLUME ? x->n : x->rate;
    }
    return n;
}

static void headline(px_buf *b, const rows *rs, const run_info *ri, const px_kpi_report_params *p, const goals *g,
                     const char *prev)
{
    px_buf_adds(b, "<section id='headline'><h2>Headline KPIs</h2><p class='sub'>Whole system, period ");
    kpi_html_esc(b, ri->period);
    px_buf_adds(b, ": each value against what is <i>expected for the case mix</i> (the sum of the risk model's "
                   "predictions), against a <i>target</i> only where one was set");
    int anyb = 0;
    for (int m = 0; m < PX_KPI__COUNT; m++) anyb |= isfinite(g->bench[m][0].value) || isfinite(g->bench[m][1].value);
    if (anyb) px_buf_adds(b, ", and against the national rate (CMS)");
    px_buf_adds(b, ". Intervals are 95%.</p><div class='cards'>");
    for (int m = 0; m < PX_KPI__COUNT; m++) {
        const row *x = find_row(rs, m, 0, NULL, ri->period);
        if (x && strcmp(x->flag, "withheld") == 0) {
            px_buf_printf(b, "<div class='card missing' data-measure='%s' data-value='' data-withheld='1'>"
                             "<div class='l'>%s</div><div class='v'>&ndash;</div><div class='s'>withheld in the "
                             "private release (a sum without a small sensitivity)</div></div>",
                          px_kpi_measure_name(m), mlabel[m]);
            continue;
        }
        if (!x || (m != PX_KPI_VOLUME && !isfinite(x->rate) && !(x->n > 0))) {
            /* the period holds no value of this measure: say so, do not drop the card */
            px_buf_printf(b, "<div class='card missing' data-measure='%s' data-value='' data-missing='1'>"
                             "<div class='l'>%s</div><div class='v'>&ndash;</div><div class='s'>no data for "
                             "this measure in period ",
                          px_kpi_measure_name(m), mlabel[m]);
            kpi_html_esc(b, ri->period);
            px_buf_adds(b, m == PX_KPI_COST ? " (the extract records no costs)</div></div>" : "</div></div>");
            continue;
        }
        double v = m == PX_KPI_VOLUME ? x->n : x->rate;
        const goal *t = &g->target[m];
        char vs[64], lo[64], hi[64], ts[64];
        fmt_val(vs, sizeof vs, m, v);
        px_buf_printf(b, "<div class='card' data-measure='%s'", px_kpi_measure_name(m));
        data_attr(b, "value", v);
        data_attr(b, "lo", x->rlo);
        data_attr(b, "hi", x->rhi);
        data_attr(b, "expected", x->erate);
        data_attr(b, "target", t->value);
        data_attr(b, "national", isfinite(g->bench[m][0].value) ? g->bench[m][0].value : g->bench[m][1].value);
        px_buf_printf(b, "><div class='l'>%s</div><div class='v'>%s</div>", mlabel[m], vs);
        if (isfinite(x->rlo)) {
            fmt_val(lo, sizeof lo, m, x->rlo);
            fmt_val(hi, sizeof hi, m, x->rhi);
            px_buf_printf(b, "<div class='s'>95%% CI %s &ndash; %s</div>", lo, hi);
        }
        double l = isfinite(x->rlo) ? x->rlo : v, h = isfinite(x->rhi) ? x->rhi : v;
        if (isfinite(x->erate) && m != PX_KPI_VOLUME) {
            fmt_val(ts, sizeof ts, m, x->erate);
            const char *cls = "neutral", *word = "as expected within uncertainty";
            if (h < x->erate) cls = "ok", word = "below expected";
            if (l > x->erate) cls = "bad", word = "above expected";
            px_buf_printf(b, "<div class='s'>expected for the case mix %s: <span class='%s'>%s</span></div>", ts, cls,
                          word);
            if (isfinite(x->oe)) px_buf_printf(b, "<div class='s'>O/E %.2f (%.2f &ndash; %.2f)</div>", x->oe, x->oelo, x->oehi);
        } else if (measure_crude(ri, m)) {
            px_buf_adds(b, "<div class='s'><span class='warn'>crude: not risk-adjusted</span></div>");
        }
        if (isfinite(t->value)) {
            fmt_val(ts, sizeof ts, m, t->value);
            const char *cls = "neutral", *word = "on target within uncertainty";
            if (t->higher_better ? l > t->value : h < t->value) cls = "ok", word = "better than target";
            if (t->higher_better ? h < t->value : l > t->value) cls = "bad", word = "worse than target";
            px_buf_printf(b, "<div class='s tgt'>target %s (", ts);
            kpi_html_esc(b, t->source);
            px_buf_printf(b, "): <span class='%s'>%s</span></div>", cls, word);
        }
        for (int k = 0; k < 2; k++) {
            const goal *nb = &g->bench[m][k];
            if (!isfinite(nb->value)) continue;
            fmt_val(ts, sizeof ts, m, nb->value);
            const char *cls = "neutral", *word = "about the same";
            if (h < nb->value) cls = "ok", word = "lower";
            if (l > nb->value) cls = "bad", word = "higher";
            px_buf_printf(b, "<div class='s nat' title='");
            kpi_html_esc(b, nb->source);
            px_buf_printf(b, "'>national %s (%s): <span class='%s'>%s</span></div>", ts, k ? "HRRP" : "Hospital Compare",
                          cls, word);
        }
        const row *pr = prev ? find_row(rs, m, 0, NULL, prev) : NULL;
        if (pr) {
            double pv = m == PX_KPI_VOLUME ? pr->n : pr->rate;
            char ps[64];
            fmt_val(ps, sizeof ps, m, pv);
            px_buf_adds(b, "<div class='s'>previous period (");
            kpi_html_esc(b, prev);
            px_buf_printf(b, "): %s</div>", ps);
        }
        double y[512];
        size_t cur, ny = spark_values(rs, ri, m, y, 512, &cur);
        if (ny >= 2) {
            /* its axis: the first and last period it spans */
            const char *per[512];
            size_t np = 0;
            for (size_t i = 0; i < rs->n && np < 512; i++) {
                const row *w = &rs->v[i];
                if (w->measure == PX_KPI_VOLUME && w->utype == 0 &&
                    (strcmp(w->period, ri->period) == 0 || strcmp(w->end, ri->last) <= 0))
                    per[np++] = w->period;
            }
            px_buf_adds(b, "<div class='spk'>trend ");
            kpi_html_esc(b, per[0]);
            px_buf_adds(b, " &ndash; ");
            kpi_html_esc(b, per[np - 1]);
            px_buf_adds(b, "</div>");
            char aria[160];
            snprintf(aria, sizeof aria, "sparkline of %s by %s", mlabel[m], ri->kind);
            kpi_svg_spark(b, aria, y, ny, cur);
        }
        px_buf_adds(b, "</div>");
    }
    (void)p;
    px_buf_adds(b, "</div></section>");
}

static int cmp_flag_rank(const void *a, const void *b)
{
    const row *x = *(const row *const *)a, *y = *(const row *const *)b;
    int wx = strcmp(x->flag, "worse") == 0, wy = strcmp(y->flag, "worse") == 0;
    if (wx != wy) return wy - wx;   /* worse first */
    double u = flag_ratio(x), v = flag_ratio(y);
    if (u != v) return (wx ? u < v : u > v) ? 1 : -1;   /* worse: highest ratio first; better: lowest */
    if (x->n != y->n) return x->n < y->n ? 1 : -1;
    return strcmp(x->unit, y->unit);
}

#define FLAG_SHOWN 5   /* flagged units named on the first screen, each way */

static void flagged(px_buf *b, const rows *rs, const run_info *ri, int *worse, int *better)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        n += x->utype && strcmp(x->period, ri->period) == 0 && (!strcmp(x->flag, "worse") || !strcmp(x->flag, "better"));
    }
    const row **v = calloc(n ? n : 1, sizeof *v);
    if (!v) return;
    n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (x->utype && strcmp(x->period, ri->period) == 0 && named_unit(x) &&
            (!strcmp(x->flag, "worse") || !strcmp(x->flag, "better")) && x->measure != PX_KPI_VOLUME)
            v[n++] = x;
    }
    qsort(v, n, sizeof *v, cmp_flag_rank);
    int nw = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        int w = strcmp(v[i]->flag, "worse") == 0;
        nw += w, nb += !w;
        if (v[i]->utype == 1) *(w ? worse : better) += 1;
    }
    px_buf_printf(b, "<section id='flagged' data-worse='%d' data-better='%d'><h2>Units flagged worse, then better, "
                     "than expected for their case mix</h2><p class='sub'>Ranked by how far their ratio "
                     "(observed / expected, or CMS's hierarchical standardized ratio for facilities) lies from 1; "
                     "flagged when its 95%% interval excludes 1. All of them are in the <a href='#league'>league "
                     "tables</a>.</p><div class='flagcols'>",
                  nw, nb);
    for (int pass = 0; pass < 2; pass++) {
        const char *want = pass ? "better" : "worse";
        int total = pass ? nb : nw, shown = 0;
        px_buf_printf(b, "<div><h3>%s than expected (%d)</h3><ol class='flags %s'>", pass ? "Better" : "Worse", total,
                      want);
        for (size_t i = 0; i < n && shown < FLAG_SHOWN; i++) {
            const row *x = v[i];
            if (strcmp(x->flag, want) != 0) continue;
            shown++;
            char r1[64], r2[64];
            fmt_val(r1, sizeof r1, x->measure, x->rate);
            fmt_val(r2, sizeof r2, x->measure, x->erate);
            int hier = strcmp(x->adjustment, "hierarchical") == 0 && isfinite(x->sr);
            px_buf_printf(b, "<li class='%s' data-measure='%s' data-unit-type='%s' data-unit='", x->flag,
                          px_kpi_measure_name(x->measure), utype_names[x->utype]);
            kpi_html_esc(b, x->unit);
            px_buf_adds(b, "'");
            data_attr(b, "oe", x->oe);
            data_attr(b, "ratio", flag_ratio(x));
            px_buf_printf(b, "><b>%s ", x->utype == 1 ? "Facility" : "Department");
            kpi_html_esc(b, x->unit);
            px_buf_printf(b, "</b>, %s: %s vs %s expected for its case mix (%s %.2f, %.2f &ndash; %.2f; %.0f cases)</li>",
                          mlabel[x->measure], r1, r2, hier ? "SR" : "O/E", flag_ratio(x), hier ? x->srlo : x->oelo,
                          hier ? x->srhi : x->oehi, x->n);
        }
        if (total > shown) px_buf_printf(b, "<li class='more'>and %d more in the league tables</li>", total - shown);
        if (!total) px_buf_printf(b, "<li class='none'>No unit is %s than expected beyond chance.</li>", want);
        px_buf_adds(b, "</ol></div>");
    }
    px_buf_adds(b, "</div></section><div id='first-screen-end'></div>");
    free(v);
}

/* A league table lists every unit with enough cases up to this many, else the
 * flagged ones (a crude measure, without flags: its largest units). */
#define LEAGUE_ALL_MAX 100
#define LEAGUE_FLAG_LISTED 100
#define LEAGUE_CRUDE_LISTED 50

/* How strongly a unit claims a row when not all can be listed: flagged units by
 * how far their ratio lies from 1; for a crude measure, its cases; else -1 (not listed). */
static double league_score(const row *x, int crude)
{
    if (crude) return x->n;
    if (strcmp(x->flag, "worse") != 0 && strcmp(x->flag, "better") != 0) return -1;
    double r = strcmp(x->adjustment, "hierarchical") == 0 && isfinite(x->sr) ? x->sr : x->oe;
    return isfinite(r) && r > 0 ? fabs(log(r)) : 0;
}

static int cmp_dbl_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp_oe_desc(const void *a, const void *b)
{
    const row *x = *(const row *const *)a, *y = *(const row *const *)b;
    if (x->suppressed != y->suppressed) return x->suppressed - y->suppressed;
    double u = isfinite(x->oe) ? x->oe : -1, v = isfinite(y->oe) ? y->oe : -1;
    if (u != v) return u < v ? 1 : -1;
    return strcmp(x->unit, y->unit);
}

static double lim_oe(double x, double conf, int upper, const void *arg)
{
    double lo, hi, phi = *(const double *)arg;
    if (px_kpi_funnel_oe(x, conf, phi, &lo, &hi) != 0) return NAN;
    return upper ? hi : lo;
}

static double lim_normal(double x, double conf, int upper, const void *arg)
{
    const double *a = arg;   /* phi, per-stay variance */
    double lo, hi;
    if (px_kpi_funnel_normal(x, 1, a[1], conf, a[0], &lo, &hi) != 0) return NAN;
    return upper ? hi : lo;
}

/* League table, forest plot and funnel plot of one risk measure, for one unit type. */
static int league(px_buf *b, const rows *rs, const run_info *ri, int m, int utype, int *units, int *suppressed,
                  int dp)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++)
        n += rs->v[i].measure == m && rs->v[i].utype == utype && strcmp(rs->v[i].period, ri->period) == 0;
    const char *what = utype == 1 ? "facility" : "department";
    if (n == 0) {
        /* the period holds no unit of this measure: say so rather than drop the table */
        px_buf_printf(b, "<h3 id='league-%s-%s'>%s by %s</h3><p class='sub missing' data-measure='%s'>No %s data for "
                         "this measure in period ",
                      px_kpi_measure_name(m), what, mlabel[m], what, px_kpi_measure_name(m), what);
        kpi_html_esc(b, ri->period);
        px_buf_adds(b, ".</p>");
        return 0;
    }
    const row **v = calloc(n, sizeof *v);
    kpi_point *pt = calloc(n, sizeof *pt);
    if (!v || !pt) {
        free(v), free(pt);
        return PX_ENOMEM;
    }
    /* the units reported: named ones (not the department of stays without one);
     * suppressed ones are counted, not listed; the table lists every unit with
     * enough cases while they are few, else the flagged ones (the full table is in
     * the CSV and JSON) */
    n = 0;
    int nosup = 0, sup = 0, unnamed = 0, nflag = 0;
    double unnamed_n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (x->measure != m || x->utype != utype || strcmp(x->period, ri->period) != 0) continue;
        if (!named_unit(x)) {
            unnamed++, unnamed_n += isfinite(x->n) ? x->n : 0;
            continue;
        }
        if (utype == 1) (*units)++;
        if (x->suppressed) {
            sup++;
            continue;
        }
        v[n++] = x;
        nosup++;
        nflag += !strcmp(x->flag, "worse") || !strcmp(x->flag, "better");
    }
    if (utype == 1) *suppressed += sup;
    qsort(v, n, sizeof *v, cmp_oe_desc);
    int all_rows = nosup <= LEAGUE_ALL_MAX;
    /* beyond LEAGUE_ALL_MAX units: the flagged ones, the LEAGUE_FLAG_LISTED farthest
     * from 1 at most; a crude measure has no flags, so its LEAGUE_CRUDE_LISTED largest */
    int crude = measure_crude(ri, m);
    double cut = -INFINITY;
    if (!all_rows) {
        double *sc = malloc(n * sizeof *sc);
        if (!sc) {
            free(v), free(pt);
            return PX_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) sc[i] = league_score(v[i], crude);
        qsort(sc, n, sizeof *sc, cmp_dbl_desc);
        size_t k = crude ? LEAGUE_CRUDE_LISTED : LEAGUE_FLAG_LISTED;
        cut = fmax(0, sc[(k < n ? k : n) - 1]);
        free(sc);
    }
#define LISTED(x) (all_rows || league_score((x), crude) >= cut)
    size_t nrow = 0;
    for (size_t i = 0; i < n; i++) nrow += LISTED(v[i]);
    px_buf_printf(b, "<h3 id='league-%s-%s'>%s by %s</h3>", px_kpi_measure_name(m), what, mlabel[m], what);
    px_buf_printf(b, "<p class='sub counts' data-measure='%s' data-unit-type='%s' data-units='%d' data-listed='%zu' "
                     "data-suppressed='%d' data-flagged='%d'>%d %s with enough cases",
                  px_kpi_measure_name(m), what, nosup + sup, nrow, sup, nflag, nosup,
                  nosup == 1 ? what : utype == 1 ? "facilities" : "departments");
    if (!all_rows && crude)
        px_buf_printf(b, "; not risk-adjusted, so none is flagged: listed here are the %zu with the most cases, the "
                         "other %d are in the CSV and JSON (--csv, --json)", nrow, nosup - (int)nrow);
    else if (!all_rows && (int)nrow == nflag)
        px_buf_printf(b, "; listed here are the %zu flagged worse or better than expected, the %d no different "
                         "from expected are in the CSV and JSON (--csv, --json)", nrow, nosup - (int)nrow);
    else if (!all_rows)
        px_buf_printf(b, "; listed here are the %zu flagged worse or better that lie farthest from expected (of %d "
                         "flagged), the other %d are in the CSV and JSON (--csv, --json)", nrow, nflag,
                      nosup - (int)nrow);
    if (sup)
        px_buf_printf(b, "; %d with fewer than %.0f cases are suppressed (counted, not listed)", sup,
                      cJSON_GetNumberValue(cJSON_GetObjectItem(ri->method, "min_cases")));
    if (unnamed) {
        char un[32];
        thousands(un, sizeof un, unnamed_n);
        px_buf_printf(b, "; %s stays without a recorded department are not reported as a department", un);
    }
    px_buf_adds(b, ".</p>");
    size_t np = 0;
    for (size_t i = 0; i < n; i++)
        if (LISTED(v[i]) && isfinite(v[i]->oe))
            pt[np++] = (kpi_point){v[i]->unit, v[i]->fx, v[i]->oe, v[i]->oelo, v[i]->oehi, v[i]->flag};
    if (np) {
        char aria[160];
        snprintf(aria, sizeof aria, "league table of %s by %s: O/E with 95%% intervals", mlabel[m], what);
        kpi_svg_forest(b, aria, pt, np, 1);
    }
    px_buf_printf(b, "<table class='league' data-measure='%s' data-unit-type='%s'><thead><tr><th class='u'>%s</th>"
                     "<th>cases</th><th>observed</th><th>expected</th><th>crude</th><th>expected rate</th>"
                     "<th>O/E (95%% CI)</th><th>risk-standardized (95%% CI)</th>"
                     "<th>standardized ratio, hierarchical (95%% CI)</th><th>smoothed (EB)</th>"
                     "<th class='u'>assessment</th></tr></thead><tbody>",
                  px_kpi_measure_name(m), what, what);
    for (size_t i = 0; i < n; i++) {
        const row *x = v[i];
        if (!LISTED(x)) continue;
        px_buf_printf(b, "<tr class='%s' data-unit='", x->flag);
        kpi_html_esc(b, x->unit);
        px_buf_adds(b, "'");
        data_attr(b, "n", x->n);
        data_attr(b, "observed", x->o);
        data_attr(b, "expected", x->e);
        data_attr(b, "rate", x->rate);
        data_attr(b, "oe", x->oe);
        data_attr(b, "oe-lo", x->oelo);
        data_attr(b, "oe-hi", x->oehi);
        data_attr(b, "rsr", x->rsr);
        data_attr(b, "eb", x->eb);
        data_attr(b, "sr", x->sr);
        data_attr(b, "sr-lo", x->srlo);
        data_attr(b, "sr-hi", x->srhi);
        px_buf_printf(b, " data-adjustment='%s' data-flag='%s'><td class='u'>", x->adjustment, x->flag);
        kpi_html_esc(b, x->unit);
        char cases[32];
        thousands(cases, sizeof cases, x->n);
        px_buf_printf(b, "</td><td class='n'>%s</td>", cases);
        if (x->suppressed) {
            px_buf_printf(b, "<td colspan='8'>%s</td><td class='u f'>%s</td></tr>",
                          dp && strcmp(x->flag, "withheld") == 0 ? "not released in the private release"
                                                                  : "suppressed: fewer than 25 cases",
                          flag_words(x->flag));
            continue;
        }
        char o[64], e[64], r[64], er[64], oe[96], rsr[256], eb[64], a[64], z[64];
        fmt_num(o, sizeof o, m == PX_KPI_LOS ? "%.0f" : "%.0f", x->o);
        fmt_num(e, sizeof e, "%.1f", x->e);
        fmt_val(r, sizeof r, m, x->rate);
        fmt_val(er, sizeof er, m, x->erate);
        if (isfinite(x->oe))
            snprintf(oe, sizeof oe, "<span class='oe'>%.2f</span> (%.2f &ndash; %.2f)", x->oe, x->oelo, x->oehi);
        else
            snprintf(oe, sizeof oe, "&ndash;");
        fmt_val(a, sizeof a, m, x->rsrlo);
        fmt_val(z, sizeof z, m, x->rsrhi);
        char rv[64];
        fmt_val(rv, sizeof rv, m, x->rsr);
        snprintf(rsr, sizeof rsr, "%s (%s &ndash; %s)", rv, a, z);
        fmt_val(eb, sizeof eb, m, x->eb);
        char sr[128];
        if (isfinite(x->sr))
            snprintf(sr, sizeof sr, "%.2f (%.2f &ndash; %.2f)", x->sr, x->srlo, x->srhi);
        else
            snprintf(sr, sizeof sr, "&ndash;");
        px_buf_printf(b, "<td>%s</td><td>%s</td><td class='rate'>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                         "<td>%s</td><td class='u f'>%s%s</td></tr>",
                      o, e, r, er, oe, rsr, sr, eb, flag_words(x->flag),
                      strcmp(x->adjustment, "hierarchical") == 0 ? " (hierarchical)" : "");
    }
    px_buf_adds(b, "</tbody></table>");
    /* the funnel shows every facility with enough cases, not only those listed */
    np = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]->oe)) pt[np++] = (kpi_point){v[i]->unit, v[i]->fx, v[i]->oe, v[i]->oelo, v[i]->oehi, v[i]->flag};
    if (utype == 1 && np && !dp) {
        /* the funnel of this measure: limits from the group's phi (and LOS variance) */
        double phi = isfinite(v[0]->phi) ? v[0]->phi : 1, arg[2] = {phi, NAN};
        for (size_t i = 0; i < n; i++)
            if (isfinite(v[i]->fvar)) arg[1] = v[i]->fvar;
        int rate = is_rate_m(m);
        px_buf_printf(b, "<h3 id='funnel-%s'>Funnel plot: %s by facility</h3><p class='sub'>Each dot is a facility; "
                         "points outside the dashed (95%%) or solid (99.8%%) control limits differ from expected "
                         "by more than chance at that %s (Spiegelhalter 2005)%s.</p>",
                      px_kpi_measure_name(m), mlabel[m], rate ? "number of expected events" : "number of stays",
                      phi > 1 ? "; the limits are widened for over-dispersion" : "");
        char aria[160];
        snprintf(aria, sizeof aria, "funnel plot of %s: O/E against %s", mlabel[m], rate ? "expected events" : "stays");
        if (rate)
            kpi_svg_funnel(b, aria, pt, np, lim_oe, &phi, "expected events (precision)");
        else if (isfinite(arg[1]))
            kpi_svg_funnel(b, aria, pt, np, lim_normal, arg, "stays (precision)");
    }
#undef LISTED
    free(v);
    free(pt);
    return 0;
}

static int trends(px_buf *b, const rows *rs, const run_info *ri)
{
    const char *all[4096], *per[4096];
    size_t na = periods_list(rs, all, 4096), n = 0;
    /* periods the data covers completely (a period that ends after the last
     * discharge holds only a few stays), and the report's own */
    for (size_t i = 0; i < na; i++) {
        const row *v = find_row(rs, PX_KPI_VOLUME, 0, NULL, all[i]);
        if (strcmp(all[i], ri->period) == 0 || !v || strcmp(v->end, ri->last) <= 0) per[n++] = all[i];
    }
    if (n < 2) return 0;
    kpi_point *pt = calloc(n, sizeof *pt);
    double *ex = calloc(n, sizeof *ex);
    if (!pt || !ex) {
        free(pt), free(ex);
        return PX_ENOMEM;
    }
    px_buf_printf(b, "<h2 id='trends'>Trends by %s</h2><p class='sub'>Whole system. The band is the 95%% interval "
                     "of the crude value; the dashed line is what the case mix predicts (expected).</p>",
                  ri->kind);
    for (int m = 0; m < PX_KPI__COUNT; m++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const row *x = find_row(rs, m, 0, NULL, per[i]);
            double y = x ? (m == PX_KPI_VOLUME ? x->n : x->rate) : NAN;
            pt[k] = (kpi_point){per[i], (double)i, y, x ? x->rlo : NAN, x ? x->rhi : NAN, ""};
            ex[k] = x && isfinite(x->erate) ? x->erate : NAN;
            k++;
        }
        int has_ex = 0;
        for (size_t i = 0; i < k; i++) has_ex |= isfinite(ex[i]);
        px_buf_printf(b, "<h3>%s</h3>", mlabel[m]);
        char aria[128];
        snprintf(aria, sizeof aria, "trend of %s by %s", mlabel[m], ri->kind);
        kpi_svg_trend(b, aria, pt, k, has_ex ? ex : NULL, is_rate_m(m), mlabel[m]);
    }
    free(pt);
    free(ex);
    return 0;
}

static void method_section(px_buf *b, PGconn *c, const run_info *ri, const px_kpi_report_params *p)
{
    cJSON *mt = ri->method;
    double conf = cJSON_GetNumberValue(cJSON_GetObjectItem(mt, "conf"));
    double minc = cJSON_GetNumberValue(cJSON_GetObjectItem(mt, "min_cases"));
    double byar = cJSON_GetNumberValue(cJSON_GetObjectItem(mt, "byar_min_events"));
    int od = cJSON_IsTrue(cJSON_GetObjectItem(mt, "overdispersion"));
    px_buf_adds(b, "<h2 id='methods'>Methods and data vintage</h2><div class='method'>");
    px_buf_printf(
        b,
        "<p><b>What is measured.</b> Each stay counts in the period of its discharge date, at its facility, its "
        "department and in the whole system. Readmission: an unplanned or planned return within 30 days of "
        "discharge, among stays discharged alive with 30 days of follow-up. Mortality: death within 30 days of "
        "admission. Length of stay: days from admission to discharge among stays of patients alive at 30 days. "
        "Cost: the recorded total cost of every stay.</p>"
        "<p><b>Risk adjustment.</b> Each stay's risk (or expected length of stay) comes from the registered risk "
        "model named below; a unit's <i>expected</i> count is the sum of its stays' predicted risks (indirect "
        "standardization). %s <i>O/E</i> above 1 means more events than the case mix predicts. For rates the O/E "
        "interval is the exact Poisson (Garwood) interval of the observed count divided by the expected count, "
        "with Byar's approximation from %.0f events on (it then agrees with the exact limits to 0.01%%). For "
        "length of stay it is a robust (sandwich) interval on the log scale. The <i>risk-standardized</i> rate is "
        "O/E times the system's crude rate. Crude rates carry Wilson score intervals; means carry Student t "
        "intervals. All intervals are %.0f%%.</p>"
        "<p><b>Hierarchical standardized ratio (facilities).</b> Where the risk model's version stores a "
        "hierarchical model (fitted when the model was trained: a random-intercept model with facility intercepts "
        "~ N(mu, tau<sup>2</sup>), by the Laplace approximation, as CMS Hospital Compare and lme4::glmer do), each "
        "facility's intercept is estimated from its own stays with the stored coefficients fixed (empirical "
        "Bayes: small facilities are pulled towards mu), and its <i>standardized ratio</i> is predicted (at the "
        "facility's intercept) / expected (at mu) over its stays; times the system's crude rate it is the CMS "
        "risk-standardized rate. Its interval comes from the normal posterior of the facility's intercept. The "
        "column <i>adjustment</i> of each row says which method it uses: <i>hierarchical</i> (facilities with a "
        "stored model), <i>indirect</i> (O/E with the pooled model: the system headline, departments, and "
        "facilities of a model without one). The system headline always uses indirect standardization: on the "
        "rows the model was fitted on, the system's expected equals its observed up to calibration, so the "
        "headline cannot be inverted by the choice of reference. <b>Every interval treats the models' "
        "coefficients as known</b>: their estimation uncertainty is not propagated (the bootstrap intervals "
        "stored with the hierarchical model, hierarchical.json, include it for the training data).</p>"
        "<p><b>Flags.</b> A facility with a hierarchical ratio is <i>worse</i> (or <i>better</i>) than expected "
        "when that ratio's interval lies entirely above (below) 1; other units when their O/E interval does; else "
        "<i>no different</i>. With many units, about 1 in 20 is flagged by "
        "chance alone at 95%%. Cells with fewer than %.0f cases are suppressed and shown as such, following the "
        "CMS Hospital Compare convention.</p>"
        "<p><b>Smoothed rates.</b> In the manner of the AHRQ Quality Indicators, each unit's risk-standardized "
        "rate is shrunk towards the system rate by its reliability weight: signal variance / (signal + noise "
        "variance), the signal (between-unit) variance estimated from the units by the DerSimonian-Laird method "
        "of moments. Small units move most.</p>"
        "<p><b>Funnel plots.</b> Control limits at 95%% and 99.8%% for each precision, from the exact Poisson "
        "distribution with Spiegelhalter's (2005) interpolation (normal limits for length of stay). "
        "Over-dispersion adjustment: %s.</p>",
        strncmp(cJSON_GetStringValue(cJSON_GetObjectItem(mt, "reference")) ? cJSON_GetStringValue(cJSON_GetObjectItem(mt, "reference")) : "", "pooled", 6) == 0
            ? "The predictions are used exactly as the model gives them."
            : "This run used the explicit <i>average facility</i> reference: before summing, each model's "
              "predictions were shifted by one constant (on the log-odds scale for rates, the log scale for days), "
              "the DerSimonian-Laird mean of the facilities' own intercepts given the model (listed with the "
              "models below). It is unstable when most facilities have few stays; the default is the pooled "
              "model's predictions as they are.",
        byar, conf * 100, minc,
        od ? "on (limits widened by the square root of the Winsorized mean squared z-score when it exceeds 1)"
           : "off");
    px_buf_adds(b, "<p><b>Risk models.</b></p><ul>");
    for (int k = 0; k < 3; k++) {
        cJSON *mj = cJSON_GetObjectItem(ri->models, kpi_risk_model[k]);
        if (!mj) continue;
        if (cJSON_IsTrue(cJSON_GetObjectItem(mj, "crude"))) {
            /* no usable risk model (missing or failed its quality gates): say so, and why */
            const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "adjustment"));
            px_buf_printf(b, "<li data-model='%s' data-version='0' data-crude='1'>%s: <b>not risk-adjusted</b> ",
                          kpi_risk_model[k], kpi_risk_model[k]);
            px_buf_adds(b, "(crude rates only; no expected count, O/E or flag): ");
            kpi_html_esc(b, why ? why : "");
            px_buf_adds(b, "</li>");
            continue;
        }
        const char *algo = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "algo"));
        const char *tab = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "feature_table"));
        const char *fp = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "fingerprint"));
        const char *at = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "created_at"));
        cJSON *auc = cJSON_GetObjectItem(mj, "auc");
        px_buf_printf(b, "<li data-model='%s' data-version='%d'>%s: version %d", kpi_risk_model[k],
                      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(mj, "version")), kpi_risk_model[k],
                      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(mj, "version")));
        if (algo) px_buf_printf(b, " (%s)", algo);
        if (tab) {
            px_buf_adds(b, ", scored on ");
            kpi_html_esc(b, tab);
        }
        if (at) {
            px_buf_adds(b, ", registered ");
            kpi_html_esc(b, at);
        }
        if (cJSON_IsNumber(auc)) px_buf_printf(b, ", holdout AUC %.3f", auc->valuedouble);
        cJSON *sh = cJSON_GetObjectItem(mj, "reference_shift");
        if (cJSON_IsNumber(sh) && sh->valuedouble != 0)
            px_buf_printf(b, ", reference shift %+.4f (%s scale)", sh->valuedouble, k < 2 ? "log-odds" : "log");
        cJSON *hj = cJSON_GetObjectItem(mj, "hierarchical");
        const char *hnote = cJSON_GetStringValue(cJSON_GetObjectItem(hj, "note"));
        if (hnote) {
            px_buf_adds(b, "; ");
            kpi_html_esc(b, hnote);
        }
        if (fp) {
            px_buf_adds(b, ", training data fingerprint ");
            char s[17];
            snprintf(s, sizeof s, "%.16s", fp);
            kpi_html_esc(b, s);
        }
        px_buf_adds(b, "</li>");
    }
    px_buf_adds(b, "</ul><p><b>Data.</b> ");
    char enc[32];
    thousands(enc, sizeof enc, (double)ri->encounters);
    px_buf_printf(b, "%s stays discharged from ", enc);
    kpi_html_esc(b, ri->first);
    px_buf_adds(b, " to ");
    kpi_html_esc(b, ri->last);
    px_buf_adds(b, ", from these loads of the warehouse:</p><ul>");
    px_etl_batch *bt = NULL;
    size_t nbt = 0;
    if (px_etl_batches_by_id(c, ri->batches, &bt, &nbt, NULL) == 0)
        for (size_t i = 0; i < nbt; i++) {
            char rows_s[32];
            thousands(rows_s, sizeof rows_s, (double)bt[i].rows_loaded);
            px_buf_printf(b, "<li data-batch='%lld'>batch %lld: ", bt[i].batch_id, bt[i].batch_id);
            kpi_html_esc(b, bt[i].format);
            px_buf_adds(b, " data loaded ");
            kpi_html_esc(b, bt[i].finished);
            px_buf_printf(b, ", %s rows</li>", rows_s);
        }
    free(bt);
    px_buf_printf(b, "</ul><p>KPI run %lld computed ", ri->run_id);
    kpi_html_esc(b, ri->computed_at);
    px_buf_adds(b, " by ");
    kpi_html_esc(b, ri->computed_by);
    px_buf_adds(b, ". This page was generated from it without network access; it contains only aggregate "
                   "counts, never a patient's identifier.</p>");
    if (p->dp_epsilon > 0)
        px_buf_printf(b,
                      "<p><b>Private release.</b> Every count on this page (cases, observed, expected) was released "
                      "through the Laplace mechanism with epsilon = %g per count (noise scale 1/epsilon, "
                      "sensitivity 1), seeded with %llu (splitmix64 / xoshiro256**, inverse-CDF draws) so the "
                      "release can be reproduced; counts are rounded and floored at 0. One stay enters at most %d "
                      "counts, so the page as a whole is %g-differentially private per stay (sequential "
                      "composition); a patient with several stays is protected in proportion. Length of stay "
                      "and cost, sums without a small sensitivity, are not released. Rates, intervals and flags "
                      "are recomputed from the noisy counts; smoothed rates and funnel plots are omitted.</p>",
                      p->dp_epsilon, (unsigned long long)p->dp_seed, DP_COUNTS_PER_STAY,
                      p->dp_epsilon * DP_COUNTS_PER_STAY);
    px_buf_adds(b, "</div>");
}

static int html_page(PGconn *c, px_buf *b, rows *rs, const run_info *ri, const px_kpi_report_params *p,
                     const goals *g, px_kpi_report_info *info)
{
    const char *per[4096];
    size_t np = periods_list(rs, per, 4096);
    const char *prev = NULL, *start = "", *end = "";
    for (size_t i = 0; i < np; i++)
        if (strcmp(per[i], ri->period) == 0 && i > 0) prev = per[i - 1];
    const row *sv = find_row(rs, PX_KPI_VOLUME, 0, NULL, ri->period);
    if (sv) start = sv->start, end = sv->end;
    time_t now = time(NULL);
    struct tm tm;
    char gen[64];
    strftime(gen, sizeof gen, "%Y-%m-%d %H:%M UTC", gmtime_r(&now, &tm));
    px_buf_adds(b, "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                   "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                   "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
                   "<title>Prognos KPI report ");
    kpi_html_esc(b, ri->period);
    px_buf_printf(b, "</title><style>%s</style></head><body data-run='%lld' data-period='", css, ri->run_id);
    kpi_html_esc(b, ri->period);
    px_buf_printf(b, "' data-period-kind='%s'><h1>Outcome KPIs, period ", ri->kind);
    kpi_html_esc(b, ri->period);
    px_buf_adds(b, "</h1><p class='sub'>");
    kpi_html_esc(b, start);
    px_buf_adds(b, " to ");
    kpi_html_esc(b, end);
    px_buf_printf(b, " &middot; KPI run %lld &middot; generated %s &middot; risk-adjusted with the registered models "
                     "(see <a href='#methods'>methods</a>)</p>",
                  ri->run_id, gen);
    if (p->dp_epsilon > 0)
        px_buf_printf(b, "<p class='dp'><b>Differentially private release</b> (epsilon %g per count, %g per stay "
                         "overall): counts carry random noise; see the methods.</p>",
                      p->dp_epsilon, p->dp_epsilon * DP_COUNTS_PER_STAY);
    cautions(b, c, ri);
    headline(b, rs, ri, p, g, prev);
    flagged(b, rs, ri, &info->flagged_worse, &info->flagged_better);
    px_buf_adds(b, "<h2 id='league'>League tables</h2><p class='sub'>Units with enough cases, ordered by O/E, "
                   "highest first; dots are O/E, bars their 95% intervals, the dashed line 1 (as expected for the "
                   "case mix). Every unit, suppressed ones included, is in the CSV and JSON of the report.</p>");
    int rc = 0;
    static const int risk[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
    int units_total = 0, sup_total = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        int units = 0, sup = 0;
        rc = league(b, rs, ri, risk[k], 1, &units, &sup, p->dp_epsilon > 0);
        if (units > units_total) units_total = units;
        sup_total += sup;
    }
    info->units = units_total;
    info->suppressed = sup_total;
    px_buf_adds(b, "<h2 id='departments'>By department</h2>");
    for (int k = 0; k < 3 && rc == 0; k++) {
        int units = 0, sup = 0;
        rc = league(b, rs, ri, risk[k], 2, &units, &sup, p->dp_epsilon > 0);
    }
    if (rc == 0) rc = trends(b, rs, ri);
    method_section(b, c, ri, p);
    px_buf_adds(b, "</body></html>\n");
    return rc ? rc : b->data ? 0 : PX_ENOMEM;
}

/* ---- JSON and CSV -------------------------------------------------------------- */

static void jnum(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static char *json_doc(const rows *rs, const run_info *ri, const px_kpi_report_params *p, const goals *g)
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
        cJSON_AddStringToObject(o, "unit_type", utype_names[x->utype]);
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

static int csv_doc(px_buf *b, const rows *rs, const run_info *ri)
{
    px_buf_adds(b, "run_id,measure,unit_type,unit,period,period_start,period_end,n,observed,expected,rate,rate_lo,"
                   "rate_hi,expected_rate,oe,oe_lo,oe_hi,oe_method,rsr,rsr_lo,rsr_hi,eb_rate,eb_weight,flag,"
                   "suppressed,model_version,sr,sr_lo,sr_hi,srsr,srsr_lo,srsr_hi,adjustment\n");
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (strcmp(x->period, ri->period) != 0) continue;
        px_buf_printf(b, "%lld,%s,%s,", ri->run_id, px_kpi_measure_name(x->measure), utype_names[x->utype]);
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

int px_kpi_report(PGconn *c, const px_kpi_report_params *p, px_kpi_report_info *info, px_err *e)
{
    run_info ri;
    rows rs = {0};
    px_buf b = {0};
    char *js = NULL;
    int rc;
    memset(&ri, 0, sizeof ri);
    memset(info, 0, sizeof *info);
    px_models_init(); /* GSL reports, never aborts (once per process) */
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
        if ((rc = targets_load(&f, p->targets_path, e)) != 0) return rc;
        for (int m = 0; m < PX_KPI__COUNT; m++)
            if (isfinite(f.target[m].value)) g.target[m] = f.target[m];
    }
    if (p->benchmarks_dir && (rc = benchmarks_load(&g, p->benchmarks_dir, e)) != 0) return rc;
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
        if ((rc = html_page(c, &b, &rs, &ri, p, &g, info)) != 0) {
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
        if (!is_rate_m(x->measure) && x->measure != PX_KPI_LOS) continue;
        info->flagged_worse += strcmp(x->flag, "worse") == 0;
        info->flagged_better += strcmp(x->flag, "better") == 0;
        info->suppressed += strcmp(x->flag, "suppressed") == 0;
    }
    if (p->json_path) {
        if (!(js = json_doc(&rs, &ri, p, &g))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = px_file_write_atomic(p->json_path, js, strlen(js), 0644, e)) != 0) goto out;
    }
    if (p->csv_path) {
        b.len = 0;
        if ((rc = csv_doc(&b, &rs, &ri)) != 0) {
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
