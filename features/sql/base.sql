-- base.sql: the per-stay facts every feature set starts from, as temporary
-- tables: px_enc (one row per stay) and px_mask (the flags and scores of each
-- distinct comorbidity mask) stay in the session, so that the sets built on one
-- connection from the same batches share them (build.c drops and rebuilds them
-- when the batches change); the intermediates go at the end of the transaction.
-- Point in time: a stay's own diagnoses come in two masks (all codes, known at
-- discharge; codes present on admission, known at admission), and a prior stay
-- counts only if admitted 1-365 days before; its diagnoses only once it was
-- discharged.

-- Where this runs. The three statements px_enc_dx, px_enc_px and px_pairs read
-- only the fact tables and group by the patient (the hash key of a sharded
-- warehouse) and the stay: on a sharded warehouse (px_shards_tune sets
-- prognos.sharded, and partitionwise aggregate and join) PostgreSQL runs each of
-- them whole on every shard, the shard's join and aggregates in its Remote SQL
-- (postgres_fdw pushdown), and only per-stay results cross to the coordinator;
-- the rest joins those to each other and to the coordinator's dimensions. Local
-- joins are switched off for the three there so that the planner never prefers
-- fetching the rows to join them here (postgres_fdw's costs without remote
-- estimates would), and back on after them. On a single node prognos.sharded is
-- unset and nothing changes.
SELECT set_config(g, 'off', true) FROM unnest(ARRAY['enable_hashjoin', 'enable_mergejoin', 'enable_nestloop']) g
WHERE current_setting('prognos.sharded', true) = 'on';

-- Comorbidity categories of a code: a map row matches a code it is a prefix of
-- (the rule of features.code_mask()), so a code's mask is the OR of the masks of
-- its first 3..7 characters, looked up in one jsonb object ('icd10:I50' -> the
-- bits of the categories with that prefix) built from the map per statement (an
-- InitPlan: a shard gets it as a query parameter, so the lookup runs there; a
-- map held on the coordinator could not be joined on the shards). A prefix
-- absent from the map gives NULL, which bit_or skips: one bit_or per prefix
-- length (coalesce does not run on a shard in PostgreSQL 15's postgres_fdw).
-- The cost is the lookups, so a row makes each at most once: a prefix length
-- only up to the code's length (a longer one is the code again) and the map's
-- longest prefix (ml), and the two masks of a stay's codes are built from
-- disjoint FILTERs (a filter is evaluated before its aggregate's argument):
-- the codes not present on admission (n) and the others (p), all = n | p.
-- seq 0 is the admitting diagnosis (SynPUF), usually repeated as the principal:
-- it adds to the masks but is not counted in n_dx. POA may be NULL, Y, U, W or N;
-- only N (not present on admission) is unknown at admission.
-- (Keyed by encounter_id alone: the loader keeps it unique in the warehouse.)
-- Statistics: each intermediate is ANALYZEd for the columns later statements join
-- on only. ANALYZE reads each column of its sample with heap_getattr, which behind
-- a variable-width column walks the row from its start: the whole of px_enc took
-- 0.2 s for 60,000 stays (the five tables 0.33 s, a quarter of this file), the
-- columns used 0.07 s (0.13 s). A temporary table is never autovacuumed, so a
-- partial ANALYZE is all it gets.
CREATE TEMP TABLE px_enc_dx ON COMMIT DROP AS
WITH pm AS (SELECT coalesce(jsonb_object_agg(k, mask), '{}') AS j, coalesce(max(len), 0) AS ml
            FROM (SELECT m.code_system || ':' || m.code_prefix AS k, bit_or(1::bigint << c.bit) AS mask,
                         max(length(m.code_prefix)) AS len
                  FROM features.comorbidity_map m JOIN features.comorbidity_category c USING (category)
                  GROUP BY 1) t)
SELECT encounter_id, n_dx::integer, n_dx_poa::integer,
       coalesce(n3, 0) | coalesce(n4, 0) | coalesce(n5, 0) | coalesce(n6, 0) | coalesce(n7, 0)
       | coalesce(p3, 0) | coalesce(p4, 0) | coalesce(p5, 0) | coalesce(p6, 0) | coalesce(p7, 0) AS mask_all,
       coalesce(p3, 0) | coalesce(p4, 0) | coalesce(p5, 0) | coalesce(p6, 0) | coalesce(p7, 0) AS mask_poa
FROM (SELECT d.patient_id, d.encounter_id,
             count(*) FILTER (WHERE d.seq >= 1) AS n_dx,
             count(*) FILTER (WHERE d.seq >= 1 AND d.present_on_admission IS DISTINCT FROM 'N') AS n_dx_poa,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 3)))::bigint)
                 FILTER (WHERE d.present_on_admission = 'N') AS n3,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 4)))::bigint)
                 FILTER (WHERE d.present_on_admission = 'N'
                          AND length(d.code) >= 4 AND (SELECT ml FROM pm) >= 4) AS n4,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 5)))::bigint)
                 FILTER (WHERE d.present_on_admission = 'N'
                          AND length(d.code) >= 5 AND (SELECT ml FROM pm) >= 5) AS n5,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 6)))::bigint)
                 FILTER (WHERE d.present_on_admission = 'N'
                          AND length(d.code) >= 6 AND (SELECT ml FROM pm) >= 6) AS n6,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 7)))::bigint)
                 FILTER (WHERE d.present_on_admission = 'N'
                          AND length(d.code) >= 7 AND (SELECT ml FROM pm) >= 7) AS n7,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 3)))::bigint)
                 FILTER (WHERE d.present_on_admission IS DISTINCT FROM 'N') AS p3,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 4)))::bigint)
                 FILTER (WHERE d.present_on_admission IS DISTINCT FROM 'N'
                          AND length(d.code) >= 4 AND (SELECT ml FROM pm) >= 4) AS p4,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 5)))::bigint)
                 FILTER (WHERE d.present_on_admission IS DISTINCT FROM 'N'
                          AND length(d.code) >= 5 AND (SELECT ml FROM pm) >= 5) AS p5,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 6)))::bigint)
                 FILTER (WHERE d.present_on_admission IS DISTINCT FROM 'N'
                          AND length(d.code) >= 6 AND (SELECT ml FROM pm) >= 6) AS p6,
             bit_or(((SELECT j FROM pm) -> (d.code_system || ':' || left(d.code, 7)))::bigint)
                 FILTER (WHERE d.present_on_admission IS DISTINCT FROM 'N'
                          AND length(d.code) >= 7 AND (SELECT ml FROM pm) >= 7) AS p7
      FROM wh.fact_diagnosis d
      GROUP BY d.patient_id, d.encounter_id) x;
ANALYZE px_enc_dx (encounter_id);

CREATE TEMP TABLE px_enc_px ON COMMIT DROP AS
SELECT encounter_id, n_px::integer, n_px_day0::integer
FROM (SELECT patient_id, encounter_id, count(*) AS n_px,
             count(*) FILTER (WHERE procedure_date = admission_date) AS n_px_day0
      FROM wh.fact_procedure GROUP BY patient_id, encounter_id) x;
ANALYZE px_enc_px (encounter_id);

-- Each stay's neighbours: one self-join of the patient's stays gives both the
-- prior stays admitted 1-365 days before (counts, 6-month window = 1-182 days;
-- and which they are, for their comorbidities below: those discharged by the
-- index admission, and those discharged later but by the index discharge) and
-- the first admission 1-30 days after the discharge (the readmission label;
-- never a feature).
-- A hash join on the patient: the planner overestimates this join's rows (the
-- date ranges; 1.1M estimated for 78,000 at 60,000 stays) and would otherwise
-- probe the patient's index on every partition for every stay, 2.5 times the CPU
-- (0.25 s against 0.09 s there). (On a sharded warehouse every local join method is
-- off here anyway, above.)
SELECT set_config('enable_nestloop', 'off', true);
CREATE TEMP TABLE px_pairs ON COMMIT DROP AS
SELECT encounter_id, least(5, n6)::smallint AS prior_adm_6m, least(5, n12)::smallint AS prior_adm_12m,
       least(4, ed6)::smallint AS ed_visits_6m, (next_adm - discharge_date)::smallint AS days_to_next_30d,
       prior_adm, prior_dis
FROM (SELECT i.patient_id, i.encounter_id, i.discharge_date,
             count(*) FILTER (WHERE p.admission_date < i.admission_date
                                AND p.admission_date >= i.admission_date - 182) AS n6,
             count(*) FILTER (WHERE p.admission_date < i.admission_date) AS n12,
             count(*) FILTER (WHERE p.admission_date < i.admission_date AND p.admission_date >= i.admission_date - 182
                                AND p.admission_source = 'ed') AS ed6,
             min(p.admission_date) FILTER (WHERE p.admission_date > i.discharge_date) AS next_adm,
             array_agg(p.encounter_id) FILTER (WHERE p.admission_date < i.admission_date
                                                 AND p.discharge_date <= i.admission_date) AS prior_adm,
             array_agg(p.encounter_id) FILTER (WHERE p.admission_date < i.admission_date
                                                 AND p.discharge_date > i.admission_date
                                                 AND p.discharge_date <= i.discharge_date) AS prior_dis
      FROM wh.fact_encounter i
      JOIN wh.fact_encounter p ON p.patient_id = i.patient_id
                              AND p.admission_date BETWEEN i.admission_date - 365 AND i.discharge_date + 30
                              AND (p.admission_date < i.admission_date OR p.admission_date > i.discharge_date)
      GROUP BY i.patient_id, i.encounter_id, i.discharge_date) x;
ANALYZE px_pairs (encounter_id);

-- back to the session's join methods (and to the coordinator's joins on a sharded
-- warehouse)
SELECT set_config(name, reset_val, true) FROM pg_settings
WHERE name = 'enable_nestloop'
   OR (name IN ('enable_hashjoin', 'enable_mergejoin') AND current_setting('prognos.sharded', true) = 'on');

-- The comorbidities of the prior stays known at the index admission (their
-- codes, of those discharged by then) and at the discharge: the per-stay masks
-- above, joined here (a few rows per stay: the lists came back aggregated).
CREATE TEMP TABLE px_pairs_mask ON COMMIT DROP AS
SELECT l.encounter_id, coalesce(bit_or(dx.mask_all) FILTER (WHERE l.by_admission), 0) AS mask_at_admission,
       coalesce(bit_or(dx.mask_all), 0) AS mask_at_discharge
FROM (SELECT encounter_id, unnest(prior_adm) AS prior, true AS by_admission FROM px_pairs WHERE prior_adm IS NOT NULL
      UNION ALL
      SELECT encounter_id, unnest(prior_dis), false FROM px_pairs WHERE prior_dis IS NOT NULL) l
JOIN px_enc_dx dx ON dx.encounter_id = l.prior
GROUP BY l.encounter_id;
ANALYZE px_pairs_mask (encounter_id);

-- One row per stay. age: the warehouse keeps the birth year only (as the
-- generator's covariate). cm_dis: the comorbidities known at discharge (all codes
-- of the stay, and of the prior stays discharged by then); cm_adm: known at
-- admission (the stay's codes present on admission, prior stays discharged by
-- then). Chronic-condition flags: SynPUF's beneficiary summary of the admission year.
CREATE TEMP TABLE px_enc AS
SELECT e.encounter_id, e.patient_id, e.facility_id, e.department, e.admission_date, e.discharge_date,
       e.source, e.los_days::integer AS los_days, e.admission_type, e.admission_source, e.discharge_disposition,
       p.sex::text AS sex, (extract(year FROM e.admission_date)::integer - p.birth_year)::smallint AS age_years,
       p.death_date,
       coalesce(dx.n_dx, 0) AS n_dx, coalesce(dx.n_dx_poa, 0) AS n_dx_poa,
       coalesce(pr.n_px, 0) AS n_px, coalesce(pr.n_px_day0, 0) AS n_px_day0,
       coalesce(nb.prior_adm_6m, 0) AS prior_adm_6m, coalesce(nb.prior_adm_12m, 0) AS prior_adm_12m,
       coalesce(nb.ed_visits_6m, 0) AS ed_visits_6m,
       coalesce(dx.mask_all, 0) | coalesce(pm.mask_at_discharge, 0) AS cm_dis,
       coalesce(dx.mask_poa, 0) | coalesce(pm.mask_at_admission, 0) AS cm_adm,
       nb.days_to_next_30d,
       y.alzheimer::integer::smallint AS cc_alzheimer, y.chf::integer::smallint AS cc_chf,
       y.chronic_kidney::integer::smallint AS cc_chronic_kidney, y.cancer::integer::smallint AS cc_cancer,
       y.copd::integer::smallint AS cc_copd, y.depression::integer::smallint AS cc_depression,
       y.diabetes::integer::smallint AS cc_diabetes, y.ischemic_heart::integer::smallint AS cc_ischemic_heart,
       y.osteoporosis::integer::smallint AS cc_osteoporosis, y.ra_oa::integer::smallint AS cc_ra_oa,
       y.stroke_tia::integer::smallint AS cc_stroke_tia, y.esrd::integer::smallint AS cc_esrd
FROM wh.fact_encounter e
JOIN wh.dim_patient p ON p.patient_id = e.patient_id
LEFT JOIN px_enc_dx dx ON dx.encounter_id = e.encounter_id
LEFT JOIN px_enc_px pr ON pr.encounter_id = e.encounter_id
LEFT JOIN px_pairs nb ON nb.encounter_id = e.encounter_id
LEFT JOIN px_pairs_mask pm ON pm.encounter_id = e.encounter_id
LEFT JOIN wh.patient_year y ON y.patient_id = e.patient_id AND y.year = extract(year FROM e.admission_date)::smallint;
ANALYZE px_enc (encounter_id, source, cm_dis, cm_adm, discharge_disposition, admission_date, discharge_date);

-- The flags, Charlson index and Elixhauser count of each distinct mask: far fewer
-- masks than stays, so the sets get them with one hash join instead of
-- evaluating ~350 bit operations per row.
CREATE TEMP TABLE px_mask AS
SELECT cm, @FLAGS@,
       @CHARLSON@ AS charlson_index, @ELIXCOUNT@ AS elix_count
FROM (SELECT cm_dis AS cm FROM px_enc UNION SELECT cm_adm FROM px_enc) m;
ALTER TABLE px_mask ADD PRIMARY KEY (cm);
ANALYZE px_mask (cm);
