/* models_fixture.h: shared by the models unit tests: reads the fixtures under
 * tests/fixtures/models (PX_FIXTURES is set by CMake) - a small CSV reader for
 * numeric-and-one-text-column files, the "key value" reference files - and
 * builds px_datasets from them. Test code only: aborts on a missing fixture. */
#ifndef PROGNOS_MODELS_FIXTURE_H
#define PROGNOS_MODELS_FIXTURE_H
#include "features/features.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PX_FIXTURES
#error "PX_FIXTURES must name tests/fixtures/models"
#endif

typedef struct fx_table {
    size_t n, p;
    char *names[16];
    double *v; /* n*p; a text cell is stored as NAN and its text in s */
    char **s;  /* n*p, NULL for numeric cells */
} fx_table;

static inline void fx_die(const char *what, const char *path)
{
    fprintf(stderr, "fixture: %s: %s\n", what, path);
    exit(2);
}

static inline void fx_read(const char *name, fx_table *t)
{
    char path[1024], line[4096];
    snprintf(path, sizeof path, "%s/%s", PX_FIXTURES, name);
    FILE *f = fopen(path, "r");
    if (!f) fx_die("cannot open", path);
    memset(t, 0, sizeof *t);
    if (!fgets(line, sizeof line, f)) fx_die("empty", path);
    line[strcspn(line, "\r\n")] = '\0';
    for (char *tok = strtok(line, ","); tok && t->p < 16; tok = strtok(NULL, ",")) t->names[t->p++] = strdup(tok);
    size_t cap = 1024;
    t->v = malloc(cap * t->p * sizeof *t->v);
    t->s = calloc(cap * t->p, sizeof *t->s);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        if (t->n == cap) {
            cap *= 2;
            t->v = realloc(t->v, cap * t->p * sizeof *t->v);
            t->s = realloc(t->s, cap * t->p * sizeof *t->s);
            memset(t->s + t->n * t->p, 0, (cap - t->n) * t->p * sizeof *t->s);
        }
        char *c = line;
        for (size_t j = 0; j < t->p; j++) {
            char *end = strchr(c, ',');
            if (end) *end = '\0';
            char *q;
            double x = strtod(c, &q);
            if (q != c && *q == '\0') {
                t->v[t->n * t->p + j] = x;
            } else {
                t->v[t->n * t->p + j] = NAN;
                t->s[t->n * t->p + j] = strdup(c);
            }
            c = end ? end + 1 : c + strlen(c);
        }
        t->n++;
    }
    fclose(f);
}

static inline void fx_free(fx_table *t)
{
    for (size_t i = 0; i < t->n * t->p; i++) free(t->s[i]);
    for (size_t j = 0; j < t->p; j++) free(t->names[j]);
    free(t->v);
    free(t->s);
}

static inline int fx_col(const fx_table *t, const char *name)
{
    for (size_t j = 0; j < t->p; j++)
        if (strcmp(t->names[j], name) == 0) return (int)j;
    fx_die("no column", name);
    return -1;
}

static inline double fx_num(const fx_table *t, size_t i, const char *col) { return t->v[i * t->p + fx_col(t, col)]; }
static inline const char *fx_text(const fx_table *t, size_t i, const char *col)
{
    return t->s[i * t->p + fx_col(t, col)];
}

/* reference values: "key value" lines */
typedef struct fx_ref {
    size_t n;
    char **key;
    double *val;
} fx_ref;

static inline void fx_ref_read(const char *name, fx_ref *r)
{
    char path[1024], k[256];
    double v;
    snprintf(path, sizeof path, "%s/%s", PX_FIXTURES, name);
    FILE *f = fopen(path, "r");
    if (!f) fx_die("cannot open", path);
    memset(r, 0, sizeof *r);
    r->key = malloc(1024 * sizeof *r->key);
    r->val = malloc(1024 * sizeof *r->val);
    while (r->n < 1024 && fscanf(f, "%255s %lf", k, &v) == 2) {
        r->key[r->n] = strdup(k);
        r->val[r->n++] = v;
    }
    fclose(f);
}

static inline double fx_ref_get(const fx_ref *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline double fx_ref_get(const fx_ref *r, const char *fmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->key[i], key) == 0) return r->val[i];
    fx_die("no reference value", key);
    return NAN;
}

static inline void fx_ref_free(fx_ref *r)
{
    for (size_t i = 0; i < r->n; i++) free(r->key[i]);
    free(r->key);
    free(r->val);
}

static inline int fx_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A dataset with the given feature columns of t (text columns become
 * categorical with byte-ordered levels) and label column `label`. */
static inline px_dataset *fx_dataset(const fx_table *t, const char *const *cols, size_t ncols, const char *label)
{
    px_dataset *d = px_dataset_new(t->n, ncols);
    for (size_t j = 0; j < ncols; j++) {
        int c = fx_col(t, cols[j]);
        d->names[j] = strdup(cols[j]);
        int text = t->s[c] != NULL;
        d->kind[j] = text ? PX_COL_CATEGORICAL : PX_COL_NUMERIC;
        if (text) {
            char **lv = malloc(t->n * sizeof *lv);
            size_t nl = 0;
            for (size_t i = 0; i < t->n; i++) lv[nl++] = t->s[i * t->p + c];
            qsort(lv, nl, sizeof *lv, fx_cmp_str);
            size_t u = 0;
            for (size_t i = 0; i < nl; i++)
                if (u == 0 || strcmp(lv[u - 1], lv[i]) != 0) lv[u++] = lv[i];
            d->nlevels[j] = u;
            d->levels[j] = malloc(u * sizeof *d->levels[j]);
            for (size_t l = 0; l < u; l++) d->levels[j][l] = strdup(lv[l]);
            for (size_t i = 0; i < t->n; i++)
                for (size_t l = 0; l < u; l++)
                    if (strcmp(d->levels[j][l], t->s[i * t->p + c]) == 0) d->x[i * ncols + j] = (double)l;
            free(lv);
        } else {
            for (size_t i = 0; i < t->n; i++) d->x[i * ncols + j] = t->v[i * t->p + c];
        }
    }
    int yc = fx_col(t, label);
    for (size_t i = 0; i < t->n; i++) d->y[i] = t->v[i * t->p + yc];
    snprintf(d->table, sizeof d->table, "fixture");
    snprintf(d->label, sizeof d->label, "%s", label);
    return d;
}
#ifdef PROGNOS_CHECK_H
#include "models/models.h"
static inline void fx_sha_line(px_buf *b)
{
    /* recompute the trailing checksum of a (mutated) body of len bytes */
    px_sha256_trailer_add(b);
}

/* Every truncation (raw, and with a valid checksum recomputed over the cut
 * body) and nflips random byte flips must be refused with PX_ECORRUPT; random
 * edits under a recomputed checksum must never crash (ASan build). */
static inline void fx_corrupt_all(const px_buf *saved, size_t nflips, const char *what)
{
    px_err e;
    size_t refused = 0, refused_rehashed = 0, body = saved->len - 72, accepted_edits = 0;
    for (size_t L = 0; L < saved->len; L++) {
        px_model *m = px_model_load((const unsigned char *)saved->data, L, &e);
        refused += !m && e.code == PX_ECORRUPT;
        px_model_free(m);
    }
    CHECK_INT(refused, saved->len);
    for (size_t L = 0; L < body; L++) {
        px_buf b = {0};
        px_buf_add(&b, saved->data, L);
        fx_sha_line(&b);
        px_model *m = px_model_load((const unsigned char *)b.data, b.len, &e);
        refused_rehashed += !m && e.code == PX_ECORRUPT;
        px_model_free(m);
        px_buf_release(&b);
    }
    CHECK_INT(refused_rehashed, body);
    unsigned long long st = 7;
    size_t flips_refused = 0;
    unsigned char *copy = malloc(saved->len);
    for (size_t t = 0; t < nflips; t++) {
        memcpy(copy, saved->data, saved->len);
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t pos = (size_t)(st >> 33) % saved->len;
        unsigned char x = (unsigned char)(1 + (st >> 20) % 255);
        copy[pos] ^= x;
        px_model *m = px_model_load(copy, saved->len, &e);
        flips_refused += !m && e.code == PX_ECORRUPT;
        px_model_free(m);
        /* the same edit inside the body with a valid checksum: any outcome but a crash */
        if (pos < body) {
            px_buf b = {0};
            px_buf_add(&b, copy, body);
            fx_sha_line(&b);
            m = px_model_load((const unsigned char *)b.data, b.len, &e);
            if (m) {
                accepted_edits++;
                double raw[8] = {60, 1, 0, 0, 0, 0, 0, 0}, v;
                size_t nf = px_model_nfeatures(m);
                for (size_t j = 0; j < nf && j < 8; j++)
                    if (px_model_feature(m, j)->kind == PX_COL_CATEGORICAL) raw[j] = NAN;
                if (nf <= 8) px_model_predict(m, raw, &v, NULL, &e);
            } else {
                CHECK(e.code == PX_ECORRUPT || e.code == PX_ENOMEM);
            }
            px_model_free(m);
            px_buf_release(&b);
        }
    }
    free(copy);
    CHECK_INT(flips_refused, nflips);
    fprintf(stderr,
            "%s: %zu bytes; %zu truncations refused (%zu with a recomputed checksum); %zu flips refused; "
            "%zu re-checksummed edits accepted as a different valid model\n",
            what, saved->len, refused, refused_rehashed, flips_refused, accepted_edits);
}

#endif
#endif
