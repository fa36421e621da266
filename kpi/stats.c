/* stats.c: the interval statistics behind every KPI: Wilson and Clopper-Pearson
 * for rates, exact (Garwood) and Byar limits for Poisson counts and O/E ratios,
 * the t interval for means, a robust interval for ratios of continuous sums,
 * AHRQ-style empirical-Bayes smoothing, Spiegelhalter's funnel limits and
 * over-dispersion factor, and the seeded Laplace mechanism. Pure functions
 * (no database). Each function that calls GSL turns GSL's aborting error handler
 * off first (px_models_init, once per process), so no caller has to. */
#include "kpi/kpi.h"
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_roots.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *px_kpi_purpose(void)
{
    return "risk-adjusted outcome KPIs and the executive report";
}

static int bad_conf(double conf)
{
    return !(conf > 0 && conf < 1);
}

/* Two-sided standard-normal quantile for level conf. */
static double zq(double conf)
{
    return gsl_cdf_ugaussian_Pinv(0.5 + conf / 2);
}

/* ---- quantiles that do not give up -------------------------------------------
 * GSL's gsl_cdf_gamma_Pinv and gsl_cdf_beta_Pinv refine by Newton steps and give
 * up (NAN, GSL_EFAILED) for large shapes (a Poisson count of 250,000; 61,234 of
 * 400,000), while the CDFs stay accurate there. So when the inverse fails, the
 * quantile is found by Brent's method on the CDF inside a bracket. */
typedef struct { double p, a, b; int beta; } qarg;

static double q_fn(double x, void *arg)
{
    const qarg *q = arg;
    return (q->beta ? gsl_cdf_beta_P(x, q->a, q->b) : gsl_cdf_gamma_P(x, q->a, 1)) - q->p;
}

static double brent(qarg *q, double lo, double hi)
{
    gsl_function f = {q_fn, q};
    gsl_root_fsolver *s = gsl_root_fsolver_alloc(gsl_root_fsolver_brent);
    if (!s) return NAN;
    double x = NAN;
    if (gsl_root_fsolver_set(s, &f, lo, hi) == GSL_SUCCESS) {
        for (int i = 0; i < 200; i++) {
            if (gsl_root_fsolver_iterate(s) != GSL_SUCCESS) break;
            double l = gsl_root_fsolver_x_lower(s), u = gsl_root_fsolver_x_upper(s);
            x = gsl_root_fsolver_root(s);
            if (gsl_root_test_interval(l, u, 0, 1e-15) == GSL_SUCCESS) break;
        }
    }
    gsl_root_fsolver_free(s);
    return x;
}

static double gamma_quantile(double p, double a)
{
    double x = gsl_cdf_gamma_Pinv(p, a, 1);
    if (isfinite(x)) return x;
    qarg q = {p, a, 0, 0};
    /* bracket around the Wilson-Hilferty approximation, widened until it holds */
    double z = gsl_cdf_ugaussian_Pinv(p), t = 1 - 1 / (9 * a) + z / (3 * sqrt(a));
    double x0 = a * (t > 0.05 ? t * t * t : 1e-4), w = 10 * sqrt(a) + 10;
    double lo = fmax(0, x0 - w), hi = x0 + w;
    for (int i = 0; i < 60 && q_fn(lo, &q) > 0; i++) lo = lo / 2;
    for (int i = 0; i < 60 && q_fn(hi, &q) < 0; i++) hi = hi * 2;
    return brent(&q, lo, hi);
}

static double beta_quantile(double p, double a, double b)
{
    double x = gsl_cdf_beta_Pinv(p, a, b);
    if (isfinite(x)) return x;
    qarg q = {p, a, b, 1};
    return brent(&q, 0, 1);
}

int px_kpi_wilson(double x, double n, double conf, px_ci *out)
{
    px_models_init();
    if (!(n > 0) || !(x >= 0) || x > n || bad_conf(conf)) return PX_EINVAL;
    /* Wilson (1927): invert the score test p_hat = p +- z sqrt(p(1-p)/n). Its
     * coverage stays near nominal for small n and rates near 0 or 1, unlike the
     * Wald interval (Brown, Cai & DasGupta 2001). */
    double z = zq(conf), z2 = z * z, p = x / n;
    double denom = 1 + z2 / n;
    double centre = (p + z2 / (2 * n)) / denom;
    double half = z * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom;
    out->est = p;
    out->lo = fmax(0, centre - half);
    out->hi = fmin(1, centre + half);
    return 0;
}

int px_kpi_clopper_pearson(double x, double n, double conf, px_ci *out)
{
    px_models_init();
    if (!(n > 0) || !(x >= 0) || x > n || bad_conf(conf)) return PX_EINVAL;
    double a = 1 - conf;
    out->est = x / n;
    out->lo = x > 0 ? beta_quantile(a / 2, x, n - x + 1) : 0;
    out->hi = x < n ? beta_quantile(1 - a / 2, x + 1, n - x) : 1;
    return isfinite(out->lo) && isfinite(out->hi) ? 0 : PX_EINVAL;
}

int px_kpi_poisson_exact(double o, double conf, double *lo, double *hi)
{
    px_models_init();
    if (!(o >= 0) || !isfinite(o) || bad_conf(conf)) return PX_EINVAL;
    /* Garwood (1936): the chi-square / gamma relation P(X >= o | mu) = P(G_o <= mu),
     * G_o ~ Gamma(o, 1), so the limits are gamma quantiles (= chi2 quantiles / 2). */
    double a = 1 - conf;
    *lo = o > 0 ? gamma_quantile(a / 2, o) : 0;
    *hi = gamma_quantile(1 - a / 2, o + 1);
    return isfinite(*lo) && isfinite(*hi) ? 0 : PX_EINVAL;
}

int px_kpi_poisson_byar(double o, double conf, double *lo, double *hi)
{
    px_models_init();
    if (!(o >= 0) || !isfinite(o) || bad_conf(conf)) return PX_EINVAL;
    /* Byar's approximation (Breslow & Day 1987, eq. 2.17): the Wilson-Hilferty cube-root
     * normal approximation to the gamma quantiles above. */
    double z = zq(conf);
    if (o > 0) {
        double t = 1 - 1 / (9 * o) - z / (3 * sqrt(o));
        *lo = o * t * t * t;
        if (*lo < 0) *lo = 0;
    } else {
        *lo = 0;
    }
    double o1 = o + 1, u = 1 - 1 / (9 * o1) + z / (3 * sqrt(o1));
    *hi = o1 * u * u * u;
    return 0;
}

const char *px_kpi_ci_method_name(px_kpi_ci_method m)
{
    return m == PX_KPI_CI_BYAR ? "byar" : "exact-poisson";
}

int px_kpi_oe(double o, double e, double conf, double byar_min_events, px_ci *out, px_kpi_ci_method *method)
{
    if (!(e > 0) || !(o >= 0) || bad_conf(conf)) return PX_EINVAL;
    double lo, hi;
    int rc;
    /* Exact below the threshold (always at 5 events or fewer, where Byar is off by
     * 0.7% or more); Byar above it, where it agrees with the exact limits to 1e-4. */
    px_kpi_ci_method m = o >= byar_min_events && byar_min_events > 5 ? PX_KPI_CI_BYAR : PX_KPI_CI_EXACT;
    rc = m == PX_KPI_CI_BYAR ? px_kpi_poisson_byar(o, conf, &lo, &hi) : px_kpi_poisson_exact(o, conf, &lo, &hi);
    if (rc) return rc;
    out->est = o / e;
    out->lo = lo / e;
    out->hi = hi / e;
    if (method) *method = m;
    return 0;
}

int px_kpi_mean_t(double n, double sum, double sumsq, double conf, px_ci *out)
{
    px_models_init();
    if (!(n >= 2) || bad_conf(conf) || !isfinite(sum) || !isfinite(sumsq)) return PX_EINVAL;
    double mean = sum / n;
    /* sample variance (n - 1 denominator), as t.test uses */
    double var = (sumsq - sum * mean) / (n - 1);
    if (var < 0) var = 0;
    double half = gsl_cdf_tdist_Pinv(0.5 + conf / 2, n - 1) * sqrt(var / n);
    out->est = mean;
    out->lo = mean - half;
    out->hi = mean + half;
    return 0;
}

int px_kpi_ratio_robust(double n, double sum_y, double sum_e, double sum_yy, double sum_ye, double sum_ee,
                        double conf, px_ci *out)
{
    if (!(n >= 1) || !(sum_y > 0) || !(sum_e > 0) || bad_conf(conf)) return PX_EINVAL;
    double r = sum_y / sum_e;
    /* sum (y_i - r e_i)^2 expanded over the unit's sums: the HC0 "meat"; the
     * "bread" of the intercept-only log-link GLM is 1 / sum(mu_i) = 1 / sum(y). */
    double meat = sum_yy - 2 * r * sum_ye + r * r * sum_ee;
    if (meat < 0) meat = 0;
    double se = sqrt(meat) / sum_y, z = zq(conf);
    out->est = r;
    out->lo = r * exp(-z * se);
    out->hi = r * exp(z * se);
    return 0;
}

int px_kpi_eb_smooth(const double *rate, const double *noise_var, size_t k, double target, double *smoothed,
                     double *weight, double *signal_var)
{
    if (k == 0) return PX_EINVAL;
    /* DerSimonian-Laird moment estimate of the between-unit (signal) variance:
     * s2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w)), w = 1 / v, Q the
     * inverse-variance weighted sum of squares around the weighted mean. */
    double sw = 0, sw2 = 0, swr = 0;
    size_t used = 0;
    for (size_t i = 0; i < k; i++) {
        if (!(noise_var[i] > 0) || !isfinite(noise_var[i]) || !isfinite(rate[i])) continue;
        double w = 1 / noise_var[i];
        sw += w;
        sw2 += w * w;
        swr += w * rate[i];
        used++;
    }
    double s2 = 0;
    if (used >= 2) {
        double mean = swr / sw, q = 0;
        for (size_t i = 0; i < k; i++) {
            if (!(noise_var[i] > 0) || !isfinite(noise_var[i]) || !isfinite(rate[i])) continue;
            double d = rate[i] - mean;
            q += d * d / noise_var[i];
        }
        double denom = sw - sw2 / sw;
        s2 = denom > 0 ? (q - (double)(used - 1)) / denom : 0;
        if (s2 < 0) s2 = 0;
    }
    for (size_t i = 0; i < k; i++) {
        if (!(noise_var[i] > 0) || !isfinite(noise_var[i]) || !isfinite(rate[i])) {
            smoothed[i] = weight[i] = NAN;
            continue;
        }
        /* AHRQ's reliability weight: the share of the rate's variance that is signal */
        double w = s2 / (s2 + noise_var[i]);
        weight[i] = w;
        smoothed[i] = w * rate[i] + (1 - w) * target;
    }
    if (signal_var) *signal_var = s2;
    return 0;
}

/* Spiegelhalter's interpolated quantile of a discrete distribution: the smallest
 * r with F(r) >= p, minus a = (F(r) - p) / (F(r) - F(r - 1)), so the limits move
 * smoothly with the precision instead of in steps. cdf(r) is P(X <= r). */
typedef double (*cdf_fn)(double r, const void *arg);

static double cdf_pois(double r, const void *arg)
{
    return r < 0 ? 0 : gsl_cdf_poisson_P((unsigned)r, *(const double *)arg);
}

struct binom_arg { double t; unsigned n; };
static double cdf_binom(double r, const void *arg)
{
    const struct binom_arg *b = arg;
    return r < 0 ? 0 : gsl_cdf_binomial_P((unsigned)r, b->t, b->n);
}

static double interp_quantile(double p, double guess, double max_r, cdf_fn cdf, const void *arg)
{
    double r = floor(guess);
    if (r < 0) r = 0;
    if (r > max_r) r = max_r;
    /* walk to the smallest r with F(r) >= p from a normal-approximation guess */
    while (r > 0 && cdf(r - 1, arg) >= p) r--;
    while (r < max_r && cdf(r, arg) < p) r++;
    double fr = cdf(r, arg), fr1 = cdf(r - 1, arg);
    double a = fr > fr1 ? (fr - p) / (fr - fr1) : 0;
    return r - a;
}

int px_kpi_funnel_oe(double e, double conf, double phi, double *lo, double *hi)
{
    px_models_init();
    if (!(e > 0) || e > 4e9 || bad_conf(conf) || !(phi > 0)) return PX_EINVAL;
    double z = zq(conf), s = sqrt(e), pl = (1 - conf) / 2, pu = (1 + conf) / 2;
    double l = interp_quantile(pl, e - z * s, 4.2e9, cdf_pois, &e) / e;
    double u = interp_quantile(pu, e + z * s, 4.2e9, cdf_pois, &e) / e;
    double k = phi > 1 ? sqrt(phi) : 1;
    *lo = 1 + (l - 1) * k;
    *hi = 1 + (u - 1) * k;
    if (*lo < 0) *lo = 0;
    return 0;
}

int px_kpi_funnel_prop(double n, double t, double conf, double phi, double *lo, double *hi)
{
    px_models_init();
    if (!(n >= 1) || n > 4e9 || !(t > 0 && t < 1) || bad_conf(conf) || !(phi > 0)) return PX_EINVAL;
    struct binom_arg b = {t, (unsigned)llround(n)};
    double nn = b.n, z = zq(conf), s = sqrt(nn * t * (1 - t)), pl = (1 - conf) / 2, pu = (1 + conf) / 2;
    double l = interp_quantile(pl, nn * t - z * s, nn, cdf_binom, &b) / nn;
    double u = interp_quantile(pu, nn * t + z * s, nn, cdf_binom, &b) / nn;
    double k = phi > 1 ? sqrt(phi) : 1;
    *lo = fmax(0, t + (l - t) * k);
    *hi = fmin(1, t + (u - t) * k);
    return 0;
}

int px_kpi_funnel_normal(double n, double target, double unit_var, double conf, double phi, double *lo,
                         double *hi)
{
    px_models_init();
    if (!(n > 0) || !(unit_var >= 0) || bad_conf(conf) || !(phi > 0)) return PX_EINVAL;
    double k = phi > 1 ? phi : 1;
    double half = zq(conf) * sqrt(k * unit_var / n);
    *lo = target - half;
    *hi = target + half;
    return 0;
}

double px_kpi_overdispersion(const double *z, size_t k, double winsor)
{
    size_t n = 0;
    for (size_t i = 0; i < k; i++) n += isfinite(z[i]) != 0;
    if (n == 0) return NAN;
    double *s = malloc(n * sizeof *s);
    if (!s) return NAN;
    n = 0;
    for (size_t i = 0; i < k; i++)
        if (isfinite(z[i])) s[n++] = z[i];
    qsort(s, n, sizeof *s, px_cmp_double);
    /* Spiegelhalter (2005): Winsorize so that a few genuinely divergent units do
     * not inflate the estimate of the dispersion of the in-control ones. */
    double zl = winsor > 0 ? px_quantile7(s, n, winsor) : s[0];
    double zu = winsor > 0 ? px_quantile7(s, n, 1 - winsor) : s[n - 1];
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        double v = s[i] < zl ? zl : s[i] > zu ? zu : s[i];
        sum += v * v;
    }
    free(s);
    return sum / (double)n;
}

/* ---- the Laplace mechanism ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void px_kpi_rng_seed(px_kpi_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro(px_kpi_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double px_kpi_rng_uniform(px_kpi_rng *r)
{
    /* 53 random bits, centred in their cell so that 0 and 1 never occur */
    return ((double)(xoshiro(r) >> 11) + 0.5) * 0x1.0p-53;
}

double px_kpi_laplace(px_kpi_rng *r, double scale)
{
    double v = px_kpi_rng_uniform(r) - 0.5;
    return -scale * (v < 0 ? -1 : 1) * log(1 - 2 * fabs(v));
}

double px_kpi_dp_count(px_kpi_rng *r, double x, double sensitivity, double epsilon)
{
    double y = round(x + px_kpi_laplace(r, sensitivity / epsilon));
    return y < 0 ? 0 : y;
}
