-- 007_etl_extracts: what real extracts need of the canonical layout, and a
-- record of the loads that did not commit.
-- total_cost is optional (many EHR extracts carry no cost): NULL means unknown,
-- never zero, and cost measures leave such stays out.
ALTER TABLE wh.fact_encounter ALTER COLUMN total_cost DROP NOT NULL;
-- observation stays (outpatient status in a bed) are a type of their own
ALTER TABLE wh.fact_encounter DROP CONSTRAINT fact_encounter_admission_type_check;
ALTER TABLE wh.fact_encounter ADD CONSTRAINT fact_encounter_admission_type_check CHECK (admission_type IN
    ('emergency', 'urgent', 'elective', 'newborn', 'trauma', 'observation', 'unknown'));
-- columns of a file that are not in the layout: ignored, and said so once per file
ALTER TABLE etl.warnings DROP CONSTRAINT warnings_reason_check;
ALTER TABLE etl.warnings ADD CONSTRAINT warnings_reason_check
    CHECK (reason IN ('invalid_icd9_dropped', 'invalid_icd10_dropped', 'unknown_column'));

-- A load that failed or was rolled back (over --max-reject-rate, a bad file, a
-- lost connection) stores nothing, but its batch id was drawn: it is recorded
-- here, after the rollback and outside that transaction, so that 'etl status'
-- shows the failure and its reason instead of a silent gap in the batch ids.
-- etl.batches keeps only committed batches (features and models cite them).
CREATE TABLE etl.failed_batches (
    batch_id      bigint PRIMARY KEY,       -- drawn from etl.batches' sequence; never reused
    format        text NOT NULL,
    source        text NOT NULL,            -- as in etl.batches (no password)
    started_at    timestamptz NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    rows_read     bigint NOT NULL DEFAULT 0 CHECK (rows_read >= 0),     -- read before it stopped
    rows_rejected bigint NOT NULL DEFAULT 0 CHECK (rows_rejected >= 0), -- would have been rejected
    reason        text NOT NULL,            -- the error, or the reject summary
    loaded_by     text NOT NULL DEFAULT session_user
);
