/* model.c: a px_model is an encoding (one px_feature_info per raw input) plus
 * an algorithm: a GLM (logit, poisson) on the standardized design, or a LibSVM
 * model on the same design without the intercept. It predicts with per-feature
 * contributions, reports coefficients on the original scale, and serializes to
 * the line-oriented text "prognos-model 1" (numbers %.17g in the C locale, so a
 * load gives back the same doubles; the last line is a SHA-256 of the rest).
 * Every prediction is bounded (px_model_predict, the one place every caller goes
 * through): a GLM's linear predictor is clamped to the range it took on the
 * training rows, and the value to the bounds stored with the model (see
 * bound_value). Saving and loading are in model_io.c. */
#include "models/model_int.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STACK_COLS 512

px_fit_params px_fit_default_params(px_algo algo)
{
    px_fit_params p;
    memset(&p, 0, sizeof p);
    p.algo = algo;
    p.glm = px_glm_default_params();
    p.svm = px_svm_default_params();
    p.svm.type = algo == PX_ALGO_SVR ? PX_SVM_SVR : PX_SVM_SVC;
    p.max_value = INFINITY;
    return p;
}

/* The value bounds a model gets when fitted (regression: the training labels'
 * range, capped at max_value) or when loaded from a file that has none (the
 * rule for files saved before bounds existed: probabilities in [0, 1];
 * regression values in [0, PX_MODEL_LEGACY_MAX], the length-of-stay cap, since
 * the only regression model prognos built in then was LOS in days). */
void model_default_bounds(px_model *m)
{
    m->eta_lo = -INFINITY;
    m->eta_hi = INFINITY;
    int bin = m->algo == PX_ALGO_LOGIT || m->algo == PX_ALGO_SVC;
    m->v_lo = 0;
    m->v_hi = bin ? 1 : PX_MODEL_LEGACY_MAX;
}

/* Clamps a prediction to the model's bounds. NaN stays NaN (the caller reports it). */
static double bound_value(const px_model *m, double v)
{
    if (v < m->v_lo) return m->v_lo;
    if (v > m->v_hi) return m->v_hi;
    return v;
}

void px_model_free(px_model *m)
{
    if (!m) return;
    px_enc_free(m->f, m->nf);
    free(m->beta);
    free(m->cov);
    free(m->terms);
    px_svm_free(m->svm);
    free(m);
}

px_algo px_model_algo(const px_model *m) { return m->algo; }
size_t px_model_nfeatures(const px_model *m) { return m->nf; }
const px_feature_info *px_model_feature(const px_model *m, size_t j) { return j < m->nf ? &m->f[j] : NULL; }

int px_model_feature_index(const px_model *m, const char *name)
{
    for (size_t j = 0; j < m->nf; j++)
        if (strcmp(m->f[j].name, name) == 0) return (int)j;
    return -1;
}

const px_term *px_model_terms(const px_model *m, size_t *n)
{
    *n = m->terms ? m->nterms : 0;
    return m->terms;
}

const double *px_model_beta(const px_model *m) { return is_glm(m->algo) ? m->beta : NULL; }

/* Coefficients on the original scale. A numeric feature enters as
 * (x - mean) / sd, so its coefficient is beta / sd and the intercept absorbs
 * -beta * mean / sd; one-hot columns are unchanged. This is a linear map b = T beta,
 * so Cov(b) = T Cov(beta) T' exactly (the SEs R reports for the unscaled fit). */
int model_compute_terms(px_model *m)
{
    size_t k = m->ncols;
    m->terms = calloc(k, sizeof *m->terms);
    double *a = calloc(k, sizeof *a), *scale = malloc(k * sizeof *scale);
    if (!m->terms || !a || !scale) {
        free(a);
        free(scale);
        return PX_ENOMEM;
    }
    m->nterms = k;
    for (size_t c = 0; c < k; c++) scale[c] = 1;
    a[0] = 1;
    for (size_t j = 0; j < m->nf; j++) {
        const px_feature_info *f = &m->f[j];
        if (f->dropped || f->kind != PX_COL_NUMERIC) continue;
        scale[f->col] = f->sd;
        a[f->col] = -f->mean / f->sd;
    }
    double b0 = 0, v0 = 0;
    for (size_t c = 0; c < k; c++) b0 += a[c] * m->beta[c];
    for (size_t r = 0; r < k; r++)
        for (size_t c = 0; c < k; c++) v0 += a[r] * m->cov[r * k + c] * a[c];
    for (size_t c = 0; c < k; c++) {
        px_enc_colname(m->f, m->nf, c, m->terms[c].name, sizeof m->terms[c].name);
        if (c == 0) {
            m->terms[c].beta = b0;
            m->terms[c].se = sqrt(v0);
        } else {
            m->terms[c].beta = m->beta[c] / scale[c];
            m->terms[c].se = sqrt(m->cov[c * k + c]) / scale[c];
        }
    }
    free(a);
    free(scale);
    return 0;
}

/* ---- fitting ------------------------------------------------------------- */

/* Level maps from the dataset's level indexes to the model's (NULL for numeric). */
static size_t **level_maps(const px_model *m, const px_dataset *d, const int *dcol)
{
    size_t **maps = calloc(m->nf ? m->nf : 1, sizeof *maps);
    if (!maps) return NULL;
    for (size_t j = 0; j < m->nf; j++) {
        if (dcol[j] < 0 || m->f[j].kind != PX_COL_CATEGORICAL) continue;
        size_t nl = d->nlevels[dcol[j]];
        maps[j] = malloc((nl ? nl : 1) * sizeof **maps);
        if (!maps[j]) {
            for (size_t q = 0; q < j; q++) free(maps[q]);
            free(maps);
            return NULL;
        }
        px_enc_level_map(&m->f[j], d->levels[dcol[j]], nl, maps[j]);
    }
    return maps;
}

static void free_maps(size_t **maps, size_t nf)
{
    if (!maps) return;
    for (size_t j = 0; j < nf; j++) free(maps[j]);
    free(maps);
}

/* The raw instance of dataset row i in the model's terms. Returns 0 or PX_EINVAL. */
static int raw_of_row(const px_model *m, const px_dataset *d, const int *dcol, size_t **maps, size_t i, double *raw,
                      px_err *e)
{
    for (size_t j = 0; j < m->nf; j++) {
        if (dcol[j] < 0) {
            raw[j] = NAN;
            continue;
        }
        double v = d->x[i * d->p + (size_t)dcol[j]];
        if (m->f[j].kind == PX_COL_NUMERIC || isnan(v)) {
            raw[j] = v;
            continue;
        }
        size_t nl = d->nlevels[dcol[j]];
        if (!(v >= 0 && v < (double)nl && v == floor(v)))
            return px_err_set(e, PX_EINVAL, "column '%s' has an invalid level index in row %zu", m->f[j].name, i);
        raw[j] = (double)maps[j][(size_t)v];
    }
    return 0;
}

/* Matches the model's features to d's columns by name (dcol[j] = -1 when absent,
 * which only a dropped feature may be). */
static int match_columns(const px_model *m, const px_dataset *d, int *dcol, px_err *e)
{
    for (size_t j = 0; j < m->nf; j++) {
        dcol[j] = px_dataset_col(d, m->f[j].name);
        if (dcol[j] < 0) {
            if (m->f[j].dropped) continue;
            return px_err_set(e, PX_EINVAL, "dataset '%s' has no column '%s' (an input of the model)", d->table,
                              m->f[j].name);
        }
        if (d->kind[dcol[j]] != m->f[j].kind) {
            if (m->f[j].dropped) {
                dcol[j] = -1;
                continue;
            }
            return px_err_set(e, PX_EINVAL, "column '%s' of dataset '%s' is %s, the model's input is %s", m->f[j].name,
                              d->table, d->kind[dcol[j]] == PX_COL_NUMERIC ? "numeric" : "categorical",
                              m->f[j].kind == PX_COL_NUMERIC ? "numeric" : "categorical");
        }
    }
    return 0;
}

static int check_labels(px_algo algo, const px_dataset *d, const size_t *rows, size_t n, px_err *e)
{
    size_t pos = 0;
    for (size_t r = 0; r < n; r++) {
        size_t i = rows ? rows[r] : r;
        double y = d->y[i];
        if (algo == PX_ALGO_LOGIT || algo == PX_ALGO_SVC) {
            if (y != 0 && y != 1)
                return px_err_set(e, PX_EINVAL, "cannot fit %s model: label '%s' is not 0/1 (row %zu has %g)",
                                  px_algo_name(algo), d->label, i, y);
            pos += y == 1;
        } else if (algo == PX_ALGO_POISSON ? !(y >= 0 && isfinite(y)) : !isfinite(y)) {
            return px_err_set(e, PX_EINVAL, "cannot fit %s model: label '%s' is %s in row %zu", px_algo_name(algo),
                              d->label, algo == PX_ALGO_POISSON ? "not a finite count >= 0" : "not finite", i);
        }
    }
    if ((algo == PX_ALGO_LOGIT || algo == PX_ALGO_SVC) && (pos == 0 || pos == n))
        return px_err_set(e, PX_EINVAL, "cannot fit %s model: label '%s' has only one class in the training rows",
                          px_algo_name(algo), d->label);
    return 0;
}

static int oom(px_err *e) { return px_err_set(e, PX_ENOMEM, "cannot fit model: out of memory"); }

px_model *px_model_fit(const px_dataset *d, const size_t *rows, size_t nrows, const px_fit_params *pp,
                       px_fit_info *info, px_err *e)
{
    double t0 = px_mono_s();
    px_fit_params p = pp ? *pp : px_fit_default_params(PX_ALGO_LOGIT);
    px_model *m = NULL;
    double *X = NULL, *y = NULL, *raw = NULL, *X2 = NULL;
    int *dcol = NULL;
    size_t **maps = NULL;
    px_glm_fit fit;
    int rc = 0; /* < 0: failed, e says why */
    memset(&fit, 0, sizeof fit);
    if (!d) {
        px_err_set(e, PX_EINVAL, "cannot fit model: no dataset");
        return NULL;
    }
    if ((unsigned)p.algo > PX_ALGO_SVR) {
        px_err_set(e, PX_EINVAL, "cannot fit model: unknown algorithm");
        return NULL;
    }
    const char *an = px_algo_name(p.algo);
    if (!rows) nrows = d->n;
    if (nrows == 0) {
        px_err_set(e, PX_EINVAL, "cannot fit %s model on '%s': no training rows", an, d->table);
        return NULL;
    }
    for (size_t r = 0; rows && r < nrows; r++)
        if (rows[r] >= d->n) {
            px_err_set(e, PX_EINVAL, "cannot fit %s model on '%s': row %zu out of range", an, d->table, rows[r]);
            return NULL;
        }
    if (check_labels(p.algo, d, rows, nrows, e) < 0) return NULL;

    m = calloc(1, sizeof *m);
    if (!m) {
        rc = oom(e);
        goto done;
    }
    m->algo = p.algo;
    model_default_bounds(m);
    if (p.algo == PX_ALGO_POISSON || p.algo == PX_ALGO_SVR) {
        /* a regression predicts within the labels it was trained on (and max_value) */
        m->v_lo = INFINITY;
        m->v_hi = -INFINITY;
        for (size_t r = 0; r < nrows; r++) {
            double yv = d->y[rows ? rows[r] : r];
            if (yv < m->v_lo) m->v_lo = yv;
            if (yv > m->v_hi) m->v_hi = yv;
        }
        if (p.algo == PX_ALGO_POISSON && m->v_lo < 0) m->v_lo = 0;
        if (m->v_hi > p.max_value) m->v_hi = p.max_value;
        if (m->v_lo > m->v_hi) m->v_lo = m->v_hi;
    }
    m->nf = d->p;
    m->n_train = nrows;
    if ((rc = px_enc_fit(d, rows, nrows, &m->f, &m->ncols, e)) < 0) {
        m->nf = 0;
        goto done;
    }
    if (m->ncols < 2) {
        rc = px_err_set(e, PX_EINVAL,
                        "cannot fit %s model on '%s': every feature is constant (or missing) in the training rows", an,
                        d->table);
        goto done;
    }
    size_t k = m->ncols;
    if (nrows > (size_t)-1 / sizeof(double) / k) {
        rc = oom(e);
        goto done;
    }
    X = malloc(nrows * k * sizeof *X);
    y = malloc(nrows * sizeof *y);
    raw = malloc(m->nf * sizeof *raw);
    dcol = malloc(m->nf * sizeof *dcol);
    if (!X || !y || !raw || !dcol) {
        rc = oom(e);
        goto done;
    }
    for (size_t j = 0; j < m->nf; j++) dcol[j] = (int)j;
    if (!(maps = level_maps(m, d, dcol))) {
        rc = oom(e);
        goto done;
    }
    for (size_t r = 0; r < nrows; r++) {
        size_t i = rows ? rows[r] : r;
        if ((rc = raw_of_row(m, d, dcol, maps, i, raw, e)) < 0) goto done;
        px_enc_row(m->f, m->nf, raw, X + r * k, k);
        y[r] = d->y[i];
    }

    if (is_glm(p.algo)) {
        size_t bad;
        rc = px_glm_fit_family(p.algo == PX_ALGO_LOGIT ? PX_FAM_LOGIT : PX_FAM_POISSON, X, y, NULL, NULL, nrows, k,
                               &p.glm, &fit, &bad, e);
        if (rc < 0) {
            if (rc == PX_EINVAL && bad != (size_t)-1 && bad < k) {
                char nm[128];
                px_enc_colname(m->f, m->nf, bad, nm, sizeof nm);
                px_err_set(e, PX_EINVAL,
                           "cannot fit %s model on '%s': singular design: column '%s' is a linear combination of the "
                           "columns before it",
                           an, d->table, nm);
                px_err_hint(e, "drop one of the collinear features (or add a ridge penalty)");
            }
            goto done;
        }
        m->beta = fit.beta;
        m->cov = fit.cov;
        fit.beta = fit.cov = NULL;
        m->l2 = p.glm.l2;
        m->iterations = fit.iterations;
        m->converged = fit.converged;
        m->separation = fit.separation;
        m->deviance = fit.deviance;
        m->null_deviance = fit.null_deviance;
        m->loglik = fit.loglik;
        memcpy(m->warning, fit.warning, sizeof m->warning);
        if (model_compute_terms(m) < 0) {
            rc = oom(e);
            goto done;
        }
        /* the linear predictor's range on the training rows: predictions beyond it
         * are extrapolations of a fit (with separation, towards 0 or 1 without limit) */
        m->eta_lo = INFINITY;
        m->eta_hi = -INFINITY;
        for (size_t r = 0; r < nrows; r++) {
            double eta = 0;
            for (size_t c = 0; c < k; c++) eta += m->beta[c] * X[r * k + c];
            if (eta < m->eta_lo) m->eta_lo = eta;
            if (eta > m->eta_hi) m->eta_hi = eta;
        }
        if (!(m->eta_lo <= m->eta_hi)) {
            rc = px_err_set(e, PX_EINVAL, "cannot fit %s model on '%s': the linear predictor is not finite", an,
                            d->table);
            goto done;
        }
    } else {
        /* the SVM sees the standardized design without the intercept column */
        size_t q = k - 1;
        X2 = malloc(nrows * q * sizeof *X2);
        if (!X2) {
            rc = oom(e);
            goto done;
        }
        for (size_t r = 0; r < nrows; r++) memcpy(X2 + r * q, X + r * k + 1, q * sizeof *X2);
        free(X);
        X = NULL;
        p.svm.type = p.algo == PX_ALGO_SVC ? PX_SVM_SVC : PX_SVM_SVR;
        px_svm_info si;
        m->svm = px_svm_fit(X2, y, nrows, q, &p.svm, &si, e);
        if (!m->svm) {
            rc = -1;
            goto done;
        }
        if (si.n_used < si.n_rows)
            snprintf(m->warning, sizeof m->warning, "trained on a seeded subsample of %zu of %zu rows (max_rows)",
                     si.n_used, si.n_rows);
    }
    if (info) {
        memset(info, 0, sizeof *info);
        info->n_train = nrows;
        info->iterations = m->iterations;
        info->converged = is_glm(p.algo) ? m->converged : 1;
        info->separation = m->separation;
        info->deviance = m->deviance;
        info->null_deviance = m->null_deviance;
        if (m->svm) info->svm = *px_svm_get_info(m->svm);
        memcpy(info->warning, m->warning, sizeof info->warning);
    }
done:
    if (rc < 0) {
        px_model_free(m);
        m = NULL;
    }
    px_glm_fit_release(&fit);
    free_maps(maps, d->p);
    free(X);
    free(X2);
    free(y);
    free(raw);
    free(dcol);
    if (m && info) info->seconds = px_mono_s() - t0;
    return m;
}

/* ---- prediction ---------------------------------------------------------- */

int px_model_predict(const px_model *m, const double *raw, double *value, double *contrib, px_err *e)
{
    int rc = px_enc_check(m->f, m->nf, raw, e);
    if (rc < 0) return rc;
    size_t k = m->ncols;
    double stack[2 * STACK_COLS], *x = stack;
    if (k > STACK_COLS) {
        x = malloc(2 * k * sizeof *x);
        if (!x) return px_err_set(e, PX_ENOMEM, "cannot predict: out of memory");
    }
    px_enc_row(m->f, m->nf, raw, x, k);
    if (is_glm(m->algo)) {
        double eta = 0;
        for (size_t c = 0; c < k; c++) eta += m->beta[c] * x[c];
        if (eta < m->eta_lo) eta = m->eta_lo;
        if (eta > m->eta_hi) eta = m->eta_hi;
        *value = bound_value(m, m->algo == PX_ALGO_LOGIT ? 1 / (1 + exp(-eta)) : exp(eta));
        if (contrib)
            for (size_t j = 0; j < m->nf; j++) {
                const px_feature_info *f = &m->f[j];
                double s = 0;
                for (size_t c = f->col; c < f->col + f->ncols; c++) s += m->beta[c] * x[c];
                contrib[j] = s;
            }
    } else {
        /* design without the intercept; a feature set to its mean / reference is all zeros */
        double *z = x + 1, *t = x + k;
        double v = bound_value(m, px_svm_predict(m->svm, z));
        *value = v;
        if (contrib)
            for (size_t j = 0; j < m->nf; j++) {
                const px_feature_info *f = &m->f[j];
                contrib[j] = 0;
                if (f->dropped) continue;
                memcpy(t, z, (k - 1) * sizeof *t);
                int nonzero = 0;
                for (size_t c = f->col; c < f->col + f->ncols; c++) {
                    nonzero |= t[c - 1] != 0;
                    t[c - 1] = 0;
                }
                if (nonzero) contrib[j] = v - bound_value(m, px_svm_predict(m->svm, t));
            }
        if (isnan(v)) rc = px_err_set(e, PX_ENOMEM, "cannot predict: out of memory");
    }
    if (x != stack) free(x);
    return rc;
}

void px_model_raw_row(const px_model *m, const double *num, const char *const *text, double *raw)
{
    px_enc_raw(m->f, m->nf, num, text, raw);
}

int px_model_score(const px_model *m, const px_dataset *d, const size_t *rows, size_t n, double *out, px_err *e)
{
    int *dcol = malloc((m->nf ? m->nf : 1) * sizeof *dcol);
    double *raw = malloc((m->nf ? m->nf : 1) * sizeof *raw);
    size_t **maps = NULL;
    int rc = 0;
    if (!dcol || !raw) {
        rc = px_err_set(e, PX_ENOMEM, "cannot score: out of memory");
        goto done;
    }
    if ((rc = match_columns(m, d, dcol, e)) < 0) goto done;
    if (!(maps = level_maps(m, d, dcol))) {
        rc = px_err_set(e, PX_ENOMEM, "cannot score: out of memory");
        goto done;
    }
    for (size_t r = 0; r < n; r++) {
        size_t i = rows ? rows[r] : r;
        if (i >= d->n) {
            rc = px_err_set(e, PX_EINVAL, "cannot score dataset '%s': row %zu out of range", d->table, i);
            goto done;
        }
        if ((rc = raw_of_row(m, d, dcol, maps, i, raw, e)) < 0) goto done;
        if ((rc = px_model_predict(m, raw, &out[r], NULL, e)) < 0) goto done;
    }
done:
    free_maps(maps, m->nf);
    free(dcol);
    free(raw);
    return rc;
}

void px_model_bounds(const px_model *m, double *eta_lo, double *eta_hi, double *lo, double *hi)
{
    if (eta_lo) *eta_lo = m->eta_lo;
    if (eta_hi) *eta_hi = m->eta_hi;
    if (lo) *lo = m->v_lo;
    if (hi) *hi = m->v_hi;
}

/* ---- the design matrix, for models fitted on the same encoding (hier.c) ----- */

size_t px_model_ncols(const px_model *m)
{
    return m->ncols;
}

int px_model_design_row(const px_model *m, const double *raw, double *out, px_err *e)
{
    int rc = px_enc_check(m->f, m->nf, raw, e);
    if (rc == 0) px_enc_row(m->f, m->nf, raw, out, m->ncols);
    return rc;
}

int px_model_design(const px_model *m, const px_dataset *d, const size_t *rows, size_t n, double *X, px_err *e)
{
    int *dcol = malloc((m->nf ? m->nf : 1) * sizeof *dcol);
    double *raw = malloc((m->nf ? m->nf : 1) * sizeof *raw);
    size_t **maps = NULL;
    int rc = 0;
    if (!dcol || !raw) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = match_columns(m, d, dcol, e)) < 0) goto done;
    if (!(maps = level_maps(m, d, dcol))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t r = 0; r < n; r++) {
        size_t i = rows ? rows[r] : r;
        if (i >= d->n) {
            rc = px_err_set(e, PX_EINVAL, "dataset '%s': row %zu out of range", d->table, i);
            goto done;
        }
        if ((rc = raw_of_row(m, d, dcol, maps, i, raw, e)) < 0) goto done;
        if ((rc = px_model_design_row(m, raw, X + r * m->ncols, e)) < 0) goto done;
    }
done:
    free_maps(maps, m->nf);
    free(dcol);
    free(raw);
    return rc;
}
