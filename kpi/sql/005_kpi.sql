-- 005_kpi: KPI runs, the risk models' per-encounter predictions, and the results.
-- A run is computed in one transaction and names everything it came from (model
-- versions, ETL batches, feature builds, method); results never change after.
-- Suppressed cells (fewer cases than the run's min_cases) keep their case count
-- and have NULL estimates, so nothing downstream can show them by mistake.

CREATE SCHEMA kpi;

CREATE TABLE kpi.runs (
    run_id         bigserial PRIMARY KEY,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    computed_by    text NOT NULL DEFAULT session_user,
    period_kinds   text[] NOT NULL,
    models         jsonb NOT NULL,      -- {"readmission": {"version", "algo", "feature_table", "label", "fingerprint", ...}, ...}
    source_batches bigint[] NOT NULL,   -- etl.batches the warehouse held
    inputs         jsonb NOT NULL,      -- feature tables scored: rows, last build
    method         jsonb NOT NULL,      -- conf, min_cases, byar_min_events, overdispersion, methods in words
    fingerprint    char(64) NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),  -- SHA-256 of the inputs and method
    data_first     date,                -- first and last discharge date in the warehouse
    data_last      date,
    encounters     bigint NOT NULL CHECK (encounters >= 0),
    scored         bigint NOT NULL CHECK (scored >= 0),
    seconds        double precision
);
CREATE INDEX runs_fingerprint ON kpi.runs (fingerprint);

-- Predicted risk (readmission, mortality) or expected days (los) of each stay of
-- the feature tables as the model gives it (predicted), the value used as its
-- expectation (expected: predicted at the run's reference, see kpi.runs.models
-- reference_shift), and the observed outcome. Holds the latest run only: a run
-- truncates it and refills it with COPY (no WAL under wal_level = minimal). No
-- index: it is read whole, joined to wh.fact_encounter and aggregated.
CREATE TABLE kpi.predictions (
    run_id        bigint NOT NULL,
    measure       text NOT NULL CHECK (measure IN ('readmission', 'mortality', 'los')),
    model_version integer NOT NULL CHECK (model_version > 0),
    encounter_id  uuid NOT NULL,
    predicted     double precision NOT NULL CHECK (predicted >= 0),
    expected      double precision NOT NULL CHECK (expected >= 0),
    observed      double precision NOT NULL CHECK (observed >= 0)
);

CREATE TABLE kpi.results (
    run_id         bigint NOT NULL REFERENCES kpi.runs ON DELETE CASCADE,
    measure        text NOT NULL CHECK (measure IN ('volume', 'readmission', 'mortality', 'los', 'cost')),
    period_kind    text NOT NULL CHECK (period_kind IN ('month', 'quarter', 'year', 'all')),
    period         text NOT NULL,       -- 2023-06, 2023-Q2, 2023, all
    period_start   date NOT NULL,
    period_end     date NOT NULL,
    unit_type      text NOT NULL CHECK (unit_type IN ('system', 'facility', 'department')),
    unit           text NOT NULL,       -- 'all' for the system
    n              bigint NOT NULL CHECK (n >= 0),  -- cases: stays in the measure's population
    observed       double precision,    -- events (rates), days (los), dollars (cost), stays (volume)
    expected       double precision,    -- sum of the model's predictions (risk-adjusted measures)
    rate           double precision,    -- crude: proportion, mean days, mean dollars
    rate_lo        double precision,    -- Wilson (proportions), Student t (means)
    rate_hi        double precision,
    expected_rate  double precision,    -- expected / n: what the case mix predicts
    oe             double precision,    -- observed / expected
    oe_lo          double precision,
    oe_hi          double precision,
    oe_method      text CHECK (oe_method IN ('exact-poisson', 'byar', 'robust-log')),
    rsr            double precision,    -- risk-standardized: oe x the system's crude rate
    rsr_lo         double precision,
    rsr_hi         double precision,
    eb_rate        double precision,    -- empirical-Bayes (AHRQ-style) smoothed rate
    eb_weight      double precision,    -- its reliability weight
    funnel_x       double precision,    -- precision on the funnel plot: expected events (rates), stays (los)
    funnel95_lo    double precision,    -- control limits of O/E at this precision
    funnel95_hi    double precision,
    funnel998_lo   double precision,
    funnel998_hi   double precision,
    funnel_phi     double precision,    -- over-dispersion factor applied (1 = none)
    funnel_var     double precision,    -- per-stay variance of the normal (los) funnel
    flag           text NOT NULL CHECK (flag IN ('worse', 'better', 'no_different', 'suppressed',
                                                  'reference', 'not_adjusted')),
    suppressed     boolean NOT NULL,
    model_name     text,
    model_version  integer,
    source_batches bigint[] NOT NULL,
    method         text NOT NULL,       -- in words: how the interval and flag were computed
    PRIMARY KEY (run_id, measure, period_kind, period, unit_type, unit),
    CHECK (NOT suppressed OR (rate IS NULL AND oe IS NULL AND rsr IS NULL AND eb_rate IS NULL)),
    CHECK ((model_version IS NULL) = (measure IN ('volume', 'cost')))
);

-- The newest run's results: what the report and the HTTP API show by default.
CREATE VIEW kpi.latest_results AS
    SELECT r.* FROM kpi.results r WHERE r.run_id = (SELECT max(run_id) FROM kpi.runs);
