/* stats.c: the drift statistics: PSI with a critical value that depends on the
 * sample sizes, the binned two-sample Kolmogorov-Smirnov test and Pearson's
 * chi-square test of homogeneity. Inputs are bin counts of a live window (a) and
 * of the training reference (b); nothing here allocates or fails on bad numbers
 * (NAN out for an empty sample). Checked against scipy in tests/unit/test_serve_stats.c. */
#include "serve/serve.h"
#include <gsl/gsl_cdf.h>
#include <math.h>

/* Every bin's count is raised by 0.5 before shares are taken: without it a bin
 * empty in one sample makes PSI infinite, and with it PSI stays close to the
 * raw value when counts are large. The same correction is applied to both samples. */
double px_drift_psi(const double *a, const double *b, size_t k)
{
    double na = 0, nb = 0;
    for (size_t i = 0; i < k; i++) {
        na += a[i] + 0.5;
        nb += b[i] + 0.5;
    }
    if (k == 0) return NAN;
    double psi = 0;
    for (size_t i = 0; i < k; i++) {
        double p = (a[i] + 0.5) / na, q = (b[i] + 0.5) / nb;
        psi += (p - q) * log(p / q);
    }
    return psi;
}

/* Under no change, sum (p-q) ln(p/q) ~ sum (p-q)^2 / q to second order, and
 * (nm/(n+m)) sum (p-q)^2/q is Pearson's homogeneity statistic, chi-square with
 * k-1 degrees of freedom (Yurdakul B, Naranjo J. Statistical properties of the
 * population stability index. J Risk Model Validation 2020;14(4)). So a fixed
 * cut-off such as 0.1 fires on unchanged data whenever (1/n + 1/m)(k-1) nears it:
 * at n = 100 and 10 bins the expected PSI of unchanged data is already 0.09. */
double px_drift_psi_critical(size_t k, double n, double m, double alpha)
{
    if (k < 2 || !(n > 0) || !(m > 0) || !(alpha > 0 && alpha < 1)) return NAN;
    px_models_init(); /* GSL reports, never aborts (once per process) */
    return (1.0 / n + 1.0 / m) * gsl_cdf_chisq_Qinv(alpha, (double)(k - 1));
}

/* P(K > x) for Kolmogorov's distribution K = sup |B(t)| of the Brownian bridge.
 * Two series (Numerical Recipes 3rd ed., 6.14.12-13): the alternating one
 * converges fast for large x, the theta-function form for small x. */
double px_drift_kolmogorov_q(double x)
{
    if (!(x > 0)) return 1.0;
    if (x < 1.18) {
        /* P(K <= x) = sqrt(2 pi)/x sum_{j>=1} exp(-(2j-1)^2 pi^2 / (8 x^2)) */
        double y = exp(-M_PI * M_PI / (8.0 * x * x)), s = 0, t = y, y8 = pow(y, 8.0);
        for (int j = 1; j <= 8 && t > 0; j++) {
            s += t;
            t *= pow(y8, (double)j);   /* y^((2j+1)^2) = y^((2j-1)^2) * y^(8j) */
        }
        double cdf = sqrt(2.0 * M_PI) / x * s;
        return cdf >= 1 ? 0.0 : 1.0 - cdf;
    }
    double s = 0, sign = 1;
    for (int j = 1; j <= 100; j++) {
        double t = exp(-2.0 * j * j * x * x);
        s += sign * t;
        sign = -sign;
        if (t < 1e-17) break;
    }
    double q = 2.0 * s;
    return q < 0 ? 0.0 : q > 1 ? 1.0 : q;
}

double px_drift_ks(const double *a, const double *b, size_t k, double *p)
{
    double na = 0, nb = 0;
    for (size_t i = 0; i < k; i++) {
        na += a[i];
        nb += b[i];
    }
    if (!(na > 0) || !(nb > 0)) {
        if (p) *p = NAN;
        return NAN;
    }
    /* the cumulative shares at each bin's upper edge; the last is 1 for both */
    double ca = 0, cb = 0, d = 0;
    for (size_t i = 0; i + 1 < k; i++) {
        ca += a[i];
        cb += b[i];
        double gap = fabs(ca / na - cb / nb);
        if (gap > d) d = gap;
    }
    /* asymptotic two-sample p-value with the effective size nm/(n+m)
     * (Smirnov 1939), as scipy.stats.kstwobign.sf(sqrt(en) * d) */
    if (p) *p = px_drift_kolmogorov_q(sqrt(na * nb / (na + nb)) * d);
    return d;
}

int px_drift_chi2(const double *a, const double *b, size_t k, double *stat, int *df, double *p, double *v)
{
    double na = 0, nb = 0;
    size_t used = 0;
    for (size_t i = 0; i < k; i++) {
        na += a[i];
        nb += b[i];
        used += (a[i] + b[i]) > 0;
    }
    if (used < 2 || !(na > 0) || !(nb > 0)) return PX_EINVAL;
    double n = na + nb, x2 = 0;
    for (size_t i = 0; i < k; i++) {
        double col = a[i] + b[i];
        if (col <= 0) continue;
        double ea = na * col / n, eb = nb * col / n;
        x2 += (a[i] - ea) * (a[i] - ea) / ea + (b[i] - eb) * (b[i] - eb) / eb;
    }
    int d = (int)used - 1;
    if (stat) *stat = x2;
    if (df) *df = d;
    px_models_init(); /* GSL reports, never aborts (once per process) */
    if (p) *p = gsl_cdf_chisq_Q(x2, (double)d);
    /* Cramer's V for a 2 x k table: sqrt(X^2 / (n * min(2-1, k-1))) = sqrt(X^2 / n) */
    if (v) *v = sqrt(x2 / n);
    return 0;
}
