/* test_features.c: features/ without a database: the comorbidity expansion of the
 * feature SQL templates (px_feat_expand_sql: the 48 flag columns, the Charlson
 * index and the Elixhauser count with their hierarchies) and the column roles of
 * the built-in sets (px_feat_columns). The Charlson index and Elixhauser count the
 * generated SQL computes are evaluated here, for every single category, every
 * superseded pair and seeded random masks, against an implementation written from
 * the literature (weights: Charlson et al. 1987, kept by Quan et al. 2005; the
 * hierarchy as in the R package 'comorbidity'), not from features' own table.
 * Usage: test_features */
#include "features/internal.h"
#include "tests/unit/check.h"
#include <stdlib.h>

/* ---- the literature --------------------------------------------------------- */

static const struct { const char *col; int weight; } charlson_1987[] = {
    {"cci_mi", 1}, {"cci_chf", 1}, {"cci_pvd", 1}, {"cci_cvd", 1}, {"cci_dementia", 1}, {"cci_cpd", 1},
    {"cci_rheum", 1}, {"cci_pud", 1}, {"cci_mild_liver", 1}, {"cci_diab", 1}, {"cci_diab_cc", 2},
    {"cci_hemi", 2}, {"cci_renal", 2}, {"cci_cancer", 2}, {"cci_mod_liver", 3}, {"cci_mets", 6}, {"cci_aids", 6},
};
#define N_CHARLSON ((int)(sizeof charlson_1987 / sizeof charlson_1987[0]))

/* (less severe, more severe): the first counts 0 when both are present */
static const char *const hierarchy[][2] = {
    {"cci_diab", "cci_diab_cc"}, {"cci_mild_liver", "cci_mod_liver"}, {"cci_cancer", "cci_mets"},
    {"elix_htn_uncx", "elix_htn_cx"}, {"elix_diab_uncx", "elix_diab_cx"}, {"elix_solid_tumor", "elix_mets"},
};
#define N_HIER ((int)(sizeof hierarchy / sizeof hierarchy[0]))

static int bit_of(const char *col)
{
    for (int i = 0; i < feat_comorbs_count; i++)
        if (strcmp(feat_comorbs[i].col, col) == 0) return feat_comorbs[i].bit;
    return -1;
}

static int superseded(const char *col, long long mask)
{
    for (int h = 0; h < N_HIER; h++)
        if (strcmp(hierarchy[h][0], col) == 0) return (mask >> bit_of(hierarchy[h][1])) & 1;
    return 0;
}

static int charlson_expected(long long mask)
{
    int s = 0;
    for (int i = 0; i < N_CHARLSON; i++) {
        int b = bit_of(charlson_1987[i].col);
        if (b >= 0 && ((mask >> b) & 1) && !superseded(charlson_1987[i].col, mask)) s += charlson_1987[i].weight;
    }
    return s;
}

static int elix_expected(long long mask)
{
    int s = 0;
    for (int i = 0; i < feat_comorbs_count; i++) {
        const char *col = feat_comorbs[i].col;
        if (strncmp(col, "elix_", 5) == 0 && ((mask >> feat_comorbs[i].bit) & 1) && !superseded(col, mask)) s++;
    }
    return s;
}

/* ---- the generated SQL, evaluated ----------------------------------------------- */

/* Evaluates "(0 + CASE WHEN (cm & M) <> 0 [AND (cm & M2) = 0] THEN W ELSE 0 END + ...)::smallint"
 * for cm = mask; -1 when the text is not of that form. */
static int eval_score(const char *sql, long long mask)
{
    const char *p = sql;
    if (strncmp(p, "(0", 2) != 0) return -1;
    p += 2;
    int s = 0;
    while (strncmp(p, " + CASE WHEN (cm & ", 19) == 0) {
        long long m1, m2 = 0;
        int w, used = 0;
        p += 19;
        if (sscanf(p, "%lld) <> 0%n", &m1, &used) != 1 || !used) return -1;
        p += used;
        if (strncmp(p, " AND (cm & ", 11) == 0) {
            p += 11;
            used = 0;
            if (sscanf(p, "%lld) = 0%n", &m2, &used) != 1 || !used) return -1;
            p += used;
        }
        used = 0;
        if (sscanf(p, " THEN %d ELSE 0 END%n", &w, &used) != 1 || !used) return -1;
        p += used;
        if ((mask & m1) != 0 && (m2 == 0 || (mask & m2) == 0)) s += w;
    }
    return strcmp(p, ")::smallint") == 0 ? s : -1;
}

static uint64_t rng_state = 20261206;
static long long random_mask(void)
{
    /* each category present with probability about 1/4 */
    uint64_t a = px_splitmix64(&rng_state), b = px_splitmix64(&rng_state);
    return (long long)(a & b & ((1ULL << feat_comorbs_count) - 1));
}

static void check_scores(void)
{
    char *ch = feat_expand_sql("@CHARLSON@"), *el = feat_expand_sql("@ELIXCOUNT@");
    CHECK(ch && el);
    if (!ch || !el) return;
    CHECK_INT(eval_score(ch, 0), 0);
    CHECK_INT(eval_score(el, 0), 0);
    /* every category alone */
    for (int i = 0; i < feat_comorbs_count; i++) {
        long long m = 1LL << feat_comorbs[i].bit;
        CHECK_INT(eval_score(ch, m), charlson_expected(m));
        CHECK_INT(eval_score(el, m), elix_expected(m));
    }
    /* every superseded pair together: only the more severe one counts */
    for (int h = 0; h < N_HIER; h++) {
        long long m = 1LL << bit_of(hierarchy[h][0]) | 1LL << bit_of(hierarchy[h][1]);
        CHECK_INT(eval_score(ch, m), charlson_expected(m));
        CHECK_INT(eval_score(el, m), elix_expected(m));
    }
    /* the examples by hand: diabetes with and without complications = 2; any
     * malignancy with metastases = 6; MI + CHF + mild and severe liver disease = 1 + 1 + 3 */
    CHECK_INT(eval_score(ch, 1LL << bit_of("cci_diab") | 1LL << bit_of("cci_diab_cc")), 2);
    CHECK_INT(eval_score(ch, 1LL << bit_of("cci_cancer") | 1LL << bit_of("cci_mets")), 6);
    CHECK_INT(eval_score(ch, 1LL << bit_of("cci_mi") | 1LL << bit_of("cci_chf") | 1LL << bit_of("cci_mild_liver") |
                                 1LL << bit_of("cci_mod_liver")), 5);
    CHECK_INT(eval_score(el, (1LL << feat_comorbs_count) - 1), 31 - 3);   /* all 31, three superseded */
    CHECK_INT(eval_score(ch, (1LL << feat_comorbs_count) - 1), 1 * 8 + 2 * 3 + 3 + 6 * 2);   /* 8 ones, diab_cc hemi renal, mod_liver, mets aids */
    for (int t = 0; t < 2000; t++) {
        long long m = random_mask();
        CHECK_INT(eval_score(ch, m), charlson_expected(m));
        CHECK_INT(eval_score(el, m), elix_expected(m));
    }
    free(ch);
    free(el);
}

static void check_flags(void)
{
    /* the categories: 17 Charlson, 31 Elixhauser, bit = position, each weight from the literature */
    CHECK_INT(feat_comorbs_count, 48);
    int ncci = 0;
    for (int i = 0; i < feat_comorbs_count; i++) {
        CHECK_INT(feat_comorbs[i].bit, i);
        if (strncmp(feat_comorbs[i].col, "cci_", 4) == 0) ncci++;
    }
    CHECK_INT(ncci, N_CHARLSON);
    for (int i = 0; i < N_CHARLSON; i++) {
        int b = bit_of(charlson_1987[i].col);
        CHECK(b >= 0);
        if (b >= 0) CHECK_INT(feat_comorbs[b].weight, charlson_1987[i].weight);
    }
    /* @FLAGS@: one column per category, in bit order; @FLAGCOLS@ the same from alias f */
    char *fl = feat_expand_sql("SELECT @FLAGS@ FROM x"), *fc = feat_expand_sql("@FLAGCOLS@");
    CHECK(fl && fc);
    if (!fl || !fc) return;
    const char *p = fl, *q = fc;
    for (int i = 0; i < feat_comorbs_count; i++) {
        char want[96];
        snprintf(want, sizeof want, "((cm >> %d) & 1)::smallint AS %s", feat_comorbs[i].bit, feat_comorbs[i].col);
        const char *at = strstr(p, want);
        CHECK(at != NULL);
        if (at) p = at + strlen(want);
        snprintf(want, sizeof want, "f.%s", feat_comorbs[i].col);
        at = strstr(q, want);
        CHECK(at != NULL);
        if (at) q = at + strlen(want);
    }
    CHECK(strncmp(fl, "SELECT ", 7) == 0);
    CHECK_STR(p, " FROM x");
    CHECK_STR(q, "");
    free(fl);
    free(fc);
    /* an '@' that names no placeholder is kept; text without one is unchanged */
    char *lit = feat_expand_sql("a @ b @FOO@ c@");
    CHECK_STR(lit, "a @ b @FOO@ c@");
    free(lit);
    char *empty = feat_expand_sql("");
    CHECK_STR(empty, "");
    free(empty);
}

/* ---- column roles ------------------------------------------------------------------ */

static const feat_col *col_find(const feat_col *c, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(c[i].name, name) == 0) return &c[i];
    return NULL;
}

static void check_roles(void)
{
    CHECK_INT(px_feat_sets_count, 3);
    for (int s = 0; s < px_feat_sets_count; s++) {
        const px_feat_set_info *set = &px_feat_sets[s];
        CHECK(px_feat_set_find(set->name) == set);
        feat_col c[PX_FEAT_MAX_COLS];
        int n = feat_columns(set, c, PX_FEAT_MAX_COLS);
        CHECK(n > 48);
        if (n <= 0) continue;
        /* exactly one key, one group, one time (the set's), one label (the set's) */
        int nrole[6] = {0};
        for (int i = 0; i < n; i++) {
            CHECK(c[i].role >= PX_ROLE_KEY && c[i].role <= PX_ROLE_INFO);
            if (c[i].role >= PX_ROLE_KEY && c[i].role <= PX_ROLE_INFO) nrole[c[i].role]++;
            CHECK(c[i].doc && c[i].doc[0]);
            for (int j = 0; j < i; j++) CHECK(strcmp(c[i].name, c[j].name) != 0);   /* names unique */
        }
        CHECK_INT(nrole[PX_ROLE_KEY], 1);
        CHECK_INT(nrole[PX_ROLE_GROUP], 1);
        CHECK_INT(nrole[PX_ROLE_TIME], 1);
        CHECK_INT(nrole[PX_ROLE_LABEL], 1);
        const feat_col *k = col_find(c, n, "encounter_id"), *g = col_find(c, n, "patient_id");
        const feat_col *t = col_find(c, n, set->time_col), *l = col_find(c, n, set->label);
        CHECK(k && k->role == PX_ROLE_KEY);
        CHECK(g && g->role == PX_ROLE_GROUP);
        CHECK(t && t->role == PX_ROLE_TIME);
        CHECK(l && l->role == PX_ROLE_LABEL && l->kind == PX_COL_NUMERIC);
        /* the other date is descriptive, never the time nor a feature */
        const char *other = strcmp(set->time_col, "discharge_date") == 0 ? "admission_date" : "discharge_date";
        const feat_col *o = col_find(c, n, other);
        CHECK(o && o->role == PX_ROLE_INFO);
        /* every default input is a feature column of the set; nothing known only
         * after the prediction time (the label, LOS at admission) is one */
        for (const char *const *f = set->default_features; *f; f++) {
            const feat_col *x = col_find(c, n, *f);
            CHECK(x != NULL);
            if (x) CHECK_INT(x->role, PX_ROLE_FEATURE);
            CHECK(strcmp(*f, set->label) != 0);
        }
        if (strcmp(set->time_col, "admission_date") == 0) {
            const feat_col *los = col_find(c, n, "los_days");
            CHECK(!los || los->role != PX_ROLE_FEATURE);
            const feat_col *disp = col_find(c, n, "discharge_disposition");
            CHECK(!disp || disp->role != PX_ROLE_FEATURE);
        }
        /* descriptive and after-the-fact columns are never features (leakage, or
         * an adjustment a user must ask for by name) */
        static const char *const info_cols[] = {"facility_id", "department", "sex", "days_to_readmission",
                                                "died_30d_after_discharge", "died_in_hospital", "died_30d"};
        for (size_t i = 0; i < sizeof info_cols / sizeof *info_cols; i++) {
            const feat_col *x = col_find(c, n, info_cols[i]);
            if (x) CHECK_INT(x->role, PX_ROLE_INFO);
        }
        CHECK(col_find(c, n, "sex") && col_find(c, n, "facility_id"));
        /* the comorbidity flags are numeric features */
        for (int i = 0; i < feat_comorbs_count; i++) {
            const feat_col *x = col_find(c, n, feat_comorbs[i].col);
            CHECK(x && x->role == PX_ROLE_FEATURE && x->kind == PX_COL_NUMERIC);
        }
        /* every described column is produced by the set's SQL */
        char *sql = feat_expand_sql(feat_set_sql(set));
        CHECK(sql != NULL);
        for (int i = 0; sql && i < n; i++) {
            if (!strstr(sql, c[i].name)) {
                fprintf(stderr, "set '%s': column '%s' not in its SQL\n", set->name, c[i].name);
                check_failures++;
            }
            check_count++;
        }
        free(sql);
        /* too little room: -1, never a truncated list */
        CHECK_INT(feat_columns(set, c, n - 1), -1);
        CHECK_INT(feat_columns(set, c, 10), -1);
        CHECK_INT(feat_columns(set, c, n), n);
    }
    CHECK(px_feat_set_find("nosuchset") == NULL);
    CHECK(px_feat_set_find(NULL) == NULL);
    /* the readmission set predicts at discharge: LOS and disposition are its features */
    const px_feat_set_info *r = px_feat_set_find("readmission");
    feat_col c[PX_FEAT_MAX_COLS];
    int n = r ? feat_columns(r, c, PX_FEAT_MAX_COLS) : -1;
    const feat_col *los = n > 0 ? col_find(c, n, "los_days") : NULL;
    CHECK(los && los->role == PX_ROLE_FEATURE);
}

int main(void)
{
    check_flags();
    check_scores();
    check_roles();
    return check_report("test_features");
}
