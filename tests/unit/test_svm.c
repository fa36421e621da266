/* test_svm.c: the LibSVM wrapper. SVC on a nonlinear (circle) problem clearly
 * beats chance and a logistic fit, with probabilities in [0,1]; SVR beats the
 * mean and is equivariant to the label's unit; the training-size policy caps and
 * stratifies the rows; same seed -> same bytes; a loaded model predicts the same
 * bits; every truncation, byte flip and re-framed malformed LibSVM text is
 * refused; SVMs inside px_model (save, load, contributions). The data are
 * generated here from a fixed seed (the fixture is the generator). */
#include "models/internal.h"
#include "check.h"
#include "models_fixture.h"

static unsigned long long rng = 12345;
static double unif(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

enum { K = 3 };

/* x1, x2 uniform on [-2,2], x3 noise; y = 1 inside the circle of radius^2 1.8, 5% flipped */
static void circle(size_t n, double *X, double *y)
{
    for (size_t i = 0; i < n; i++) {
        double a = 4 * unif() - 2, b = 4 * unif() - 2;
        X[i * K] = a;
        X[i * K + 1] = b;
        X[i * K + 2] = 2 * unif() - 1;
        y[i] = a * a + b * b < 1.8;
        if (unif() < 0.05) y[i] = 1 - y[i];
    }
}

/* AUC by counting pairs (independent of svm.c's rank version) */
static double auc_pairs(const double *y, const double *p, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (y[i] == 1 && y[j] == 0) {
                den++;
                num += p[i] > p[j] ? 1 : p[i] == p[j] ? 0.5 : 0;
            }
    return num / den;
}

/* Re-frames a saved SVM with new LibSVM text (length and checksum recomputed). */
static void reframe(const px_buf *saved, const char *text, size_t tlen, px_buf *out)
{
    const char *lib = strstr(saved->data, "\nlibsvm ");
    size_t head = (size_t)(lib - saved->data) + 1;
    px_buf_add(out, saved->data, head);
    px_buf_printf(out, "libsvm %zu\n", tlen);
    px_buf_add(out, text, tlen);
    fx_sha_line(out);
}

static void test_frames(const px_svm *s, const double *Xt, size_t nt)
{
    px_err e;
    px_buf b = {0}, b2 = {0};
    CHECK_INT(px_svm_save(s, &b, &e), 0);
    CHECK_INT(px_svm_save(s, &b2, &e), 0);
    CHECK(b.len == b2.len && memcmp(b.data, b2.data, b.len) == 0);
    px_svm *ld = px_svm_load((const unsigned char *)b.data, b.len, &e);
    CHECK(ld != NULL);
    if (!ld) return;
    size_t diff = 0;
    for (size_t i = 0; i < nt; i++) diff += px_svm_predict(s, Xt + i * K) != px_svm_predict(ld, Xt + i * K);
    CHECK_INT(diff, 0);
    px_buf_release(&b2);
    CHECK_INT(px_svm_save(ld, &b2, &e), 0);
    CHECK(b.len == b2.len && memcmp(b.data, b2.data, b.len) == 0);
    CHECK_INT(px_svm_nsv(ld), px_svm_nsv(s));
    px_svm_free(ld);

    size_t refused = 0;
    for (size_t L = 0; L < b.len; L++) {
        px_svm *m = px_svm_load((const unsigned char *)b.data, L, &e);
        refused += !m && e.code == PX_ECORRUPT;
        px_svm_free(m);
    }
    CHECK_INT(refused, b.len);
    size_t flips = 0;
    unsigned char *copy = malloc(b.len);
    for (int t = 0; t < 2000; t++) {
        memcpy(copy, b.data, b.len);
        size_t pos = (size_t)(unif() * (double)b.len);
        copy[pos] ^= (unsigned char)(1 + (int)(unif() * 255));
        px_svm *m = px_svm_load(copy, b.len, &e);
        flips += !m && e.code == PX_ECORRUPT;
        px_svm_free(m);
    }
    CHECK_INT(flips, 2000);
    free(copy);

    /* LibSVM text cut at every line end, with a valid frame around it: all refused */
    const char *text = strstr(b.data, "\nlibsvm ") + 8;
    size_t tlen = strtoul(text, NULL, 10);
    text = strchr(text, '\n') + 1;
    size_t cuts = 0, cut_refused = 0;
    for (size_t L = 0; L < tlen; L++) {
        if (L > 0 && text[L - 1] != '\n' && L % 97 != 0) continue; /* line ends, plus some mid-line cuts */
        px_buf f = {0};
        reframe(&b, text, L, &f);
        px_svm *m = px_svm_load((const unsigned char *)f.data, f.len, &e);
        cuts++;
        cut_refused += !m && e.code == PX_ECORRUPT;
        px_svm_free(m);
        px_buf_release(&f);
    }
    CHECK_INT(cut_refused, cuts);
    /* edits LibSVM's own parser would trust: more SVs announced than present, an index past k */
    {
        px_buf t = {0}, f = {0};
        px_buf_add(&t, text, tlen);
        px_buf_addc(&t, '\0');
        char *ts = strstr(t.data, "total_sv ");
        long nsv = strtol(ts + 9, NULL, 10);
        char edited[64];
        snprintf(edited, sizeof edited, "total_sv %ld", nsv + 1);
        px_buf u = {0};
        px_buf_add(&u, t.data, (size_t)(ts - t.data));
        px_buf_adds(&u, edited);
        px_buf_adds(&u, strchr(ts, '\n'));
        reframe(&b, u.data, u.len, &f);
        CHECK(px_svm_load((const unsigned char *)f.data, f.len, &e) == NULL && e.code == PX_ECORRUPT);
        px_buf_release(&f);
        px_buf_release(&u);
        char *idx = strstr(t.data, " 3:");
        if (idx) {
            idx[1] = '9';
            reframe(&b, t.data, tlen, &f);
            CHECK(px_svm_load((const unsigned char *)f.data, f.len, &e) == NULL && e.code == PX_ECORRUPT);
            px_buf_release(&f);
        }
        px_buf_release(&t);
    }
    /* random edits inside the LibSVM text, re-framed: refused or loaded, never a crash */
    size_t accepted = 0;
    for (int t = 0; t < 300; t++) {
        px_buf u = {0}, f = {0};
        px_buf_add(&u, text, tlen);
        size_t pos = (size_t)(unif() * (double)tlen);
        static const char alphabet[] = "0123456789-.e: \n:x";
        u.data[pos] = alphabet[(int)(unif() * (sizeof alphabet - 1))];
        reframe(&b, u.data, u.len, &f);
        px_svm *m = px_svm_load((const unsigned char *)f.data, f.len, &e);
        if (m) {
            accepted++;
            double x[K] = {0.1, -0.2, 0.3};
            double v = px_svm_predict(m, x);
            (void)v;
        }
        px_svm_free(m);
        px_buf_release(&u);
        px_buf_release(&f);
    }
    fprintf(stderr,
            "svm frame: %zu bytes, %zu truncations and 2000 flips refused, %zu re-framed cuts refused, "
            "%zu of 300 re-framed random edits still valid\n",
            b.len, refused, cut_refused, accepted);
    px_buf_release(&b);
    px_buf_release(&b2);
}

static void test_svc(void)
{
    enum { N = 1000, NT = 1000 };
    double *X = malloc(N * K * sizeof *X), *y = malloc(N * sizeof *y);
    double *Xt = malloc(NT * K * sizeof *Xt), *yt = malloc(NT * sizeof *yt), *pt = malloc(NT * sizeof *pt);
    circle(N, X, y);
    circle(NT, Xt, yt);
    px_err e;
    px_svm_params p = px_svm_default_params();
    px_svm_info info;
    px_svm *s = px_svm_fit(X, y, N, K, &p, &info, &e);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "svc fit failed: %s\n", e.msg);
        return;
    }
    size_t npos = 0;
    for (size_t i = 0; i < N; i++) npos += y[i] == 1;
    CHECK_INT(info.n_rows, N);
    CHECK_INT(info.n_used, N);
    CHECK_INT(info.n_cv, N);
    CHECK_INT(info.n_sv, px_svm_nsv(s));
    CHECK(info.n_sv > 0 && info.n_sv < N);
    CHECK(info.C == 0.1 || info.C == 1 || info.C == 10);
    CHECK(info.gamma == 0.25 / K || info.gamma == 1.0 / K || info.gamma == 4.0 / K);
    CHECK(fabs(info.class_weight_pos - (double)(N - npos) / (double)npos) < 1e-15);
    CHECK(info.cv_score > 0.85 && info.cv_score <= 1);
    int inrange = 1;
    for (size_t i = 0; i < NT; i++) {
        pt[i] = px_svm_predict(s, Xt + i * K);
        inrange &= pt[i] >= 0 && pt[i] <= 1;
    }
    CHECK(inrange);
    double auc = auc_pairs(yt, pt, NT);
    CHECK(auc > 0.9);
    /* a linear logistic model cannot do this */
    double *Xl = malloc(N * (K + 1) * sizeof *Xl), *pl = malloc(NT * sizeof *pl);
    for (size_t i = 0; i < N; i++) {
        Xl[i * (K + 1)] = 1;
        memcpy(Xl + i * (K + 1) + 1, X + i * K, K * sizeof *Xl);
    }
    px_glm_fit g;
    CHECK_INT(px_logit_fit(Xl, y, NULL, NULL, N, K + 1, NULL, &g, &e), 0);
    for (size_t i = 0; i < NT; i++) {
        double eta = g.beta[0];
        for (int a = 0; a < K; a++) eta += g.beta[a + 1] * Xt[i * K + a];
        pl[i] = eta;
    }
    double auc_l = auc_pairs(yt, pl, NT);
    CHECK(auc_l < 0.65);
    fprintf(stderr, "svc on a circle: C %g, gamma %g, cv AUC %.3f, test AUC %.3f (logistic %.3f), %zu SVs\n", info.C,
            info.gamma, info.cv_score, auc, auc_l, info.n_sv);
    px_glm_fit_release(&g);
    /* the same data and seed give the same bytes */
    px_svm *s2 = px_svm_fit(X, y, N, K, &p, NULL, &e);
    CHECK(s2 != NULL);
    px_buf b1 = {0}, b2 = {0};
    CHECK_INT(px_svm_save(s, &b1, &e), 0);
    if (s2) CHECK_INT(px_svm_save(s2, &b2, &e), 0);
    CHECK(b1.len > 0 && b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    px_buf_release(&b1);
    px_buf_release(&b2);
    px_svm_free(s2);
    test_frames(s, Xt, NT);
    px_svm_free(s);
    /* C and gamma given: no grid search */
    p.C = 2;
    p.gamma = 0.5;
    s = px_svm_fit(X, y, N, K, &p, &info, &e);
    CHECK(s != NULL && info.n_cv == 0 && isnan(info.cv_score) && info.C == 2 && info.gamma == 0.5);
    px_svm_free(s);
    free(X);
    free(y);
    free(Xt);
    free(yt);
    free(pt);
    free(Xl);
    free(pl);
}

static void test_policy(void)
{
    enum { N = 1200 };
    double *X = malloc(N * K * sizeof *X), *y = malloc(N * sizeof *y);
    circle(N, X, y);
    size_t npos = 0;
    for (size_t i = 0; i < N; i++) npos += y[i] == 1;
    px_err e;
    px_svm_params p = px_svm_default_params();
    p.max_rows = 300;
    px_svm_info info;
    px_svm *s = px_svm_fit(X, y, N, K, &p, &info, &e);
    CHECK(s != NULL);
    CHECK_INT(info.n_rows, N);
    CHECK_INT(info.n_used, 300);
    CHECK_INT(info.n_cv, 300);
    CHECK(info.n_sv <= 300);
    /* stratified: the positives keep their share (proportional allocation, rounded) */
    double up = (double)llround(300.0 * (double)npos / N);
    CHECK(fabs(info.class_weight_pos - (300 - up) / up) < 1e-12);
    /* same seed, same bytes; another seed draws other rows: other bytes. Every fit
     * and save must succeed and give a model, or the comparisons prove nothing
     * (two empty buffers are equal, an empty one differs from anything). */
    px_buf b1 = {0}, b2 = {0}, b3 = {0};
    px_svm *s2 = px_svm_fit(X, y, N, K, &p, NULL, &e);
    CHECK(s2 != NULL);
    p.seed = 99;
    px_svm *s3 = px_svm_fit(X, y, N, K, &p, NULL, &e);
    CHECK(s3 != NULL);
    if (s && s2 && s3) {
        CHECK_INT(px_svm_save(s, &b1, &e), 0);
        CHECK_INT(px_svm_save(s2, &b2, &e), 0);
        CHECK_INT(px_svm_save(s3, &b3, &e), 0);
        CHECK(b1.len > 0 && b3.len > 0);
        CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
        CHECK(b1.len != b3.len || memcmp(b1.data, b3.data, b1.len) != 0);
    }
    fprintf(stderr, "size policy: %zu of %zu rows used, %zu SVs, positive weight %.3f\n", info.n_used, info.n_rows,
            info.n_sv, info.class_weight_pos);
    px_buf_release(&b1);
    px_buf_release(&b2);
    px_buf_release(&b3);
    px_svm_free(s);
    px_svm_free(s2);
    px_svm_free(s3);
    free(X);
    free(y);
}

static void test_svr(void)
{
    enum { N = 800, NT = 800 };
    double *X = malloc((N + NT) * K * sizeof *X), *y = malloc((N + NT) * sizeof *y);
    for (size_t i = 0; i < N + NT; i++) {
        double a = 4 * unif() - 2, b = 4 * unif() - 2;
        X[i * K] = a;
        X[i * K + 1] = b;
        X[i * K + 2] = 2 * unif() - 1;
        y[i] = sin(2 * a) + 0.5 * b * b + 0.1 * (unif() - 0.5);
    }
    px_err e;
    px_svm_params p = px_svm_default_params();
    p.type = PX_SVM_SVR;
    px_svm_info info;
    px_svm *s = px_svm_fit(X, y, N, K, &p, &info, &e);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "svr fit failed: %s\n", e.msg);
        return;
    }
    double mean = 0, sse = 0, sst = 0;
    for (size_t i = 0; i < N; i++) mean += y[i] / N;
    for (size_t i = N; i < N + NT; i++) {
        double r = px_svm_predict(s, X + i * K) - y[i];
        sse += r * r;
        sst += (y[i] - mean) * (y[i] - mean);
    }
    double rmse = sqrt(sse / NT), rmse0 = sqrt(sst / NT);
    CHECK(rmse < 0.5 * rmse0);
    CHECK(info.cv_score > 0 && info.cv_score < rmse0);
    CHECK(info.class_weight_pos == 0);
    fprintf(stderr, "svr: C %g, gamma %g, cv RMSE %.3f, test RMSE %.3f (the mean: %.3f), %zu SVs\n", info.C, info.gamma,
            info.cv_score, rmse, rmse0, info.n_sv);
    /* another unit for the label (y' = 100 y + 1000, epsilon' = 100 epsilon): the same fit */
    double *y2 = malloc(N * sizeof *y2);
    for (size_t i = 0; i < N; i++) y2[i] = 100 * y[i] + 1000;
    p.epsilon *= 100;
    px_svm_info info2;
    px_svm *s2 = px_svm_fit(X, y2, N, K, &p, &info2, &e);
    CHECK(s2 != NULL && info2.C == info.C && info2.gamma == info.gamma);
    double worst = 0;
    for (size_t i = N; s2 && i < N + NT; i++)
        worst = fmax(worst, fabs(px_svm_predict(s2, X + i * K) - (100 * px_svm_predict(s, X + i * K) + 1000)));
    CHECK(worst < 1e-6);
    /* save and load keep the label's scale */
    px_buf b = {0};
    CHECK_INT(px_svm_save(s2, &b, &e), 0);
    px_svm *ld = px_svm_load((const unsigned char *)b.data, b.len, &e);
    CHECK(ld != NULL && px_svm_predict(ld, X) == px_svm_predict(s2, X));
    px_svm_free(ld);
    px_buf_release(&b);
    px_svm_free(s2);
    px_svm_free(s);
    free(y2);
    free(X);
    free(y);
}

static void test_bad_input(void)
{
    px_err e;
    double X[8] = {0, 1, 2, 3, 4, 5, 6, 7}, y[4] = {0, 1, 2, 0}, y1[4] = {1, 1, 1, 1};
    px_svm_params p = px_svm_default_params();
    CHECK(px_svm_fit(X, y, 4, 2, &p, NULL, &e) == NULL && e.code == PX_EINVAL);
    CHECK(px_svm_fit(X, y1, 4, 2, &p, NULL, &e) == NULL && strstr(e.msg, "one class"));
    y[2] = 1;
    X[3] = NAN;
    CHECK(px_svm_fit(X, y, 4, 2, &p, NULL, &e) == NULL && e.code == PX_EINVAL);
    X[3] = 3;
    /* two rows per class cannot make three folds */
    CHECK(px_svm_fit(X, y, 4, 2, &p, NULL, &e) == NULL && strstr(e.msg, "cross-validation"));
    p.C = -1;
    CHECK(px_svm_fit(X, y, 4, 2, &p, NULL, &e) == NULL && e.code == PX_EINVAL);
    CHECK(px_svm_load(NULL, 0, &e) == NULL && e.code == PX_ECORRUPT);
    CHECK(px_svm_load((const unsigned char *)"prognos-svm 1\n", 14, &e) == NULL && e.code == PX_ECORRUPT);
}

/* SVMs inside px_model, on the glm.csv dataset */
static void test_model_svm(void)
{
    fx_table t;
    fx_read("glm.csv", &t);
    const char *cols[] = {"age", "los_prior", "female", "site"};
    px_dataset *d = fx_dataset(&t, cols, 4, "yb");
    px_err e;
    px_fit_params p = px_fit_default_params(PX_ALGO_SVC);
    p.svm.max_rows = 600;
    px_fit_info info;
    px_model *m = px_model_fit(d, NULL, 0, &p, &info, &e);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "svc model failed: %s\n", e.msg);
        return;
    }
    CHECK_INT(info.svm.n_rows, t.n);
    CHECK_INT(info.svm.n_used, 600);
    CHECK(strstr(info.warning, "600 of 3000") != NULL);
    size_t nt;
    CHECK(px_model_terms(m, &nt) == NULL && nt == 0);
    double *s1 = malloc(t.n * sizeof *s1), *s2 = malloc(t.n * sizeof *s2);
    CHECK_INT(px_model_score(m, d, NULL, t.n, s1, &e), 0);
    int inrange = 1;
    for (size_t i = 0; i < t.n; i++) inrange &= s1[i] >= 0 && s1[i] <= 1;
    CHECK(inrange);
    CHECK(auc_pairs(d->y, s1, t.n) > 0.6);
    /* contributions: value minus the value with the feature at its mean / reference */
    double raw[4] = {80, 6, 1, 3 /* D */}, v, c[4], v0;
    CHECK_INT(px_model_predict(m, raw, &v, c, &e), 0);
    double r0[4] = {80, NAN, 1, 3};
    CHECK_INT(px_model_predict(m, r0, &v0, NULL, &e), 0);
    CHECK(c[1] == v - v0);
    double rref[4] = {80, 6, 1, NAN};
    CHECK_INT(px_model_predict(m, rref, &v0, c, &e), 0);
    CHECK(c[3] == 0);
    /* save / load: same bits, same bytes, every truncation and flips refused */
    px_buf b = {0}, b2 = {0};
    CHECK_INT(px_model_save(m, &b, &e), 0);
    px_model *ld = px_model_load((const unsigned char *)b.data, b.len, &e);
    CHECK(ld != NULL);
    if (ld) {
        CHECK_INT(px_model_algo(ld), PX_ALGO_SVC);
        CHECK_INT(px_model_score(ld, d, NULL, t.n, s2, &e), 0);
        CHECK(memcmp(s1, s2, t.n * sizeof *s1) == 0);
        CHECK_INT(px_model_save(ld, &b2, &e), 0);
        CHECK(b.len == b2.len && memcmp(b.data, b2.data, b.len) == 0);
    }
    px_model_free(ld);
    fx_corrupt_all(&b, 1000, "svc model");
    px_buf_release(&b);
    px_buf_release(&b2);
    px_model_free(m);
    px_dataset_free(d);
    /* SVR on the counts */
    d = fx_dataset(&t, cols, 4, "cnt");
    p = px_fit_default_params(PX_ALGO_SVR);
    p.svm.max_rows = 600;
    m = px_model_fit(d, NULL, 0, &p, &info, &e);
    CHECK(m != NULL);
    if (m) {
        CHECK_INT(px_model_score(m, d, NULL, t.n, s1, &e), 0);
        double mean = 0, sse = 0, sst = 0;
        for (size_t i = 0; i < t.n; i++) mean += d->y[i] / (double)t.n;
        for (size_t i = 0; i < t.n; i++) {
            sse += (s1[i] - d->y[i]) * (s1[i] - d->y[i]);
            sst += (d->y[i] - mean) * (d->y[i] - mean);
        }
        CHECK(sse < sst);
        fprintf(stderr, "svr model on counts: RMSE %.3f vs %.3f for the mean\n", sqrt(sse / (double)t.n),
                sqrt(sst / (double)t.n));
        px_buf_release(&b);
        CHECK_INT(px_model_save(m, &b, &e), 0);
        px_model *l2 = px_model_load((const unsigned char *)b.data, b.len, &e);
        CHECK(l2 != NULL && px_model_algo(l2) == PX_ALGO_SVR);
        px_model_free(l2);
        px_buf_release(&b);
    }
    px_model_free(m);
    free(s1);
    free(s2);
    px_dataset_free(d);
    fx_free(&t);
}

int main(void)
{
    px_models_init();
    test_svc();
    test_policy();
    test_svr();
    test_bad_input();
    test_model_svm();
    return check_report("test_svm");
}
