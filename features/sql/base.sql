-- base.sql: the per-stay facts every feature set starts from, as temporary
-- tables: px_enc (one row per stay) and px_mask (the flags and scores of each
-- distinct comorbidity mask) stay in the session, so that the sets built on one
-- connection from the same batches share them (build.c drops and rebuilds them
-- when the batches change); the intermediates go at the end of the transaction.
-- Point in time: a stay's own diagnoses come in two masks (all codes, known at
-- discharge; codes present on admission, known at admission), and a prior stay
-- counts only if admitted 1-365 days before; its diagnoses only once it was
-- discharged.

-- Comorbidity categories of each distinct code in the warehouse (a few thousand),
-- so that the millions of diagnosis rows need one hash join, not a prefix search.
-- A map row matches a code it is a prefix of: the code's first 3..7 characters
-- are looked up (the rule of features.code_mask(), here as one hash join).
CREATE TEMP TABLE px_code_mask ON COMMIT DROP AS
WITH codes AS MATERIALIZED (SELECT DISTINCT code_system, code FROM wh.fact_diagnosis)
SELECT c.code_system, c.code, bit_or(1::bigint << k.bit) AS mask
FROM codes c
CROSS JOIN LATERAL (VALUES (left(c.code, 3)), (left(c.code, 4)), (left(c.code, 5)), (left(c.code, 6)),
                           (left(c.code, 7))) p(prefix)
JOIN features.comorbidity_map m ON m.code_system = c.code_system AND m.code_prefix = p.prefix
JOIN features.comorbidity_category k ON k.category = m.category
GROUP BY c.code_system, c.code;
ANALYZE px_code_mask;

-- seq 0 is the admitting diagnosis (SynPUF), usually repeated as the principal:
-- it adds to the masks but is not counted in n_dx. POA may be NULL, Y, U, W or N;
-- only N (not present on admission) is unknown at admission.
-- (Keyed by encounter_id alone: the loader keeps it unique in the warehouse.)
CREATE TEMP TABLE px_enc_dx ON COMMIT DROP AS
SELECT d.encounter_id,
       count(*) FILTER (WHERE d.seq >= 1)::integer AS n_dx,
       count(*) FILTER (WHERE d.seq >= 1 AND d.present_on_admission IS DISTINCT FROM 'N')::integer AS n_dx_poa,
       coalesce(bit_or(m.mask), 0) AS mask_all,
       coalesce(bit_or(m.mask) FILTER (WHERE d.present_on_admission IS DISTINCT FROM 'N'), 0) AS mask_poa
FROM wh.fact_diagnosis d
LEFT JOIN px_code_mask m ON m.code_system = d.code_system AND m.code = d.code
GROUP BY d.encounter_id;
ANALYZE px_enc_dx;

-- Each stay's neighbours: one self-join over a narrow copy of the stays gives both
-- the prior stays of the same patient admitted 1-365 days before (counts, 6-month
-- window = 1-182 days, and their comorbidity masks known at the index admission
-- or discharge: prior stay discharged by then) and the first admission 1-30 days
-- after the discharge (the readmission label; never a feature).
CREATE TEMP TABLE px_narrow ON COMMIT DROP AS
SELECT e.encounter_id, e.patient_id, e.admission_date, e.discharge_date, e.admission_source,
       coalesce(dx.mask_all, 0) AS mask_all
FROM wh.fact_encounter e
LEFT JOIN px_enc_dx dx ON dx.encounter_id = e.encounter_id;
ANALYZE px_narrow;

CREATE TEMP TABLE px_pairs ON COMMIT DROP AS
SELECT i.encounter_id,
       least(5, count(*) FILTER (WHERE p.admission_date < i.admission_date
                                   AND p.admission_date >= i.admission_date - 182))::smallint AS prior_adm_6m,
       least(5, count(*) FILTER (WHERE p.admission_date < i.admission_date))::smallint AS prior_adm_12m,
       least(4, count(*) FILTER (WHERE p.admission_date < i.admission_date AND p.admission_date >= i.admission_date - 182
                                   AND p.admission_source = 'ed'))::smallint AS ed_visits_6m,
       coalesce(bit_or(p.mask_all) FILTER (WHERE p.admission_date < i.admission_date
                                             AND p.discharge_date <= i.admission_date), 0) AS mask_at_admission,
       coalesce(bit_or(p.mask_all) FILTER (WHERE p.admission_date < i.admission_date
                                             AND p.discharge_date <= i.discharge_date), 0) AS mask_at_discharge,
       (min(p.admission_date) FILTER (WHERE p.admission_date > i.discharge_date) - i.discharge_date)::smallint
           AS days_to_next_30d
FROM px_narrow i
JOIN px_narrow p ON p.patient_id = i.patient_id
                AND p.admission_date BETWEEN i.admission_date - 365 AND i.discharge_date + 30
                AND (p.admission_date < i.admission_date OR p.admission_date > i.discharge_date)
GROUP BY i.encounter_id, i.discharge_date;
ANALYZE px_pairs;

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
       coalesce(dx.mask_all, 0) | coalesce(nb.mask_at_discharge, 0) AS cm_dis,
       coalesce(dx.mask_poa, 0) | coalesce(nb.mask_at_admission, 0) AS cm_adm,
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
LEFT JOIN (SELECT encounter_id, count(*)::integer AS n_px,
                  count(*) FILTER (WHERE procedure_date = admission_date)::integer AS n_px_day0
           FROM wh.fact_procedure GROUP BY encounter_id) pr ON pr.encounter_id = e.encounter_id
LEFT JOIN px_pairs nb ON nb.encounter_id = e.encounter_id
LEFT JOIN wh.patient_year y ON y.patient_id = e.patient_id AND y.year = extract(year FROM e.admission_date)::smallint;
ANALYZE px_enc;

-- The flags, Charlson index and Elixhauser count of each distinct mask: far fewer
-- masks than stays, so the sets get them with one hash join instead of
-- evaluating ~350 bit operations per row.
CREATE TEMP TABLE px_mask AS
SELECT cm, @FLAGS@,
       @CHARLSON@ AS charlson_index, @ELIXCOUNT@ AS elix_count
FROM (SELECT cm_dis AS cm FROM px_enc UNION SELECT cm_adm FROM px_enc) m;
ALTER TABLE px_mask ADD PRIMARY KEY (cm);
ANALYZE px_mask;
