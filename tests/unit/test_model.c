/* test_model.c: px_model on a dataset built from glm.csv: the encoding (means,
 * population sds, the most frequent level as reference), coefficients on the
 * original scale against R's glm() with that reference (glm_ref.txt, 1e-6),
 * predictions and contributions, missing and unseen values, dropped constant
 * columns, singular designs naming the feature, and serialization: deterministic
 * bytes, bit-identical predictions after a load, and every truncation and random
 * byte flips refused (with and without a recomputed checksum). */
#include "models/internal.h"
#include "check.h"
#include "models_fixture.h"
#include <pthread.h>

#define TOL 1e-6

static fx_table glm;
static const char *const cols[] = {"age", "los_prior", "female", "site"};

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1 ? fabs(b) : 1); }

/* raw instance of fixture row i for a model fitted on `cols` */
static void raw_of(const px_model *m, size_t i, double *raw)
{
    for (size_t j = 0; j < 4; j++) {
        const px_feature_info *f = px_model_feature(m, j);
        if (f->kind == PX_COL_NUMERIC) {
            raw[j] = fx_num(&glm, i, cols[j]);
        } else {
            raw[j] = NAN;
            for (size_t l = 0; l < f->nlevels; l++)
                if (strcmp(f->levels[l], fx_text(&glm, i, cols[j])) == 0) raw[j] = (double)l;
        }
    }
}

static void check_glm_model(px_algo algo, const char *label, const char *tag, const fx_ref *r)
{
    px_dataset *d = fx_dataset(&glm, cols, 4, label);
    px_err e;
    px_fit_params p = px_fit_default_params(algo);
    px_fit_info info;
    px_model *m = px_model_fit(d, NULL, 0, &p, &info, &e);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "fit failed: %s\n", e.msg);
        px_dataset_free(d);
        return;
    }
    CHECK_INT(px_model_algo(m), algo);
    CHECK_INT(info.n_train, glm.n);
    CHECK(info.converged && !info.separation);
    CHECK_INT(px_model_nfeatures(m), 4);
    CHECK_INT(px_model_feature_index(m, "site"), 3);
    CHECK_INT(px_model_feature_index(m, "nope"), -1);
    /* encoding */
    for (int j = 0; j < 3; j++) {
        const px_feature_info *f = px_model_feature(m, (size_t)j);
        CHECK(rel(f->mean, fx_ref_get(r, "mean.%s", cols[j])) < 1e-12);
        CHECK(rel(f->sd, fx_ref_get(r, "sd.%s", cols[j])) < 1e-12);
        CHECK_INT(f->col, j + 1);
        CHECK_INT(f->ncols, 1);
    }
    const px_feature_info *site = px_model_feature(m, 3);
    CHECK_INT(site->kind, PX_COL_CATEGORICAL);
    CHECK_INT(site->nlevels, 4);
    CHECK_STR(site->levels[site->ref], "B");
    CHECK_INT(site->ncols, 3);
    /* terms: R's coefficients with site releveled to B */
    size_t nt;
    const px_term *t = px_model_terms(m, &nt);
    CHECK_INT(nt, 7);
    static const char *const names[] = {"(intercept)", "age", "los_prior", "female", "site=A", "site=C", "site=D"};
    double worst = 0;
    for (size_t j = 0; j < nt && j < 7; j++) {
        CHECK_STR(t[j].name, names[j]);
        double db = rel(t[j].beta, fx_ref_get(r, "%s.beta.%zu", tag, j));
        double ds = rel(t[j].se, fx_ref_get(r, "%s.se.%zu", tag, j));
        CHECK(db <= TOL);
        CHECK(ds <= TOL);
        worst = fmax(worst, fmax(db, ds));
    }
    CHECK(rel(info.deviance, fx_ref_get(r, "%s.deviance", tag)) <= TOL);
    CHECK(rel(info.null_deviance, fx_ref_get(r, "%s.null_deviance", tag)) <= TOL);
    fprintf(stderr, "%s model terms vs R: largest difference %.3g\n", px_algo_name(algo), worst);
    /* predictions and contributions */
    double raw[4], v, c[4];
    for (size_t i = 0; i < 5; i++) {
        raw_of(m, i, raw);
        CHECK_INT(px_model_predict(m, raw, &v, c, &e), 0);
        CHECK(rel(v, fx_ref_get(r, "%s.fitted.%zu", tag, i)) < 1e-8);
        /* the intercept on the standardized scale plus the contributions is the linear predictor */
        double eta = 0;
        for (int j = 0; j < 4; j++) eta += c[j];
        double lp = algo == PX_ALGO_LOGIT ? log(v / (1 - v)) : log(v);
        double b0 = t[0].beta; /* original-scale intercept + sum beta_j mean_j = standardized intercept */
        for (int j = 1; j <= 3; j++) b0 += t[j].beta * px_model_feature(m, (size_t)j - 1)->mean;
        CHECK(fabs(b0 + eta - lp) < 1e-9);
    }
    /* missing values contribute nothing: the mean / the reference level */
    raw_of(m, 0, raw);
    raw[0] = NAN;
    raw[3] = NAN;
    CHECK_INT(px_model_predict(m, raw, &v, c, &e), 0);
    CHECK(c[0] == 0 && c[3] == 0);
    raw[3] = (double)site->ref;
    double v2;
    CHECK_INT(px_model_predict(m, raw, &v2, c, &e), 0);
    CHECK(v2 == v);
    raw[3] = 9;
    CHECK_INT(px_model_predict(m, raw, &v2, c, &e), PX_EINVAL);
    CHECK(strstr(e.msg, "'site'") != NULL);
    raw[3] = NAN;
    raw[1] = INFINITY;
    CHECK_INT(px_model_predict(m, raw, &v2, c, &e), PX_EINVAL);
    /* scoring a dataset matches predict; columns by name, levels by text */
    double *sc = malloc(glm.n * sizeof *sc);
    CHECK_INT(px_model_score(m, d, NULL, glm.n, sc, &e), 0);
    raw_of(m, 7, raw);
    CHECK_INT(px_model_predict(m, raw, &v, NULL, &e), 0);
    CHECK(sc[7] == v);
    {
        /* another dataset: columns in another order, site levels A, E (unseen -> B), Z */
        px_dataset *d2 = px_dataset_new(2, 4);
        const char *nm2[] = {"site", "female", "los_prior", "age"};
        for (int j = 0; j < 4; j++) {
            d2->names[j] = strdup(nm2[j]);
            d2->kind[j] = j == 0 ? PX_COL_CATEGORICAL : PX_COL_NUMERIC;
        }
        d2->nlevels[0] = 3;
        d2->levels[0] = malloc(3 * sizeof(char *));
        d2->levels[0][0] = strdup("A");
        d2->levels[0][1] = strdup("E");
        d2->levels[0][2] = strdup("Z");
        double rows[2][4] = {{1, 1, 2.5, 70}, {0, 0, 0.5, 50}};
        memcpy(d2->x, rows, sizeof rows);
        double s2[2];
        CHECK_INT(px_model_score(m, d2, NULL, 2, s2, &e), 0);
        double r0[4] = {70, 2.5, 1, (double)site->ref}, r1[4] = {50, 0.5, 0, 0 /* A */};
        CHECK_INT(px_model_predict(m, r0, &v, NULL, &e), 0);
        CHECK(s2[0] == v);
        CHECK_INT(px_model_predict(m, r1, &v, NULL, &e), 0);
        CHECK(s2[1] == v);
        /* a missing input column is an error naming it */
        free(d2->names[3]);
        d2->names[3] = strdup("years");
        CHECK_INT(px_model_score(m, d2, NULL, 2, s2, &e), PX_EINVAL);
        CHECK(strstr(e.msg, "'age'") != NULL);
        px_dataset_free(d2);
    }

    /* serialization */
    px_buf b1 = {0}, b2 = {0}, b3 = {0}, b4 = {0};
    CHECK_INT(px_model_save(m, &b1, &e), 0);
    CHECK_INT(px_model_save(m, &b2, &e), 0);
    CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    CHECK(b1.len > 16 && memcmp(b1.data, "prognos-model 1\n", 16) == 0);
    px_model *m2 = px_model_fit(d, NULL, 0, &p, NULL, &e); /* a second fit: the same bytes */
    CHECK_INT(px_model_save(m2, &b3, &e), 0);
    CHECK(b1.len == b3.len && memcmp(b1.data, b3.data, b1.len) == 0);
    px_model_free(m2);
    px_model *ld = px_model_load((const unsigned char *)b1.data, b1.len, &e);
    CHECK(ld != NULL);
    if (ld) {
        CHECK_INT(px_model_save(ld, &b4, &e), 0);
        CHECK(b1.len == b4.len && memcmp(b1.data, b4.data, b1.len) == 0);
        double *sl = malloc(glm.n * sizeof *sl);
        CHECK_INT(px_model_score(ld, d, NULL, glm.n, sl, &e), 0);
        CHECK(memcmp(sc, sl, glm.n * sizeof *sl) == 0);
        size_t nt2;
        const px_term *t2 = px_model_terms(ld, &nt2);
        CHECK(nt2 == nt && memcmp(t, t2, nt * sizeof *t) == 0);
        free(sl);
    }
    px_model_free(ld);
    fx_corrupt_all(&b1, 3000, px_algo_name(algo));
    px_buf_release(&b1);
    px_buf_release(&b2);
    px_buf_release(&b3);
    px_buf_release(&b4);
    free(sc);
    px_model_free(m);
    px_dataset_free(d);
}

/* rows: a subset fits the encoding on those rows only */
static void test_rows_and_labels(void)
{
    px_err e;
    px_dataset *d = fx_dataset(&glm, cols, 4, "yb");
    size_t rows[1000];
    for (size_t i = 0; i < 1000; i++) rows[i] = 2 * i;
    px_fit_params p = px_fit_default_params(PX_ALGO_LOGIT);
    px_model *m = px_model_fit(d, rows, 1000, &p, NULL, &e);
    CHECK(m != NULL);
    double s = 0;
    for (size_t i = 0; i < 1000; i++) s += fx_num(&glm, 2 * i, "age");
    CHECK(m && rel(px_model_feature(m, 0)->mean, s / 1000) < 1e-12);
    px_model_free(m);
    rows[5] = glm.n;
    CHECK(px_model_fit(d, rows, 1000, &p, NULL, &e) == NULL);
    CHECK(px_model_fit(d, rows, 0, &p, NULL, &e) == NULL);
    CHECK(strstr(e.msg, "no training rows") != NULL);
    /* counts are not a 0/1 label */
    px_dataset_free(d);
    d = fx_dataset(&glm, cols, 4, "cnt");
    CHECK(px_model_fit(d, NULL, 0, &p, NULL, &e) == NULL);
    CHECK_INT(e.code, PX_EINVAL);
    CHECK(strstr(e.msg, "'cnt'") != NULL && strstr(e.msg, "0/1") != NULL);
    px_dataset_free(d);
}

/* a constant column is dropped; an exact copy of a column is a singular design
 * whose message names the feature */
static void test_dropped_and_singular(void)
{
    px_err e;
    px_dataset *d0 = fx_dataset(&glm, cols, 4, "yb");
    px_dataset *d = px_dataset_new(glm.n, 6);
    const char *nm[] = {"age", "los_prior", "female", "site", "constant", "age_copy"};
    for (int j = 0; j < 6; j++) {
        d->names[j] = strdup(nm[j]);
        d->kind[j] = j == 3 ? PX_COL_CATEGORICAL : PX_COL_NUMERIC;
    }
    d->nlevels[3] = d0->nlevels[3];
    d->levels[3] = malloc(d->nlevels[3] * sizeof(char *));
    for (size_t l = 0; l < d->nlevels[3]; l++) d->levels[3][l] = strdup(d0->levels[3][l]);
    for (size_t i = 0; i < glm.n; i++) {
        for (int j = 0; j < 4; j++) d->x[i * 6 + j] = d0->x[i * 4 + j];
        d->x[i * 6 + 4] = 3.5;
        d->x[i * 6 + 5] = d0->x[i * 4];
        d->y[i] = d0->y[i];
    }
    snprintf(d->table, sizeof d->table, "fixture");
    px_fit_params p = px_fit_default_params(PX_ALGO_LOGIT);
    px_model *m = px_model_fit(d, NULL, 0, &p, NULL, &e);
    CHECK(m == NULL);
    CHECK_INT(e.code, PX_EINVAL);
    CHECK(strstr(e.msg, "'age_copy'") != NULL);
    /* without the copy: the constant column is dropped and the fit equals the 4-column one */
    free(d->names[5]);
    d->names[5] = strdup("noise");
    for (size_t i = 0; i < glm.n; i++) d->x[i * 6 + 5] = (double)((i * 7919) % 101) / 101.0;
    m = px_model_fit(d, NULL, 0, &p, NULL, &e);
    CHECK(m != NULL);
    if (m) {
        const px_feature_info *f = px_model_feature(m, 4);
        CHECK_INT(f->dropped, 1);
        CHECK_INT(f->ncols, 0);
        size_t nt;
        const px_term *t = px_model_terms(m, &nt);
        CHECK_INT(nt, 8);
        CHECK_STR(t[7].name, "noise");
        double raw[6] = {60, 1, 0, 1, 999, 0.5}, raw2[6] = {60, 1, 0, 1, NAN, 0.5}, v1, v2, c[6];
        CHECK_INT(px_model_predict(m, raw, &v1, c, &e), 0);
        CHECK(c[4] == 0);
        CHECK_INT(px_model_predict(m, raw2, &v2, NULL, &e), 0);
        CHECK(v1 == v2);
        px_buf b = {0};
        CHECK_INT(px_model_save(m, &b, &e), 0);
        px_model *ld = px_model_load((const unsigned char *)b.data, b.len, &e);
        CHECK(ld && px_model_feature(ld, 4)->dropped == 1);
        px_model_free(ld);
        px_buf_release(&b);
    }
    px_model_free(m);
    px_dataset_free(d);
    px_dataset_free(d0);
}

/* px_model_predict is thread-safe: two threads over all rows agree with one */
typedef struct job {
    const px_model *m;
    double *out;
} job;
static void *predict_all(void *arg)
{
    job *j = arg;
    double raw[4];
    px_err e;
    for (size_t i = 0; i < glm.n; i++) {
        raw_of(j->m, i, raw);
        px_model_predict(j->m, raw, &j->out[i], NULL, &e);
    }
    return NULL;
}

static void test_threads(void)
{
    px_err e;
    px_dataset *d = fx_dataset(&glm, cols, 4, "yb");
    px_fit_params p = px_fit_default_params(PX_ALGO_LOGIT);
    px_model *m = px_model_fit(d, NULL, 0, &p, NULL, &e);
    double *a = malloc(glm.n * sizeof *a), *b = malloc(glm.n * sizeof *b), *s = malloc(glm.n * sizeof *s);
    job ja = {m, a}, jb = {m, b};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, predict_all, &ja);
    pthread_create(&t2, NULL, predict_all, &jb);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK_INT(px_model_score(m, d, NULL, glm.n, s, &e), 0);
    CHECK(memcmp(a, s, glm.n * sizeof *a) == 0 && memcmp(b, s, glm.n * sizeof *b) == 0);
    free(a);
    free(b);
    free(s);
    px_model_free(m);
    px_dataset_free(d);
}

/* a term name cut to fit px_term.name ends on a UTF-8 character boundary */
static void test_long_level(void)
{
    enum { N = 400 };
    px_err e;
    px_dataset *d = px_dataset_new(N, 2);
    d->names[0] = strdup("x");
    d->names[1] = strdup("g");
    d->kind[0] = PX_COL_NUMERIC;
    d->kind[1] = PX_COL_CATEGORICAL;
    char longlv[121];
    for (int i = 0; i < 60; i++) memcpy(longlv + 2 * i, "\xc3\xa9", 2); /* 60 x U+00E9 */
    longlv[120] = '\0';
    d->nlevels[1] = 2;
    d->levels[1] = malloc(2 * sizeof(char *));
    d->levels[1][0] = strdup("a");
    d->levels[1][1] = strdup(longlv);
    for (size_t i = 0; i < N; i++) {
        d->x[i * 2] = (double)(i % 17) / 17.0;
        d->x[i * 2 + 1] = i % 3 == 0;
        d->y[i] = (i * 7) % 5 < 2;
    }
    px_fit_params p = px_fit_default_params(PX_ALGO_LOGIT);
    px_model *m = px_model_fit(d, NULL, 0, &p, NULL, &e);
    CHECK(m != NULL);
    if (m) {
        size_t nt;
        const px_term *t = px_model_terms(m, &nt);
        CHECK_INT(nt, 3);
        CHECK_INT(strlen(t[2].name), 94); /* "g=" and 46 whole characters of 2 bytes */
        CHECK(memcmp(t[2].name, "g=\xc3\xa9", 4) == 0);
    }
    px_model_free(m);
    px_dataset_free(d);
}

static void test_load_garbage(void)
{
    px_err e;
    const char *junk[] = {"", "prognos-model 1\n", "prognos-model 2\nalgo logit\n", "hello"};
    for (int i = 0; i < 4; i++) {
        px_model *m = px_model_load((const unsigned char *)junk[i], strlen(junk[i]), &e);
        CHECK(m == NULL && e.code == PX_ECORRUPT);
    }
    CHECK(px_model_load(NULL, 10, &e) == NULL);
    /* well-hashed but inconsistent: a level order broken, a column count off */
    px_buf b = {0};
    px_buf_adds(&b, "prognos-model 1\nalgo logit\nn_train 3\nfeatures 1 2\n"
                    "feature 1 s categorical used 1 1 2 0\nlevel 1 b\nlevel 1 a\nwarning 0 \n"
                    "glm 0 1 1 0 1 1 -0.5\nbeta 0 0\ncov 1 0\ncov 0 1\nend\n");
    fx_sha_line(&b);
    CHECK(px_model_load((const unsigned char *)b.data, b.len, &e) == NULL);
    CHECK_INT(e.code, PX_ECORRUPT);
    CHECK(strstr(e.msg, "line 7") != NULL && strstr(e.msg, "byte order") != NULL);
    px_buf_release(&b);
    px_buf_adds(&b, "prognos-model 1\nalgo logit\nn_train 3\nfeatures 1 2\n"
                    "feature 1 s categorical used 1 1 2 0\nlevel 1 a\nlevel 1 b\nwarning 0 \n"
                    "glm 0 1 1 0 1 1 -0.5\nbeta 0 0\ncov 1 0\ncov 0 1\nend\n");
    fx_sha_line(&b);
    px_model *m = px_model_load((const unsigned char *)b.data, b.len, &e);
    CHECK(m != NULL); /* the hand-written consistent model loads */
    px_model_free(m);
    px_buf_release(&b);
}

/* Bounded predictions: one numeric x in [0, 1] on the training rows. A Poisson
 * fit with a steep slope predicts exp(eta) without limit at x = 40; bounded, it
 * predicts at most the training maximum of eta and never above the largest
 * label (and max_value). A logistic fit at x = 40 gives the probability of the
 * most extreme training row, not 1. The bounds survive save and load; a file
 * without a bounds line (saved before bounds existed) loads with the legacy rule. */
static void test_bounds(void)
{
    enum { N = 200 };
    px_err e = {0};
    px_dataset *d = px_dataset_new(N, 1);
    d->names[0] = strdup("x");
    d->kind[0] = PX_COL_NUMERIC;
    for (size_t i = 0; i < N; i++) {
        d->x[i] = (double)i / (N - 1);
        d->y[i] = floor(exp(3.5 * d->x[i]) * (1 + 0.3 * ((double)((i * 7) % 5) - 2) / 2.0)); /* 0..49 days */
    }
    double ymax = 0;
    for (size_t i = 0; i < N; i++) ymax = d->y[i] > ymax ? d->y[i] : ymax;
    px_fit_params p = px_fit_default_params(PX_ALGO_POISSON);
    p.max_value = 30;
    px_model *m = px_model_fit(d, NULL, 0, &p, NULL, &e);
    CHECK(m != NULL);
    if (m) {
        double elo, ehi, lo, hi, v1, v40, vneg, raw;
        px_model_bounds(m, &elo, &ehi, &lo, &hi);
        CHECK(isfinite(elo) && isfinite(ehi) && elo < ehi);
        CHECK_NEAR(hi, 30, 0);     /* labels reach ymax > 30: max_value wins */
        CHECK(ymax > 30);
        CHECK(lo >= 0);
        raw = 1;
        CHECK_INT(px_model_predict(m, &raw, &v1, NULL, &e), 0);
        raw = 40;
        CHECK_INT(px_model_predict(m, &raw, &v40, NULL, &e), 0);
        raw = -40;
        CHECK_INT(px_model_predict(m, &raw, &vneg, NULL, &e), 0);
        CHECK_NEAR(v40, fmin(exp(ehi), 30), 1e-9 * v40);
        CHECK(v40 <= 30 && v40 >= v1);
        CHECK_NEAR(vneg, fmax(exp(elo), lo), 1e-12);
        /* save/load keeps them */
        px_buf b = {0};
        CHECK_INT(px_model_save(m, &b, &e), 0);
        CHECK(strstr(b.data, "\nbounds ") != NULL);
        px_model *m2 = px_model_load((const unsigned char *)b.data, b.len, &e);
        CHECK(m2 != NULL);
        if (m2) {
            double v2;
            raw = 40;
            CHECK_INT(px_model_predict(m2, &raw, &v2, NULL, &e), 0);
            CHECK_NEAR(v2, v40, 0);
        }
        px_model_free(m2);
        px_buf_release(&b);
    }
    px_model_free(m);
    /* logistic: at x = 40 the probability of the most extreme training row */
    for (size_t i = 0; i < N; i++) d->y[i] = (i * 13) % 7 < (i < N / 2 ? 2 : 5);
    p = px_fit_default_params(PX_ALGO_LOGIT);
    m = px_model_fit(d, NULL, 0, &p, NULL, &e);
    CHECK(m != NULL);
    if (m) {
        double elo, ehi, v, raw = 40;
        px_model_bounds(m, &elo, &ehi, NULL, NULL);
        CHECK_INT(px_model_predict(m, &raw, &v, NULL, &e), 0);
        CHECK_NEAR(v, 1 / (1 + exp(-ehi)), 1e-15);
        CHECK(v < 0.9);
    }
    px_model_free(m);
    px_dataset_free(d);
    /* a legacy Poisson file (no bounds line) with eta = 30 at any x: capped at 365 days */
    px_buf b = {0};
    px_buf_adds(&b, "prognos-model 1\nalgo poisson\nn_train 3\nfeatures 1 2\n"
                    "feature 1 x numeric used 1 1 0 1 0 1\nwarning 0 \n"
                    "glm 0 1 1 0 1 1 -0.5\nbeta 30 0\ncov 1 0\ncov 0 1\nend\n");
    fx_sha_line(&b);
    m = px_model_load((const unsigned char *)b.data, b.len, &e);
    CHECK(m != NULL);
    if (m) {
        double v, raw = 0.5, lo, hi;
        CHECK_INT(px_model_predict(m, &raw, &v, NULL, &e), 0);
        CHECK_NEAR(v, PX_MODEL_LEGACY_MAX, 0);
        px_model_bounds(m, NULL, NULL, &lo, &hi);
        CHECK_NEAR(lo, 0, 0);
        CHECK_NEAR(hi, 365, 0);
    }
    px_model_free(m);
    px_buf_release(&b);
}

int main(void)
{
    px_models_init();
    fx_read("glm.csv", &glm);
    fx_ref r;
    fx_ref_read("glm_ref.txt", &r);
    check_glm_model(PX_ALGO_LOGIT, "yb", "logit_b", &r);
    check_glm_model(PX_ALGO_POISSON, "cnt", "pois_b", &r);
    test_rows_and_labels();
    test_dropped_and_singular();
    test_threads();
    test_long_level();
    test_load_garbage();
    test_bounds();
    fx_ref_free(&r);
    fx_free(&glm);
    return check_report("test_model");
}
