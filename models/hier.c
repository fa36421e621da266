/* hier.c: the hierarchical model of a risk model (px_hier): the random-intercept
 * GLM of glmm.c fitted on a model's design with the facility as the unit, the
 * per-unit standardized ratios with bootstrap intervals, the fixed effects as
 * SQL, and the JSON a version stores as hierarchical.json (and its parser). */
#include "models/internal.h"
#include <cjson/cJSON.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the hierarchical model of a risk model ---------------------------------- */

struct px_hier {
    px_glmm_fit fit;
    char **cols;          /* fit.k design column names */
    char **units;         /* fit.ngroups unit names, byte order */
    double *pred, *expd, *ratio, *lo, *hi, *blo, *bhi;   /* per unit */
    double conf, seconds;
    int boot, boot_failed;
    uint64_t seed;
    size_t n;
};

px_hier_params px_hier_default_params(void)
{
    px_hier_params p;
    memset(&p, 0, sizeof p);
    p.glmm = px_glmm_default_params();
    p.boot = 20;
    p.seed = 1;
    p.conf = 0.95;
    return p;
}

void px_hier_free(px_hier *h)
{
    if (!h) return;
    for (size_t j = 0; h->cols && j < h->fit.k; j++) free(h->cols[j]);
    for (size_t g = 0; h->units && g < h->fit.ngroups; g++) free(h->units[g]);
    free(h->cols), free(h->units);
    free(h->pred), free(h->expd), free(h->ratio), free(h->lo), free(h->hi), free(h->blo), free(h->bhi);
    px_glmm_fit_release(&h->fit);
    free(h);
}

px_algo px_hier_algo(const px_hier *h) { return h->fit.algo; }
double px_hier_tau(const px_hier *h) { return h->fit.tau; }
const px_glmm_fit *px_hier_glmm(const px_hier *h) { return &h->fit; }

int px_hier_eta(const px_hier *h, const px_model *m, const double *raw, double *eta, px_err *e)
{
    size_t k = h->fit.k;
    double buf[256], *x = k <= 256 ? buf : malloc(k * sizeof *x);
    if (!x) return px_err_set(e, PX_ENOMEM, "out of memory");
    int rc = px_model_ncols(m) == k ? px_model_design_row(m, raw, x, e)
                                    : px_err_set(e, PX_EINVAL, "the hierarchical model does not match the risk model");
    if (rc == 0) {
        double s = 0;
        for (size_t j = 0; j < k; j++) s += x[j] * h->fit.beta[j];
        *eta = s;
    }
    if (x != buf) free(x);
    return rc;
}

int px_hier_sql_eta(const px_hier *h, const px_model *m, const char *const *colsql, px_buf *out, px_err *e)
{
    if (px_model_ncols(m) != h->fit.k)
        return px_err_set(e, PX_EINVAL, "the hierarchical model does not match the risk model");
    return px_model_sql_eta(m, h->fit.beta, colsql, out, e);
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* R's type-7 quantile of sorted v[0..n) */
static double quantile7(const double *v, size_t n, double q)
{
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)floor(h);
    return lo + 1 < n ? v[lo] + (h - (double)lo) * (v[lo + 1] - v[lo]) : v[n - 1];
}

px_hier *px_hier_fit(const px_model *m, const px_dataset *d, const size_t *rows, size_t nrows, size_t unit_col,
                     const px_hier_params *pp, px_err *e)
{
    px_models_init(); /* GSL reports, never aborts */
    px_hier_params p = pp ? *pp : px_hier_default_params();
    px_algo algo = px_model_algo(m);
    double t0 = px_mono_s();
    if (algo != PX_ALGO_LOGIT && algo != PX_ALGO_POISSON) {
        px_err_set(e, PX_EINVAL, "a hierarchical model needs a logit or poisson risk model, not %s", px_algo_name(algo));
        return NULL;
    }
    if (unit_col >= d->nextra) {
        px_err_set(e, PX_EINVAL, "dataset '%s' has no unit column %zu", d->table, unit_col);
        return NULL;
    }
    if (!(p.conf > 0 && p.conf < 1) || p.boot < 0) {
        px_err_set(e, PX_EINVAL, "bad hierarchical parameters (conf %g, boot %d)", p.conf, p.boot);
        return NULL;
    }
    size_t N = rows ? nrows : d->n, k = px_model_ncols(m), n = 0, ng = 0;
    px_hier *h = calloc(1, sizeof *h);
    size_t *idx = malloc((N ? N : 1) * sizeof *idx), *grp = malloc((N ? N : 1) * sizeof *grp);
    char **names = malloc((N ? N : 1) * sizeof *names);
    double *X = NULL, *y = NULL, *eta = NULL, *ey = NULL, *draws = NULL;
    size_t *start = NULL, *order = NULL, *pos = NULL;
    gsl_rng *rng = NULL;
    int rc = 0;
    if (!h || !idx || !grp || !names) goto nomem;
    for (size_t r = 0; r < N; r++) {
        size_t i = rows ? rows[r] : r;
        if (i >= d->n) {
            rc = px_err_set(e, PX_EINVAL, "dataset '%s': row %zu out of range", d->table, i);
            goto fail;
        }
        const char *u = d->extra[i * d->nextra + unit_col];
        if (u && *u) idx[n] = i, names[n++] = (char *)u;
    }
    if (n == 0) {
        rc = px_err_set(e, PX_EINVAL, "no row of '%s' names its %s", d->table, d->extra_names[unit_col]);
        goto fail;
    }
    /* units in byte order */
    {
        char **sorted = malloc(n * sizeof *sorted);
        if (!sorted) goto nomem;
        memcpy(sorted, names, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, cmp_strp);
        for (size_t i = 0; i < n; i++)
            if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0) sorted[ng++] = sorted[i];
        if (!(h->units = calloc(ng, sizeof *h->units))) {
            free(sorted);
            goto nomem;
        }
        for (size_t g = 0; g < ng; g++)
            if (!(h->units[g] = strdup(sorted[g]))) {
                free(sorted);
                h->fit.ngroups = ng;
                goto nomem;
            }
        for (size_t i = 0; i < n; i++) {
            char **hit = bsearch(&names[i], sorted, ng, sizeof *sorted, cmp_strp);
            grp[i] = (size_t)(hit - sorted);
        }
        free(sorted);
    }
    X = malloc(n * k * sizeof *X), y = malloc(n * sizeof *y), eta = malloc(n * sizeof *eta),
    ey = malloc(n * sizeof *ey);
    if (!X || !y || !eta || !ey) goto nomem;
    if ((rc = px_model_design(m, d, idx, n, X, e)) != 0) goto fail;
    for (size_t i = 0; i < n; i++) y[i] = d->y[idx[i]];
    if ((rc = px_glmm_fit_dense(algo, X, y, grp, n, k, ng, &p.glmm, &h->fit, e)) != 0) {
        h->fit.ngroups = ng;   /* so px_hier_free releases the names */
        goto fail;
    }
    h->n = n, h->conf = p.conf, h->boot = p.boot, h->seed = p.seed;
    /* rows of each unit, contiguous: order[start[g] .. start[g+1]) */
    start = calloc(ng + 1, sizeof *start), order = malloc(n * sizeof *order), pos = malloc(ng * sizeof *pos);
    h->pred = malloc(ng * sizeof *h->pred), h->expd = malloc(ng * sizeof *h->expd),
    h->ratio = malloc(ng * sizeof *h->ratio), h->lo = malloc(ng * sizeof *h->lo), h->hi = malloc(ng * sizeof *h->hi),
    h->blo = malloc(ng * sizeof *h->blo), h->bhi = malloc(ng * sizeof *h->bhi);
    h->cols = calloc(k, sizeof *h->cols);
    if (!start || !order || !pos || !h->pred || !h->expd || !h->ratio || !h->lo || !h->hi || !h->blo || !h->bhi ||
        !h->cols)
        goto nomem;
    for (size_t i = 0; i < n; i++) start[grp[i] + 1]++;
    for (size_t g = 0; g < ng; g++) start[g + 1] += start[g], pos[g] = start[g];
    for (size_t i = 0; i < n; i++) order[pos[grp[i]]++] = i;
    {
        size_t nt = 0;
        const px_term *t = px_model_terms(m, &nt);
        for (size_t j = 0; j < k; j++) {
            char buf[32];
            snprintf(buf, sizeof buf, "column%zu", j);
            if (!(h->cols[j] = strdup(nt == k ? t[j].name : buf))) goto nomem;
        }
    }
    /* per unit: the standardized ratio with its posterior-normal interval */
    for (size_t g = 0; g < ng; g++) {
        size_t a = start[g], b = start[g + 1];
        for (size_t r = a; r < b; r++) {
            const double *x = X + order[r] * k;
            double s = 0;
            for (size_t j = 0; j < k; j++) s += x[j] * h->fit.beta[j];
            eta[r - a] = s, ey[r - a] = y[order[r]];
        }
        px_glmm_unit u;
        px_glmm_unit_ratio(algo, eta, ey, b - a, h->fit.tau, p.conf, &u);
        h->pred[g] = u.predicted, h->expd[g] = u.expected, h->ratio[g] = u.ratio, h->lo[g] = u.lo, h->hi[g] = u.hi;
        h->blo[g] = h->bhi[g] = NAN;
    }
    /* CMS bootstrap over units */
    if (p.boot > 0) {
        size_t B = (size_t)p.boot, nb = 0, cap = n;
        double *Xb = malloc(n * k * sizeof *Xb), *yb = malloc(n * sizeof *yb);
        size_t *gb = malloc(n * sizeof *gb), *pick = malloc(ng * sizeof *pick);
        double *start0 = malloc((k + 1) * sizeof *start0);
        draws = malloc(B * ng * sizeof *draws);
        rng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!Xb || !yb || !gb || !pick || !draws || !rng || !start0) {
            free(Xb), free(yb), free(gb), free(pick), free(start0);
            goto nomem;
        }
        gsl_rng_set(rng, (unsigned long)p.seed);
        /* each refit starts from the fit on the data (fewer Newton steps, no pooled GLM) */
        for (size_t j = 0; j < k; j++) start0[j] = h->fit.beta[j];
        start0[k] = h->fit.tau > 1e-3 ? h->fit.tau : 0.5;
        px_glmm_params pb = p.glmm;
        pb.start = start0;
        for (size_t bi = 0; bi < B; bi++) {
            size_t m2 = 0, need = 0;
            for (size_t g = 0; g < ng; g++) {
                pick[g] = (size_t)gsl_rng_uniform_int(rng, ng);
                need += start[pick[g] + 1] - start[pick[g]];
            }
            if (need > cap) {   /* a draw with the large units repeated holds more rows than the data */
                double *nx = realloc(Xb, need * k * sizeof *Xb), *ny = nx ? realloc(yb, need * sizeof *yb) : NULL;
                size_t *ngp = ny ? realloc(gb, need * sizeof *gb) : NULL;
                if (nx) Xb = nx;
                if (ny) yb = ny;
                if (ngp) gb = ngp;
                if (!nx || !ny || !ngp) {
                    free(Xb), free(yb), free(gb), free(pick), free(start0);
                    goto nomem;
                }
                cap = need;
            }
            for (size_t g = 0; g < ng; g++) {
                size_t j = pick[g];
                for (size_t r = start[j]; r < start[j + 1]; r++, m2++) {
                    memcpy(Xb + m2 * k, X + order[r] * k, k * sizeof *Xb);
                    yb[m2] = y[order[r]], gb[m2] = g;
                }
            }
            px_glmm_fit fb;
            px_err eb = {0};
            /* unit posterior draws use this stream whether or not the fit succeeds */
            if (px_glmm_fit_dense(algo, Xb, yb, gb, m2, k, ng, &pb, &fb, &eb) != 0) {
                h->boot_failed++;
                for (size_t g = 0; g < ng; g++) (void)gsl_ran_gaussian_ziggurat(rng, 1);
                continue;
            }
            for (size_t g = 0; g < ng; g++) {
                size_t a = start[g], b = start[g + 1];
                for (size_t r = a; r < b; r++) {
                    const double *x = X + order[r] * k;
                    double s = 0;
                    for (size_t j = 0; j < k; j++) s += x[j] * fb.beta[j];
                    eta[r - a] = s, ey[r - a] = y[order[r]];
                }
                px_glmm_unit u;
                double z = gsl_ran_gaussian_ziggurat(rng, 1);
                px_glmm_unit_ratio(algo, eta, ey, b - a, fb.tau, p.conf, &u);
                double alpha = u.u + z * u.sd, P = 0;
                for (size_t r = 0; r < b - a; r++) {
                    double mu, w, w1, l;
                    glmm_unit(algo == PX_ALGO_POISSON, eta[r] + alpha, 0, &mu, &w, &w1, &l);
                    P += mu;
                }
                draws[g * B + nb] = P / u.expected;
            }
            px_glmm_fit_release(&fb);
            nb++;
        }
        free(Xb), free(yb), free(gb), free(pick), free(start0);
        if (nb >= 2) {
            double a = (1 - p.conf) / 2;
            for (size_t g = 0; g < ng; g++) {
                qsort(draws + g * B, nb, sizeof *draws, cmp_dbl);
                h->blo[g] = quantile7(draws + g * B, nb, a);
                h->bhi[g] = quantile7(draws + g * B, nb, 1 - a);
            }
        }
    }
    h->seconds = px_mono_s() - t0;
    goto done;
nomem:
    rc = px_err_set(e, PX_ENOMEM, "out of memory");
fail:
    if (h && !h->fit.ngroups) h->fit.ngroups = h->units ? ng : 0;
    px_hier_free(h);
    h = NULL;
done:
    free(idx), free(grp), free(names), free(X), free(y), free(eta), free(ey), free(draws);
    free(start), free(order), free(pos);
    if (rng) gsl_rng_free(rng);
    return h;
}

/* Numbers as %.17g in the C locale (exact for doubles: the file gives back the
 * same bits, and the same fit gives the same bytes); non-finite as null. */
static void add_num(cJSON *o, const char *key, double v)
{
    if (!isfinite(v)) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    char buf[40];
    locale_t loc = px_c_locale(), old = loc ? uselocale(loc) : (locale_t)0;
    snprintf(buf, sizeof buf, "%.17g", v);
    if (loc) uselocale(old);
    cJSON_AddRawToObject(o, key, buf);
}

char *px_hier_json(const px_hier *h)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    const px_glmm_fit *f = &h->fit;
    cJSON_AddStringToObject(r, "format", "prognos-hierarchical 1");
    cJSON_AddStringToObject(r, "algo", px_algo_name(f->algo));
    cJSON_AddStringToObject(
        r, "method",
        f->algo == PX_ALGO_LOGIT
            ? "random-intercept logistic regression (facility intercepts ~ N(mu, tau^2)) by the Laplace "
              "approximation, as lme4::glmer(nAGQ = 1); standardized ratio = predicted (facility's shrunken "
              "intercept) / expected (mu) over the facility's stays (CMS Hospital Compare)"
            : "random-intercept Poisson/log regression (facility intercepts ~ N(mu, tau^2)) by the Laplace "
              "approximation, as lme4::glmer(nAGQ = 1); standardized ratio = predicted / expected days");
    add_num(r, "rows", (double)h->n);
    add_num(r, "units", (double)f->ngroups);
    add_num(r, "tau", f->tau);
    add_num(r, "mu", f->beta[0]);
    add_num(r, "deviance", f->deviance);
    add_num(r, "iterations", f->iterations);
    cJSON_AddBoolToObject(r, "converged", f->converged);
    cJSON_AddStringToObject(r, "warning", f->warning);
    add_num(r, "conf", h->conf);
    cJSON_AddStringToObject(r, "interval",
                            "ratio lo/hi: the facility intercept's normal posterior (conditional mode and SD) mapped "
                            "through predicted(u), coefficients and tau treated as known; boot_lo/boot_hi: CMS "
                            "bootstrap over facilities (refit per draw, intercept drawn from its posterior)");
    cJSON *bo = cJSON_AddObjectToObject(r, "bootstrap");
    if (bo) {
        add_num(bo, "draws", h->boot);
        add_num(bo, "failed", h->boot_failed);
        add_num(bo, "seed", (double)h->seed);
    }
    cJSON *fx = cJSON_AddArrayToObject(r, "fixed");
    for (size_t j = 0; fx && j < f->k; j++) {
        cJSON *t = cJSON_CreateObject();
        if (!t) break;
        cJSON_AddStringToObject(t, "column", h->cols[j]);
        add_num(t, "beta", f->beta[j]);
        add_num(t, "se", f->se[j]);
        cJSON_AddItemToArray(fx, t);
    }
    cJSON *us = cJSON_AddArrayToObject(r, "facilities");
    for (size_t g = 0; us && g < f->ngroups; g++) {
        cJSON *t = cJSON_CreateObject();
        if (!t) break;
        cJSON_AddStringToObject(t, "unit", h->units[g]);
        add_num(t, "n", (double)f->n_group[g]);
        add_num(t, "observed", f->y_group[g]);
        const char *keys[] = {"mode", "sd", "predicted", "expected", "ratio", "lo", "hi", "boot_lo", "boot_hi"};
        double vals[] = {f->mode[g], f->post_sd[g], h->pred[g], h->expd[g], h->ratio[g],
                         h->lo[g],   h->hi[g],      h->blo[g],  h->bhi[g]};
        for (size_t q = 0; q < sizeof vals / sizeof *vals; q++) add_num(t, keys[q], vals[q]);
        cJSON_AddItemToArray(us, t);
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

px_hier *px_hier_parse(const char *text, size_t len, const px_model *m, px_err *e)
{
    cJSON *r = cJSON_ParseWithLength(text, len);
    px_hier *h = calloc(1, sizeof *h);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(r, "format"), *al = cJSON_GetObjectItemCaseSensitive(r, "algo"),
                *tau = cJSON_GetObjectItemCaseSensitive(r, "tau"), *fx = cJSON_GetObjectItemCaseSensitive(r, "fixed");
    size_t k = px_model_ncols(m);
    if (!h) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto fail;
    }
    if (!r || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "prognos-hierarchical 1") != 0 || !cJSON_IsString(al) ||
        px_algo_parse(al->valuestring, &h->fit.algo) != 0 ||
        (h->fit.algo != PX_ALGO_LOGIT && h->fit.algo != PX_ALGO_POISSON) || h->fit.algo != px_model_algo(m) ||
        !cJSON_IsNumber(tau) || !(tau->valuedouble >= 0) || !isfinite(tau->valuedouble) || !cJSON_IsArray(fx) ||
        (size_t)cJSON_GetArraySize(fx) != k) {
        px_err_set(e, PX_ECORRUPT, "hierarchical.json is not a hierarchical model of this risk model");
        goto fail;
    }
    h->fit.tau = tau->valuedouble;
    h->fit.k = k;
    if (!(h->fit.beta = malloc(k * sizeof *h->fit.beta)) || !(h->fit.se = malloc(k * sizeof *h->fit.se))) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto fail;
    }
    size_t j = 0;
    for (const cJSON *t = fx->child; t; t = t->next, j++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(t, "beta");
        if (!cJSON_IsNumber(b) || !isfinite(b->valuedouble)) {
            px_err_set(e, PX_ECORRUPT, "hierarchical.json: fixed effect %zu is not a number", j);
            goto fail;
        }
        h->fit.beta[j] = b->valuedouble;
        h->fit.se[j] = NAN;
    }
    cJSON_Delete(r);
    return h;
fail:
    cJSON_Delete(r);
    px_hier_free(h);
    return NULL;
}
