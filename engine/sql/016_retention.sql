-- 016_retention: retention of the fact tables' yearly partitions (prognos db
-- retention, engine/retention.c). pg_partman applies the policy: its part_config
-- holds each fact table's retention and its drop_partition_time() detaches,
-- drops or moves (archive) the expired partitions. pg_partman identifies a
-- child's period by its bounds but orders and names children by the suffix after
-- the last '_p' (fact_procedure_y2020 would read 'rocedure_y2020' as a year), so
-- the yearly partitions are renamed here from <parent>_yYYYY to pg_partman's
-- <parent>_pYYYY and the loader's functions create them under that name.
-- Partition creation stays with the loader (on demand, one per admission year,
-- attached after a bulk load): pg_partman registers the tables with automatic
-- maintenance off, so it never pre-creates years (which would disable the
-- loader's unindexed-load-then-attach path) nor adds a default partition.
-- The extension itself is created by `prognos db retention set` (CREATE
-- EXTENSION pg_partman needs a superuser; on an external server the DBA runs it).
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE n.nspname = 'wh' AND p.relname IN ('fact_encounter', 'fact_diagnosis', 'fact_procedure')
               AND c.relname ~ '_y[0-9]{4}$' LOOP
        EXECUTE format('ALTER TABLE wh.%I RENAME TO %I', r.relname,
                       regexp_replace(r.relname, '_y([0-9]{4})$', '_p\1'));
    END LOOP;
END $$;

-- One row per fact table with a policy: partitions whose whole period ended
-- more than older_than before now are removed by `prognos db retention apply`.
-- detach: the partition becomes a standalone table in wh (no longer read);
-- drop: dropped; archive: written to a gzip'd file (its SHA-256 recorded), then
-- dropped.
CREATE TABLE wh.retention_policy (
    table_name text PRIMARY KEY CHECK (table_name IN ('fact_encounter', 'fact_diagnosis', 'fact_procedure')),
    older_than interval NOT NULL CHECK (older_than >= interval '1 day'),
    action     text NOT NULL CHECK (action IN ('detach', 'drop', 'archive')),
    set_at     timestamptz NOT NULL DEFAULT now(),
    set_by     text NOT NULL DEFAULT session_user
);

-- Every partition retention removed: the period it held (what features and KPIs
-- refuse), what became of it, and for an archive the file and its SHA-256.
-- archived_at is NULL while an archive's partition waits in wh_retired (moved
-- there by pg_partman, written and dropped by the same or the next apply).
CREATE TABLE wh.retention_removed (
    table_name     text NOT NULL,
    partition_name text NOT NULL,
    period_start   date NOT NULL,
    period_end     date NOT NULL CHECK (period_end > period_start),  -- exclusive
    action         text NOT NULL CHECK (action IN ('detach', 'drop', 'archive')),
    removed_at     timestamptz NOT NULL DEFAULT now(),
    removed_by     text NOT NULL DEFAULT session_user,
    archive_file   text,
    archive_sha256 char(64) CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
    archive_bytes  bigint CHECK (archive_bytes >= 0),
    archive_rows   bigint CHECK (archive_rows >= 0),
    archived_at    timestamptz,
    PRIMARY KEY (table_name, period_start),
    CHECK (action <> 'archive' OR archived_at IS NULL OR (archive_file IS NOT NULL AND archive_sha256 IS NOT NULL))
);
CREATE SCHEMA wh_retired;

-- Raises a clear error when [p_from, p_to) overlaps a period removed from any
-- fact table: a KPI or feature over it would be computed on partial data.
CREATE FUNCTION wh.retention_check(p_from date, p_to date, p_what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE r record;
BEGIN
    SELECT string_agg(format('%s %s..%s (%s %s)', table_name, period_start, period_end - 1, action,
                             to_char(removed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')), '; ' ORDER BY period_start, table_name)
               AS list, min(period_start) AS lo, max(period_end) AS hi
      INTO r FROM wh.retention_removed WHERE period_start < p_to AND period_end > p_from;
    IF r.list IS NOT NULL THEN
        RAISE EXCEPTION '% covers % to %, which retention removed', p_what, p_from, p_to - 1
            USING ERRCODE = 'data_exception', DETAIL = 'removed: ' || r.list,
                  HINT = 'retention removes whole years; ask for a period from ' || r.hi || ' on (prognos db retention show)';
    END IF;
END $$;

-- Raises a clear error when some fact table still holds a period that another
-- one lost (a stay whose diagnoses were removed but not the stay): features of
-- such stays would be computed on partial data.
CREATE FUNCTION wh.retention_check_partial(p_what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE r record;
BEGIN
    SELECT string_agg(format('%s %s..%s', x.table_name, x.period_start, x.period_end - 1), '; ') AS list
      INTO r
      FROM wh.retention_removed x
     WHERE EXISTS (SELECT 1 FROM wh.fact_encounter e
                   WHERE e.admission_date >= x.period_start AND e.admission_date < x.period_end);
    IF r.list IS NOT NULL THEN
        RAISE EXCEPTION '% would read stays whose rows retention removed from another fact table', p_what
            USING ERRCODE = 'data_exception', DETAIL = 'removed while the stays remain: ' || r.list,
                  HINT = 'give wh.fact_encounter, wh.fact_diagnosis and wh.fact_procedure the same policy '
                         '(prognos db retention set --table all) and apply it';
    END IF;
END $$;

-- Whether retention removed a partition at or after t: a table derived from the
-- warehouse before then (a feature table) is out of date even with no new batch.
CREATE FUNCTION wh.retention_removed_since(t timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT EXISTS (SELECT 1 FROM wh.retention_removed WHERE removed_at >= t) $$;

-- Raises a clear error when a feature table still holds stays of a removed
-- period (built before retention removed it): KPIs scored from it would report
-- a period the warehouse no longer has. A rebuild of the features clears it.
CREATE FUNCTION wh.retention_check_features(p_what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE t text; r record; hit text := '';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM wh.retention_removed) THEN RETURN; END IF;
    FOREACH t IN ARRAY ARRAY['features.readmission', 'features.mortality', 'features.los'] LOOP
        IF to_regclass(t) IS NULL THEN CONTINUE; END IF;
        EXECUTE format('SELECT count(*) AS n, min(f.admission_date) AS lo, max(f.admission_date) AS hi FROM %s f'
                       ' WHERE EXISTS (SELECT 1 FROM wh.retention_removed x WHERE f.admission_date >= x.period_start'
                       ' AND f.admission_date < x.period_end)', t) INTO r;
        IF r.n > 0 THEN
            hit := hit || format('%s holds %s stays admitted %s..%s, in removed periods. ', t, r.n, r.lo, r.hi);
        END IF;
    END LOOP;
    IF hit <> '' THEN
        RAISE EXCEPTION '% would report periods that retention removed: the feature tables were built before', p_what
            USING ERRCODE = 'data_exception', DETAIL = rtrim(hit),
                  HINT = 'rebuild them: prognos features build';
    END IF;
END $$;

-- The loader's partition functions (001, 006) under pg_partman's names, and
-- refusing to recreate a year that retention removed: a load cannot bring back
-- a removed period in part.
CREATE FUNCTION wh.refuse_removed_year(parent text, y integer) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM wh.retention_removed
     WHERE table_name = parent AND period_start <= make_date(y, 1, 1) AND period_end > make_date(y, 1, 1);
    IF FOUND THEN
        RAISE EXCEPTION 'cannot load stays admitted in % into wh.%: retention removed that year', y, parent
            USING ERRCODE = 'data_exception',
                  DETAIL = format('%s %s on %s', r.partition_name, r.action, r.removed_at),
                  HINT = 'remove the rows of removed years from the extract';
    END IF;
END $$;

-- A fact table that `prognos db shards distribute` hash-partitioned over
-- postgres_fdw shards (017) has no yearly partitions to create: the loader
-- refuses it by name rather than failing on a partition bound.
CREATE FUNCTION wh.assert_loadable(parent text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = format('wh.%I', parent)::regclass
               AND partstrat = 'h') THEN
        RAISE EXCEPTION 'cannot load into wh.%: the warehouse is sharded (hash partitions on postgres_fdw shards)', parent
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'the loader does not write to shards yet: load a single-node warehouse and run prognos db shards distribute';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION wh.ensure_partition(parent text, y integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wh.assert_loadable(parent);
    PERFORM wh.refuse_removed_year(parent, y);  -- also when a detached table keeps the name
    IF to_regclass(format('wh.%s_p%s', parent, y)) IS NULL THEN
        EXECUTE format('CREATE TABLE wh.%I PARTITION OF wh.%I FOR VALUES FROM (%L) TO (%L)',
                       format('%s_p%s', parent, y), parent, make_date(y, 1, 1), make_date(y + 1, 1, 1));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION wh.bulk_begin(parent text, years integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE y integer; part text; loadp regclass;
BEGIN
    PERFORM wh.assert_loadable(parent);
    IF to_regclass(format('wh.%I', 'load_' || parent)) IS NULL THEN
        EXECUTE format('CREATE TABLE wh.%I (LIKE wh.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                       ' PARTITION BY RANGE (admission_date)', 'load_' || parent, parent);
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
DECLARE part text; y integer; filled boolean;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = format('wh.%I', 'load_' || parent)::regclass ORDER BY 1 LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM wh.%I)', part) INTO filled;
        IF NOT filled THEN
            CONTINUE; -- dropped with the load table
        END IF;
        PERFORM wh.refuse_removed_year(parent, substring(part FROM '_p([0-9]+)$')::integer);
        IF part LIKE 'load\_%' THEN
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

-- The same check for a KPI period as `prognos kpi report --period` names it:
-- 2023, 2023-Q2, 2023-06. all and the period kinds are not checked: they mean
-- the data that is there.
CREATE FUNCTION wh.retention_check_period(p_period text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE d date; e date;
BEGIN
    IF p_period ~ '^[0-9]{4}$' THEN
        d := make_date(p_period::int, 1, 1); e := d + interval '1 year';
    ELSIF p_period ~ '^[0-9]{4}-Q[1-4]$' THEN
        d := make_date(left(p_period, 4)::int, 3 * right(p_period, 1)::int - 2, 1); e := d + interval '3 months';
    ELSIF p_period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$' THEN
        d := make_date(left(p_period, 4)::int, right(p_period, 2)::int, 1); e := d + interval '1 month';
    ELSE
        RETURN;
    END IF;
    PERFORM wh.retention_check(d, e, format('KPI period %s', p_period));
END $$;

-- Applies the policy of one fact table with pg_partman (drop_partition_time in
-- the extension's schema, reading partman.part_config), in the caller's
-- transaction, and records each partition it removed in wh.retention_removed
-- and audit.events. Returns the removed partitions. The periods are read from
-- the partition bounds before pg_partman runs.
CREATE FUNCTION wh.retention_run(p_table text, p_partman text)
RETURNS TABLE (partition_name text, period_start date, period_end date, action text)
LANGUAGE plpgsql AS $$
DECLARE pol wh.retention_policy; n integer;
BEGIN
    SELECT * INTO pol FROM wh.retention_policy WHERE table_name = p_table;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no retention policy for wh.%', p_table USING HINT = 'prognos db retention set';
    END IF;
    CREATE TEMP TABLE px_ret_before ON COMMIT DROP AS
    SELECT c.relname::text AS relname,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $r$FROM \('([0-9-]+)'\) TO \('([0-9-]+)'\)$r$))[1]::date AS lo,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $r$FROM \('([0-9-]+)'\) TO \('([0-9-]+)'\)$r$))[2]::date AS hi
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = format('wh.%I', p_table)::regclass;
    EXECUTE format('SELECT %I.drop_partition_time($1)', p_partman) INTO n USING 'wh.' || p_table;
    RETURN QUERY
    WITH gone AS (
        SELECT b.relname, b.lo, b.hi FROM px_ret_before b
         WHERE NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                           WHERE i.inhparent = format('wh.%I', p_table)::regclass AND c.relname = b.relname)),
    ins AS (
        INSERT INTO wh.retention_removed (table_name, partition_name, period_start, period_end, action)
        SELECT p_table, g.relname, g.lo, g.hi, pol.action FROM gone g
        RETURNING retention_removed.partition_name, retention_removed.period_start, retention_removed.period_end,
                  retention_removed.action),
    aud AS (
        INSERT INTO audit.events (action, object, detail)
        SELECT 'retention.remove', 'wh.' || ins.partition_name,
               jsonb_build_object('table', 'wh.' || p_table, 'period_start', ins.period_start,
                                  'period_end', ins.period_end, 'action', ins.action,
                                  'older_than', pol.older_than::text, 'by', 'pg_partman drop_partition_time')
          FROM ins)
    SELECT ins.partition_name, ins.period_start, ins.period_end, ins.action FROM ins ORDER BY 2;
    DROP TABLE px_ret_before;
END $$;
