-- 004_serve: the prediction server's tables: API keys (hashed), the audit trail of
-- predictions, and drift alerts. No column holds an identifier of a patient or an
-- encounter: a prediction is recorded by request id, key id and model version.
-- Numbered 004 so it follows 003_registry; it does not depend on it.

CREATE SCHEMA serve;

-- secret_sha256: SHA-256 of the key's 256-bit random secret (hex); the secret
-- itself is shown once, when the key is created, and stored nowhere.
CREATE TABLE serve.api_keys (
    key_id        text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    name          text NOT NULL DEFAULT '',
    role          text NOT NULL CHECK (role IN ('predict', 'read', 'admin')),
    secret_sha256 text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT session_user,
    revoked_at    timestamptz
);

-- The audit trail of predictions: every answered predict request, written by the
-- server's audit thread in batches. At thousands of requests a second a row per
-- request costs the database more than the request cost the server, so a batch
-- is one row of parallel arrays (element i of every array is request i); the view
-- audit.predictions shows one row per request. at: when the answer was computed.
-- No identifier of a patient or an encounter is stored: key id, model version,
-- request id and counts.
CREATE TABLE audit.prediction_batches (
    batch_id     bigserial PRIMARY KEY,
    written_at   timestamptz NOT NULL DEFAULT now(),
    n            integer NOT NULL CHECK (n >= 1),
    at           timestamptz[] NOT NULL,
    key_id       text[] NOT NULL,
    model        text[] NOT NULL,
    version      integer[] NOT NULL,
    request_id   uuid[] NOT NULL,
    instances    integer[] NOT NULL,
    by_encounter integer[] NOT NULL,
    latency_us   integer[] NOT NULL,
    CHECK (cardinality(at) = n AND cardinality(key_id) = n AND cardinality(model) = n
           AND cardinality(version) = n AND cardinality(request_id) = n AND cardinality(instances) = n
           AND cardinality(by_encounter) = n AND cardinality(latency_us) = n)
);
ALTER TABLE audit.prediction_batches ALTER key_id SET COMPRESSION lz4, ALTER model SET COMPRESSION lz4,
    ALTER at SET COMPRESSION lz4, ALTER version SET COMPRESSION lz4, ALTER request_id SET COMPRESSION lz4,
    ALTER instances SET COMPRESSION lz4, ALTER by_encounter SET COMPRESSION lz4,
    ALTER latency_us SET COMPRESSION lz4;
CREATE INDEX prediction_batches_written ON audit.prediction_batches (written_at);
CREATE TRIGGER prediction_batches_no_update BEFORE UPDATE OR DELETE ON audit.prediction_batches
    FOR EACH ROW EXECUTE FUNCTION audit.forbid_change();
CREATE TRIGGER prediction_batches_no_truncate BEFORE TRUNCATE ON audit.prediction_batches
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit.prediction_batches FROM PUBLIC;

-- request_id as the server shows it (32 hex digits, no hyphens)
CREATE VIEW audit.predictions AS
    SELECT u.at, u.key_id, u.model, u.version, replace(u.request_id::text, '-', '') AS request_id,
           u.instances, u.by_encounter, u.latency_us, b.written_at, b.batch_id
    FROM audit.prediction_batches b
    CROSS JOIN LATERAL unnest(b.at, b.key_id, b.model, b.version, b.request_id, b.instances, b.by_encounter,
                              b.latency_us) AS u(at, key_id, model, version, request_id, instances, by_encounter,
                                                 latency_us);

-- A drift alert: one variable (a feature, or 'score') of one model version
-- failing one test in a window. An alert stays open while later windows keep
-- failing (last_at and windows move) and is resolved by the first clean window.
CREATE TABLE serve.drift_alerts (
    alert_id    bigserial PRIMARY KEY,
    model       text NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    feature     text NOT NULL,
    test        text NOT NULL CHECK (test IN ('psi', 'ks', 'chi2')),
    statistic   double precision NOT NULL,
    threshold   double precision NOT NULL,
    p_value     double precision,
    psi         double precision,
    window_n    bigint NOT NULL CHECK (window_n > 0),
    reference_n bigint NOT NULL CHECK (reference_n > 0),
    source      text NOT NULL CHECK (source IN ('serve', 'drift check')),
    first_at    timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    windows     integer NOT NULL DEFAULT 1 CHECK (windows >= 1),
    resolved_at timestamptz
);
CREATE UNIQUE INDEX drift_alerts_open ON serve.drift_alerts (model, version, feature, test, source)
    WHERE resolved_at IS NULL;
CREATE INDEX drift_alerts_recent ON serve.drift_alerts (last_at DESC);
