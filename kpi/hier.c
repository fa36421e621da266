/* hier.c: applying a risk model's stored hierarchical model (hierarchical.json,
 * fitted at training: see models/glmm.c and models/hier.c) in a KPI run, without refitting.
 * The stays' fixed-effect linear predictors come from the run's one pass, where
 * PostgreSQL computes them with the model compiled to SQL (px_hier_sql_eta; the
 * expected count is a shift of that linear predictor). For every facility x
 * period cell: the cell's intercept by empirical Bayes with the stored (beta,
 * mu, tau) fixed (a 1-D Newton problem), predicted = sum of the stays'
 * probabilities (or days) at that intercept, expected = at mu, standardized
 * ratio = predicted / expected (CMS Hospital Compare) with the interval of the
 * intercept's normal posterior (px_glmm_unit_ratio). */
#include "kpi/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct hrow {
    int fac, ym;          /* facility index, year * 12 + month - 1 */
    int key;              /* the period of the kind being summarized (see period_key) */
    double eta, y;
} hrow;

static int period_key(int kind, int ym)
{
    switch (kind) {
    case PX_KPI_MONTH: return ym;
    case PX_KPI_QUARTER: return ym - ym % 3;
    case PX_KPI_YEAR: return ym - ym % 12;
    default: return -1;
    }
}

void kpi_hier_free(kpi_hier *h)
{
    for (size_t i = 0; i < h->nfac; i++) free(h->facs[i]);
    free(h->facs);
    free(h->cells);
    memset(h, 0, sizeof *h);
}

/* cells are made in (kind, start, facility) order: binary search */
int kpi_hier_find(const kpi_hier *h, int kind, const char *start, const char *unit)
{
    char **hit = h->nfac ? bsearch(unit, h->facs, h->nfac, sizeof *h->facs, kpi_cmp_str) : NULL;
    if (!hit) return -1;
    int fac = (int)(hit - h->facs);
    size_t lo = 0, hi = h->ncells;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const kpi_hier_cell *x = &h->cells[mid];
        int c = x->kind != kind ? (x->kind < kind ? -1 : 1) : strcmp(x->start, start);
        if (c == 0) c = x->fac < fac ? -1 : x->fac > fac;
        if (c == 0) return (int)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* kpi_hier_find's order: kind, period start, facility */
static int cmp_cell(const void *a, const void *b)
{
    const kpi_hier_cell *x = a, *y = b;
    if (x->kind != y->kind) return x->kind < y->kind ? -1 : 1;
    int c = strcmp(x->start, y->start);
    if (c) return c;
    return x->fac < y->fac ? -1 : x->fac > y->fac;
}

int kpi_hier_load(const px_config *cfg, const char *name, int version, const px_model *m, px_hier **out,
                  kpi_hier *h, px_err *e)
{
    memset(h, 0, sizeof *h);
    *out = NULL;
    unsigned char *bytes = NULL;
    size_t len = 0;
    px_err e2 = {0};
    int rc = px_reg_read_file(cfg, name, version, "hierarchical.json", &bytes, &len, &e2);
    if (rc == PX_ENOTFOUND) {
        snprintf(h->why, sizeof h->why,
                 "%s v%d has no hierarchical model (not a logit/poisson model, no facility_id, or its fit failed at "
                 "training): facilities use indirect standardization only", name, version);
        return 0;
    }
    if (rc != 0) {
        *e = e2;
        return rc;
    }
    *out = px_hier_parse((const char *)bytes, len, m, e);
    free(bytes);
    if (!*out) return e->code ? e->code : PX_ECORRUPT;
    return 0;
}

int kpi_hier_cells(const px_hier *model, const kpi_hier_rows *hr, const char *name, int version, int kinds,
                   double conf, kpi_hier *out, px_err *e)
{
    px_algo algo = px_hier_algo(model);
    double tau = px_hier_tau(model);
    size_t n = hr->n;
    int rc = 0;
    hrow *rows = malloc((n ? n : 1) * sizeof *rows);
    int *remap = malloc((hr->nfac ? hr->nfac : 1) * sizeof *remap);
    double *eta = malloc((n ? n : 1) * sizeof *eta);
    out->facs = calloc(hr->nfac ? hr->nfac : 1, sizeof *out->facs);
    if (!rows || !remap || !eta || !out->facs) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    /* the facilities in byte order (kpi_hier_find), whatever the collation */
    for (size_t i = 0; i < hr->nfac; i++) {
        if (!(out->facs[i] = strdup(hr->facs[i]))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        out->nfac = i + 1;
    }
    qsort(out->facs, out->nfac, sizeof *out->facs, cmp_strp);
    for (size_t i = 0; i < hr->nfac; i++) {
        char **hit = bsearch(hr->facs[i], out->facs, out->nfac, sizeof *out->facs, kpi_cmp_str);
        remap[i] = hit ? (int)(hit - out->facs) : 0;
    }
    /* the rows in (facility, month) order by a counting sort: every period key is
     * non-decreasing in the month, so this one order groups every kind's cells */
    int ymin = 0, ymax = -1;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || hr->ym[i] < ymin) ymin = hr->ym[i];
        if (i == 0 || hr->ym[i] > ymax) ymax = hr->ym[i];
    }
    size_t nym = n ? (size_t)(ymax - ymin + 1) : 1, nb = out->nfac * nym;
    size_t *start = calloc(nb + 1, sizeof *start);
    if (!start) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) start[(size_t)remap[hr->fac[i]] * nym + (size_t)(hr->ym[i] - ymin) + 1]++;
    for (size_t b = 0; b < nb; b++) start[b + 1] += start[b];
    for (size_t i = 0; i < n; i++) {
        size_t b = (size_t)remap[hr->fac[i]] * nym + (size_t)(hr->ym[i] - ymin);
        rows[start[b]++] = (hrow){remap[hr->fac[i]], hr->ym[i], 0, hr->eta[i], hr->y[i]};
    }
    free(start);
    /* one result per facility x period of each requested kind */
    size_t ncap = 0;
    static const int order[4] = {PX_KPI_MONTH, PX_KPI_QUARTER, PX_KPI_YEAR, PX_KPI_ALL};
    for (int t = 0; t < 4 && rc == 0; t++) {
        int kind = order[t];
        if (!(kinds & kind)) continue;
        for (size_t i = 0; i < n; i++) rows[i].key = period_key(kind, rows[i].ym);
        for (size_t i = 0; i < n && rc == 0;) {
            size_t j = i;
            int pk = rows[i].key;
            while (j < n && rows[j].fac == rows[i].fac && rows[j].key == pk) j++;
            double sy = 0;
            for (size_t s = i; s < j; s++) eta[s - i] = rows[s].eta, sy += rows[s].y;
            px_glmm_unit u;
            if (out->ncells == ncap) {
                size_t nc = ncap ? ncap * 2 : 1024;
                kpi_hier_cell *cc = realloc(out->cells, nc * sizeof *cc);
                if (!cc) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    break;
                }
                out->cells = cc, ncap = nc;
            }
            kpi_hier_cell *x = &out->cells[out->ncells];
            memset(x, 0, sizeof *x);
            x->kind = kind;
            x->fac = rows[i].fac;
            if (kind == PX_KPI_ALL)
                snprintf(x->start, sizeof x->start, "1900-01-01");
            else
                snprintf(x->start, sizeof x->start, "%04d-%02d-01", (pk / 12) % 10000, pk % 12 + 1);
            x->n = (double)(j - i);
            if (px_glmm_unit_ratio_sum(algo, eta, j - i, sy, tau, conf, &u) == 0) {
                x->u = u.u, x->sd = u.sd, x->predicted = u.predicted, x->expected = u.expected;
                x->sr = u.ratio, x->lo = u.lo, x->hi = u.hi;
                out->ncells++;
            }
            i = j;
        }
    }
    if (rc) goto out;
    qsort(out->cells, out->ncells, sizeof *out->cells, cmp_cell);
    out->available = 1;
    out->tau = tau;
    out->mu = px_hier_glmm(model)->beta[0];
    out->rows = (long long)n;
    snprintf(out->why, sizeof out->why, "%s v%d: hierarchical model applied (tau %.4g), %zu facility x period cells",
             name, version, tau, out->ncells);
out:
    if (rc) kpi_hier_free(out);
    free(rows);
    free(remap);
    free(eta);
    return rc;
}
