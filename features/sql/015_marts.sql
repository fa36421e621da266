-- 015_marts: the mart schema. Its tables (cost of care, readmissions, provider
-- utilization) are created and replaced by `prognos features build --set marts`
-- (features/sql/marts.sql), not here: a mart is derived data, rebuilt from the
-- warehouse in one transaction, and documented in features/README.md.
CREATE SCHEMA mart;
