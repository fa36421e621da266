-- 017_shards: the shards of a sharded warehouse (prognos db shards, engine/shards.c).
-- Each shard is a PostgreSQL server reached through postgres_fdw (foreign server
-- px_shard_<id>); `distribute` turns the fact tables into PARTITION BY HASH
-- (patient_id) tables whose partitions are foreign tables on the shards (schema
-- px_shard there), so that a patient's stays, diagnoses and procedures, and so
-- every feature window, live on one shard. The dimensions stay here (README,
-- Scale-out). conninfo never holds a password: that is in the user mapping.
CREATE TABLE wh.shards (
    shard_id    integer PRIMARY KEY CHECK (shard_id >= 0),
    server_name text NOT NULL UNIQUE CHECK (server_name ~ '^px_shard_[0-9]+$'),
    conninfo    text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    added_by    text NOT NULL DEFAULT session_user
);
