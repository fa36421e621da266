/* test_glmm.c: px_glmm_fit_dense (random-intercept logit and Poisson by the
 * Laplace approximation) against lme4::glmer on tests/fixtures/glmm/glmm.csv
 * (41 facilities, 9 with 1-5 rows), references in glmm_ref.txt from
 * test_glmm_ref.R: glmer as it stops ("glmer.*") and glmer's own deviance
 * function minimized to convergence ("tight"). px_glmm_unit_ratio reproduces
 * the fitted modes from a unit's rows alone; bad input is refused. */
#include "models/models.h"
#include "check.h"
#include <cjson/cJSON.h>
#include "models_fixture.h"

/* Relative (absolute below 1) to glmer's deviance minimized to convergence:
 * logit agrees to 6e-7 (deviance to 1e-10); Poisson to 9e-6 (R's nlminb ends
 * there with "false convergence", and the two deviance functions differ by a
 * constant 7e-6 = 3.5e-10 relative: our optimum is 7e-6 lower by ours, R's 6e-9
 * lower by R's, so neither optimizer is the limit). */
static double TOL_TIGHT = 1e-6;
static double TOL_DEV = 1e-6;
#define TOL_GLMER 1e-4 /* relative to glmer's default stopping point */

static fx_table t;
static double *X, *yb, *days;
static size_t *grp, n, ng;
enum { K = 6 };

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1 ? fabs(b) : 1); }

static void build(void)
{
    n = t.n;
    X = malloc(n * K * sizeof *X);
    yb = malloc(n * sizeof *yb);
    days = malloc(n * sizeof *days);
    grp = malloc(n * sizeof *grp);
    /* facility names F01..F41 are in byte order in the file's first appearance order */
    char prev[16] = "";
    ng = 0;
    for (size_t i = 0; i < n; i++) {
        const char *f = fx_text(&t, i, "fac");
        if (strcmp(f, prev) != 0) {
            CHECK(strcmp(f, prev) > 0);
            snprintf(prev, sizeof prev, "%s", f);
            ng++;
        }
        grp[i] = ng - 1;
        double *x = X + i * K;
        x[0] = 1;
        x[1] = fx_num(&t, i, "age");
        x[2] = fx_num(&t, i, "female");
        x[3] = fx_num(&t, i, "sev");
        x[4] = fx_num(&t, i, "adm_b");
        x[5] = fx_num(&t, i, "adm_c");
        yb[i] = fx_num(&t, i, "yb");
        days[i] = fx_num(&t, i, "days");
    }
}

static void against_lme4(const char *tag, px_algo algo, const double *y, const fx_ref *r)
{
    px_glmm_fit f;
    px_err e = {0};
    int rc = px_glmm_fit_dense(algo, X, y, grp, n, K, ng, NULL, &f, &e);
    CHECK_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "%s: %s\n", tag, e.msg);
        return;
    }
    CHECK(f.converged);
    CHECK_INT(f.ngroups, (long long)fx_ref_get(r, "%s.ngroups", tag));
    double wb = 0, wt = 0, wm = 0, ws = 0, wse = 0, gb = 0, gm = 0;
    for (int j = 0; j < K; j++) {
        double d = rel(f.beta[j], fx_ref_get(r, "%s.beta.%d", tag, j));
        double dg = rel(f.beta[j], fx_ref_get(r, "%s.glmer.beta.%d", tag, j));
        double ds = rel(f.se[j], fx_ref_get(r, "%s.se.%d", tag, j));
        CHECK(d <= TOL_TIGHT);
        CHECK(dg <= TOL_GLMER);
        if (d > wb) wb = d;
        if (dg > gb) gb = dg;
        CHECK(ds <= 1e-5);
        if (ds > wse) wse = ds;
    }
    wt = fabs(f.tau - fx_ref_get(r, "%s.tau", tag)) / fx_ref_get(r, "%s.tau", tag);
    double gt = fabs(f.tau - fx_ref_get(r, "%s.glmer.tau", tag)) / fx_ref_get(r, "%s.glmer.tau", tag);
    CHECK(wt <= TOL_TIGHT);
    CHECK(gt <= TOL_GLMER);
    for (size_t g = 0; g < ng; g++) {
        double d = rel(f.mode[g], fx_ref_get(r, "%s.mode.%zu", tag, g));
        double dg = rel(f.mode[g], fx_ref_get(r, "%s.glmer.mode.%zu", tag, g));
        double ds = rel(f.post_sd[g], fx_ref_get(r, "%s.sd.%zu", tag, g));
        CHECK(d <= TOL_TIGHT);
        CHECK(dg <= TOL_GLMER);
        CHECK(ds <= TOL_TIGHT);
        if (d > wm) wm = d;
        if (dg > gm) gm = dg;
        if (ds > ws) ws = ds;
    }
    double dev = fabs(f.deviance - fx_ref_get(r, "%s.m2ll", tag));
    CHECK(dev <= TOL_DEV);
    /* our optimum is at least as good as glmer's own stopping point */
    CHECK(f.deviance <= fx_ref_get(r, "%s.glmer.m2ll", tag) + 1e-7);
    fprintf(stderr,
            "%s: max rel. diff to the converged glmer optimum: beta %.2g, tau %.2g, modes %.2g, mode SDs %.2g,"
            " -2logLik %.2g (abs); to glmer's default fit: beta %.2g, tau %.2g, modes %.2g; SE(beta) vs vcov %.2g;"
            " %d iterations\n",
            tag, wb, wt, wm, ws, dev, gb, gt, gm, wse, f.iterations);

    if (getenv("GLMM_PRINT")) {
        printf("%s %.15g", tag, f.tau);
        for (int j = 0; j < K; j++) printf(" %.15g", f.beta[j]);
        printf("\n");
    }
    /* the start values (as the bootstrap's refits use them) do not change the optimum */
    {
        double st[K + 1];
        for (int j = 0; j < K; j++) st[j] = fx_ref_get(r, "%s.glmer.beta.%d", tag, j) + 0.05;
        st[K] = 2 * fx_ref_get(r, "%s.glmer.tau", tag);
        px_glmm_params gp = px_glmm_default_params();
        gp.start = st;
        px_glmm_fit f2;
        CHECK_INT(px_glmm_fit_dense(algo, X, y, grp, n, K, ng, &gp, &f2, &e), 0);
        double worst = fabs(f2.tau - f.tau);
        for (int j = 0; j < K; j++) worst = fmax(worst, fabs(f2.beta[j] - f.beta[j]));
        CHECK(worst <= 1e-7);
        st[0] = NAN;
        px_glmm_fit f3;
        CHECK_INT(px_glmm_fit_dense(algo, X, y, grp, n, K, ng, &gp, &f3, &e), PX_EINVAL);
        px_glmm_fit_release(&f2);
    }
    /* applying without refitting: one unit's rows and (beta, tau) give its mode and SD */
    double worst = 0;
    double *eta = malloc(n * sizeof *eta), *yy = malloc(n * sizeof *yy);
    for (size_t g = 0; g < ng; g++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (grp[i] == g) {
                double s = 0;
                for (int j = 0; j < K; j++) s += X[i * K + j] * f.beta[j];
                eta[m] = s, yy[m++] = y[i];
            }
        px_glmm_unit u;
        CHECK_INT(px_glmm_unit_ratio(algo, eta, yy, m, f.tau, 0.95, &u), 0);
        double d = fabs(u.u - f.mode[g]);
        if (d > worst) worst = d;
        CHECK(fabs(u.sd - f.post_sd[g]) <= 1e-8);
        CHECK(u.lo < u.ratio && u.ratio < u.hi);
        CHECK((u.ratio > 1) == (u.u > 0));
        /* tau = 0: every unit is the average unit */
        CHECK_INT(px_glmm_unit_ratio(algo, eta, yy, m, 0, 0.95, &u), 0);
        CHECK_NEAR(u.ratio, 1, 1e-15);
    }
    CHECK(worst <= 1e-8);
    free(eta), free(yy);
    px_glmm_fit_release(&f);
}

static void bad_input(void)
{
    px_glmm_fit f;
    px_err e = {0};
    double y2[4] = {0, 1, 2, 0}, Xs[8] = {1, 0, 1, 1, 1, 2, 1, 3};
    size_t g2[4] = {0, 0, 1, 1}, g3[4] = {0, 0, 1, 5};
    CHECK_INT(px_glmm_fit_dense(PX_ALGO_LOGIT, Xs, y2, g2, 4, 2, 2, NULL, &f, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "row 2") != NULL);
    y2[2] = 1;
    CHECK_INT(px_glmm_fit_dense(PX_ALGO_LOGIT, Xs, y2, g3, 4, 2, 2, NULL, &f, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "group 5") != NULL);
    CHECK_INT(px_glmm_fit_dense(PX_ALGO_SVC, Xs, y2, g2, 4, 2, 2, NULL, &f, &e), PX_EINVAL);
    CHECK_INT(px_glmm_fit_dense(PX_ALGO_LOGIT, Xs, y2, g2, 4, 2, 3, NULL, &f, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "group 2 has no rows") != NULL);
    y2[1] = -1;
    CHECK_INT(px_glmm_fit_dense(PX_ALGO_POISSON, Xs, y2, g2, 4, 2, 2, NULL, &f, &e), PX_EINVAL);
    px_glmm_unit u;
    double eta[2] = {0, NAN}, yy[2] = {0, 1};
    CHECK_INT(px_glmm_unit_ratio(PX_ALGO_LOGIT, eta, yy, 2, 0.5, 0.95, &u), PX_EINVAL);
    CHECK_INT(px_glmm_unit_ratio(PX_ALGO_LOGIT, eta, yy, 1, -1, 0.95, &u), PX_EINVAL);
}

/* px_hier: the model-level fit on a risk model's encoding (standardized
 * columns: tau and the facility modes do not depend on how the fixed effects
 * are parametrized, so they match glmer's), hierarchical.json round trip, the
 * seeded CMS bootstrap (same seed, same bytes), and bad input. */
static void hier_model(const fx_ref *r)
{
    const char *cols[] = {"age", "female", "sev", "adm_b", "adm_c"};
    px_dataset *d = fx_dataset(&t, cols, 5, "yb");
    d->nextra = 1;
    d->extra_names = malloc(sizeof *d->extra_names);
    d->extra_names[0] = strdup("facility_id");
    d->extra = calloc(n, sizeof *d->extra);
    for (size_t i = 0; i < n; i++) d->extra[i] = strdup(fx_text(&t, i, "fac"));
    px_err e = {0};
    px_fit_params fp = px_fit_default_params(PX_ALGO_LOGIT);
    px_model *m = px_model_fit(d, NULL, 0, &fp, NULL, &e);
    CHECK(m != NULL);
    if (!m) return;
    px_hier_params hp = px_hier_default_params();
    hp.boot = 30;
    hp.seed = 42;
    px_hier *h = px_hier_fit(m, d, NULL, 0, 0, &hp, &e);
    CHECK(h != NULL);
    if (!h) {
        fprintf(stderr, "px_hier_fit: %s\n", e.msg);
        px_model_free(m);
        px_dataset_free(d);
        return;
    }
    const px_glmm_fit *f = px_hier_glmm(h);
    CHECK(fabs(f->tau - fx_ref_get(r, "logit.tau")) / fx_ref_get(r, "logit.tau") <= 1e-6);
    double worst = 0;
    for (size_t g = 0; g < f->ngroups; g++) worst = fmax(worst, fabs(f->mode[g] - fx_ref_get(r, "logit.mode.%zu", g)));
    CHECK(worst <= 1e-6);
    char *js = px_hier_json(h);
    CHECK(js != NULL);
    /* the same seed gives the same file */
    px_hier *h2 = px_hier_fit(m, d, NULL, 0, 0, &hp, &e);
    char *js2 = h2 ? px_hier_json(h2) : NULL;
    CHECK(js2 && js && strcmp(js, js2) == 0);
    /* parsed back, it gives the same linear predictors */
    px_hier *hp2 = js ? px_hier_parse(js, strlen(js), m, &e) : NULL;
    CHECK(hp2 != NULL);
    if (hp2) {
        CHECK(px_hier_tau(hp2) == f->tau);
        double raw[5] = {0.3, 1, 2.5, 0, 1}, a, b;
        CHECK_INT(px_hier_eta(h, m, raw, &a, &e), 0);
        CHECK_INT(px_hier_eta(hp2, m, raw, &b, &e), 0);
        CHECK(a == b);
        px_hier_free(hp2);
    }
    /* the bootstrap interval holds the point estimate of the large facilities */
    size_t big = 0, inside = 0;
    cJSON *doc = js ? cJSON_Parse(js) : NULL;
    cJSON *fa = cJSON_GetObjectItem(doc, "facilities"), *x;
    cJSON_ArrayForEach(x, fa)
    {
        if (cJSON_GetNumberValue(cJSON_GetObjectItem(x, "n")) < 100) continue;
        big++;
        double lo = cJSON_GetNumberValue(cJSON_GetObjectItem(x, "boot_lo")),
               hi = cJSON_GetNumberValue(cJSON_GetObjectItem(x, "boot_hi")),
               ra = cJSON_GetNumberValue(cJSON_GetObjectItem(x, "ratio"));
        inside += lo <= ra && ra <= hi;
    }
    CHECK(big >= 15);
    CHECK_INT(inside, big);
    cJSON_Delete(doc);
    /* malformed or mismatched files are refused */
    const char *bad[] = {"", "{}", "{\"format\":\"prognos-hierarchical 1\",\"algo\":\"poisson\",\"tau\":0.1,\"fixed\":[]}",
                         "{\"format\":\"prognos-hierarchical 1\",\"algo\":\"logit\",\"tau\":-1,\"fixed\":[]}",
                         "{\"format\":\"prognos-hierarchical 1\",\"algo\":\"logit\",\"tau\":0.1,\"fixed\":[{\"beta\":1}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        px_hier *hb = px_hier_parse(bad[i], strlen(bad[i]), m, &e);
        CHECK(hb == NULL);
        CHECK_INT(e.code, PX_ECORRUPT);
        px_hier_free(hb);
    }
    /* a unit column out of range and an SVM are refused */
    CHECK(px_hier_fit(m, d, NULL, 0, 3, &hp, &e) == NULL);
    free(js), free(js2);
    px_hier_free(h), px_hier_free(h2);
    px_model_free(m);
    px_dataset_free(d);
}

/* Units that do not differ (each unit's rows the same: 10 rows, 3 events, x = 0..9 alike):
 * the maximum-likelihood tau is 0, and the fit says so in its warning. */
static void no_variation(void)
{
    enum { G = 8, R = 10 };
    double Xn[G * R * 2], yn[G * R];
    size_t gn[G * R];
    for (size_t j = 0; j < G; j++)
        for (size_t i = 0; i < R; i++) {
            size_t r = j * R + i;
            Xn[r * 2] = 1, Xn[r * 2 + 1] = (double)i / 10;
            yn[r] = i == 1 || i == 4 || i == 8;
            gn[r] = j;
        }
    px_glmm_fit f;
    px_err e = {0};
    int rc = px_glmm_fit_dense(PX_ALGO_LOGIT, Xn, yn, gn, G * R, 2, G, NULL, &f, &e);
    CHECK_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "no_variation: %s\n", e.msg);
        return;
    }
    CHECK(f.converged);
    CHECK(f.tau < 1e-4);
    CHECK(strstr(f.warning, "no between-unit variation") != NULL);
    for (size_t j = 0; j < G; j++) CHECK(fabs(f.mode[j]) < 1e-3);
    px_glmm_fit_release(&f);
}

int main(void)
{
    px_models_init();
    fx_read("glmm.csv", &t);
    build();
    CHECK_INT(ng, 41);
    fx_ref r;
    fx_ref_read("glmm_ref.txt", &r);
    against_lme4("logit", PX_ALGO_LOGIT, yb, &r);
    TOL_TIGHT = 2e-5, TOL_DEV = 2e-5;
    against_lme4("poisson", PX_ALGO_POISSON, days, &r);
    bad_input();
    no_variation();
    hier_model(&r);
    fx_ref_free(&r);
    fx_free(&t);
    free(X), free(yb), free(days), free(grp);
    return check_report("test_glmm");
}
