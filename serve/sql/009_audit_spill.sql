-- 009_audit_spill: the server's audit spill file is replayed exactly once.
-- While the database is away the server appends the prediction records it holds
-- to $PROGNOS_HOME/audit/spill.bin in chunks, each with a random id; a chunk is
-- replayed in one transaction that also inserts its id here (ON CONFLICT DO
-- NOTHING), so a chunk replayed before a crash is skipped the next time.
CREATE TABLE audit.spill_chunks (
    chunk_id    uuid PRIMARY KEY,
    n           integer NOT NULL CHECK (n >= 1),
    replayed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER spill_chunks_no_update BEFORE UPDATE OR DELETE ON audit.spill_chunks
    FOR EACH ROW EXECUTE FUNCTION audit.forbid_change();
CREATE TRIGGER spill_chunks_no_truncate BEFORE TRUNCATE ON audit.spill_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit.spill_chunks FROM PUBLIC;
