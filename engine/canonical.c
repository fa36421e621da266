/* canonical.c: the canonical CSV layout, column by column.
 * This one table drives the loader's header checks and validation, the
 * generator's output and `prognos etl layout`. Change it and both follow. */
#include "engine/internal.h"
#include <string.h>

static const char *const sex_v[] = {"M", "F", "U", NULL};
static const char *const fac_type_v[] = {"acute", "critical_access", "rehab", "psychiatric",
                                         "long_term", "other", NULL};
static const char *const adm_type_v[] = {"emergency", "urgent", "elective", "newborn",
                                         "trauma", "observation", "unknown", NULL};
static const char *const adm_src_v[] = {"ed", "physician_referral", "clinic", "transfer_hospital",
                                        "transfer_snf", "other", "unknown", NULL};
static const char *const disp_v[] = {"home", "home_health", "snf", "rehab", "long_term",
                                     "transfer_acute", "ama", "hospice", "expired", "other",
                                     "unknown", NULL};
static const char *const code_sys_v[] = {"icd10", "icd9", NULL};
static const char *const poa_v[] = {"Y", "N", "U", "W", NULL};

#define COL(n, t, r, doc) {n, t, r, PX_ID_PATIENT, NULL, doc}
#define IDC(n, k, r, doc) {n, PX_T_IDENT, r, k, NULL, doc}
#define ENU(n, v, r, doc) {n, PX_T_ENUM, r, PX_ID_PATIENT, v, doc}

static const px_col facilities[] = {
    COL("facility_id", PX_T_KEY, true, "hospital identifier, e.g. the CMS certification number"),
    COL("name", PX_T_TEXT, true, "hospital name"),
    ENU("type", fac_type_v, true, "kind of hospital"),
    COL("state", PX_T_TEXT, false, "two-letter state code"),
    COL("beds", PX_T_INT, false, "staffed beds, 1-5000"),
};
static const px_col providers[] = {
    COL("provider_id", PX_T_KEY, true, "clinician identifier (NPI)"),
    COL("name", PX_T_TEXT, false, "clinician's name (a professional, not a patient: kept)"),
    COL("specialty", PX_T_TEXT, false, "e.g. internal_medicine, cardiology"),
    COL("facility_id", PX_T_KEY, false, "main facility, from facilities.csv"),
};
static const px_col patients[] = {
    IDC("patient_id", PX_ID_PATIENT, true, "enterprise patient key; pseudonymized"),
    IDC("mrn", PX_ID_MRN, false, "medical record number; pseudonymized"),
    IDC("ssn", PX_ID_SSN, false, "social security number; pseudonymized"),
    IDC("first_name", PX_ID_NAME, false, "pseudonymized"),
    IDC("last_name", PX_ID_NAME, false, "pseudonymized"),
    COL("birth_date", PX_T_PDATE, true, "YYYY-MM-DD, YYYY-MM or YYYY; only the year is stored"),
    ENU("sex", sex_v, true, "M, F or U"),
    COL("zip", PX_T_TEXT, false, "5-digit ZIP (or ZIP+4); only the 3-digit prefix is stored"),
    IDC("phone", PX_ID_PHONE, false, "pseudonymized"),
    IDC("email", PX_ID_EMAIL, false, "pseudonymized"),
    COL("death_date", PX_T_DATE, false, "YYYY-MM-DD if known to have died"),
};
static const px_col encounters[] = {
    IDC("encounter_id", PX_ID_ENCOUNTER, true, "hospital account / encounter number; pseudonymized"),
    IDC("patient_id", PX_ID_PATIENT, true, "from patients.csv (this batch or loaded before)"),
    COL("facility_id", PX_T_KEY, true, "from facilities.csv"),
    COL("attending_id", PX_T_KEY, false, "attending clinician, from providers.csv"),
    COL("admission_date", PX_T_DATE, true, "YYYY-MM-DD"),
    COL("discharge_date", PX_T_DATE, true, "YYYY-MM-DD, not before admission; length of stay 0-365 days"),
    ENU("admission_type", adm_type_v, true, "how urgent the admission was"),
    ENU("admission_source", adm_src_v, true, "where the patient came from"),
    ENU("discharge_disposition", disp_v, true, "where the patient went; expired = died in hospital"),
    COL("department", PX_T_TEXT, false, "discharging department or service line"),
    COL("drg", PX_T_TEXT, false, "MS-DRG code"),
    COL("total_cost", PX_T_NUM, false, "cost of the stay in dollars, 0-10,000,000; empty or no column: "
                                      "unknown (cost KPIs leave the stay out)"),
};
static const px_col diagnoses[] = {
    IDC("encounter_id", PX_ID_ENCOUNTER, true, "from encounters.csv"),
    COL("seq", PX_T_INT, true, "position: 0 = admitting, 1 = principal, 2-99 secondary"),
    ENU("code_system", code_sys_v, true, "icd10 (ICD-10-CM) or icd9 (ICD-9-CM)"),
    COL("code", PX_T_CODE, true, "with or without the dot, e.g. I50.9 or I509"),
    ENU("present_on_admission", poa_v, false, "POA indicator"),
};
static const px_col procedures[] = {
    IDC("encounter_id", PX_ID_ENCOUNTER, true, "from encounters.csv"),
    COL("seq", PX_T_INT, true, "position, 1 = principal procedure, 1-99"),
    ENU("code_system", code_sys_v, true, "icd10 (ICD-10-PCS) or icd9 (ICD-9-CM volume 3)"),
    COL("code", PX_T_CODE, true, "e.g. 02703ZZ or 36.06"),
    COL("procedure_date", PX_T_DATE, false, "YYYY-MM-DD"),
};

#define TAB(n, a, d) {n, n ".csv", a, (int)(sizeof a / sizeof a[0]), d}
const px_table px_canonical[PX_TAB__COUNT] = {
    TAB("facilities", facilities, "one row per hospital"),
    TAB("providers", providers, "one row per clinician"),
    TAB("patients", patients, "one row per patient"),
    TAB("encounters", encounters, "one row per inpatient stay"),
    TAB("diagnoses", diagnoses, "one row per diagnosis code of a stay"),
    TAB("procedures", procedures, "one row per procedure code of a stay"),
};

int px_canonical_col(const px_table *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0) return i;
    return -1;
}
