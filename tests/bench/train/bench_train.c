/* bench_train.c: the driver of tests/bench/train/run.sh (built, never run by ctest).
 *   bench_train gen OUT.csv [--rows N] [--features K] [--seed S]
 *       writes y,x1..xK from a planted logistic model (deterministic)
 *   bench_train fit IN.csv [--reps R] [--threads T] [--tol TOL] [--coef OUT]
 *       reads the CSV, fits px_logit_fit R times (timing only the fit), prints
 *       the median seconds and writes the coefficients (%.17g) to OUT.
 *   bench_train table URI [--table T] [--label L] [--reps R]
 *       a feature table of the warehouse at URI (default features.readmission,
 *       readmit_30d) to a fitted logit model: px_dataset_load (the feature
 *       reader's binary COPY) and px_model_fit with the default inputs, each
 *       timed; prints the medians. */
#include "models/models.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long long st;
static double unif(void)
{
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(st >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()); }

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Features: a mix of standard normals, correlated pairs, 0/1 indicators and a
 * skewed (exponential) column, so the fit needs a handful of iterations. */
static int gen(const char *path, size_t n, size_t k, unsigned long long seed)
{
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    st = seed;
    double *beta = malloc((k + 1) * sizeof *beta), *x = malloc(k * sizeof *x);
    beta[0] = -1.2;
    for (size_t j = 1; j <= k; j++) beta[j] = 0.08 * (double)((int)(j % 7) - 3);
    fprintf(f, "y");
    for (size_t j = 1; j <= k; j++) fprintf(f, ",x%zu", j);
    fprintf(f, "\n");
    for (size_t i = 0; i < n; i++) {
        double eta = beta[0];
        for (size_t j = 0; j < k; j++) {
            if (j % 5 == 3)
                x[j] = unif() < 0.3;
            else if (j % 5 == 4)
                x[j] = -log(unif());
            else if (j % 5 == 1)
                x[j] = 0.6 * x[j - 1] + 0.8 * gauss();
            else
                x[j] = gauss();
            x[j] = round(x[j] * 1e6) / 1e6; /* what the CSV holds */
            eta += beta[j + 1] * x[j];
        }
        int y = unif() < 1 / (1 + exp(-eta));
        fprintf(f, "%d", y);
        for (size_t j = 0; j < k; j++) fprintf(f, ",%.6f", x[j]);
        fprintf(f, "\n");
    }
    free(beta);
    free(x);
    return fclose(f) != 0;
}

static int fit(const char *path, int reps, int threads, double tol, const char *coef)
{
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    char *line = NULL;
    size_t cap = 0, k = 0;
    if (getline(&line, &cap, f) < 0) return 1;
    for (char *c = line; *c; c++) k += *c == ',';
    size_t n = 0, ncap = 1 << 20;
    double *X = malloc(ncap * (k + 1) * sizeof *X), *y = malloc(ncap * sizeof *y);
    while (getline(&line, &cap, f) > 0) {
        if (n == ncap) {
            ncap *= 2;
            X = realloc(X, ncap * (k + 1) * sizeof *X);
            y = realloc(y, ncap * sizeof *y);
        }
        char *c = line;
        y[n] = strtod(c, &c);
        X[n * (k + 1)] = 1;
        for (size_t j = 1; j <= k; j++) X[n * (k + 1) + j] = strtod(c + 1, &c);
        n++;
    }
    free(line);
    fclose(f);
    px_models_init();
    px_glm_params p = px_glm_default_params();
    p.threads = threads;
    p.tol = tol;
    double *t = malloc((size_t)reps * sizeof *t);
    px_glm_fit g;
    px_err e;
    memset(&g, 0, sizeof g);
    for (int r = 0; r < reps; r++) {
        px_glm_fit_release(&g);
        double t0 = px_mono_s();
        if (px_logit_fit(X, y, NULL, NULL, n, k + 1, &p, &g, &e) < 0) {
            fprintf(stderr, "bench_train: %s\n", e.msg);
            return 1;
        }
        t[r] = px_mono_s() - t0;
        fprintf(stderr, "  prognos rep %d: %.3f s (%d iterations)\n", r + 1, t[r], g.iterations);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    double med = reps % 2 ? t[reps / 2] : (t[reps / 2 - 1] + t[reps / 2]) / 2;
    printf("%.6f %d %zu %zu\n", med, g.iterations, n, k);
    if (coef) {
        FILE *o = fopen(coef, "w");
        if (!o) return 1;
        for (size_t j = 0; j <= k; j++) fprintf(o, "%.17g\n", g.beta[j]);
        fclose(o);
    }
    px_glm_fit_release(&g);
    free(X);
    free(y);
    free(t);
    return 0;
}



/* feature table -> dataset -> fitted logit, timed */
static int table_fit(const char *uri, const char *table, const char *label, int reps)
{
    PGconn *c = PQconnectdb(uri);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_train: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    px_models_init();
    double tl[16], tf[16];
    size_t n = 0, p = 0;
    if (reps > 16) reps = 16;
    for (int r = 0; r < reps; r++) {
        px_err e = {0};
        px_dataset_params dp = px_dataset_default_params();
        dp.table = table, dp.label = label;
        /* a built-in set's table: the built-in model's inputs (all columns are collinear) */
        for (int k = 0; k < px_feat_sets_count; k++)
            if (strcmp(px_feat_sets[k].table, table) == 0) dp.features = px_feat_sets[k].default_features;
        double t0 = px_mono_s();
        px_dataset *d = px_dataset_load(c, &dp, &e);
        tl[r] = px_mono_s() - t0;
        if (!d) {
            fprintf(stderr, "bench_train: %s\n", e.msg);
            PQfinish(c);
            return 1;
        }
        px_fit_params fp = px_fit_default_params(PX_ALGO_LOGIT);
        px_fit_info fi;
        t0 = px_mono_s();
        px_model *m = px_model_fit(d, NULL, 0, &fp, &fi, &e);
        tf[r] = px_mono_s() - t0;
        n = d->n, p = d->p;
        px_dataset_free(d);
        if (!m) {
            fprintf(stderr, "bench_train: %s\n", e.msg);
            PQfinish(c);
            return 1;
        }
        px_model_free(m);
    }
    PQfinish(c);
    qsort(tl, (size_t)reps, sizeof *tl, cmp_d);
    qsort(tf, (size_t)reps, sizeof *tf, cmp_d);
    printf("%s: %zu rows x %zu columns; load (feature reader) median %.3f s, fit median %.3f s, table to fit %.3f s\n",
           table, n, p, tl[reps / 2], tf[reps / 2], tl[reps / 2] + tf[reps / 2]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_train gen OUT.csv [--rows N] [--features K] [--seed S]\n"
                        "       bench_train fit IN.csv [--reps R] [--threads T] [--tol TOL] [--coef OUT]\n"
                        "       bench_train table URI [--table T] [--label L] [--reps R]\n");
        return 2;
    }
    size_t rows = 1000000, feats = 30;
    unsigned long long seed = 1;
    int reps = 3, threads = 2;
    double tol = 1e-10;
    const char *coef = NULL, *table = "features.readmission", *label = "readmit_30d";
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rows"))
            rows = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--features"))
            feats = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--seed"))
            seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tol"))
            tol = strtod(argv[i + 1], NULL);
        else if (!strcmp(argv[i], "--coef"))
            coef = argv[i + 1];
        else if (!strcmp(argv[i], "--table"))
            table = argv[i + 1];
        else if (!strcmp(argv[i], "--label"))
            label = argv[i + 1];
        else {
            fprintf(stderr, "bench_train: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!strcmp(argv[1], "gen")) return gen(argv[2], rows, feats, seed);
    if (!strcmp(argv[1], "fit")) return fit(argv[2], reps, threads, tol, coef);
    if (!strcmp(argv[1], "table")) return table_fit(argv[2], table, label, reps);
    fprintf(stderr, "bench_train: unknown mode %s\n", argv[1]);
    return 2;
}
