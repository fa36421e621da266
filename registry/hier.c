/* hier.c: the hierarchical (random-intercept) model stored with a GLM version:
 * whether a training table names facilities, and fitting px_hier on the whole
 * labelled table at training time, serialized as hierarchical.json (one of the
 * artifact's signed files). A failed hierarchical fit does not fail training:
 * the version is registered without it, and `kpi compute` then says that it
 * used indirect standardization alone for that measure. */
#include "registry/internal.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

/* The column naming a stay's facility, as the built-in feature sets hold it. */
static const char *const unit_cols[2] = {"facility_id", NULL};

const char *const *reg_hier_unit_columns(PGconn *c, const char *table)
{
    const char *dot = table ? strchr(table, '.') : NULL;
    if (!dot || dot == table || !dot[1]) return NULL;
    char schema[128];
    size_t sl = (size_t)(dot - table);
    if (sl >= sizeof schema) return NULL;
    memcpy(schema, table, sl);
    schema[sl] = 0;
    const char *p[2] = {schema, dot + 1};
    PGresult *r = PQexecParams(c,
                               "SELECT 1 FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid"
                               " JOIN pg_namespace s ON s.oid = t.relnamespace WHERE s.nspname = $1"
                               " AND t.relname = $2 AND a.attname = 'facility_id' AND a.attnum > 0"
                               " AND NOT a.attisdropped",
                               2, NULL, p, NULL, NULL, 0);
    int has = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    return has ? unit_cols : NULL;
}

char *reg_hier_fit_json(const px_model *m, const px_dataset *d, const px_hier_params *hp, char *why, size_t whylen)
{
    why[0] = 0;
    px_algo a = px_model_algo(m);
    if (a != PX_ALGO_LOGIT && a != PX_ALGO_POISSON) {
        snprintf(why, whylen, "no hierarchical model: %s is not a GLM", px_algo_name(a));
        return NULL;
    }
    size_t col = d->nextra;
    for (size_t k = 0; k < d->nextra; k++)
        if (strcmp(d->extra_names[k], unit_cols[0]) == 0) col = k;
    if (col == d->nextra) {
        snprintf(why, whylen, "no hierarchical model: table '%s' has no facility_id column", d->table);
        return NULL;
    }
    px_err e = {0};
    px_hier *h = px_hier_fit(m, d, NULL, 0, col, hp, &e);
    if (!h) {
        snprintf(why, whylen, "no hierarchical model: %s%s%s", e.msg, e.detail[0] ? ": " : "", e.detail);
        return NULL;
    }
    char *s = px_hier_json(h);
    const px_glmm_fit *f = px_hier_glmm(h);
    if (!s)
        snprintf(why, whylen, "no hierarchical model: out of memory");
    else
        snprintf(why, whylen, "hierarchical model: %zu facilities, tau %.4g, mu %.4g, %s%s%s", f->ngroups, f->tau,
                 f->beta[0], f->converged ? "converged" : "NOT converged", f->warning[0] ? "; " : "", f->warning);
    px_hier_free(h);
    return s;
}
