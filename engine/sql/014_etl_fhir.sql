-- 014_etl_fhir.sql: FHIR R4 Bulk Data loads (`etl load --format fhir`).
-- A FHIR input holds resources the warehouse does not keep (other resource
-- types, Encounters that are not inpatient stays, Conditions coded only in
-- SNOMED CT): they are counted as skipped, by reason, so that every resource
-- read is loaded, rejected or skipped: rows_read = rows_loaded + rows_rejected
-- + rows_skipped. Two reject reasons for lines that are not resources, and a
-- warning for codes of a system the warehouse does not hold.
ALTER TABLE etl.batches DROP CONSTRAINT batches_format_check;
ALTER TABLE etl.batches ADD CONSTRAINT batches_format_check
    CHECK (format IN ('synpuf', 'canonical', 'postgres', 'fhir'));
ALTER TABLE etl.batches ADD COLUMN rows_skipped bigint NOT NULL DEFAULT 0 CHECK (rows_skipped >= 0);
ALTER TABLE etl.batches DROP CONSTRAINT batches_check;
ALTER TABLE etl.batches ADD CONSTRAINT batches_check
    CHECK (rows_read = rows_loaded + rows_rejected + rows_skipped);

ALTER TABLE etl.batch_files ADD COLUMN rows_skipped bigint NOT NULL DEFAULT 0 CHECK (rows_skipped >= 0);
ALTER TABLE etl.batch_files ADD COLUMN skipped jsonb;   -- {"reason": count} of the skipped resources
ALTER TABLE etl.batch_files DROP CONSTRAINT batch_files_check;
ALTER TABLE etl.batch_files ADD CONSTRAINT batch_files_check
    CHECK (rows_read = rows_loaded + rows_rejected + rows_skipped);

ALTER TABLE etl.rejects DROP CONSTRAINT rejects_reason_check;
ALTER TABLE etl.rejects ADD CONSTRAINT rejects_reason_check CHECK (reason IN (
    'csv_column_count', 'csv_quoting', 'csv_utf8', 'csv_too_long',
    'missing_field', 'invalid_date', 'invalid_number', 'invalid_enum', 'invalid_text',
    'invalid_icd9', 'invalid_icd10',
    'discharge_before_admission', 'future_date', 'death_before_admission', 'birth_after_admission',
    'age_out_of_range', 'los_out_of_range', 'cost_out_of_range', 'value_out_of_range',
    'unknown_patient', 'unknown_encounter', 'unknown_facility', 'unknown_provider',
    'duplicate_key',
    'fhir_json',        -- an NDJSON line that is not JSON
    'fhir_structure')); -- JSON that is not a resource: no resourceType, no valid id

ALTER TABLE etl.warnings DROP CONSTRAINT warnings_reason_check;
ALTER TABLE etl.warnings ADD CONSTRAINT warnings_reason_check
    CHECK (reason IN ('invalid_icd9_dropped', 'invalid_icd10_dropped', 'unknown_column',
                      'unmapped_code_system')); -- a Condition or Procedure coded only in another system: skipped
