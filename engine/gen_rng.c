/* gen_rng.c: the generator's draws from engine's px_rng: normal, gamma, beta,
 * Poisson, negative binomial and weighted choice. Each stream's sequence is fixed
 * by (seed, stream), so a patient's data does not depend on the machine. */
#include "engine/gen_internal.h"

void gen_rng_seed(gen_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t y = stream;
    px_rng_seed(&r->x, seed ^ px_splitmix64(&y));
    r->has_spare = 0;
    r->spare = 0;
}

double gen_normal(gen_rng *r)  /* Box-Muller, keeping the second value */
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double rad = sqrt(-2.0 * log(rng_unif_pos(r))), ang = 6.283185307179586 * rng_unif(r);
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}

double gen_gamma(gen_rng *r, double shape)  /* scale 1; Marsaglia & Tsang 2000 */
{
    if (shape < 1.0) return gen_gamma(r, shape + 1.0) * pow(rng_unif_pos(r), 1.0 / shape);
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = gen_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = rng_unif_pos(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

double gen_beta(gen_rng *r, double a, double b)
{
    double x = gen_gamma(r, a), y = gen_gamma(r, b);
    return x / (x + y);
}

/* Poisson: multiplication method below 10, else PTRS (Hoermann 1993). */
long gen_poisson(gen_rng *r, double lam)
{
    if (!(lam > 0.0)) return 0;
    if (lam < 10.0) {
        double lim = exp(-lam), prod = rng_unif(r);
        long k = 0;
        while (prod > lim) {
            k++;
            prod *= rng_unif(r);
        }
        return k;
    }
    double slam = sqrt(lam), loglam = log(lam), b = 0.931 + 2.53 * slam;
    double a = -0.059 + 0.02483 * b, invalpha = 1.1239 + 1.1328 / (b - 3.4);
    double vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        double u = rng_unif(r) - 0.5, v = rng_unif(r), us = 0.5 - fabs(u);
        double k = floor((2.0 * a / us + b) * u + lam + 0.43);
        if (us >= 0.07 && v <= vr) return (long)k;
        if (k < 0.0 || (us < 0.013 && v > us)) continue;
        if (log(v) + log(invalpha) - log(a / (us * us) + b) <= -lam + k * loglam - lgamma(k + 1.0))
            return (long)k;
    }
}

/* Negative binomial with the given mean and size: Poisson(Gamma(size, mean/size)). */
long gen_negbin(gen_rng *r, double mean, double size)
{
    return gen_poisson(r, gen_gamma(r, size) * mean / size);
}

int gen_pick(gen_rng *r, const double *w, int n)  /* index i with probability w[i]/sum(w) */
{
    double total = 0.0;
    for (int i = 0; i < n; i++) total += w[i];
    double u = rng_unif(r) * total;
    for (int i = 0; i < n; i++) {
        if (u < w[i]) return i;
        u -= w[i];
    }
    for (int i = n - 1; i > 0; i--)
        if (w[i] > 0.0) return i;
    return 0;
}
