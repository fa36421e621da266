/* test_kpi_stats.c: the KPI interval statistics (kpi/stats.c) against reference
 * values from R (kpi_ref.R -> kpi_ref.txt: prop.test, binom.test, poisson.test,
 * t.test, glm, qpois/qbinom) and from an independent Python implementation of the
 * seeded Laplace mechanism (kpi_laplace_ref.py -> kpi_laplace_ref.txt).
 * Tolerances: relative 1e-9 for closed forms, 1e-7 for results from GSL's
 * iterative quantile inverses (gamma, beta, t), absolute 1e-12 near zero.
 * Usage: test_kpi_stats DIR (the directory holding the reference files). */
#include "kpi/kpi.h"
#include "tests/unit/check.h"
#include "tests/unit/refcheck.h"
#include <gsl/gsl_errno.h>
#include <stdlib.h>


static int lines_checked[16];

static void check_line(const char *tag, const double *v, int n)
{
    px_ci ci;
    double lo, hi;
    if (strcmp(tag, "wilson") == 0 && n == 5) {
        CHECK_INT(px_kpi_wilson(v[0], v[1], v[2], &ci), 0);
        CHECK_REL(ci.lo, v[3], 1e-9);
        CHECK_REL(ci.hi, v[4], 1e-9);
        CHECK_REL(ci.est, v[0] / v[1], 1e-12);
        lines_checked[0]++;
    } else if (strcmp(tag, "clopper") == 0 && n == 5) {
        CHECK_INT(px_kpi_clopper_pearson(v[0], v[1], v[2], &ci), 0);
        CHECK_REL(ci.lo, v[3], 1e-7);
        CHECK_REL(ci.hi, v[4], 1e-7);
        lines_checked[1]++;
    } else if (strcmp(tag, "poisson") == 0 && n == 4) {
        CHECK_INT(px_kpi_poisson_exact(v[0], v[1], &lo, &hi), 0);
        CHECK_REL(lo, v[2], 1e-7);
        CHECK_REL(hi, v[3], 1e-7);
        lines_checked[2]++;
    } else if (strcmp(tag, "byar") == 0 && n == 4) {
        CHECK_INT(px_kpi_poisson_byar(v[0], v[1], &lo, &hi), 0);
        CHECK_REL(lo, v[2], 1e-9);
        CHECK_REL(hi, v[3], 1e-9);
        lines_checked[3]++;
    } else if (strcmp(tag, "oe_exact") == 0 && n == 6) {
        px_kpi_ci_method m;
        CHECK_INT(px_kpi_oe(v[0], v[1], v[2], 1e300, &ci, &m), 0);   /* forced exact */
        CHECK_INT(m, PX_KPI_CI_EXACT);
        CHECK_REL(ci.est, v[3], 1e-12);
        CHECK_REL(ci.lo, v[4], 1e-7);
        CHECK_REL(ci.hi, v[5], 1e-7);
        /* the default rule: exact below 50 events, Byar from 50 on, and then within
         * 1e-4 (95%) / 1e-3 (99.8%) of the exact limits */
        CHECK_INT(px_kpi_oe(v[0], v[1], v[2], PX_KPI_BYAR_MIN_EVENTS, &ci, &m), 0);
        CHECK_INT(m, v[0] >= 50 ? PX_KPI_CI_BYAR : PX_KPI_CI_EXACT);
        double tol = v[0] < 50 ? 1e-7 : v[2] > 0.99 ? 1e-3 : 1e-4;
        CHECK_REL(ci.lo, v[4], tol);
        CHECK_REL(ci.hi, v[5], tol);
        lines_checked[4]++;
    } else if (strcmp(tag, "mean_t") == 0 && n == 7) {
        CHECK_INT(px_kpi_mean_t(v[0], v[1], v[2], v[3], &ci), 0);
        CHECK_REL(ci.est, v[4], 1e-12);
        CHECK_REL(ci.lo, v[5], 1e-7);
        CHECK_REL(ci.hi, v[6], 1e-7);
        lines_checked[5]++;
    } else if (strcmp(tag, "ratio_robust") == 0 && n == 10) {
        CHECK_INT(px_kpi_ratio_robust(v[0], v[1], v[2], v[3], v[4], v[5], v[6], &ci), 0);
        /* R's glm converges to 1e-8 in deviance: the estimate agrees to ~1e-9 */
        CHECK_REL(ci.est, v[7], 1e-8);
        CHECK_REL(ci.lo, v[8], 1e-7);
        CHECK_REL(ci.hi, v[9], 1e-7);
        lines_checked[6]++;
    } else if (strcmp(tag, "funnel_oe") == 0 && n == 5) {
        CHECK_INT(px_kpi_funnel_oe(v[0], v[1], v[2], &lo, &hi), 0);
        CHECK_REL(lo, v[3], 1e-8);
        CHECK_REL(hi, v[4], 1e-8);
        lines_checked[7]++;
    } else if (strcmp(tag, "funnel_prop") == 0 && n == 6) {
        CHECK_INT(px_kpi_funnel_prop(v[0], v[1], v[2], v[3], &lo, &hi), 0);
        CHECK_REL(lo, v[4], 1e-8);
        CHECK_REL(hi, v[5], 1e-8);
        lines_checked[8]++;
    } else if (strcmp(tag, "phi") == 0 && n >= 3) {
        CHECK_INT((int)v[0], n - 3);
        double phi = px_kpi_overdispersion(v + 3, (size_t)(n - 3), v[1]);
        CHECK_REL(phi, v[2], 1e-12);
        lines_checked[9]++;
    } else {
        fprintf(stderr, "unknown reference line '%s' with %d values\n", tag, n);
        check_failures++;
    }
}

/* The eb_* lines: a _s2 line (k, target, s2) followed by k unit lines
 * (i, rate, var, smoothed, weight). */
static void check_eb(FILE *f, const double *head)
{
    const char *tag = "eb";
    size_t k = (size_t)head[0];
    double target = head[1], s2_ref = head[2], s2 = -1;
    double *r = calloc(k, sizeof *r), *v = calloc(k, sizeof *v), *sm = calloc(k, sizeof *sm),
           *w = calloc(k, sizeof *w), *sm_ref = calloc(k, sizeof *sm), *w_ref = calloc(k, sizeof *w);
    for (size_t i = 0; i < k; i++) {
        char t[32];
        double idx;
        if (fscanf(f, "%31s %lf %lf %lf %lf %lf", t, &idx, &r[i], &v[i], &sm_ref[i], &w_ref[i]) != 6) {
            check_failures++;
            break;
        }
    }
    CHECK_INT(px_kpi_eb_smooth(r, v, k, target, sm, w, &s2), 0);
    CHECK_REL(s2, s2_ref, 1e-9);
    for (size_t i = 0; i < k; i++) {
        CHECK_REL(sm[i], sm_ref[i], 1e-9);
        CHECK_REL(w[i], w_ref[i], 1e-9);
    }
    lines_checked[10]++;
    free(r), free(v), free(sm), free(w), free(sm_ref), free(w_ref);
}

/* One reference line; an eb_*_s2 line announces its unit lines, read here. */
static void ref_line(FILE *f, const char *tag, const double *v, int n)
{
    size_t tl = strlen(tag);
    if (tl > 3 && strcmp(tag + tl - 3, "_s2") == 0)
        check_eb(f, v);
    else
        check_line(tag, v, n);
}

static void check_laplace(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open '%s'\n", path);
        check_failures++;
        return;
    }
    char tag[32];
    unsigned long long seed, last = 1;
    double scale, want;
    int i, n = 0;
    px_rng r;
    while (fscanf(f, "%31s %llu %lf %d %lf", tag, &seed, &scale, &i, &want) == 5) {
        if (i == 0 || seed != last) px_rng_seed(&r, seed);
        last = seed;
        double got = px_kpi_laplace(&r, scale);
        check_count++;
        if (got != want) {   /* same operations in the same order: bit-identical */
            check_failures++;
            fprintf(stderr, "laplace seed %llu draw %d: %.17g, expected %.17g\n", seed, i, got, want);
        }
        n++;
    }
    fclose(f);
    CHECK(n == 24);
}

/* The noise distribution itself: Kolmogorov-Smirnov distance of 200,000 draws from
 * the Laplace(0, b) CDF, mean and variance 2 b^2. Deterministic (seeded); the bound
 * 1.63 / sqrt(n) is the 1% critical value, so a wrong mechanism fails it. */
static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void check_laplace_distribution(void)
{
    const size_t n = 200000;
    const double b = 2.5;
    double *x = malloc(n * sizeof *x), sum = 0, sum2 = 0;
    px_rng r;
    px_rng_seed(&r, 2024);
    for (size_t i = 0; i < n; i++) {
        x[i] = px_kpi_laplace(&r, b);
        sum += x[i];
        sum2 += x[i] * x[i];
    }
    qsort(x, n, sizeof *x, cmp_d);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double F = x[i] < 0 ? 0.5 * exp(x[i] / b) : 1 - 0.5 * exp(-x[i] / b);
        double d1 = fabs(F - (double)i / (double)n), d2 = fabs(F - (double)(i + 1) / (double)n);
        if (d1 > d) d = d1;
        if (d2 > d) d = d2;
    }
    CHECK(d < 1.63 / sqrt((double)n));
    CHECK_NEAR(sum / (double)n, 0, 5 * b * sqrt(2.0 / (double)n));
    CHECK_NEAR(sum2 / (double)n, 2 * b * b, 0.05 * 2 * b * b);
    free(x);

    /* released counts: rounded, never negative, unbiased away from 0 */
    px_rng_seed(&r, 7);
    double s = 0;
    int neg = 0, frac = 0;
    for (int i = 0; i < 20000; i++) {
        double c = px_kpi_dp_count(&r, 1000, 1, 0.5);
        neg += c < 0;
        frac += c != floor(c);
        s += c;
    }
    CHECK_INT(neg, 0);
    CHECK_INT(frac, 0);
    CHECK_NEAR(s / 20000, 1000, 0.1);
    CHECK(px_kpi_dp_count(&r, 0, 1, 1e-3) >= 0);
}

static void check_edges(void)
{
    px_ci ci;
    double lo, hi;
    CHECK_INT(px_kpi_wilson(1, 0, 0.95, &ci), PX_EINVAL);
    CHECK_INT(px_kpi_wilson(11, 10, 0.95, &ci), PX_EINVAL);
    CHECK_INT(px_kpi_wilson(1, 10, 1.0, &ci), PX_EINVAL);
    CHECK_INT(px_kpi_oe(3, 0, 0.95, 50, &ci, NULL), PX_EINVAL);
    CHECK_INT(px_kpi_oe(-1, 2, 0.95, 50, &ci, NULL), PX_EINVAL);
    CHECK_INT(px_kpi_mean_t(1, 5, 25, 0.95, &ci), PX_EINVAL);
    CHECK_INT(px_kpi_ratio_robust(10, 0, 5, 0, 0, 3, 0.95, &ci), PX_EINVAL);
    CHECK_INT(px_kpi_poisson_exact(NAN, 0.95, &lo, &hi), PX_EINVAL);
    CHECK_INT(px_kpi_funnel_oe(0, 0.95, 1, &lo, &hi), PX_EINVAL);
    /* a threshold at or below 5 never selects Byar: exact at 5 events or fewer */
    px_kpi_ci_method m;
    CHECK_INT(px_kpi_oe(3, 2, 0.95, 1, &ci, &m), 0);
    CHECK_INT(m, PX_KPI_CI_EXACT);
    /* large counts: the exact limits stay finite and bracket the estimate */
    CHECK_INT(px_kpi_poisson_exact(2e6, 0.998, &lo, &hi), 0);
    CHECK(lo < 2e6 && hi > 2e6 && hi - lo < 2e4);
    CHECK_INT(px_kpi_funnel_oe(2e6, 0.998, 1, &lo, &hi), 0);
    CHECK(lo < 1 && hi > 1 && hi - lo < 0.01);
    /* EB with fewer than two usable units: no signal estimate, full shrinkage */
    double r1[2] = {0.2, NAN}, v1[2] = {0.01, 0.01}, sm[2], w[2], s2;
    CHECK_INT(px_kpi_eb_smooth(r1, v1, 2, 0.15, sm, w, &s2), 0);
    CHECK_NEAR(s2, 0, 0);
    CHECK_NEAR(sm[0], 0.15, 1e-15);
    CHECK(isnan(sm[1]) && isnan(w[1]));
    CHECK(isnan(px_kpi_overdispersion(r1 + 1, 1, 0.1)));
    /* normal funnel: z sqrt(phi var / n) */
    CHECK_INT(px_kpi_funnel_normal(100, 1, 0.25, 0.95, 4, &lo, &hi), 0);
    CHECK_NEAR(hi - 1, 1.959963984540054 * sqrt(4 * 0.25 / 100), 1e-12);
    CHECK_NEAR(1 - lo, hi - 1, 1e-15);
}

int main(int argc, char **argv)
{
    gsl_set_error_handler_off();
    const char *dir = argc > 1 ? argv[1] : "tests/unit";
    char path[4096];
    snprintf(path, sizeof path, "%s/kpi_ref.txt", dir);
    if (ref_read(path, ref_line) != 0) return 1;
    /* every kind of reference line was present and read */
    for (int i = 0; i <= 10; i++) CHECK(lines_checked[i] > 0);
    snprintf(path, sizeof path, "%s/kpi_laplace_ref.txt", dir);
    check_laplace(path);
    check_laplace_distribution();
    check_edges();
    return check_report("test_kpi_stats");
}
