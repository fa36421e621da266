/* reference.c: reference distributions of a model's inputs and score on its
 * training rows, the baseline drift monitoring compares live traffic with
 * (population stability index, chi-square). Numeric: decile edges (sample
 * quantiles of type 7, R's default and numpy's "linear", over non-missing
 * values; repeated edges merged), with counts and shares per bin
 * (bin i holds e[i-1] < x <= e[i]) and the missing share. Categorical: count and
 * share of each level the model knows. Deterministic: same rows, same text. */
#include "registry/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every key of a reference is signed into the artifact, so none may go missing
 * silently: each add is checked (0 added, -1 out of memory; a detached item is freed). */
static int add_item(cJSON *o, const char *key, cJSON *item)
{
    if (!item) return -1;
    if (!cJSON_AddItemToObject(o, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static int add_num(cJSON *o, const char *key, double v)
{
    return cJSON_AddNumberToObject(o, key, v) ? 0 : -1;
}

static int push(cJSON *a, cJSON *item)
{
    if (!item) return -1;
    if (!cJSON_AddItemToArray(a, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static cJSON *num_array(const double *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++)
        if (push(a, cJSON_CreateNumber(v[i])) != 0) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* Fills o with the numeric summary of vals[0..n-1] (NAN = missing). buf: n doubles of scratch. */
static int numeric_summary(cJSON *o, const double *vals, size_t n, double *buf)
{
    size_t m = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(vals[i])) {
            buf[m++] = vals[i];
            sum += vals[i];
        }
    qsort(buf, m, sizeof *buf, px_cmp_double);
    double edges[9], counts[10], shares[10];
    size_t ne = 0;
    if (m > 0)
        for (int q = 1; q <= 9; q++) {
            double x = px_quantile7(buf, m, q / 10.0);
            if (ne == 0 || x > edges[ne - 1]) edges[ne++] = x;
        }
    size_t nb = m > 0 ? ne + 1 : 0;
    for (size_t b = 0; b < nb; b++) counts[b] = 0;
    /* buf is sorted: walk the bins once */
    size_t b = 0;
    for (size_t i = 0; i < m; i++) {
        while (b < ne && buf[i] > edges[b]) b++;
        counts[b]++;
    }
    for (size_t k = 0; k < nb; k++) shares[k] = counts[k] / (double)m;
    /* one statement an add: the keys' order is the text's, and the text is signed */
    int rc = add_num(o, "n", (double)m);
    rc |= add_num(o, "missing", (double)(n - m));
    rc |= add_num(o, "missing_share", n ? (double)(n - m) / (double)n : 0.0);
    if (m > 0) {
        rc |= add_num(o, "min", buf[0]);
        rc |= add_num(o, "max", buf[m - 1]);
        rc |= add_num(o, "mean", sum / (double)m);
    }
    rc |= add_item(o, "edges", num_array(edges, ne));
    rc |= add_item(o, "counts", num_array(counts, nb));
    rc |= add_item(o, "shares", num_array(shares, nb));
    return rc ? -1 : 0;
}

char *px_reg_reference_json(const px_model *m, const px_dataset *d, const size_t *rows, size_t n,
                            const double *scores, px_err *e)
{
    cJSON *root = cJSON_CreateObject(), *feats = NULL;
    double *vals = malloc((n ? n : 1) * sizeof *vals), *buf = malloc((n ? n : 1) * sizeof *buf);
    double *lcount = NULL;
    char *out = NULL;
    if (!root || !vals || !buf) goto oom;
    if (!rows && n > d->n) {
        px_err_set(e, PX_EINVAL, "reference distributions: %zu rows asked of a dataset of %zu", n, d->n);
        goto fail;
    }
    for (size_t i = 0; rows && i < n; i++)
        if (rows[i] >= d->n) {
            px_err_set(e, PX_EINVAL, "reference distributions: row %zu is out of range", rows[i]);
            goto fail;
        }
    if (!cJSON_AddStringToObject(root, "format", "prognos-reference 1") || add_num(root, "n", (double)n) != 0) goto oom;
    if (!(feats = cJSON_AddArrayToObject(root, "features"))) goto oom;
    size_t k = px_model_nfeatures(m);
    for (size_t j = 0; j < k; j++) {
        const px_feature_info *f = px_model_feature(m, j);
        int col = px_dataset_col(d, f->name);
        if (col < 0) {
            px_err_set(e, PX_EINVAL, "reference distributions: the dataset has no column '%s'", f->name);
            goto fail;
        }
        cJSON *o = cJSON_CreateObject();
        if (push(feats, o) != 0) goto oom;
        if (!cJSON_AddStringToObject(o, "name", f->name) ||
            !cJSON_AddStringToObject(o, "kind", f->kind == PX_COL_NUMERIC ? "numeric" : "categorical"))
            goto oom;
        for (size_t i = 0; i < n; i++) vals[i] = d->x[(rows ? rows[i] : i) * d->p + (size_t)col];
        if (f->kind == PX_COL_NUMERIC) {
            if (d->kind[col] != PX_COL_NUMERIC) {
                px_err_set(e, PX_EINVAL, "reference distributions: column '%s' is not numeric", f->name);
                goto fail;
            }
            if (numeric_summary(o, vals, n, buf) != 0) goto oom;
            continue;
        }
        if (d->kind[col] != PX_COL_CATEGORICAL) {
            px_err_set(e, PX_EINVAL, "reference distributions: column '%s' is not categorical", f->name);
            goto fail;
        }
        /* count by the model's levels, matched by text (the dataset's own indexes may differ) */
        free(lcount);
        if (!(lcount = calloc(2 * (f->nlevels + 1), sizeof *lcount))) goto oom; /* counts, then shares */
        size_t nd = d->nlevels[col], missing = 0, seen = 0;
        for (size_t i = 0; i < n; i++) {
            double v = vals[i];
            if (isnan(v) || v < 0 || (size_t)v >= nd) {
                missing++;
                continue;
            }
            const char *text = d->levels[col][(size_t)v];
            size_t l = 0;
            while (l < f->nlevels && strcmp(f->levels[l], text) != 0) l++;
            lcount[l]++; /* l == nlevels: a level the model does not know */
            seen++;
        }
        if (add_num(o, "n", (double)seen) != 0 || add_num(o, "missing", (double)missing) != 0 ||
            add_num(o, "missing_share", n ? (double)missing / (double)n : 0.0) != 0)
            goto oom;
        cJSON *lv = cJSON_AddArrayToObject(o, "levels");
        if (!lv) goto oom;
        for (size_t l = 0; l < f->nlevels; l++)
            if (push(lv, cJSON_CreateString(f->levels[l])) != 0) goto oom;
        if (add_item(o, "counts", num_array(lcount, f->nlevels)) != 0) goto oom;
        double *lshare = lcount + f->nlevels + 1;
        for (size_t l = 0; l < f->nlevels; l++) lshare[l] = seen ? lcount[l] / (double)seen : 0.0;
        if (add_item(o, "shares", num_array(lshare, f->nlevels)) != 0 || add_num(o, "other", lcount[f->nlevels]) != 0)
            goto oom;
    }
    if (scores) {
        cJSON *s = cJSON_AddObjectToObject(root, "score");
        if (!s) goto oom;
        memcpy(vals, scores, n * sizeof *vals);
        if (numeric_summary(s, vals, n, buf) != 0) goto oom;
    }
    if (!(out = cJSON_PrintUnformatted(root))) goto oom;
    goto done;
oom:
    px_err_set(e, PX_ENOMEM, "out of memory");
fail:
    out = NULL;
done:
    cJSON_Delete(root);
    free(vals);
    free(buf);
    free(lcount);
    return out;
}
