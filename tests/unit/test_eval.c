/* test_eval.c: models/eval.c against reference values from independent code
 * (tests/unit/ref_eval.py: scikit-learn 1.2, statsmodels 0.13, textbook O(n^2)
 * DeLong and Hosmer-Lemeshow in numpy/scipy), hand-checked small cases, the
 * behaviour of worse scores, bad input and the JSON form.
 * Usage: test_eval FIXTURE_DIR (tests/fixtures/eval) | test_eval --bench N
 *
 * Tolerances (absolute unless said): AUC, DeLong SE, CI ends, AUPRC, Brier, the
 * paired difference and its SE 1e-9; calibration intercept and slope 1e-6;
 * Hosmer-Lemeshow chi-square and the p-values (HL, paired) 1e-9 relative;
 * group means/rates and sensitivity/specificity/PPV/NPV 1e-12; counts exact;
 * regression metrics 1e-9 relative. A reference "nan" requires NaN.
 * Grouping rule on both sides: sort by p ascending, ties in row order (stable),
 * G = min(10, n) groups, the first n mod G of them one row larger. */
#include "models/models.h"
#include "check.h"
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* ---- fixtures and reference file ---------------------------------------- */

#define MAXCOLS 8
typedef struct {
    size_t n, ncols;
    char names[MAXCOLS][16];
    double *col[MAXCOLS];
} table;

static void table_free(table *t)
{
    for (size_t j = 0; j < t->ncols; j++) free(t->col[j]);
    memset(t, 0, sizeof *t);
}

/* Reads a numeric CSV with a header line; returns 0 or -1. */
static int table_read(const char *dir, const char *name, table *t)
{
    char path[512], line[1024];
    memset(t, 0, sizeof *t);
    snprintf(path, sizeof path, "%s/%s.csv", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(line, sizeof line, f)) goto fail;
    for (char *tok = strtok(line, ",\r\n"); tok && t->ncols < MAXCOLS; tok = strtok(NULL, ",\r\n"))
        snprintf(t->names[t->ncols++], sizeof t->names[0], "%s", tok);
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '\n') continue;
        if (t->n == cap) {
            cap = cap ? 2 * cap : 256;
            for (size_t j = 0; j < t->ncols; j++) t->col[j] = realloc(t->col[j], cap * sizeof(double));
        }
        char *s = line;
        for (size_t j = 0; j < t->ncols; j++) {
            char *end;
            t->col[j][t->n] = strtod(s, &end);
            if (end == s) goto fail;
            s = end + (*end == ',');
        }
        t->n++;
    }
    fclose(f);
    return 0;
fail:
    fclose(f);
    table_free(t);
    return -1;
}

static double *table_col(const table *t, const char *name)
{
    for (size_t j = 0; j < t->ncols; j++)
        if (strcmp(t->names[j], name) == 0) return t->col[j];
    return NULL;
}

typedef struct { char cas[32], key[32]; double v; } ref;

static ref *refs_read(const char *dir, size_t *n)
{
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/ref.txt", dir);
    FILE *f = fopen(path, "r");
    ref *r = NULL;
    size_t cap = 0;
    *n = 0;
    if (!f) return NULL;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (*n == cap) r = realloc(r, (cap = cap ? 2 * cap : 512) * sizeof *r);
        char val[64];
        if (sscanf(line, "%31s %31s %63s", r[*n].cas, r[*n].key, val) != 3) continue;
        r[*n].v = strtod(val, NULL);   /* strtod reads "nan" and "inf" */
        (*n)++;
    }
    fclose(f);
    return r;
}

/* ---- comparing ------------------------------------------------------------ */

enum { ABS, REL, EXACT };

static void check_value(const char *cas, const char *key, double got, double want, int how, double tol)
{
    int ok;
    check_count++;
    if (isnan(want))
        ok = isnan(got);
    else if (how == EXACT)
        ok = got == want;
    else if (how == REL)
        ok = fabs(got - want) <= tol * fmax(fabs(want), 1e-300);
    else
        ok = fabs(got - want) <= tol;
    if (!ok) {
        check_failures++;
        fprintf(stderr, "%s %s: got %.17g, reference %.17g (tol %g%s)\n", cas, key, got, want, tol,
                how == REL ? " relative" : "");
    }
}

/* Value and tolerance of a binary-evaluation key; returns 0 for an unknown key. */
static int bin_field(const px_eval_bin *ev, const char *key, double *v, int *how, double *tol)
{
    static const struct { const char *k; size_t off; int how; double tol; } top[] = {
        {"auc", offsetof(px_eval_bin, auc), ABS, 1e-9},
        {"auc_se", offsetof(px_eval_bin, auc_se), ABS, 1e-9},
        {"auc_lo", offsetof(px_eval_bin, auc_lo), ABS, 1e-9},
        {"auc_hi", offsetof(px_eval_bin, auc_hi), ABS, 1e-9},
        {"auprc", offsetof(px_eval_bin, auprc), ABS, 1e-9},
        {"brier", offsetof(px_eval_bin, brier), ABS, 1e-9},
        {"cal_intercept", offsetof(px_eval_bin, cal_intercept), ABS, 1e-6},
        {"cal_slope", offsetof(px_eval_bin, cal_slope), ABS, 1e-6},
        {"hl_chi2", offsetof(px_eval_bin, hl_chi2), REL, 1e-9},
        {"hl_p", offsetof(px_eval_bin, hl_p), REL, 1e-9},
    };
    for (size_t j = 0; j < sizeof top / sizeof top[0]; j++)
        if (strcmp(key, top[j].k) == 0) {
            *v = *(const double *)((const char *)ev + top[j].off);
            *how = top[j].how;
            *tol = top[j].tol;
            return 1;
        }
    *how = EXACT;
    *tol = 0;
    if (strcmp(key, "n") == 0) return *v = (double)ev->n, 1;
    if (strcmp(key, "events") == 0) return *v = (double)ev->events, 1;
    if (strcmp(key, "hl_df") == 0) return *v = ev->hl_df, 1;
    if (strcmp(key, "ngroups") == 0) return *v = (double)ev->ngroups, 1;
    unsigned i;
    char sub[16];
    if (sscanf(key, "group%u.%15s", &i, sub) == 2 && i < ev->ngroups) {
        if (strcmp(sub, "n") == 0) return *v = (double)ev->group[i].n, 1;
        if (strcmp(sub, "events") == 0) return *v = ev->group[i].events, 1;
        *how = ABS;
        *tol = 1e-12;
        if (strcmp(sub, "mean_pred") == 0) return *v = ev->group[i].mean_pred, 1;
        if (strcmp(sub, "obs_rate") == 0) return *v = ev->group[i].obs_rate, 1;
    }
    if (sscanf(key, "thr%u.%15s", &i, sub) == 2 && i < PX_EVAL_THRESHOLDS) {
        if (strcmp(sub, "threshold") == 0) return *v = ev->thr[i].threshold, 1;
        if (strcmp(sub, "tp") == 0) return *v = (double)ev->thr[i].tp, 1;
        if (strcmp(sub, "fp") == 0) return *v = (double)ev->thr[i].fp, 1;
        if (strcmp(sub, "tn") == 0) return *v = (double)ev->thr[i].tn, 1;
        if (strcmp(sub, "fn") == 0) return *v = (double)ev->thr[i].fn, 1;
        *how = ABS;
        *tol = 1e-12;
        if (strcmp(sub, "sens") == 0) return *v = ev->thr[i].sens, 1;
        if (strcmp(sub, "spec") == 0) return *v = ev->thr[i].spec, 1;
        if (strcmp(sub, "ppv") == 0) return *v = ev->thr[i].ppv, 1;
        if (strcmp(sub, "npv") == 0) return *v = ev->thr[i].npv, 1;
    }
    return 0;
}

/* Checks every reference line of one case; returns how many lines it had. */
static size_t check_case(const char *dir, const ref *r, size_t nr, const char *cas)
{
    char fx[32], cols[32], *dash;
    size_t lines = 0, expect = 0;
    table t;
    px_err e = {0};
    snprintf(fx, sizeof fx, "%s", cas);
    char *colon = strchr(fx, ':');
    if (!colon) return 0;
    *colon = '\0';
    snprintf(cols, sizeof cols, "%s", colon + 1);
    if (table_read(dir, fx, &t)) {
        fprintf(stderr, "cannot read fixture '%s/%s.csv'\n", dir, fx);
        CHECK(0);
        return 0;
    }
    double *y = table_col(&t, "y");
    CHECK(y != NULL);
    if ((dash = strchr(cols, '-'))) {   /* paired DeLong */
        *dash = '\0';
        double *a = table_col(&t, cols), *b = table_col(&t, dash + 1), diff = NAN, se = NAN, pv = NAN;
        CHECK(a && b);
        if (y && a && b) CHECK_INT(px_eval_delong_paired(y, a, b, t.n, &diff, &se, &pv, &e), 0);
        for (size_t i = 0; i < nr; i++) {
            if (strcmp(r[i].cas, cas)) continue;
            lines++;
            if (strcmp(r[i].key, "diff") == 0) check_value(cas, "diff", diff, r[i].v, ABS, 1e-9);
            else if (strcmp(r[i].key, "se") == 0) check_value(cas, "se", se, r[i].v, ABS, 1e-9);
            else if (strcmp(r[i].key, "pvalue") == 0) check_value(cas, "pvalue", pv, r[i].v, REL, 1e-9);
            else CHECK(!"unknown paired key");
        }
        expect = 3;
    } else if (strcmp(fx, "reg") == 0) {
        double *yh = table_col(&t, cols);
        px_eval_reg ev = {0};
        CHECK(yh != NULL);
        if (y && yh) CHECK_INT(px_eval_regression(y, yh, t.n, &ev, &e), 0);
        const double got[] = {(double)ev.n, ev.mae, ev.rmse, ev.r2, ev.mean_obs, ev.mean_pred};
        const char *const keys[] = {"n", "mae", "rmse", "r2", "mean_obs", "mean_pred"};
        for (size_t i = 0; i < nr; i++) {
            if (strcmp(r[i].cas, cas)) continue;
            lines++;
            size_t k = 0;
            while (k < 6 && strcmp(keys[k], r[i].key)) k++;
            CHECK(k < 6);
            if (k < 6) check_value(cas, r[i].key, got[k], r[i].v, k ? REL : EXACT, 1e-9);
        }
        expect = 6;
    } else {
        double *p = table_col(&t, cols);
        px_eval_bin ev;
        memset(&ev, 0, sizeof ev);
        CHECK(p != NULL);
        if (y && p) CHECK_INT(px_eval_binary(y, p, t.n, &ev, &e), 0);
        for (size_t i = 0; i < nr; i++) {
            if (strcmp(r[i].cas, cas)) continue;
            lines++;
            double v;
            int how;
            double tol;
            if (!bin_field(&ev, r[i].key, &v, &how, &tol)) {
                fprintf(stderr, "%s: unknown or out-of-range key '%s'\n", cas, r[i].key);
                CHECK(0);
                continue;
            }
            check_value(cas, r[i].key, v, r[i].v, how, tol);
        }
        expect = 14 + 4 * ev.ngroups + 9 * PX_EVAL_THRESHOLDS;
    }
    if (lines != expect) fprintf(stderr, "%s: %zu reference lines, expected %zu\n", cas, lines, expect);
    CHECK_INT(lines, expect);
    table_free(&t);
    return lines;
}

/* ---- hand-checked cases --------------------------------------------------- */

static void test_hand(void)
{
    /* scikit-learn's documentation example. Events score 0.35, 0.8; non-events 0.1, 0.4.
     * Pairs won: 0.35>0.1, 0.8>0.1, 0.8>0.4 -> AUC 3/4. Placements V10 = {1/2, 1},
     * V01 = {1, 1/2}: S10 = S01 = 1/8, Var = 1/16 + 1/16 = 1/8. Descending: 0.8 (P 1,
     * R 1/2), 0.4, 0.35 (P 2/3, R 1) -> AP = 1/2 + 1/2 * 2/3 = 5/6. Brier = (0.01 +
     * 0.16 + 0.4225 + 0.04)/4. HL: 4 groups of one: 0.01/0.09 + 0.65^2/(0.35*0.65)
     * + 0.16/0.24 + 0.04/0.16, df 4 (a holdout: G groups, nothing fitted),
     * p = exp(-chi2/2) (1 + chi2/2). */
    const double y[] = {0, 0, 1, 1}, p[] = {0.1, 0.4, 0.35, 0.8};
    px_eval_bin ev;
    px_err e = {0};
    CHECK_INT(px_eval_binary(y, p, 4, &ev, &e), 0);
    CHECK_NEAR(ev.auc, 0.75, 1e-15);
    CHECK_NEAR(ev.auc_se, sqrt(0.125), 1e-15);
    CHECK_NEAR(ev.auc_lo, 0.75 - 1.96 * sqrt(0.125), 1e-15);
    CHECK_NEAR(ev.auc_hi, 1.0, 0);
    CHECK_NEAR(ev.auprc, 5.0 / 6.0, 1e-15);
    CHECK_NEAR(ev.brier, 0.6325 / 4, 1e-15);
    double chi2 = 0.01 / 0.09 + 0.65 / 0.35 + 0.16 / 0.24 + 0.04 / 0.16;
    CHECK_NEAR(ev.hl_chi2, chi2, 1e-12);
    CHECK_INT(ev.hl_df, 4);
    CHECK_NEAR(ev.hl_p, exp(-chi2 / 2) * (1 + chi2 / 2), 1e-12);
    CHECK_INT(ev.ngroups, 4);
    CHECK_NEAR(ev.group[1].mean_pred, 0.35, 1e-15);   /* ascending order */
    CHECK_NEAR(ev.group[1].obs_rate, 1.0, 0);
    /* threshold 0.05: everyone positive -> no predicted negatives, NPV undefined */
    CHECK_INT(ev.thr[0].tp, 2);
    CHECK_INT(ev.thr[0].fp, 2);
    CHECK_INT(ev.thr[0].tn + ev.thr[0].fn, 0);
    CHECK(isnan(ev.thr[0].npv));
    CHECK_NEAR(ev.thr[0].ppv, 0.5, 0);
    /* threshold 0.4 counts p = 0.4 as positive (p >= t) */
    CHECK_NEAR(ev.thr[5].threshold, 0.4, 0);
    CHECK_INT(ev.thr[5].tp, 1);
    CHECK_INT(ev.thr[5].fp, 1);
    /* threshold 0.5: only 0.8 is positive */
    CHECK_INT(ev.thr[6].tp, 1);
    CHECK_INT(ev.thr[6].fp, 0);
    CHECK_INT(ev.thr[6].tn, 2);
    CHECK_INT(ev.thr[6].fn, 1);
    CHECK_NEAR(ev.thr[6].npv, 2.0 / 3.0, 1e-15);

    /* ties within and across classes: pairs won 1 + 2*3 + 4.5 + 2*5.5 = 22.5 of 36 */
    const double ty[] = {0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1};
    const double tp[] = {0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.9, 0.9, 0.9};
    CHECK_INT(px_eval_binary(ty, tp, 12, &ev, &e), 0);
    CHECK_NEAR(ev.auc, 22.5 / 36, 1e-15);
    /* 12 rows: 10 groups, the first two of 2 rows */
    CHECK_INT(ev.ngroups, 10);
    CHECK_INT(ev.group[0].n, 2);
    CHECK_INT(ev.group[1].n, 2);
    CHECK_INT(ev.group[2].n, 1);

    /* one event: AUC defined, DeLong's S10 is not -> se and interval NaN */
    const double y1[] = {0, 0, 1}, p1[] = {0.1, 0.3, 0.2};
    CHECK_INT(px_eval_binary(y1, p1, 3, &ev, &e), 0);
    CHECK_NEAR(ev.auc, 0.5, 0);
    CHECK(isnan(ev.auc_se) && isnan(ev.auc_lo) && isnan(ev.auc_hi));
    CHECK_INT(ev.ngroups, 3);
    CHECK_INT(ev.hl_df, 3);

    /* regression: residuals -0.5, 0, 1, -1: MAE 0.625, SSE 2.25, RMSE 0.75, SST 5, R^2 0.55 */
    const double ry[] = {1, 2, 3, 4}, rp[] = {1.5, 2, 2, 5};
    px_eval_reg rg;
    CHECK_INT(px_eval_regression(ry, rp, 4, &rg, &e), 0);
    CHECK_INT(rg.n, 4);
    CHECK_NEAR(rg.mae, 0.625, 1e-15);
    CHECK_NEAR(rg.rmse, 0.75, 1e-15);
    CHECK_NEAR(rg.r2, 0.55, 1e-15);
    CHECK_NEAR(rg.mean_obs, 2.5, 0);
    CHECK_NEAR(rg.mean_pred, 2.625, 0);
    const double cy[] = {3, 3, 3};
    CHECK_INT(px_eval_regression(cy, rp, 3, &rg, &e), 0);
    CHECK(isnan(rg.r2));   /* constant outcome: R^2 undefined */
}

/* ---- worse scores, invariances ------------------------------------------- */

static uint64_t lcg = 88172645463325252ull;
static double unif(void)   /* xorshift64: deterministic noise for the tests */
{
    lcg ^= lcg << 13;
    lcg ^= lcg >> 7;
    lcg ^= lcg << 17;
    return (double)(lcg >> 11) / 9007199254740992.0;
}

/* Hosmer-Lemeshow on a holdout under the null: outcomes drawn from the very
 * probabilities being evaluated (perfect calibration), 2000 replicates of 1000
 * rows with p = logistic(-1.5 + N(0,1)) (about 22% events, every decile has
 * expected counts well above 5). The statistic's null distribution is then
 * chi-square with G = 10 df, so the rejection rate at alpha 0.05 must be 5%:
 * accepted in [0.035, 0.065], three binomial standard errors (sqrt(.05 .95 /
 * 2000) = 0.0049) either side. With the in-sample rule (df = G - 2) the same
 * statistics reject P(chi2_10 > qchisq(.95, 8) = 15.507) = 11.5% asymptotically
 * (9.1% in these draws): the test
 * also checks that this wrong rule is detected (rate > 0.08). Seeded
 * (xorshift64 from a fixed state): the same draws on every machine. */
static double normal01(void)
{
    double u1 = unif(), u2 = unif();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static void test_hl_null(void)
{
    enum { REPS = 2000, N = 1000 };
    uint64_t saved = lcg;
    lcg = 0x9e3779b97f4a7c15ull;
    double *y = malloc(N * sizeof *y), *p = malloc(N * sizeof *p);
    CHECK(y && p);
    if (!y || !p) goto out;
    double crit8 = 15.507313055865451;   /* qchisq(0.95, 8), R */
    int rej = 0, rej_g2 = 0, done = 0;
    for (int r = 0; r < REPS; r++) {
        for (size_t i = 0; i < N; i++) {
            p[i] = 1 / (1 + exp(-(-1.5 + normal01())));
            y[i] = unif() < p[i] ? 1 : 0;
        }
        px_eval_bin ev;
        px_err e = {0};
        if (px_eval_binary(y, p, N, &ev, &e) != 0) continue;
        done++;
        CHECK_INT(ev.hl_df, 10);
        rej += ev.hl_p < 0.05;
        rej_g2 += ev.hl_chi2 > crit8;
    }
    CHECK_INT(done, REPS);
    double rate = (double)rej / REPS, rate_g2 = (double)rej_g2 / REPS;
    fprintf(stderr, "HL null rejection rate at 0.05: %.4f with df = G (G - 2 would give %.4f)\n", rate, rate_g2);
    CHECK(rate >= 0.035 && rate <= 0.065);
    CHECK(rate_g2 > 0.08);
out:
    free(y);
    free(p);
    lcg = saved;
}

static void test_worse(const char *dir)
{
    table t;
    px_err e = {0};
    if (table_read(dir, "big", &t)) {
        CHECK(!"cannot read big.csv");
        return;
    }
    const double *y = table_col(&t, "y"), *p1 = table_col(&t, "p1"), *p2 = table_col(&t, "p2"),
                 *p3 = table_col(&t, "p3");
    size_t n = t.n;
    double *q = malloc(n * sizeof *q), diff, se, pv;
    px_eval_bin a, b;
    CHECK_INT(px_eval_binary(y, p1, n, &a, &e), 0);
    CHECK_INT(px_eval_binary(y, p2, n, &b, &e), 0);
    CHECK(b.auc < a.auc - 0.05);   /* p2 is p1's risk with much more noise */
    CHECK_INT(px_eval_delong_paired(y, p1, p2, n, &diff, &se, &pv, &e), 0);
    CHECK(diff > 0 && pv < 1e-6);
    CHECK_NEAR(diff, a.auc - b.auc, 1e-15);

    /* mixing in more and more noise lowers the AUC step by step */
    double prev = a.auc;
    for (int k = 1; k <= 4; k++) {
        double w = 0.25 * k - 0.05;
        for (size_t i = 0; i < n; i++) q[i] = (1 - w) * p1[i] + w * unif();
        CHECK_INT(px_eval_binary(y, q, n, &b, &e), 0);
        CHECK(b.auc < prev);
        prev = b.auc;
    }
    CHECK(prev < 0.6);
    CHECK_INT(px_eval_delong_paired(y, p1, q, n, &diff, &se, &pv, &e), 0);
    CHECK(diff > 0.15 && pv < 1e-10);
    /* p3: the same risk as p1 with independent noise of the same size: no evidence of a difference */
    CHECK(p3 != NULL);
    if (p3) {
        CHECK_INT(px_eval_delong_paired(y, p1, p3, n, &diff, &se, &pv, &e), 0);
        CHECK(fabs(diff) < 0.01 && pv > 0.2);
    }

    /* a monotone transform ranks alike: same AUC and SE, paired diff 0, se 0, p 1 */
    for (size_t i = 0; i < n; i++) q[i] = p1[i] * p1[i];
    CHECK_INT(px_eval_binary(y, q, n, &b, &e), 0);
    CHECK(b.auc == a.auc && b.auc_se == a.auc_se);
    CHECK_INT(px_eval_delong_paired(y, p1, q, n, &diff, &se, &pv, &e), 0);
    CHECK(diff == 0 && se == 0 && pv == 1);
    /* reversing the score mirrors the AUC and keeps its SE */
    for (size_t i = 0; i < n; i++) q[i] = 1 - p1[i];
    CHECK_INT(px_eval_binary(y, q, n, &b, &e), 0);
    CHECK_NEAR(b.auc, 1 - a.auc, 1e-12);
    CHECK_NEAR(b.auc_se, a.auc_se, 1e-12);
    free(q);
    table_free(&t);
}

/* ---- bad input ------------------------------------------------------------- */

static void expect_einval(const double *y, const double *p, size_t n, const char *needle)
{
    px_eval_bin ev;
    px_err e = {0};
    ev.auc = 42;
    CHECK_INT(px_eval_binary(y, p, n, &ev, &e), PX_EINVAL);
    CHECK_INT(e.code, PX_EINVAL);
    CHECK(ev.auc == 42);   /* untouched on error */
    if (!strstr(e.msg, needle)) fprintf(stderr, "message '%s' lacks '%s'\n", e.msg, needle);
    CHECK(strstr(e.msg, needle) != NULL);
}

static void test_bad_input(void)
{
    const double y[] = {0, 1, 0, 1}, p[] = {0.1, 0.9, 0.2, 0.8};
    expect_einval(y, p, 0, "no rows");
    const double y0[] = {1, 1, 1, 1};
    expect_einval(y0, p, 4, "all 4 rows have label 1");
    const double ybad[] = {0, 1, 2, 1};
    expect_einval(ybad, p, 4, "label of row 2 is 2");
    const double ynan[] = {0, NAN, 0, 1};
    expect_einval(ynan, p, 4, "label of row 1");
    const double pnan[] = {0.1, 0.9, NAN, 0.8};
    expect_einval(y, pnan, 4, "probability of row 2 is nan");
    const double phi[] = {0.1, 1.5, 0.2, 0.8};
    expect_einval(y, phi, 4, "probability of row 1 is 1.5, not in [0,1]");
    const double plo[] = {0.1, 0.9, 0.2, -0.01};
    expect_einval(y, plo, 4, "row 3");
    const double pinf[] = {0.1, INFINITY, 0.2, 0.8};
    expect_einval(y, pinf, 4, "row 1");

    px_err e = {0};
    double d = 7, se = 7, pv = 7;
    CHECK_INT(px_eval_delong_paired(y, p, pnan, 4, &d, &se, &pv, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "second score") != NULL);
    CHECK(d == 7);
    const double y1[] = {0, 0, 0, 1};
    CHECK_INT(px_eval_delong_paired(y1, p, p, 4, &d, &se, &pv, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "at least 2") != NULL);

    px_eval_reg rg;
    CHECK_INT(px_eval_regression(y, p, 0, &rg, &e), PX_EINVAL);
    CHECK_INT(px_eval_regression(y, pnan, 4, &rg, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "prediction of row 2") != NULL);
    CHECK_INT(px_eval_regression(pinf, y, 4, &rg, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "outcome of row 1") != NULL);
}

/* ---- JSON ------------------------------------------------------------------ */

static void test_json(void)
{
    const double y[] = {0, 0, 1, 1}, p[] = {0.1, 0.4, 0.35, 0.8};
    px_eval_bin ev;
    px_err e = {0};
    CHECK_INT(px_eval_binary(y, p, 4, &ev, &e), 0);
    char *s = px_eval_bin_json(&ev);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(strncmp(s, "{\"n\":4,\"events\":2,\"auc\":0.75,\"auc_se\":0.35355339059327", 54) == 0);
    CHECK(strpbrk(s, " \n\t") == NULL);   /* compact */
    cJSON *o = cJSON_Parse(s);
    CHECK(o != NULL);
    static const char *const order[] = {"n", "events", "auc", "auc_se", "auc_lo", "auc_hi", "auprc",
                                        "brier", "cal_intercept", "cal_slope", "hl_chi2", "hl_df", "hl_p",
                                        "groups", "thresholds"};
    size_t k = 0;
    for (cJSON *c = o ? o->child : NULL; c; c = c->next, k++) CHECK(k < 15 && strcmp(c->string, order[k]) == 0);
    CHECK_INT(k, 15);
    CHECK_NEAR(cJSON_GetObjectItem(o, "auprc")->valuedouble, ev.auprc, 0);   /* round-trips exactly */
    CHECK_NEAR(cJSON_GetObjectItem(o, "cal_slope")->valuedouble, ev.cal_slope, 0);
    cJSON *g = cJSON_GetObjectItem(o, "groups"), *th = cJSON_GetObjectItem(o, "thresholds");
    CHECK_INT(cJSON_GetArraySize(g), 4);
    CHECK_INT(cJSON_GetArraySize(th), PX_EVAL_THRESHOLDS);
    cJSON *t0 = cJSON_GetArrayItem(th, 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(t0, "npv")));   /* NaN -> null */
    CHECK_NEAR(cJSON_GetObjectItem(t0, "threshold")->valuedouble, 0.05, 0);
    CHECK_STR(cJSON_GetArrayItem(g, 0)->child->string, "n");
    cJSON_Delete(o);
    free(s);

    const double y1[] = {0, 0, 1}, p1[] = {0.1, 0.3, 0.2};
    CHECK_INT(px_eval_binary(y1, p1, 3, &ev, &e), 0);
    s = px_eval_bin_json(&ev);
    CHECK(s && strstr(s, "\"auc_se\":null,\"auc_lo\":null,\"auc_hi\":null,") != NULL);
    CHECK(s && strstr(s, "nan") == NULL);
    free(s);

    px_eval_reg rg = {4, 0.625, 0.75, NAN, 2.5, 2.625};
    s = px_eval_reg_json(&rg);
    CHECK_STR(s, "{\"n\":4,\"mae\":0.625,\"rmse\":0.75,\"r2\":null,\"mean_obs\":2.5,\"mean_pred\":2.625}");
    free(s);
}

/* ---- timing (not part of ctest) ------------------------------------------- */

static int bench(size_t n)
{
    double *y = malloc(n * sizeof *y), *p = malloc(n * sizeof *p), *p2 = malloc(n * sizeof *p2);
    for (size_t i = 0; i < n; i++) {
        double x = unif() + unif() + unif() - 1.5;
        y[i] = unif() < 1 / (1 + exp(-(-2.5 + 2 * x)));
        p[i] = round(1e4 / (1 + exp(-(-2.5 + 2 * (x + 0.3 * (unif() - 0.5)))))) / 1e4;   /* ties: 4 decimals */
        p2[i] = unif();
    }
    px_eval_bin ev;
    px_err e = {0};
    double t0 = px_mono_s();
    int rc = px_eval_binary(y, p, n, &ev, &e);
    double sec = px_mono_s() - t0;
    printf("px_eval_binary: %zu rows, %zu events: %.3f s (rc %d, auc %.4f se %.5f slope %.4f)\n", n, ev.events, sec,
           rc, ev.auc, ev.auc_se, ev.cal_slope);
    double d, se, pv;
    t0 = px_mono_s();
    rc = px_eval_delong_paired(y, p, p2, n, &d, &se, &pv, &e);
    sec = px_mono_s() - t0;
    printf("px_eval_delong_paired: %zu rows: %.3f s (rc %d, diff %.4f)\n", n, sec, rc, d);
    free(y);
    free(p);
    free(p2);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    px_models_init();
    if (argc == 3 && strcmp(argv[1], "--bench") == 0) return bench((size_t)strtoull(argv[2], NULL, 10));
    if (argc != 2) {
        fprintf(stderr, "usage: test_eval FIXTURE_DIR | test_eval --bench N\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t nr = 0;
    ref *r = refs_read(dir, &nr);
    CHECK(r != NULL && nr > 0);
    static const char *const cases[] = {"hand:p", "ties:p", "small7:p", "edge:p", "big:p1", "big:p2",
                                        "big:p3", "big:p1-p2", "big:p1-p3", "big:p2-p3", "reg:yhat"};
    size_t total = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t got = check_case(dir, r, nr, cases[c]);
        CHECK(got > 0);
        total += got;
    }
    CHECK_INT(total, nr);   /* every reference line belongs to a case checked above */
    free(r);
    test_hand();
    test_worse(dir);
    test_hl_null();
    test_bad_input();
    test_json();
    return check_report("test_eval");
}
