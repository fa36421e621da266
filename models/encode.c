/* encode.c: the encoding a model fits on its training rows and applies to every
 * instance: numeric columns standardized with the training mean and population
 * sd (missing -> the mean, i.e. 0), categorical columns one-hot against the most
 * frequent training level (missing or unseen -> that reference), columns that are
 * constant in training dropped. Design column 0 is the intercept. */
#include "models/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void px_enc_free(px_feature_info *f, size_t nf)
{
    if (!f) return;
    for (size_t j = 0; j < nf; j++) {
        for (size_t l = 0; l < f[j].nlevels; l++) free(f[j].levels[l]);
        free(f[j].levels);
    }
    free(f);
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Mean and population sd: the scaling is a fixed transformation of the training
 * rows, not an estimate of a population parameter, so the denominator is n (as
 * scikit-learn's StandardScaler); the choice does not change fitted probabilities,
 * only the scale of the standardized coefficients. Two passes for accuracy. */
static int fit_numeric(const px_dataset *d, size_t j, const size_t *rows, size_t nrows, px_feature_info *f, px_err *e)
{
    double sum = 0, mn = INFINITY, mx = -INFINITY;
    size_t cnt = 0;
    for (size_t r = 0; r < nrows; r++) {
        size_t i = rows ? rows[r] : r;
        double v = d->x[i * d->p + j];
        if (isnan(v)) continue;
        if (!isfinite(v)) return px_err_set(e, PX_EINVAL, "column '%s' has an infinite value in row %zu", f->name, i);
        sum += v;
        cnt++;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    if (cnt == 0) {
        f->mean = 0;
        f->sd = 0;
        f->min = f->max = 0;
        f->dropped = 1;
        return 0;
    }
    double mean = sum / (double)cnt, ss = 0;
    for (size_t r = 0; r < nrows; r++) {
        size_t i = rows ? rows[r] : r;
        double v = d->x[i * d->p + j];
        if (!isnan(v)) ss += (v - mean) * (v - mean);
    }
    f->mean = mean;
    f->sd = sqrt(ss / (double)cnt);
    f->min = mn;
    f->max = mx;
    /* constant up to the rounding of the mean */
    f->dropped = mn == mx || !(f->sd > 1e-13 * fabs(mean));
    return 0;
}

static int fit_categorical(const px_dataset *d, size_t j, const size_t *rows, size_t nrows, px_feature_info *f,
                           px_err *e)
{
    size_t nl = d->nlevels[j], *cnt = NULL;
    char **kept = NULL;
    int rc = PX_ENOMEM;
    cnt = calloc(nl ? nl : 1, sizeof *cnt);
    kept = calloc(nl ? nl : 1, sizeof *kept);
    if (!cnt || !kept) {
        rc = px_err_set(e, PX_ENOMEM, "cannot encode column '%s': out of memory", f->name);
        goto done;
    }
    for (size_t r = 0; r < nrows; r++) {
        size_t i = rows ? rows[r] : r;
        double v = d->x[i * d->p + j];
        if (isnan(v)) continue;
        if (!(v >= 0 && v < (double)nl && v == floor(v))) {
            rc = px_err_set(e, PX_EINVAL, "column '%s' has an invalid level index in row %zu", f->name, i);
            goto done;
        }
        cnt[(size_t)v]++;
    }
    size_t m = 0;
    for (size_t l = 0; l < nl; l++)
        if (cnt[l] > 0) {
            if (!d->levels[j][l]) {
                rc = px_err_set(e, PX_EINVAL, "column '%s' has a level without text", f->name);
                goto done;
            }
            kept[m++] = d->levels[j][l];
        }
    /* the dataset sorts its levels by byte order; do not rely on it */
    qsort(kept, m, sizeof *kept, cmp_str_ptr);
    for (size_t l = 1; l < m; l++)
        if (strcmp(kept[l - 1], kept[l]) == 0) {
            rc = px_err_set(e, PX_EINVAL, "column '%s' has a duplicate level", f->name);
            goto done;
        }
    f->levels = calloc(m ? m : 1, sizeof *f->levels);
    if (!f->levels) {
        rc = px_err_set(e, PX_ENOMEM, "cannot encode column '%s': out of memory", f->name);
        goto done;
    }
    for (size_t l = 0; l < m; l++) {
        f->levels[l] = strdup(kept[l]);
        if (!f->levels[l]) {
            f->nlevels = l;
            rc = px_err_set(e, PX_ENOMEM, "cannot encode column '%s': out of memory", f->name);
            goto done;
        }
    }
    f->nlevels = m;
    /* reference: the most frequent training level, ties to the first in byte order */
    size_t best = 0, bestn = 0;
    for (size_t l = 0; l < m; l++) {
        size_t c = 0;
        for (size_t q = 0; q < nl; q++)
            if (cnt[q] > 0 && strcmp(d->levels[j][q], f->levels[l]) == 0) c = cnt[q];
        if (c > bestn) {
            bestn = c;
            best = l;
        }
    }
    f->ref = best;
    f->dropped = m <= 1;
    rc = 0;
done:
    free(cnt);
    free(kept);
    return rc;
}

int px_enc_fit(const px_dataset *d, const size_t *rows, size_t nrows, px_feature_info **out, size_t *ncols, px_err *e)
{
    px_feature_info *f = NULL;
    int rc;
    *out = NULL;
    *ncols = 0;
    if (d->p == 0) return px_err_set(e, PX_EINVAL, "dataset '%s' has no feature columns", d->table);
    f = calloc(d->p, sizeof *f);
    if (!f) return px_err_set(e, PX_ENOMEM, "cannot encode dataset: out of memory");
    size_t col = 1;
    for (size_t j = 0; j < d->p; j++) {
        const char *nm = d->names[j] ? d->names[j] : "";
        if (nm[0] == '\0' || strlen(nm) >= sizeof f[j].name) {
            rc = px_err_set(e, PX_EINVAL, "feature column %zu has an empty name or one longer than %zu bytes", j,
                            sizeof f[j].name - 1);
            goto fail;
        }
        for (size_t q = 0; q < j; q++)
            if (strcmp(f[q].name, nm) == 0) {
                rc = px_err_set(e, PX_EINVAL, "feature column '%s' appears twice", nm);
                goto fail;
            }
        memcpy(f[j].name, nm, strlen(nm) + 1);
        f[j].kind = d->kind[j];
        if (f[j].kind == PX_COL_NUMERIC)
            rc = fit_numeric(d, j, rows, nrows, &f[j], e);
        else if (f[j].kind == PX_COL_CATEGORICAL)
            rc = fit_categorical(d, j, rows, nrows, &f[j], e);
        else
            rc = px_err_set(e, PX_EINVAL, "feature column '%s' has an unknown kind", nm);
        if (rc < 0) goto fail;
        if (f[j].dropped) {
            f[j].col = f[j].ncols = 0;
        } else {
            f[j].col = col;
            f[j].ncols = f[j].kind == PX_COL_NUMERIC ? 1 : f[j].nlevels - 1;
            col += f[j].ncols;
        }
    }
    *out = f;
    *ncols = col;
    return 0;
fail:
    px_enc_free(f, d->p);
    return rc;
}

size_t px_model_level_index(const px_feature_info *f, const char *s, size_t n)
{
    /* the levels are in byte order (fit_categorical sorts them; the loader checks) */
    size_t lo = 0, hi = f->nlevels;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, ln = strlen(f->levels[mid]);
        int c = memcmp(f->levels[mid], s, ln < n ? ln : n);
        if (c == 0) c = (ln > n) - (ln < n);
        if (c == 0) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (size_t)-1;
}

size_t px_enc_level_find(const px_feature_info *f, const char *v)
{
    size_t l = v ? px_model_level_index(f, v, strlen(v)) : (size_t)-1;
    return l == (size_t)-1 ? f->ref : l;
}

void px_enc_level_map(const px_feature_info *f, char *const *lv, size_t nl, size_t *map)
{
    for (size_t i = 0; i < nl; i++) map[i] = px_enc_level_find(f, lv[i]);
}

void px_enc_raw(const px_feature_info *f, size_t nf, const double *num, const char *const *text, double *raw)
{
    for (size_t j = 0; j < nf; j++) {
        if (f[j].kind == PX_COL_NUMERIC) {
            raw[j] = num[j];
            continue;
        }
        /* an unseen level is missing: px_enc_row imputes the reference either way,
         * and the drift monitor bins it as missing, not as the reference */
        size_t l = text[j] ? px_enc_level_find(&f[j], text[j]) : f[j].ref;
        raw[j] = text[j] && (l != f[j].ref || (f[j].nlevels && strcmp(f[j].levels[l], text[j]) == 0)) ? (double)l : NAN;
    }
}

int px_enc_check(const px_feature_info *f, size_t nf, const double *raw, px_err *e)
{
    for (size_t j = 0; j < nf; j++) {
        double v = raw[j];
        if (f[j].dropped || isnan(v)) continue;
        if (f[j].kind == PX_COL_NUMERIC) {
            if (!isfinite(v)) return px_err_set(e, PX_EINVAL, "feature '%s': value is not finite", f[j].name);
        } else if (!(v >= 0 && v < (double)f[j].nlevels && v == floor(v))) {
            return px_err_set(e, PX_EINVAL, "feature '%s': level index %g is not one of its %zu levels", f[j].name, v,
                              f[j].nlevels);
        }
    }
    return 0;
}

void px_enc_row(const px_feature_info *f, size_t nf, const double *raw, double *out, size_t ncols)
{
    memset(out, 0, ncols * sizeof *out);
    out[0] = 1;
    for (size_t j = 0; j < nf; j++) {
        if (f[j].dropped) continue;
        double v = raw[j];
        if (f[j].kind == PX_COL_NUMERIC) {
            out[f[j].col] = isnan(v) ? 0 : (v - f[j].mean) / f[j].sd;
        } else {
            size_t l = isnan(v) ? f[j].ref : (size_t)v;
            if (l != f[j].ref) out[f[j].col + (l < f[j].ref ? l : l - 1)] = 1;
        }
    }
}

/* snprintf that, when it truncates, does not leave half a UTF-8 character */
static void put_name(char *buf, size_t len, const char *a, const char *b)
{
    int r = b ? snprintf(buf, len, "%s=%s", a, b) : snprintf(buf, len, "%s", a);
    if (r < 0 || (size_t)r < len || len == 0) return;
    size_t L = strlen(buf), i = L;
    while (i > 0 && ((unsigned char)buf[i - 1] & 0xC0) == 0x80) i--;
    if (i > 0 && (unsigned char)buf[i - 1] >= 0xC0) {
        unsigned char lead = (unsigned char)buf[i - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (L - (i - 1) < need) buf[i - 1] = '\0';
    }
}

void px_enc_colname(const px_feature_info *f, size_t nf, size_t c, char *buf, size_t len)
{
    if (c == 0) {
        snprintf(buf, len, "(intercept)");
        return;
    }
    for (size_t j = 0; j < nf; j++) {
        if (f[j].dropped || c < f[j].col || c >= f[j].col + f[j].ncols) continue;
        if (f[j].kind == PX_COL_NUMERIC) {
            put_name(buf, len, f[j].name, NULL);
        } else {
            size_t l = c - f[j].col;
            if (l >= f[j].ref) l++;
            put_name(buf, len, f[j].name, f[j].levels[l]);
        }
        return;
    }
    snprintf(buf, len, "column %zu", c);
}
