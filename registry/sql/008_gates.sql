-- 008_gates: quality gates (registry/gates.c). Each version records the verdict
-- of its gates at registration: {"passed", "accepted", "failed": [...], "checks":
-- [...], "params"}; '{}' for versions registered before gates existed (not
-- evaluated). A version whose gates failed is not made champion, served or used
-- to adjust KPIs unless accepted.
ALTER TABLE registry.versions ADD COLUMN gates jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(gates) = 'object');

-- A KPI measure whose risk model is missing or failed its gates is computed crude:
-- its predictions rows carry the observed outcome only, and its results name no model.
ALTER TABLE kpi.predictions ALTER COLUMN model_version DROP NOT NULL,
    ALTER COLUMN predicted DROP NOT NULL,
    ALTER COLUMN expected DROP NOT NULL;
DO $$
DECLARE c text;
BEGIN
    -- the unnamed CHECK that tied model_version to the measure
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'kpi.results'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%model_version IS NULL%'
    LOOP
        EXECUTE format('ALTER TABLE kpi.results DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
ALTER TABLE kpi.results ADD CONSTRAINT results_model_for_risk_measures
    CHECK (measure NOT IN ('volume', 'cost') OR model_version IS NULL);
