/* fuzz_v2.c: libFuzzer target for the Open Inference Protocol V2 request reader
 * (srv_v2_inputs, serve/v2.c: the strict JSON check, the tensors, shapes,
 * datatypes and the requested outputs, every element through srv_check_value),
 * on the model of fuzz_predict (numeric, flag, categorical with a non-ASCII
 * level, dropped; a logistic model's output names). Input: the request body. Checks, for any body:
 *  - no crash, leak or UB; the status is 0 or an HTTP error (400, 413 or 503)
 *    with an error body that is valid JSON of valid UTF-8;
 *  - a body the strict check refuses is never accepted;
 *  - an accepted request has 1 to max_instances rows, only known outputs
 *    asked for, and every value missing (NaN) or in range: a numeric input in
 *    its accepted range, a flag 0 or 1, a level an index of the input's levels. */
#include "tests/fuzz/fuzz_logit.h"
#include "tests/fuzz/fuzz_serve_model.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server) {
        fuzz_serve_setup();
        model.m = (px_model *)fuzz_logit_model(); /* its algorithm names the outputs ("probability") */
    }
    if (size > 8192) return 0;
    srv_req *r = fixture_request(server, &model, data, size);
    r->route = R_V2_INFER;
    size_t n = 0;
    unsigned want = 0;
    unsigned st = srv_v2_inputs(r, &n, &want);
    if (st == 0) {
        if (px_json_validate((const char *)data, size, 64, NULL, NULL) != 0)
            FAIL("a body the strict check refuses was accepted");
        if (n < 1 || n > server->p.max_instances) FAIL("accepted a batch of %zu rows", n);
        if (want > 7) FAIL("outputs %u asked for", want);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < K; j++) {
                double x = r->raw[i * K + j];
                const srv_feat *f = &feat[j];
                if (isnan(x)) continue;
                if (f->numeric ? (x < f->lo || x > f->hi || (f->flag && x != 0 && x != 1))
                               : (x < 0 || x >= (double)info[j].nlevels || x != floor(x)))
                    FAIL("row %zu input %s accepted as %g", i, f->name, x);
            }
    } else {
        if (st != 400 && st != 413 && st != 503) FAIL("status %u", st);
        const char *why = NULL;
        size_t off = 0;
        if (!r->out.data || px_json_validate(r->out.data, r->out.len, 8, &off, &why) != 0)
            FAIL("status %u with an error body that is not valid JSON (%s at %zu): %.*s", st, why ? why : "none", off,
                 (int)r->out.len, r->out.data ? r->out.data : "");
    }
    fixture_request_free(r);
    return 0;
}
