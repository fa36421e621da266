/* etl_merge.c: the canonical loader's SQL side: the staging tables, preparing
 * the warehouse for one file's rows (load partitions, the providers an
 * encounter may name) and merging the staged rows into the warehouse with the
 * rules that need it (duplicates across batches, unknown references), rejects
 * counted. etl_canonical.c reads and checks the rows in between. */
#include "engine/etl_int.h"
#include <stdio.h>
#include <string.h>

/* ---- staging tables and merges ------------------------------------------------ */
static const char *const fact_name[PX_TAB__COUNT] = {NULL, NULL, NULL, "fact_encounter", "fact_diagnosis",
                                                     "fact_procedure"};
static const char *const stg_name[PX_TAB__COUNT] = {"stg_facilities", "stg_providers", "stg_patients",
                                                    "stg_encounters", "stg_diagnoses", "stg_procedures"};


static const char staging_sql[] =
    "CREATE TEMP TABLE stg_facilities (line bigint, facility_id text, name text, type text, state text,"
    " beds integer) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_providers (line bigint, provider_id text, name text, specialty text,"
    " facility_id text) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_patients (line bigint, patient_id uuid, mrn_pseudo uuid, ssn_pseudo uuid,"
    " first_name_pseudo uuid, last_name_pseudo uuid, birth_year smallint, sex char(1), zip3 char(3),"
    " phone_pseudo uuid, email_pseudo uuid, death_date date) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_encounters (line bigint, encounter_id uuid, patient_id uuid, facility_id text,"
    " attending_id text, admission_date date, discharge_date date, admission_type text,"
    " admission_source text, discharge_disposition text, department text, drg text,"
    " total_cost numeric(12,2)) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_diagnoses (line bigint, encounter_id uuid, seq smallint, code_system text,"
    " code text, present_on_admission char(1)) ON COMMIT DROP;"
    "CREATE TEMP TABLE stg_procedures (line bigint, encounter_id uuid, seq smallint, code_system text,"
    " code text, procedure_date date) ON COMMIT DROP;";

#define REJECT_COLS "INSERT INTO etl.rejects (batch_id, file_name, line, reason, field, detail, row_data) "

static const char merge_facilities[] =
    "WITH ins AS (INSERT INTO wh.dim_provider AS d (kind, provider_id, name, facility_type, state, beds,"
    "   first_batch_id, last_batch_id)"
    " SELECT 'facility', facility_id, name, type, state, beds, $1::bigint, $1::bigint FROM stg_facilities"
    " ON CONFLICT (kind, provider_id) DO UPDATE SET name = EXCLUDED.name, facility_type = EXCLUDED.facility_type,"
    "   state = coalesce(EXCLUDED.state, d.state), beds = coalesce(EXCLUDED.beds, d.beds),"
    "   last_batch_id = EXCLUDED.last_batch_id RETURNING 1)"
    " SELECT count(*), 0 FROM ins";

static const char merge_providers[] =
    "WITH m AS MATERIALIZED (SELECT s.*, (s.facility_id IS NOT NULL AND f.provider_id IS NULL) AS bad"
    "   FROM stg_providers s LEFT JOIN wh.dim_provider f ON f.kind = 'facility' AND f.provider_id = s.facility_id),"
    " rej AS (" REJECT_COLS
    "   SELECT $1::bigint, $2::text, line, 'unknown_facility', 'facility_id',"
    "     format('facility %s is neither in this batch nor in the warehouse', facility_id),"
    "     to_jsonb(m) - 'line' - 'bad' FROM m WHERE bad RETURNING 1),"
    " ins AS (INSERT INTO wh.dim_provider AS d (kind, provider_id, name, specialty, facility_id,"
    "   first_batch_id, last_batch_id)"
    "   SELECT 'clinician', provider_id, name, specialty, facility_id, $1::bigint, $1::bigint FROM m WHERE NOT bad"
    "   ON CONFLICT (kind, provider_id) DO UPDATE SET name = coalesce(EXCLUDED.name, d.name),"
    "     specialty = coalesce(EXCLUDED.specialty, d.specialty), facility_id = coalesce(EXCLUDED.facility_id,"
    "     d.facility_id), last_batch_id = EXCLUDED.last_batch_id RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM rej)";

/* Dimensions are slowly changing (type 1): a patient delivered again updates
 * the attributes it carries and keeps those it leaves empty. */
static const char merge_patients_fmt[] =
    "WITH m AS MATERIALIZED (SELECT s.*, extract(year FROM coalesce(s.death_date, d.death_date)) < s.birth_year AS bad"
    "   FROM stg_patients s LEFT JOIN wh.dim_patient d ON d.patient_id = s.patient_id),"
    " rej AS (" REJECT_COLS
    "   SELECT $1::bigint, $2::text, line, 'invalid_date', 'birth_date',"
    "     'born after the death date already in the warehouse', to_jsonb(m) - 'line' - 'bad'"
    "   FROM m WHERE bad RETURNING 1),"
    " ins AS (INSERT INTO wh.dim_patient AS d (patient_id, source, mrn_pseudo, ssn_pseudo,"
    "   first_name_pseudo, last_name_pseudo, birth_year, sex, zip3, phone_pseudo, email_pseudo, death_date,"
    "   first_batch_id, last_batch_id)"
    " SELECT patient_id, '%s', mrn_pseudo, ssn_pseudo, first_name_pseudo, last_name_pseudo, birth_year, sex,"
    "   zip3, phone_pseudo, email_pseudo, death_date, $1::bigint, $1::bigint FROM m WHERE bad IS NOT TRUE"
    " %s RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM rej)";

/* Into a dimension that held no patient when the batch began, there is nothing to
 * update (duplicates within the file are rejected in C), and a plain INSERT costs
 * half of one that must first probe for a conflict. */
static const char patients_upsert[] =
    "ON CONFLICT (patient_id) DO UPDATE SET mrn_pseudo = coalesce(EXCLUDED.mrn_pseudo, d.mrn_pseudo),"
    "   ssn_pseudo = coalesce(EXCLUDED.ssn_pseudo, d.ssn_pseudo),"
    "   first_name_pseudo = coalesce(EXCLUDED.first_name_pseudo, d.first_name_pseudo),"
    "   last_name_pseudo = coalesce(EXCLUDED.last_name_pseudo, d.last_name_pseudo),"
    "   birth_year = EXCLUDED.birth_year, sex = EXCLUDED.sex, zip3 = coalesce(EXCLUDED.zip3, d.zip3),"
    "   phone_pseudo = coalesce(EXCLUDED.phone_pseudo, d.phone_pseudo),"
    "   email_pseudo = coalesce(EXCLUDED.email_pseudo, d.email_pseudo),"
    "   death_date = coalesce(EXCLUDED.death_date, d.death_date), last_batch_id = EXCLUDED.last_batch_id";

/* The years of the staged encounters: the load partitions to add. */
static const char bulk_begin_fmt[] =
    "SELECT wh.bulk_begin('%s', coalesce((SELECT array_agg(DISTINCT extract(year FROM admission_date)::int)"
    " FROM stg_encounters), '{}'))";

/* Encounters of earlier batches that this batch delivers again: taken out of
 * the load table, to be rejected as duplicates. */
static const char prior_encounters_sql[] =
    "WITH d AS (DELETE FROM wh.load_fact_encounter l USING wh.fact_encounter f WHERE f.encounter_id = l.encounter_id"
    "   RETURNING l.*, f.batch_id AS prior_batch)"
    " SELECT encounter_id, prior_batch,"
    "   (to_jsonb(d) - 'prior_batch' - 'batch_id' - 'los_days' - 'age_at_admission' - 'source')::text FROM d";

/* Patients of this batch whose encounters the SQL merge must check: those the
 * warehouse had before (their stored death date may be later news than the
 * file's) and those the merge refused. */
static const char sql_patients_sql[] =
    "SELECT s.patient_id::text FROM stg_patients s JOIN wh.dim_patient d USING (patient_id)"
    " WHERE d.first_batch_id <> $1"
    " UNION ALL SELECT row_data->>'patient_id' FROM etl.rejects WHERE batch_id = $1 AND file_name = $2"
    " AND row_data ? 'patient_id'";

/* The rules that need the warehouse: references, duplicates of earlier
 * batches, and date logic against the patient's stored birth year and death. */
static const char merge_encounters_fmt[] =
    "WITH m AS MATERIALIZED (SELECT s.*, extract(year FROM s.admission_date)::int - p.birth_year AS age,"
    "   x.batch_id AS prior_batch, p.death_date, p.birth_year,"
    "   CASE WHEN p.patient_id IS NULL THEN 'unknown_patient'"
    "        WHEN f.provider_id IS NULL THEN 'unknown_facility'"
    "        WHEN s.attending_id IS NOT NULL AND a.provider_id IS NULL THEN 'unknown_provider'"
    "        WHEN x.encounter_id IS NOT NULL THEN 'duplicate_key'"
    "        WHEN p.death_date < s.admission_date THEN 'death_before_admission'"
    "        WHEN p.birth_year > extract(year FROM s.admission_date) THEN 'birth_after_admission'"
    "        WHEN extract(year FROM s.admission_date)::int - p.birth_year > 120 THEN 'age_out_of_range'"
    "   END AS reason"
    "   FROM stg_encounters s"
    "   LEFT JOIN wh.dim_patient p ON p.patient_id = s.patient_id"
    "   LEFT JOIN wh.dim_provider f ON f.kind = 'facility' AND f.provider_id = s.facility_id"
    "   LEFT JOIN wh.dim_provider a ON a.kind = 'clinician' AND a.provider_id = s.attending_id"
    "   LEFT JOIN wh.fact_encounter x ON x.encounter_id = s.encounter_id),"
    " rej AS (" REJECT_COLS
    "   SELECT $1::bigint, $2::text, line, reason,"
    "     CASE reason WHEN 'unknown_patient' THEN 'patient_id' WHEN 'unknown_facility' THEN 'facility_id'"
    "       WHEN 'unknown_provider' THEN 'attending_id' WHEN 'duplicate_key' THEN 'encounter_id'"
    "       ELSE 'admission_date' END,"
    "     CASE reason WHEN 'unknown_patient' THEN 'the patient is neither in this batch nor in the warehouse'"
    "       WHEN 'unknown_facility' THEN format('facility %%s is neither in this batch nor in the warehouse', facility_id)"
    "       WHEN 'unknown_provider' THEN format('attending %%s is neither in this batch nor in the warehouse', attending_id)"
    "       WHEN 'duplicate_key' THEN format('the encounter was loaded in batch %%s', prior_batch)"
    "       WHEN 'death_before_admission' THEN format('admitted %%s after the death date %%s', admission_date, death_date)"
    "       WHEN 'birth_after_admission' THEN format('admitted in %%s, born in %%s', extract(year FROM admission_date), birth_year)"
    "       ELSE format('age at admission %%s is outside 0-120', age) END,"
    "     to_jsonb(m) - 'line' - 'reason' - 'age' - 'prior_batch' - 'death_date' - 'birth_year'"
    "   FROM m WHERE reason IS NOT NULL RETURNING 1),"
    " ins AS (INSERT INTO wh.load_fact_encounter (encounter_id, patient_id, facility_id, attending_id, admission_date,"
    "   discharge_date, los_days, age_at_admission, admission_type, admission_source, discharge_disposition,"
    "   department, drg, total_cost, source, batch_id)"
    "   SELECT encounter_id, patient_id, facility_id, attending_id, admission_date, discharge_date,"
    "     discharge_date - admission_date, age, admission_type, admission_source, discharge_disposition,"
    "     department, drg, total_cost, '%s', $1::bigint FROM m WHERE reason IS NULL RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM rej)";

/* Diagnoses/procedures of encounters loaded in earlier batches (or unknown). */
static const char merge_codes_fmt[] =
    "WITH s AS (SELECT s.*, row_number() OVER (PARTITION BY encounter_id, seq ORDER BY line) AS rn FROM stg_%1$s s),"
    " m AS MATERIALIZED (SELECT s.*, e.admission_date, e.patient_id,"
    "     CASE WHEN e.encounter_id IS NULL THEN 'unknown_encounter'"
    "     WHEN s.rn > 1 OR d.encounter_id IS NOT NULL THEN 'duplicate_key' END AS reason"
    "   FROM s LEFT JOIN (SELECT DISTINCT encounter_id, admission_date, patient_id FROM wh.fact_encounter"
    "     WHERE encounter_id IN (SELECT encounter_id FROM stg_%1$s)) e ON e.encounter_id = s.encounter_id"
    "   LEFT JOIN wh.%2$s d ON d.encounter_id = s.encounter_id AND d.seq = s.seq),"
    " rej AS (" REJECT_COLS
    "   SELECT $1::bigint, $2::text, line, reason, CASE reason WHEN 'duplicate_key' THEN 'seq' ELSE 'encounter_id' END,"
    "     CASE reason WHEN 'duplicate_key' THEN format('the encounter already has a code at seq %%s', seq)"
    "       ELSE 'the encounter is neither in this batch nor in the warehouse' END,"
    "     to_jsonb(m) - 'line' - 'reason' - 'rn' - 'admission_date' - 'patient_id' FROM m WHERE reason IS NOT NULL"
    "   RETURNING 1),"
    " ins AS (INSERT INTO wh.%2$s (encounter_id, patient_id, admission_date, seq, code_system, code, %3$s, batch_id)"
    "   SELECT encounter_id, patient_id, admission_date, seq, code_system, code, %3$s, $1::bigint FROM m"
    "   WHERE reason IS NULL"
    "   RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM rej)";

static const char code_partitions_fmt[] =
    "SELECT count(wh.ensure_partition('%s', y)) FROM (SELECT DISTINCT extract(year FROM admission_date)::int AS y"
    " FROM wh.fact_encounter WHERE encounter_id IN (SELECT encounter_id FROM stg_%s)) t";

/* Runs sql ($1 = batch, $2 = file) and calls each(x, row values) for every row. */
static int for_rows(etl_ctx *x, const char *sql, int (*each)(etl_ctx *, PGresult *, int))
{
    int rc = 0;
    PGresult *r = etl_exec(x, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_err_set(x->e, PX_EDB, "merging '%s' into the warehouse failed", x->in->name);
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
    }
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) rc = each(x, r, i);
    PQclear(r);
    return rc;
}

static int add_provider(etl_ctx *x, PGresult *r, int i)
{
    unsigned char k[16];
    int existed;
    const char *id = PQgetvalue(r, i, 1);
    etl_provider_key(id, strlen(id), k);
    if (!px_keymap_put(PQgetvalue(r, i, 0)[0] == 't' ? x->facilities : x->clinicians, k, &existed))
        return px_err_set(x->e, PX_ENOMEM, "out of memory");
    return 0;
}

/* The providers an encounter may name (this batch's included, merged already). */
static int load_providers(etl_ctx *x)
{
    px_keymap_free(x->facilities);
    px_keymap_free(x->clinicians);
    x->facilities = px_keymap_new(0);
    x->clinicians = px_keymap_new(0);
    if (!x->facilities || !x->clinicians) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    return for_rows(x, "SELECT kind = 'facility', provider_id FROM wh.dim_provider", add_provider);
}

static int mark_sql_patient(etl_ctx *x, PGresult *r, int i)
{
    unsigned char k[16];
    if (PQgetisnull(r, i, 0) || etl_uuid_key(PQgetvalue(r, i, 0), k) != 0) return 0;
    etl_patient *pt = px_keymap_get(x->patients, k);
    if (pt) pt->sql_path = 1;
    return 0;
}

static int reject_prior(etl_ctx *x, PGresult *r, int i)
{
    unsigned char k[16];
    char detail[96];
    if (etl_uuid_key(PQgetvalue(r, i, 0), k) != 0) return px_err_set(x->e, PX_ESTATE, "the warehouse returned a bad uuid");
    etl_encounter *en = px_keymap_get(x->encounters, k);
    if (!en) return px_err_set(x->e, PX_ESTATE, "the load table holds an encounter this batch did not send");
    snprintf(detail, sizeof detail, "the encounter was loaded in batch %s", PQgetvalue(r, i, 1));
    etl_reject(x, en->line, "duplicate_key", "encounter_id", detail, PQgetvalue(r, i, 2));
    en->state = ENC_EXISTING;
    return 0;
}

/* "{y1,y2,...}": the years set in x->enc_years. */
static void years_literal(const etl_ctx *x, px_buf *b)
{
    px_buf_addc(b, '{');
    int first = 1;
    for (int y = 1; y < (int)sizeof x->enc_years; y++)
        if (x->enc_years[y]) {
            px_buf_printf(b, first ? "%d" : ",%d", y);
            first = 0;
        }
    px_buf_adds(b, "}");
}

const char *etl_source_name(const etl_ctx *x)
{
    return x->p->format == PX_FMT_POSTGRES ? "postgres" : x->p->format == PX_FMT_FHIR ? "fhir" : "canonical";
}

int etl_canonical_begin(etl_ctx *x)
{
    return px_db_exec(x->c, x->e, staging_sql);
}

int etl_canonical_prepare(etl_ctx *x, int tab)
{
    int rc;
    char sql[8192];
    snprintf(sql, sizeof sql, "TRUNCATE %s", stg_name[tab]);
    if ((rc = px_db_exec(x->c, x->e, sql)) != 0) return rc;
    if (tab == PX_TAB_PATIENTS) {
        /* The first patients of a warehouse: an empty dimension truncated in this
         * transaction gets new files, which (wal_level=minimal) are written without
         * WAL and synced at commit, indexes included. */
        char empty[8] = "";
        if ((rc = px_db_scalar(x->c, x->e, empty, sizeof empty,
                               "SELECT NOT EXISTS (SELECT 1 FROM wh.dim_patient) AND NOT EXISTS (SELECT 1 FROM wh.patient_year)")) != 0)
            return rc;
        x->dim_patient_new = empty[0] == 't';
        if (x->dim_patient_new && (rc = px_db_exec(x->c, x->e, "TRUNCATE wh.dim_patient, wh.patient_year")) != 0) return rc;
    } else if (tab == PX_TAB_ENCOUNTERS) {
        /* The load table without partitions: the admission years are known only
         * once read, and each year's load partition is made when its first stay
         * arrives (etl_canonical.c, enc_load_partition). Making one for every year
         * the batch's patients allow (a century and more) cost about 0.15 s of
         * the server's CPU on every load, however small. */
        if ((rc = load_providers(x)) != 0) return rc;
        int y0 = x->min_birth_year, y1 = px_date_year(x->today);
        if (y0 <= 0 || y0 > y1) y0 = y1 + 1;
        if (y0 < y1 - 150) y0 = y1 - 150;
        x->enc_y0 = y0, x->enc_y1 = y1; /* stays of other years take the SQL path */
        memset(x->enc_part, 0, sizeof x->enc_part);
        if ((rc = etl_sql(x, "SELECT wh.bulk_begin('fact_encounter', '{}')", NULL, NULL)) != 0) return rc;
    } else if (tab > PX_TAB_ENCOUNTERS) {
        px_buf yb = {0};
        years_literal(x, &yb);
        snprintf(sql, sizeof sql, "SELECT wh.bulk_begin('%s', '%s')", fact_name[tab], yb.data);
        px_buf_release(&yb);
        if ((rc = etl_sql(x, sql, NULL, NULL)) != 0) return rc;
    }
    return 0;
}

/* After the rows streamed: merges the staged rows of table tab (direct: COPYed
 * straight in, spooled: staged for the SQL path) and counts what was loaded,
 * rejected, and (encounters) rejected as loaded by an earlier batch. */
int etl_canonical_merge(etl_ctx *x, int tab, long long direct, long long spooled, long long *loaded_out,
                        long long *rejected_out, long long *dups_out)
{
    int rc;
    long long loaded = 0, rejected = 0;
    const char *source = etl_source_name(x);
    char sql[8192];
    long long dups = 0;
    if (tab < PX_TAB_ENCOUNTERS) { /* temp tables have no statistics until analyzed */
        snprintf(sql, sizeof sql, "ANALYZE %s", stg_name[tab]);
        if ((rc = px_db_exec(x->c, x->e, sql)) != 0) return rc;
    }
    switch (tab) {
    case PX_TAB_FACILITIES: rc = etl_sql(x, merge_facilities, &loaded, &rejected); break;
    case PX_TAB_PROVIDERS: rc = etl_sql(x, merge_providers, &loaded, &rejected); break;
    case PX_TAB_PATIENTS:
        snprintf(sql, sizeof sql, merge_patients_fmt, source, x->dim_patient_new ? "" : patients_upsert);
        if ((rc = etl_sql(x, sql, &loaded, &rejected)) != 0) break;
        char before[8] = "";
        snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM wh.dim_patient WHERE first_batch_id <> %lld)", x->batch);
        if ((rc = px_db_scalar(x->c, x->e, before, sizeof before, sql)) != 0) break;
        if (before[0] == 't' || rejected) rc = for_rows(x, sql_patients_sql, mark_sql_patient);
        break;
    case PX_TAB_ENCOUNTERS: {
        long long earlier = 0;
        if ((rc = etl_sql(x, "SELECT EXISTS (SELECT 1 FROM wh.fact_encounter)::int", &earlier, NULL)) != 0) break;
        long long rej0 = x->rejected;
        if (earlier && (rc = for_rows(x, prior_encounters_sql, reject_prior)) != 0) break;
        dups = x->rejected - rej0;
        loaded = direct - dups;
        if (spooled > 0) {
            long long staged = 0, l2 = 0;
            if ((rc = etl_copy_spool(x, x->spool, "COPY stg_encounters FROM STDIN", &staged)) != 0) break;
            if (staged != spooled) {
                rc = px_err_set(x->e, PX_ESTATE, "the server staged %lld rows of '%s', prognos sent %lld", staged,
                                x->in->name, spooled);
                break;
            }
            if ((rc = px_db_exec(x->c, x->e, "ANALYZE stg_encounters")) != 0) break;
            snprintf(sql, sizeof sql, bulk_begin_fmt, fact_name[tab]);
            if ((rc = etl_sql(x, sql, NULL, NULL)) != 0) break;
            snprintf(sql, sizeof sql, merge_encounters_fmt, source);
            if ((rc = etl_sql(x, sql, &l2, &rejected)) != 0) break;
            loaded += l2;
            if (rejected && (rc = etl_mark_rejected_encounters(x)) != 0) break;
        }
        rc = etl_sql(x, "SELECT wh.bulk_finish('fact_encounter')", NULL, NULL);
        break;
    }
    default: {
        int dx = tab == PX_TAB_DIAGNOSES;
        loaded = direct;
        snprintf(sql, sizeof sql, "SELECT wh.bulk_finish('%s')", fact_name[tab]);
        if ((rc = etl_sql(x, sql, NULL, NULL)) != 0) break;
        if (spooled == 0) break;
        snprintf(sql, sizeof sql, "COPY %s FROM STDIN", stg_name[tab]);
        long long staged = 0, l2 = 0;
        if ((rc = etl_copy_spool(x, x->spool, sql, &staged)) != 0) break;
        snprintf(sql, sizeof sql, "ANALYZE %s", stg_name[tab]);
        if ((rc = px_db_exec(x->c, x->e, sql)) != 0) break;
        snprintf(sql, sizeof sql, code_partitions_fmt, fact_name[tab], dx ? "diagnoses" : "procedures");
        if ((rc = etl_sql(x, sql, NULL, NULL)) != 0) break;
        snprintf(sql, sizeof sql, merge_codes_fmt, dx ? "diagnoses" : "procedures", dx ? "fact_diagnosis" : "fact_procedure",
                 dx ? "present_on_admission" : "procedure_date");
        if ((rc = etl_sql(x, sql, &l2, &rejected)) != 0) break;
        loaded += l2;
    }
    }
    *loaded_out = loaded;
    *rejected_out = rejected;
    *dups_out = dups;
    return rc;
}
