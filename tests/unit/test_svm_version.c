/* test_svm_version.c: the strict LibSVM model reader refuses to hand a model to a
 * LibSVM whose run-time version is not the one its text checker was written for
 * (models/svm.c PX_LIBSVM_FORMAT), and loads it again once the version matches. */
#include "models/models.h"
#include "check.h"
#include <libsvm/svm.h>
#include <stdlib.h>

int main(void)
{
    /* a small separable problem: class 1 when x0 + x1 > 0 */
    enum { N = 60, K = 2 };
    double X[N * K], y[N];
    for (int i = 0; i < N; i++) {
        X[i * K] = (i % 10) / 5.0 - 1.0;
        X[i * K + 1] = (i / 10) / 3.0 - 1.0 + 0.01 * (i % 3);
        y[i] = X[i * K] + X[i * K + 1] > 0 ? 1 : 0;
    }
    px_svm_params p = px_svm_default_params();
    p.type = PX_SVM_SVC;
    p.C = 1;
    p.gamma = 0.5;
    px_err e = {0};
    px_svm_info info;
    px_svm *s = px_svm_fit(X, y, N, K, &p, &info, &e);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "fit: %s (%s)\n", e.msg, e.detail);
        return check_report("test_svm_version");
    }
    px_buf b = {0};
    CHECK_INT(px_svm_save(s, &b, &e), 0);

    int real = libsvm_version;
    CHECK_INT(real, LIBSVM_VERSION);
    libsvm_version = real + 1; /* as a different shared library would report */
    px_err_clear(&e);
    px_svm *t = px_svm_load((const unsigned char *)b.data, b.len, &e);
    CHECK(t == NULL);
    CHECK_INT(e.code, PX_ESTATE);
    CHECK(strstr(e.msg, "LibSVM") != NULL);
    px_svm_free(t);

    libsvm_version = real;
    px_err_clear(&e);
    t = px_svm_load((const unsigned char *)b.data, b.len, &e);
    CHECK(t != NULL);
    if (t) {
        const double x1[K] = {0.8, 0.6}, x0[K] = {-0.8, -0.6};
        CHECK(px_svm_predict(t, x1) > 0.5);
        CHECK(px_svm_predict(t, x0) < 0.5);
        CHECK_NEAR(px_svm_predict(t, x1), px_svm_predict(s, x1), 0);
    }
    px_svm_free(t);
    px_svm_free(s);
    px_buf_release(&b);
    return check_report("test_svm_version");
}
