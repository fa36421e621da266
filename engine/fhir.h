/* fhir.h: how Prognos reads (and writes) FHIR R4 resources, defined once for
 * the three places that use it: the Bulk Data loader (engine/etl_fhir.c), the
 * FHIR writer of the generator (engine/generate_fhir.c) and the features
 * computed from a CDS Hooks prefetch (features/fhir.c). Every rule that decides
 * a warehouse value from a resource lives here, so that a stay loaded from
 * NDJSON and the same stay given as a prefetch come out the same.
 *
 * Coded values: a Prognos coding (system PX_FHIR_CS_*, code = the canonical
 * value) wins when present, so the generator's data round-trips exactly; else
 * the HL7 and NUBC code systems are mapped (see each function). */
#ifndef PROGNOS_ENGINE_FHIR_H
#define PROGNOS_ENGINE_FHIR_H

#include "engine/engine.h"
#include <cjson/cJSON.h>

#define PX_FHIR_ICD10CM "http://hl7.org/fhir/sid/icd-10-cm"
#define PX_FHIR_ICD9CM "http://hl7.org/fhir/sid/icd-9-cm"       /* diagnoses and volume 3 procedures */
#define PX_FHIR_ICD10PCS "http://www.cms.gov/Medicare/Coding/ICD10"
#define PX_FHIR_BASE "https://prognos.dev/fhir"
#define PX_FHIR_CS_ADMIT_TYPE PX_FHIR_BASE "/CodeSystem/admission-type"
#define PX_FHIR_CS_ADMIT_SOURCE PX_FHIR_BASE "/CodeSystem/admission-source"
#define PX_FHIR_CS_DISPOSITION PX_FHIR_BASE "/CodeSystem/discharge-disposition"
#define PX_FHIR_CS_FACILITY_TYPE PX_FHIR_BASE "/CodeSystem/facility-type"
/* on an Encounter.diagnosis element: valueCode Y, N, U or W (the CMS POA indicator) */
#define PX_FHIR_EXT_POA PX_FHIR_BASE "/StructureDefinition/present-on-admission"
#define PX_FHIR_EXT_BEDS PX_FHIR_BASE "/StructureDefinition/beds"
#define PX_FHIR_HL7_ADMIT_SOURCE "http://terminology.hl7.org/CodeSystem/admit-source"
#define PX_FHIR_HL7_DISPOSITION "http://terminology.hl7.org/CodeSystem/discharge-disposition"
#define PX_FHIR_HL7_PRIORITY "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
#define PX_FHIR_HL7_ACTCODE "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#define PX_FHIR_HL7_DX_ROLE "http://terminology.hl7.org/CodeSystem/diagnosis-role"
#define PX_FHIR_NUBC_PRIORITY "https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit"
#define PX_FHIR_NUBC_DISCHARGE "https://www.nubc.org/CodeSystem/PatDischargeStatus"

/* A string member of o (NULL when absent or not a string). */
const char *px_fhir_str(const cJSON *o, const char *key);

/* The id a reference points to, into out (len bytes): "Type/id" (relative or
 * absolute, "/_history/n" dropped) and "urn:uuid:id" give id, 1 is returned; a
 * conditional reference "Type?identifier=system|value" gives value, 2 is
 * returned (the caller resolves the identifier). type (may be NULL) must match
 * when the reference names one. 0: not a reference of that type. */
int px_fhir_ref(const cJSON *reference, const char *type, char *out, size_t len);

/* Days since 1970-01-01 of a FHIR date or dateTime: the calendar date as
 * written (the local date; the time and offset are ignored). partial = 1
 * accepts YYYY and YYYY-MM (the first day), as a birthDate may be. 0 or -1. */
int px_fhir_date(const char *s, int partial, int *days);
/* The calendar year of a day count since 1970-01-01. */
int px_fhir_year(int days);

/* The ICD coding of a CodeableConcept: ICD-10-CM (diagnoses) or ICD-10-PCS
 * (procedures) first, then ICD-9-CM. sys receives "icd10" or "icd9", code the
 * code without the dot, upper-cased (16 bytes), *valid whether its syntax is
 * valid for the system. Returns 0 when found; 1 when the concept is coded only
 * in other systems (*other = the first one's URI, owned by the concept); -1
 * when it holds no coding at all. */
int px_fhir_icd(const cJSON *concept, int procedure, char sys[8], char code[16], int *valid, const char **other);

/* Encounter rules. An inpatient stay is class IMP or ACUTE, or EMER with IMP or
 * ACUTE in classHistory (an ED visit that became an admission). */
int px_fhir_is_stay(const cJSON *enc);
/* Canonical values (static strings, never NULL): admission_type from
 * Encounter.priority (Prognos code; NUBC 1-5; ActPriority EM/UR/EL; else
 * emergency for an EMER stay, else unknown), admission_source from
 * hospitalization.admitSource (Prognos code; HL7 emd=ed, gp/mp=physician_referral,
 * outp=clinic, hosp-trans/psych/rehab=transfer_hospital, nursing=transfer_snf,
 * born/other=other; else ed for an EMER stay, else unknown), discharge_disposition
 * from hospitalization.dischargeDisposition (Prognos code; NUBC 01/06/03/62/63/
 * 02/07/50/51/20; HL7 home/alt-home=home, snf, rehab, long=long_term,
 * hosp=transfer_acute, aadvice=ama, exp=expired, other-hcf/psy/oth=other; else
 * unknown). */
const char *px_fhir_admission_type(const cJSON *enc);
const char *px_fhir_admission_source(const cJSON *enc);
const char *px_fhir_disposition(const cJSON *enc);
/* The HL7 code written beside the Prognos code for a canonical value, or NULL. */
const char *px_fhir_hl7_priority(const char *admission_type);
const char *px_fhir_hl7_admit_source(const char *admission_source);
const char *px_fhir_hl7_disposition(const char *disposition);

/* How a Condition sits in its Encounter's diagnosis list: *rank (0 when
 * unranked), *admitting (use AD without a rank: the admitting diagnosis, seq 0)
 * and *poa (the POA extension's code, or 0). Returns 1 when enc lists cond_id. */
int px_fhir_enc_dx(const cJSON *enc, const char *cond_id, int *rank, int *admitting, char *poa);

/* 0 for a Condition whose verificationStatus is entered-in-error or refuted, or
 * a Procedure whose status is entered-in-error or not-done: such resources
 * count nowhere. 1 otherwise. */
int px_fhir_usable(const cJSON *res);
/* The date of a Procedure (performedDateTime, else performedPeriod.start), or -1. */
int px_fhir_procedure_date(const cJSON *proc, int *days);

/* Calls fn for each resource of v: a single resource, an array of them, or a
 * Bundle (entry[].resource). NULL is no resource. */
void px_fhir_each(const cJSON *v, void (*fn)(const cJSON *res, void *ctx), void *ctx);

/* ---- writing (generate_fhir.c) ---------------------------------------------- */

/* Converts a canonical CSV directory (as `prognos generate` writes it, each
 * stay's diagnoses and procedures after it, in encounters.csv order) into Bulk
 * Data NDJSON in out_dir (created): Organization, Practitioner, Patient,
 * Encounter, Condition and Procedure.ndjson. counts (may be NULL) receives the
 * resources written of each type, in that order. 0, or PX_EIO / PX_EINVAL
 * (a key that is not a FHIR id, codes out of the stays' order) / PX_ENOMEM. */
int px_fhir_from_canonical(const char *csv_dir, const char *out_dir, long long counts[6], px_err *e);

/* `prognos generate --format fhir`: px_generate() into a private directory
 * under p->out_dir, converted by px_fhir_from_canonical() into p->out_dir with
 * truth.json; the CSV files are removed. Same parameters, same bytes. */
int px_generate_fhir(const px_gen_params *p, px_gen_result *r, px_err *e);

#endif
