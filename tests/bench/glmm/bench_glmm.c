/* bench_glmm.c: driver for tests/bench/glmm/run.sh.
 *   bench_glmm gen CSV --rows N --features K --groups G --seed S [--family logit|poisson]
 *     writes a planted random-intercept data set: K features (half standard
 *     normal, half 0/1), facility sizes from a long-tailed (log-normal) draw,
 *     facility intercepts N(0, 0.5^2); columns fac,y,x1..xK.
 *   bench_glmm fit CSV --family logit|poisson [--coef FILE]
 *     parses the CSV, times px_glmm_fit_dense alone, prints "seconds cpu_seconds iterations tau"
 *     and writes tau and beta ("tau v", "beta.j v") to FILE. */
#include "models/models.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t st = 88172645463325252ULL;
static double unif(void)
{
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    return ((double)(st >> 11) + 0.5) / 9007199254740992.0;
}
static double norm(void) { return sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()); }

static const char *opt(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 3; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return dflt;
}

static int gen(const char *path, size_t n, size_t k, size_t g, int poisson)
{
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    double *w = malloc(g * sizeof *w), *u = malloc(g * sizeof *u), *b = malloc((k + 1) * sizeof *b), tot = 0;
    for (size_t j = 0; j < g; j++) w[j] = exp(1.2 * norm()), tot += w[j], u[j] = 0.5 * norm();
    b[0] = poisson ? 1.0 : -1.5;
    for (size_t j = 1; j <= k; j++) b[j] = (poisson ? 0.1 : 0.3) * norm();
    fprintf(f, "fac,y");
    for (size_t j = 1; j <= k; j++) fprintf(f, ",x%zu", j);
    fprintf(f, "\n");
    size_t done = 0;
    for (size_t j = 0; j < g; j++) {
        size_t m = j + 1 == g ? n - done : (size_t)llround(w[j] / tot * (double)n);
        if (m == 0) m = 1;
        if (done + m > n) m = n - done;
        for (size_t i = 0; i < m; i++) {
            double x[256], eta = b[0] + u[j];
            for (size_t c = 1; c <= k; c++) {
                x[c] = c % 2 ? round(norm() * 1e4) / 1e4 : (double)(unif() < 0.3);
                eta += b[c] * x[c];
            }
            double y;
            if (poisson) {
                double lam = exp(eta), L = exp(-lam), p = 1;
                y = -1;
                do y++, p *= unif(); while (p > L && y < 1000);
            } else {
                y = unif() < 1 / (1 + exp(-eta));
            }
            fprintf(f, "G%04zu,%.0f", j, y);
            for (size_t c = 1; c <= k; c++) fprintf(f, ",%.10g", x[c]);
            fprintf(f, "\n");
        }
        done += m;
    }
    free(w), free(u), free(b);
    return fclose(f) != 0;
}

static int fit(const char *path, int poisson, const char *coef)
{
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    char line[8192];
    if (!fgets(line, sizeof line, f)) return 1;
    size_t k = 1;
    for (char *p = line; *p; p++) k += *p == ',';
    k -= 1;   /* fac, y, x1..xK -> intercept + K */
    size_t cap = 1 << 16, n = 0, ng = 0;
    double *X = malloc(cap * k * sizeof *X), *y = malloc(cap * sizeof *y);
    size_t *grp = malloc(cap * sizeof *grp);
    char prev[64] = "";
    while (fgets(line, sizeof line, f)) {
        if (n == cap) {
            cap *= 2;
            X = realloc(X, cap * k * sizeof *X), y = realloc(y, cap * sizeof *y), grp = realloc(grp, cap * sizeof *grp);
        }
        char *p = strchr(line, ',');
        *p = 0;
        if (strncmp(line, prev, sizeof prev - 1) != 0) snprintf(prev, sizeof prev, "%.63s", line), ng++;
        grp[n] = ng - 1;
        y[n] = strtod(p + 1, &p);
        X[n * k] = 1;
        for (size_t j = 1; j < k; j++) X[n * k + j] = strtod(p + 1, &p);
        n++;
    }
    fclose(f);
    px_models_init();
    px_glmm_fit g;
    px_err e = {0};
    double t0 = px_mono_s();
    clock_t c0 = clock();
    int rc = px_glmm_fit_dense(poisson ? PX_ALGO_POISSON : PX_ALGO_LOGIT, X, y, grp, n, k, ng, NULL, &g, &e);
    double t = px_mono_s() - t0, cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    if (rc) {
        fprintf(stderr, "bench_glmm: %s\n", e.msg);
        return 1;
    }
    printf("%.4f %.4f %d %.10g %zu %zu %zu\n", t, cpu, g.iterations, g.tau, n, k, ng);
    if (coef) {
        FILE *o = fopen(coef, "w");
        if (!o) return 1;
        fprintf(o, "tau %.15g\n", g.tau);
        for (size_t j = 0; j < k; j++) fprintf(o, "beta.%zu %.15g\n", j, g.beta[j]);
        for (size_t j = 0; j < ng; j++) fprintf(o, "mode.%zu %.15g\n", j, g.mode[j]);
        fclose(o);
    }
    px_glmm_fit_release(&g);
    free(X), free(y), free(grp);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_glmm gen|fit CSV [options]\n");
        return 2;
    }
    int poisson = strcmp(opt(argc, argv, "--family", "logit"), "poisson") == 0;
    if (strcmp(argv[1], "gen") == 0) {
        st ^= (uint64_t)atoll(opt(argc, argv, "--seed", "1")) * 0x9E3779B97F4A7C15ULL;
        return gen(argv[2], (size_t)atoll(opt(argc, argv, "--rows", "188000")),
                   (size_t)atoll(opt(argc, argv, "--features", "19")), (size_t)atoll(opt(argc, argv, "--groups", "200")),
                   poisson);
    }
    if (strcmp(argv[1], "fit") == 0) return fit(argv[2], poisson, opt(argc, argv, "--coef", NULL));
    fprintf(stderr, "bench_glmm: unknown command %s\n", argv[1]);
    return 2;
}
