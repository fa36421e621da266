-- 020_shard_retention: retention on a distributed warehouse (engine/retention.c).
-- pg_partman cannot manage the fact tables once `db shards distribute` made them
-- PARTITION BY HASH (patient_id) over postgres_fdw foreign tables: it manages
-- range (time) partition sets of local tables, and a year's rows are spread over
-- every shard's px_shard table. `prognos db retention apply` then applies
-- pg_partman's retention rule itself (a year goes when its whole period ended
-- more than older_than before now): it deletes (archive, drop) or moves (detach:
-- to px_shard.<table>_p<year> on each shard) the year's rows in one transaction
-- per shard, PREPAREs them all ('pxr_<run>_<shard>'), records the removal here
-- with the run's row below (the decision), then COMMIT PREPARED on every shard.
-- Recovery (prognos db shards recover, and the next load or apply) commits a
-- prepared pxr_ transaction whose run is recorded here and rolls back the others.
CREATE SEQUENCE wh.retention_run_seq;
CREATE TABLE wh.retention_runs (
    run_id     bigint PRIMARY KEY,
    shards     integer NOT NULL CHECK (shards >= 1),
    removed    integer NOT NULL CHECK (removed >= 1),   -- periods removed (rows of wh.retention_removed)
    decided_at timestamptz NOT NULL DEFAULT now(),
    decided_by text NOT NULL DEFAULT session_user
);
