/* etl_canonical.c: loads the canonical CSV layout (and the postgres format,
 * which arrives here as the same CSV streamed from a source table).
 * Columns are matched by header name against px_canonical. Each row is checked
 * in C (syntax, ranges, date logic, duplicates within the batch), pseudonymized,
 * and then either staged and merged in SQL (dimensions and encounters, whose
 * rules need the warehouse) or, for diagnoses and procedures of encounters new
 * in this batch, COPYed straight into the fact table. The SQL steps before and
 * after the rows stream (staging, merges) are in etl_merge.c. */
#include "engine/etl_int.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAXCOLS 16
#define MAX_TEXT 200
#define MAX_KEY 64

/* HIPAA Safe Harbor: 3-digit ZIP prefixes covering fewer than 20,000 people
 * (2000 census, per HHS de-identification guidance) are replaced by 000. */
static const char *const small_zip3[] = {"036", "059", "063", "102", "203", "556", "692", "790", "821",
                                         "823", "830", "831", "878", "879", "884", "890", "893", NULL};

typedef struct row {
    const char *v[MAXCOLS]; /* value, NULL when absent or empty */
    size_t n[MAXCOLS];
    unsigned char bin[MAXCOLS][16];
    char hex[MAXCOLS][33];  /* pseudonym of an IDENT column */
    int days[MAXCOLS];
    long long iv[MAXCOLS];
    double dv[MAXCOLS];
    const char *ev[MAXCOLS]; /* canonical spelling of an ENUM value */
    char code[16];           /* normalized ICD code */
    char zip3[4];
} row;

/* The last identifier seen in a column and its pseudonym: files list a stay's
 * codes together, so most rows repeat the previous row's encounter_id. */
typedef struct memo {
    char value[MAX_TEXT + 1];
    size_t len;            /* 0: nothing memoized */
    unsigned char bin[16];
    char hex[33];
} memo;

typedef struct cfile {
    const px_table *t;
    int pos[MAXCOLS]; /* canonical column -> CSV field, -1 if absent */
    int nhdr;
    px_keymap *seen;  /* keys seen in this file (dimension tables) */
    memo last[MAXCOLS];
} cfile;

/* Column indexes, fixed by the order in canonical.c. */
enum { F_ID, F_NAME, F_TYPE, F_STATE, F_BEDS };
enum { PR_ID, PR_NAME, PR_SPEC, PR_FAC };
enum { P_ID, P_MRN, P_SSN, P_FIRST, P_LAST, P_BIRTH, P_SEX, P_ZIP, P_PHONE, P_EMAIL, P_DEATH };
enum { E_ID, E_PAT, E_FAC, E_ATT, E_ADM, E_DIS, E_ATYPE, E_ASRC, E_DISP, E_DEPT, E_DRG, E_COST };
enum { D_ENC, D_SEQ, D_SYS, D_CODE, D_POA };
enum { X_ENC, X_SEQ, X_SYS, X_CODE, X_DATE };

/* ---- field checks ------------------------------------------------------------- */

static void json_row(const cfile *cf, const row *r, px_buf *j)
{
    px_buf_addc(j, '{');
    for (int i = 0; i < cf->t->ncols; i++) {
        const px_col *col = &cf->t->cols[i];
        if (i) px_buf_addc(j, ',');
        px_buf_json_str(j, col->name, strlen(col->name));
        px_buf_addc(j, ':');
        if (!r->v[i]) {
            px_buf_adds(j, "null");
        } else if (col->type == PX_T_IDENT) {
            px_buf_json_str(j, r->hex[i], 32);
        } else if (cf->t == &px_canonical[PX_TAB_PATIENTS] && i == P_BIRTH) {
            /* only the birth year, as in the warehouse */
            if (px_date_parse_partial(r->v[i], r->n[i], &(int){0}) == 0) px_buf_json_str(j, r->v[i], 4);
            else px_buf_adds(j, "null");
        } else if (cf->t == &px_canonical[PX_TAB_PATIENTS] && i == P_ZIP) {
            if (r->n[i] >= 3) px_buf_json_str(j, r->v[i], etl_utf8_cut(r->v[i], r->n[i], 3));
            else px_buf_adds(j, "null");
        } else {
            px_buf_json_str(j, r->v[i], etl_utf8_cut(r->v[i], r->n[i], MAX_TEXT));
        }
    }
    px_buf_addc(j, '}');
}

static void reject_row(etl_ctx *x, const cfile *cf, const row *r, long long line, const char *reason,
                       const char *field, const char *detail)
{
    px_buf j = {0};
    json_row(cf, r, &j);
    px_buf_addc(&j, '\0');
    etl_reject(x, line, reason, field, detail, j.data);
    px_buf_release(&j);
}

/* Checks and converts each present column by its type. Returns 0, or fills
 * reason/field/detail and returns -1. */
static void pseudo_col(etl_ctx *x, cfile *cf, int i, const char *v, size_t n, row *r)
{
    memo *m = &cf->last[i];
    if (m->len == n && memcmp(m->value, v, n) == 0) {
        memcpy(r->bin[i], m->bin, 16);
        memcpy(r->hex[i], m->hex, 33);
        return;
    }
    etl_pseudo(x, cf->t->cols[i].id_kind, v, n, r->bin[i], r->hex[i]);
    if (n <= MAX_TEXT) {
        memcpy(m->value, v, n);
        m->len = n;
        memcpy(m->bin, r->bin[i], 16);
        memcpy(m->hex, r->hex[i], 33);
    }
}

static int check_columns(etl_ctx *x, cfile *cf, px_csv *csv, row *r, const char **reason,
                         const char **field, char *detail, size_t dlen)
{
    const px_table *t = cf->t;
    int bad = -1;
    /* first pass: fetch values and pseudonymize, so a reject never shows plaintext */
    for (int i = 0; i < t->ncols; i++) {
        int p = cf->pos[i];
        r->v[i] = NULL;
        r->n[i] = 0;
        if (p < 0) continue;
        const char *v = px_csv_field(csv, p);
        size_t n = px_csv_field_len(csv, p);
        if (n == 0) continue;
        r->v[i] = v;
        r->n[i] = n;
        if (t->cols[i].type == PX_T_IDENT) pseudo_col(x, cf, i, v, n, r);
    }
    for (int i = 0; i < t->ncols && bad < 0; i++) {
        const px_col *col = &t->cols[i];
        const char *v = r->v[i];
        size_t n = r->n[i];
        *field = col->name;
        if (!v) {
            if (col->required) {
                *reason = "missing_field";
                snprintf(detail, dlen, "required column '%s' is empty", col->name);
                bad = i;
            }
            continue;
        }
        switch (col->type) {
        case PX_T_TEXT:
        case PX_T_KEY:
        case PX_T_IDENT:
            if (n > (col->type == PX_T_KEY ? MAX_KEY : MAX_TEXT)) {
                *reason = "invalid_text";
                snprintf(detail, dlen, "'%s' is longer than %d bytes", col->name, col->type == PX_T_KEY ? MAX_KEY : MAX_TEXT);
                bad = i;
            }
            break;
        case PX_T_DATE:
        case PX_T_PDATE:
            if ((col->type == PX_T_DATE ? px_date_parse_iso : px_date_parse_partial)(v, n, &r->days[i]) != 0) {
                *reason = "invalid_date";
                snprintf(detail, dlen, "'%s' is not a date in the form %s", col->name,
                         col->type == PX_T_DATE ? "YYYY-MM-DD" : "YYYY-MM-DD, YYYY-MM or YYYY");
                bad = i;
            } else if (!x->p->allow_future && r->days[i] > x->today) {
                *reason = "future_date";
                etl_future_detail(x, col->name, detail, dlen);
                bad = i;
            }
            break;
        case PX_T_INT:
            if (px_parse_int(v, n, &r->iv[i]) != 0) {
                *reason = "invalid_number";
                snprintf(detail, dlen, "'%s' is not an integer", col->name);
                bad = i;
            }
            break;
        case PX_T_NUM:
            if (px_parse_num(v, n, &r->dv[i]) != 0) {
                *reason = "invalid_number";
                snprintf(detail, dlen, "'%s' is not a number", col->name);
                bad = i;
            }
            break;
        case PX_T_ENUM:
            r->ev[i] = NULL;
            for (int k = 0; col->enum_values[k]; k++)
                if (strlen(col->enum_values[k]) == n && strncasecmp(col->enum_values[k], v, n) == 0)
                    r->ev[i] = col->enum_values[k];
            if (!r->ev[i]) {
                *reason = "invalid_enum";
                snprintf(detail, dlen, "'%s' must be one of the values listed in 'prognos etl layout'", col->name);
                bad = i;
            }
            break;
        case PX_T_CODE:
            break;
        }
    }
    return bad >= 0 ? -1 : 0;
}

/* ---- COPY output helpers ---------------------------------------------------------- */

static void out_text(px_buf *b, const row *r, int i)
{
    px_buf_addc(b, '\t');
    px_buf_copy_field(b, r->v[i], r->n[i]);
}
static void out_uuid(px_buf *b, const row *r, int i)
{
    px_buf_addc(b, '\t');
    if (r->v[i]) px_buf_add(b, r->hex[i], 32);
    else px_buf_add(b, "\\N", 2);
}
static void out_enum(px_buf *b, const row *r, int i)
{
    px_buf_addc(b, '\t');
    if (r->v[i]) px_buf_adds(b, r->ev[i]);
    else px_buf_add(b, "\\N", 2);
}
static void out_date(px_buf *b, const row *r, int i)
{
    char d[11];
    px_buf_addc(b, '\t');
    if (!r->v[i]) {
        px_buf_add(b, "\\N", 2);
        return;
    }
    px_date_format(r->days[i], d);
    px_buf_add(b, d, 10);
}

static void bin_text(px_buf *b, const row *r, int i)
{
    if (r->v[i]) etl_bin_bytes(b, r->v[i], r->n[i]);
    else etl_bin_null(b);
}
static void bin_enum(px_buf *b, const row *r, int i)
{
    if (r->v[i] && r->ev[i]) etl_bin_bytes(b, r->ev[i], strlen(r->ev[i]));
    else etl_bin_null(b);
}
static void bin_uuid(px_buf *b, const row *r, int i)
{
    if (r->v[i]) etl_bin_bytes(b, r->bin[i], 16);
    else etl_bin_null(b);
}
static void bin_cstr(px_buf *b, const char *s) { etl_bin_bytes(b, s, strlen(s)); }

static int provider_known(const px_keymap *m, const char *v, size_t n)
{
    unsigned char k[16];
    if (!m) return 0;
    etl_provider_key(v, n, k);
    return px_keymap_get(m, k) != NULL;
}

/* ---- table rules -------------------------------------------------------------- */

static int row_facility(etl_ctx *x, cfile *cf, row *r, long long line)
{
    if (r->v[F_BEDS] && (r->iv[F_BEDS] < 1 || r->iv[F_BEDS] > 5000)) {
        reject_row(x, cf, r, line, "value_out_of_range", "beds", "beds must be 1-5000");
        return 0;
    }
    int dup = etl_seen(x, cf->seen, "facility", r->v[F_ID], r->n[F_ID]);
    if (dup < 0) return dup;
    if (dup) {
        reject_row(x, cf, r, line, "duplicate_key", "facility_id", "facility_id appears earlier in the file");
        return 0;
    }
    px_buf *b = &x->copy.buf;
    px_buf_printf(b, "%lld", line);
    out_text(b, r, F_ID);
    out_text(b, r, F_NAME);
    out_enum(b, r, F_TYPE);
    out_text(b, r, F_STATE);
    px_buf_addc(b, '\t');
    if (r->v[F_BEDS]) px_buf_printf(b, "%lld", r->iv[F_BEDS]);
    else px_buf_add(b, "\\N", 2);
    px_buf_addc(b, '\n');
    return 1;
}

static int row_provider(etl_ctx *x, cfile *cf, row *r, long long line)
{
    int dup = etl_seen(x, cf->seen, "provider", r->v[PR_ID], r->n[PR_ID]);
    if (dup < 0) return dup;
    if (dup) {
        reject_row(x, cf, r, line, "duplicate_key", "provider_id", "provider_id appears earlier in the file");
        return 0;
    }
    px_buf *b = &x->copy.buf;
    px_buf_printf(b, "%lld", line);
    out_text(b, r, PR_ID);
    out_text(b, r, PR_NAME);
    out_text(b, r, PR_SPEC);
    out_text(b, r, PR_FAC);
    px_buf_addc(b, '\n');
    return 1;
}

static int zip3_of(const char *z, size_t n, char out[4])
{
    /* ZIP or ZIP+4: 5 digits, optionally '-' and 4 digits */
    if (n != 5 && n != 10) return -1;
    for (size_t i = 0; i < n; i++) {
        if (i == 5 ? z[i] != '-' : (z[i] < '0' || z[i] > '9')) return -1;
    }
    memcpy(out, z, 3);
    out[3] = '\0';
    for (int i = 0; small_zip3[i]; i++)
        if (memcmp(out, small_zip3[i], 3) == 0) memcpy(out, "000", 3);
    return 0;
}

static int row_patient(etl_ctx *x, cfile *cf, row *r, long long line)
{
    /* against the reference date only while it is in force: the stays' own
     * ages (0-120 at admission) are checked for every encounter */
    if (!x->p->allow_future && x->today - r->days[P_BIRTH] > 130 * 366) {
        reject_row(x, cf, r, line, "age_out_of_range", "birth_date",
                   "born more than 130 years before the reference date (today, or --as-of)");
        return 0;
    }
    if (r->v[P_DEATH] && r->days[P_DEATH] < r->days[P_BIRTH]) {
        reject_row(x, cf, r, line, "invalid_date", "death_date", "death date before birth date");
        return 0;
    }
    if (r->v[P_ZIP] && zip3_of(r->v[P_ZIP], r->n[P_ZIP], r->zip3) != 0) {
        reject_row(x, cf, r, line, "invalid_text", "zip", "zip must be 5 digits or ZIP+4 (12345-6789)");
        return 0;
    }
    int existed = 0;
    etl_patient *pt = px_keymap_put(x->patients, r->bin[P_ID], &existed);
    if (!pt) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    int dup = etl_seen(x, cf->seen, "patient", r->hex[P_ID], 32);
    if (dup < 0) return dup;
    if (dup) {
        reject_row(x, cf, r, line, "duplicate_key", "patient_id", "patient_id appears earlier in the file");
        return 0;
    }
    pt->birth_days = r->days[P_BIRTH];
    pt->death_days = r->v[P_DEATH] ? r->days[P_DEATH] : INT_MAX;
    int by = px_date_year(pt->birth_days);
    if (x->min_birth_year == 0 || by < x->min_birth_year) x->min_birth_year = by;
    px_buf *b = &x->copy.buf; /* COPY binary into stg_patients */
    etl_bin_row(b, 12);
    etl_bin_i64(b, line);
    static const int ids[] = {P_ID, P_MRN, P_SSN, P_FIRST, P_LAST};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) bin_uuid(b, r, ids[k]);
    etl_bin_i16(b, by);
    bin_enum(b, r, P_SEX);
    if (r->v[P_ZIP]) etl_bin_bytes(b, r->zip3, 3);
    else etl_bin_null(b);
    bin_uuid(b, r, P_PHONE);
    bin_uuid(b, r, P_EMAIL);
    if (r->v[P_DEATH]) etl_bin_date(b, r->days[P_DEATH]);
    else etl_bin_null(b);
    return 1;
}

/* The load partition of admission year y, made when the year's first direct stay
 * arrives: the open COPY is closed (its rows counted), the partition made, and the
 * COPY reopened. A batch closes and reopens it once per admission year. */
static int enc_load_partition(etl_ctx *x, int y)
{
    long long n = 0;
    int rc;
    etl_bin_trailer(&x->copy.buf);
    if ((rc = etl_copy_end(x, &n)) != 0) return rc;
    x->copy_stored += n;
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT wh.bulk_begin('fact_encounter', ARRAY[%d])", y);
    if ((rc = etl_sql(x, sql, NULL, NULL)) != 0) return rc;
    if ((rc = etl_copy_begin(x, x->copy_sql)) != 0) return rc;
    etl_bin_header(&x->copy.buf);
    x->enc_part[y] = 1;
    return 0;
}

static int row_encounter(etl_ctx *x, cfile *cf, row *r, long long line)
{
    const char *reason = NULL, *field = NULL;
    char detail[200];
    int adm = r->days[E_ADM], dis = r->days[E_DIS];
    etl_patient *pt = px_keymap_get(x->patients, r->bin[E_PAT]);
    if (dis < adm) {
        reason = "discharge_before_admission", field = "discharge_date";
        snprintf(detail, sizeof detail, "discharged %d days before admission", adm - dis);
    } else if (dis - adm > 365) {
        reason = "los_out_of_range", field = "discharge_date";
        snprintf(detail, sizeof detail, "length of stay %d days is outside 0-365", dis - adm);
    } else if (r->v[E_COST] && (r->dv[E_COST] < 0 || r->dv[E_COST] > 10000000)) {
        reason = "cost_out_of_range", field = "total_cost";
        snprintf(detail, sizeof detail, "total_cost must be 0-10000000");
    } else if (pt && pt->birth_days > adm) {
        reason = "birth_after_admission", field = "admission_date";
        snprintf(detail, sizeof detail, "admitted %d days before the patient's birth", pt->birth_days - adm);
    } else if (pt && pt->death_days < adm) {
        reason = "death_before_admission", field = "admission_date";
        snprintf(detail, sizeof detail, "admitted %d days after the patient's death", adm - pt->death_days);
    } else if (pt && (px_date_year(adm) - px_date_year(pt->birth_days) > 120)) {
        reason = "age_out_of_range", field = "admission_date";
        snprintf(detail, sizeof detail, "age at admission is over 120");
    }
    int existed = 0;
    etl_encounter *en = px_keymap_put(x->encounters, r->bin[E_ID], &existed);
    if (!en) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    if (!reason && existed) {
        reason = "duplicate_key", field = "encounter_id";
        snprintf(detail, sizeof detail, "encounter_id appears earlier, at line %lld", en->line);
    }
    if (reason) {
        if (!existed) {
            en->state = ENC_REJECTED;
            en->line = line;
        }
        reject_row(x, cf, r, line, reason, field, detail);
        return 0;
    }
    en->state = ENC_STAGED;
    en->line = line;
    en->adm_days = adm;
    memcpy(en->patient, r->bin[E_PAT], sizeof en->patient);
    int year = px_date_year(adm);
    if (year > 0 && year < (int)sizeof x->enc_years) x->enc_years[year] = 1;
    /* the direct path needs the load partition of the admission year, made when the
     * year's first stay arrives (enc_load_partition), for the years the batch's
     * patients allow (per-patient date shifts can put stays in any century) */
    if (pt && !pt->sql_path && year >= x->enc_y0 && year <= x->enc_y1 && year > 0 && year < (int)sizeof x->enc_part &&
        provider_known(x->facilities, r->v[E_FAC], r->n[E_FAC]) &&
        (!r->v[E_ATT] || provider_known(x->clinicians, r->v[E_ATT], r->n[E_ATT]))) {
        /* every rule checked here: straight into the load table, in COPY binary */
        if (!x->enc_part[year]) {
            int rc = enc_load_partition(x, year);
            if (rc != 0) return rc;
        }
        px_buf *b = &x->copy.buf;
        etl_bin_row(b, 16);
        etl_bin_bytes(b, r->bin[E_ID], 16);
        etl_bin_bytes(b, r->bin[E_PAT], 16);
        bin_text(b, r, E_FAC);
        bin_text(b, r, E_ATT);
        etl_bin_date(b, adm);
        etl_bin_date(b, dis);
        etl_bin_i16(b, dis - adm);
        etl_bin_i16(b, year - px_date_year(pt->birth_days));
        bin_enum(b, r, E_ATYPE);
        bin_enum(b, r, E_ASRC);
        bin_enum(b, r, E_DISP);
        bin_text(b, r, E_DEPT);
        bin_text(b, r, E_DRG);
        if (!r->v[E_COST]) { /* unknown, not zero */
            etl_bin_null(b);
        } else if (etl_bin_numeric(b, r->v[E_COST], r->n[E_COST]) != 0) { /* e.g. 1.5e3: as the number it is */
            char num[64];
            int k = snprintf(num, sizeof num, "%.2f", r->dv[E_COST]);
            if (etl_bin_numeric(b, num, (size_t)k) != 0) etl_bin_null(b);
        }
        bin_cstr(b, etl_source_name(x));
        etl_bin_i64(b, x->batch);
        return 1;
    }
    /* a patient, facility or attending not (only) in this batch: the SQL merge decides */
    px_buf line_buf = {0}, *b = &line_buf;
    px_buf_printf(b, "%lld", line);
    out_uuid(b, r, E_ID);
    out_uuid(b, r, E_PAT);
    out_text(b, r, E_FAC);
    out_text(b, r, E_ATT);
    out_date(b, r, E_ADM);
    out_date(b, r, E_DIS);
    out_enum(b, r, E_ATYPE);
    out_enum(b, r, E_ASRC);
    out_enum(b, r, E_DISP);
    out_text(b, r, E_DEPT);
    out_text(b, r, E_DRG);
    out_text(b, r, E_COST);
    px_buf_addc(b, '\n');
    fwrite(line_buf.data, 1, line_buf.len, x->spool);
    px_buf_release(&line_buf);
    return 2;
}

/* Diagnoses and procedures share one shape: encounter, seq, system, code, extra. */
static int row_code(etl_ctx *x, cfile *cf, row *r, long long line, int is_dx)
{
    const char *sys = r->ev[D_SYS];
    int icd10 = strcmp(sys, "icd10") == 0;
    char detail[160];
    if (r->iv[D_SEQ] < (is_dx ? 0 : 1) || r->iv[D_SEQ] > 99) {
        reject_row(x, cf, r, line, "value_out_of_range", "seq", is_dx ? "seq must be 0-99" : "seq must be 1-99");
        return 0;
    }
    int n = px_icd_normalize(r->v[D_CODE], r->n[D_CODE], r->code);
    bool ok = n > 0 && (is_dx ? (icd10 ? px_icd10_dx_valid(r->code, (size_t)n) : px_icd9_dx_valid(r->code, (size_t)n))
                              : (icd10 ? px_icd10_pcs_valid(r->code, (size_t)n) : px_icd9_px_valid(r->code, (size_t)n)));
    if (!ok) {
        snprintf(detail, sizeof detail, "not a valid %s code", is_dx ? (icd10 ? "ICD-10-CM diagnosis" : "ICD-9-CM diagnosis")
                                                                  : (icd10 ? "ICD-10-PCS procedure" : "ICD-9-CM procedure"));
        reject_row(x, cf, r, line, icd10 ? "invalid_icd10" : "invalid_icd9", "code", detail);
        return 0;
    }
    etl_encounter *en = px_keymap_get(x->encounters, r->bin[D_ENC]);
    int seq = (int)r->iv[D_SEQ];
    px_buf *b = &x->copy.buf;
    FILE *sp = NULL;
    if (en && en->state == ENC_REJECTED) {
        snprintf(detail, sizeof detail, "the encounter was rejected (line %lld of encounters)", en->line);
        reject_row(x, cf, r, line, "unknown_encounter", "encounter_id", detail);
        return 0;
    }
    if (en && en->state == ENC_STAGED) {
        unsigned long long *seen = is_dx ? en->dx_seen : en->px_seen, bit = 1ULL << (seq & 63);
        if (seen[seq >> 6] & bit) {
            reject_row(x, cf, r, line, "duplicate_key", "seq", "the encounter already has a code at this seq");
            return 0;
        }
        seen[seq >> 6] |= bit;
    } else {
        sp = x->spool; /* encounter from an earlier batch, or unknown: the SQL path decides */
    }
    if (!sp) { /* binary, as the COPY into the load table expects */
        etl_bin_row(b, 8);
        etl_bin_bytes(b, r->bin[D_ENC], 16);
        etl_bin_bytes(b, en->patient, 16);
        etl_bin_date(b, en->adm_days);
        etl_bin_i16(b, seq);
        etl_bin_bytes(b, sys, strlen(sys));
        etl_bin_bytes(b, r->code, (size_t)n);
        int extra = is_dx ? D_POA : X_DATE;
        if (!r->v[extra]) etl_bin_null(b);
        else if (is_dx) etl_bin_bytes(b, r->ev[extra], strlen(r->ev[extra]));
        else etl_bin_date(b, r->days[extra]);
        etl_bin_i64(b, x->batch);
        return 1;
    }
    px_buf tmp = {0};
    px_buf_printf(&tmp, "%lld\t", line);
    px_buf_add(&tmp, r->hex[D_ENC], 32);
    px_buf_printf(&tmp, "\t%d\t%s\t%s", seq, sys, r->code);
    if (is_dx) out_enum(&tmp, r, D_POA);
    else out_date(&tmp, r, X_DATE);
    px_buf_addc(&tmp, '\n');
    fwrite(tmp.data, 1, tmp.len, sp);
    px_buf_release(&tmp);
    return 2; /* counted after the SQL merge */
}

/* ---- one file ------------------------------------------------------------------- */

static int read_header(etl_ctx *x, cfile *cf, px_csv *csv)
{
    px_csv_status st;
    int got = px_csv_next(csv, &st);
    if (got < 0) return px_err_set(x->e, PX_EIO, "cannot read '%s'", x->in->name);
    if (got == 0) return px_err_set(x->e, PX_EINVAL, "'%s' is empty: the header row is missing", x->in->name);
    if (st != PX_CSV_OK) return px_err_set(x->e, PX_EINVAL, "the header row of '%s' is malformed", x->in->name);
    cf->nhdr = px_csv_nfields(csv);
    for (int i = 0; i < MAXCOLS; i++) cf->pos[i] = -1;
    px_buf unknown = {0};
    int nunknown = 0;
    for (int f = 0; f < cf->nhdr; f++) {
        const char *h = px_csv_field(csv, f);
        if (f == 0 && (unsigned char)h[0] == 0xEF && (unsigned char)h[1] == 0xBB && (unsigned char)h[2] == 0xBF)
            h += 3; /* UTF-8 byte order mark from spreadsheet exports */
        int c = px_canonical_col(cf->t, h);
        if (c < 0) { /* not in the layout: ignored, named once the header is known to be one */
            if (unknown.len) px_buf_adds(&unknown, ", ");
            px_buf_addc(&unknown, '\'');
            px_buf_add(&unknown, h, etl_utf8_cut(h, strlen(h), 64));
            px_buf_addc(&unknown, '\'');
            nunknown++;
            continue;
        }
        if (cf->pos[c] >= 0) {
            px_buf_release(&unknown);
            return px_err_set(x->e, PX_EINVAL, "'%s' has the column '%s' twice", x->in->name, h);
        }
        cf->pos[c] = f;
    }
    for (int i = 0; i < cf->t->ncols; i++)
        if (cf->t->cols[i].required && cf->pos[i] < 0) {
            /* the unknown names are not echoed: a file without a header row has data there */
            px_err_set(x->e, PX_EINVAL, "'%s' lacks the required column '%s'", x->in->name, cf->t->cols[i].name);
            px_err_hint(x->e, "the first row must name the columns of %s (the required ones at least), listed by "
                        "'prognos etl layout'", cf->t->file);
            px_buf_release(&unknown);
            return PX_EINVAL;
        }
    if (nunknown) {
        if (!unknown.data) return px_err_set(x->e, PX_ENOMEM, "out of memory");
        char detail[160];
        snprintf(detail, sizeof detail, "%d column%s not in the canonical layout of %s, ignored", nunknown,
                 nunknown == 1 ? "" : "s", cf->t->file);
        etl_warn(x, 1, "unknown_column", unknown.data, detail);
        px_log(PX_LOG_WARN, "'%s': ignored %s not in the canonical layout: %s", x->in->name,
               nunknown == 1 ? "a column" : "columns", unknown.data);
        px_buf_printf(&x->notes, "%s: ignored %s not in the canonical layout: %s\n", x->in->name,
                      nunknown == 1 ? "a column" : "columns", unknown.data);
    }
    px_buf_release(&unknown);
    return 0;
}

static int stream_rows(etl_ctx *x, cfile *cf, px_csv *csv, long long *direct, long long *spooled)
{
    row *r = calloc(1, sizeof *r);
    if (!r) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    int rc = 0, got, tab = x->in->table;
    px_csv_status st;
    while ((got = px_csv_next(csv, &st)) > 0) {
        long long line = px_csv_line(csv);
        x->read++;
        if (st != PX_CSV_OK || px_csv_nfields(csv) != cf->nhdr) {
            char detail[128];
            if (st == PX_CSV_OK)
                snprintf(detail, sizeof detail, "expected %d fields as in the header, found %d", cf->nhdr,
                         px_csv_nfields(csv));
            else
                snprintf(detail, sizeof detail, "%s; the row is not stored",
                         st == PX_CSV_BAD_QUOTING ? "broken quoting" : st == PX_CSV_BAD_UTF8 ? "invalid UTF-8"
                                                                                          : "record over 1 MiB");
            etl_reject(x, line, etl_csv_reason(st), NULL, detail, NULL);
            continue;
        }
        const char *reason, *field;
        char detail[200];
        if (check_columns(x, cf, csv, r, &reason, &field, detail, sizeof detail) != 0) {
            reject_row(x, cf, r, line, reason, field, detail);
            continue;
        }
        int res;
        switch (tab) {
        case PX_TAB_FACILITIES: res = row_facility(x, cf, r, line); break;
        case PX_TAB_PROVIDERS: res = row_provider(x, cf, r, line); break;
        case PX_TAB_PATIENTS: res = row_patient(x, cf, r, line); break;
        case PX_TAB_ENCOUNTERS: res = row_encounter(x, cf, r, line); break;
        default: res = row_code(x, cf, r, line, tab == PX_TAB_DIAGNOSES); break;
        }
        if (res < 0) {
            rc = res;
            break;
        }
        if (res == 1) (*direct)++;
        if (res == 2) (*spooled)++;
        if ((rc = etl_copy_flush(x, 0)) != 0) break;
        if ((x->read & 0xffff) == 0) etl_progress(x, px_csv_bytes(csv));
    }
    if (got < 0 && rc == 0) rc = px_err_set(x->e, PX_EIO, "cannot read '%s'", x->in->name);
    free(r);
    return rc;
}

int etl_canonical_file(etl_ctx *x, int fd)
{
    static const char *const copy_sql[PX_TAB__COUNT] = {
        "COPY stg_facilities FROM STDIN", "COPY stg_providers FROM STDIN",
        "COPY stg_patients FROM STDIN WITH (FORMAT binary)",
        "COPY wh.load_fact_encounter (encounter_id, patient_id, facility_id, attending_id, admission_date,"
        " discharge_date, los_days, age_at_admission, admission_type, admission_source, discharge_disposition,"
        " department, drg, total_cost, source, batch_id) FROM STDIN WITH (FORMAT binary)",
        "COPY wh.load_fact_diagnosis (encounter_id, patient_id, admission_date, seq, code_system, code, present_on_admission,"
        " batch_id) FROM STDIN WITH (FORMAT binary)",
        "COPY wh.load_fact_procedure (encounter_id, patient_id, admission_date, seq, code_system, code, procedure_date,"
        " batch_id)"
        " FROM STDIN WITH (FORMAT binary)"};
    int tab = x->in->table, rc;
    const int binary = tab >= PX_TAB_PATIENTS;
    cfile cf = {.t = &px_canonical[tab]};
    long long direct = 0, spooled = 0, n = 0, loaded = 0, rejected = 0;
    px_csv *csv = px_csv_new(fd);
    if (!csv || !(cf.seen = px_keymap_new(0))) {
        px_csv_free(csv);
        return px_err_set(x->e, PX_ENOMEM, "out of memory");
    }
    if ((rc = etl_hash_begin(x, csv)) != 0) goto out;
    if ((rc = read_header(x, &cf, csv)) != 0) goto out;
    if ((rc = etl_canonical_prepare(x, tab)) != 0) goto out;
    x->copy_sql = copy_sql[tab];
    x->copy_stored = 0;
    if ((rc = etl_copy_begin(x, copy_sql[tab])) != 0) goto out;
    if (binary) etl_bin_header(&x->copy.buf);
    double t0 = px_mono_s();
    rc = stream_rows(x, &cf, csv, &direct, &spooled);
    /* (a failure while a new year's partition was made may have left no COPY open:
     * its error stands, and there is nothing to close) */
    int rc2 = 0;
    if (x->copy.open) {
        if (binary) etl_bin_trailer(&x->copy.buf);
        rc2 = etl_copy_end(x, &n);
    }
    n += x->copy_stored; /* and the rows of the COPYs closed for a new year's partition */
    if (rc == 0) rc = rc2;
    if (rc == 0) rc = etl_hash_end(x, csv);
    if (rc != 0) goto out;
    if (n != direct) {
        rc = px_err_set(x->e, PX_ESTATE, "the server stored %lld rows of '%s', prognos sent %lld", n, x->in->name, direct);
        goto out;
    }
    etl_progress_phase(x, tab <= PX_TAB_ENCOUNTERS ? "merging" : "indexing");
    double t1 = px_mono_s();

    long long dups = 0;
    if ((rc = etl_canonical_merge(x, tab, direct, spooled, &loaded, &rejected, &dups)) != 0) goto out;
    if (tab <= PX_TAB_ENCOUNTERS && loaded + rejected + dups != direct + (tab == PX_TAB_ENCOUNTERS ? spooled : 0)) {
        rc = px_err_set(x->e, PX_ESTATE, "merging '%s' accounted for %lld of %lld staged rows", x->in->name,
                        loaded + rejected + dups, direct + spooled);
        goto out;
    }
    x->loaded = loaded;
    x->rejected += rejected;
    if ((rc = etl_rejects_flush(x)) != 0) goto out;
    px_log(PX_LOG_INFO, "batch %lld: %s: streamed %lld rows in %.2f s, merged in %.2f s", x->batch, x->in->name,
           x->read, t1 - t0, px_mono_s() - t1);
out:
    px_keymap_free(cf.seen);
    px_csv_free(csv);
    return rc;
}
