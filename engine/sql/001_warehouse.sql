-- 001_warehouse: the star schema (wh), load bookkeeping (etl) and the audit trail.
-- Constraints restate the ETL's validation rules, so a row that slipped past the
-- loader still cannot be stored. No column holds a plaintext identifier: persons
-- and encounters are keyed by HMAC-SHA256 pseudonyms (uuid-formatted, 128 bits).

CREATE SCHEMA wh;
CREATE SCHEMA etl;
CREATE SCHEMA audit;

CREATE TABLE etl.batches (
    batch_id      bigserial PRIMARY KEY,
    format        text NOT NULL CHECK (format IN ('synpuf', 'canonical', 'postgres')),
    source        text NOT NULL,            -- directory, or URI with any password removed
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    rows_read     bigint NOT NULL DEFAULT 0 CHECK (rows_read >= 0),
    rows_loaded   bigint NOT NULL DEFAULT 0 CHECK (rows_loaded >= 0),
    rows_rejected bigint NOT NULL DEFAULT 0 CHECK (rows_rejected >= 0),
    loaded_by     text NOT NULL DEFAULT session_user,
    CHECK (rows_read = rows_loaded + rows_rejected)
);

-- One row per input file (or source table) of a batch. The digest makes loads
-- exactly-once: a file whose SHA-256 is here was loaded and is skipped.
CREATE TABLE etl.batch_files (
    batch_id      bigint NOT NULL REFERENCES etl.batches,
    file_name     text NOT NULL,
    table_name    text NOT NULL,
    sha256        char(64) NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes         bigint NOT NULL CHECK (bytes >= 0),
    rows_read     bigint NOT NULL CHECK (rows_read >= 0),
    rows_loaded   bigint NOT NULL CHECK (rows_loaded >= 0),
    rows_rejected bigint NOT NULL CHECK (rows_rejected >= 0),
    CHECK (rows_read = rows_loaded + rows_rejected),
    PRIMARY KEY (batch_id, file_name)
);
-- unique except for loads forced with --force (a retry after fixing references)
CREATE INDEX batch_files_sha256 ON etl.batch_files (sha256);

CREATE TABLE etl.rejects (
    reject_id  bigserial PRIMARY KEY,
    batch_id   bigint NOT NULL REFERENCES etl.batches,
    file_name  text NOT NULL,
    line       bigint NOT NULL CHECK (line > 0),   -- physical line where the record starts; 1 = header
    reason     text NOT NULL CHECK (reason IN (
        'csv_column_count', 'csv_quoting', 'csv_utf8', 'csv_too_long',
        'missing_field', 'invalid_date', 'invalid_number', 'invalid_enum', 'invalid_text',
        'invalid_icd9', 'invalid_icd10',
        'discharge_before_admission', 'future_date', 'death_before_admission', 'birth_after_admission',
        'age_out_of_range', 'los_out_of_range', 'cost_out_of_range', 'value_out_of_range',
        'unknown_patient', 'unknown_encounter', 'unknown_facility', 'unknown_provider',
        'duplicate_key')),
    field      text,                                 -- the offending column, when one is
    detail     text NOT NULL,
    row_data   jsonb                                 -- identifiers already pseudonymized; NULL if unparseable
);
CREATE INDEX rejects_batch_reason ON etl.rejects (batch_id, reason);

-- Field-level problems in rows that were loaded: the value was dropped, the row
-- kept. Used where a row holds many values of one kind (a SynPUF claim's six
-- procedure columns) and one bad value should not discard a valid admission.
CREATE TABLE etl.warnings (
    warning_id bigserial PRIMARY KEY,
    batch_id   bigint NOT NULL REFERENCES etl.batches,
    file_name  text NOT NULL,
    line       bigint NOT NULL CHECK (line > 0),
    reason     text NOT NULL CHECK (reason IN ('invalid_icd9_dropped', 'invalid_icd10_dropped')),
    field      text NOT NULL,
    detail     text NOT NULL
);
CREATE INDEX warnings_batch_reason ON etl.warnings (batch_id, reason);

-- Patients: one row per pseudonymized patient key. Date of birth is kept as the
-- year only and ZIP as its 3-digit prefix ('000' for the sparsely populated
-- prefixes of the HIPAA Safe Harbor list).
CREATE TABLE wh.dim_patient (
    patient_id        uuid PRIMARY KEY,
    source            text NOT NULL,
    mrn_pseudo        uuid,
    ssn_pseudo        uuid,
    first_name_pseudo uuid,
    last_name_pseudo  uuid,
    phone_pseudo      uuid,
    email_pseudo      uuid,
    birth_year        smallint NOT NULL CHECK (birth_year BETWEEN 1800 AND 9999),
    sex               char(1) NOT NULL CHECK (sex IN ('M', 'F', 'U')),
    race              text,
    zip3              char(3) CHECK (zip3 ~ '^[0-9]{3}$'),
    state             text,
    death_date        date CHECK (death_date IS NULL OR extract(year FROM death_date) >= birth_year),
    first_batch_id    bigint NOT NULL,
    last_batch_id     bigint NOT NULL
);
CREATE INDEX dim_patient_ssn ON wh.dim_patient (ssn_pseudo) WHERE ssn_pseudo IS NOT NULL;

-- Per-year enrolment attributes where the source has them (SynPUF beneficiary
-- summary files): coverage months and the chronic-condition flags.
CREATE TABLE wh.patient_year (
    patient_id   uuid NOT NULL REFERENCES wh.dim_patient,
    year         smallint NOT NULL CHECK (year BETWEEN 1900 AND 9999),
    hi_months    smallint CHECK (hi_months BETWEEN 0 AND 12),
    smi_months   smallint CHECK (smi_months BETWEEN 0 AND 12),
    hmo_months   smallint CHECK (hmo_months BETWEEN 0 AND 12),
    esrd         boolean,
    alzheimer    boolean, chf boolean, chronic_kidney boolean, cancer boolean, copd boolean,
    depression   boolean, diabetes boolean, ischemic_heart boolean, osteoporosis boolean,
    ra_oa        boolean, stroke_tia boolean,
    batch_id     bigint NOT NULL,
    PRIMARY KEY (patient_id, year)
);

-- Facilities and clinicians share one dimension, keyed by (kind, provider_id).
CREATE TABLE wh.dim_provider (
    kind           text NOT NULL CHECK (kind IN ('facility', 'clinician')),
    provider_id    text NOT NULL CHECK (provider_id <> '' AND length(provider_id) <= 64),
    name           text,
    facility_type  text CHECK (facility_type IN ('acute', 'critical_access', 'rehab', 'psychiatric',
                                                 'long_term', 'other')),
    specialty      text,
    state          text,
    beds           integer CHECK (beds BETWEEN 1 AND 5000),
    facility_id    text,                      -- a clinician's main facility
    first_batch_id bigint NOT NULL,
    last_batch_id  bigint NOT NULL,
    PRIMARY KEY (kind, provider_id)
);

CREATE TABLE wh.fact_encounter (
    encounter_id          uuid NOT NULL,
    patient_id            uuid NOT NULL,
    facility_id           text NOT NULL,
    attending_id          text,
    admission_date        date NOT NULL,
    discharge_date        date NOT NULL,
    los_days              smallint NOT NULL CHECK (los_days BETWEEN 0 AND 365),
    age_at_admission      smallint NOT NULL CHECK (age_at_admission BETWEEN 0 AND 120),
    admission_type        text NOT NULL CHECK (admission_type IN
        ('emergency', 'urgent', 'elective', 'newborn', 'trauma', 'unknown')),
    admission_source      text NOT NULL CHECK (admission_source IN
        ('ed', 'physician_referral', 'clinic', 'transfer_hospital', 'transfer_snf', 'other', 'unknown')),
    discharge_disposition text NOT NULL CHECK (discharge_disposition IN
        ('home', 'home_health', 'snf', 'rehab', 'long_term', 'transfer_acute', 'ama', 'hospice',
         'expired', 'other', 'unknown')),
    department            text,
    drg                   text,
    total_cost            numeric(12, 2) NOT NULL CHECK (total_cost BETWEEN 0 AND 10000000),
    source                text NOT NULL,
    batch_id              bigint NOT NULL,
    CHECK (discharge_date >= admission_date),
    CHECK (los_days = discharge_date - admission_date),
    PRIMARY KEY (encounter_id, admission_date)
) PARTITION BY RANGE (admission_date);
CREATE INDEX fact_encounter_patient ON wh.fact_encounter (patient_id, admission_date);
CREATE INDEX fact_encounter_facility ON wh.fact_encounter (facility_id, discharge_date);

-- Yearly partitions of the fact tables (by admission date) are created on demand.
CREATE FUNCTION wh.ensure_partition(parent text, y integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass(format('wh.%s_y%s', parent, y)) IS NULL THEN
        EXECUTE format('CREATE TABLE wh.%I PARTITION OF wh.%I FOR VALUES FROM (%L) TO (%L)',
                       format('%s_y%s', parent, y), parent, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    END IF;
END $$;

-- Bulk loading. Inserting many rows into indexed tables keyed by random
-- pseudonyms is dominated by index maintenance (about 3x the insert itself).
-- So a batch writes its fact rows into wh.load_<parent>, a partitioned table
-- created in the batch's transaction: for a year that has no partition yet the
-- load partition has the final name, carries no index, and (wal_level=minimal)
-- is not WAL-logged; bulk_finish then ATTACHes it, which builds its indexes by
-- sorting. Rows of years that already exist are inserted the ordinary way.
CREATE FUNCTION wh.bulk_begin(parent text, years integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE y integer; part text;
BEGIN
    EXECUTE format('CREATE TABLE wh.%I (LIKE wh.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                   ' PARTITION BY RANGE (admission_date)', 'load_' || parent, parent);
    FOREACH y IN ARRAY years LOOP
        part := format('%s_y%s', parent, y);
        IF to_regclass('wh.' || part) IS NOT NULL THEN part := 'load_' || part; END IF;
        EXECUTE format('CREATE TABLE wh.%I PARTITION OF wh.%I FOR VALUES FROM (%L) TO (%L)',
                       part, 'load_' || parent, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    END LOOP;
END $$;

CREATE FUNCTION wh.bulk_finish(parent text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE part text; y integer;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = format('wh.%I', 'load_' || parent)::regclass ORDER BY 1 LOOP
        IF part LIKE 'load\_%' THEN
            EXECUTE format('INSERT INTO wh.%I SELECT * FROM wh.%I', parent, part);
        ELSE
            y := substring(part FROM '_y([0-9]+)$')::integer;
            EXECUTE format('ALTER TABLE wh.%I DETACH PARTITION wh.%I', 'load_' || parent, part);
            EXECUTE format('ALTER TABLE wh.%I ATTACH PARTITION wh.%I FOR VALUES FROM (%L) TO (%L)',
                           parent, part, make_date(y, 1, 1), make_date(y + 1, 1, 1));
        END IF;
    END LOOP;
    EXECUTE format('DROP TABLE wh.%I', 'load_' || parent);
END $$;

-- seq 0 is the admitting diagnosis (SynPUF), 1 the principal, 2.. secondary.
-- Diagnoses and procedures carry their encounter's admission date, by which
-- they are partitioned like the encounters (and which the feature queries use).
CREATE TABLE wh.fact_diagnosis (
    encounter_id          uuid NOT NULL,
    admission_date        date NOT NULL,
    seq                   smallint NOT NULL CHECK (seq BETWEEN 0 AND 99),
    code_system           text NOT NULL CHECK (code_system IN ('icd9', 'icd10')),
    code                  text NOT NULL CHECK (code ~ '^[A-Z0-9]{3,7}$'),
    present_on_admission  char(1) CHECK (present_on_admission IN ('Y', 'N', 'U', 'W')),
    batch_id              bigint NOT NULL,
    PRIMARY KEY (encounter_id, seq, admission_date)
) PARTITION BY RANGE (admission_date);

CREATE TABLE wh.fact_procedure (
    encounter_id   uuid NOT NULL,
    admission_date date NOT NULL,
    seq            smallint NOT NULL CHECK (seq BETWEEN 1 AND 99),
    code_system    text NOT NULL CHECK (code_system IN ('icd9', 'icd10')),
    code           text NOT NULL CHECK (code ~ '^[A-Z0-9]{2,7}$'),
    procedure_date date,
    batch_id       bigint NOT NULL,
    PRIMARY KEY (encounter_id, seq, admission_date)
) PARTITION BY RANGE (admission_date);

-- Audit trail: append-only for the application.
CREATE TABLE audit.events (
    event_id bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL DEFAULT session_user,
    action   text NOT NULL,
    object   text,
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE FUNCTION audit.forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.forbid_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit.events FROM PUBLIC;
