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

-- One row per answered predict request, written in batches by the server's
-- audit thread (at: when the answer was computed, not when the row was written).
-- Append-only and written at the server's request rate: no serial key and no
-- b-tree to maintain per row; a BRIN index serves time-range queries, since rows
-- arrive in time order.
CREATE TABLE audit.predictions (
    at           timestamptz NOT NULL,
    key_id       text NOT NULL,
    model        text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    request_id   text NOT NULL CHECK (length(request_id) = 32),
    instances    integer NOT NULL CHECK (instances >= 1),
    by_encounter integer NOT NULL DEFAULT 0 CHECK (by_encounter BETWEEN 0 AND instances),
    latency_us   integer NOT NULL CHECK (latency_us >= 0),
    written_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX predictions_at ON audit.predictions USING brin (at);
CREATE TRIGGER predictions_no_update BEFORE UPDATE OR DELETE ON audit.predictions
    FOR EACH ROW EXECUTE FUNCTION audit.forbid_change();
CREATE TRIGGER predictions_no_truncate BEFORE TRUNCATE ON audit.predictions
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit.predictions FROM PUBLIC;

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
