/* comorbidity.c: the Charlson and Elixhauser categories of Quan et al. 2005 as the
 * builder sees them (column, bit, weight, hierarchy) and the SQL it generates from
 * them: the flag columns, the Charlson index and the Elixhauser count.
 * The table is generated from migration 002 (see below); the builder still compares
 * feat_comorb_signature() with the database before every build, which catches a
 * database whose categories were edited by hand or migrated by another version. */
#include "features/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The categories themselves (feat_comorbs[]: column, bit, weight, hierarchy) are
 * defined once, in the INSERT INTO features.comorbidity_category of the features
 * migration, and generated into C at build time by cmake/comorb_categories.cmake.
 * Charlson weights are those of Charlson et al. 1987 (J Chronic Dis 40:373), which
 * Quan 2005 keeps: 1 for MI ... uncomplicated diabetes, 2 for complicated diabetes,
 * hemiplegia, renal disease and any malignancy, 3 for moderate/severe liver
 * disease, 6 for metastatic tumours and AIDS/HIV. The hierarchy (a category
 * superseded by a more severe one counts 0 when both are present) is the usual one:
 * complicated over uncomplicated diabetes, severe over mild liver disease,
 * metastatic over any malignancy; for the Elixhauser count, complicated over
 * uncomplicated diabetes and hypertension, metastatic over solid tumour (as in
 * Elixhauser et al. 1998 and the R package 'comorbidity'). */

const char *px_feat_comorbidity_words(const char *col)
{
    for (int i = 0; col && i < feat_comorbs_count; i++)
        if (strcmp(feat_comorbs[i].col, col) == 0) return feat_comorbs[i].label;
    return NULL;
}

static int is_charlson(const feat_comorb *k) { return strncmp(k->col, "cci_", 4) == 0; }

static int bit_of(const char *col)
{
    for (int i = 0; i < feat_comorbs_count; i++)
        if (strcmp(feat_comorbs[i].col, col) == 0) return feat_comorbs[i].bit;
    return -1;
}

const char *feat_comorb_signature(void)
{
    static char sig[4096];
    if (sig[0]) return sig;
    size_t len = 0;
    for (int i = 0; i < feat_comorbs_count; i++) {
        const feat_comorb *k = &feat_comorbs[i];
        char w[8] = "-";
        if (k->weight) snprintf(w, sizeof w, "%d", k->weight);
        len += (size_t)snprintf(sig + len, sizeof sig - len, "%s %d %s %s\n", k->col, k->bit, w,
                                k->superseded_by ? k->superseded_by : "-");
    }
    return sig;
}

/* sum over the scheme's categories of weight * present * (not superseded) */
static int add_score(px_buf *b, int charlson)
{
    int rc = px_buf_adds(b, "(0");
    for (int i = 0; i < feat_comorbs_count && rc == 0; i++) {
        const feat_comorb *k = &feat_comorbs[i];
        if (is_charlson(k) != charlson) continue;
        long long m = 1LL << k->bit;
        rc = px_buf_printf(b, " + CASE WHEN (cm & %lld) <> 0", m);
        if (rc == 0 && k->superseded_by) rc = px_buf_printf(b, " AND (cm & %lld) = 0", 1LL << bit_of(k->superseded_by));
        if (rc == 0) rc = px_buf_printf(b, " THEN %d ELSE 0 END", charlson ? k->weight : 1);
    }
    if (rc == 0) rc = px_buf_adds(b, ")::smallint");
    return rc;
}

char *feat_expand_sql(const char *tmpl)
{
    px_buf b = {0};
    const char *p = tmpl;
    int rc = 0;
    while (rc == 0 && *p) {
        const char *at = strchr(p, '@');
        if (!at) {
            rc = px_buf_adds(&b, p);
            break;
        }
        rc = px_buf_add(&b, p, (size_t)(at - p));
        if (rc) break;
        if (strncmp(at, "@FLAGS@", 7) == 0) {
            for (int i = 0; i < feat_comorbs_count && rc == 0; i++)
                rc = px_buf_printf(&b, "%s((cm >> %d) & 1)::smallint AS %s", i ? ",\n       " : "", feat_comorbs[i].bit,
                                   feat_comorbs[i].col);
            p = at + 7;
        } else if (strncmp(at, "@FLAGCOLS@", 10) == 0) {
            for (int i = 0; i < feat_comorbs_count && rc == 0; i++)
                rc = px_buf_printf(&b, "%sf.%s", i ? ", " : "", feat_comorbs[i].col);
            p = at + 10;
        } else if (strncmp(at, "@CHARLSON@", 10) == 0) {
            rc = add_score(&b, 1);
            p = at + 10;
        } else if (strncmp(at, "@ELIXCOUNT@", 11) == 0) {
            rc = add_score(&b, 0);
            p = at + 11;
        } else {
            rc = px_buf_addc(&b, '@');
            p = at + 1;
        }
    }
    if (rc == 0) rc = px_buf_addc(&b, '\0');
    if (rc != 0) {
        px_buf_release(&b);
        return NULL;
    }
    return b.data;
}
