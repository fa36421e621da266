/* fhir.c: the FHIR R4 reading rules shared by the loader, the generator's FHIR
 * writer and the features computed from a prefetch (see fhir.h). */
#include "engine/fhir.h"
#include "engine/internal.h"
#include <stdio.h>
#include <string.h>

const char *px_fhir_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int px_fhir_ref(const cJSON *reference, const char *type, char *out, size_t len)
{
    const char *r = px_fhir_str(reference, "reference");
    if (!r || !*r || len == 0) return 0;
    out[0] = '\0';
    if (strncmp(r, "urn:uuid:", 9) == 0) {
        if (!r[9] || strlen(r + 9) >= len) return 0;
        snprintf(out, len, "%s", r + 9);
        return 1;
    }
    const char *q = strchr(r, '?');
    if (q) { /* Type?identifier=system|value */
        if (type && ((size_t)(q - r) != strlen(type) || strncmp(r, type, strlen(type)) != 0)) return 0;
        const char *id = strstr(q, "identifier=");
        if (!id) return 0;
        id += 11;
        const char *bar = strchr(id, '|');
        const char *v = bar ? bar + 1 : id;
        size_t n = strcspn(v, "&");
        if (n == 0 || n >= len) return 0;
        memcpy(out, v, n);
        out[n] = '\0';
        return 2;
    }
    /* [base/]Type/id[/_history/n] */
    char buf[512];
    if (strlen(r) >= sizeof buf) return 0;
    snprintf(buf, sizeof buf, "%s", r);
    char *h = strstr(buf, "/_history/");
    if (h) *h = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash || !slash[1]) return 0;
    *slash = '\0';
    const char *t = strrchr(buf, '/');
    t = t ? t + 1 : buf;
    if (type && strcmp(t, type) != 0) return 0;
    if (strlen(slash + 1) >= len) return 0;
    snprintf(out, len, "%s", slash + 1);
    return 1;
}

int px_fhir_date(const char *s, int partial, int *days)
{
    if (!s) return -1;
    size_t n = strlen(s);
    if (n >= 10 && (n == 10 || s[10] == 'T')) return px_date_parse_iso(s, 10, days);
    if (partial && (n == 4 || n == 7)) return px_date_parse_partial(s, n, days);
    return -1;
}

int px_fhir_year(int days) { return px_date_year(days); }

static int icd_of(const char *system, int procedure)
{
    if (!system) return 0;
    if (strcmp(system, procedure ? PX_FHIR_ICD10PCS : PX_FHIR_ICD10CM) == 0) return 10;
    if (strcmp(system, PX_FHIR_ICD9CM) == 0) return 9;
    return 0;
}

int px_fhir_icd(const cJSON *concept, int procedure, char sys[8], char code[16], int *valid, const char **other)
{
    const cJSON *codings = cJSON_GetObjectItemCaseSensitive(concept, "coding"), *c;
    const cJSON *best = NULL;
    int best_v = 0, any = 0;
    if (other) *other = NULL;
    cJSON_ArrayForEach(c, codings) {
        const char *system = px_fhir_str(c, "system"), *v = px_fhir_str(c, "code");
        if (!v) continue;
        any = 1;
        int k = icd_of(system, procedure);
        if (k > best_v) best = c, best_v = k;
        else if (!k && other && !*other) *other = system ? system : "(no system)";
    }
    if (!best) return any ? 1 : -1;
    const char *v = px_fhir_str(best, "code");
    size_t len = strlen(v);
    snprintf(sys, 8, "%s", best_v == 10 ? "icd10" : "icd9");
    if (px_icd_normalize(v, len, code) < 0) {
        snprintf(code, 16, "%.15s", v);
        *valid = 0;
        return 0;
    }
    size_t cl = strlen(code);
    if (procedure) *valid = best_v == 10 ? px_icd10_pcs_valid(code, cl) : px_icd9_px_valid(code, cl);
    else *valid = best_v == 10 ? px_icd10_dx_valid(code, cl) : px_icd9_dx_valid(code, cl);
    return 0;
}

/* ---- encounters ---------------------------------------------------------- */

static const char *class_code(const cJSON *coding)
{
    const char *sys = px_fhir_str(coding, "system");
    if (sys && strcmp(sys, PX_FHIR_HL7_ACTCODE) != 0) return NULL;
    return px_fhir_str(coding, "code");
}

static int inpatient_code(const char *c) { return c && (strcmp(c, "IMP") == 0 || strcmp(c, "ACUTE") == 0); }

static int is_emer(const cJSON *enc)
{
    const char *c = class_code(cJSON_GetObjectItemCaseSensitive(enc, "class"));
    return c && strcmp(c, "EMER") == 0;
}

int px_fhir_is_stay(const cJSON *enc)
{
    const char *c = class_code(cJSON_GetObjectItemCaseSensitive(enc, "class"));
    if (inpatient_code(c)) return 1;
    if (!c || strcmp(c, "EMER") != 0) return 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(enc, "classHistory"))
        if (inpatient_code(class_code(cJSON_GetObjectItemCaseSensitive(h, "class")))) return 1;
    return 0;
}

typedef struct code_map { const char *from, *to; } code_map;

/* The canonical value of a CodeableConcept: a Prognos code that is one of the
 * allowed values, else the first mapped code of the other systems, else NULL. */
static const char *concept_value(const cJSON *concept, const char *px_system, const char *const *allowed,
                                 const char *sys1, const code_map *m1, const char *sys2, const code_map *m2)
{
    const cJSON *c;
    const char *found = NULL;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(concept, "coding")) {
        const char *sys = px_fhir_str(c, "system"), *code = px_fhir_str(c, "code");
        if (!sys || !code) continue;
        if (strcmp(sys, px_system) == 0) {
            for (int i = 0; allowed[i]; i++)
                if (strcmp(code, allowed[i]) == 0) return allowed[i];
            continue;
        }
        for (int k = 0; k < 2 && !found; k++) {
            const char *s = k ? sys2 : sys1;
            const code_map *m = k ? m2 : m1;
            if (!s || strcmp(sys, s) != 0) continue;
            for (int i = 0; m[i].from; i++)
                if (strcmp(code, m[i].from) == 0) {
                    found = m[i].to;
                    break;
                }
        }
    }
    return found;
}

static const char *const adm_type_v[] = {"emergency", "urgent", "elective", "newborn", "trauma", "observation",
                                         "unknown", NULL};
static const code_map nubc_priority[] = {{"1", "emergency"}, {"2", "urgent"}, {"3", "elective"}, {"4", "newborn"},
                                         {"5", "trauma"}, {"9", "unknown"}, {NULL, NULL}};
static const code_map act_priority[] = {{"EM", "emergency"}, {"UR", "urgent"}, {"EL", "elective"}, {NULL, NULL}};

const char *px_fhir_admission_type(const cJSON *enc)
{
    const char *v = concept_value(cJSON_GetObjectItemCaseSensitive(enc, "priority"), PX_FHIR_CS_ADMIT_TYPE,
                                  adm_type_v, PX_FHIR_NUBC_PRIORITY, nubc_priority, PX_FHIR_HL7_PRIORITY,
                                  act_priority);
    return v ? v : is_emer(enc) ? "emergency" : "unknown";
}

static const char *const adm_src_v[] = {"ed", "physician_referral", "clinic", "transfer_hospital", "transfer_snf",
                                        "other", "unknown", NULL};
static const code_map hl7_admit[] = {{"emd", "ed"}, {"gp", "physician_referral"}, {"mp", "physician_referral"},
                                     {"outp", "clinic"}, {"hosp-trans", "transfer_hospital"},
                                     {"psych", "transfer_hospital"}, {"rehab", "transfer_hospital"},
                                     {"nursing", "transfer_snf"}, {"born", "other"}, {"other", "other"},
                                     {NULL, NULL}};

const char *px_fhir_admission_source(const cJSON *enc)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(enc, "hospitalization");
    const char *v = concept_value(cJSON_GetObjectItemCaseSensitive(h, "admitSource"), PX_FHIR_CS_ADMIT_SOURCE,
                                  adm_src_v, PX_FHIR_HL7_ADMIT_SOURCE, hl7_admit, NULL, NULL);
    return v ? v : is_emer(enc) ? "ed" : "unknown";
}

static const char *const disp_v[] = {"home", "home_health", "snf", "rehab", "long_term", "transfer_acute", "ama",
                                     "hospice", "expired", "other", "unknown", NULL};
static const code_map nubc_disch[] = {{"01", "home"}, {"06", "home_health"}, {"03", "snf"}, {"62", "rehab"},
                                      {"63", "long_term"}, {"02", "transfer_acute"}, {"07", "ama"},
                                      {"50", "hospice"}, {"51", "hospice"}, {"20", "expired"}, {NULL, NULL}};
static const code_map hl7_disch[] = {{"home", "home"}, {"alt-home", "home"}, {"snf", "snf"}, {"rehab", "rehab"},
                                     {"long", "long_term"}, {"hosp", "transfer_acute"}, {"aadvice", "ama"},
                                     {"exp", "expired"}, {"other-hcf", "other"}, {"psy", "other"},
                                     {"oth", "other"}, {NULL, NULL}};

const char *px_fhir_disposition(const cJSON *enc)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(enc, "hospitalization");
    const char *v = concept_value(cJSON_GetObjectItemCaseSensitive(h, "dischargeDisposition"),
                                  PX_FHIR_CS_DISPOSITION, disp_v, PX_FHIR_NUBC_DISCHARGE, nubc_disch,
                                  PX_FHIR_HL7_DISPOSITION, hl7_disch);
    return v ? v : "unknown";
}

static const char *reverse(const code_map *m, const char *v)
{
    for (int i = 0; m[i].from; i++)
        if (strcmp(m[i].to, v) == 0) return m[i].from;
    return NULL;
}

const char *px_fhir_hl7_priority(const char *t) { return reverse(act_priority, t); }
const char *px_fhir_hl7_admit_source(const char *s) { return reverse(hl7_admit, s); }
const char *px_fhir_hl7_disposition(const char *d) { return reverse(hl7_disch, d); }

int px_fhir_enc_dx(const cJSON *enc, const char *cond_id, int *rank, int *admitting, char *poa)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(enc, "diagnosis")) {
        char id[256];
        if (px_fhir_ref(cJSON_GetObjectItemCaseSensitive(d, "condition"), "Condition", id, sizeof id) != 1 ||
            strcmp(id, cond_id) != 0)
            continue;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(d, "rank");
        *rank = cJSON_IsNumber(r) && r->valuedouble >= 1 && r->valuedouble <= 1e6 ? (int)r->valuedouble : 0;
        *admitting = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(d, "use"), "coding")) {
            const char *code = px_fhir_str(c, "code");
            if (code && strcmp(code, "AD") == 0 && *rank == 0) *admitting = 1;
        }
        *poa = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(d, "extension")) {
            const char *url = px_fhir_str(x, "url"), *v = px_fhir_str(x, "valueCode");
            if (url && v && strcmp(url, PX_FHIR_EXT_POA) == 0 && strlen(v) == 1 && strchr("YNUW", v[0]))
                *poa = v[0];
        }
        return 1;
    }
    *rank = *admitting = 0;
    *poa = 0;
    return 0;
}

static int has_code(const cJSON *concept, const char *a, const char *b)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(concept, "coding")) {
        const char *code = px_fhir_str(c, "code");
        if (code && (strcmp(code, a) == 0 || (b && strcmp(code, b) == 0))) return 1;
    }
    return 0;
}

int px_fhir_usable(const cJSON *res)
{
    const char *t = px_fhir_str(res, "resourceType");
    if (t && strcmp(t, "Condition") == 0)
        return !has_code(cJSON_GetObjectItemCaseSensitive(res, "verificationStatus"), "entered-in-error", "refuted");
    if (t && strcmp(t, "Procedure") == 0) {
        const char *st = px_fhir_str(res, "status");
        return !(st && (strcmp(st, "entered-in-error") == 0 || strcmp(st, "not-done") == 0));
    }
    return 1;
}

int px_fhir_procedure_date(const cJSON *proc, int *days)
{
    const char *s = px_fhir_str(proc, "performedDateTime");
    if (!s) s = px_fhir_str(cJSON_GetObjectItemCaseSensitive(proc, "performedPeriod"), "start");
    return px_fhir_date(s, 0, days);
}

void px_fhir_each(const cJSON *v, void (*fn)(const cJSON *res, void *ctx), void *ctx)
{
    if (!v || cJSON_IsNull(v)) return;
    if (cJSON_IsArray(v)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v) px_fhir_each(it, fn, ctx);
        return;
    }
    if (!cJSON_IsObject(v)) return;
    const char *t = px_fhir_str(v, "resourceType");
    if (t && strcmp(t, "Bundle") == 0) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(v, "entry"))
            px_fhir_each(cJSON_GetObjectItemCaseSensitive(e, "resource"), fn, ctx);
        return;
    }
    fn(v, ctx);
}
