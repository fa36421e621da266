-- 019_code_patient: diagnoses and procedures carry their stay's patient
-- (patient_id), on a single node as on the shards. It is the hash key of a
-- sharded warehouse (017); with it on every warehouse the feature build groups a
-- stay's codes by (patient_id, encounter_id) and joins them to the patient's
-- other stays by patient_id, the same SQL on both, which PostgreSQL runs whole on
-- each shard (partitionwise aggregate and join, postgres_fdw pushdown; README,
-- Scale-out). Every loader writes it from the stay (canonical, FHIR, PostgreSQL
-- source, SynPUF, the SQL merges); the rows of earlier batches get it here.
-- A distributed table has it already (db shards distribute added it). Rows
-- whose stay is gone (retention removed the stays' year but kept their codes)
-- keep NULL: then the column stays nullable, with a notice.
DO $$
DECLARE t text; orphans bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY['fact_diagnosis', 'fact_procedure'] LOOP
        IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = format('wh.%I', t)::regclass
                   AND attname = 'patient_id' AND NOT attisdropped) THEN
            CONTINUE;
        END IF;
        EXECUTE format('ALTER TABLE wh.%I ADD COLUMN patient_id uuid', t);
        EXECUTE format('UPDATE wh.%I x SET patient_id = e.patient_id FROM wh.fact_encounter e'
                       ' WHERE e.encounter_id = x.encounter_id AND e.admission_date = x.admission_date', t);
        EXECUTE format('SELECT count(*) FROM wh.%I WHERE patient_id IS NULL', t) INTO orphans;
        IF orphans = 0 THEN
            EXECUTE format('ALTER TABLE wh.%I ALTER COLUMN patient_id SET NOT NULL', t);
        ELSE
            RAISE NOTICE 'wh.%: % rows have no stay in wh.fact_encounter (removed by retention?); patient_id stays NULL there', t, orphans;
        END IF;
    END LOOP;
END $$;
