/* sets.c: the three built-in feature sets (readmission, mortality, los): their
 * names, labels, prediction times, default model inputs and documentation, and
 * the role, kind and meaning of every column of their tables (recorded in
 * features.catalog at each build). Column order here is the table's order. */
#include "features/internal.h"
#include <string.h>

/* Defaults for the built-in models: demographics, acuity, utilisation and the
 * comorbidities common enough to estimate. No exact collinearity: female but not
 * sex, emergency but not admission_type (emergency is one of its levels), Charlson
 * flags but not charlson_index (a weighted sum of them) nor the Elixhauser flags
 * that duplicate a Charlson one (chf, cpd, renal, diabetes, liver, cancer), no LACE
 * (a function of los_days, emergency, the flags and ed_visits_6m). The SynPUF
 * chronic-condition flags are left out: NULL outside SynPUF. */
static const char *const readmission_defaults[] = {
    "age_years", "female", "emergency", "admission_source", "los_days", "discharge_disposition",
    "prior_adm_6m", "prior_adm_12m", "ed_visits_6m", "n_diagnoses", "n_procedures",
    "cci_mi", "cci_chf", "cci_cvd", "cci_dementia", "cci_cpd", "cci_mild_liver", "cci_diab", "cci_renal",
    "cci_cancer", "cci_mets", "elix_arrhythmia", "elix_htn_cx", "elix_fluid_lytes", "elix_depression",
    "elix_obesity", NULL};
/* At admission: no length of stay or disposition, and no procedure count (most
 * procedures come after the admission). */
static const char *const admission_defaults[] = {
    "age_years", "female", "emergency", "admission_source",
    "prior_adm_6m", "prior_adm_12m", "ed_visits_6m", "n_diagnoses",
    "cci_mi", "cci_chf", "cci_cvd", "cci_dementia", "cci_cpd", "cci_mild_liver", "cci_diab", "cci_renal",
    "cci_cancer", "cci_mets", "elix_arrhythmia", "elix_htn_cx", "elix_fluid_lytes", "elix_depression",
    "elix_obesity", NULL};

const px_feat_set_info px_feat_sets[] = {
    {"readmission", "features.readmission", "readmit_30d", 1, "discharge_date", readmission_defaults,
     "30-day all-cause readmission, predicted at discharge. One row per stay discharged alive (disposition not "
     "expired), not transferred to another acute hospital (transfer_acute), not left against medical advice (ama), "
     "with 30 days of follow-up in the data: discharge_date + 30 <= the last admission date of the stay's source (etl format) in the warehouse. "
     "readmit_30d = 1 when the patient has another admission, at any facility, 1-30 days after discharge. All-cause: "
     "planned readmissions are not removed, because the CMS planned-readmission algorithm needs procedure-category "
     "maps (AHRQ CCS) we do not have. Deaths after discharge are not excluded (died_30d_after_discharge tells them). "
     "Features use everything known at discharge: all diagnoses of the stay and of the patient's stays admitted "
     "1-365 days before (and discharged by this discharge), prior admissions in 6 and 12 months, LOS, disposition "
     "and the LACE index (van Walraven 2010)."},
    {"mortality", "features.mortality", "death_30d", 1, "admission_date", admission_defaults,
     "30-day all-cause mortality, predicted at admission. One row per stay with 30 days of follow-up in the data: "
     "admission_date + 30 <= the last admission date of the stay's source (etl format) in the warehouse. death_30d = 1 when the patient's death date "
     "is 0-30 days after the admission (in hospital or after). Features are what is known at admission: "
     "comorbidities from the stay's diagnoses present on admission (POA not 'N'; NULL, Y, U and W count) and from "
     "the stays admitted 1-365 days before and discharged by this admission; no LOS, disposition or LACE."},
    {"los", "features.los", "los_days", 0, "admission_date", admission_defaults,
     "Length of stay in days (discharge_date - admission_date), predicted at admission. One row per stay "
     "discharged alive (disposition not expired: a death cuts a stay short). Features as for mortality: what is "
     "known at admission. los_days is a count: model los_days - 1 (or los_days) with a Poisson or negative "
     "binomial GLM."},
};
const int px_feat_sets_count = (int)(sizeof px_feat_sets / sizeof px_feat_sets[0]);

const px_feat_set_info *px_feat_set_find(const char *name)
{
    if (!name) return NULL;
    for (int i = 0; i < px_feat_sets_count; i++)
        if (strcmp(px_feat_sets[i].name, name) == 0) return &px_feat_sets[i];
    return NULL;
}

const char *feat_set_sql(const px_feat_set_info *s)
{
    if (strcmp(s->name, "readmission") == 0) return feat_sql_readmission;
    if (strcmp(s->name, "mortality") == 0) return feat_sql_mortality;
    if (strcmp(s->name, "los") == 0) return feat_sql_los;
    return NULL;
}

#define N PX_COL_NUMERIC
#define C PX_COL_CATEGORICAL

/* cols_head: admission_date and discharge_date get their role from the set */
static const feat_col cols_head[] = {
    {"encounter_id", PX_ROLE_KEY, C, "the stay (pseudonym)"},
    {"patient_id", PX_ROLE_GROUP, C, "the patient (pseudonym): for grouped holdouts, never a feature"},
    {"facility_id", PX_ROLE_INFO, C, "the hospital (provider number); request it explicitly to adjust for hospitals"},
    {"department", PX_ROLE_INFO, C, "discharging department or service line (empty for SynPUF)"},
    {"admission_date", PX_ROLE_INFO, N, "admission date"},
    {"discharge_date", PX_ROLE_INFO, N, "discharge date"},
    {"sex", PX_ROLE_INFO, C, "F, M or U: for subgroup reports (the model input is female)"},
    {"age_years", PX_ROLE_FEATURE, N,
     "year of admission - birth year (the warehouse keeps only the birth year, as the generator's covariate)"},
    {"female", PX_ROLE_FEATURE, N, "1 if sex = F, else 0"},
    {"admission_type", PX_ROLE_FEATURE, C, "emergency, urgent, elective, newborn, trauma, observation or unknown"},
    {"admission_source", PX_ROLE_FEATURE, C, "ed, physician_referral, clinic, transfer_hospital, transfer_snf, other or unknown"},
    {"emergency", PX_ROLE_FEATURE, N, "1 if admission_type = emergency, else 0"},
};

static const feat_col cols_scores_dis[] = {
    {"charlson_index", PX_ROLE_FEATURE, N,
     "Charlson index (Quan 2005 codes, Charlson 1987 weights) over the flags, with the hierarchy: complicated over "
     "uncomplicated diabetes, severe over mild liver disease, metastatic over any malignancy"},
    {"elix_count", PX_ROLE_FEATURE, N,
     "number of Elixhauser categories present, complicated over uncomplicated diabetes and hypertension, metastatic "
     "over solid tumour"},
};

static const feat_col cols_util_dis[] = {
    {"prior_adm_6m", PX_ROLE_FEATURE, N, "the patient's admissions 1-182 days before this admission, capped at 5"},
    {"prior_adm_12m", PX_ROLE_FEATURE, N, "the patient's admissions 1-365 days before this admission, capped at 5"},
    {"ed_visits_6m", PX_ROLE_FEATURE, N,
     "prior admissions 1-182 days before this one that came through the emergency department (admission_source = "
     "ed), capped at 4: the warehouse holds inpatient stays only, so ED visits that did not lead to admission are "
     "not seen"},
    {"n_diagnoses", PX_ROLE_FEATURE, N, "diagnosis codes of this stay (principal and secondary; not the admitting, seq 0)"},
    {"n_procedures", PX_ROLE_FEATURE, N, "procedure codes of this stay"},
};
static const feat_col cols_util_adm[] = {
    {"prior_adm_6m", PX_ROLE_FEATURE, N, "the patient's admissions 1-182 days before this admission, capped at 5"},
    {"prior_adm_12m", PX_ROLE_FEATURE, N, "the patient's admissions 1-365 days before this admission, capped at 5"},
    {"ed_visits_6m", PX_ROLE_FEATURE, N,
     "prior admissions 1-182 days before this one that came through the emergency department (admission_source = "
     "ed), capped at 4: the warehouse holds inpatient stays only, so ED visits that did not lead to admission are "
     "not seen"},
    {"n_diagnoses", PX_ROLE_FEATURE, N,
     "diagnosis codes of this stay present on admission (POA not N; principal and secondary, not the admitting, seq 0)"},
    {"n_procedures", PX_ROLE_FEATURE, N,
     "procedure codes of this stay dated on the admission day (0 when the source has no procedure dates, as SynPUF)"},
};

/* SynPUF's chronic-condition flags summarise the beneficiary's claims of the whole
 * calendar year, so the flag of the admission year may reflect claims after the
 * stay: not strictly point in time, which is why no default model uses them. */
static const feat_col cols_cc[] = {
    {"cc_alzheimer", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): Alzheimer's or related; NULL when the source has none"},
    {"cc_chf", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): heart failure; NULL when the source has none"},
    {"cc_chronic_kidney", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): chronic kidney disease; NULL when the source has none"},
    {"cc_cancer", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): cancer; NULL when the source has none"},
    {"cc_copd", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): COPD; NULL when the source has none"},
    {"cc_depression", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): depression; NULL when the source has none"},
    {"cc_diabetes", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): diabetes; NULL when the source has none"},
    {"cc_ischemic_heart", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): ischemic heart disease; NULL when the source has none"},
    {"cc_osteoporosis", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): osteoporosis; NULL when the source has none"},
    {"cc_ra_oa", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): rheumatoid arthritis or osteoarthritis; NULL when the source has none"},
    {"cc_stroke_tia", PX_ROLE_FEATURE, N, "SynPUF chronic condition of the admission year (the whole year: may reflect later claims): stroke or TIA; NULL when the source has none"},
    {"cc_esrd", PX_ROLE_FEATURE, N, "SynPUF end-stage renal disease indicator of the admission year (the whole year: may reflect later claims); NULL when the source has none"},
};

static const feat_col cols_readmission[] = {
    {"los_days", PX_ROLE_FEATURE, N, "length of stay: discharge_date - admission_date"},
    {"discharge_disposition", PX_ROLE_FEATURE, C, "home, home_health, snf, rehab, long_term, hospice, other or unknown"},
    {"lace_score", PX_ROLE_FEATURE, N,
     "LACE index (van Walraven 2010): LOS points (0 for <1 day, 1-3 for 1-3 days, 4 for 4-6, 5 for 7-13, 7 for 14+) + 3 "
     "for an emergency admission + Charlson index (5 for 4 or more) + ed_visits_6m"},
    {"readmit_30d", PX_ROLE_LABEL, N, "1 if the patient has another admission 1-30 days after discharge, at any facility"},
    {"days_to_readmission", PX_ROLE_INFO, N, "days from discharge to the first admission 1-30 days after it; NULL when none"},
    {"died_30d_after_discharge", PX_ROLE_INFO, N, "1 if the death date is 0-30 days after discharge"},
};
static const feat_col cols_mortality[] = {
    {"death_30d", PX_ROLE_LABEL, N, "1 if the patient died 0-30 days after admission, in hospital or after discharge"},
    {"died_in_hospital", PX_ROLE_INFO, N, "1 if the stay ended in death (disposition expired, or death date within the stay)"},
};
static const feat_col cols_los[] = {
    {"los_days", PX_ROLE_LABEL, N, "length of stay: discharge_date - admission_date"},
    {"died_30d", PX_ROLE_INFO, N, "1 if the patient died 0-30 days after admission (after discharge: the stay was alive)"},
};

#undef N
#undef C

static int add(feat_col *out, int n, int max, const feat_col *src, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (n >= max) return -1;
        out[n++] = src[i];
    }
    return n;
}

int feat_columns(const px_feat_set_info *s, feat_col *out, int max)
{
    int dis = strcmp(s->time_col, "discharge_date") == 0;
    int n = add(out, 0, max, cols_head, sizeof cols_head / sizeof cols_head[0]);
    for (int i = 0; n >= 0 && i < n; i++)
        if (strcmp(out[i].name, s->time_col) == 0) out[i].role = PX_ROLE_TIME;
    for (int i = 0; n >= 0 && i < feat_comorbs_count; i++) {
        if (n >= max) return -1;
        out[n].name = feat_comorbs[i].col;
        out[n].role = PX_ROLE_FEATURE;
        out[n].kind = PX_COL_NUMERIC;
        out[n].doc = feat_comorbs[i].label;
        n++;
    }
    if (n >= 0) n = add(out, n, max, cols_scores_dis, sizeof cols_scores_dis / sizeof cols_scores_dis[0]);
    if (n >= 0) n = dis ? add(out, n, max, cols_util_dis, sizeof cols_util_dis / sizeof cols_util_dis[0])
                        : add(out, n, max, cols_util_adm, sizeof cols_util_adm / sizeof cols_util_adm[0]);
    if (n >= 0) n = add(out, n, max, cols_cc, sizeof cols_cc / sizeof cols_cc[0]);
    if (n < 0) return -1;
    if (strcmp(s->name, "readmission") == 0)
        n = add(out, n, max, cols_readmission, sizeof cols_readmission / sizeof cols_readmission[0]);
    else if (strcmp(s->name, "mortality") == 0)
        n = add(out, n, max, cols_mortality, sizeof cols_mortality / sizeof cols_mortality[0]);
    else
        n = add(out, n, max, cols_los, sizeof cols_los / sizeof cols_los[0]);
    return n;
}
