-- 003_registry: the model registry. A version is immutable once registered: its
-- artifacts live under $PROGNOS_HOME/registry/<name>/<version>/ and are signed;
-- this row records their digests. Aliases (champion, challenger) move; every move
-- is appended to alias_history. Retraining decisions are appended to decisions.
-- Numbered 003 so it follows 002_features; it does not depend on it.

CREATE SCHEMA registry;

CREATE TABLE registry.versions (
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    version         integer NOT NULL CHECK (version >= 1),
    algo            text NOT NULL CHECK (algo ~ '^[a-z][a-z0-9_]*$'),
    task            text NOT NULL CHECK (task IN ('binary', 'regression')),
    params          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    feature_set     text NOT NULL DEFAULT '',      -- built-in set name, '' for a user's table
    feature_table   text NOT NULL,
    label           text NOT NULL,
    definition_hash text NOT NULL DEFAULT '' CHECK (definition_hash ~ '^([0-9a-f]{64})?$'),
    fingerprint     text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),  -- training data SHA-256
    split           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(split) = 'object'),
    metrics         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    source_batches  jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(source_batches) = 'array'),
    artifact_dir    text NOT NULL,
    manifest_sha256 text NOT NULL CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
    model_sha256    text NOT NULL CHECK (model_sha256 ~ '^[0-9a-f]{64}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT session_user,
    PRIMARY KEY (name, version)
);
-- the "same training run" lookup of px_reg_register
CREATE INDEX versions_identity ON registry.versions (name, fingerprint);

CREATE TABLE registry.aliases (
    name       text NOT NULL,
    alias      text NOT NULL CHECK (alias IN ('champion', 'challenger')),
    version    integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT session_user,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES registry.versions (name, version)
);

CREATE TABLE registry.alias_history (
    history_id   bigserial PRIMARY KEY,
    name         text NOT NULL,
    alias        text NOT NULL CHECK (alias IN ('champion', 'challenger')),
    from_version integer,                          -- NULL: the alias was not set before
    to_version   integer NOT NULL,
    reason       text NOT NULL DEFAULT '',
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL DEFAULT session_user,
    FOREIGN KEY (name, to_version) REFERENCES registry.versions (name, version)
);
CREATE INDEX alias_history_name ON registry.alias_history (name, history_id);

-- One row per retraining run (registry/train.c): what was compared, which gates
-- passed, and what was decided. candidate_version is NULL when training failed.
CREATE TABLE registry.decisions (
    decision_id       bigserial PRIMARY KEY,
    name              text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    at                timestamptz NOT NULL DEFAULT now(),
    candidate_version integer,
    champion_version  integer,
    decision          text NOT NULL CHECK (decision IN ('promoted', 'kept', 'failed', 'unchanged')),
    gates             jsonb NOT NULL DEFAULT '{}',
    metrics           jsonb NOT NULL DEFAULT '{}',
    message           text NOT NULL DEFAULT '',
    FOREIGN KEY (name, candidate_version) REFERENCES registry.versions (name, version),
    FOREIGN KEY (name, champion_version) REFERENCES registry.versions (name, version)
);
CREATE INDEX decisions_name ON registry.decisions (name, decision_id);

-- The history tables are append-only, like audit.events.
CREATE FUNCTION registry.forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry.% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER alias_history_no_update BEFORE UPDATE OR DELETE ON registry.alias_history
    FOR EACH ROW EXECUTE FUNCTION registry.forbid_change();
CREATE TRIGGER alias_history_no_truncate BEFORE TRUNCATE ON registry.alias_history
    FOR EACH STATEMENT EXECUTE FUNCTION registry.forbid_change();
CREATE TRIGGER decisions_no_update BEFORE UPDATE OR DELETE ON registry.decisions
    FOR EACH ROW EXECUTE FUNCTION registry.forbid_change();
CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON registry.decisions
    FOR EACH STATEMENT EXECUTE FUNCTION registry.forbid_change();
REVOKE UPDATE, DELETE, TRUNCATE ON registry.alias_history, registry.decisions FROM PUBLIC;
