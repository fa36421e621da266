/* score.c: scoring and aggregation of a KPI run inside PostgreSQL. Each risk
 * model is compiled to SQL (models/sql.c) and applied to its feature table in
 * place; one statement sums every measure to the finest cell (month x facility
 * x department) and hands the cells, with the hierarchical model's linear
 * predictors per cell, to the feature reader; the roll-ups to quarters, years,
 * "all", departments and the system are sums of those cells, done here. SVMs do
 * not compile: they are scored in C through the same reader and their scores
 * joined in from kpi.scored_c. The average-facility reference shift needs each
 * stay's prediction per facility: a second scan, only when that reference is asked.
 * Invariant: everything runs inside the caller's REPEATABLE READ transaction. */
#include "kpi/internal.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The stay's discharge month as year * 12 + month - 1: date_trunc on a date
 * would go through timestamptz (time zone arithmetic per row), and extract()
 * computes in numeric; date_part's float8 (exact for these integers) is the
 * cheapest of the three. */
#define MONTH_SQL(d) "(date_part('year', " d ") * 12 + date_part('month', " d ") - 1)::int"

static int oom(px_err *e) { return px_err_set(e, PX_ENOMEM, "out of memory"); }

static char *ident(PGconn *c, const char *name)
{
    return PQescapeIdentifier(c, name, strlen(name));
}

/* malloc'd printf */
static char *dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupf(const char *fmt, ...)
{
    px_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    char tmp[2];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || px_buf_reserve(&b, (size_t)n + 1) < 0) return NULL;
    va_start(ap, fmt);
    vsnprintf(b.data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return b.data;
}

/* ---- the inputs as SQL ----------------------------------------------------------- */

/* SQL of every input of m over alias t (the feature reader's values). */
static int input_sql(PGconn *c, const px_feat_table *t, const px_model *m, char **out, px_err *e)
{
    for (size_t j = 0; j < px_model_nfeatures(m); j++) {
        const px_feature_info *f = px_model_feature(m, j);
        if (!(out[j] = px_feat_table_value_sql(c, t, "t", f->name, f->kind == PX_COL_CATEGORICAL, e)))
            return e && e->code ? e->code : PX_ENOMEM;
    }
    return 0;
}

static void free_strs(char **s, size_t n)
{
    for (size_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

/* ---- the C path: an SVM (or score_in_c) ----------------------------------------- */

typedef struct cscore {
    const px_model *m;
    size_t nf;
    double *raw;
    px_buf out;          /* COPY text rows: measure, encounter_id, predicted */
    const char *measure;
    long long rows;
} cscore;

static int cscore_row(const px_feat_row *row, void *arg, px_err *e)
{
    cscore *s = arg;
    static const char hex[] = "0123456789abcdef";
    if (row->len[0] != 16) return px_err_set(e, PX_EINVAL, "a feature row without an encounter_id");
    px_model_raw_row(s->m, row->num + 1, row->text + 1, s->raw);
    double pred;
    int rc = px_model_predict(s->m, s->raw, &pred, NULL, e);
    if (rc) return rc;
    if (!(pred >= 0)) pred = 0;   /* probabilities are in [0,1]; an SVR's expected days may dip below 0 */
    char id[37];
    for (int i = 0, o = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) id[o++] = '-';
        id[o++] = hex[row->raw[0][i] >> 4];
        id[o++] = hex[row->raw[0][i] & 15];
    }
    id[36] = 0;
    s->rows++;
    return px_buf_printf(&s->out, "%s\t%s\t%.17g\n", s->measure, id, pred) ? oom(e) : 0;
}

/* Scores every labelled row of the model's table in C and stores the scores in kpi.scored_c. */
static int score_in_c(PGconn *c, const px_feat_table *t, int k, kpi_model *mi, px_err *e)
{
    size_t nf = px_model_nfeatures(mi->m);
    px_feat_field *f = calloc(nf + 1, sizeof *f);
    cscore s;
    memset(&s, 0, sizeof s);
    s.m = mi->m, s.nf = nf, s.measure = kpi_risk_model[k];
    s.raw = calloc(nf + 1, sizeof *s.raw);
    char *from = NULL, *lab = ident(c, mi->label);
    int rc = f && s.raw && lab ? 0 : oom(e);
    if (rc == 0 && px_feat_table_index(t, "encounter_id") < 0)
        rc = px_err_set(e, PX_EINVAL, "table '%s' has no encounter_id", px_feat_table_name(t));
    if (rc == 0) rc = px_feat_field_set(&f[0], "t.encounter_id", PX_WIRE_UUID, e);
    for (size_t j = 0; j < nf && rc == 0; j++) {
        const px_feature_info *fi = px_model_feature(mi->m, j);
        rc = px_feat_table_field(c, t, "t", fi->name, fi->kind == PX_COL_CATEGORICAL, &f[j + 1], e);
    }
    if (rc == 0 && !(from = dupf("FROM %s t WHERE t.%s IS NOT NULL", px_feat_table_quoted(t), lab))) rc = oom(e);
    if (rc == 0) rc = px_feat_scan(c, f, nf + 1, from, cscore_row, &s, e);
    if (rc == 0) {
        px_copy_in w;
        if ((rc = px_copy_in_begin(&w, c, "COPY kpi.scored_c (measure, encounter_id, predicted) FROM STDIN",
                                   "storing the C scores", e)) == 0) {
            rc = px_buf_add(&w.buf, s.out.data ? s.out.data : "", s.out.len) ? oom(e) : 0;
            if (rc == 0) rc = px_copy_in_flush(&w, 1, e);
            int rc2 = px_copy_in_end(&w, rc != 0, NULL, e);
            if (rc == 0) rc = rc2;
        }
    }
    if (rc == 0 && !(mi->pred_sql = strdup("sc.predicted"))) rc = oom(e);
    px_feat_fields_release(f, nf + 1);
    free(f);
    free(s.raw);
    free(from);
    PQfreemem(lab);
    px_buf_release(&s.out);
    return rc;
}

/* ---- the average-facility reference shift ---------------------------------------- */

typedef struct shift_rows {
    size_t n, cap, nfac;
    double *p, *y;
    int *fac;
    char **facs;
    size_t *slot, nslot;
} shift_rows;


/* Index of name in an interned list (added when new); -1 out of memory. */
static long intern(char ***names, size_t *n, size_t **slot, size_t *nslot, const char *name)
{
    if (*n * 2 >= *nslot) {
        size_t ns = *nslot ? *nslot * 2 : 1024;
        size_t *sl = calloc(ns, sizeof *sl);
        char **nn = realloc(*names, ns / 2 * sizeof *nn);
        if (!sl || !nn) {
            free(sl);
            if (nn) *names = nn;
            return -1;
        }
        *names = nn;
        for (size_t i = 0; i < *n; i++) {
            size_t h = (size_t)(px_hash_str((*names)[i]) & (ns - 1));
            while (sl[h]) h = (h + 1) & (ns - 1);
            sl[h] = i + 1;
        }
        free(*slot);
        *slot = sl, *nslot = ns;
    }
    size_t h = (size_t)(px_hash_str(name) & (*nslot - 1));
    while ((*slot)[h]) {
        if (strcmp((*names)[(*slot)[h] - 1], name) == 0) return (long)(*slot)[h] - 1;
        h = (h + 1) & (*nslot - 1);
    }
    if (!((*names)[*n] = strdup(name))) return -1;
    (*slot)[h] = ++*n;
    return (long)*n - 1;
}

static int shift_row(const px_feat_row *row, void *arg, px_err *e)
{
    shift_rows *s = arg;
    if (!row->text[0] || !(row->num[2] >= 0))
        return px_err_set(e, PX_EINVAL, "a feature row without a facility or a valid label");
    long f = intern(&s->facs, &s->nfac, &s->slot, &s->nslot, row->text[0]);
    if (f < 0) return oom(e);
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 65536;
        double *p = realloc(s->p, nc * sizeof *p), *y = p ? realloc(s->y, nc * sizeof *y) : NULL;
        int *fc = y ? realloc(s->fac, nc * sizeof *fc) : NULL;
        if (p) s->p = p;
        if (y) s->y = y;
        if (fc) s->fac = fc;
        if (!fc) return oom(e);
        s->cap = nc;
    }
    s->p[s->n] = row->num[1], s->y[s->n] = row->num[2], s->fac[s->n] = (int)f;
    s->n++;
    return 0;
}

static double clamp_p(double p)
{
    return p < 1e-12 ? 1e-12 : p > 1 - 1e-12 ? 1 - 1e-12 : p;
}

/* The expected value of a row under the reference shift c: on the logit scale for
 * probabilities, multiplicative for expected days. */
static double shifted(double p, double c, int binary)
{
    if (c == 0) return p;
    if (!binary) return p * exp(c);
    double eta = log(clamp_p(p) / (1 - clamp_p(p))) + c;
    return 1 / (1 + exp(-eta));
}

/* The CMS-style reference: the risk model was fitted without facility terms, so
 * its intercept is the pooled one, pulled towards the facilities with many
 * stays and large effects (on the log-odds scale a worse facility adds more events
 * than an equally better one removes). CMS's measures (Krumholz et al. 2006; the
 * Yale/CORE readmission and mortality methodology) compute expected counts at the
 * average hospital's intercept of a random-intercept model. Two-stage version of
 * that with the champion's predictions as a fixed offset: each facility's own
 * intercept a_j (MLE given the offset: sum logistic(eta + a_j) = O_j by Newton;
 * log(O_j / E_j) for expected days) and its variance v_j, then the random-effects
 * (DerSimonian-Laird) mean c = sum a_j / (v_j + tau2) / sum 1 / (v_j + tau2).
 * Facilities with no event (or only events) have no finite a_j and are left out.
 * Returns c (0 when fewer than two facilities qualify). */
static double reference_shift(const shift_rows *s, int binary)
{
    size_t nf = s->nfac;
    double *o = calloc(nf ? nf : 1, sizeof *o), *cnt = calloc(nf ? nf : 1, sizeof *cnt),
           *a = calloc(nf ? nf : 1, sizeof *a), *v = calloc(nf ? nf : 1, sizeof *v),
           *f = calloc(nf ? nf : 1, sizeof *f), *d = calloc(nf ? nf : 1, sizeof *d);
    double c = 0;
    if (!o || !cnt || !a || !v || !f || !d) goto out;
    for (size_t i = 0; i < s->n; i++) o[s->fac[i]] += s->y[i], cnt[s->fac[i]] += 1;
    if (binary) {
        /* Newton on all facilities at once: one pass over the rows per iteration */
        for (int it = 0; it < 30; it++) {
            memset(f, 0, nf * sizeof *f);
            memset(d, 0, nf * sizeof *d);
            for (size_t i = 0; i < s->n; i++) {
                double q = shifted(s->p[i], a[s->fac[i]], 1);
                if (a[s->fac[i]] == 0) q = clamp_p(s->p[i]);
                f[s->fac[i]] += q;
                d[s->fac[i]] += q * (1 - q);
            }
            double worst = 0;
            for (size_t j = 0; j < nf; j++) {
                if (o[j] <= 0 || o[j] >= cnt[j] || !(d[j] > 0)) continue;
                double step = (o[j] - f[j]) / d[j];
                if (step > 2) step = 2;
                if (step < -2) step = -2;
                a[j] += step;
                if (fabs(step) > worst) worst = fabs(step);
                v[j] = 1 / d[j];
            }
            if (worst < 1e-10) break;
        }
    } else {
        for (size_t i = 0; i < s->n; i++) f[s->fac[i]] += s->p[i];
        /* robust variance of log(O/E): sum (y - R e)^2 / O^2 */
        for (size_t j = 0; j < nf; j++) a[j] = o[j] > 0 && f[j] > 0 ? log(o[j] / f[j]) : 0;
        for (size_t i = 0; i < s->n; i++) {
            size_t j = (size_t)s->fac[i];
            double r = s->y[i] - exp(a[j]) * s->p[i];
            d[j] += r * r;
        }
        for (size_t j = 0; j < nf; j++) v[j] = o[j] > 0 ? d[j] / (o[j] * o[j]) : 0;
    }
    /* DerSimonian-Laird over the facilities with a finite intercept */
    double sw = 0, sw2 = 0, swa = 0;
    size_t k = 0;
    for (size_t j = 0; j < nf; j++) {
        int okj = binary ? o[j] > 0 && o[j] < cnt[j] : o[j] > 0 && f[j] > 0;
        if (!okj || !(v[j] > 0) || !isfinite(a[j])) {
            v[j] = NAN;
            continue;
        }
        sw += 1 / v[j], sw2 += 1 / (v[j] * v[j]), swa += a[j] / v[j];
        k++;
    }
    if (k < 2) goto out;
    double mean = swa / sw, q = 0;
    for (size_t j = 0; j < nf; j++)
        if (isfinite(v[j])) q += (a[j] - mean) * (a[j] - mean) / v[j];
    double tau2 = (q - (double)(k - 1)) / (sw - sw2 / sw);
    if (!(tau2 > 0)) tau2 = 0;
    double num = 0, den = 0;
    for (size_t j = 0; j < nf; j++)
        if (isfinite(v[j])) num += a[j] / (v[j] + tau2), den += 1 / (v[j] + tau2);
    c = num / den;
out:
    free(o), free(cnt), free(a), free(v), free(f), free(d);
    return isfinite(c) ? c : 0;
}

/* The FROM clause of model k's rows: its feature table t, the C scores sc when
 * it was scored in C, and the warehouse's stays w when the table lacks the
 * stay's discharge date, facility or department. */
static char *model_from(PGconn *c, const px_feat_table *t, const kpi_model *mi, int k, int own_units)
{
    char *lab = ident(c, mi->label);
    if (!lab) return NULL;
    char *s = dupf("FROM %s t%s%s%s%s WHERE t.%s IS NOT NULL", px_feat_table_quoted(t),
                   own_units ? "" : " JOIN wh.fact_encounter w USING (encounter_id)",
                   mi->in_c ? " JOIN kpi.scored_c sc ON sc.encounter_id = t.encounter_id AND sc.measure = '" : "",
                   mi->in_c ? kpi_risk_model[k] : "", mi->in_c ? "'" : "", lab);
    PQfreemem(lab);
    return s;
}

static int has_units(const px_feat_table *t)
{
    return px_feat_table_index(t, "discharge_date") >= 0 && px_feat_table_index(t, "facility_id") >= 0 &&
           px_feat_table_index(t, "department") >= 0;
}

int kpi_score_prepare(PGconn *c, const px_kpi_params *p, int k, kpi_model *mi, const px_hier *h,
                      px_kpi_run_info *info, px_err *e)
{
    px_feat_table *t = px_feat_table_open(c, mi->table, e);
    if (!t) return e && e->code ? e->code : PX_EDB;
    size_t nf = mi->m ? px_model_nfeatures(mi->m) : 0;
    char **cols = calloc(nf + 1, sizeof *cols);
    char *lab = ident(c, mi->label);
    px_buf b = {0};
    int rc = cols && lab ? 0 : oom(e);
    if (rc == 0 && !(mi->label_sql = dupf("(t.%s)::float8", lab))) rc = oom(e);
    if (rc == 0 && mi->m) rc = input_sql(c, t, mi->m, cols, e);
    if (rc == 0 && mi->m) {
        px_algo a = px_model_algo(mi->m);
        mi->in_c = p->score_in_c || (a != PX_ALGO_LOGIT && a != PX_ALGO_POISSON);
        if (mi->in_c) {
            rc = score_in_c(c, t, k, mi, e);
            info->scored_in_c[k] = 1;
            cJSON_AddStringToObject(mi->info, "scoring", p->score_in_c && (a == PX_ALGO_LOGIT || a == PX_ALGO_POISSON)
                                                             ? "in C (score_in_c)"
                                                             : "in C: an SVM does not compile to SQL");
        } else {
            rc = px_model_sql(mi->m, (const char *const *)cols, &b, e);
            if (rc == 0) mi->pred_sql = b.data, memset(&b, 0, sizeof b);
            cJSON_AddStringToObject(mi->info, "scoring", "in PostgreSQL: the model compiled to SQL");
        }
        if (rc == 0 && h) {
            px_buf_release(&b);
            if ((rc = px_hier_sql_eta(h, mi->m, (const char *const *)cols, &b, e)) == 0)
                mi->hier_sql = b.data, memset(&b, 0, sizeof b);
        }
    }
    int own = has_units(t);
    mi->units = own ? 't' : 'w';
    if (rc == 0 && !(mi->from_sql = model_from(c, t, mi, k, own))) rc = oom(e);
    /* the average-facility reference: each stay's prediction by facility */
    mi->shift = 0;
    if (rc == 0 && mi->pred_sql && p->reference != PX_KPI_REF_POOLED) {
        px_feat_field f[3] = {{0}};
        shift_rows s;
        memset(&s, 0, sizeof s);
        const char *from = mi->from_sql;
        rc = px_feat_field_set(&f[0], own ? "t.facility_id::text" : "w.facility_id::text", PX_WIRE_TEXT, e);
        if (rc == 0) rc = px_feat_field_set(&f[1], mi->pred_sql, PX_WIRE_F8, e);
        if (rc == 0) rc = px_feat_field_set(&f[2], mi->label_sql, PX_WIRE_F8, e);
        if (rc == 0) rc = px_feat_scan(c, f, 3, from, shift_row, &s, e);
        if (rc == 0) {
            px_algo a = px_model_algo(mi->m);
            mi->shift = reference_shift(&s, a == PX_ALGO_LOGIT || a == PX_ALGO_SVC);
        }
        px_feat_fields_release(f, 3);
        free(s.p), free(s.y), free(s.fac), free(s.slot);
        for (size_t i = 0; i < s.nfac; i++) free(s.facs[i]);
        free(s.facs);
    }
    free_strs(cols, nf);
    PQfreemem(lab);
    px_buf_release(&b);
    px_feat_table_free(t);
    return rc;
}

void kpi_model_release(kpi_model *mi)
{
    px_model_free(mi->m);
    cJSON_Delete(mi->info);
    free(mi->pred_sql), free(mi->hier_sql), free(mi->label_sql), free(mi->from_sql);
    memset(mi, 0, sizeof *mi);
}

/* ---- the one pass ------------------------------------------------------------------ */

/* SQL of the expected value of a stay from its prediction, the SQL p: p itself,
 * or shifted to the reference as `shifted` does in C. */
static char *expected_sql(const kpi_model *mi, const char *p)
{
    if (!mi->pred_sql) return strdup("NULL::float8");
    if (mi->shift == 0) return strdup(p);
    char c[40];
    snprintf(c, sizeof c, "%.17g", mi->shift);
    px_algo a = px_model_algo(mi->m);
    if (a != PX_ALGO_LOGIT && a != PX_ALGO_SVC) return dupf("((%s) * exp(float8 '%s'))", p, c);
    /* logit(clamped p) + c, back through the logistic (p appears twice: this
     * reference is not the default, and a fence would cost more) */
    char *q = dupf("least(greatest((%s), float8 '1e-12'), 1 - float8 '1e-12')", p);
    char *r = q ? dupf("(1 / (1 + exp(-(ln(%s / (1 - %s)) + float8 '%s'))))", q, q, c) : NULL;
    free(q);
    return r;
}

/* Appends one model's finest cells (month, facility, department): n, sum y,
 * then the expected values' sums in the form of PostgreSQL's regression
 * aggregates over (y, e): mean of e, sum (e - mean e)^2, sum y^2, sum (e - mean
 * e)(y - mean y), from which pass_row recovers sum e, sum e^2, sum y e and sum
 * e(1-e). Why: every regr_* call with the same arguments shares one transition
 * state, so the compiled model is evaluated once per stay without a subquery
 * fence (OFFSET 0 kept each branch out of PostgreSQL's parallel plans: workers
 * scored, the leader alone aggregated every stay); without it the branches are
 * parallel safe and PostgreSQL runs them side by side in its workers (Parallel
 * Append; a branch without arrays may also be aggregated partially in each
 * worker, as these aggregates combine). A Poisson model's hierarchical
 * pseudo-stay per cell rides along in
 * c10 (log sum exp(eta_i)): sum exp(eta_i + u) = exp(u) sum exp(eta_i), so one
 * pseudo-stay with that eta and y = sum y_i gives the same intercept, predicted
 * and expected (the log-likelihood differs by a constant only). A logit's
 * hierarchical model needs every stay's eta (c11; the outcomes only as the
 * cell's sum, which the conditional mode depends on alone); array_agg does not
 * combine: such a branch runs whole in one process. */
static int model_cells_sql(px_buf *q, const kpi_model *mi, int k)
{
    char *ex = expected_sql(mi, mi->pred_sql ? mi->pred_sql : "NULL::float8");
    if (!ex) return PX_ENOMEM;
    char u = mi->units;
    int poisson = mi->m && px_model_algo(mi->m) == PX_ALGO_POISSON;
    const char *y = mi->label_sql;
    int rc = px_buf_printf(q,
                           "SELECT '%s'::text, " MONTH_SQL("%c.discharge_date") ", %c.facility_id::text,"
                           " coalesce(nullif(%c.department, ''), 'unknown')::text, count(*)::float8, sum(%s),"
                           " regr_avgx(%s, %s), regr_sxx(%s, %s), sum(%s * %s), regr_sxy(%s, %s), ",
                           kpi_risk_model[k], u, u, u, u, y, y, ex, y, ex, y, y, y, ex);
    if (rc == 0 && mi->hier_sql && poisson)
        rc = px_buf_printf(q, "ln(sum(exp(%s))), NULL::float8[]", mi->hier_sql);
    else if (rc == 0 && mi->hier_sql)
        rc = px_buf_printf(q, "NULL::float8, array_agg(%s)", mi->hier_sql);
    else if (rc == 0)
        rc = px_buf_adds(q, "NULL::float8, NULL::float8[]");
    if (rc == 0) rc = px_buf_printf(q, " %s GROUP BY 2, 3, 4", mi->from_sql);
    free(ex);
    return rc;
}

/* The stays: volume (every stay) and cost (stays with a recorded cost:
 * total_cost is NULL when the extract had none: unknown, not zero, so such
 * stays are neither in the sum nor in the denominator, and a unit with no costed
 * stay has no cost measure at all). n, ncost, sum cost, sum cost^2. The sums
 * are taken where the stays live, per discharge day (on a sharded warehouse each
 * shard sums its own: px_shards_union; postgres_fdw ships no date_part), and
 * added here per month, in numeric (exact: the same figures as one sum over all
 * the stays). */
static const char stays_sql[] =
    "SELECT 'stays'::text, " MONTH_SQL("day") ", facility_id::text, coalesce(nullif(department, ''), 'unknown')::text,"
    " sum(n)::float8, sum(nc)::float8, sum(s)::float8, sum(s2)::float8, NULL::float8, NULL::float8, NULL::float8,"
    " NULL::float8[] FROM (";
static const char stays_branch[] =
    "SELECT discharge_date AS day, facility_id, department, count(*) AS n, count(total_cost) AS nc,"
    " sum(total_cost) AS s, sum(total_cost * total_cost) AS s2 FROM @REL@ GROUP BY 1, 2, 3";

/* the roll-up: cells keyed by (measure, kind, period, unit type, unit) */
typedef struct rollup {
    kpi_cells *cs;
    size_t first;             /* cells before this index belong to someone else */
    uint64_t *key;
    size_t *slot, nslot;      /* open addressing: cell index - first + 1 */
    char **facs, **depts;     /* interned unit names */
    size_t nfac, ndept;
    size_t *fslot, nfslot, *dslot, ndslot;
    int kinds;
    kpi_hier_rows *hr;
    long long *rows;          /* stays summed per risk model */
    px_err *e;
} rollup;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* Adds the sums s[7] to the cell (measure, kind, pk, utype, unit). */
static int roll_add(rollup *r, int measure, int kind, int pk, int utype, size_t unit, const double *s)
{
    uint64_t key = (uint64_t)measure << 56 | (uint64_t)kind << 48 | (uint64_t)(uint32_t)(pk + 1) << 24 |
                   (uint64_t)utype << 22 | (uint64_t)unit;
    kpi_cells *cs = r->cs;
    size_t used = cs->n - r->first;
    if (used * 2 >= r->nslot) {
        size_t ns = r->nslot ? r->nslot * 2 : 1 << 14;
        size_t *sl = calloc(ns, sizeof *sl);
        if (!sl) return oom(r->e);
        for (size_t i = 0; i < used; i++) {
            size_t h = (size_t)(mix64(r->key[i]) & (ns - 1));
            while (sl[h]) h = (h + 1) & (ns - 1);
            sl[h] = i + 1;
        }
        free(r->slot);
        r->slot = sl, r->nslot = ns;
        uint64_t *nk = realloc(r->key, ns / 2 * sizeof *nk);
        if (!nk) return oom(r->e);
        r->key = nk;
    }
    size_t h = (size_t)(mix64(key) & (r->nslot - 1));
    while (r->slot[h]) {
        size_t i = r->slot[h] - 1;
        if (r->key[i] == key) {
            kpi_cell *x = &cs->v[r->first + i];
            double *sums[7] = {&x->n, &x->o, &x->e, &x->vpq, &x->syy, &x->sye, &x->see};
            for (int j = 0; j < 7; j++) *sums[j] += s[j];
            return 0;
        }
        h = (h + 1) & (r->nslot - 1);
    }
    if (cs->n == cs->cap) {
        size_t nc = cs->cap ? cs->cap * 2 : 4096;
        kpi_cell *v = realloc(cs->v, nc * sizeof *v);
        if (!v) return oom(r->e);
        cs->v = v, cs->cap = nc;
    }
    kpi_cell *x = &cs->v[cs->n];
    memset(x, 0, sizeof *x);
    x->measure = measure, x->kind = kind, x->utype = utype;
    if (kind == PX_KPI_ALL || pk < 0)
        snprintf(x->start, sizeof x->start, "1900-01-01");
    else
        snprintf(x->start, sizeof x->start, "%04d-%02d-01", (pk / 12) % 10000, pk % 12 + 1);
    const char *name = utype == KPI_U_FACILITY ? r->facs[unit] : utype == KPI_U_DEPARTMENT ? r->depts[unit] : "all";
    if (!(x->unit = strdup(name))) return oom(r->e);
    x->n = s[0], x->o = s[1], x->e = s[2], x->vpq = s[3], x->syy = s[4], x->sye = s[5], x->see = s[6];
    r->key[used] = key;
    r->slot[h] = used + 1;
    cs->n++;
    return 0;
}

/* One finest cell into every requested period kind and unit type. */
static int roll_cell(rollup *r, int measure, int ym, size_t fac, size_t dept, const double *s)
{
    static const int kinds[4] = {PX_KPI_MONTH, PX_KPI_QUARTER, PX_KPI_YEAR, PX_KPI_ALL};
    for (int t = 0; t < 4; t++) {
        int kind = kinds[t];
        if (!(r->kinds & kind)) continue;
        if (kind != PX_KPI_ALL && ym < 0) continue;   /* no discharge date: only in "all" */
        int pk = kind == PX_KPI_MONTH ? ym : kind == PX_KPI_QUARTER ? ym - ym % 3 : kind == PX_KPI_YEAR ? ym - ym % 12 : -1;
        int rc = roll_add(r, measure, kind, pk, KPI_U_SYSTEM, 0, s);
        if (rc == 0) rc = roll_add(r, measure, kind, pk, KPI_U_FACILITY, fac, s);
        if (rc == 0) rc = roll_add(r, measure, kind, pk, KPI_U_DEPARTMENT, dept, s);
        if (rc) return rc;
    }
    return 0;
}

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* The elements of a one-dimensional float8[] in binary form into out (count *n). */
static int f8_array(const unsigned char *p, int32_t len, double **out, size_t *n)
{
    *n = 0;
    if (len < 12) return -1;
    uint32_t ndim = be32(p), elem = be32(p + 8);
    if (ndim == 0) return 0;
    if (ndim != 1 || elem != 701 || len < 20) return -1;
    size_t cnt = be32(p + 12);
    const unsigned char *q = p + 20, *end = p + len;
    double *v = malloc((cnt ? cnt : 1) * sizeof *v);
    if (!v) return -2;
    for (size_t i = 0; i < cnt; i++) {
        if (q + 4 > end || (int32_t)be32(q) != 8 || q + 12 > end) {
            free(v);
            return -1;
        }
        uint64_t u = (uint64_t)be32(q + 4) << 32 | be32(q + 8);
        memcpy(&v[i], &u, sizeof v[i]);
        q += 12;
    }
    *out = v, *n = cnt;
    return 0;
}

/* Appends n stays (eta, y) of facility fac and month ym to h. */
static int hier_rows_push(kpi_hier_rows *h, int fac, int ym, const double *eta, const double *y, size_t n, px_err *e)
{
    if (h->n + n > h->cap) {
        size_t nc = h->cap ? h->cap : 65536;
        while (nc < h->n + n) nc *= 2;
        int *f = realloc(h->fac, nc * sizeof *f);
        if (f) h->fac = f;
        int *m = f ? realloc(h->ym, nc * sizeof *m) : NULL;
        if (m) h->ym = m;
        double *ee = m ? realloc(h->eta, nc * sizeof *ee) : NULL;
        if (ee) h->eta = ee;
        double *yy = ee ? realloc(h->y, nc * sizeof *yy) : NULL;
        if (yy) h->y = yy, h->cap = nc;
        if (!yy) return oom(e);
    }
    for (size_t i = 0; i < n; i++) {
        h->fac[h->n] = fac, h->ym[h->n] = ym, h->eta[h->n] = eta[i], h->y[h->n] = y[i];
        h->n++;
    }
    return 0;
}

/* Appends the stays of one hierarchical row (binary float8[] eta), the cell's
 * outcomes' sum sy on its first stay (see kpi_hier_rows). */
static int hier_rows_add(kpi_hier_rows *h, int fac, int ym, const unsigned char *pe, int32_t le, double sy, px_err *e)
{
    double *eta = NULL, *y = NULL;
    size_t ne = 0;
    int a = f8_array(pe, le, &eta, &ne);
    int rc = 0;
    if (a == -2) rc = oom(e);
    else if (a || ne == 0) rc = px_err_set(e, PX_EDB, "the KPI pass returned a malformed array");
    if (rc == 0 && !(y = calloc(ne, sizeof *y))) rc = oom(e);
    if (rc == 0) {
        y[0] = sy;
        rc = hier_rows_push(h, fac, ym, eta, y, ne, e);
    }
    free(eta);
    free(y);
    return rc;
}

static int pass_row(const px_feat_row *row, void *arg, px_err *e)
{
    rollup *r = arg;
    const char *m = row->text[0];
    if (!m || !row->text[2])
        return px_err_set(e, PX_EINVAL, "a stay or feature row without a facility");
    int ym = isnan(row->num[1]) ? -1 : (int)row->num[1];
    long fac = intern(&r->facs, &r->nfac, &r->fslot, &r->nfslot, row->text[2]);
    long dept = intern(&r->depts, &r->ndept, &r->dslot, &r->ndslot, row->text[3] ? row->text[3] : "unknown");
    if (fac < 0 || dept < 0) return oom(e);
    double s[7];
    for (int j = 0; j < 7; j++) s[j] = isnan(row->num[4 + j]) ? 0 : row->num[4 + j];
    if (strcmp(m, "stays") == 0) {
        /* volume: n stays, observed = n; cost: stays with a cost, their sum and sum of squares */
        double vol[7] = {s[0], s[0], 0, 0, 0, 0, 0}, cost[7] = {s[1], s[2], 0, 0, s[3], 0, 0};
        int rc = roll_cell(r, PX_KPI_VOLUME, ym, (size_t)fac, (size_t)dept, vol);
        if (rc == 0 && s[1] > 0) rc = roll_cell(r, PX_KPI_COST, ym, (size_t)fac, (size_t)dept, cost);
        return rc;
    }
    for (int k = 0; k < 3; k++) {
        if (strcmp(m, kpi_risk_model[k]) != 0) continue;
        /* model_cells_sql's columns: n, sum y, mean e, sum (e - mean e)^2, sum y^2,
         * sum (e - mean e)(y - mean y); then a Poisson model's log sum exp(eta), or
         * a logit's stays' etas */
        double n = s[0], sy = s[1], se = s[2] * n, see = s[3] + (n > 0 ? se * se / n : 0), syy = s[4],
               sye = s[5] + (n > 0 ? se * sy / n : 0);
        double cell[7] = {n, sy, se, se - see, syy, sye, see};
        int rc = roll_cell(r, kpi_risk_measure[k], ym, (size_t)fac, (size_t)dept, cell);
        r->rows[k] += (long long)n;
        if (rc == 0 && (row->len[10] >= 0 || row->len[11] >= 0) && ym < 0)
            return px_err_set(e, PX_EINVAL, "a stay of the %s feature table has no discharge date", kpi_risk_model[k]);
        if (rc == 0 && row->len[10] >= 0) /* the Poisson pseudo-stay: eta = log sum exp(eta_i), y = sum y_i */
            rc = hier_rows_push(&r->hr[k], (int)fac, ym, &row->num[10], &sy, 1, e);
        else if (rc == 0 && row->len[11] >= 0)
            rc = hier_rows_add(&r->hr[k], (int)fac, ym, row->raw[11], row->len[11], sy, e);
        return rc;
    }
    return px_err_set(e, PX_EDB, "the KPI pass returned an unknown measure");
}

void kpi_hier_rows_free(kpi_hier_rows *r)
{
    free(r->fac), free(r->ym), free(r->eta), free(r->y);
    for (size_t i = 0; i < r->nfac; i++) free(r->facs[i]);
    free(r->facs);
    memset(r, 0, sizeof *r);
}

int kpi_score_pass(PGconn *c, const kpi_model *mi, int kinds, kpi_cells *cs, kpi_hier_rows *hr, long long *rows,
                   px_err *e)
{
    px_buf q = {0};
    int rc = 0;
    rollup r;
    memset(&r, 0, sizeof r);
    r.cs = cs, r.first = cs->n, r.kinds = kinds, r.hr = hr, r.rows = rows, r.e = e;
    static const px_feat_wire wire[12] = {PX_WIRE_TEXT, PX_WIRE_I4, PX_WIRE_TEXT, PX_WIRE_TEXT, PX_WIRE_F8,
                                          PX_WIRE_F8,   PX_WIRE_F8, PX_WIRE_F8,   PX_WIRE_F8,   PX_WIRE_F8,
                                          PX_WIRE_F8,   PX_WIRE_BYTES};
    px_feat_field f[12] = {{0}};
    for (int i = 0; i < 12 && rc == 0; i++) {
        char col[16];
        snprintf(col, sizeof col, "c%d", i);
        rc = px_feat_field_set(&f[i], col, wire[i], e);
    }
    if (rc == 0) rc = px_buf_adds(&q, "FROM (") ? oom(e) : 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        if (mi[k].skip) continue;
        if (model_cells_sql(&q, &mi[k], k) || px_buf_adds(&q, " UNION ALL ")) rc = oom(e);
    }
    if (rc == 0 && px_buf_adds(&q, stays_sql)) rc = oom(e);
    if (rc == 0) rc = px_shards_union(c, "fact_encounter", stays_branch, &q, e);
    if (rc == 0 && px_buf_adds(&q, ") x GROUP BY 2, 3, 4) u (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11)"))
        rc = oom(e);
    if (rc == 0) rc = px_feat_scan(c, f, 12, q.data, pass_row, &r, e);
    /* each model's hierarchical rows name facilities by the pass's index: hand them the names */
    for (int k = 0; k < 3 && rc == 0; k++) {
        if (!hr[k].n) continue;
        if (!(hr[k].facs = calloc(r.nfac + 1, sizeof *hr[k].facs))) {
            rc = oom(e);
            break;
        }
        for (size_t i = 0; i < r.nfac && rc == 0; i++) {
            if (!(hr[k].facs[i] = strdup(r.facs[i]))) rc = oom(e);
            hr[k].nfac = i + 1;
        }
    }
    px_feat_fields_release(f, 12);
    px_buf_release(&q);
    free(r.key), free(r.slot), free(r.fslot), free(r.dslot);
    for (size_t i = 0; i < r.nfac; i++) free(r.facs[i]);
    for (size_t i = 0; i < r.ndept; i++) free(r.depts[i]);
    free(r.facs), free(r.depts);
    return rc;
}

/* ---- kpi.predictions ------------------------------------------------------------------ */

char *kpi_predictions_sql(long long run_id, const kpi_model *mi)
{
    px_buf q = {0};
    int rc = 0, any = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        if (mi[k].skip) continue;
        char *ex = expected_sql(&mi[k], "p");
        char ver[16] = "NULL";
        if (!mi[k].crude) snprintf(ver, sizeof ver, "%d", mi[k].version);
        rc = !ex || px_buf_printf(&q,
                                  "%sSELECT %lld::bigint AS run_id, '%s'::text AS measure, %s::integer AS model_version,"
                                  " encounter_id, p AS predicted, %s AS expected, y AS observed"
                                  " FROM (SELECT t.encounter_id, %s AS y, %s AS p %s OFFSET 0) s",
                                  any ? " UNION ALL " : "", run_id, kpi_risk_model[k], ver, ex, mi[k].label_sql,
                                  mi[k].pred_sql ? mi[k].pred_sql : "NULL::float8", mi[k].from_sql);
        free(ex);
        any = 1;
    }
    if (rc == 0 && !any)
        rc = px_buf_adds(&q, "SELECT NULL::bigint, NULL::text, NULL::integer, NULL::uuid, NULL::float8, NULL::float8,"
                             " NULL::float8 WHERE false");
    if (rc) {
        px_buf_release(&q);
        return NULL;
    }
    return q.data;
}
