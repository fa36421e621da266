-- los.sql: one row per stay discharged alive (disposition not expired).
-- Prediction time: the admission; label los_days = discharge - admission date.
-- Features as for mortality: what is known at admission (cm_adm).
CREATE TABLE features._build_los AS
SELECT s.encounter_id, s.patient_id, s.facility_id, s.department, s.admission_date, s.discharge_date, s.sex,
       s.age_years, (s.sex = 'F')::integer::smallint AS female, s.admission_type, s.admission_source,
       (s.admission_type = 'emergency')::integer::smallint AS emergency,
       @FLAGCOLS@,
       f.charlson_index, f.elix_count,
       s.prior_adm_6m, s.prior_adm_12m, s.ed_visits_6m,
       s.n_dx_poa::smallint AS n_diagnoses, s.n_px_day0::smallint AS n_procedures,
       s.cc_alzheimer, s.cc_chf, s.cc_chronic_kidney, s.cc_cancer, s.cc_copd, s.cc_depression, s.cc_diabetes,
       s.cc_ischemic_heart, s.cc_osteoporosis, s.cc_ra_oa, s.cc_stroke_tia, s.cc_esrd,
       s.los_days::smallint AS los_days,
       coalesce(s.death_date - s.admission_date BETWEEN 0 AND 30, false)::integer::smallint AS died_30d
FROM px_enc s
JOIN px_mask f ON f.cm = s.cm_adm
WHERE s.discharge_disposition <> 'expired';
