/* dataset.c: the in-memory dataset (px_dataset): allocation, lookup, release and
 * the training-data fingerprint. Loading from PostgreSQL is in dataset_load.c.
 * Invariant: every array has n (or n*p) entries; levels are sorted by byte order. */
#include "features/features.h"
#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

px_dataset_params px_dataset_default_params(void)
{
    px_dataset_params p;
    memset(&p, 0, sizeof p);
    p.max_levels = 200;
    return p;
}

px_dataset *px_dataset_new(size_t n, size_t p)
{
    px_dataset *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->n = n;
    d->p = p;
    size_t nn = n ? n : 1, pp = p ? p : 1;
    if (n && p && n > (size_t)-1 / p / sizeof(double)) goto fail;
    d->names = calloc(pp, sizeof *d->names);
    d->kind = calloc(pp, sizeof *d->kind);
    d->nlevels = calloc(pp, sizeof *d->nlevels);
    d->levels = calloc(pp, sizeof *d->levels);
    d->x = malloc(nn * pp * sizeof *d->x);
    d->y = calloc(nn, sizeof *d->y);
    d->day = calloc(nn, sizeof *d->day);
    d->group = calloc(nn, sizeof *d->group);
    d->sex = calloc(nn, 1);
    d->age = malloc(nn * sizeof *d->age);
    if (!d->names || !d->kind || !d->nlevels || !d->levels || !d->x || !d->y || !d->day || !d->group ||
        !d->sex || !d->age)
        goto fail;
    for (size_t i = 0; i < nn * pp; i++) d->x[i] = NAN;
    for (size_t i = 0; i < nn; i++) d->age[i] = NAN;
    return d;
fail:
    px_dataset_free(d);
    return NULL;
}

void px_dataset_free(px_dataset *d)
{
    if (!d) return;
    for (size_t j = 0; j < d->p; j++) {
        if (d->names) free(d->names[j]);
        if (d->levels && d->levels[j]) {
            for (size_t k = 0; k < d->nlevels[j]; k++) free(d->levels[j][k]);
            free(d->levels[j]);
        }
    }
    if (d->extra) {
        for (size_t i = 0; i < d->n * d->nextra; i++) free(d->extra[i]);
        free(d->extra);
    }
    if (d->extra_names) {
        for (size_t j = 0; j < d->nextra; j++) free(d->extra_names[j]);
        free(d->extra_names);
    }
    free(d->names);
    free(d->kind);
    free(d->nlevels);
    free(d->levels);
    free(d->x);
    free(d->y);
    free(d->day);
    free(d->group);
    free(d->sex);
    free(d->age);
    free(d);
}

int px_dataset_col(const px_dataset *d, const char *name)
{
    for (size_t j = 0; j < d->p; j++)
        if (d->names[j] && strcmp(d->names[j], name) == 0) return (int)j;
    return -1;
}

/* The fingerprint identifies the training data independently of where it came
 * from: column names, kinds and levels, then every row's values, label and time,
 * as bytes in a fixed order. Doubles are hashed as their IEEE bit patterns, with
 * every NAN normalised to one pattern. */
void px_dataset_fingerprint(px_dataset *d)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) {
        d->fingerprint[0] = '\0';
        return;
    }
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint64_t dims[2] = {d->n, d->p};
    EVP_DigestUpdate(md, dims, sizeof dims);
    for (size_t j = 0; j < d->p; j++) {
        const char *nm = d->names[j] ? d->names[j] : "";
        EVP_DigestUpdate(md, nm, strlen(nm) + 1);
        unsigned char k = (unsigned char)d->kind[j];
        EVP_DigestUpdate(md, &k, 1);
        for (size_t l = 0; l < d->nlevels[j]; l++) EVP_DigestUpdate(md, d->levels[j][l], strlen(d->levels[j][l]) + 1);
        EVP_DigestUpdate(md, "\n", 1);
    }
    const double qnan = NAN;
    for (size_t i = 0; i < d->n; i++) {
        for (size_t j = 0; j < d->p; j++) {
            double v = d->x[i * d->p + j];
            EVP_DigestUpdate(md, isnan(v) ? &qnan : &v, sizeof v);
        }
        EVP_DigestUpdate(md, &d->y[i], sizeof d->y[i]);
        EVP_DigestUpdate(md, &d->day[i], sizeof d->day[i]);
    }
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(md, out, &len);
    EVP_MD_CTX_free(md);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        d->fingerprint[2 * i] = hex[out[i] >> 4];
        d->fingerprint[2 * i + 1] = hex[out[i] & 15];
    }
    d->fingerprint[64] = '\0';
}
