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
 * Invariant: column 0 of X is the intercept. The hierarchical model of a risk
 * model (px_hier), which fits this on a model's design, is in hier.c. */
#include "models/internal.h"
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_linalg.h>
#include <gsl/gsl_sf_gamma.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

typedef struct gdata {
    int poisson;
    const double *X, *y;  /* grouped order: group g holds rows [start[g], start[g+1]) */
    size_t n, k, ng;
    const size_t *start;
    double *off;          /* n: x_i'beta for the current beta */
    double *v;            /* ng conditional modes (spherical), warm starts */
    double *H;            /* ng: 1 + tau^2 sum w at the mode */
    double llconst;       /* -sum log y! (Poisson), 0 (logit) */
    double *scr;          /* 3 x the largest group's rows: mu, w, w1 of gradient()'s first pass */
    size_t *nz;           /* k: a row's nonzero columns (gradient()) */
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
            glmm_unit(d->poisson, d->off[i] + tau * v, d->y[i], &mu, &w, &w1, &l);
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
        double *smu = d->scr, *sww = d->scr + (b - a), *sw1s = d->scr + 2 * (b - a);
        /* first pass: group sums (each row's values kept for the second) */
        for (size_t i = a; i < b; i++) {
            glmm_unit(d->poisson, d->off[i] + tau * v, d->y[i], &mu, &w, &w1, &l);
            s0 += d->y[i] - mu, sw += w, sw1 += w1;
            smu[i - a] = mu, sww[i - a] = w, sw1s[i - a] = w1;
        }
        double Gv = tau * tau * tau * sw1 / H;   /* dG/dv at the mode */
        if (M) memset(cbuf, 0, k * sizeof *cbuf);
        for (size_t i = a; i < b; i++) {
            const double *x = d->X + i * k;
            mu = smu[i - a], w = sww[i - a], w1 = sw1s[i - a];
            double ci = -2 * (d->y[i] - mu) + tau * tau * w1 / H - Gv * tau * w / H;
            for (size_t j = 0; j < k; j++) grad[j] += ci * x[j];
            if (M) {
                /* only the row's nonzero columns: a zero adds exactly nothing (the
                 * products are finite, and a sum that starts at +0 never becomes -0; a
                 * product overflowing to inf fails the fit either way), and a unit's or
                 * category's indicator columns are mostly zero; each element still sums
                 * the same rows in the same order. A mostly dense row keeps the
                 * contiguous loop. */
                size_t nnz = 0;
                for (size_t r = 0; r < k; r++)
                    if (x[r] != 0) d->nz[nnz++] = r;
                if (2 * nnz > k) {
                    for (size_t r = 0; r < k; r++) {
                        if (x[r] == 0) continue;
                        double wx = w * x[r];
                        double *Mr = M + r * K;
                        for (size_t c = r; c < k; c++) Mr[c] += wx * x[c];
                        cbuf[r] += wx;
                    }
                } else {
                    for (size_t p1 = 0; p1 < nnz; p1++) {
                        size_t r = d->nz[p1];
                        double wx = w * x[r];
                        double *Mr = M + r * K;
                        for (size_t p2 = p1; p2 < nnz; p2++) Mr[d->nz[p2]] += wx * x[d->nz[p2]];
                        cbuf[r] += wx;
                    }
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
    size_t maxg = 0;
    for (size_t g = 0; g < ngroups; g++) {
        if (start[g + 1] == start[g]) {
            rc = px_err_set(e, PX_EINVAL, "hierarchical fit: group %zu has no rows", g);
            goto out;
        }
        if (start[g + 1] - start[g] > maxg) maxg = start[g + 1] - start[g];
    }
    if (!(d.scr = malloc(3 * maxg * sizeof *d.scr)) || !(d.nz = malloc(k * sizeof *d.nz))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
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
    free(Xg), free(yg), free(off), free(start), free(pos), free(v), free(H), free(d.scr), free(d.nz);
    free(beta), free(grad), free(M), free(cbuf), free(step), free(trial);
    gsl_matrix_free(A);
    gsl_vector_free(gv), gsl_vector_free(sv);
    return rc;
}

/* The unit's mean at u from q = exp(-|eta|) and the sign of eta, with
 * t = exp(u) and ti = exp(-u): no exp per row and iteration. A logit's mean is
 * 1 / (1 + e^-(eta + u)) written so that nothing overflows; a Poisson mean
 * stays finite as glmm_unit keeps it (eta + u at most GLMM_ETA_MAX). */
static inline double unit_mean(int poisson, double q, int neg, double t, double ti)
{
    if (poisson) {
        double m = neg ? q * t : t / q;
        return isfinite(m) ? (m < exp(GLMM_ETA_MAX) ? m : exp(GLMM_ETA_MAX)) : exp(GLMM_ETA_MAX);
    }
    if (neg) {
        double x = q * t;           /* e^(eta + u), eta < 0 */
        return isinf(x) ? 1 : x / (1 + x);
    }
    return 1 / (1 + q * ti);        /* 1 / (1 + e^-(eta + u)), eta >= 0 */
}

int px_glmm_unit_ratio(px_algo algo, const double *eta, const double *y, size_t n, double tau, double conf,
                       px_glmm_unit *o)
{
    double sy = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(y[i] >= 0)) {
            memset(o, 0, sizeof *o);
            o->u = o->sd = o->predicted = o->expected = o->ratio = o->lo = o->hi = NAN;
            return PX_EINVAL;
        }
        sy += y[i];
    }
    return px_glmm_unit_ratio_sum(algo, eta, n, sy, tau, conf, o);
}

int px_glmm_unit_ratio_sum(px_algo algo, const double *eta, size_t n, double sy, double tau, double conf,
                           px_glmm_unit *o)
{
    px_models_init(); /* GSL reports, never aborts */
    int poisson = algo == PX_ALGO_POISSON;
    memset(o, 0, sizeof *o);
    o->u = o->sd = o->predicted = o->expected = o->ratio = o->lo = o->hi = NAN;
    if ((algo != PX_ALGO_LOGIT && algo != PX_ALGO_POISSON) || n == 0 || !(tau >= 0) || !isfinite(tau) ||
        !(conf > 0 && conf < 1) || !(sy >= 0) || !isfinite(sy))
        return PX_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(eta[i])) return PX_EINVAL;
    /* exp(-|eta_i|) once per row: every mean below is then a product and a division */
    double *q = malloc(n * sizeof *q);
    unsigned char *neg = malloc(n);
    if (!q || !neg) {
        free(q), free(neg);
        return PX_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        double e = eta[i] > GLMM_ETA_MAX ? GLMM_ETA_MAX : eta[i] < -GLMM_ETA_MAX ? -GLMM_ETA_MAX : eta[i];
        neg[i] = e < 0;
        q[i] = exp(-fabs(e));
    }
    /* The conditional mode v of h(v) = sum_i l(eta_i + tau v) - v^2 / 2 (strictly
     * concave): Newton on h'(v) = tau sum (y_i - mu_i) - v, which decreases in v,
     * kept inside the bracket of the root found so far (bisection when a step
     * leaves it); H = -h''(v) = 1 + tau^2 sum w_i at the mode. */
    double v = 0, H = 1;
    if (tau > 0) {
        double lo = -INFINITY, hi = INFINITY;
        for (int it = 0; it <= 200; it++) {
            double t = exp(tau * v), ti = 1 / t, s = 0, sw = 0;
            for (size_t i = 0; i < n; i++) {
                double m = unit_mean(poisson, q[i], neg[i], t, ti);
                s += m, sw += poisson ? m : m * (1 - m);
            }
            double g = tau * (sy - s) - v;
            H = 1 + tau * tau * sw;
            if (g > 0) lo = v;
            else hi = v;
            double step = g / H;
            if (g == 0 || fabs(step) < 1e-12 * (1 + fabs(v))) break;
            double vn = v + step;
            if (!(vn > lo && vn < hi)) vn = isfinite(lo) && isfinite(hi) ? (lo + hi) / 2 : v + (step > 0 ? 1 : -1);
            if (hi - lo < 1e-13 * (1 + fabs(v))) break;
            v = vn;
        }
    }
    o->u = tau * v;
    o->sd = tau / sqrt(H);
    double z = gsl_cdf_ugaussian_Pinv(0.5 + conf / 2);
    double us[3] = {o->u, o->u - z * o->sd, o->u + z * o->sd}, sums[4] = {0, 0, 0, 0};
    double ts[3], tis[3];
    for (int k = 0; k < 3; k++) ts[k] = exp(us[k]), tis[k] = 1 / ts[k];
    for (size_t i = 0; i < n; i++) {
        sums[3] += unit_mean(poisson, q[i], neg[i], 1, 1);
        for (int k = 0; k < 3; k++) sums[k] += unit_mean(poisson, q[i], neg[i], ts[k], tis[k]);
    }
    free(q), free(neg);
    o->predicted = sums[0], o->expected = sums[3];
    if (!(o->expected > 0)) return PX_EINVAL;
    o->ratio = sums[0] / sums[3], o->lo = sums[1] / sums[3], o->hi = sums[2] / sums[3];
    return 0;
}
