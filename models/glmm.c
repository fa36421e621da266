/* glmm.c: the random-intercept GLM (logit for 0/1 outcomes, Poisson/log for
 * counts such as days) fitted by the Laplace approximation, as lme4::glmer(...,
 * nAGQ = 1) fits it, and the per-unit empirical-Bayes step that applies a fitted
 * model to new rows without refitting (the CMS Hospital Compare standardized ratio).
 *
 * Model: eta_i = x_i'beta + tau v_j(i), v_j ~ N(0, 1) (lme4's spherical random
 * effect; the facility intercept is u_j = tau v_j around the fixed intercept
 * beta[0] = mu). The Laplace deviance optimized over (beta, tau) is lme4's
 *   F = sum_j [ -2 sum_i l_i(vhat_j) + vhat_j^2 + log(1 + tau^2 sum_i w_i(vhat_j)) ]
 * with vhat_j the conditional mode (a 1-D concave maximization per group, by
 * safeguarded Newton) and w_i the GLM weight at the mode (mu(1-mu) or mu).
 * The gradient of F is exact (implicit differentiation through vhat_j); the
 * Newton matrix is the profiled penalized-likelihood Hessian (X'WX minus each
 * group's Schur term, as PIRLS forms it) for beta with the tau row and column
 * by a finite difference of the exact gradient; every step is accepted only
 * when F decreases (halving otherwise). Rows are processed grouped by unit.
 * Invariant: column 0 of X is the intercept. */
#include "models/internal.h"
#include <cjson/cJSON.h>
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_linalg.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <gsl/gsl_sf_gamma.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ETA_MAX 700.0          /* exp() stays finite */
#define INNER_MAX 100
#define INNER_TOL 1e-12
#define HALVINGS 40

px_glmm_params px_glmm_default_params(void)
{
    px_glmm_params p;
    memset(&p, 0, sizeof p);
    p.max_iter = 200;
    p.tol = 1e-12;
    return p;
}

void px_glmm_fit_release(px_glmm_fit *f)
{
    if (!f) return;
    free(f->beta), free(f->se), free(f->mode), free(f->post_sd), free(f->n_group), free(f->y_group);
    memset(f, 0, sizeof *f);
}

/* ---- per-row GLM pieces -------------------------------------------------- */

/* mean, weight w = dmu/deta, its derivative dw/deta and the log-likelihood
 * (up to the constant -log y! for Poisson, added by the caller). */
static inline void unit(int poisson, double eta, double y, double *mu, double *w, double *w1, double *ll)
{
    if (eta > ETA_MAX) eta = ETA_MAX;
    if (eta < -ETA_MAX) eta = -ETA_MAX;
    if (poisson) {
        double m = exp(eta);
        *mu = m, *w = m, *w1 = m;
        *ll = y * eta - m;
    } else {
        /* log(1 + e^eta) without overflow */
        double l1p = eta > 0 ? eta + log1p(exp(-eta)) : log1p(exp(eta));
        double m = eta >= 0 ? 1 / (1 + exp(-eta)) : exp(eta) / (1 + exp(eta));
        double w0 = m * (1 - m);
        *mu = m, *w = w0, *w1 = w0 * (1 - 2 * m);
        *ll = y * eta - l1p;
    }
}

typedef struct gdata {
    int poisson;
    const double *X, *y;  /* grouped order: group g holds rows [start[g], start[g+1]) */
    size_t n, k, ng;
    const size_t *start;
    double *off;          /* n: x_i'beta for the current beta */
    double *v;            /* ng conditional modes (spherical), warm starts */
    double *H;            /* ng: 1 + tau^2 sum w at the mode */
    double llconst;       /* -sum log y! (Poisson), 0 (logit) */
} gdata;

/* Conditional mode of group g given offsets and tau: maximizes
 * h(v) = sum_i l(off_i + tau v) - v^2 / 2 (strictly concave). Returns h at the
 * mode, *Hg = -h''. */
static double group_mode(const gdata *d, size_t g, double tau, double *vg, double *Hg)
{
    size_t a = d->start[g], b = d->start[g + 1];
    double v = *vg, hv = 0, H = 1;
    for (int it = 0; it <= INNER_MAX; it++) {
        double s0 = 0, sw = 0, ll = 0, mu, w, w1, l;
        for (size_t i = a; i < b; i++) {
            unit(d->poisson, d->off[i] + tau * v, d->y[i], &mu, &w, &w1, &l);
            s0 += d->y[i] - mu, sw += w, ll += l;
        }
        double h = ll - v * v / 2;
        if (it > 0 && h < hv - 1e-13 * (1 + fabs(hv))) {
            /* overshoot: back towards the previous point (h is concave) */
            v = (v + *vg) / 2;
            if (fabs(v - *vg) < INNER_TOL) break;
            continue;
        }
        *vg = v, hv = h, H = 1 + tau * tau * sw;
        double step = (tau * s0 - v) / H;
        if (fabs(step) < INNER_TOL * (1 + fabs(v))) break;
        v += step;
    }
    *Hg = H;
    return hv;
}

/* The Laplace deviance at (beta, tau) with d->off already set; updates the modes. */
static double laplace_dev(gdata *d, double tau)
{
    double F = -2 * d->llconst;
    for (size_t g = 0; g < d->ng; g++) {
        double h = group_mode(d, g, tau, &d->v[g], &d->H[g]);
        F += -2 * h + log(d->H[g]);
    }
    return F;
}

static void set_offsets(gdata *d, const double *beta)
{
    for (size_t i = 0; i < d->n; i++) {
        const double *x = d->X + i * d->k;
        double s = 0;
        for (size_t j = 0; j < d->k; j++) s += x[j] * beta[j];
        d->off[i] = s;
    }
}

/* Exact gradient of F (k + 1 values: beta then tau) at the current modes, and
 * (when M is not NULL) the profiled Hessian of the penalized deviance for the
 * beta block, 2 (X'WX - sum_j c_j c_j'), c_j = tau sum_i w_i x_i / sqrt(H_j). */
static void gradient(const gdata *d, double tau, double *grad, double *M, double *cbuf)
{
    size_t k = d->k, K = k + 1;
    memset(grad, 0, K * sizeof *grad);
    if (M) memset(M, 0, K * K * sizeof *M);
    for (size_t g = 0; g < d->ng; g++) {
        size_t a = d->start[g], b = d->start[g + 1];
        double v = d->v[g], H = d->H[g];
        double s0 = 0, sw = 0, sw1 = 0, mu, w, w1, l;
        /* first pass: group sums */
        for (size_t i = a; i < b; i++) {
            unit(d->poisson, d->off[i] + tau * v, d->y[i], &mu, &w, &w1, &l);
            s0 += d->y[i] - mu, sw += w, sw1 += w1;
        }
        double Gv = tau * tau * tau * sw1 / H;   /* dG/dv at the mode */
        if (M) memset(cbuf, 0, k * sizeof *cbuf);
        for (size_t i = a; i < b; i++) {
            const double *x = d->X + i * k;
            unit(d->poisson, d->off[i] + tau * v, d->y[i], &mu, &w, &w1, &l);
            double ci = -2 * (d->y[i] - mu) + tau * tau * w1 / H - Gv * tau * w / H;
            for (size_t j = 0; j < k; j++) grad[j] += ci * x[j];
            if (M) {
                for (size_t r = 0; r < k; r++) {
                    double wx = w * x[r];
                    double *Mr = M + r * K;
                    for (size_t c = r; c < k; c++) Mr[c] += wx * x[c];
                    cbuf[r] += wx;
                }
            }
        }
        grad[k] += -2 * s0 * v + (2 * tau * sw + tau * tau * sw1 * v) / H + Gv * (s0 - tau * v * sw) / H;
        if (M) {
            double f = tau * tau / H;
            for (size_t r = 0; r < k; r++)
                for (size_t c = r; c < k; c++) M[r * K + c] -= f * cbuf[r] * cbuf[c];
        }
    }
    if (M)
        for (size_t r = 0; r < k; r++)
            for (size_t c = r; c < k; c++) M[r * K + c] = M[c * K + r] = 2 * M[r * K + c];
}

int px_glmm_fit_dense(px_algo algo, const double *X, const double *y, const size_t *group, size_t n, size_t k,
                      size_t ngroups, const px_glmm_params *pp, px_glmm_fit *fit, px_err *e)
{
    px_models_init(); /* GSL reports, never aborts */
    px_glmm_params p = pp ? *pp : px_glmm_default_params();
    int poisson = algo == PX_ALGO_POISSON;
    memset(fit, 0, sizeof *fit);
    if (algo != PX_ALGO_LOGIT && algo != PX_ALGO_POISSON)
        return px_err_set(e, PX_EINVAL, "a hierarchical model is a logit or poisson model, not %s", px_algo_name(algo));
    if (!X || !y || !group || n == 0 || k == 0 || ngroups == 0)
        return px_err_set(e, PX_EINVAL, "hierarchical fit: no rows, columns or groups");
    if (p.max_iter <= 0) p.max_iter = 200;
    if (!(p.tol > 0)) p.tol = 1e-12;
    for (size_t i = 0; i < n; i++) {
        if (group[i] >= ngroups)
            return px_err_set(e, PX_EINVAL, "hierarchical fit: row %zu names group %zu of %zu", i, group[i], ngroups);
        if (!(isfinite(y[i]) && y[i] >= 0 && (poisson || y[i] == 0 || y[i] == 1)))
            return px_err_set(e, PX_EINVAL, "hierarchical fit: row %zu has label %g, not %s", i, y[i],
                              poisson ? "a finite number >= 0" : "0 or 1");
        for (size_t j = 0; j < k; j++)
            if (!isfinite(X[i * k + j]))
                return px_err_set(e, PX_EINVAL, "hierarchical fit: row %zu column %zu is not finite", i, j);
    }
    size_t K = k + 1;
    int rc = 0;
    gdata d;
    memset(&d, 0, sizeof d);
    d.poisson = poisson, d.n = n, d.k = k, d.ng = ngroups;
    double *Xg = malloc(n * k * sizeof *Xg), *yg = malloc(n * sizeof *yg), *off = malloc(n * sizeof *off);
    size_t *start = calloc(ngroups + 1, sizeof *start), *pos = malloc(ngroups * sizeof *pos);
    double *v = calloc(ngroups, sizeof *v), *H = malloc(ngroups * sizeof *H);
    double *beta = calloc(K, sizeof *beta), *grad = malloc(K * sizeof *grad),
           *M = malloc(K * K * sizeof *M), *cbuf = malloc(K * sizeof *cbuf), *step = malloc(K * sizeof *step),
           *trial = malloc(K * sizeof *trial);
    gsl_matrix *A = gsl_matrix_alloc(K, K);
    gsl_vector *gv = gsl_vector_alloc(K), *sv = gsl_vector_alloc(K);
    px_glm_fit g0;
    memset(&g0, 0, sizeof g0);
    if (!Xg || !yg || !off || !start || !pos || !v || !H || !beta || !grad || !M || !cbuf || !step || !trial || !A ||
        !gv || !sv) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    /* rows grouped by unit (stable: each group's rows keep their order) */
    for (size_t i = 0; i < n; i++) start[group[i] + 1]++;
    for (size_t g = 0; g < ngroups; g++) start[g + 1] += start[g];
    for (size_t g = 0; g < ngroups; g++) pos[g] = start[g];
    for (size_t i = 0; i < n; i++) {
        size_t r = pos[group[i]]++;
        memcpy(Xg + r * k, X + i * k, k * sizeof *Xg);
        yg[r] = y[i];
        if (poisson) d.llconst -= gsl_sf_lngamma(y[i] + 1);
    }
    for (size_t g = 0; g < ngroups; g++)
        if (start[g + 1] == start[g]) {
            rc = px_err_set(e, PX_EINVAL, "hierarchical fit: group %zu has no rows", g);
            goto out;
        }
    d.X = Xg, d.y = yg, d.start = start, d.off = off, d.v = v, d.H = H;

    /* start: the given values, or the pooled GLM (no unit effects) and tau = 0.5 */
    if (p.start) {
        for (size_t j = 0; j < K; j++)
            if (!isfinite(p.start[j])) {
                rc = px_err_set(e, PX_EINVAL, "hierarchical fit: start value %zu is not finite", j);
                goto out;
            }
        memcpy(beta, p.start, K * sizeof *beta);
        if (!(beta[k] > 0)) beta[k] = 0.5;
    } else {
        px_glm_params gp = px_glm_default_params();
        gp.threads = p.threads > 0 ? p.threads : 2;
        if ((rc = px_glm_fit_family(poisson ? PX_FAM_POISSON : PX_FAM_LOGIT, X, y, NULL, NULL, n, k, &gp, &g0, NULL,
                                    e)) != 0)
            goto out;
        if (g0.separation) {
            rc = px_err_set(e, PX_EINVAL, "hierarchical fit: the outcome is separated by the covariates");
            px_err_detail(e, "%s", g0.warning);
            px_err_hint(e, "fit on more data or fewer features");
            goto out;
        }
        memcpy(beta, g0.beta, k * sizeof *beta);
        beta[k] = 0.5;
    }
    set_offsets(&d, beta);
    double F = laplace_dev(&d, beta[k]);
    int it, conv = 0;
    for (it = 0; it < p.max_iter && !conv; it++) {
        double tau = beta[k];
        gradient(&d, tau, grad, M, cbuf);
        /* the tau row/column: a central difference of the exact gradient */
        double h = 1e-5 * (fabs(tau) + 1e-3);
        double *vs = malloc(ngroups * sizeof *vs), *Hs = malloc(ngroups * sizeof *Hs);
        if (!vs || !Hs) {
            free(vs), free(Hs);
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(vs, v, ngroups * sizeof *v), memcpy(Hs, H, ngroups * sizeof *H);
        double gp[64], gm[64], *gpp = K <= 64 ? gp : malloc(K * sizeof *gpp), *gmm = K <= 64 ? gm : malloc(K * sizeof *gmm);
        if (!gpp || !gmm) {
            free(vs), free(Hs);
            if (K > 64) free(gpp), free(gmm);
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        laplace_dev(&d, tau + h);
        gradient(&d, tau + h, gpp, NULL, NULL);
        memcpy(v, vs, ngroups * sizeof *v);
        laplace_dev(&d, tau - h);
        gradient(&d, tau - h, gmm, NULL, NULL);
        memcpy(v, vs, ngroups * sizeof *v), memcpy(H, Hs, ngroups * sizeof *H);
        free(vs), free(Hs);
        for (size_t r = 0; r < K; r++) {
            double hr = (gpp[r] - gmm[r]) / (2 * h);
            M[r * K + k] = M[k * K + r] = hr;
        }
        if (K > 64) free(gpp), free(gmm);
        /* Newton direction; Levenberg damping when the matrix is not positive definite */
        double lambda = 0;
        for (int tries = 0;; tries++) {
            for (size_t r = 0; r < K; r++)
                for (size_t c = 0; c < K; c++)
                    gsl_matrix_set(A, r, c, M[r * K + c] + (r == c ? lambda * (1 + fabs(M[r * K + r])) : 0));
            gsl_error_handler_t *old = gsl_set_error_handler_off();
            int st = gsl_linalg_cholesky_decomp1(A);
            gsl_set_error_handler(old);
            if (st == GSL_SUCCESS) break;
            lambda = lambda ? lambda * 10 : 1e-6;
            if (tries > 30) {
                rc = px_err_set(e, PX_EINVAL, "hierarchical fit: the Newton matrix is not positive definite");
                px_err_hint(e, "a feature is (nearly) collinear with another or constant within every facility");
                goto out;
            }
        }
        for (size_t r = 0; r < K; r++) gsl_vector_set(gv, r, -grad[r]);
        if (gsl_linalg_cholesky_solve(A, gv, sv) != GSL_SUCCESS) {
            rc = px_err_set(e, PX_EINVAL, "hierarchical fit: cannot solve for the Newton step");
            goto out;
        }
        double dec = 0;
        for (size_t r = 0; r < K; r++) step[r] = gsl_vector_get(sv, r), dec -= step[r] * grad[r];
        /* step halving until F decreases (or the decrement is at rounding level) */
        double t = 1, Fn = F;
        int accepted = 0;
        for (int hv = 0; hv < HALVINGS; hv++, t /= 2) {
            for (size_t r = 0; r < K; r++) trial[r] = beta[r] + t * step[r];
            set_offsets(&d, trial);
            Fn = laplace_dev(&d, trial[k]);
            if (isfinite(Fn) && Fn <= F + 1e-12 * fabs(F)) {
                accepted = 1;
                break;
            }
        }
        if (!accepted) {
            set_offsets(&d, beta);
            laplace_dev(&d, beta[k]);
            conv = dec < 1e-6;   /* no further progress possible at this precision */
            break;
        }
        memcpy(beta, trial, K * sizeof *beta);
        double dF = F - Fn;
        F = Fn;
        if (dec / 2 < p.tol * (fabs(F) + 1) || (dF <= 1e-14 * (fabs(F) + 1) && dec < 1e-8)) conv = 1;
    }
    /* tau is identified up to sign (v -> -v): report |tau| */
    if (beta[k] < 0) {
        beta[k] = -beta[k];
        for (size_t g = 0; g < ngroups; g++) v[g] = -v[g];
    }
    set_offsets(&d, beta);
    F = laplace_dev(&d, beta[k]);
    fit->algo = algo;
    fit->k = k;
    fit->ngroups = ngroups;
    fit->tau = beta[k];
    fit->deviance = F;
    fit->iterations = it;
    fit->converged = conv;
    fit->beta = malloc(k * sizeof *fit->beta);
    fit->se = malloc(k * sizeof *fit->se);
    fit->mode = malloc(ngroups * sizeof *fit->mode);
    fit->post_sd = malloc(ngroups * sizeof *fit->post_sd);
    fit->n_group = malloc(ngroups * sizeof *fit->n_group);
    fit->y_group = calloc(ngroups, sizeof *fit->y_group);
    if (!fit->beta || !fit->se || !fit->mode || !fit->post_sd || !fit->n_group || !fit->y_group) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(fit->beta, beta, k * sizeof *beta);
    for (size_t g = 0; g < ngroups; g++) {
        fit->mode[g] = beta[k] * v[g];
        fit->post_sd[g] = beta[k] / sqrt(H[g]);
        fit->n_group[g] = start[g + 1] - start[g];
        for (size_t i = start[g]; i < start[g + 1]; i++) fit->y_group[g] += yg[i];
    }
    /* standard errors of beta as glmer reports them: the inverse of the
     * profiled penalized-likelihood information (X'WX minus the groups' Schur
     * terms) at the estimate, tau held fixed */
    gradient(&d, beta[k], grad, M, cbuf);
    {
        gsl_matrix_view Mb = gsl_matrix_view_array_with_tda(M, k, k, K);
        gsl_matrix *B = gsl_matrix_alloc(k, k);
        if (!B) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        gsl_matrix_memcpy(B, &Mb.matrix);
        gsl_matrix_scale(B, 0.5);
        gsl_error_handler_t *old = gsl_set_error_handler_off();
        int st = gsl_linalg_cholesky_decomp1(B);
        if (st == GSL_SUCCESS) st = gsl_linalg_cholesky_invert(B);
        gsl_set_error_handler(old);
        for (size_t j = 0; j < k; j++) fit->se[j] = st == GSL_SUCCESS ? sqrt(gsl_matrix_get(B, j, j)) : NAN;
        gsl_matrix_free(B);
    }
    if (!conv)
        snprintf(fit->warning, sizeof fit->warning, "the Laplace fit did not converge in %d iterations", it);
    else if (fit->tau < 1e-4)
        snprintf(fit->warning, sizeof fit->warning, "no between-unit variation (tau = %.3g): every unit is average",
                 fit->tau);
out:
    if (rc) px_glmm_fit_release(fit);
    px_glm_fit_release(&g0);
    free(Xg), free(yg), free(off), free(start), free(pos), free(v), free(H);
    free(beta), free(grad), free(M), free(cbuf), free(step), free(trial);
    gsl_matrix_free(A);
    gsl_vector_free(gv), gsl_vector_free(sv);
    return rc;
}

int px_glmm_unit_ratio(px_algo algo, const double *eta, const double *y, size_t n, double tau, double conf,
                       px_glmm_unit *o)
{
    px_models_init(); /* GSL reports, never aborts */
    int poisson = algo == PX_ALGO_POISSON;
    memset(o, 0, sizeof *o);
    o->u = o->sd = o->predicted = o->expected = o->ratio = o->lo = o->hi = NAN;
    if ((algo != PX_ALGO_LOGIT && algo != PX_ALGO_POISSON) || n == 0 || !(tau >= 0) || !isfinite(tau) ||
        !(conf > 0 && conf < 1))
        return PX_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(eta[i]) || !(y[i] >= 0)) return PX_EINVAL;
    gdata d;
    memset(&d, 0, sizeof d);
    size_t start[2] = {0, n};
    double v = 0, H = 1;
    d.poisson = poisson, d.X = NULL, d.y = y, d.n = n, d.k = 0, d.ng = 1, d.start = start;
    d.off = (double *)eta;   /* group_mode only reads it */
    if (tau > 0) group_mode(&d, 0, tau, &v, &H);
    o->u = tau * v;
    o->sd = tau / sqrt(H);
    double z = gsl_cdf_ugaussian_Pinv(0.5 + conf / 2);
    double us[3] = {o->u, o->u - z * o->sd, o->u + z * o->sd}, sums[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double mu, w, w1, l;
        unit(poisson, eta[i], 0, &mu, &w, &w1, &l);
        sums[3] += mu;
        for (int t = 0; t < 3; t++) {
            unit(poisson, eta[i] + us[t], 0, &mu, &w, &w1, &l);
            sums[t] += mu;
        }
    }
    o->predicted = sums[0], o->expected = sums[3];
    if (!(o->expected > 0)) return PX_EINVAL;
    o->ratio = sums[0] / sums[3], o->lo = sums[1] / sums[3], o->hi = sums[2] / sums[3];
    return 0;
}

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
                    unit(algo == PX_ALGO_POISSON, eta[r] + alpha, 0, &mu, &w, &w1, &l);
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
