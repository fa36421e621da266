-- mortality.sql: one row per stay with 30 days of follow-up after admission
-- (admission + 30 <= the last admission date in the warehouse). Prediction time:
-- the admission. Label death_30d: death 0-30 days after admission. Features are
-- what is known at admission (cm_adm: the stay's diagnoses present on admission,
-- POA not N, and prior stays discharged by then; procedures dated on the
-- admission day).
CREATE TABLE features._build_mortality AS
-- follow-up ends where each source's data ends (a SynPUF extract ends in 2010, a
-- hospital's extract this year): the last admission date of the stay's own source
WITH data_end AS (SELECT source, max(admission_date) AS d FROM px_enc GROUP BY source)
SELECT s.encounter_id, s.patient_id, s.facility_id, s.department, s.admission_date, s.discharge_date, s.sex,
       s.age_years, (s.sex = 'F')::integer::smallint AS female, s.admission_type, s.admission_source,
       (s.admission_type = 'emergency')::integer::smallint AS emergency,
       @FLAGCOLS@,
       f.charlson_index, f.elix_count,
       s.prior_adm_6m, s.prior_adm_12m, s.ed_visits_6m,
       s.n_dx_poa::smallint AS n_diagnoses, s.n_px_day0::smallint AS n_procedures,
       s.cc_alzheimer, s.cc_chf, s.cc_chronic_kidney, s.cc_cancer, s.cc_copd, s.cc_depression, s.cc_diabetes,
       s.cc_ischemic_heart, s.cc_osteoporosis, s.cc_ra_oa, s.cc_stroke_tia, s.cc_esrd,
       coalesce(s.death_date - s.admission_date BETWEEN 0 AND 30, false)::integer::smallint AS death_30d,
       (s.discharge_disposition = 'expired'
        OR coalesce(s.death_date BETWEEN s.admission_date AND s.discharge_date, false))::integer::smallint
           AS died_in_hospital
FROM px_enc s
JOIN data_end ON data_end.source = s.source
JOIN px_mask f ON f.cm = s.cm_adm
WHERE s.admission_date + 30 <= data_end.d;
