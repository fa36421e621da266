-- 012_kpi_in_db: KPI runs score the feature tables inside PostgreSQL with the
-- risk models compiled to SQL (models/sql.c, kpi/score.c), so a run no longer
-- writes one row per stay. kpi.predictions becomes a view of the latest run's
-- predictions, computed on read by the SQL the run recorded in
-- kpi.runs.predictions_sql (executed dynamically, so the view holds no
-- dependency on the feature tables and a feature build may replace them; after
-- a rebuild the view shows the current table scored by the run's models).
-- Models that do not compile to SQL (SVMs) are scored in C and their scores kept
-- in kpi.scored_c (the latest run's only, replaced by each run).
DROP TABLE kpi.predictions;

CREATE TABLE kpi.scored_c (
    measure      text NOT NULL CHECK (measure IN ('readmission', 'mortality', 'los')),
    encounter_id uuid NOT NULL,
    predicted    double precision NOT NULL CHECK (predicted >= 0)
);

ALTER TABLE kpi.runs ADD COLUMN predictions_sql text;

CREATE FUNCTION kpi.latest_predictions()
RETURNS TABLE (run_id bigint, measure text, model_version integer, encounter_id uuid,
               predicted double precision, expected double precision, observed double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE q text;
BEGIN
    SELECT r.predictions_sql INTO q FROM kpi.runs r
     WHERE r.predictions_sql IS NOT NULL ORDER BY r.run_id DESC LIMIT 1;
    IF q IS NOT NULL THEN
        RETURN QUERY EXECUTE q;
    END IF;
END $$;

-- Predicted risk (readmission, mortality) or expected days (los) of each stay of
-- the feature tables in the latest KPI run (predicted), the value used as its
-- expectation (expected: predicted at the run's reference, see kpi.runs.models
-- reference_shift), and the observed outcome; crude measures have no prediction.
CREATE VIEW kpi.predictions AS SELECT * FROM kpi.latest_predictions();
