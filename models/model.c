/* model.c: a px_model is an encoding (one px_feature_info per raw input) plus
 * an algorithm: a GLM (logit, poisson) on the standardized design, or a LibSVM
 * model on the same design without the intercept. It predicts with per-feature
 * contributions, reports coefficients on the original scale, and serializes to
 * the line-oriented text "prognos-model 1" (numbers %.17g in the C locale, so a
 * load gives back the same doubles; the last line is a SHA-256 of the rest).
 * Every prediction is bounded (px_model_predict, the one place every caller goes
 * through): a GLM's linear predictor is clamped to the range it took on the
 * training rows, and the value to the bounds stored with the model (see
 * bound_value). */
#include "models/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MODEL_MAGIC "prognos-model 1\n"
#define STACK_COLS 512

struct px_model {
    px_algo algo;
    size_t nf;          /* raw inputs */
    px_feature_info *f; /* nf, owned */
    size_t ncols;       /* GLM design columns, intercept included (SVM: ncols - 1 inputs) */
    size_t n_train;
    /* logit, poisson: on the standardized design */
    double *beta, *cov; /* ncols, ncols*ncols (row-major) */
    double l2;
    int iterations, converged, separation;
    double deviance, null_deviance, loglik;
    /* prediction bounds: the linear predictor's range on the training rows (GLMs;
     * -inf..inf in a file saved before bounds existed) and the value's range */
    double eta_lo, eta_hi, v_lo, v_hi;
    char warning[256];
    px_term *terms; /* ncols, on the original scale (NULL for SVMs) */
    size_t nterms;
    /* svc, svr */
    px_svm *svm;
};

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
static void default_bounds(px_model *m)
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

static int is_glm(px_algo a) { return a == PX_ALGO_LOGIT || a == PX_ALGO_POISSON; }
const double *px_model_beta(const px_model *m) { return is_glm(m->algo) ? m->beta : NULL; }

/* Coefficients on the original scale. A numeric feature enters as
 * (x - mean) / sd, so its coefficient is beta / sd and the intercept absorbs
 * -beta * mean / sd; one-hot columns are unchanged. This is a linear map b = T beta,
 * so Cov(b) = T Cov(beta) T' exactly (the SEs R reports for the unscaled fit). */
static int compute_terms(px_model *m)
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
    default_bounds(m);
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
        if (compute_terms(m) < 0) {
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

/* ---- serialization ------------------------------------------------------- */

/* %.17g is exact for doubles; every NaN is written as "nan" so that a load
 * followed by a save gives the same bytes. */
static int put_num(px_buf *b, const char *pre, double v)
{
    if (isnan(v)) return px_buf_printf(b, "%snan", pre);
    return px_buf_printf(b, "%s%.17g", pre, v);
}

static int put_str(px_buf *b, const char *pre, const char *s)
{
    return px_buf_printf(b, "%s%zu %s", pre, strlen(s), s);
}

static int save_body(const px_model *m, px_buf *b, px_err *e)
{
    int bad = px_buf_adds(b, MODEL_MAGIC) < 0 || px_buf_printf(b, "algo %s\n", px_algo_name(m->algo)) < 0 ||
              px_buf_printf(b, "n_train %zu\nfeatures %zu %zu\n", m->n_train, m->nf, m->ncols) < 0;
    for (size_t j = 0; !bad && j < m->nf; j++) {
        const px_feature_info *f = &m->f[j];
        bad = put_str(b, "feature ", f->name) < 0;
        if (f->kind == PX_COL_NUMERIC) {
            bad = bad ||
                  px_buf_printf(b, " numeric %s %zu %zu", f->dropped ? "dropped" : "used", f->col, f->ncols) < 0 ||
                  put_num(b, " ", f->mean) < 0 || put_num(b, " ", f->sd) < 0 || put_num(b, " ", f->min) < 0 ||
                  put_num(b, " ", f->max) < 0 || px_buf_addc(b, '\n') < 0;
        } else {
            bad = bad || px_buf_printf(b, " categorical %s %zu %zu %zu %zu\n", f->dropped ? "dropped" : "used", f->col,
                                       f->ncols, f->nlevels, f->ref) < 0;
            for (size_t l = 0; !bad && l < f->nlevels; l++)
                bad = put_str(b, "level ", f->levels[l]) < 0 || px_buf_addc(b, '\n') < 0;
        }
    }
    bad = bad || put_str(b, "warning ", m->warning) < 0 || px_buf_addc(b, '\n') < 0;
    if (!bad && is_glm(m->algo)) {
        size_t k = m->ncols;
        bad = put_num(b, "glm ", m->l2) < 0 ||
              px_buf_printf(b, " %d %d %d", m->iterations, m->converged, m->separation) < 0 ||
              put_num(b, " ", m->deviance) < 0 || put_num(b, " ", m->null_deviance) < 0 ||
              put_num(b, " ", m->loglik) < 0 || px_buf_adds(b, "\nbeta") < 0;
        for (size_t c = 0; !bad && c < k; c++) bad = put_num(b, " ", m->beta[c]) < 0;
        bad = bad || px_buf_addc(b, '\n') < 0;
        for (size_t r = 0; !bad && r < k; r++) {
            bad = px_buf_adds(b, "cov") < 0;
            for (size_t c = 0; !bad && c < k; c++) bad = put_num(b, " ", m->cov[r * k + c]) < 0;
            bad = bad || px_buf_addc(b, '\n') < 0;
        }
    } else if (!bad) {
        px_buf sv = {0};
        if (px_svm_save(m->svm, &sv, e) < 0) return PX_ENOMEM;
        bad = px_buf_printf(b, "svm %zu\n", sv.len) < 0 || px_buf_add(b, sv.data, sv.len) < 0;
        px_buf_release(&sv);
    }
    /* optional line (absent in files saved before bounds existed) */
    bad = bad || put_num(b, "bounds ", m->eta_lo) < 0 || put_num(b, " ", m->eta_hi) < 0 ||
          put_num(b, " ", m->v_lo) < 0 || put_num(b, " ", m->v_hi) < 0 || px_buf_addc(b, '\n') < 0;
    bad = bad || px_buf_adds(b, "end\n") < 0;
    return bad ? px_err_set(e, PX_ENOMEM, "cannot save model: out of memory") : 0;
}

int px_model_save(const px_model *m, px_buf *out, px_err *e)
{
    px_buf b = {0};
    locale_t loc = px_c_locale();
    if (!loc) return px_err_set(e, PX_ENOMEM, "cannot save model: no C locale");
    locale_t old = uselocale(loc);
    int rc = save_body(m, &b, e);
    uselocale(old);
    if (rc == 0) {
        char hex[65];
        px_sha256_hex(b.data, b.len, hex);
        if (px_buf_printf(&b, "sha256 %s\n", hex) < 0 || px_buf_add(out, b.data, b.len) < 0)
            rc = px_err_set(e, PX_ENOMEM, "cannot save model: out of memory");
    }
    px_buf_release(&b);
    return rc;
}

/* ---- loading ------------------------------------------------------------- */

/* One step of the parser: on failure it names what was expected. */
#define NEED(cond, what)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            why = (what);                                                                                              \
            goto bad;                                                                                                  \
        }                                                                                                              \
    } while (0)

static size_t left(const px_tx *c) { return (size_t)(c->end - c->p); }

static int parse_feature(px_tx *c, px_feature_info *f, size_t *next_col, const char **why_out)
{
    const char *why = NULL, *s;
    size_t len;
    NEED(px_tx_lit(c, "feature ") == 0 && px_tx_str(c, &s, &len) == 0, "a feature line");
    NEED(len >= 1 && len < sizeof f->name, "a feature name of 1 to 63 bytes");
    memcpy(f->name, s, len);
    f->name[len] = '\0';
    int numeric;
    if (px_tx_lit(c, " numeric ") == 0)
        numeric = 1;
    else if (px_tx_lit(c, " categorical ") == 0)
        numeric = 0;
    else
        NEED(0, "the feature's kind");
    f->kind = numeric ? PX_COL_NUMERIC : PX_COL_CATEGORICAL;
    if (px_tx_lit(c, "used ") == 0)
        f->dropped = 0;
    else if (px_tx_lit(c, "dropped ") == 0)
        f->dropped = 1;
    else
        NEED(0, "used or dropped");
    NEED(px_tx_size(c, &f->col) == 0 && px_tx_lit(c, " ") == 0 && px_tx_size(c, &f->ncols) == 0,
         "the feature's columns");
    if (f->dropped)
        NEED(f->col == 0 && f->ncols == 0, "no columns for a dropped feature");
    else
        NEED(f->col == *next_col && f->ncols >= 1, "the next design columns");
    if (numeric) {
        NEED(px_tx_lit(c, " ") == 0 && px_tx_num(c, &f->mean) == 0 && px_tx_lit(c, " ") == 0 &&
                 px_tx_num(c, &f->sd) == 0 && px_tx_lit(c, " ") == 0 && px_tx_num(c, &f->min) == 0 &&
                 px_tx_lit(c, " ") == 0 && px_tx_num(c, &f->max) == 0 && px_tx_lit(c, "\n") == 0,
             "mean, sd, min and max");
        NEED(f->min <= f->max && f->sd >= 0, "a range and an sd >= 0");
        if (!f->dropped) NEED(f->ncols == 1 && f->sd > 0, "one column and sd > 0 for a used numeric feature");
    } else {
        size_t nl;
        NEED(px_tx_lit(c, " ") == 0 && px_tx_size(c, &nl) == 0 && px_tx_lit(c, " ") == 0 &&
                 px_tx_size(c, &f->ref) == 0 && px_tx_lit(c, "\n") == 0,
             "the number of levels and the reference");
        /* every level line takes at least 9 bytes: bound the allocation by the input */
        NEED(nl <= left(c) / 9, "no more levels than the input holds");
        if (f->dropped)
            NEED(nl <= 1 && (f->ref < nl || (nl == 0 && f->ref == 0)), "at most one level");
        else
            NEED(nl >= 2 && f->ref < nl && f->ncols == nl - 1, "nlevels - 1 columns");
        f->levels = calloc(nl ? nl : 1, sizeof *f->levels);
        NEED(f->levels, "memory");
        /* f->nlevels counts the levels allocated so far, so a failure frees exactly those */
        for (size_t l = 0; l < nl; l++) {
            NEED(px_tx_lit(c, "level ") == 0 && px_tx_str(c, &s, &len) == 0, "a level line");
            f->levels[l] = malloc(len + 1);
            NEED(f->levels[l], "memory");
            f->nlevels = l + 1;
            memcpy(f->levels[l], s, len);
            f->levels[l][len] = '\0';
            NEED(l == 0 || strcmp(f->levels[l - 1], f->levels[l]) < 0, "levels in strictly increasing byte order");
            NEED(px_tx_lit(c, "\n") == 0, "the end of a level line");
        }
    }
    *next_col += f->ncols;
    return 0;
bad:
    *why_out = why;
    return -1;
}

static px_model *parse_model(const char *t, size_t len, const char **why_out, const char **at)
{
    const char *why = NULL;
    px_tx c = {t, t + len};
    px_model *m = calloc(1, sizeof *m);
    if (!m) {
        *why_out = "memory";
        return NULL;
    }
    const char *s;
    size_t slen;
    NEED(px_tx_lit(&c, MODEL_MAGIC) == 0, "the first line \"prognos-model 1\"");
    NEED(px_tx_lit(&c, "algo ") == 0, "an algo line");
    {
        static const char *const names[] = {"logit\n", "poisson\n", "svc\n", "svr\n"};
        int found = -1;
        for (int a = 0; a < 4 && found < 0; a++)
            if (px_tx_lit(&c, names[a]) == 0) found = a;
        NEED(found >= 0, "a known algorithm");
        m->algo = (px_algo)found;
    }
    size_t nf, ncols;
    NEED(px_tx_lit(&c, "n_train ") == 0 && px_tx_size(&c, &m->n_train) == 0 && px_tx_lit(&c, "\nfeatures ") == 0 &&
             px_tx_size(&c, &nf) == 0 && px_tx_lit(&c, " ") == 0 && px_tx_size(&c, &ncols) == 0 &&
             px_tx_lit(&c, "\n") == 0,
         "n_train and features lines");
    NEED(nf >= 1 && nf <= left(&c) / 30, "a feature count the input can hold");
    NEED(ncols >= 2 && ncols <= left(&c) / 2 + 2, "a column count the input can hold");
    m->f = calloc(nf, sizeof *m->f);
    NEED(m->f, "memory");
    m->nf = nf;
    size_t next = 1;
    for (size_t j = 0; j < nf; j++) {
        if (parse_feature(&c, &m->f[j], &next, &why) < 0) goto bad;
        for (size_t q = 0; q < j; q++) NEED(strcmp(m->f[q].name, m->f[j].name) != 0, "unique feature names");
    }
    NEED(next == ncols, "feature columns that add up to the column count");
    m->ncols = ncols;
    NEED(px_tx_lit(&c, "warning ") == 0 && px_tx_str(&c, &s, &slen) == 0 && px_tx_lit(&c, "\n") == 0 &&
             slen < sizeof m->warning,
         "a warning line");
    memcpy(m->warning, s, slen);
    m->warning[slen] = '\0';
    if (is_glm(m->algo)) {
        long it, cv, sep;
        size_t k = ncols;
        NEED(px_tx_lit(&c, "glm ") == 0 && px_tx_num(&c, &m->l2) == 0 && m->l2 >= 0 && px_tx_lit(&c, " ") == 0 &&
                 px_tx_int(&c, &it) == 0 && it >= 0 && px_tx_lit(&c, " ") == 0 && px_tx_int(&c, &cv) == 0 &&
                 (cv == 0 || cv == 1) && px_tx_lit(&c, " ") == 0 && px_tx_int(&c, &sep) == 0 &&
                 (sep == 0 || sep == 1) && px_tx_lit(&c, " ") == 0 && px_tx_num(&c, &m->deviance) == 0 &&
                 px_tx_lit(&c, " ") == 0 && px_tx_num(&c, &m->null_deviance) == 0 && px_tx_lit(&c, " ") == 0 &&
                 px_tx_num(&c, &m->loglik) == 0 && px_tx_lit(&c, "\n") == 0,
             "the glm line");
        m->iterations = (int)it;
        m->converged = (int)cv;
        m->separation = (int)sep;
        NEED(k <= left(&c) / 2 / k, "a covariance the input can hold");
        m->beta = malloc(k * sizeof *m->beta);
        m->cov = malloc(k * k * sizeof *m->cov);
        NEED(m->beta && m->cov, "memory");
        NEED(px_tx_lit(&c, "beta") == 0, "the beta line");
        for (size_t q = 0; q < k; q++)
            NEED(px_tx_lit(&c, " ") == 0 && px_tx_num(&c, &m->beta[q]) == 0, "finite coefficients");
        NEED(px_tx_lit(&c, "\n") == 0, "the end of the beta line");
        for (size_t r = 0; r < k; r++) {
            NEED(px_tx_lit(&c, "cov") == 0, "a cov line");
            for (size_t q = 0; q < k; q++)
                NEED(px_tx_lit(&c, " ") == 0 && px_tx_gnum(&c, &m->cov[r * k + q]) == 0, "covariances");
            NEED(px_tx_lit(&c, "\n") == 0, "the end of a cov line");
        }
        for (size_t r = 0; r < k; r++)
            for (size_t q = 0; q < r; q++)
                NEED(m->cov[r * k + q] == m->cov[q * k + r] || (isnan(m->cov[r * k + q]) && isnan(m->cov[q * k + r])),
                     "a symmetric covariance");
        NEED(compute_terms(m) == 0, "memory");
    } else {
        size_t sl;
        NEED(px_tx_lit(&c, "svm ") == 0 && px_tx_size(&c, &sl) == 0 && px_tx_lit(&c, "\n") == 0 && sl <= left(&c),
             "an svm section header");
        px_err se;
        m->svm = px_svm_load((const unsigned char *)c.p, sl, &se);
        NEED(m->svm || se.code != PX_ENOMEM, "memory");
        NEED(m->svm, "a valid svm section");
        c.p += sl;
        NEED(px_svm_inputs(m->svm) == ncols - 1, "an svm with one input per design column");
        NEED(px_svm_kind(m->svm) == (m->algo == PX_ALGO_SVC ? PX_SVM_SVC : PX_SVM_SVR), "an svm of the model's type");
    }
    default_bounds(m);
    if (px_tx_lit(&c, "bounds ") == 0) {
        NEED(px_tx_gnum(&c, &m->eta_lo) == 0 && px_tx_lit(&c, " ") == 0 && px_tx_gnum(&c, &m->eta_hi) == 0 &&
                 px_tx_lit(&c, " ") == 0 && px_tx_gnum(&c, &m->v_lo) == 0 && px_tx_lit(&c, " ") == 0 &&
                 px_tx_gnum(&c, &m->v_hi) == 0 && px_tx_lit(&c, "\n") == 0,
             "the bounds line");
        NEED(m->eta_lo <= m->eta_hi && m->v_lo <= m->v_hi && isfinite(m->v_lo), "ordered bounds");
    }
    NEED(px_tx_lit(&c, "end\n") == 0 && c.p == c.end, "the end line");
    return m;
bad:
    *why_out = why;
    *at = c.p;
    px_model_free(m);
    return NULL;
}

px_model *px_model_load(const unsigned char *bytes, size_t len, px_err *e)
{
    const char *t = (const char *)bytes;
    const size_t tl = 7 + 64 + 1; /* "sha256 " hex "\n" */
    if (!bytes || len < strlen(MODEL_MAGIC) + tl || memcmp(t, MODEL_MAGIC, strlen(MODEL_MAGIC)) != 0) {
        px_err_set(e, PX_ECORRUPT, "cannot load model: not a prognos model (or truncated)");
        return NULL;
    }
    if (memcmp(t + len - tl, "sha256 ", 7) != 0 || t[len - 1] != '\n' || (len > tl && t[len - tl - 1] != '\n')) {
        px_err_set(e, PX_ECORRUPT, "cannot load model: truncated (no checksum line at the end)");
        return NULL;
    }
    char hex[65];
    px_sha256_hex(bytes, len - tl, hex);
    if (memcmp(hex, t + len - tl + 7, 64) != 0) {
        px_err_set(e, PX_ECORRUPT, "cannot load model: checksum mismatch (the bytes are corrupt or truncated)");
        return NULL;
    }
    locale_t loc = px_c_locale();
    if (!loc) {
        px_err_set(e, PX_ENOMEM, "cannot load model: no C locale");
        return NULL;
    }
    locale_t old = uselocale(loc);
    const char *why = "memory", *at = t;
    px_model *m = parse_model(t, len - tl, &why, &at);
    uselocale(old);
    if (!m) {
        int line = 1;
        for (const char *q = t; q < at; q++) line += *q == '\n';
        if (strcmp(why, "memory") == 0)
            px_err_set(e, PX_ENOMEM, "cannot load model: out of memory");
        else
            px_err_set(e, PX_ECORRUPT, "cannot load model: malformed or inconsistent content at line %d: expected %s",
                       line, why);
    }
    return m;
}

void px_model_bounds(const px_model *m, double *eta_lo, double *eta_hi, double *lo, double *hi)
{
    if (eta_lo) *eta_lo = m->eta_lo;
    if (eta_hi) *eta_hi = m->eta_hi;
    if (lo) *lo = m->v_lo;
    if (hi) *hi = m->v_hi;
}

/* ---- the design matrix, for models fitted on the same encoding (glmm.c) ---- */

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
