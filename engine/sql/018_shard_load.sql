-- 018_shard_load: loads into a distributed warehouse (engine/shard_load.c).
-- A sharded load runs the single-node loader unchanged on the coordinator, but
-- the rows it would add to a distributed fact table go to the session's pending
-- table pg_temp.px_pending_<table> (created by the loader); at the end the
-- loader sends each shard its rows in a transaction of its own, PREPAREs them
-- all ('px_<batch>_<shard>'), commits the batch here, then COMMIT PREPARED on
-- every shard (two-phase commit; recovery of a killed load: README, Scale-out).
-- These replace the loader's partition functions of 016 so that a distributed
-- table takes its load tables' rows into the pending table instead of yearly
-- partitions.

-- The fact table was hash-partitioned over the shards by `db shards distribute`.
CREATE FUNCTION wh.is_distributed(parent text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = format('wh.%I', parent)::regclass
                   AND partstrat = 'h')
$$;

-- A distributed fact table is written only by a sharded load (the session holds
-- its pending table): another writer would bypass two-phase commit.
CREATE OR REPLACE FUNCTION wh.assert_loadable(parent text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF wh.is_distributed(parent) AND to_regclass(format('pg_temp.%I', 'px_pending_' || parent)) IS NULL THEN
        RAISE EXCEPTION 'cannot load into wh.%: the warehouse is sharded and this session is not a sharded load', parent
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'load with prognos etl load: it writes each shard''s rows with two-phase commit';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION wh.ensure_partition(parent text, y integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wh.assert_loadable(parent);
    IF wh.is_distributed(parent) THEN
        RETURN;  -- the pending table is not partitioned; the shards' tables neither
    END IF;
    PERFORM wh.refuse_removed_year(parent, y);  -- also when a detached table keeps the name
    IF to_regclass(format('wh.%s_p%s', parent, y)) IS NULL THEN
        EXECUTE format('CREATE TABLE wh.%I PARTITION OF wh.%I FOR VALUES FROM (%L) TO (%L)',
                       format('%s_p%s', parent, y), parent, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION wh.bulk_begin(parent text, years integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE y integer; part text; loadp regclass; model text;
BEGIN
    PERFORM wh.assert_loadable(parent);
    -- the load table has the columns of what it feeds: the pending table of a
    -- distributed fact table (its patient_id, the hash key, filled before sending)
    model := CASE WHEN wh.is_distributed(parent) THEN format('pg_temp.%I', 'px_pending_' || parent)
                  ELSE format('wh.%I', parent) END;
    IF to_regclass(format('wh.%I', 'load_' || parent)) IS NULL THEN
        EXECUTE format('CREATE TABLE wh.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                       ' PARTITION BY RANGE (admission_date)', 'load_' || parent, model);
    END IF;
    loadp := format('wh.%I', 'load_' || parent)::regclass;
    FOREACH y IN ARRAY years LOOP
        part := format('%s_p%s', parent, y);
        IF to_regclass(format('wh.%I', 'load_' || part)) IS NOT NULL THEN CONTINUE; END IF;
        -- the loader asks for every year a stay could have (empty ones are dropped
        -- at the end): a removed year gets a load_ partition, refused by bulk_finish
        -- only when rows arrived in it (a detached table may hold the plain name)
        IF EXISTS (SELECT 1 FROM wh.retention_removed r WHERE r.table_name = parent
                   AND r.period_start <= make_date(y, 1, 1) AND r.period_end > make_date(y, 1, 1)) THEN
            part := 'load_' || part;
        ELSIF to_regclass(format('wh.%I', part)) IS NOT NULL THEN
            IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = format('wh.%I', part)::regclass
                       AND inhparent = loadp) THEN CONTINUE; END IF;
            part := 'load_' || part;
        END IF;
        EXECUTE format('CREATE TABLE wh.%I PARTITION OF wh.%I FOR VALUES FROM (%L) TO (%L)',
                       part, 'load_' || parent, make_date(y, 1, 1), make_date(y + 1, 1, 1));
        EXECUTE format('ALTER TABLE wh.%I ADD CONSTRAINT load_bounds CHECK (admission_date >= %L AND admission_date < %L)',
                       part, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION wh.bulk_finish(parent text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE part text; y integer; filled boolean; dist boolean := wh.is_distributed(parent);
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = format('wh.%I', 'load_' || parent)::regclass ORDER BY 1 LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM wh.%I)', part) INTO filled;
        IF NOT filled THEN
            CONTINUE; -- dropped with the load table
        END IF;
        PERFORM wh.refuse_removed_year(parent, substring(part FROM '_p([0-9]+)$')::integer);
        IF dist THEN
            EXECUTE format('INSERT INTO pg_temp.%I SELECT * FROM wh.%I', 'px_pending_' || parent, part);
        ELSIF part LIKE 'load\_%' THEN
            EXECUTE format('INSERT INTO wh.%I SELECT * FROM wh.%I', parent, part);
        ELSE
            y := substring(part FROM '_p([0-9]+)$')::integer;
            EXECUTE format('ALTER TABLE wh.%I DETACH PARTITION wh.%I', 'load_' || parent, part);
            EXECUTE format('ALTER TABLE wh.%I ATTACH PARTITION wh.%I FOR VALUES FROM (%L) TO (%L)',
                           parent, part, make_date(y, 1, 1), make_date(y + 1, 1, 1));
            EXECUTE format('ALTER TABLE wh.%I DROP CONSTRAINT load_bounds', part);
        END IF;
    END LOOP;
    EXECUTE format('DROP TABLE wh.%I', 'load_' || parent);
END $$;
