-- readmission.sql: one row per index stay discharged alive (not expired), not
-- transferred to another acute hospital, not left against medical advice, with 30
-- days of follow-up in the data (discharge + 30 <= the last admission date in the
-- warehouse). Prediction time: the discharge. Label readmit_30d: any admission of
-- the patient (any facility) 1-30 days after discharge: all-cause, since the CMS
-- planned-readmission algorithm needs procedure-category maps we do not have.
-- Features: everything known at discharge (cm_dis, all diagnoses of the stay).
CREATE TABLE features._build_readmission AS
-- follow-up ends where each source's data ends (a SynPUF extract ends in 2010, a
-- hospital's extract this year): the last admission date of the stay's own source
WITH data_end AS (SELECT source, max(admission_date) AS d FROM px_enc GROUP BY source)
SELECT s.encounter_id, s.patient_id, s.facility_id, s.department, s.admission_date, s.discharge_date, s.sex,
       s.age_years, (s.sex = 'F')::integer::smallint AS female, s.admission_type, s.admission_source,
       (s.admission_type = 'emergency')::integer::smallint AS emergency,
       @FLAGCOLS@,
       f.charlson_index, f.elix_count,
       s.prior_adm_6m, s.prior_adm_12m, s.ed_visits_6m,
       s.n_dx::smallint AS n_diagnoses, s.n_px::smallint AS n_procedures,
       s.cc_alzheimer, s.cc_chf, s.cc_chronic_kidney, s.cc_cancer, s.cc_copd, s.cc_depression, s.cc_diabetes,
       s.cc_ischemic_heart, s.cc_osteoporosis, s.cc_ra_oa, s.cc_stroke_tia, s.cc_esrd,
       s.los_days::smallint AS los_days, s.discharge_disposition,
       -- LACE (van Walraven et al. 2010, CMAJ 182:551): L = length of stay, A = 3 for
       -- an emergent admission, C = Charlson index, E = ED visits in 6 months (capped at 4)
       (CASE WHEN s.los_days < 1 THEN 0 WHEN s.los_days <= 3 THEN s.los_days WHEN s.los_days <= 6 THEN 4
             WHEN s.los_days <= 13 THEN 5 ELSE 7 END
        + CASE WHEN s.admission_type = 'emergency' THEN 3 ELSE 0 END
        + CASE WHEN f.charlson_index >= 4 THEN 5 ELSE f.charlson_index END
        + s.ed_visits_6m)::smallint AS lace_score,
       (s.days_to_next_30d IS NOT NULL)::integer::smallint AS readmit_30d,
       s.days_to_next_30d AS days_to_readmission,
       coalesce(s.death_date BETWEEN s.discharge_date AND s.discharge_date + 30, false)::integer::smallint
           AS died_30d_after_discharge
FROM px_enc s
JOIN data_end ON data_end.source = s.source
JOIN px_mask f ON f.cm = s.cm_dis
WHERE s.discharge_disposition NOT IN ('expired', 'transfer_acute', 'ama')
  AND s.discharge_date + 30 <= data_end.d;
