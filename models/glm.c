/* glm.c: logistic and Poisson regression by IRLS (Newton's method for these
 * canonical links), with an optional ridge penalty, on a dense row-major design.
 * Each iteration is one pass over the rows that forms X'WX (upper triangle) and
 * X'Wz, split over threads with private accumulators summed in a fixed order, so
 * the same input and thread count give the same bits. The system is solved with
 * GSL's Cholesky; every GSL status is checked. */
#include "models/internal.h"
#include <float.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_linalg.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_ROWS 64 /* rows whose eta/weights are computed before they are accumulated */
#define MIN_ROWS_PER_THREAD 16384
#define SAT_EPS 1e-10 /* fitted values this close to 0 (or 1) count as saturated */
/* A pivot of the Cholesky factor below this fraction of the diagonal entry means
 * the column is (numerically) a linear combination of the earlier ones. In terms
 * of a QR decomposition that is a residual norm below 3e-7 of the column's norm,
 * close to R's lm/glm rule (tol = 1e-7), with slack for the normal equations. */
#define PIVOT_TOL 1e-13
#define MAX_HALVINGS 30
#define SEP_REL 1e-6           /* see separating() */

px_glm_params px_glm_default_params(void)
{
    px_glm_params p;
    memset(&p, 0, sizeof p);
    p.l2 = 0;
    p.penalize = NULL;
    p.max_iter = 50;
    p.tol = 1e-10;
    p.threads = 2;
    return p;
}

void px_glm_fit_release(px_glm_fit *fit)
{
    if (!fit) return;
    free(fit->beta);
    free(fit->se);
    free(fit->cov);
    fit->beta = fit->se = fit->cov = NULL;
    fit->k = 0;
}

/* ---- one pass over the rows ---------------------------------------------- */

typedef struct glm_data {
    px_glm_family fam;
    const double *X, *y, *w, *off;
    size_t n, k;
} glm_data;

typedef struct pass_job {
    const glm_data *d;
    const double *beta; /* NULL: R's starting values (mustart) instead of X beta */
    int meat;           /* 1: accumulate sum (w (y - mu))^2 x x' (the sandwich's meat) */
    size_t r0, r1;      /* rows [r0, r1) */
    double *A, *b;      /* k*k (upper triangle used) and k, zeroed by the caller */
    double dev;         /* deviance of these rows */
    size_t nsat;        /* rows with fitted values within SAT_EPS of the boundary */
    double ext;         /* largest distance to the boundary on the eta scale (logit |eta|, poisson -eta) */
    size_t nonfinite;   /* rows whose eta or mu is not finite */
    /* the first pass (beta NULL) also checks the design: */
    unsigned char *notone; /* k flags: some row has a value other than 1 in this column */
    size_t badx;           /* first row with a non-finite value ((size_t)-1: none) */
} pass_job;

/* Rank-1 updates A += sum_i wt[i] x_i x_i' over the upper triangle, four rows
 * at a time so that each entry of A is loaded and stored once per four rows.
 * The per-entry order of operations is fixed (no reassociation, no FMA), so the
 * AVX2 clone gives the same bits as the baseline one. GSL's CBLAS dsyrk was
 * measured about 14x slower than this loop on the project's machines. */
__attribute__((target_clones("avx2", "default")))
static void syr_block(double *restrict A, const double *restrict X, const double *restrict wt, size_t m, size_t k)
{
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        const double *x0 = X + i * k, *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
        for (size_t a = 0; a < k; a++) {
            double s0 = wt[i] * x0[a], s1 = wt[i + 1] * x1[a], s2 = wt[i + 2] * x2[a], s3 = wt[i + 3] * x3[a];
            double *restrict Aa = A + a * k;
            for (size_t c = a; c < k; c++) Aa[c] += (s0 * x0[c] + s1 * x1[c]) + (s2 * x2[c] + s3 * x3[c]);
        }
    }
    for (; i < m; i++) {
        const double *x0 = X + i * k;
        for (size_t a = 0; a < k; a++) {
            double s0 = wt[i] * x0[a];
            double *restrict Aa = A + a * k;
            for (size_t c = a; c < k; c++) Aa[c] += s0 * x0[c];
        }
    }
}

/* R's binomial link clamps eta at +-30 (src/library/stats/src/family.c). */
#define LOGIT_THRESH 30.
static double logit_mu(double eta)
{
    double t = eta < -LOGIT_THRESH ? DBL_EPSILON : (eta > LOGIT_THRESH ? 1 / DBL_EPSILON : exp(eta));
    return t / (1 + t);
}
static double ylogy(double y, double mu) { return y != 0 ? y * log(y / mu) : 0; }

static void *pass_run(void *arg)
{
    pass_job *j = arg;
    const glm_data *d = j->d;
    size_t k = d->k;
    double wt[BLOCK_ROWS];
    double *restrict bsum = j->b;
    for (size_t r = j->r0; r < j->r1; r += BLOCK_ROWS) {
        size_t m = j->r1 - r < BLOCK_ROWS ? j->r1 - r : BLOCK_ROWS;
        for (size_t t = 0; t < m; t++) {
            size_t i = r + t;
            const double *restrict x = d->X + i * k;
            double w = d->w ? d->w[i] : 1, y = d->y[i], off = d->off ? d->off[i] : 0;
            wt[t] = 0;
            if (j->notone) {
                /* the data are in cache now: check them here rather than in a pass of their own */
                for (size_t a = 0; a < k; a++) {
                    j->notone[a] |= x[a] != 1;
                    if (!isfinite(x[a]) && j->badx == (size_t)-1) j->badx = i;
                }
                if (j->badx != (size_t)-1) continue;
            }
            if (w == 0) continue;
            double eta, mu, mueta, var;
            if (j->beta) {
                /* four partial sums: a fixed order, shorter dependency chains */
                const double *restrict bt = j->beta;
                double e0 = 0, e1 = 0, e2 = 0, e3 = 0;
                size_t a = 0;
                for (; a + 4 <= k; a += 4) {
                    e0 += x[a] * bt[a];
                    e1 += x[a + 1] * bt[a + 1];
                    e2 += x[a + 2] * bt[a + 2];
                    e3 += x[a + 3] * bt[a + 3];
                }
                for (; a < k; a++) e0 += x[a] * bt[a];
                eta = off + ((e0 + e1) + (e2 + e3));
            } else if (d->fam == PX_FAM_LOGIT) {
                double ms = (w * y + 0.5) / (w + 1);
                eta = log(ms / (1 - ms));
            } else {
                eta = log(y + 0.1);
            }
            if (d->fam == PX_FAM_LOGIT) {
                /* R's binomial link with its clamps (stats/src/family.c): mu in
                 * [eps, 1 - eps], dmu/deta >= eps, so saturated rows keep a tiny weight */
                int clamp = eta < -LOGIT_THRESH || eta > LOGIT_THRESH;
                double te = eta < -LOGIT_THRESH ? DBL_EPSILON : (eta > LOGIT_THRESH ? 1 / DBL_EPSILON : exp(eta));
                mu = te / (1 + te);
                mueta = clamp ? DBL_EPSILON : te / ((1 + te) * (1 + te));
                var = mu * (1 - mu);
                if (y == 1)
                    j->dev -= 2 * w * log(mu);
                else if (y == 0)
                    j->dev += 2 * w * log(1 + te); /* -log(1 - mu), without the cancellation in 1 - mu */
                else
                    j->dev += 2 * w * (ylogy(y, mu) + ylogy(1 - y, 1 - mu));
                if (mu < SAT_EPS || mu > 1 - SAT_EPS) j->nsat++;
                if (fabs(eta) > j->ext) j->ext = fabs(eta);
            } else {
                mu = exp(eta);
                if (mu < DBL_EPSILON) mu = DBL_EPSILON; /* R's poisson()$linkinv */
                mueta = mu;
                var = mu;
                j->dev += 2 * w * (y > 0 ? y * log(y / mu) - (y - mu) : mu);
                if (mu < SAT_EPS) j->nsat++;
                if (-eta > j->ext) j->ext = -eta;
            }
            if (!isfinite(eta) || !isfinite(mu)) {
                j->nonfinite++;
                continue;
            }
            if (j->meat) {
                double sc = w * (y - mu);
                wt[t] = sc * sc;
                continue;
            }
            /* IRLS: working weight w dmu^2 / V(mu), working response z = eta - offset + (y - mu) / dmu */
            double W = w * mueta * mueta / var;
            double wz = W * ((eta - off) + (y - mu) / mueta);
            wt[t] = W;
            for (size_t a = 0; a < k; a++) bsum[a] += wz * x[a];
        }
        syr_block(j->A, d->X + r * k, wt, m, k);
    }
    return NULL;
}

/* Runs one pass over all rows with up to `threads` threads; thread t always
 * gets the same rows and the partial sums are added in thread order. On
 * return A (full symmetric), b and the scalars of *tot hold the totals. */
static void pass_all(const glm_data *d, const double *beta, int meat, int threads, double *A, double *b, pass_job *tot,
                     unsigned char *notone)
{
    size_t k = d->k, nt = threads > 1 ? (size_t)threads : 1;
    if (nt > 64) nt = 64;
    while (nt > 1 && d->n / nt < MIN_ROWS_PER_THREAD) nt--;
    pass_job jobs[64];
    pthread_t tid[64];
    double *scratch = NULL;
    if (nt > 1) {
        scratch = calloc((nt - 1) * (k * k + k) + (notone ? (nt - 1) * k : 0), sizeof *scratch);
        if (!scratch) nt = 1; /* run single-threaded rather than fail */
    }
    if (notone) memset(notone, 0, k);
    memset(A, 0, k * k * sizeof *A);
    memset(b, 0, k * sizeof *b);
    for (size_t t = 0; t < nt; t++) {
        memset(&jobs[t], 0, sizeof jobs[t]);
        jobs[t].d = d;
        jobs[t].beta = beta;
        jobs[t].meat = meat;
        jobs[t].r0 = d->n * t / nt;
        jobs[t].r1 = d->n * (t + 1) / nt;
        jobs[t].A = t == 0 ? A : scratch + (t - 1) * (k * k + k);
        jobs[t].b = t == 0 ? b : jobs[t].A + k * k;
        jobs[t].badx = (size_t)-1;
        if (notone)
            jobs[t].notone = t == 0 ? notone : (unsigned char *)(scratch + (nt - 1) * (k * k + k)) + (t - 1) * k;
    }
    size_t started = 1;
    for (size_t t = 1; t < nt; t++, started++)
        if (pthread_create(&tid[t], NULL, pass_run, &jobs[t]) != 0) break;
    /* threads that could not be started run here, after the main share */
    pass_run(&jobs[0]);
    for (size_t t = started; t < nt; t++) pass_run(&jobs[t]);
    for (size_t t = 1; t < started; t++) pthread_join(tid[t], NULL);
    memset(tot, 0, sizeof *tot);
    tot->badx = (size_t)-1;
    for (size_t t = 0; t < nt; t++) {
        if (t > 0) {
            for (size_t a = 0; a < k; a++)
                for (size_t c = a; c < k; c++) A[a * k + c] += jobs[t].A[a * k + c];
            for (size_t a = 0; a < k; a++) b[a] += jobs[t].b[a];
        }
        tot->dev += jobs[t].dev;
        tot->nsat += jobs[t].nsat;
        tot->nonfinite += jobs[t].nonfinite;
        if (jobs[t].badx < tot->badx) tot->badx = jobs[t].badx;
        if (notone && t > 0)
            for (size_t a = 0; a < k; a++) notone[a] |= jobs[t].notone[a];
        if (jobs[t].ext > tot->ext) tot->ext = jobs[t].ext;
    }
    for (size_t a = 0; a < k; a++)
        for (size_t c = a + 1; c < k; c++) A[c * k + a] = A[a * k + c];
    free(scratch);
}

/* ---- linear algebra ------------------------------------------------------ */

/* Finds the first column whose Cholesky pivot is not clearly positive, by a
 * plain factorization of a copy (used when GSL refuses the matrix). */
static size_t first_bad_pivot(const double *M, size_t k, double *L)
{
    memcpy(L, M, k * k * sizeof *L);
    for (size_t j = 0; j < k; j++) {
        double djj = L[j * k + j];
        for (size_t p = 0; p < j; p++) djj -= L[j * k + p] * L[j * k + p];
        if (!(djj > PIVOT_TOL * M[j * k + j]) || !(M[j * k + j] > 0)) return j;
        double ljj = sqrt(djj);
        L[j * k + j] = ljj;
        for (size_t i = j + 1; i < k; i++) {
            double s = L[i * k + j];
            for (size_t p = 0; p < j; p++) s -= L[i * k + p] * L[j * k + p];
            L[i * k + j] = s / ljj;
        }
    }
    return k;
}

/* Cholesky-factors M (k x k, symmetric) into ch with GSL. Returns 0, or
 * PX_EINVAL with *bad = the first aliased column, or PX_ENOMEM. */
static int factor(const double *M, size_t k, gsl_matrix *ch, size_t *bad)
{
    for (size_t a = 0; a < k; a++)
        for (size_t c = 0; c < k; c++) gsl_matrix_set(ch, a, c, M[a * k + c]);
    int st = gsl_linalg_cholesky_decomp1(ch);
    if (st == GSL_SUCCESS) {
        for (size_t j = 0; j < k; j++) {
            double l = gsl_matrix_get(ch, j, j);
            if (!(l * l > PIVOT_TOL * M[j * k + j]) || !isfinite(l)) {
                *bad = j;
                return PX_EINVAL;
            }
        }
        return 0;
    }
    double *L = malloc(k * k * sizeof *L);
    if (!L) return PX_ENOMEM;
    *bad = first_bad_pivot(M, k, L);
    free(L);
    if (*bad >= k) *bad = k - 1; /* GSL refused a matrix the plain scan accepted: blame the last column */
    return PX_EINVAL;
}

/* ---- the fit ------------------------------------------------------------- */

static int check_input(const glm_data *d, const px_glm_params *p, px_err *e)
{
    const char *what = d->fam == PX_FAM_LOGIT ? "logistic regression" : "poisson regression";
    if (!d->X || !d->y) return px_err_set(e, PX_EINVAL, "cannot fit %s: no data", what);
    if (d->n == 0 || d->k == 0) return px_err_set(e, PX_EINVAL, "cannot fit %s: no rows or no columns", what);
    if (d->k > 100000 || d->n > (size_t)-1 / d->k)
        return px_err_set(e, PX_EINVAL, "cannot fit %s: too many columns", what);
    if (!(p->l2 >= 0) || !isfinite(p->l2))
        return px_err_set(e, PX_EINVAL, "cannot fit %s: l2 penalty must be >= 0", what);
    if (p->max_iter < 1) return px_err_set(e, PX_EINVAL, "cannot fit %s: max_iter must be >= 1", what);
    if (!(p->tol > 0)) return px_err_set(e, PX_EINVAL, "cannot fit %s: tol must be > 0", what);
    double sw = 0;
    for (size_t i = 0; i < d->n; i++) {
        double y = d->y[i], w = d->w ? d->w[i] : 1;
        if (!isfinite(w) || w < 0)
            return px_err_set(e, PX_EINVAL, "cannot fit %s: weight of row %zu is not a finite value >= 0", what, i);
        if (d->off && !isfinite(d->off[i]))
            return px_err_set(e, PX_EINVAL, "cannot fit %s: offset of row %zu is not finite", what, i);
        if (d->fam == PX_FAM_LOGIT ? !(y >= 0 && y <= 1) : !(y >= 0 && isfinite(y)))
            return px_err_set(e, PX_EINVAL, "cannot fit %s: response of row %zu is %s", what, i,
                              d->fam == PX_FAM_LOGIT ? "not in [0,1]" : "not a finite value >= 0");
        sw += w;
    }
    if (!(sw > 0)) return px_err_set(e, PX_EINVAL, "cannot fit %s: all weights are zero", what);
    return 0;
}

static double linkinv(px_glm_family fam, double eta)
{
    if (fam == PX_FAM_LOGIT) return logit_mu(eta);
    double mu = exp(eta);
    return mu < DBL_EPSILON ? DBL_EPSILON : mu;
}

/* Null deviance as R's glm(): the intercept-only fit (with the offset, if any)
 * when the design has an all-ones column, else the fit with eta = offset. */
static double null_deviance(const glm_data *d, int has_int)
{
    double sw = 0, swy = 0, alpha = 0;
    for (size_t i = 0; i < d->n; i++) {
        double w = d->w ? d->w[i] : 1;
        sw += w;
        swy += w * d->y[i];
    }
    double ybar = swy / sw;
    if (has_int && d->off) {
        /* 1-D Newton for the intercept with the offset: sum w (y - mu(alpha + off)) = 0 */
        alpha = d->fam == PX_FAM_LOGIT ? log((ybar + 1e-3) / (1 - ybar + 1e-3)) : log(ybar + 1e-3);
        for (int it = 0; it < 100; it++) {
            double s = 0, h = 0;
            for (size_t i = 0; i < d->n; i++) {
                double w = d->w ? d->w[i] : 1, mu = linkinv(d->fam, alpha + d->off[i]);
                s += w * (d->y[i] - mu);
                h += w * (d->fam == PX_FAM_LOGIT ? mu * (1 - mu) : mu);
            }
            if (!(h > 0)) break;
            double step = s / h;
            step = step > 5 ? 5 : (step < -5 ? -5 : step);
            alpha += step;
            if (fabs(step) < 1e-12 * (1 + fabs(alpha))) break;
        }
    }
    double dev = 0;
    for (size_t i = 0; i < d->n; i++) {
        double w = d->w ? d->w[i] : 1, y = d->y[i];
        /* R: wtdmu = the weighted mean of y when there is an intercept and no offset */
        double mu = has_int && !d->off ? ybar : linkinv(d->fam, alpha + (d->off ? d->off[i] : 0));
        if (d->fam == PX_FAM_LOGIT)
            dev += 2 * w * (ylogy(y, mu) + ylogy(1 - y, 1 - mu));
        else
            dev += 2 * w * (y > 0 ? y * log(y / mu) - (y - mu) : mu);
    }
    return dev;
}

/* The log-likelihood is -deviance/2 plus a term that depends on y only
 * (the saturated model's log-likelihood), computed once:
 * logit: sum w (y log y + (1-y) log(1-y)); poisson: sum w (y log y - y - log y!). */
static double loglik_const(const glm_data *d)
{
    double c = 0;
    for (size_t i = 0; i < d->n; i++) {
        double w = d->w ? d->w[i] : 1, y = d->y[i];
        if (w == 0) continue;
        if (d->fam == PX_FAM_LOGIT) {
            if (y > 0 && y < 1) c += w * (y * log(y) + (1 - y) * log1p(-y)); /* 0 for y in {0, 1} */
        } else
            c += w * ((y > 0 ? y * log(y) : 0) - y - lgamma(y + 1));
    }
    return c;
}

/* Whether the direction dir separates the rows (Albert & Anderson 1984): a
 * logistic MLE is infinite iff some d with Xd != 0 has x'd >= 0 where y = 1 and
 * x'd <= 0 where y = 0 (x'd = 0 where 0 < y < 1); a Poisson one iff some d has
 * x'd <= 0 everywhere and x'd = 0 where y > 0. With rel = 0 this is exact: the
 * current coefficients passing it prove (complete) separation, and no direction
 * passes it on data that are not separated. Quasi-complete separation shows in
 * the Newton steps instead: their separated part keeps a constant size while the
 * rest converges, so the last step passes up to rel (relative to the largest
 * |x'd|); a finite MLE with strongly predicted rows keeps overlapping rows on
 * the wrong side of each step, by far more than rel, until it converges. */
static int separating(const glm_data *d, const double *dir, double rel)
{
    double mx = 0, worst = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->w && d->w[i] == 0) continue;
        const double *x = d->X + i * d->k;
        double s = 0, y = d->y[i], v;
        for (size_t a = 0; a < d->k; a++) s += x[a] * dir[a];
        if (fabs(s) > mx) mx = fabs(s);
        if (d->fam == PX_FAM_LOGIT)
            v = y == 1 ? -s : (y == 0 ? s : fabs(s));   /* > 0: on the wrong side */
        else
            v = y > 0 ? fabs(s) : s;
        if (v > worst) worst = v;
    }
    return mx > 0 && worst <= rel * mx;
}

static int is_penalized(const px_glm_params *p, size_t j)
{
    if (!(p->l2 > 0)) return 0;
    return p->penalize ? p->penalize[j] != 0 : j != 0;
}

/* Adds the ridge penalty l2 to the diagonal of the penalized columns. */
static void add_penalty(double *M, const double *A, size_t k, const px_glm_params *p)
{
    memcpy(M, A, k * k * sizeof *M);
    for (size_t j = 0; j < k; j++)
        if (is_penalized(p, j)) M[j * k + j] += p->l2;
}

static double penalized(double dev, const double *beta, size_t k, const px_glm_params *p)
{
    double s = 0;
    for (size_t j = 0; j < k; j++)
        if (is_penalized(p, j)) s += beta[j] * beta[j];
    return dev + p->l2 * s;
}

int px_glm_fit_family(px_glm_family fam, const double *X, const double *y, const double *w, const double *offset,
                      size_t n, size_t k, const px_glm_params *pp, px_glm_fit *fit, size_t *bad_col, px_err *e)
{
    px_models_init(); /* GSL reports, never aborts */
    const char *what = fam == PX_FAM_LOGIT ? "logistic regression" : "poisson regression";
    px_glm_params p = pp ? *pp : px_glm_default_params();
    glm_data d = {fam, X, y, w, offset, n, k};
    double *A = NULL, *b = NULL, *M = NULL, *beta = NULL, *beta_old = NULL, *A_old = NULL, *b_old = NULL;
    gsl_matrix *ch = NULL;
    gsl_vector *bv = NULL, *xv = NULL;
    unsigned char *notone = NULL;
    double *dir = NULL;
    size_t bad = (size_t)-1;
    int rc;
    memset(fit, 0, sizeof *fit);
    if (bad_col) *bad_col = (size_t)-1;
    if ((rc = check_input(&d, &p, e)) < 0) return rc;

    A = malloc(k * k * sizeof *A);
    A_old = malloc(k * k * sizeof *A_old);
    M = malloc(k * k * sizeof *M);
    b = malloc(k * sizeof *b);
    b_old = malloc(k * sizeof *b_old);
    beta = calloc(k, sizeof *beta);
    beta_old = calloc(k, sizeof *beta_old);
    ch = gsl_matrix_alloc(k, k);
    bv = gsl_vector_alloc(k);
    xv = gsl_vector_alloc(k);
    notone = malloc(k);
    dir = malloc(k * sizeof *dir);
    fit->beta = calloc(k, sizeof *fit->beta);
    fit->se = calloc(k, sizeof *fit->se);
    fit->cov = calloc(k * k, sizeof *fit->cov);
    if (!A || !A_old || !M || !b || !b_old || !beta || !beta_old || !ch || !bv || !xv || !notone || !dir || !fit->beta ||
        !fit->se || !fit->cov) {
        rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
        goto done;
    }
    fit->k = k;

    /* Iteration 0 starts from R's mustart (no coefficients yet), so its result
     * is accepted as is; later steps that increase the penalized deviance (or
     * make it non-finite) are halved towards the previous coefficients. */
    pass_job cur, prev;
    pass_all(&d, NULL, 0, p.threads, A, b, &cur, notone);
    if (cur.badx != (size_t)-1) {
        const double *x = X + cur.badx * k;
        size_t a = 0;
        while (a < k && isfinite(x[a])) a++;
        rc = px_err_set(e, PX_EINVAL, "cannot fit %s: value of column %zu in row %zu is not finite", what, a, cur.badx);
        goto done;
    }
    double pdev = cur.dev, grow_prev_ext = cur.ext, prev_inc = 0;
    int have_beta = 0, grows = 0, stop_sep = 0, halving_failed = 0;
    for (int iter = 1; iter <= p.max_iter; iter++) {
        add_penalty(M, A, k, &p);
        if ((rc = factor(M, k, ch, &bad)) < 0) {
            if (rc == PX_EINVAL && have_beta && cur.nsat > 0) {
                /* the weights of saturated rows vanish as the coefficients diverge */
                for (size_t a = 0; a < k; a++) dir[a] = beta[a] - beta_old[a];
                if (separating(&d, beta, 0) || separating(&d, dir, SEP_REL)) {
                    stop_sep = 1;
                    rc = 0;
                    break;
                }
            }
            if (rc == PX_EINVAL)
                rc = px_err_set(e, PX_EINVAL,
                                "cannot fit %s: singular information matrix: column %zu is a linear combination of the "
                                "columns before it (or constant zero)",
                                what, bad);
            else
                rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
            goto done;
        }
        for (size_t a = 0; a < k; a++) gsl_vector_set(bv, a, b[a]);
        if (gsl_linalg_cholesky_solve(ch, bv, xv) != GSL_SUCCESS) {
            rc = px_err_set(e, PX_EINVAL, "cannot fit %s: the Cholesky solve failed at iteration %d", what, iter);
            goto done;
        }
        memcpy(beta_old, beta, k * sizeof *beta);
        memcpy(A_old, A, k * k * sizeof *A);
        memcpy(b_old, b, k * sizeof *b);
        prev = cur;
        for (size_t a = 0; a < k; a++) beta[a] = gsl_vector_get(xv, a);
        pass_all(&d, beta, 0, p.threads, A, b, &cur, NULL);
        double pnew = cur.nonfinite ? INFINITY : penalized(cur.dev, beta, k, &p);
        int h = 0;
        while (!isfinite(pnew) || (have_beta && pnew > pdev + p.tol * (fabs(pnew) + 0.1))) {
            if (!have_beta) {
                rc = px_err_set(
                    e, PX_EINVAL,
                    "cannot fit %s: no valid set of coefficients found (the deviance is not finite at the first step)",
                    what);
                goto done;
            }
            if (++h > MAX_HALVINGS) {
                halving_failed = 1;
                break;
            }
            for (size_t a = 0; a < k; a++) beta[a] = (beta[a] + beta_old[a]) / 2;
            pass_all(&d, beta, 0, p.threads, A, b, &cur, NULL);
            pnew = cur.nonfinite ? INFINITY : penalized(cur.dev, beta, k, &p);
        }
        if (halving_failed) {
            /* back to the last accepted coefficients and their pass */
            memcpy(beta, beta_old, k * sizeof *beta);
            memcpy(A, A_old, k * k * sizeof *A);
            memcpy(b, b_old, k * sizeof *b);
            cur = prev;
            fit->iterations = iter;
            break;
        }
        fit->iterations = iter;
        double change = fabs(pnew - pdev) / (fabs(pnew) + 0.1);
        pdev = pnew;
        /* (Quasi-)complete separation: the MLE is at infinity, so stop instead
         * of iterating towards it. Suspected when some fitted values are
         * numerically at the boundary and the linear predictor keeps moving away
         * from it (about one unit per Newton step, where steps towards a finite
         * MLE shrink); confirmed only by a separating direction (separating()),
         * so a strong but finite effect is never cut short. */
        double inc = cur.ext - grow_prev_ext;
        int grew = have_beta && cur.nsat > 0 && inc > 0.1 && inc > 0.5 * prev_inc;
        grows = grew ? grows + 1 : 0;
        grow_prev_ext = cur.ext;
        prev_inc = inc;
        have_beta = 1;
        int conv = change < p.tol;
        if ((grows >= 3 || (conv && grew)) && dir) {
            /* the coefficients themselves (complete separation), else the last step */
            int sep = separating(&d, beta, 0);
            for (size_t a = 0; a < k && !sep; a++) dir[a] = beta[a] - beta_old[a];
            if (sep || separating(&d, dir, SEP_REL)) {
                stop_sep = 1;
                fit->converged = conv;
                break;
            }
        }
        if (conv) {
            fit->converged = 1;
            break;
        }
    }
    if (!have_beta) {
        rc = px_err_set(e, PX_EINVAL, "cannot fit %s: no iteration completed", what);
        goto done;
    }
    fit->separation = stop_sep;

    /* covariance: the inverse (penalized) information at the final estimates */
    add_penalty(M, A, k, &p);
    int cst = factor(M, k, ch, &bad);
    if (cst == PX_ENOMEM) {
        rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
        goto done;
    }
    if (cst == 0 && gsl_linalg_cholesky_invert(ch) != GSL_SUCCESS) cst = PX_EINVAL;
    if (cst < 0 && !stop_sep) {
        rc = px_err_set(e, PX_EINVAL,
                        "cannot fit %s: singular information matrix: column %zu is a linear combination of the columns "
                        "before it (or constant zero)",
                        what, bad);
        goto done;
    }
    if (cst == 0) {
        for (size_t a = 0; a < k; a++)
            for (size_t c = 0; c < k; c++) fit->cov[a * k + c] = gsl_matrix_get(ch, a, c);
        if (fam == PX_FAM_POISSON) {
            /* Robust (sandwich, HC0) covariance: bread = (X'WX + l2 P)^-1, meat =
             * sum_i (w_i (y_i - mu_i))^2 x_i x_i' (White 1980). Poisson ML is
             * consistent for a log-linear mean whatever the dispersion
             * (Gourieroux, Monfort & Trognon 1984), which is why it is used for
             * length of stay; the model-based SEs would be too small under the
             * over-dispersion LOS shows, the sandwich ones are not. */
            pass_job mt;
            pass_all(&d, beta, 1, p.threads, A, b, &mt, NULL);
            double *T = M; /* T = bread * meat */
            for (size_t a = 0; a < k; a++)
                for (size_t c = 0; c < k; c++) {
                    double s = 0;
                    for (size_t q = 0; q < k; q++) s += fit->cov[a * k + q] * A[q * k + c];
                    T[a * k + c] = s;
                }
            double *V = A_old;
            for (size_t a = 0; a < k; a++)
                for (size_t c = 0; c < k; c++) {
                    double s = 0;
                    for (size_t q = 0; q < k; q++) s += T[a * k + q] * fit->cov[q * k + c];
                    V[a * k + c] = s;
                }
            for (size_t a = 0; a < k; a++) /* symmetrize exactly */
                for (size_t c = 0; c < k; c++) fit->cov[a * k + c] = a <= c ? V[a * k + c] : V[c * k + a];
        }
        for (size_t a = 0; a < k; a++) fit->se[a] = sqrt(fit->cov[a * k + a]);
    } else {
        for (size_t a = 0; a < k * k; a++) fit->cov[a] = NAN;
        for (size_t a = 0; a < k; a++) fit->se[a] = NAN;
    }
    memcpy(fit->beta, beta, k * sizeof *beta);
    fit->deviance = cur.dev;
    fit->loglik = -cur.dev / 2 + loglik_const(&d);
    int has_int = 0;
    for (size_t a = 0; a < k; a++) has_int |= !notone[a];
    fit->null_deviance = null_deviance(&d, has_int);
    fit->warning[0] = '\0';
    if (stop_sep)
        snprintf(fit->warning, sizeof fit->warning,
                 "(quasi-)complete separation: %zu fitted %s numerically %s and coefficients diverging; estimates are "
                 "not finite MLEs",
                 cur.nsat, fam == PX_FAM_LOGIT ? "probabilities are" : "means are",
                 fam == PX_FAM_LOGIT ? "0 or 1" : "0");
    else if (halving_failed)
        snprintf(fit->warning, sizeof fit->warning, "step-halving could not reduce the deviance after iteration %d",
                 fit->iterations);
    else if (!fit->converged)
        snprintf(fit->warning, sizeof fit->warning, "did not converge in %d iterations", p.max_iter);
    rc = 0;
done:
    if (rc < 0) {
        if (bad_col && rc == PX_EINVAL) *bad_col = bad;
        px_glm_fit_release(fit);
    }
    free(A);
    free(A_old);
    free(M);
    free(b);
    free(b_old);
    free(beta);
    free(beta_old);
    free(notone);
    free(dir);
    if (ch) gsl_matrix_free(ch);
    if (bv) gsl_vector_free(bv);
    if (xv) gsl_vector_free(xv);
    return rc;
}

int px_logit_fit(const double *X, const double *y, const double *w, const double *offset, size_t n, size_t k,
                 const px_glm_params *p, px_glm_fit *fit, px_err *e)
{
    return px_glm_fit_family(PX_FAM_LOGIT, X, y, w, offset, n, k, p, fit, NULL, e);
}

int px_poisson_fit(const double *X, const double *y, const double *w, const double *offset, size_t n, size_t k,
                   const px_glm_params *p, px_glm_fit *fit, px_err *e)
{
    return px_glm_fit_family(PX_FAM_POISSON, X, y, w, offset, n, k, p, fit, NULL, e);
}
