/* hier.c: applying a risk model's stored hierarchical model (hierarchical.json,
 * fitted at training: see models/glmm.c) in a KPI run, without refitting.
 * For every facility x period cell: the cell's intercept by empirical Bayes
 * with the stored (beta, mu, tau) fixed (a 1-D Newton problem), predicted =
 * sum of the stays' probabilities (or days) at that intercept, expected = at
 * mu, standardized ratio = predicted / expected (CMS Hospital Compare) with the
 * interval of the intercept's normal posterior (px_glmm_unit_ratio).
 * Invariant: reads only; the caller's transaction holds the snapshot. */
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

static int cmp_hrow(const void *a, const void *b)
{
    const hrow *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->fac - y->fac;
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

/* index of name in the sorted facility list (added in a first pass) */
static int fac_of(const kpi_hier *h, const char *name)
{
    char **hit = h->nfac ? bsearch(name, h->facs, h->nfac, sizeof *h->facs, kpi_cmp_str) : NULL;
    return hit ? (int)(hit - h->facs) : -1;
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int kpi_hier_apply(PGconn *c, const px_config *cfg, const char *name, int version, const px_model *m,
                   const char *table_q, const char *label, int kinds, double conf, kpi_hier *out, px_err *e)
{
    memset(out, 0, sizeof *out);
    unsigned char *bytes = NULL;
    size_t len = 0;
    px_err e2 = {0};
    int rc = px_reg_read_file(cfg, name, version, "hierarchical.json", &bytes, &len, &e2);
    if (rc == PX_ENOTFOUND) {
        snprintf(out->why, sizeof out->why,
                 "%s v%d has no hierarchical model (not a logit/poisson model, no facility_id, or its fit failed at "
                 "training): facilities use indirect standardization only", name, version);
        return 0;
    }
    if (rc != 0) {
        *e = e2;
        return rc;
    }
    px_hier *h = px_hier_parse((const char *)bytes, len, m, e);
    free(bytes);
    if (!h) return e->code ? e->code : PX_ECORRUPT;
    px_algo algo = px_hier_algo(h);
    double tau = px_hier_tau(h);
    size_t nf = px_model_nfeatures(m), n = 0, cap = 0;
    hrow *rows = NULL;
    double *raw = calloc(nf ? nf : 1, sizeof *raw);
    px_buf q = {0};
    PGresult *r = NULL;
    char *lab = PQescapeIdentifier(c, label, strlen(label));
    if (!raw || !lab) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    /* the facilities, in byte order */
    px_buf_printf(&q, "SELECT DISTINCT w.facility_id::text FROM %s t JOIN wh.fact_encounter w USING (encounter_id)"
                      " WHERE t.%s IS NOT NULL", table_q, lab);
    r = PQexec(c, q.data);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_db_fail(e, c, r, "cannot read the facilities of a feature table");
        goto out;
    }
    out->nfac = (size_t)PQntuples(r);
    if (!(out->facs = calloc(out->nfac ? out->nfac : 1, sizeof *out->facs))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < out->nfac; i++)
        if (!(out->facs[i] = strdup(PQgetvalue(r, (int)i, 0)))) {
            out->nfac = i;
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
    qsort(out->facs, out->nfac, sizeof *out->facs, cmp_strp);   /* strcmp order, whatever the collation */
    PQclear(r);
    r = NULL;
    /* the stays: facility, discharge month, outcome, the model's inputs */
    q.len = 0;
    px_buf_printf(&q, "COPY (SELECT w.facility_id::text, (extract(year FROM w.discharge_date) * 12 + extract(month FROM"
                      " w.discharge_date) - 1)::int, t.%s", lab);
    if ((rc = kpi_feature_columns(c, m, &q, e)) != 0) goto out;
    if (px_buf_printf(&q, " FROM %s t JOIN wh.fact_encounter w USING (encounter_id) WHERE t.%s IS NOT NULL)"
                          " TO STDOUT", table_q, lab) < 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    r = PQexec(c, q.data);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        rc = px_db_fail(e, c, r, "cannot read a feature table for the hierarchical model");
        goto out;
    }
    PQclear(r);
    r = NULL;
    {
        char *line = NULL;
        int cl;
        while ((cl = PQgetCopyData(c, &line, 0)) > 0) {
            if (rc == 0) {
                char *p = line, *end = line + cl;
                int ok = 1;
                char *fac_s = kpi_copy_field(&p, end, &ok), *ym_s = kpi_copy_field(&p, end, &ok);
                double y = kpi_num_value(kpi_copy_field(&p, end, &ok));
                for (size_t j = 0; j < nf && ok; j++) {
                    const px_feature_info *fi = px_model_feature(m, j);
                    const char *v = kpi_copy_field(&p, end, &ok);
                    if (fi->kind == PX_COL_CATEGORICAL && v) {
                        char **hit =
                            fi->nlevels ? bsearch(v, fi->levels, fi->nlevels, sizeof *fi->levels, kpi_cmp_str) : NULL;
                        raw[j] = hit ? (double)(hit - fi->levels) : (double)fi->ref;
                    } else {
                        raw[j] = kpi_num_value(v);
                    }
                }
                double eta;
                int fac = ok && fac_s ? fac_of(out, fac_s) : -1;
                if (!ok || !(y >= 0) || fac < 0 || !ym_s) {
                    rc = px_err_set(e, PX_EINVAL, "feature table %s has a row without a valid label '%s' or facility",
                                    table_q, label);
                } else if ((rc = px_hier_eta(h, m, raw, &eta, e)) == 0) {
                    if (n == cap) {
                        size_t nc = cap ? cap * 2 : 65536;
                        hrow *nr = realloc(rows, nc * sizeof *nr);
                        if (!nr) rc = px_err_set(e, PX_ENOMEM, "out of memory");
                        else rows = nr, cap = nc;
                    }
                    if (rc == 0) rows[n++] = (hrow){fac, atoi(ym_s), 0, eta, y};
                }
            }
            PQfreemem(line);   /* a failed row: the stream is drained so the connection stays usable */
            line = NULL;
        }
        if (cl == -2 && rc == 0) rc = px_db_fail(e, c, NULL, "lost the connection while reading a feature table");
    }
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0)
            rc = px_db_fail(e, c, r, "cannot read a feature table for the hierarchical model");
        PQclear(r);
    }
    r = NULL;
    if (rc) goto out;
    /* one result per facility x period of each requested kind */
    {
        double *eta = malloc((n ? n : 1) * sizeof *eta), *yy = malloc((n ? n : 1) * sizeof *yy);
        size_t ncap = 0;
        if (!eta || !yy) {
            free(eta), free(yy);
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        static const int order[4] = {PX_KPI_MONTH, PX_KPI_QUARTER, PX_KPI_YEAR, PX_KPI_ALL};
        for (int t = 0; t < 4 && rc == 0; t++) {
            int kind = order[t];
            if (!(kinds & kind)) continue;
            for (size_t i = 0; i < n; i++) rows[i].key = period_key(kind, rows[i].ym);
            qsort(rows, n, sizeof *rows, cmp_hrow);
            for (size_t i = 0; i < n && rc == 0;) {
                size_t j = i;
                int pk = rows[i].key;
                while (j < n && rows[j].fac == rows[i].fac && rows[j].key == pk) j++;
                for (size_t s = i; s < j; s++) eta[s - i] = rows[s].eta, yy[s - i] = rows[s].y;
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
                if (px_glmm_unit_ratio(algo, eta, yy, j - i, tau, conf, &u) == 0) {
                    x->u = u.u, x->sd = u.sd, x->predicted = u.predicted, x->expected = u.expected;
                    x->sr = u.ratio, x->lo = u.lo, x->hi = u.hi;
                    out->ncells++;
                }
                i = j;
            }
        }
        free(eta), free(yy);
    }
    if (rc) goto out;
    out->available = 1;
    out->tau = tau;
    out->mu = px_hier_glmm(h)->beta[0];
    out->rows = (long long)n;
    snprintf(out->why, sizeof out->why, "%s v%d: hierarchical model applied (tau %.4g), %zu facility x period cells",
             name, version, tau, out->ncells);
out:
    if (r) PQclear(r);
    if (rc) kpi_hier_free(out);
    free(raw);
    free(rows);
    PQfreemem(lab);
    px_buf_release(&q);
    px_hier_free(h);
    return rc;
}
