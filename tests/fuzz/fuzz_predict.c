/* fuzz_predict.c: libFuzzer target for the predict body readers: the one-pass
 * reader (serve/predict_fast.c) against the cJSON path behind the strict check
 * (serve/predict.c, serve/jsoncheck.c), on a model with numeric, flag,
 * categorical (one level not ASCII) and dropped inputs. For any body: no crash;
 * both give the same status, and the same values bit for bit or the same error
 * body; an error body is valid JSON of valid UTF-8; and a body the strict check
 * refuses is never scored. */
#include "tests/fuzz/fuzz_serve_model.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);



typedef struct outcome {
    unsigned st;
    size_t n, n_enc;
    int fast;
    double raw[16 * K];
    unsigned char flags[16 * K];
    char *out;
} outcome;

static void read_body(const uint8_t *body, size_t len, int fast, outcome *o)
{
    srv_req *r = fixture_request(server, &model, body, len);
    memset(o, 0, sizeof *o);
    o->st = srv_predict_inputs(r, fast, &o->n, &o->n_enc, &o->fast);
    if (o->st == 0 && o->n <= 16) {
        memcpy(o->raw, r->raw, o->n * K * sizeof *r->raw);
        memcpy(o->flags, r->flags, o->n * K);
    }
    if (r->out.data) {
        o->out = strndup(r->out.data, r->out.len);
        const char *why = NULL;
        size_t off = 0;
        if (px_json_validate(r->out.data, r->out.len, 8, &off, &why) != 0) {
            fprintf(stderr, "an error body is not valid JSON (%s at %zu): %.*s\n", why, off, (int)r->out.len,
                    r->out.data);
            abort();
        }
    }
    fixture_request_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) fuzz_serve_setup(), ready = 1;
    if (size > 4096) return 0;
    outcome a, b;
    read_body(data, size, 0, &a);
    read_body(data, size, 1, &b);
    int same = a.st == b.st && !a.fast;
    if (same && a.st == 0)
        same = a.n == b.n && a.n_enc == b.n_enc &&
               memcmp(a.raw, b.raw, (a.n <= 16 ? a.n : 0) * K * sizeof(double)) == 0 &&
               memcmp(a.flags, b.flags, (a.n <= 16 ? a.n : 0) * K) == 0;
    if (same && a.st != 0) same = a.out && b.out && strcmp(a.out, b.out) == 0 && !b.fast;
    if (!same) {
        fprintf(stderr, "the readers disagree: cJSON %u, fast %u%s\n  cJSON: %s\n  fast:  %s\n", a.st, b.st,
                b.fast ? " (read fast)" : "", a.out ? a.out : "", b.out ? b.out : "");
        abort();
    }
    /* scored only if strictly valid */
    if (a.st == 0 && px_json_validate((const char *)data, size, 64, NULL, NULL) != 0) {
        fprintf(stderr, "a body the strict check refuses was scored\n");
        abort();
    }
    free(a.out);
    free(b.out);
    return 0;
}
