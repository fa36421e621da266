/* test_glm.c: px_logit_fit / px_poisson_fit against R's glm() (glm_ref.txt, from
 * test_glm_ref.R) and an independent numpy Newton solve for the ridge fits
 * (glm_ridge_ref.txt, from test_glm_ref.py), to 1e-6; separation on separable
 * data; singular designs (PX_EINVAL naming the column); bad input; weights,
 * offsets and threads. */
#include "models/internal.h"
#include "check.h"
#include "models_fixture.h"

#define TOL 1e-6

static fx_table glm;
static double *Xa, *yb, *cnt;
static size_t n;
enum { K = 7 };

/* 1, age, los_prior, female, site=B, site=C, site=D (R's default reference A) */
static void build_design(void)
{
    n = glm.n;
    Xa = malloc(n * K * sizeof *Xa);
    yb = malloc(n * sizeof *yb);
    cnt = malloc(n * sizeof *cnt);
    for (size_t i = 0; i < n; i++) {
        double *x = Xa + i * K;
        const char *s = fx_text(&glm, i, "site");
        x[0] = 1;
        x[1] = fx_num(&glm, i, "age");
        x[2] = fx_num(&glm, i, "los_prior");
        x[3] = fx_num(&glm, i, "female");
        x[4] = strcmp(s, "B") == 0;
        x[5] = strcmp(s, "C") == 0;
        x[6] = strcmp(s, "D") == 0;
        yb[i] = fx_num(&glm, i, "yb");
        cnt[i] = fx_num(&glm, i, "cnt");
    }
}

/* relative for large values, absolute for small ones */
static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1 ? fabs(b) : 1); }

static void compare(const char *what, const px_glm_fit *f, const fx_ref *r, const char *tag, int stats)
{
    double worst = 0;
    for (int j = 0; j < K; j++) {
        double db = rel(f->beta[j], fx_ref_get(r, "%s.beta.%d", tag, j));
        double ds = rel(f->se[j], fx_ref_get(r, "%s.se.%d", tag, j));
        CHECK(db <= TOL);
        CHECK(ds <= TOL);
        if (db > worst) worst = db;
        if (ds > worst) worst = ds;
    }
    double dd = rel(f->deviance, fx_ref_get(r, "%s.deviance", tag));
    CHECK(dd <= TOL);
    if (stats) {
        CHECK(rel(f->null_deviance, fx_ref_get(r, "%s.null_deviance", tag)) <= TOL);
        CHECK(rel(f->loglik, fx_ref_get(r, "%s.loglik", tag)) <= TOL);
    }
    fprintf(stderr,
            "%s: largest difference from the reference (coefficients, SEs) %.3g, deviance %.3g, %d iterations\n", what,
            worst, dd, f->iterations);
}

static void test_reference(void)
{
    fx_ref r, rr;
    fx_ref_read("glm_ref.txt", &r);
    fx_ref_read("glm_ridge_ref.txt", &rr);
    px_err e;
    px_glm_fit f, f1, f2;
    px_glm_params p = px_glm_default_params();

    CHECK_INT(px_logit_fit(Xa, yb, NULL, NULL, n, K, &p, &f, &e), 0);
    CHECK(f.converged && !f.separation && f.warning[0] == '\0');
    compare("logit vs R", &f, &r, "logit_a", 1);
    /* threads: same bits for the same thread count, agreement across counts */
    p.threads = 1;
    CHECK_INT(px_logit_fit(Xa, yb, NULL, NULL, n, K, &p, &f1, &e), 0);
    p.threads = 2;
    CHECK_INT(px_logit_fit(Xa, yb, NULL, NULL, n, K, &p, &f2, &e), 0);
    CHECK(memcmp(f.beta, f2.beta, K * sizeof(double)) == 0 && memcmp(f.cov, f2.cov, K * K * sizeof(double)) == 0);
    for (int j = 0; j < K; j++) CHECK(rel(f1.beta[j], f2.beta[j]) < 1e-12);
    px_glm_fit_release(&f1);
    px_glm_fit_release(&f2);
    px_glm_fit_release(&f);
    px_glm_fit_release(&f); /* released twice: harmless */

    p = px_glm_default_params();
    CHECK_INT(px_poisson_fit(Xa, cnt, NULL, NULL, n, K, &p, &f, &e), 0);
    CHECK(f.converged && !f.separation);
    compare("poisson (HC0) vs R", &f, &r, "pois_a", 1);
    px_glm_fit_release(&f);

    p.l2 = fx_ref_get(&rr, "ridge_logit.l2");
    CHECK_INT(px_logit_fit(Xa, yb, NULL, NULL, n, K, &p, &f, &e), 0);
    compare("ridge logit vs numpy", &f, &rr, "ridge_logit", 0);
    px_glm_fit_release(&f);
    p.l2 = fx_ref_get(&rr, "ridge_pois.l2");
    CHECK_INT(px_poisson_fit(Xa, cnt, NULL, NULL, n, K, &p, &f, &e), 0);
    compare("ridge poisson vs numpy", &f, &rr, "ridge_pois", 0);
    px_glm_fit_release(&f);

    /* an explicit penalize mask equal to the default gives the same fit */
    unsigned char pen[K] = {0, 1, 1, 1, 1, 1, 1};
    p.penalize = pen;
    CHECK_INT(px_poisson_fit(Xa, cnt, NULL, NULL, n, K, &p, &f, &e), 0);
    CHECK(rel(f.beta[1], fx_ref_get(&rr, "ridge_pois.beta.1")) <= TOL);
    px_glm_fit_release(&f);
    fx_ref_free(&r);
    fx_ref_free(&rr);
}

/* The multi-threaded pass (each thread needs MIN_ROWS_PER_THREAD rows, 16384: only
 * large data take it, so no other test but the slow ones reaches it, and those are not
 * in the ASan pass): the fixture's rows copied 12 times (36,000 rows, two threads).
 * Copies leave the MLE where R puts it and divide the SEs by sqrt(12); two threads
 * agree with one to rounding, and the same thread count gives the same bits. */
static void test_threads_large(void)
{
    enum { COPIES = 12 };
    size_t m = n * COPIES;
    double *X = malloc(m * K * sizeof *X), *yl = malloc(m * sizeof *yl), *cl = malloc(m * sizeof *cl);
    CHECK(X && yl && cl);
    if (!X || !yl || !cl) return;
    for (size_t c = 0; c < COPIES; c++) {
        memcpy(X + c * n * K, Xa, n * K * sizeof *X);
        memcpy(yl + c * n, yb, n * sizeof *yl);
        memcpy(cl + c * n, cnt, n * sizeof *cl);
    }
    fx_ref r;
    fx_ref_read("glm_ref.txt", &r);
    px_err e;
    px_glm_params p = px_glm_default_params();
    for (int fam = 0; fam < 2; fam++) {
        const char *tag = fam ? "pois_a" : "logit_a";
        px_glm_fit f1, f2, f2b;
        p.threads = 1;
        CHECK_INT((fam ? px_poisson_fit : px_logit_fit)(X, fam ? cl : yl, NULL, NULL, m, K, &p, &f1, &e), 0);
        p.threads = 2;
        CHECK_INT((fam ? px_poisson_fit : px_logit_fit)(X, fam ? cl : yl, NULL, NULL, m, K, &p, &f2, &e), 0);
        CHECK_INT((fam ? px_poisson_fit : px_logit_fit)(X, fam ? cl : yl, NULL, NULL, m, K, &p, &f2b, &e), 0);
        double worst = 0;
        for (int j = 0; j < K; j++) {
            double db = rel(f2.beta[j], fx_ref_get(&r, "%s.beta.%d", tag, j));
            double ds = rel(f2.se[j] * sqrt(COPIES), fx_ref_get(&r, "%s.se.%d", tag, j));
            CHECK(db <= TOL);
            CHECK(ds <= TOL);
            CHECK(rel(f1.beta[j], f2.beta[j]) < 1e-12);
            CHECK(rel(f1.se[j], f2.se[j]) < 1e-12);
            worst = fmax(worst, fmax(db, ds));
        }
        CHECK(rel(f2.deviance, COPIES * fx_ref_get(&r, "%s.deviance", tag)) <= TOL);
        CHECK(memcmp(f2.beta, f2b.beta, K * sizeof(double)) == 0 && memcmp(f2.cov, f2b.cov, K * K * sizeof(double)) == 0);
        fprintf(stderr, "%s, %zu rows on two threads: largest difference from R on the original rows %.3g\n", tag, m,
                worst);
        px_glm_fit_release(&f1);
        px_glm_fit_release(&f2);
        px_glm_fit_release(&f2b);
    }
    fx_ref_free(&r);
    free(X);
    free(yl);
    free(cl);
}

/* weights of 2 are two copies of each row: same estimates, SEs / sqrt(2);
 * an offset of 0.5 * age moves the age coefficient by exactly -0.5 */
static void test_weights_offset(void)
{
    px_err e;
    px_glm_fit f0, fw, fo;
    px_glm_params p = px_glm_default_params();
    double *w = malloc(n * sizeof *w), *off = malloc(n * sizeof *off);
    for (size_t i = 0; i < n; i++) {
        w[i] = 2;
        off[i] = 0.5 * Xa[i * K + 1];
    }
    CHECK_INT(px_logit_fit(Xa, yb, NULL, NULL, n, K, &p, &f0, &e), 0);
    CHECK_INT(px_logit_fit(Xa, yb, w, NULL, n, K, &p, &fw, &e), 0);
    CHECK_INT(px_logit_fit(Xa, yb, NULL, off, n, K, &p, &fo, &e), 0);
    for (int j = 0; j < K; j++) {
        CHECK(rel(fw.beta[j], f0.beta[j]) < 1e-9);
        CHECK(rel(fw.se[j] * sqrt(2), f0.se[j]) < 1e-9);
        CHECK(rel(fo.beta[j] + (j == 1 ? 0.5 : 0), f0.beta[j]) < 1e-8);
    }
    CHECK(rel(fw.deviance, 2 * f0.deviance) < 1e-9);
    CHECK(rel(fo.deviance, f0.deviance) < 1e-9);
    px_glm_fit_release(&f0);
    px_glm_fit_release(&fw);
    px_glm_fit_release(&fo);
    /* intercept-only with an offset: the fit is the null model */
    double *X1 = malloc(n * sizeof *X1);
    for (size_t i = 0; i < n; i++) {
        X1[i] = 1;
        off[i] = 0.01 * (Xa[i * K + 1] - 65);
    }
    CHECK_INT(px_poisson_fit(X1, cnt, NULL, off, n, 1, &p, &f0, &e), 0);
    CHECK(rel(f0.deviance, f0.null_deviance) < 1e-9);
    px_glm_fit_release(&f0);
    free(X1);
    free(w);
    free(off);
}

static void test_separation(void)
{
    fx_table s;
    fx_read("sep.csv", &s);
    size_t m = s.n;
    double *X = malloc(m * 3 * sizeof *X), *yc = malloc(m * sizeof *yc), *yq = malloc(m * sizeof *yq);
    double *X2 = malloc(m * 2 * sizeof *X2);
    for (size_t i = 0; i < m; i++) {
        X[i * 3] = X2[i * 2] = 1;
        X[i * 3 + 1] = X2[i * 2 + 1] = fx_num(&s, i, "x");
        X[i * 3 + 2] = fx_num(&s, i, "z");
        yc[i] = fx_num(&s, i, "y_complete");
        yq[i] = fx_num(&s, i, "y_quasi");
    }
    px_err e;
    px_glm_fit f;
    px_glm_params p = px_glm_default_params();
    p.max_iter = 200;
    /* complete: y = (x > 0) */
    CHECK_INT(px_logit_fit(X2, yc, NULL, NULL, m, 2, &p, &f, &e), 0);
    CHECK_INT(f.separation, 1);
    CHECK(f.iterations < 60);
    CHECK(strstr(f.warning, "separation") != NULL);
    CHECK(f.deviance < 0.1 * f.null_deviance);
    fprintf(stderr, "complete separation: stopped after %d iterations, beta_x = %g, deviance %g (null %g): %s\n",
            f.iterations, f.beta[1], f.deviance, f.null_deviance, f.warning);
    px_glm_fit_release(&f);
    /* quasi-complete: z = 1 implies y = 1 */
    CHECK_INT(px_logit_fit(X, yq, NULL, NULL, m, 3, &p, &f, &e), 0);
    CHECK_INT(f.separation, 1);
    CHECK(f.beta[2] > 10);
    CHECK(f.iterations < 60);
    fprintf(stderr, "quasi-complete separation: stopped after %d iterations, beta_z = %g\n", f.iterations, f.beta[2]);
    px_glm_fit_release(&f);
    /* without z the same labels are an ordinary fit */
    CHECK_INT(px_logit_fit(X2, yq, NULL, NULL, m, 2, &p, &f, &e), 0);
    CHECK_INT(f.separation, 0);
    CHECK_INT(f.converged, 1);
    px_glm_fit_release(&f);
    /* not separated, but a few rows predicted at 1 - 1e-12 at the MLE: no false alarm */
    {
        size_t q = 2000;
        double *Xs = malloc(q * 2 * sizeof *Xs), *ys = malloc(q * sizeof *ys);
        unsigned long long st = 42;
        for (size_t i = 0; i < q; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            double u1 = ((st >> 11) + 0.5) / 9007199254740992.0;
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            double u2 = ((st >> 11) + 0.5) / 9007199254740992.0;
            double x = i < 5 ? 10 : sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            double u = ((st >> 11) + 0.5) / 9007199254740992.0;
            Xs[2 * i] = 1;
            Xs[2 * i + 1] = x;
            ys[i] = i < 5 ? 1 : u < 1 / (1 + exp(2 - 3 * x));
        }
        CHECK_INT(px_logit_fit(Xs, ys, NULL, NULL, q, 2, &p, &f, &e), 0);
        CHECK_INT(f.separation, 0);
        CHECK_INT(f.converged, 1);
        CHECK(fabs(f.beta[1] - 3) < 0.5);
        CHECK(1 / (1 + exp(-(f.beta[0] + 10 * f.beta[1]))) > 1 - 1e-10);
        px_glm_fit_release(&f);
        free(Xs);
        free(ys);
    }
    /* one predictor with ever stronger effects: the fit reports separation exactly
     * when the sample is separable (some threshold splits y), and otherwise
     * converges to the finite MLE however large it is */
    {
        size_t q = 5000;
        double *Xs = malloc(q * 2 * sizeof *Xs), *ys = malloc(q * sizeof *ys);
        const double B[] = {15, 100, 1000, 3000, 10000};
        int seen_sep = 0, seen_finite = 0;
        for (int b = 0; b < 5; b++) {
            unsigned long long st = 3;
            double lo1 = INFINITY, hi0 = -INFINITY;
            for (size_t i = 0; i < q; i++) {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                double u1 = ((st >> 11) + 0.5) / 9007199254740992.0;
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                double u2 = ((st >> 11) + 0.5) / 9007199254740992.0;
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                double u = ((st >> 11) + 0.5) / 9007199254740992.0;
                double x = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
                Xs[2 * i] = 1;
                Xs[2 * i + 1] = x;
                ys[i] = u < 1 / (1 + exp(-B[b] * x));
                if (ys[i] == 1 && x < lo1) lo1 = x;
                if (ys[i] == 0 && x > hi0) hi0 = x;
            }
            int separable = lo1 > hi0;
            CHECK_INT(px_logit_fit(Xs, ys, NULL, NULL, q, 2, &p, &f, &e), 0);
            CHECK_INT(f.separation, separable);
            if (!separable) {
                CHECK_INT(f.converged, 1);
                CHECK(f.beta[1] > 0.5 * B[b] && f.beta[1] < 2 * B[b]);
            }
            seen_sep |= separable;
            seen_finite |= !separable && B[b] >= 1000;
            fprintf(stderr, "effect %g: separable %d, separation %d after %d iterations, beta %g\n", B[b], separable,
                    f.separation, f.iterations, f.beta[1]);
            px_glm_fit_release(&f);
        }
        CHECK(seen_sep && seen_finite);   /* the sample holds both kinds */
        free(Xs);
        free(ys);
    }
    /* a ridge penalty makes the separated problem well posed */
    p.l2 = 1;
    CHECK_INT(px_logit_fit(X2, yc, NULL, NULL, m, 2, &p, &f, &e), 0);
    CHECK_INT(f.separation, 0);
    CHECK_INT(f.converged, 1);
    CHECK(isfinite(f.se[1]) && f.beta[1] > 0);
    px_glm_fit_release(&f);
    /* poisson: zero counts wherever z = 1 (the MLE of beta_z is -infinity) */
    p.l2 = 0;
    double *c = malloc(m * sizeof *c);
    for (size_t i = 0; i < m; i++) c[i] = X[i * 3 + 2] == 1 ? 0 : 1 + (double)(i % 3);
    CHECK_INT(px_poisson_fit(X, c, NULL, NULL, m, 3, &p, &f, &e), 0);
    CHECK_INT(f.separation, 1);
    CHECK(f.beta[2] < -10);
    px_glm_fit_release(&f);
    free(c);
    free(X);
    free(X2);
    free(yc);
    free(yq);
    fx_free(&s);
}

static void test_singular(void)
{
    enum { K2 = K + 1 };
    double *X = malloc(n * K2 * sizeof *X);
    px_err e;
    px_glm_fit f;
    size_t bad;
    px_glm_params p = px_glm_default_params();
    /* column 7 = age + los_prior */
    for (size_t i = 0; i < n; i++) {
        memcpy(X + i * K2, Xa + i * K, K * sizeof *X);
        X[i * K2 + 7] = Xa[i * K + 1] + Xa[i * K + 2];
    }
    CHECK_INT(px_glm_fit_family(PX_FAM_LOGIT, X, yb, NULL, NULL, n, K2, &p, &f, &bad, &e), PX_EINVAL);
    CHECK_INT(bad, 7);
    CHECK(strstr(e.msg, "column 7") != NULL);
    CHECK(f.beta == NULL);
    /* the dummy trap: site=A added to the intercept and B, C, D */
    for (size_t i = 0; i < n; i++) X[i * K2 + 7] = 1 - Xa[i * K + 4] - Xa[i * K + 5] - Xa[i * K + 6];
    CHECK_INT(px_glm_fit_family(PX_FAM_POISSON, X, cnt, NULL, NULL, n, K2, &p, &f, &bad, &e), PX_EINVAL);
    CHECK_INT(bad, 7);
    /* an all-zero column */
    for (size_t i = 0; i < n; i++) X[i * K2 + 7] = 0;
    CHECK_INT(px_logit_fit(X, yb, NULL, NULL, n, K2, &p, &f, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "column 7") != NULL);
    /* a ridge penalty on the aliased column makes the system solvable */
    for (size_t i = 0; i < n; i++) X[i * K2 + 7] = Xa[i * K + 1] + Xa[i * K + 2];
    p.l2 = 1;
    CHECK_INT(px_logit_fit(X, yb, NULL, NULL, n, K2, &p, &f, &e), 0);
    px_glm_fit_release(&f);
    free(X);
}

static void test_bad_input(void)
{
    px_err e;
    px_glm_fit f;
    px_glm_params p = px_glm_default_params();
    double y3[3] = {0, 1, 2}, X3[3] = {1, 1, 1};
    CHECK_INT(px_logit_fit(X3, y3, NULL, NULL, 3, 1, &p, &f, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "row 2") != NULL);
    double yneg[3] = {0, -1, 2};
    CHECK_INT(px_poisson_fit(X3, yneg, NULL, NULL, 3, 1, &p, &f, &e), PX_EINVAL);
    double Xn[3] = {1, NAN, 1};
    CHECK_INT(px_poisson_fit(Xn, y3, NULL, NULL, 3, 1, &p, &f, &e), PX_EINVAL);
    double w0[3] = {0, 0, 0};
    CHECK_INT(px_poisson_fit(X3, y3, w0, NULL, 3, 1, &p, &f, &e), PX_EINVAL);
    CHECK_INT(px_poisson_fit(X3, y3, NULL, NULL, 0, 1, &p, &f, &e), PX_EINVAL);
    p.l2 = -1;
    CHECK_INT(px_poisson_fit(X3, y3, NULL, NULL, 3, 1, &p, &f, &e), PX_EINVAL);
    /* NULL params = the defaults */
    CHECK_INT(px_poisson_fit(X3, y3, NULL, NULL, 3, 1, NULL, &f, &e), 0);
    CHECK(fabs(f.beta[0] - log(1.0)) < 1e-12);
    px_glm_fit_release(&f);
}

int main(void)
{
    px_models_init();
    fx_read("glm.csv", &glm);
    build_design();
    test_reference();
    test_weights_offset();
    test_threads_large();
    test_separation();
    test_singular();
    test_bad_input();
    free(Xa);
    free(yb);
    free(cnt);
    fx_free(&glm);
    return check_report("test_glm");
}
