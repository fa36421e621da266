/* serve_fixture.h: the model and request scaffolding shared by the tests of the
 * predict body readers (tests/unit/test_serve_fast.c, tests/fuzz/fuzz_predict.c):
 * a serving model built from a px_feature_info table without a registry, and a
 * request holding a body as serve/http.c keeps it. Header-only (static inline):
 * each test is one translation unit. */
#ifndef PX_TESTS_SERVE_FIXTURE_H
#define PX_TESTS_SERVE_FIXTURE_H
#include "serve/internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills feat[0..k) from info[0..k) and m from feat: numeric inputs accept one
 * range beyond [min, max] on each side ("score": any finite value), "cci_chf" is
 * a flag; the model is "readmission" at version. */
static inline void fixture_model(srv_model *m, srv_feat *feat, const px_feature_info *info, size_t k, int version)
{
    for (size_t j = 0; j < k; j++) {
        srv_feat *f = &feat[j];
        f->info = &info[j];
        f->name = info[j].name;
        f->namelen = strlen(f->name);
        f->numeric = info[j].kind == PX_COL_NUMERIC;
        f->flag = strcmp(f->name, "cci_chf") == 0;
        f->lo = f->numeric ? info[j].min - (info[j].max - info[j].min) : 0;
        f->hi = f->numeric ? info[j].max + (info[j].max - info[j].min) : 0;
        if (strcmp(f->name, "score") == 0) f->lo = -INFINITY, f->hi = INFINITY;
    }
    m->k = k;
    m->f = feat;
    snprintf(m->name, sizeof m->name, "readmission");
    m->version = version;
    srv_model_derive(m);
}

/* A request of server s for model m holding body[0..len) NUL-terminated, as
 * serve/http.c keeps it; aborts when out of memory. Freed by fixture_request_free. */
static inline srv_req *fixture_request(px_server *s, srv_model *m, const void *body, size_t len)
{
    srv_req *r = calloc(1, sizeof *r + SRV_ARENA_INLINE);
    if (!r) abort();
    r->s = s;
    r->sm = m;
    memcpy(r->request_id, "0123456789abcdef0123456789abcdef", 33);
    srv_arena_init(&r->arena, r->arena_buf, SRV_ARENA_INLINE);
    if (px_buf_reserve(&r->body, len + 1) != 0) abort();
    memcpy(r->body.data, body, len);
    r->body.data[len] = '\0';
    r->body.len = len;
    return r;
}

static inline void fixture_request_free(srv_req *r)
{
    srv_arena_release(&r->arena);
    px_buf_release(&r->body);
    px_buf_release(&r->out);
    free(r);
}
#endif
