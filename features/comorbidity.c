/* comorbidity.c: the Charlson and Elixhauser categories of Quan et al. 2005 as the
 * builder sees them (column, bit, weight, hierarchy) and the SQL it generates from
 * them: the flag columns, the Charlson index and the Elixhauser count.
 * Invariant: this table equals features.comorbidity_category (migration 002); the
 * builder compares feat_comorb_signature() with the database before every build. */
#include "features/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Charlson weights are those of Charlson et al. 1987 (J Chronic Dis 40:373), which
 * Quan 2005 keeps: 1 for MI ... uncomplicated diabetes, 2 for complicated diabetes,
 * hemiplegia, renal disease and any malignancy, 3 for moderate/severe liver
 * disease, 6 for metastatic tumours and AIDS/HIV. The hierarchy (a category
 * superseded by a more severe one counts 0 when both are present) is the usual one:
 * complicated over uncomplicated diabetes, severe over mild liver disease,
 * metastatic over any malignancy; for the Elixhauser count, complicated over
 * uncomplicated diabetes and hypertension, metastatic over solid tumour (as in
 * Elixhauser et al. 1998 and the R package 'comorbidity'). */
const feat_comorb feat_comorbs[] = {
    {"cci_mi", 0, 1, NULL, "myocardial infarction"},
    {"cci_chf", 1, 1, NULL, "congestive heart failure"},
    {"cci_pvd", 2, 1, NULL, "peripheral vascular disease"},
    {"cci_cvd", 3, 1, NULL, "cerebrovascular disease"},
    {"cci_dementia", 4, 1, NULL, "dementia"},
    {"cci_cpd", 5, 1, NULL, "chronic pulmonary disease"},
    {"cci_rheum", 6, 1, NULL, "rheumatic disease"},
    {"cci_pud", 7, 1, NULL, "peptic ulcer disease"},
    {"cci_mild_liver", 8, 1, "cci_mod_liver", "mild liver disease"},
    {"cci_diab", 9, 1, "cci_diab_cc", "diabetes without chronic complication"},
    {"cci_diab_cc", 10, 2, NULL, "diabetes with chronic complication"},
    {"cci_hemi", 11, 2, NULL, "hemiplegia or paraplegia"},
    {"cci_renal", 12, 2, NULL, "renal disease"},
    {"cci_cancer", 13, 2, "cci_mets", "any malignancy, including lymphoma and leukaemia, except malignant neoplasm of skin"},
    {"cci_mod_liver", 14, 3, NULL, "moderate or severe liver disease"},
    {"cci_mets", 15, 6, NULL, "metastatic solid tumour"},
    {"cci_aids", 16, 6, NULL, "AIDS/HIV"},
    {"elix_chf", 17, 0, NULL, "congestive heart failure"},
    {"elix_arrhythmia", 18, 0, NULL, "cardiac arrhythmias"},
    {"elix_valve", 19, 0, NULL, "valvular disease"},
    {"elix_pulm_circ", 20, 0, NULL, "pulmonary circulation disorders"},
    {"elix_pvd", 21, 0, NULL, "peripheral vascular disorders"},
    {"elix_htn_uncx", 22, 0, "elix_htn_cx", "hypertension, uncomplicated"},
    {"elix_htn_cx", 23, 0, NULL, "hypertension, complicated"},
    {"elix_paralysis", 24, 0, NULL, "paralysis"},
    {"elix_neuro_other", 25, 0, NULL, "other neurological disorders"},
    {"elix_cpd", 26, 0, NULL, "chronic pulmonary disease"},
    {"elix_diab_uncx", 27, 0, "elix_diab_cx", "diabetes, uncomplicated"},
    {"elix_diab_cx", 28, 0, NULL, "diabetes, complicated"},
    {"elix_hypothyroid", 29, 0, NULL, "hypothyroidism"},
    {"elix_renal", 30, 0, NULL, "renal failure"},
    {"elix_liver", 31, 0, NULL, "liver disease"},
    {"elix_pud", 32, 0, NULL, "peptic ulcer disease excluding bleeding"},
    {"elix_aids", 33, 0, NULL, "AIDS/HIV"},
    {"elix_lymphoma", 34, 0, NULL, "lymphoma"},
    {"elix_mets", 35, 0, NULL, "metastatic cancer"},
    {"elix_solid_tumor", 36, 0, "elix_mets", "solid tumour without metastasis"},
    {"elix_rheum", 37, 0, NULL, "rheumatoid arthritis/collagen vascular diseases"},
    {"elix_coag", 38, 0, NULL, "coagulopathy"},
    {"elix_obesity", 39, 0, NULL, "obesity"},
    {"elix_weight_loss", 40, 0, NULL, "weight loss"},
    {"elix_fluid_lytes", 41, 0, NULL, "fluid and electrolyte disorders"},
    {"elix_blood_loss_anemia", 42, 0, NULL, "blood loss anaemia"},
    {"elix_deficiency_anemia", 43, 0, NULL, "deficiency anaemias"},
    {"elix_alcohol", 44, 0, NULL, "alcohol abuse"},
    {"elix_drugs", 45, 0, NULL, "drug abuse"},
    {"elix_psychoses", 46, 0, NULL, "psychoses"},
    {"elix_depression", 47, 0, NULL, "depression"},
};
const int feat_comorbs_count = (int)(sizeof feat_comorbs / sizeof feat_comorbs[0]);

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
