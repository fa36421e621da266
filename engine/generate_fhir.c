/* generate_fhir.c: canonical CSV (as `prognos generate` writes it) to FHIR R4
 * Bulk Data NDJSON: Organization, Practitioner, Patient, Encounter, Condition
 * and Procedure, one resource per line, ICD-10-CM / ICD-10-PCS (or ICD-9-CM)
 * coded. Every value the warehouse keeps is written where engine/fhir.h reads
 * it, so that loading the NDJSON (etl_fhir.c) or computing features from it
 * (features/fhir.c) gives what the CSV gives. Streams: diagnoses and procedures
 * are read alongside the encounters, in the generator's order (a stay's codes
 * right after it). */
#include "engine/fhir.h"
#include "engine/internal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct table_in {
    const px_table *t;
    px_csv *csv;
    int fd;
    int col[16];      /* column index in the file of each canonical column, or -1 */
    int have;         /* a record is loaded and not consumed */
    int done;
} table_in;

typedef struct out_file {
    FILE *f;
    char path[4400];
    long long n;
} out_file;

static int tin_open(table_in *ti, const char *dir, int table, int optional, px_err *e)
{
    memset(ti, 0, sizeof *ti);
    ti->t = &px_canonical[table];
    ti->fd = -1;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, ti->t->file);
    if ((ti->fd = open(path, O_RDONLY)) < 0) {
        if (optional && errno == ENOENT) {
            ti->done = 1;
            return 0;
        }
        return px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
    }
    if (!(ti->csv = px_csv_new(ti->fd))) return px_err_set(e, PX_ENOMEM, "out of memory");
    px_csv_status st;
    if (px_csv_next(ti->csv, &st) != 1 || st != PX_CSV_OK)
        return px_err_set(e, PX_EINVAL, "'%s' has no readable header", path);
    for (int c = 0; c < ti->t->ncols; c++) {
        ti->col[c] = -1;
        for (int k = 0; k < px_csv_nfields(ti->csv); k++)
            if (strcmp(px_csv_field(ti->csv, k), ti->t->cols[c].name) == 0) ti->col[c] = k;
        if (ti->col[c] < 0 && ti->t->cols[c].required)
            return px_err_set(e, PX_EINVAL, "'%s' has no column %s", path, ti->t->cols[c].name);
    }
    return 0;
}

static void tin_close(table_in *ti)
{
    px_csv_free(ti->csv);
    if (ti->fd >= 0) close(ti->fd);
}

/* Loads the next record (if none is pending); 1 when there is one. */
static int tin_peek(table_in *ti, px_err *e)
{
    if (ti->have) return 1;
    if (ti->done) return 0;
    px_csv_status st;
    int r = px_csv_next(ti->csv, &st);
    if (r < 0) return px_err_set(e, PX_EIO, "cannot read %s: %s", ti->t->file, strerror(errno));
    if (r == 0) {
        ti->done = 1;
        return 0;
    }
    if (st != PX_CSV_OK)
        return px_err_set(e, PX_EINVAL, "%s line %lld is not valid CSV", ti->t->file, px_csv_line(ti->csv));
    ti->have = 1;
    return 1;
}

/* The value of canonical column name in the pending record ("" when absent). */
static const char *val(const table_in *ti, const char *name)
{
    int c = px_canonical_col(ti->t, name);
    if (c < 0 || ti->col[c] < 0 || ti->col[c] >= px_csv_nfields(ti->csv)) return "";
    return px_csv_field(ti->csv, ti->col[c]);
}

static void js(px_buf *b, const char *s) { px_buf_json_str(b, s, strlen(s)); }

/* ,"key":"value" when value is not empty */
static void kv(px_buf *b, const char *key, const char *v)
{
    if (!*v) return;
    px_buf_printf(b, ",\"%s\":", key);
    js(b, v);
}

static void coding(px_buf *b, const char *system, const char *code)
{
    px_buf_adds(b, "{\"system\":");
    js(b, system);
    px_buf_adds(b, ",\"code\":");
    js(b, code);
    px_buf_adds(b, "}");
}

static int emit(out_file *o, px_buf *b, px_err *e)
{
    px_buf_addc(b, '\n');
    if (!b->data || fwrite(b->data, 1, b->len, o->f) != b->len)
        return px_err_set(e, PX_EIO, "cannot write '%s': %s", o->path, strerror(errno));
    o->n++;
    b->len = 0;
    return 0;
}

static int organization(const table_in *ti, px_buf *b)
{
    px_buf_adds(b, "{\"resourceType\":\"Organization\",\"id\":");
    js(b, val(ti, "facility_id"));
    px_buf_adds(b, ",\"identifier\":[{\"system\":\"" PX_FHIR_BASE "/facility-id\",\"value\":");
    js(b, val(ti, "facility_id"));
    px_buf_adds(b, "}],\"active\":true,\"type\":[{\"coding\":[");
    coding(b, "http://terminology.hl7.org/CodeSystem/organization-type", "prov");
    if (*val(ti, "type")) {
        px_buf_addc(b, ',');
        coding(b, PX_FHIR_CS_FACILITY_TYPE, val(ti, "type"));
    }
    px_buf_adds(b, "]}]");
    kv(b, "name", val(ti, "name"));
    if (*val(ti, "state")) {
        px_buf_adds(b, ",\"address\":[{\"state\":");
        js(b, val(ti, "state"));
        px_buf_adds(b, "}]");
    }
    if (*val(ti, "beds")) px_buf_printf(b, ",\"extension\":[{\"url\":\"" PX_FHIR_EXT_BEDS "\",\"valueInteger\":%s}]",
                                        val(ti, "beds"));
    return px_buf_adds(b, "}");
}

static int practitioner(const table_in *ti, px_buf *b)
{
    px_buf_adds(b, "{\"resourceType\":\"Practitioner\",\"id\":");
    js(b, val(ti, "provider_id"));
    px_buf_adds(b, ",\"identifier\":[{\"system\":\"http://hl7.org/fhir/sid/us-npi\",\"value\":");
    js(b, val(ti, "provider_id"));
    px_buf_adds(b, "}],\"active\":true");
    if (*val(ti, "name")) {
        px_buf_adds(b, ",\"name\":[{\"text\":");
        js(b, val(ti, "name"));
        px_buf_adds(b, "}]");
    }
    if (*val(ti, "specialty") || *val(ti, "facility_id")) {
        /* specialty and main facility: a PractitionerRole would be the place; an
         * extension keeps them in the one resource the loader reads */
        px_buf_adds(b, ",\"extension\":[");
        int first = 1;
        if (*val(ti, "specialty")) {
            px_buf_adds(b, "{\"url\":\"" PX_FHIR_BASE "/StructureDefinition/specialty\",\"valueCode\":");
            js(b, val(ti, "specialty"));
            px_buf_adds(b, "}");
            first = 0;
        }
        if (*val(ti, "facility_id")) {
            px_buf_adds(b, first ? "" : ",");
            px_buf_adds(b, "{\"url\":\"" PX_FHIR_BASE "/StructureDefinition/main-facility\",\"valueReference\":"
                           "{\"reference\":\"Organization/");
            px_buf_adds(b, val(ti, "facility_id")); /* ids are [A-Za-z0-9.-]: checked by the caller */
            px_buf_adds(b, "\"}}");
        }
        px_buf_adds(b, "]");
    }
    return px_buf_adds(b, "}");
}

static int patient(const table_in *ti, px_buf *b)
{
    px_buf_adds(b, "{\"resourceType\":\"Patient\",\"id\":");
    js(b, val(ti, "patient_id"));
    px_buf_adds(b, ",\"identifier\":[{\"system\":\"" PX_FHIR_BASE "/patient-id\",\"value\":");
    js(b, val(ti, "patient_id"));
    px_buf_adds(b, "}");
    if (*val(ti, "mrn")) {
        px_buf_adds(b, ",{\"type\":{\"coding\":[");
        coding(b, "http://terminology.hl7.org/CodeSystem/v2-0203", "MR");
        px_buf_adds(b, "]},\"system\":\"" PX_FHIR_BASE "/mrn\",\"value\":");
        js(b, val(ti, "mrn"));
        px_buf_adds(b, "}");
    }
    if (*val(ti, "ssn")) {
        px_buf_adds(b, ",{\"system\":\"http://hl7.org/fhir/sid/us-ssn\",\"value\":");
        js(b, val(ti, "ssn"));
        px_buf_adds(b, "}");
    }
    px_buf_adds(b, "]");
    if (*val(ti, "first_name") || *val(ti, "last_name")) {
        px_buf_adds(b, ",\"name\":[{\"use\":\"official\"");
        kv(b, "family", val(ti, "last_name"));
        if (*val(ti, "first_name")) {
            px_buf_adds(b, ",\"given\":[");
            js(b, val(ti, "first_name"));
            px_buf_adds(b, "]");
        }
        px_buf_adds(b, "}]");
    }
    if (*val(ti, "phone") || *val(ti, "email")) {
        px_buf_adds(b, ",\"telecom\":[");
        if (*val(ti, "phone")) {
            px_buf_adds(b, "{\"system\":\"phone\",\"value\":");
            js(b, val(ti, "phone"));
            px_buf_adds(b, "}");
        }
        if (*val(ti, "email")) {
            px_buf_adds(b, *val(ti, "phone") ? ",{\"system\":\"email\",\"value\":" : "{\"system\":\"email\",\"value\":");
            js(b, val(ti, "email"));
            px_buf_adds(b, "}");
        }
        px_buf_adds(b, "]");
    }
    const char *sex = val(ti, "sex");
    px_buf_printf(b, ",\"gender\":\"%s\"", strcmp(sex, "M") == 0 ? "male" : strcmp(sex, "F") == 0 ? "female" : "unknown");
    kv(b, "birthDate", val(ti, "birth_date"));
    kv(b, "deceasedDateTime", val(ti, "death_date"));
    if (*val(ti, "zip")) {
        px_buf_adds(b, ",\"address\":[{\"postalCode\":");
        js(b, val(ti, "zip"));
        px_buf_adds(b, "}]");
    }
    return px_buf_adds(b, "}");
}

/* "name":{"coding":[prognos code, HL7 code]} */
static void concept2(px_buf *b, const char *name, const char *pxsys, const char *v, const char *hl7sys,
                     const char *hl7code)
{
    px_buf_printf(b, "\"%s\":{\"coding\":[", name);
    coding(b, pxsys, v);
    if (hl7code) {
        px_buf_addc(b, ',');
        coding(b, hl7sys, hl7code);
    }
    px_buf_adds(b, "]}");
}

typedef struct dx { char id[128]; int seq; char poa; char sys[8]; char code[16]; } dx;

static int encounter(const table_in *ti, const dx *d, int nd, px_buf *b)
{
    const char *eid = val(ti, "encounter_id");
    px_buf_adds(b, "{\"resourceType\":\"Encounter\",\"id\":");
    js(b, eid);
    px_buf_adds(b, ",\"identifier\":[{\"system\":\"" PX_FHIR_BASE "/encounter-id\",\"value\":");
    js(b, eid);
    px_buf_adds(b, "}],\"status\":\"finished\",\"class\":{\"system\":\"" PX_FHIR_HL7_ACTCODE "\",\"code\":\"IMP\"},");
    const char *at = val(ti, "admission_type");
    concept2(b, "priority", PX_FHIR_CS_ADMIT_TYPE, at, PX_FHIR_HL7_PRIORITY, px_fhir_hl7_priority(at));
    px_buf_adds(b, ",\"subject\":{\"reference\":\"Patient/");
    px_buf_adds(b, val(ti, "patient_id"));
    px_buf_adds(b, "\"}");
    if (*val(ti, "attending_id")) {
        px_buf_adds(b, ",\"participant\":[{\"type\":[{\"coding\":[");
        coding(b, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND");
        px_buf_adds(b, "]}],\"individual\":{\"reference\":\"Practitioner/");
        px_buf_adds(b, val(ti, "attending_id"));
        px_buf_adds(b, "\"}}]");
    }
    px_buf_adds(b, ",\"period\":{\"start\":");
    js(b, val(ti, "admission_date"));
    if (*val(ti, "discharge_date")) {
        px_buf_adds(b, ",\"end\":");
        js(b, val(ti, "discharge_date"));
    }
    px_buf_adds(b, "}");
    if (*val(ti, "department")) {
        px_buf_adds(b, ",\"serviceType\":{\"text\":");
        js(b, val(ti, "department"));
        px_buf_adds(b, "}");
    }
    if (nd > 0) {
        px_buf_adds(b, ",\"diagnosis\":[");
        for (int i = 0; i < nd; i++) {
            px_buf_printf(b, "%s{\"condition\":{\"reference\":\"Condition/%s\"},\"use\":{\"coding\":[", i ? "," : "",
                          d[i].id);
            coding(b, PX_FHIR_HL7_DX_ROLE, d[i].seq == 0 ? "AD" : "DD");
            px_buf_adds(b, "]}");
            if (d[i].seq > 0) px_buf_printf(b, ",\"rank\":%d", d[i].seq);
            if (d[i].poa)
                px_buf_printf(b, ",\"extension\":[{\"url\":\"" PX_FHIR_EXT_POA "\",\"valueCode\":\"%c\"}]", d[i].poa);
            px_buf_adds(b, "}");
        }
        px_buf_adds(b, "]");
    }
    px_buf_adds(b, ",\"hospitalization\":{");
    const char *src = val(ti, "admission_source"), *disp = val(ti, "discharge_disposition");
    concept2(b, "admitSource", PX_FHIR_CS_ADMIT_SOURCE, src, PX_FHIR_HL7_ADMIT_SOURCE, px_fhir_hl7_admit_source(src));
    px_buf_addc(b, ',');
    concept2(b, "dischargeDisposition", PX_FHIR_CS_DISPOSITION, disp, PX_FHIR_HL7_DISPOSITION,
             px_fhir_hl7_disposition(disp));
    px_buf_adds(b, "},\"serviceProvider\":{\"reference\":\"Organization/");
    px_buf_adds(b, val(ti, "facility_id"));
    return px_buf_adds(b, "\"}}");
}

static const char *code_uri(const char *sys, int procedure)
{
    if (strcmp(sys, "icd9") == 0) return PX_FHIR_ICD9CM;
    return procedure ? PX_FHIR_ICD10PCS : PX_FHIR_ICD10CM;
}

static int condition(const dx *d, const char *eid, const char *pid, const char *recorded, px_buf *b)
{
    px_buf_printf(b, "{\"resourceType\":\"Condition\",\"id\":\"%s\",\"verificationStatus\":{\"coding\":[", d->id);
    coding(b, "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed");
    px_buf_adds(b, "]},\"category\":[{\"coding\":[");
    coding(b, "http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis");
    px_buf_adds(b, "]}],\"code\":{\"coding\":[");
    coding(b, code_uri(d->sys, 0), d->code);
    px_buf_printf(b, "]},\"subject\":{\"reference\":\"Patient/%s\"},\"encounter\":{\"reference\":\"Encounter/%s\"}",
                  pid, eid);
    kv(b, "recordedDate", recorded);
    return px_buf_adds(b, "}");
}

static int procedure(const table_in *ti, const char *pid, int k, px_buf *b)
{
    const char *eid = val(ti, "encounter_id");
    px_buf_printf(b, "{\"resourceType\":\"Procedure\",\"id\":\"%s-px-%02d\",\"status\":\"completed\",\"code\":{\"coding\":[",
                  eid, k);
    coding(b, code_uri(val(ti, "code_system"), 1), val(ti, "code"));
    px_buf_printf(b, "]},\"subject\":{\"reference\":\"Patient/%s\"},\"encounter\":{\"reference\":\"Encounter/%s\"}",
                  pid, eid);
    kv(b, "performedDateTime", val(ti, "procedure_date"));
    return px_buf_adds(b, "}");
}

/* FHIR ids: [A-Za-z0-9\-\.]{1,64}. The generator's keys are; a user's CSV may not be. */
static int fhir_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.") == n;
}

static int check_id(const table_in *ti, const char *col, px_err *e)
{
    const char *v = val(ti, col);
    if (!*v && !ti->t->cols[px_canonical_col(ti->t, col)].required) return 0;
    if (fhir_id_ok(v)) return 0;
    return px_err_set(e, PX_EINVAL, "%s line %lld: %s '%.80s' is not a FHIR id ([A-Za-z0-9.-], 1-64 characters)",
                      ti->t->file, px_csv_line(ti->csv), col, v);
}

static int out_open(out_file *o, const char *dir, const char *type, px_err *e)
{
    snprintf(o->path, sizeof o->path, "%s/%s.ndjson", dir, type);
    if (!(o->f = fopen(o->path, "w"))) return px_err_set(e, PX_EIO, "cannot create '%s': %s", o->path, strerror(errno));
    return 0;
}

enum { O_ORG, O_PRAC, O_PAT, O_ENC, O_COND, O_PROC, O__N };
static const char *const out_types[O__N] = {"Organization", "Practitioner", "Patient", "Encounter", "Condition",
                                            "Procedure"};

int px_fhir_from_canonical(const char *csv_dir, const char *out_dir, long long counts[6], px_err *e)
{
    table_in ti[PX_TAB__COUNT];
    out_file of[O__N];
    px_buf b = {0};
    dx *d = NULL;
    int nd = 0, capd = 0, rc = 0;
    memset(ti, 0, sizeof ti);
    memset(of, 0, sizeof of);
    for (int t = 0; t < PX_TAB__COUNT; t++) ti[t].fd = -1;
    if ((rc = px_mkdir_p(out_dir, 0700, e)) != 0) return rc;
    for (int t = 0; t < PX_TAB__COUNT && rc == 0; t++)
        rc = tin_open(&ti[t], csv_dir, t, t == PX_TAB_PROVIDERS || t == PX_TAB_PROCEDURES, e);
    for (int k = 0; k < O__N && rc == 0; k++) rc = out_open(&of[k], out_dir, out_types[k], e);

    while (rc == 0 && (rc = tin_peek(&ti[PX_TAB_FACILITIES], e)) == 1) {
        ti[PX_TAB_FACILITIES].have = 0;
        if ((rc = check_id(&ti[PX_TAB_FACILITIES], "facility_id", e)) == 0) {
            organization(&ti[PX_TAB_FACILITIES], &b);
            rc = emit(&of[O_ORG], &b, e);
        }
    }
    while (rc == 0 && (rc = tin_peek(&ti[PX_TAB_PROVIDERS], e)) == 1) {
        ti[PX_TAB_PROVIDERS].have = 0;
        if ((rc = check_id(&ti[PX_TAB_PROVIDERS], "provider_id", e)) == 0 &&
            (rc = check_id(&ti[PX_TAB_PROVIDERS], "facility_id", e)) == 0) {
            practitioner(&ti[PX_TAB_PROVIDERS], &b);
            rc = emit(&of[O_PRAC], &b, e);
        }
    }
    while (rc == 0 && (rc = tin_peek(&ti[PX_TAB_PATIENTS], e)) == 1) {
        ti[PX_TAB_PATIENTS].have = 0;
        if ((rc = check_id(&ti[PX_TAB_PATIENTS], "patient_id", e)) == 0) {
            patient(&ti[PX_TAB_PATIENTS], &b);
            rc = emit(&of[O_PAT], &b, e);
        }
    }
    /* each encounter with its diagnoses and procedures, which follow it */
    table_in *te = &ti[PX_TAB_ENCOUNTERS], *td = &ti[PX_TAB_DIAGNOSES], *tp = &ti[PX_TAB_PROCEDURES];
    while (rc == 0 && (rc = tin_peek(te, e)) == 1) {
        te->have = 0;
        char eid[96], pid[96], adm[16];
        if ((rc = check_id(te, "encounter_id", e)) != 0 || (rc = check_id(te, "patient_id", e)) != 0 ||
            (rc = check_id(te, "facility_id", e)) != 0 || (rc = check_id(te, "attending_id", e)) != 0)
            break;
        snprintf(eid, sizeof eid, "%s", val(te, "encounter_id"));
        snprintf(pid, sizeof pid, "%s", val(te, "patient_id"));
        snprintf(adm, sizeof adm, "%s", val(te, "admission_date"));
        nd = 0;
        while ((rc = tin_peek(td, e)) == 1 && strcmp(val(td, "encounter_id"), eid) == 0) {
            td->have = 0;
            if (nd == capd) {
                int nc = capd ? capd * 2 : 16;
                dx *nv = realloc(d, (size_t)nc * sizeof *nv);
                if (!nv) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    break;
                }
                d = nv;
                capd = nc;
            }
            dx *x = &d[nd++];
            long long seq = 0;
            if (px_parse_int(val(td, "seq"), strlen(val(td, "seq")), &seq) != 0 || seq < 0 || seq > 99) {
                rc = px_err_set(e, PX_EINVAL, "diagnoses.csv line %lld: bad seq '%s'", px_csv_line(td->csv),
                                val(td, "seq"));
                break;
            }
            x->seq = (int)seq;
            snprintf(x->id, sizeof x->id, "%s-dx-%d", eid, x->seq);
            x->poa = val(td, "present_on_admission")[0];
            snprintf(x->sys, sizeof x->sys, "%s", val(td, "code_system"));
            snprintf(x->code, sizeof x->code, "%s", val(td, "code"));
        }
        if (rc < 0) break;
        rc = 0;
        encounter(te, d, nd, &b);
        if ((rc = emit(&of[O_ENC], &b, e)) != 0) break;
        for (int i = 0; i < nd && rc == 0; i++) {
            condition(&d[i], eid, pid, adm, &b);
            rc = emit(&of[O_COND], &b, e);
        }
        int k = 0;
        while ((rc = tin_peek(tp, e)) == 1 && strcmp(val(tp, "encounter_id"), eid) == 0) {
            tp->have = 0;
            procedure(tp, pid, ++k, &b);
            if ((rc = emit(&of[O_PROC], &b, e)) != 0) break;
        }
        if (rc < 0) break;
        rc = 0; /* the next stay's codes are pending */
    }
    if (rc == 0 && (tin_peek(td, e) == 1 || tin_peek(tp, e) == 1))
        rc = px_err_set(e, PX_EINVAL, "diagnoses.csv or procedures.csv lists a stay out of the order of encounters.csv");
    if (rc > 0) rc = 0;
    for (int k = 0; k < O__N; k++) {
        if (of[k].f && fclose(of[k].f) != 0 && rc == 0)
            rc = px_err_set(e, PX_EIO, "cannot write '%s': %s", of[k].path, strerror(errno));
        if (counts) counts[k] = of[k].n;
    }
    for (int t = 0; t < PX_TAB__COUNT; t++) tin_close(&ti[t]);
    px_buf_release(&b);
    free(d);
    return rc;
}

int px_generate_fhir(const px_gen_params *p, px_gen_result *r, px_err *e)
{
    if (!p->out_dir || !*p->out_dir) return px_err_set(e, PX_EINVAL, "no output directory");
    int rc = px_mkdir_p(p->out_dir, 0700, e);
    if (rc != 0) return rc;
    /* the canonical files go to a private directory beside the NDJSON, then away */
    char tmp[4400], a[4500], b[4500];
    snprintf(tmp, sizeof tmp, "%s/.canonical-XXXXXX", p->out_dir);
    if (!mkdtemp(tmp)) return px_err_set(e, PX_EIO, "cannot create a directory in '%s': %s", p->out_dir, strerror(errno));
    px_gen_params q = *p;
    q.out_dir = tmp;
    rc = px_generate(&q, r, e);
    if (rc == 0) rc = px_fhir_from_canonical(tmp, p->out_dir, NULL, e);
    snprintf(a, sizeof a, "%s/truth.json", tmp);
    snprintf(b, sizeof b, "%s/truth.json", p->out_dir);
    if (rc == 0 && rename(a, b) != 0) rc = px_err_set(e, PX_EIO, "cannot move truth.json: %s", strerror(errno));
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        snprintf(a, sizeof a, "%s/%s", tmp, px_canonical[t].file);
        (void)unlink(a);
    }
    snprintf(a, sizeof a, "%s/truth.json", tmp);
    (void)unlink(a);
    if (rmdir(tmp) != 0 && rc == 0) rc = px_err_set(e, PX_EIO, "cannot remove '%s': %s", tmp, strerror(errno));
    return rc;
}
