/* fuzz_logit.h: a fixed logistic model for the fuzz targets that need one
 * (fuzz_model's hierarchical.json, fuzz_v2's output names): the body of
 * corpus/model/readmission-1 (4 inputs: age_years, sex, charlson, admit_type),
 * loaded once with its checksum line computed here. Header-only: each target is
 * one translation unit. */
#ifndef PX_FUZZ_LOGIT_H
#define PX_FUZZ_LOGIT_H
#include "models/models.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char fuzz_logit_text[] =
    "prognos-model 1\n"
    "algo logit\n"
    "n_train 1500\n"
    "features 4 6\n"
    "feature 9 age_years numeric used 1 1 55.36933333333333 22.105284275233593 18 94\n"
    "feature 3 sex categorical used 2 1 2 0\n"
    "level 1 F\n"
    "level 1 M\n"
    "feature 8 charlson numeric used 3 1 2.1670190274841437 2.3692617694688263 0 10\n"
    "feature 10 admit_type categorical used 4 2 3 1\n"
    "level 8 elective\n"
    "level 9 emergency\n"
    "level 6 urgent\n"
    "warning 0 \n"
    "glm 0 5 1 0 1483.0778394878348 1773.16337728653 -741.5389197439174\n"
    "beta -0.99216693119936528 0.80662034060684007 -0.057402512262157521 0.731457259333122 -0.37382088551589204 -0.42401705490347746\n"
    "cov 0.010590015303316319 -0.0013057216298693198 -0.0076438607780197855 -0.00099517675516737087 -0.0062027775226967856 -0.0064184391203306072\n"
    "cov -0.0013057216298693198 0.0048997880525310754 -0.00025797941423152943 0.00090824948235084077 -0.00048535325089298884 -0.00076130233736757024\n"
    "cov -0.0076438607780197855 -0.00025797941423152943 0.016509259341700645 7.6531582844270869e-05 -0.00031687835274888548 0.00029245804806572252\n"
    "cov -0.00099517675516737087 0.00090824948235084077 7.6531582844270869e-05 0.0042469513516027752 -0.00024113122602313029 -0.00022270979617062379\n"
    "cov -0.0062027775226967856 -0.00048535325089298884 -0.00031687835274888548 -0.00024113122602313029 0.026678943009787549 0.0065907620124752951\n"
    "cov -0.0064184391203306072 -0.00076130233736757024 0.00029245804806572252 -0.00022270979617062379 0.0065907620124752951 0.031340496460691106\n"
    "bounds -3.5062102434988844 2.2674618586055706 0 1\n"
    "end\n";

/* size bytes of data and their checksum trailer (px_sha256_trailer_add's line), in a
 * block of exactly that size (for ASan); aborts when out of memory. */
static inline unsigned char *fuzz_framed(const void *data, size_t size)
{
    px_buf t = {0};
    if (px_buf_add(&t, data, size) < 0 || px_sha256_trailer_add(&t) != 0) abort();
    unsigned char *b = malloc(t.len);
    if (!b) abort();
    memcpy(b, t.data, t.len);
    px_buf_release(&t);
    return b;
}

/* The model (loaded on the first call, kept for the process); aborts if it does not load. */
static inline const px_model *fuzz_logit_model(void)
{
    static px_model *m;
    if (m) return m;
    size_t n = strlen(fuzz_logit_text);
    unsigned char *b = fuzz_framed(fuzz_logit_text, n);
    px_err e;
    m = px_model_load(b, n + PX_SHA256_TRAILER_LEN, &e);
    free(b);
    if (!m) {
        fprintf(stderr, "the fuzz harness's logistic model does not load: %s\n", e.msg);
        abort();
    }
    return m;
}
#endif
