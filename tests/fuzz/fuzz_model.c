/* fuzz_model.c: libFuzzer target for the model file loader (px_model_load,
 * models/model.c) and, for SVMs, the strict check of LibSVM's text that runs
 * before LibSVM sees it (px_svm_check_text). LibSVM's own loader is never fed
 * fuzzed text: it only ever reads text that passed the check inside a frame
 * whose SHA-256 matches (the registry's digests guard that in production), and
 * a mutated frame fails its checksum here. Input: a mode byte, then bytes.
 *  mode bit 0 = 0: a model.bin body. Bit 1 = 0: the harness appends the
 *    "sha256 <hex>\n" trailer over the body, so that mutations reach the parser
 *    behind the checksum; bit 1 = 1: the bytes are loaded as they are. A model
 *    that loads must save, load again and save to the same bytes, and predict
 *    an all-missing instance and one of the training means without a crash.
 *  mode bit 0 = 1, bit 2 = 0: LibSVM model text; mode bit 1 the type (SVC,
 *    SVR), the next byte 1 + the number of inputs k. Accepted text has as many
 *    SV lines as the count returned.
 *  mode bit 0 = 1, bit 2 = 1: an SVM frame (the svm section of an SVM's
 *    model.bin, px_svm_load), its "sha256 <hex>\n" trailer appended by the
 *    harness: the frame's header, then LibSVM's own loader on text that passed
 *    the strict check. A frame that loads saves to the same bytes and
 *    predicts an all-zero instance (when its k is at most the frame's size).
 *  mode bit 0 = 0, bit 2 = 1: hierarchical.json (px_hier_parse) of a fixed
 *    logistic model (fuzz_logit.h); one that parses gives
 *    a linear predictor for the model's training means without a crash. */
#define _GNU_SOURCE
#include "models/internal.h"
#include "tests/fuzz/fuzz_logit.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static void check_svm_frame(const uint8_t *data, size_t size)
{
    unsigned char *b = fuzz_framed(data, size);
    px_err e;
    px_svm *s = px_svm_load(b, size + PX_SHA256_TRAILER_LEN, &e);
    if (!s && e.code != PX_ECORRUPT && e.code != PX_ENOMEM) FAIL("refused with code %d: %s", e.code, e.msg);
    if (s) {
        px_buf out = {0};
        if (px_svm_save(s, &out, &e) != 0 || out.len != size + PX_SHA256_TRAILER_LEN || memcmp(out.data, b, out.len) != 0)
            FAIL("a loaded svm frame does not save to its bytes");
        px_buf_release(&out);
        /* a frame's k is cross-checked only by the model.bin around it (k + 1
         * design columns, which its feature lines spell out, so k is bounded by
         * the file's size): predict only for a k such a file of this size can
         * hold, not for a "k 555555553" alone (16 bytes per input and call) */
        size_t k = px_svm_inputs(s);
        if (k <= size) {
            double *x = calloc(k, sizeof *x);
            if (!x) abort();
            (void)px_svm_predict(s, x);
            free(x);
        }
        px_svm_free(s);
    }
    free(b);
}

static void check_hier(const uint8_t *data, size_t size)
{
    const px_model *m = fuzz_logit_model();
    px_err e;
    char *t = malloc(size ? size : 1); /* exact size, for ASan */
    if (!t) abort();
    memcpy(t, data, size);
    px_hier *h = px_hier_parse(t, size, m, &e);
    if (!h && e.code != PX_ECORRUPT && e.code != PX_ENOMEM) FAIL("refused with code %d: %s", e.code, e.msg);
    if (h) {
        if (!(px_hier_tau(h) >= 0)) FAIL("accepted tau %g", px_hier_tau(h));
        size_t nf = px_model_nfeatures(m);
        double *raw = calloc(nf, sizeof *raw), eta;
        if (!raw) abort();
        for (size_t j = 0; j < nf; j++) {
            const px_feature_info *f = px_model_feature(m, j);
            raw[j] = f->kind == PX_COL_NUMERIC ? f->mean : (double)f->ref;
        }
        (void)px_hier_eta(h, m, raw, &eta, &e);
        free(raw);
        px_hier_free(h);
    }
    free(t);
}

static void check_svm_text(const uint8_t *data, size_t size, int svr)
{
    if (size < 1) return;
    size_t k = 1 + data[0];
    char *t = malloc(size ? size : 1); /* exact size, for ASan */
    if (!t) abort();
    memcpy(t, data + 1, size - 1);
    long nsv = -1;
    if (px_svm_check_text(t, size - 1, svr ? PX_SVM_SVR : PX_SVM_SVC, k, &nsv) == 0) {
        const char *sv = memmem(t, size - 1, "SV\n", 3);
        if (!sv || nsv < 0) FAIL("accepted LibSVM text without an SV section (nsv %ld)", nsv);
        long lines = 0;
        for (const char *p = sv + 3; p < t + size - 1; p++) lines += *p == '\n';
        if (lines != nsv) FAIL("accepted LibSVM text with %ld SV lines, counted %ld", lines, nsv);
    }
    free(t);
}

static void exercise(const px_model *m)
{
    size_t nf = px_model_nfeatures(m);
    double *raw = calloc(nf ? nf : 1, sizeof *raw), v, *contrib = calloc(nf ? nf : 1, sizeof *contrib);
    if (!raw || !contrib) abort();
    px_err e;
    for (size_t j = 0; j < nf; j++) raw[j] = NAN;
    (void)px_model_predict(m, raw, &v, contrib, &e);
    for (size_t j = 0; j < nf; j++) {
        const px_feature_info *f = px_model_feature(m, j);
        raw[j] = f->kind == PX_COL_NUMERIC ? f->mean : (double)f->ref;
    }
    (void)px_model_predict(m, raw, &v, contrib, &e);
    free(raw);
    free(contrib);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0];
    data++, size--;
    if ((mode & 5) == 5) {
        check_svm_frame(data, size);
        return 0;
    }
    if (mode & 1) {
        check_svm_text(data, size, mode & 2);
        return 0;
    }
    if (mode & 4) {
        check_hier(data, size);
        return 0;
    }
    size_t len = size + ((mode & 2) ? 0 : PX_SHA256_TRAILER_LEN);
    unsigned char *b = (mode & 2) ? malloc(len ? len : 1) : fuzz_framed(data, size); /* exact size, for ASan */
    if (!b) abort();
    if (mode & 2) memcpy(b, data, size);
    px_err e;
    px_model *m = px_model_load(b, len, &e);
    if (!m && e.code != PX_ECORRUPT && e.code != PX_ENOMEM) FAIL("refused with code %d: %s", e.code, e.msg);
    if (m) {
        px_buf s1 = {0}, s2 = {0};
        if (px_model_save(m, &s1, &e) != 0) FAIL("a loaded model does not save: %s", e.msg);
        px_model *m2 = px_model_load((const unsigned char *)s1.data, s1.len, &e);
        if (!m2) FAIL("a saved model does not load: %s", e.msg);
        if (px_model_save(m2, &s2, &e) != 0) FAIL("a reloaded model does not save: %s", e.msg);
        if (s1.len != s2.len || memcmp(s1.data, s2.data, s1.len) != 0) FAIL("save(load(save)) differs from save");
        exercise(m);
        px_model_free(m2);
        px_buf_release(&s1);
        px_buf_release(&s2);
        px_model_free(m);
    }
    free(b);
    return 0;
}
