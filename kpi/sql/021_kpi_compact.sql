-- 021_kpi_compact: a kpi.results row carried its method in words (about 440 bytes, one of a
-- dozen texts) and its run's ETL batch ids (the same array in every row of the run): a run over
-- 1,928 facilities (SynPUF samples 1 and 2) wrote 108,000 rows and 47 MB of that text. The rows now
-- live in kpi.result_rows, with the id of their method in kpi.methods (each text once) and without
-- the batch ids; kpi.results is a view with the same columns in the same order, the method and
-- the batch ids joined back (source_batches from kpi.runs, where the run records them). Readers
-- are unchanged; `kpi compute` writes kpi.result_rows.
CREATE TABLE kpi.methods (
    method_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    words     text NOT NULL UNIQUE   -- how a row's interval and flag were computed, in words
);
INSERT INTO kpi.methods (words) SELECT DISTINCT method FROM kpi.results ORDER BY 1;

-- the same columns, checks and primary key; the two moved columns dropped
CREATE TABLE kpi.result_rows (LIKE kpi.results INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE kpi.result_rows DROP COLUMN source_batches, DROP COLUMN method,
    ADD COLUMN method_id integer NOT NULL REFERENCES kpi.methods,
    ADD FOREIGN KEY (run_id) REFERENCES kpi.runs ON DELETE CASCADE;
INSERT INTO kpi.result_rows (run_id, measure, period_kind, period, period_start, period_end, unit_type, unit, n,
        observed, expected, rate, rate_lo, rate_hi, expected_rate, oe, oe_lo, oe_hi, oe_method, rsr, rsr_lo, rsr_hi,
        eb_rate, eb_weight, funnel_x, funnel95_lo, funnel95_hi, funnel998_lo, funnel998_hi, funnel_phi, funnel_var,
        flag, suppressed, model_name, model_version, sr, sr_lo, sr_hi, srsr, srsr_lo, srsr_hi, adjustment, oe_flag,
        method_id)
SELECT r.run_id, r.measure, r.period_kind, r.period, r.period_start, r.period_end, r.unit_type, r.unit, r.n,
       r.observed, r.expected, r.rate, r.rate_lo, r.rate_hi, r.expected_rate, r.oe, r.oe_lo, r.oe_hi, r.oe_method,
       r.rsr, r.rsr_lo, r.rsr_hi, r.eb_rate, r.eb_weight, r.funnel_x, r.funnel95_lo, r.funnel95_hi, r.funnel998_lo,
       r.funnel998_hi, r.funnel_phi, r.funnel_var, r.flag, r.suppressed, r.model_name, r.model_version,
       r.sr, r.sr_lo, r.sr_hi, r.srsr, r.srsr_lo, r.srsr_hi, r.adjustment, r.oe_flag, m.method_id
FROM kpi.results r JOIN kpi.methods m ON m.words = r.method;

DROP VIEW kpi.latest_results;
DROP TABLE kpi.results;
CREATE VIEW kpi.results AS
SELECT r.run_id, r.measure, r.period_kind, r.period, r.period_start, r.period_end, r.unit_type, r.unit, r.n,
       r.observed, r.expected, r.rate, r.rate_lo, r.rate_hi, r.expected_rate, r.oe, r.oe_lo, r.oe_hi, r.oe_method,
       r.rsr, r.rsr_lo, r.rsr_hi, r.eb_rate, r.eb_weight, r.funnel_x, r.funnel95_lo, r.funnel95_hi, r.funnel998_lo,
       r.funnel998_hi, r.funnel_phi, r.funnel_var, r.flag, r.suppressed, r.model_name, r.model_version,
       k.source_batches, m.words AS method, r.sr, r.sr_lo, r.sr_hi, r.srsr, r.srsr_lo, r.srsr_hi, r.adjustment,
       r.oe_flag
FROM kpi.result_rows r
JOIN kpi.runs k ON k.run_id = r.run_id
JOIN kpi.methods m ON m.method_id = r.method_id;
COMMENT ON VIEW kpi.results IS 'KPI results: kpi.result_rows with their method in words and their run''s ETL batches';

-- The newest run's results: what the report and the HTTP API show by default.
CREATE VIEW kpi.latest_results AS
    SELECT r.* FROM kpi.results r WHERE r.run_id = (SELECT max(run_id) FROM kpi.runs);
