/* test_fhir.c: the FHIR reading rules (engine/fhir.c) and px_feat_from_fhir
 * (features/fhir.c) on a prefetch built by hand, whose every feature is worked
 * out below from the definitions (features/sql/<set>.sql, Quan 2005 codes, Charlson
 * 1987 weights, LACE). The equality with the SQL tables on generated data is
 * tests/integration/features_fhir.sh. */
#include "engine/fhir.h"
#include "features/features.h"
#include "check.h"
#include <stdlib.h>

static cJSON *J(const char *s)
{
    cJSON *v = cJSON_Parse(s);
    if (!v) {
        fprintf(stderr, "bad test JSON: %s\n", s);
        exit(2);
    }
    return v;
}

static void test_refs_dates_codes(void)
{
    char id[64];
    cJSON *r = J("{\"reference\":\"Encounter/e1\"}");
    CHECK_INT(px_fhir_ref(r, "Encounter", id, sizeof id), 1);
    CHECK_STR(id, "e1");
    CHECK_INT(px_fhir_ref(r, "Patient", id, sizeof id), 0);
    cJSON_Delete(r);
    r = J("{\"reference\":\"https://ehr.example/fhir/Patient/p-9/_history/3\"}");
    CHECK_INT(px_fhir_ref(r, "Patient", id, sizeof id), 1);
    CHECK_STR(id, "p-9");
    cJSON_Delete(r);
    r = J("{\"reference\":\"Organization?identifier=https://github.com/synthetichealth/synthea|abc\"}");
    CHECK_INT(px_fhir_ref(r, "Organization", id, sizeof id), 2);
    CHECK_STR(id, "abc");
    cJSON_Delete(r);
    r = J("{\"reference\":\"urn:uuid:1234\"}");
    CHECK_INT(px_fhir_ref(r, NULL, id, sizeof id), 1);
    CHECK_STR(id, "1234");
    cJSON_Delete(r);
    r = J("{\"display\":\"no reference\"}");
    CHECK_INT(px_fhir_ref(r, NULL, id, sizeof id), 0);
    cJSON_Delete(r);

    int d;
    CHECK_INT(px_fhir_date("2020-03-01T23:30:00-05:00", 0, &d), 0); /* the local date, not UTC's */
    CHECK_INT(d, 18322);
    CHECK_INT(px_fhir_date("2020-03", 0, &d), -1);
    CHECK_INT(px_fhir_date("2020-03", 1, &d), 0);
    CHECK_INT(d, 18322);
    CHECK_INT(px_fhir_date("2020-02-30", 0, &d), -1);
    CHECK_INT(px_fhir_year(18322), 2020);

    char sys[8], code[16];
    int valid;
    const char *other;
    cJSON *c = J("{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"84114007\"},"
                 "{\"system\":\"http://hl7.org/fhir/sid/icd-9-cm\",\"code\":\"428.0\"},"
                 "{\"system\":\"http://hl7.org/fhir/sid/icd-10-cm\",\"code\":\"i50.9\"}]}");
    CHECK_INT(px_fhir_icd(c, 0, sys, code, &valid, &other), 0); /* ICD-10-CM first */
    CHECK_STR(sys, "icd10");
    CHECK_STR(code, "I509");
    CHECK_INT(valid, 1);
    cJSON_Delete(c);
    c = J("{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"84114007\"}]}");
    CHECK_INT(px_fhir_icd(c, 0, sys, code, &valid, &other), 1);
    CHECK_STR(other, "http://snomed.info/sct");
    cJSON_Delete(c);
    c = J("{\"coding\":[{\"system\":\"http://hl7.org/fhir/sid/icd-10-cm\",\"code\":\"U07.1X\"}]}");
    CHECK_INT(px_fhir_icd(c, 0, sys, code, &valid, &other), 0);
    CHECK_INT(valid, 0); /* U is not an ICD-10-CM chapter letter here: the loader rejects it */
    cJSON_Delete(c);
    c = J("{\"text\":\"no coding\"}");
    CHECK_INT(px_fhir_icd(c, 0, sys, code, &valid, &other), -1);
    cJSON_Delete(c);
    c = J("{\"coding\":[{\"system\":\"http://www.cms.gov/Medicare/Coding/ICD10\",\"code\":\"02703ZZ\"}]}");
    CHECK_INT(px_fhir_icd(c, 1, sys, code, &valid, &other), 0);
    CHECK_INT(valid, 1);
    cJSON_Delete(c);
}

static void test_encounter_rules(void)
{
    cJSON *e = J("{\"resourceType\":\"Encounter\",\"class\":{\"code\":\"EMER\"},"
                 "\"classHistory\":[{\"class\":{\"code\":\"IMP\"}}]}");
    CHECK_INT(px_fhir_is_stay(e), 1);
    CHECK_STR(px_fhir_admission_type(e), "emergency"); /* no priority: EMER */
    CHECK_STR(px_fhir_admission_source(e), "ed");
    CHECK_STR(px_fhir_disposition(e), "unknown");
    cJSON_Delete(e);
    e = J("{\"class\":{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-ActCode\",\"code\":\"AMB\"}}");
    CHECK_INT(px_fhir_is_stay(e), 0);
    cJSON_Delete(e);
    e = J("{\"class\":{\"code\":\"IMP\"},"
          "\"priority\":{\"coding\":[{\"system\":\"https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit\",\"code\":\"3\"}]},"
          "\"hospitalization\":{\"admitSource\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/admit-source\",\"code\":\"gp\"}]},"
          "\"dischargeDisposition\":{\"coding\":[{\"system\":\"https://www.nubc.org/CodeSystem/PatDischargeStatus\",\"code\":\"06\"}]}},"
          "\"diagnosis\":[{\"condition\":{\"reference\":\"Condition/a\"},\"use\":{\"coding\":[{\"code\":\"AD\"}]}},"
          "{\"condition\":{\"reference\":\"Condition/b\"},\"rank\":2,\"extension\":[{\"url\":\""
          PX_FHIR_EXT_POA "\",\"valueCode\":\"N\"}]}]}");
    CHECK_INT(px_fhir_is_stay(e), 1);
    CHECK_STR(px_fhir_admission_type(e), "elective");
    CHECK_STR(px_fhir_admission_source(e), "physician_referral");
    CHECK_STR(px_fhir_disposition(e), "home_health");
    int rank, adm;
    char poa;
    CHECK_INT(px_fhir_enc_dx(e, "a", &rank, &adm, &poa), 1);
    CHECK_INT(adm, 1);
    CHECK_INT(px_fhir_enc_dx(e, "b", &rank, &adm, &poa), 1);
    CHECK_INT(rank, 2);
    CHECK_INT(adm, 0);
    CHECK_INT(poa, 'N');
    CHECK_INT(px_fhir_enc_dx(e, "z", &rank, &adm, &poa), 0);
    cJSON_Delete(e);
    /* a Prognos code wins over the HL7 one beside it */
    e = J("{\"hospitalization\":{\"dischargeDisposition\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/"
          "discharge-disposition\",\"code\":\"oth\"},{\"system\":\"" PX_FHIR_CS_DISPOSITION "\",\"code\":\"hospice\"}]}}}");
    CHECK_STR(px_fhir_disposition(e), "hospice");
    cJSON_Delete(e);
}

static void test_map(void)
{
    px_err e = {0};
    uint64_t m = 0;
    /* bits: cci_chf 1, cci_diab 9, cci_mets 15, elix_chf 17, elix_diab_uncx 27, elix_mets 35 */
    CHECK_INT(px_feat_comorbidity_mask("icd10", "I509", &m, &e), 0);
    CHECK_INT(m, (1ULL << 1) | (1ULL << 17));
    CHECK_INT(px_feat_comorbidity_mask("icd10", "E119", &m, &e), 0);
    CHECK_INT(m, (1ULL << 9) | (1ULL << 27));
    CHECK_INT(px_feat_comorbidity_mask("icd10", "C780", &m, &e), 0);
    CHECK_INT(m, (1ULL << 15) | (1ULL << 35));
    CHECK_INT(px_feat_comorbidity_mask("icd9", "4280", &m, &e), 0);
    CHECK_INT(m, (1ULL << 1) | (1ULL << 17));
    CHECK_INT(px_feat_comorbidity_mask("icd10", "Z000", &m, &e), 0);
    CHECK_INT(m, 0);
}

#define ENC(id, start, end, src, dx) \
    "{\"resourceType\":\"Encounter\",\"id\":\"" id "\",\"class\":{\"code\":\"IMP\"},\"subject\":{\"reference\":\"Patient/p\"}," \
    "\"period\":{\"start\":\"" start "\"" end "},\"priority\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/" \
    "v3-ActPriority\",\"code\":\"EM\"}]},\"hospitalization\":{\"admitSource\":{\"coding\":[{\"system\":\"http://" \
    "terminology.hl7.org/CodeSystem/admit-source\",\"code\":\"" src "\"}]}}" dx "}"
#define COND(id, enc, code) \
    "{\"resourceType\":\"Condition\",\"id\":\"" id "\",\"subject\":{\"reference\":\"Patient/p\"},\"encounter\":{\"reference\":" \
    "\"Encounter/" enc "\"},\"code\":{\"coding\":[{\"system\":\"http://hl7.org/fhir/sid/icd-10-cm\",\"code\":\"" code "\"}]}}"
#define PROC(id, enc, date) \
    "{\"resourceType\":\"Procedure\",\"id\":\"" id "\",\"status\":\"completed\",\"encounter\":{\"reference\":\"Encounter/" enc \
    "\"},\"code\":{\"coding\":[{\"system\":\"http://www.cms.gov/Medicare/Coding/ICD10\",\"code\":\"0BH17EZ\"}]}," \
    "\"performedDateTime\":\"" date "\"}"

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -999;
}

static void test_features(void)
{
    /* index stay 2020-03-10..15 (emergency, through the ED): I50.9 (POA Y), E11.9 (POA N),
     * an admitting R07.9 (no map); procedures on 03-10 and 03-12. Prior stay 2020-01-05..08
     * through the ED with C78.0; a stay 2019-01-01 (434 days before: outside 365); a
     * later stay 2020-05-01 with J44.9 (ignored); a Condition refuted (ignored). */
    const char *text =
        "{\"patient\":{\"resourceType\":\"Patient\",\"id\":\"p\",\"gender\":\"female\",\"birthDate\":\"1950-06-01\"},"
        "\"encounter\":" ENC("ix", "2020-03-10T08:00:00Z", ",\"end\":\"2020-03-15\"", "emd",
                             ",\"diagnosis\":[{\"condition\":{\"reference\":\"Condition/c1\"},\"rank\":1,\"extension\":[{\"url\":\""
                             PX_FHIR_EXT_POA "\",\"valueCode\":\"Y\"}]},{\"condition\":{\"reference\":\"Condition/c2\"},\"rank\":2,"
                             "\"extension\":[{\"url\":\"" PX_FHIR_EXT_POA "\",\"valueCode\":\"N\"}]},{\"condition\":{\"reference\":"
                             "\"Condition/c0\"},\"use\":{\"coding\":[{\"code\":\"AD\"}]}}]") ","
        "\"encounters\":{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":["
        "{\"resource\":" ENC("pr", "2020-01-05", ",\"end\":\"2020-01-08\"", "emd", "") "},"
        "{\"resource\":" ENC("old", "2019-01-01", ",\"end\":\"2019-01-03\"", "emd", "") "},"
        "{\"resource\":" ENC("later", "2020-05-01", ",\"end\":\"2020-05-03\"", "gp", "") "}]},"
        "\"conditions\":[" COND("c1", "ix", "I50.9") "," COND("c2", "ix", "E11.9") "," COND("c0", "ix", "R07.9") ","
        COND("c3", "pr", "C78.0") "," COND("c4", "later", "J44.9") ","
        "{\"resourceType\":\"Condition\",\"id\":\"c5\",\"verificationStatus\":{\"coding\":[{\"code\":\"refuted\"}]},"
        "\"encounter\":{\"reference\":\"Encounter/ix\"},\"code\":{\"coding\":[{\"system\":\"http://hl7.org/fhir/sid/icd-10-cm\","
        "\"code\":\"B20\"}]}}],"
        "\"procedures\":[" PROC("x1", "ix", "2020-03-10") "," PROC("x2", "ix", "2020-03-12T10:00:00Z") "]}";
    cJSON *pf = J(text);
    px_err e = {0};
    cJSON *r = px_feat_from_fhir(pf, "readmission", NULL, &e);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(num(r, "age_years"), 70);
        CHECK_INT(num(r, "female"), 1);
        CHECK_INT(num(r, "emergency"), 1);
        CHECK_STR(cJSON_GetObjectItem(r, "admission_source")->valuestring, "ed");
        CHECK_INT(num(r, "los_days"), 5);
        CHECK_INT(num(r, "prior_adm_6m"), 1);
        CHECK_INT(num(r, "prior_adm_12m"), 1);
        CHECK_INT(num(r, "ed_visits_6m"), 1);
        CHECK_INT(num(r, "cci_chf"), 1);
        CHECK_INT(num(r, "cci_diab"), 1);   /* at discharge every code counts */
        CHECK_INT(num(r, "cci_mets"), 1);   /* the prior stay's, discharged before */
        CHECK_INT(num(r, "cci_cpd"), 0);    /* the later stay's J44.9 */
        CHECK_INT(num(r, "cci_aids"), 0);   /* refuted */
        CHECK_INT(num(r, "charlson_index"), 8);          /* 1 + 1 + 6 */
        CHECK_INT(num(r, "elix_count"), 3);              /* chf, diab_uncx, mets */
        CHECK_INT(num(r, "n_diagnoses"), 2);             /* not the admitting */
        CHECK_INT(num(r, "n_procedures"), 2);
        CHECK_INT(num(r, "lace_score"), 4 + 3 + 5 + 1);  /* LOS 4-6 days, emergency, Charlson >= 4, 1 ED visit */
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(r, "cc_chf")));
        CHECK(cJSON_GetObjectItem(r, "readmit_30d") == NULL); /* a label, never a feature */
        CHECK_INT(cJSON_GetArraySize(r), 75); /* 5 + 48 flags + 2 scores + 5 counts + 12 cc_* + los, disposition, LACE */
    }
    cJSON_Delete(r);
    r = px_feat_from_fhir(pf, "mortality", NULL, &e);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(num(r, "cci_diab"), 0); /* POA N: not known at admission */
        CHECK_INT(num(r, "cci_chf"), 1);
        CHECK_INT(num(r, "cci_mets"), 1);
        CHECK_INT(num(r, "charlson_index"), 7);
        CHECK_INT(num(r, "n_diagnoses"), 1);
        CHECK_INT(num(r, "n_procedures"), 1); /* on the admission day */
        CHECK(cJSON_GetObjectItem(r, "los_days") == NULL);
    }
    cJSON_Delete(r);
    /* the stay being discharged: no end, the prediction time stands in */
    cJSON *enc = cJSON_GetObjectItem(pf, "encounter");
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(enc, "period"), "end");
    r = px_feat_from_fhir(pf, "readmission", NULL, &e);
    CHECK(r == NULL && e.code == PX_EINVAL && strstr(e.msg, "period.end"));
    r = px_feat_from_fhir(pf, "readmission", "2020-03-17", &e);
    CHECK(r != NULL);
    if (r) CHECK_INT(num(r, "los_days"), 7);
    cJSON_Delete(r);
    r = px_feat_from_fhir(pf, "nope", NULL, &e);
    CHECK(r == NULL && e.code == PX_EINVAL);
    cJSON_Delete(pf);
}

int main(void)
{
    test_refs_dates_codes();
    test_encounter_rules();
    test_map();
    test_features();
    return check_report("test_fhir");
}
