/* etl_synpuf.c: loads CMS DE-SynPUF beneficiary summary and inpatient claims files.
 * Beneficiary rows (one per person per year) become wh.dim_patient (birth year,
 * sex, race, state, death) and wh.patient_year (coverage, chronic-condition flags).
 * Claim rows are segments: all segments of a CLM_ID merge into one encounter
 * (earliest admission, latest discharge, summed payment, union of codes), in SQL.
 * DESYNPUF_ID and CLM_ID are pseudonymized before anything leaves this file. */
#include "engine/etl_int.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char staging_sql[] =
    "CREATE TEMP TABLE stg_bene (line bigint, patient_id uuid, birth_year smallint, sex char(1), race text,"
    " state text, death_date date, year smallint, hi_months smallint, smi_months smallint, hmo_months smallint,"
    " esrd boolean, alzheimer boolean, chf boolean, chronic_kidney boolean, cancer boolean, copd boolean,"
    " depression boolean, diabetes boolean, ischemic_heart boolean, osteoporosis boolean, ra_oa boolean,"
    " stroke_tia boolean) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_claims (line bigint, encounter_id uuid, segment smallint, patient_id uuid,"
    " admission_date date, discharge_date date, facility_id text, attending_id text, drg text,"
    " payment numeric(12,2), admit_dx text, dx text[], px text[]) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_claims_ok (encounter_id uuid, admission_date date, patient_id uuid) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_claims_bad (encounter_id uuid, line bigint, reason text) ON COMMIT DROP;";

#define REJECT_COLS "INSERT INTO etl.rejects (batch_id, file_name, line, reason, field, detail, row_data) "

static const char merge_patients[] =
    "WITH b AS (SELECT DISTINCT ON (patient_id) * FROM stg_bene ORDER BY patient_id, line),"
    " ins AS (INSERT INTO wh.dim_patient AS d (patient_id, source, birth_year, sex, race, state, death_date,"
    "   first_batch_id, last_batch_id)"
    " SELECT patient_id, 'synpuf', birth_year, sex, race, state, death_date, $1::bigint, $1::bigint FROM b"
    " ON CONFLICT (patient_id) DO UPDATE SET sex = EXCLUDED.sex,"
    "   race = EXCLUDED.race, state = EXCLUDED.state,"
    "   death_date = CASE WHEN extract(year FROM EXCLUDED.death_date) >= d.birth_year THEN EXCLUDED.death_date"
    "     ELSE d.death_date END,"
    "   last_batch_id = EXCLUDED.last_batch_id RETURNING 1)"
    " SELECT count(*) FROM ins";

static const char merge_years[] =
    "WITH ins AS (INSERT INTO wh.patient_year AS y (patient_id, year, hi_months, smi_months, hmo_months, esrd,"
    "   alzheimer, chf, chronic_kidney, cancer, copd, depression, diabetes, ischemic_heart, osteoporosis, ra_oa,"
    "   stroke_tia, batch_id)"
    " SELECT patient_id, year, hi_months, smi_months, hmo_months, esrd, alzheimer, chf, chronic_kidney, cancer,"
    "   copd, depression, diabetes, ischemic_heart, osteoporosis, ra_oa, stroke_tia, $1::bigint FROM stg_bene"
    " ON CONFLICT (patient_id, year) DO UPDATE SET hi_months = EXCLUDED.hi_months,"
    "   smi_months = EXCLUDED.smi_months, hmo_months = EXCLUDED.hmo_months, esrd = EXCLUDED.esrd,"
    "   alzheimer = EXCLUDED.alzheimer, chf = EXCLUDED.chf, chronic_kidney = EXCLUDED.chronic_kidney,"
    "   cancer = EXCLUDED.cancer, copd = EXCLUDED.copd, depression = EXCLUDED.depression,"
    "   diabetes = EXCLUDED.diabetes, ischemic_heart = EXCLUDED.ischemic_heart,"
    "   osteoporosis = EXCLUDED.osteoporosis, ra_oa = EXCLUDED.ra_oa, stroke_tia = EXCLUDED.stroke_tia,"
    "   batch_id = EXCLUDED.batch_id RETURNING 1)"
    " SELECT count(*), 0 FROM ins";

static const char claim_partitions[] =
    "SELECT count(wh.ensure_partition(t.name, y)) FROM"
    " (SELECT DISTINCT extract(year FROM admission_date)::int AS y FROM stg_claims) c,"
    " (VALUES ('fact_encounter'), ('fact_diagnosis'), ('fact_procedure')) t(name)";

/* One encounter per claim; the segments' rows are loaded or rejected together. */
static const char merge_claims[] =
    "WITH g AS (SELECT encounter_id, (array_agg(patient_id ORDER BY segment, line))[1] AS patient_id,"
    "   min(admission_date) AS admission_date, max(discharge_date) AS discharge_date,"
    "   (array_agg(facility_id ORDER BY segment, line))[1] AS facility_id,"
    "   (array_agg(attending_id ORDER BY segment, line) FILTER (WHERE attending_id IS NOT NULL))[1] AS attending_id,"
    "   (array_agg(drg ORDER BY segment, line) FILTER (WHERE drg IS NOT NULL))[1] AS drg,"
    "   sum(payment) AS total_cost FROM stg_claims GROUP BY encounter_id),"
    " m0 AS (SELECT g.*, extract(year FROM g.admission_date)::int - p.birth_year AS age,"
    "   p.death_date, p.birth_year, x.batch_id AS prior_batch,"
    "   CASE WHEN p.patient_id IS NULL THEN 'unknown_patient'"
    "        WHEN x.encounter_id IS NOT NULL THEN 'duplicate_key'"
    "        WHEN p.death_date < g.admission_date THEN 'death_before_admission'"
    "        WHEN p.birth_year > extract(year FROM g.admission_date) THEN 'birth_after_admission'"
    "        WHEN extract(year FROM g.admission_date)::int - p.birth_year > 120 THEN 'age_out_of_range'"
    "        WHEN g.discharge_date - g.admission_date > 365 THEN 'los_out_of_range'"
    "        WHEN g.total_cost > 10000000 THEN 'cost_out_of_range'"
    "   END AS reason0, b.reason AS bad_reason, b.line AS bad_line"
    "   FROM g LEFT JOIN wh.dim_patient p ON p.patient_id = g.patient_id"
    "   LEFT JOIN (SELECT DISTINCT ON (encounter_id) * FROM stg_claims_bad ORDER BY encounter_id, line) b"
    "     ON b.encounter_id = g.encounter_id"
    "   LEFT JOIN wh.fact_encounter x ON x.encounter_id = g.encounter_id),"
    " m AS MATERIALIZED (SELECT m0.*, coalesce(bad_reason, reason0) AS reason FROM m0),"
    " rej AS (" REJECT_COLS
    "   SELECT $1::bigint, $2::text, s.line, m.reason,"
    "     CASE WHEN m.bad_reason IS NOT NULL THEN 'CLM_ID' WHEN m.reason = 'unknown_patient' THEN 'DESYNPUF_ID'"
    "       WHEN m.reason = 'duplicate_key' THEN 'CLM_ID'"
    "       WHEN m.reason = 'cost_out_of_range' THEN 'CLM_PMT_AMT' ELSE 'CLM_ADMSN_DT' END,"
    "     CASE WHEN m.bad_reason IS NOT NULL"
    "       THEN format('another segment of this claim was rejected (line %s); a claim loads whole or not at all', m.bad_line)"
    "       ELSE CASE m.reason WHEN 'unknown_patient' THEN 'the beneficiary is in no beneficiary summary file loaded'"
    "       WHEN 'duplicate_key' THEN format('the claim was loaded in batch %s', m.prior_batch)"
    "       WHEN 'death_before_admission' THEN format('admitted %s after the death date %s', m.admission_date, m.death_date)"
    "       WHEN 'birth_after_admission' THEN format('admitted in %s, born in %s', extract(year FROM m.admission_date), m.birth_year)"
    "       WHEN 'los_out_of_range' THEN 'the merged segments span more than 365 days'"
    "       WHEN 'cost_out_of_range' THEN 'the merged segments pay more than 10000000'"
    "       ELSE format('age at admission %s is outside 0-120', m.age) END END,"
    "     to_jsonb(s) - 'line'"
    "   FROM m JOIN stg_claims s ON s.encounter_id = m.encounter_id WHERE m.reason IS NOT NULL RETURNING 1),"
    " ins AS (INSERT INTO wh.fact_encounter (encounter_id, patient_id, facility_id, attending_id, admission_date,"
    "   discharge_date, los_days, age_at_admission, admission_type, admission_source, discharge_disposition,"
    "   department, drg, total_cost, source, batch_id)"
    "   SELECT encounter_id, patient_id, facility_id, attending_id, admission_date, discharge_date,"
    "     discharge_date - admission_date, age, 'unknown', 'unknown',"
    "     CASE WHEN death_date BETWEEN admission_date AND discharge_date THEN 'expired' ELSE 'unknown' END,"
    "     NULL, drg, total_cost, 'synpuf', $1::bigint FROM m WHERE reason IS NULL"
    "   RETURNING encounter_id, admission_date, patient_id),"
    " ok AS (INSERT INTO stg_claims_ok SELECT encounter_id, admission_date, patient_id FROM ins RETURNING 1)"
    " SELECT (SELECT count(*) FROM stg_claims s WHERE s.encounter_id IN (SELECT encounter_id FROM ins))"
    "   + 0 * (SELECT count(*) FROM ok),"
    "   (SELECT count(*) FROM rej)";

static const char merge_claim_providers[] =
    "INSERT INTO wh.dim_provider (kind, provider_id, first_batch_id, last_batch_id)"
    " SELECT DISTINCT 'facility', facility_id, $1::bigint, $1::bigint FROM wh.fact_encounter WHERE batch_id = $1::bigint"
    " UNION SELECT DISTINCT 'clinician', attending_id, $1::bigint, $1::bigint FROM wh.fact_encounter"
    "   WHERE batch_id = $1::bigint AND attending_id IS NOT NULL"
    " ON CONFLICT (kind, provider_id) DO UPDATE SET last_batch_id = EXCLUDED.last_batch_id";

/* Codes of the claims loaded in this batch: the admitting diagnosis is seq 0;
 * the others keep their first position across segments, duplicates dropped. */
static const char merge_claim_codes[] =
    "WITH ok AS (SELECT s.*, e.admission_date AS adm_date, e.patient_id AS enc_patient FROM stg_claims s"
    "   JOIN stg_claims_ok e"
    "   ON e.encounter_id = s.encounter_id),"
    " adm AS (SELECT DISTINCT ON (encounter_id) encounter_id, enc_patient, adm_date, admit_dx FROM ok"
    "   WHERE admit_dx IS NOT NULL ORDER BY encounter_id, segment, line),"
    " dx AS (SELECT encounter_id, enc_patient, adm_date, code, min(segment * 1000 + ord) AS k"
    "   FROM ok, unnest(dx) WITH ORDINALITY u(code, ord) GROUP BY encounter_id, enc_patient, adm_date, code),"
    " px AS (SELECT encounter_id, enc_patient, adm_date, code, min(segment * 1000 + ord) AS k"
    "   FROM ok, unnest(px) WITH ORDINALITY u(code, ord) GROUP BY encounter_id, enc_patient, adm_date, code),"
    " d AS (INSERT INTO wh.fact_diagnosis (encounter_id, patient_id, admission_date, seq, code_system, code, batch_id)"
    "   SELECT encounter_id, enc_patient, adm_date, 0, 'icd9', admit_dx, $1::bigint FROM adm"
    "   UNION ALL SELECT encounter_id, enc_patient, adm_date, seq, 'icd9', code, $1::bigint FROM (SELECT dx.*,"
    "     row_number() OVER (PARTITION BY encounter_id ORDER BY k) AS seq FROM dx) t WHERE seq <= 99 RETURNING 1),"
    " p AS (INSERT INTO wh.fact_procedure (encounter_id, patient_id, admission_date, seq, code_system, code, batch_id)"
    "   SELECT encounter_id, enc_patient, adm_date, seq, 'icd9', code, $1::bigint FROM (SELECT px.*,"
    "     row_number() OVER (PARTITION BY encounter_id ORDER BY k) AS seq FROM px) t WHERE seq <= 99 RETURNING 1)"
    " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM p)";

int etl_synpuf_begin(etl_ctx *x)
{
    return px_db_exec(x->c, x->e, staging_sql);
}

/* ---- columns ------------------------------------------------------------------ */

enum { B_ID, B_BIRTH, B_DEATH, B_SEX, B_RACE, B_ESRD, B_STATE, B_HI, B_SMI, B_HMO, B_FLAG0, B__N = B_FLAG0 + 11 };
static const char *const bene_cols[B__N] = {
    "DESYNPUF_ID", "BENE_BIRTH_DT", "BENE_DEATH_DT", "BENE_SEX_IDENT_CD", "BENE_RACE_CD", "BENE_ESRD_IND",
    "SP_STATE_CODE", "BENE_HI_CVRAGE_TOT_MONS", "BENE_SMI_CVRAGE_TOT_MONS", "BENE_HMO_CVRAGE_TOT_MONS",
    "SP_ALZHDMTA", "SP_CHF", "SP_CHRNKIDN", "SP_CNCR", "SP_COPD", "SP_DEPRESSN", "SP_DIABETES", "SP_ISCHMCHT",
    "SP_OSTEOPRS", "SP_RA_OA", "SP_STRKETIA"};

enum { C_ID, C_CLM, C_SEG, C_FROM, C_THRU, C_PRVDR, C_PMT, C_ATT, C_ADMSN, C_ADMDX, C_DSCHRG, C_DRG,
       C_DX0, C_PX0 = C_DX0 + 10, C__N = C_PX0 + 6 };
static const char *const claim_cols[C__N] = {
    "DESYNPUF_ID", "CLM_ID", "SEGMENT", "CLM_FROM_DT", "CLM_THRU_DT", "PRVDR_NUM", "CLM_PMT_AMT", "AT_PHYSN_NPI",
    "CLM_ADMSN_DT", "ADMTNG_ICD9_DGNS_CD", "NCH_BENE_DSCHRG_DT", "CLM_DRG_CD",
    "ICD9_DGNS_CD_1", "ICD9_DGNS_CD_2", "ICD9_DGNS_CD_3", "ICD9_DGNS_CD_4", "ICD9_DGNS_CD_5", "ICD9_DGNS_CD_6",
    "ICD9_DGNS_CD_7", "ICD9_DGNS_CD_8", "ICD9_DGNS_CD_9", "ICD9_DGNS_CD_10",
    "ICD9_PRCDR_CD_1", "ICD9_PRCDR_CD_2", "ICD9_PRCDR_CD_3", "ICD9_PRCDR_CD_4", "ICD9_PRCDR_CD_5", "ICD9_PRCDR_CD_6"};

typedef struct sfile {
    int nhdr;
    int pos[(int)C__N > (int)B__N ? (int)C__N : (int)B__N];
    char hdr[128][40];  /* header names, for reject rows */
    px_keymap *seen;
} sfile;

static int map_header(etl_ctx *x, sfile *sf, px_csv *csv, const char *const *cols, int ncols)
{
    px_csv_status st;
    int got = px_csv_next(csv, &st);
    if (got <= 0 || st != PX_CSV_OK)
        return px_err_set(x->e, PX_EINVAL, "'%s' has no readable header row", x->in->name);
    sf->nhdr = px_csv_nfields(csv);
    if (sf->nhdr > 128) return px_err_set(x->e, PX_EINVAL, "'%s' has too many columns", x->in->name);
    for (int f = 0; f < sf->nhdr; f++) snprintf(sf->hdr[f], sizeof sf->hdr[f], "%s", px_csv_field(csv, f));
    for (int i = 0; i < ncols; i++) {
        sf->pos[i] = -1;
        for (int f = 0; f < sf->nhdr; f++)
            if (strcmp(sf->hdr[f], cols[i]) == 0) sf->pos[i] = f;
        if (sf->pos[i] < 0) {
            px_err_set(x->e, PX_EINVAL, "'%s' lacks the SynPUF column '%s'", x->in->name, cols[i]);
            px_err_hint(x->e, "is this a DE-SynPUF %s file?", cols == bene_cols ? "beneficiary summary" : "inpatient claims");
            return PX_EINVAL;
        }
    }
    return 0;
}

static const char *fld(px_csv *csv, const sfile *sf, int i, size_t *n)
{
    *n = px_csv_field_len(csv, sf->pos[i]);
    return px_csv_field(csv, sf->pos[i]);
}

/* The row as JSON with DESYNPUF_ID and CLM_ID pseudonymized and the birth
 * date cut to its year. */
static void reject_row(etl_ctx *x, const sfile *sf, px_csv *csv, long long line, const char *reason,
                       const char *field, const char *detail)
{
    px_buf j = {0};
    px_buf_addc(&j, '{');
    for (int f = 0; f < sf->nhdr; f++) {
        const char *v = px_csv_field(csv, f);
        size_t n = px_csv_field_len(csv, f);
        if (f) px_buf_addc(&j, ',');
        px_buf_json_str(&j, sf->hdr[f], strlen(sf->hdr[f]));
        px_buf_addc(&j, ':');
        if (n == 0) {
            px_buf_adds(&j, "null");
        } else if (strcmp(sf->hdr[f], "DESYNPUF_ID") == 0 || strcmp(sf->hdr[f], "CLM_ID") == 0) {
            unsigned char bin[16];
            char hex[33];
            etl_pseudo(x, sf->hdr[f][0] == 'D' ? PX_ID_PATIENT : PX_ID_ENCOUNTER, v, n, bin, hex);
            px_buf_json_str(&j, hex, 32);
        } else if (strcmp(sf->hdr[f], "BENE_BIRTH_DT") == 0) {
            px_buf_json_str(&j, v, etl_utf8_cut(v, n, 4));
        } else {
            px_buf_json_str(&j, v, etl_utf8_cut(v, n, 200));
        }
    }
    px_buf_adds(&j, "}");
    px_buf_addc(&j, '\0');
    etl_reject(x, line, reason, field, detail, j.data);
    px_buf_release(&j);
}

/* Parses a YYYYMMDD column. Returns 1 present and valid, 0 empty, -1 invalid or future. */
static int date_col(etl_ctx *x, px_csv *csv, const sfile *sf, int i, int *days, const char **reason)
{
    size_t n;
    const char *v = fld(csv, sf, i, &n);
    if (n == 0) return 0;
    if (px_date_parse_ymd8(v, n, days) != 0) {
        *reason = "invalid_date";
        return -1;
    }
    if (!x->p->allow_future && *days > x->today) {
        *reason = "future_date";
        return -1;
    }
    return 1;
}

/* ---- beneficiaries ---------------------------------------------------------------- */

static int bene_row(etl_ctx *x, sfile *sf, px_csv *csv, long long line)
{
    size_t n;
    const char *v, *reason = NULL;
    char detail[160];
    int birth, death = INT_MAX, bad_col = -1;
    static const char *const race[] = {NULL, "white", "black", "other", NULL, "hispanic"};
    v = fld(csv, sf, B_ID, &n);
    if (n == 0) {
        reject_row(x, sf, csv, line, "missing_field", "DESYNPUF_ID", "required column 'DESYNPUF_ID' is empty");
        return 0;
    }
    unsigned char pid[16];
    char phex[33];
    etl_pseudo(x, PX_ID_PATIENT, v, n, pid, phex);
    int r = date_col(x, csv, sf, B_BIRTH, &birth, &reason);
    if (r <= 0) {
        if (r < 0 && strcmp(reason, "future_date") == 0) etl_future_detail(x, "BENE_BIRTH_DT", detail, sizeof detail);
        reject_row(x, sf, csv, line, r == 0 ? "missing_field" : reason, "BENE_BIRTH_DT",
                   r == 0 ? "required column 'BENE_BIRTH_DT' is empty"
                          : strcmp(reason, "future_date") == 0 ? detail : "BENE_BIRTH_DT is not a YYYYMMDD date");
        return 0;
    }
    r = date_col(x, csv, sf, B_DEATH, &death, &reason);
    if (r < 0) {
        if (strcmp(reason, "future_date") == 0) etl_future_detail(x, "BENE_DEATH_DT", detail, sizeof detail);
        reject_row(x, sf, csv, line, reason, "BENE_DEATH_DT",
                   strcmp(reason, "future_date") == 0 ? detail : "BENE_DEATH_DT is not a YYYYMMDD date");
        return 0;
    }
    if (r == 0) death = INT_MAX;
    if (death < birth) {
        reject_row(x, sf, csv, line, "invalid_date", "BENE_DEATH_DT", "death date before birth date");
        return 0;
    }
    if (!x->p->allow_future && x->today - birth > 130 * 366) {
        reject_row(x, sf, csv, line, "age_out_of_range", "BENE_BIRTH_DT",
                   "born more than 130 years before the reference date (today, or --as-of)");
        return 0;
    }
    long long sex, rc_, months[3];
    v = fld(csv, sf, B_SEX, &n);
    if (px_parse_int(v, n, &sex) != 0 || (sex != 1 && sex != 2)) bad_col = B_SEX;
    v = fld(csv, sf, B_RACE, &n);
    if (bad_col < 0 && (px_parse_int(v, n, &rc_) != 0 || rc_ < 1 || rc_ > 5 || !race[rc_])) bad_col = B_RACE;
    v = fld(csv, sf, B_ESRD, &n);
    if (bad_col < 0 && !(n == 1 && (v[0] == 'Y' || v[0] == '0'))) bad_col = B_ESRD;
    char flags[11];
    for (int k = 0; k < 11 && bad_col < 0; k++) {
        v = fld(csv, sf, B_FLAG0 + k, &n);
        if (n != 1 || (v[0] != '1' && v[0] != '2')) bad_col = B_FLAG0 + k;
        else flags[k] = v[0] == '1' ? 't' : 'f';
    }
    if (bad_col >= 0) {
        snprintf(detail, sizeof detail, "'%s' has a value outside its CMS code list", bene_cols[bad_col]);
        reject_row(x, sf, csv, line, "invalid_enum", bene_cols[bad_col], detail);
        return 0;
    }
    for (int k = 0; k < 3; k++) {
        v = fld(csv, sf, B_HI + k, &n);
        if (px_parse_int(v, n, &months[k]) != 0 || months[k] < 0 || months[k] > 12) {
            snprintf(detail, sizeof detail, "'%s' must be 0-12 months", bene_cols[B_HI + k]);
            reject_row(x, sf, csv, line, px_parse_int(v, n, &months[k]) ? "invalid_number" : "value_out_of_range",
                       bene_cols[B_HI + k], detail);
            return 0;
        }
    }
    int existed = etl_seen(x, sf->seen, "bene", phex, 32);
    if (existed < 0) return existed;
    if (existed) {
        reject_row(x, sf, csv, line, "duplicate_key", "DESYNPUF_ID", "the beneficiary appears earlier in the file");
        return 0;
    }
    etl_patient *pt = px_keymap_put(x->patients, pid, &existed);
    if (!pt) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    pt->birth_days = birth;
    if (!existed || death != INT_MAX) pt->death_days = death;

    size_t sn;
    const char *state = fld(csv, sf, B_STATE, &sn);
    char d[11];
    px_buf *b = &x->copy.buf;
    px_buf_printf(b, "%lld\t%s\t%d\t%c\t%s\t", line, phex, px_date_year(birth), sex == 1 ? 'M' : 'F', race[rc_]);
    px_buf_copy_field(b, sn ? state : NULL, etl_utf8_cut(state, sn, 64));
    if (death != INT_MAX) {
        px_date_format(death, d);
        px_buf_printf(b, "\t%s", d);
    } else {
        px_buf_adds(b, "\t\\N");
    }
    px_buf_printf(b, "\t%d\t%lld\t%lld\t%lld\t%c", x->in->year, months[0], months[1], months[2],
                  fld(csv, sf, B_ESRD, &n)[0] == 'Y' ? 't' : 'f');
    for (int k = 0; k < 11; k++) px_buf_printf(b, "\t%c", flags[k]);
    px_buf_addc(b, '\n');
    return 1;
}

/* ---- claims ---------------------------------------------------------------------- */

static void add_codes(px_buf *b, const char *const codes[], int n)
{
    px_buf_addc(b, '{');
    for (int i = 0, k = 0; i < n; i++) {
        if (!codes[i]) continue;
        if (k++) px_buf_addc(b, ',');
        px_buf_adds(b, codes[i]);
    }
    px_buf_addc(b, '}');
}

/* Rejects a claim segment and remembers its claim, whose other segments the
 * merge then rejects too: a claim loads whole or not at all. */
static void reject_segment(etl_ctx *x, const sfile *sf, px_csv *csv, long long line, const char *ehex,
                           const char *reason, const char *field, const char *detail)
{
    reject_row(x, sf, csv, line, reason, field, detail);
    fprintf(x->spool, "%s\t%lld\t%s\n", ehex, line, reason);
}

static int claim_row(etl_ctx *x, sfile *sf, px_csv *csv, long long line)
{
    size_t n;
    const char *v, *reason = NULL;
    char detail[160];
    v = fld(csv, sf, C_ID, &n);
    if (n == 0) {
        reject_row(x, sf, csv, line, "missing_field", "DESYNPUF_ID", "required column 'DESYNPUF_ID' is empty");
        return 0;
    }
    unsigned char pid[16], eid[16];
    char phex[33], ehex[33];
    etl_pseudo(x, PX_ID_PATIENT, v, n, pid, phex);
    v = fld(csv, sf, C_CLM, &n);
    if (n == 0) {
        reject_row(x, sf, csv, line, "missing_field", "CLM_ID", "required column 'CLM_ID' is empty");
        return 0;
    }
    etl_pseudo(x, PX_ID_ENCOUNTER, v, n, eid, ehex);
    long long seg;
    v = fld(csv, sf, C_SEG, &n);
    if (px_parse_int(v, n, &seg) != 0 || seg < 1 || seg > 99) {
        reject_segment(x, sf, csv, line, ehex, n ? "invalid_number" : "missing_field", "SEGMENT", "SEGMENT must be 1-99");
        return 0;
    }
    int adm, dis, r;
    static const int dcols[2][2] = {{C_ADMSN, C_FROM}, {C_DSCHRG, C_THRU}};
    int *dst[2] = {&adm, &dis};
    for (int k = 0; k < 2; k++) {
        int col = dcols[k][0];
        r = date_col(x, csv, sf, col, dst[k], &reason);
        if (r == 0) r = date_col(x, csv, sf, col = dcols[k][1], dst[k], &reason);
        if (r <= 0) {
            if (r == 0)
                snprintf(detail, sizeof detail, "no %s date (%s or %s)", k ? "discharge" : "admission",
                         claim_cols[dcols[k][0]], claim_cols[dcols[k][1]]);
            else if (strcmp(reason, "future_date") == 0)
                etl_future_detail(x, claim_cols[col], detail, sizeof detail);
            else
                snprintf(detail, sizeof detail, "'%s' is not a YYYYMMDD date", claim_cols[col]);
            reject_segment(x, sf, csv, line, ehex, r == 0 ? "missing_field" : reason, claim_cols[col], detail);
            return 0;
        }
    }
    if (dis < adm) {
        snprintf(detail, sizeof detail, "discharged %d days before admission", adm - dis);
        reject_segment(x, sf, csv, line, ehex, "discharge_before_admission", "NCH_BENE_DSCHRG_DT", detail);
        return 0;
    }
    if (dis - adm > 365) {
        snprintf(detail, sizeof detail, "length of stay %d days is outside 0-365", dis - adm);
        reject_segment(x, sf, csv, line, ehex, "los_out_of_range", "NCH_BENE_DSCHRG_DT", detail);
        return 0;
    }
    size_t prn;
    const char *prvdr = fld(csv, sf, C_PRVDR, &prn);
    if (prn == 0 || prn > 64) {
        reject_segment(x, sf, csv, line, ehex, prn ? "invalid_text" : "missing_field", "PRVDR_NUM",
                   prn ? "PRVDR_NUM is longer than 64 bytes" : "required column 'PRVDR_NUM' is empty");
        return 0;
    }
    double pmt;
    v = fld(csv, sf, C_PMT, &n);
    if (px_parse_num(v, n, &pmt) != 0) {
        reject_segment(x, sf, csv, line, ehex, n ? "invalid_number" : "missing_field", "CLM_PMT_AMT", "CLM_PMT_AMT is not a number");
        return 0;
    }
    if (pmt < 0 || pmt > 10000000) {
        reject_segment(x, sf, csv, line, ehex, "cost_out_of_range", "CLM_PMT_AMT", "CLM_PMT_AMT must be 0-10000000");
        return 0;
    }
    char codes[17][16];
    const char *dx[11] = {0}, *px[6] = {0};
    for (int k = 0; k < 17; k++) {
        int col = k == 0 ? C_ADMDX : k <= 10 ? C_DX0 + k - 1 : C_PX0 + k - 11;
        v = fld(csv, sf, col, &n);
        if (n == 0) continue;
        int len = px_icd_normalize(v, n, codes[k]);
        bool ok = len > 0 && (k <= 10 ? px_icd9_dx_valid(codes[k], (size_t)len) : px_icd9_px_valid(codes[k], (size_t)len));
        if (!ok && k > 10) {
            /* DE-SynPUF's procedure columns often hold diagnosis codes (V codes,
             * 5-digit codes): drop the value, keep the admission, say so */
            snprintf(detail, sizeof detail, "'%.*s' is not an ICD-9-CM procedure code; dropped",
                     (int)etl_utf8_cut(v, n, 16), v);
            etl_warn(x, line, "invalid_icd9_dropped", claim_cols[col], detail);
            continue;
        }
        if (!ok) {
            snprintf(detail, sizeof detail, "'%s' is not a valid ICD-9-CM diagnosis code", claim_cols[col]);
            reject_segment(x, sf, csv, line, ehex, "invalid_icd9", claim_cols[col], detail);
            return 0;
        }
        if (k <= 10) dx[k] = codes[k];
        else px[k - 11] = codes[k];
    }
    etl_patient *pt = px_keymap_get(x->patients, pid);
    if (pt && pt->birth_days > adm) {
        reject_segment(x, sf, csv, line, ehex, "birth_after_admission", "CLM_ADMSN_DT", "admitted before the beneficiary's birth");
        return 0;
    }
    if (pt && pt->death_days < adm) {
        reject_segment(x, sf, csv, line, ehex, "death_before_admission", "CLM_ADMSN_DT", "admitted after the beneficiary's death");
        return 0;
    }
    /* a claim's segments share the CLM_ID; the same segment twice is a duplicate */
    char segkey[48];
    snprintf(segkey, sizeof segkey, "%s:%lld", ehex, seg);
    int existed = etl_seen(x, sf->seen, "segment", segkey, strlen(segkey));
    if (existed < 0) return existed;
    if (existed) {
        reject_row(x, sf, csv, line, "duplicate_key", "SEGMENT", "this CLM_ID and SEGMENT appear earlier in the file");
        return 0;
    }
    etl_encounter *en = px_keymap_put(x->encounters, eid, &existed);
    if (!en) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    if (!existed) {
        en->state = ENC_STAGED;
        en->line = line;
    }
    char d1[11], d2[11];
    px_date_format(adm, d1);
    px_date_format(dis, d2);
    px_buf *b = &x->copy.buf;
    px_buf_printf(b, "%lld\t%s\t%lld\t%s\t%s\t%s\t", line, ehex, seg, phex, d1, d2);
    px_buf_copy_field(b, prvdr, prn);
    px_buf_addc(b, '\t');
    v = fld(csv, sf, C_ATT, &n);
    px_buf_copy_field(b, n ? v : NULL, etl_utf8_cut(v, n, 64));
    px_buf_addc(b, '\t');
    v = fld(csv, sf, C_DRG, &n);
    px_buf_copy_field(b, n ? v : NULL, etl_utf8_cut(v, n, 16));
    px_buf_printf(b, "\t%.2f\t", pmt);
    px_buf_copy_field(b, dx[0], dx[0] ? strlen(dx[0]) : 0);
    px_buf_addc(b, '\t');
    add_codes(b, dx + 1, 10);
    px_buf_addc(b, '\t');
    add_codes(b, px, 6);
    px_buf_addc(b, '\n');
    return 1;
}

/* ---- one file -------------------------------------------------------------------- */

int etl_synpuf_file(etl_ctx *x, int fd)
{
    int bene = x->in->table == ETL_SYN_BENE, rc, got;
    sfile *sf = calloc(1, sizeof *sf);
    px_csv *csv = px_csv_new(fd);
    long long staged = 0, n = 0, loaded = 0, rejected = 0;
    px_csv_status st;
    if (!sf || !csv || !(sf->seen = px_keymap_new(0))) {
        rc = px_err_set(x->e, PX_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = etl_hash_begin(x, csv)) != 0) goto out;
    if ((rc = map_header(x, sf, csv, bene ? bene_cols : claim_cols, bene ? B__N : C__N)) != 0) goto out;
    if ((rc = px_db_exec(x->c, x->e, bene ? "TRUNCATE stg_bene" : "TRUNCATE stg_claims, stg_claims_ok, stg_claims_bad")) != 0)
        goto out;
    if ((rc = etl_copy_begin(x, bene ? "COPY stg_bene FROM STDIN" : "COPY stg_claims FROM STDIN")) != 0) goto out;
    while ((got = px_csv_next(csv, &st)) > 0) {
        long long line = px_csv_line(csv);
        x->read++;
        if (st != PX_CSV_OK || px_csv_nfields(csv) != sf->nhdr) {
            char detail[128];
            snprintf(detail, sizeof detail, st == PX_CSV_OK ? "expected %d fields as in the header, found %d"
                                                            : "malformed CSV; the row is not stored",
                     sf->nhdr, px_csv_nfields(csv));
            etl_reject(x, line, etl_csv_reason(st), NULL, detail, NULL);
            continue;
        }
        int res = bene ? bene_row(x, sf, csv, line) : claim_row(x, sf, csv, line);
        if (res < 0) {
            rc = res;
            break;
        }
        staged += res;
        if ((rc = etl_copy_flush(x, 0)) != 0) break;
        if ((x->read & 0x3fff) == 0) etl_progress(x, px_csv_bytes(csv));
    }
    if (got < 0 && rc == 0) rc = px_err_set(x->e, PX_EIO, "cannot read '%s'", x->in->name);
    int rc2 = etl_copy_end(x, &n);
    if (rc == 0) rc = rc2;
    if (rc == 0) rc = etl_hash_end(x, csv);
    if (rc == 0 && n != staged)
        rc = px_err_set(x->e, PX_ESTATE, "the server staged %lld rows of '%s', prognos sent %lld", n, x->in->name, staged);
    if (rc != 0) goto out;
    if (!bene && (rc = etl_copy_spool(x, x->spool, "COPY stg_claims_bad FROM STDIN", NULL)) != 0) goto out;
    etl_progress_phase(x, "merging");
    if ((rc = px_db_exec(x->c, x->e, bene ? "ANALYZE stg_bene" : "ANALYZE stg_claims")) != 0) goto out;
    if (bene) {
        if ((rc = etl_sql(x, merge_patients, NULL, NULL)) != 0) goto out;
        if ((rc = etl_sql(x, merge_years, &loaded, &rejected)) != 0) goto out;
    } else {
        if ((rc = etl_sql(x, claim_partitions, NULL, NULL)) != 0) goto out;
        if ((rc = etl_sql(x, merge_claims, &loaded, &rejected)) != 0) goto out;
        if ((rc = etl_sql(x, merge_claim_providers, NULL, NULL)) != 0) goto out;
        if ((rc = etl_sql(x, merge_claim_codes, NULL, NULL)) != 0) goto out;
        if (rejected && (rc = etl_mark_rejected_encounters(x)) != 0) goto out;
    }
    if (loaded + rejected != staged) {
        rc = px_err_set(x->e, PX_ESTATE, "merging '%s' accounted for %lld of %lld staged rows", x->in->name,
                        loaded + rejected, staged);
        goto out;
    }
    x->loaded = loaded;
    x->rejected += rejected;
    rc = etl_rejects_flush(x);
out:
    if (sf) px_keymap_free(sf->seen);
    free(sf);
    px_csv_free(csv);
    return rc;
}
