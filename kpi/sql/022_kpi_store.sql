-- 022_kpi_store: kpi.result_rows' references to its run and its method checked once per
-- statement, not once per row. A run of `kpi compute` writes every row of the run in one COPY,
-- and the two foreign keys of 021 each ran a query and took a row lock per row: on 19,953 rows
-- (3,000 generated patients) the COPY took 401 ms with both, 252 with one and 127 with none.
-- The same guarantees, set-wise:
--   - a statement that inserts or updates rows fails (SQLSTATE 23503, as a foreign key would)
--     unless every run and method its rows name exists; it locks those runs' and methods' rows
--     FOR KEY SHARE, as a foreign key does, so that a run cannot be deleted under it (a run
--     deleted by a transaction that committed meanwhile is missing from the lock: refused);
--   - deleting runs deletes their rows (was ON DELETE CASCADE), truncating kpi.runs truncates
--     kpi.result_rows (a foreign key refused it), a run's id cannot change (was NO ACTION);
--   - kpi.methods is append-only (its ids are referenced and `kpi compute` only adds).
ALTER TABLE kpi.result_rows DROP CONSTRAINT result_rows_method_id_fkey,
                            DROP CONSTRAINT result_rows_run_id_fkey;

CREATE FUNCTION kpi.result_rows_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE want bigint; got bigint; bad text;
BEGIN
    SELECT count(DISTINCT run_id) INTO want FROM new_rows;
    SELECT count(*) INTO got FROM (SELECT 1 FROM kpi.runs r WHERE r.run_id IN (SELECT run_id FROM new_rows)
                                   FOR KEY SHARE) x;
    IF got < want THEN
        SELECT string_agg(DISTINCT n.run_id::text, ', ') INTO bad FROM new_rows n
        WHERE NOT EXISTS (SELECT 1 FROM kpi.runs r WHERE r.run_id = n.run_id);
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = format('kpi.result_rows names a run that is not in kpi.runs: %s', coalesce(bad, '(deleted meanwhile)'));
    END IF;
    SELECT count(DISTINCT method_id) INTO want FROM new_rows;
    SELECT count(*) INTO got FROM (SELECT 1 FROM kpi.methods m WHERE m.method_id IN (SELECT method_id FROM new_rows)
                                   FOR KEY SHARE) x;
    IF got < want THEN
        SELECT string_agg(DISTINCT n.method_id::text, ', ') INTO bad FROM new_rows n
        WHERE NOT EXISTS (SELECT 1 FROM kpi.methods m WHERE m.method_id = n.method_id);
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = format('kpi.result_rows names a method that is not in kpi.methods: %s', coalesce(bad, '?'));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER result_rows_refs_insert AFTER INSERT ON kpi.result_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION kpi.result_rows_refs();
CREATE TRIGGER result_rows_refs_update AFTER UPDATE ON kpi.result_rows
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION kpi.result_rows_refs();

-- (A delete in a REPEATABLE READ or SERIALIZABLE transaction is refused: its cascade would see
-- only the rows of its snapshot, and rows another transaction committed for the run meanwhile
-- would stay without their run. A foreign key's cascade checks those with a newer snapshot;
-- nothing in prognos deletes runs, and an analyst's DELETE runs in READ COMMITTED by default.)
CREATE FUNCTION kpi.runs_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE kpi.result_rows;
    ELSIF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'delete KPI runs in a READ COMMITTED transaction (the default)',
            DETAIL = 'in ' || current_setting('transaction_isolation') || ' the rows of the deleted runs could not all be found';
    ELSE
        DELETE FROM kpi.result_rows WHERE run_id IN (SELECT run_id FROM old_runs);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_cascade_delete AFTER DELETE ON kpi.runs
    REFERENCING OLD TABLE AS old_runs FOR EACH STATEMENT EXECUTE FUNCTION kpi.runs_cascade();
CREATE TRIGGER runs_cascade_truncate AFTER TRUNCATE ON kpi.runs
    FOR EACH STATEMENT EXECUTE FUNCTION kpi.runs_cascade();

CREATE FUNCTION kpi.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', MESSAGE = TG_ARGV[0];
END $$;
CREATE TRIGGER runs_id_fixed BEFORE UPDATE OF run_id ON kpi.runs
    FOR EACH ROW WHEN (OLD.run_id IS DISTINCT FROM NEW.run_id)
    EXECUTE FUNCTION kpi.refuse_change('a KPI run''s id is referenced by its rows and cannot change');
CREATE TRIGGER methods_append_only BEFORE UPDATE OR DELETE ON kpi.methods
    FOR EACH ROW EXECUTE FUNCTION kpi.refuse_change('kpi.methods is append-only: KPI rows refer to its ids');
CREATE TRIGGER methods_no_truncate BEFORE TRUNCATE ON kpi.methods
    FOR EACH STATEMENT EXECUTE FUNCTION kpi.refuse_change('kpi.methods is append-only: KPI rows refer to its ids');
