-- marts.sql: the analysts' marts over the star schema, rebuilt as tables in the
-- mart schema in one transaction (features/marts.c). Every column is documented
-- in features/README.md (section Marts). Years are admission years, the fact
-- tables' partition key, so a mart row never mixes a retained and a removed year.
-- Costs: total_cost is NULL when the extract had none (unknown, not zero). Sums,
-- means and medians are over the stays with a known cost; stays_costed says how
-- many those are, so stays_costed < stays marks a total that is a lower bound,
-- and a group with no known cost has NULL cost columns (never 0).
DROP TABLE IF EXISTS mart.cost_patient_year, mart.cost_facility, mart.cost_drg, mart.readmission,
    mart.readmission_facility, mart.provider_utilization;

CREATE TEMP TABLE px_mart_enc ON COMMIT DROP AS
SELECT encounter_id, patient_id, facility_id, attending_id, admission_date, discharge_date, los_days,
       discharge_disposition, drg, total_cost, source,
       extract(year FROM admission_date)::smallint AS year
FROM wh.fact_encounter;
CREATE INDEX ON px_mart_enc (patient_id, admission_date);
ANALYZE px_mart_enc;

CREATE TABLE mart.cost_patient_year AS
SELECT patient_id, year,
       count(*)::integer AS stays,
       count(total_cost)::integer AS stays_costed,
       sum(total_cost)::numeric(14, 2) AS cost_total,
       sum(los_days)::integer AS los_days_total
FROM px_mart_enc
GROUP BY patient_id, year;
ALTER TABLE mart.cost_patient_year ADD PRIMARY KEY (patient_id, year);

CREATE TABLE mart.cost_facility AS
SELECT e.facility_id, f.name AS facility_name, e.year,
       count(*)::integer AS stays,
       count(DISTINCT e.patient_id)::integer AS patients,
       count(e.total_cost)::integer AS stays_costed,
       sum(e.total_cost)::numeric(14, 2) AS cost_total,
       round(avg(e.total_cost), 2) AS cost_mean,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY e.total_cost)::numeric, 2) AS cost_median,
       -- per day of the costed stays, a same-day stay counting one day
       round(sum(e.total_cost) / nullif(sum(greatest(e.los_days, 1)) FILTER (WHERE e.total_cost IS NOT NULL), 0), 2)
           AS cost_per_day,
       round(avg(e.los_days), 2) AS los_mean
FROM px_mart_enc e
LEFT JOIN wh.dim_provider f ON f.kind = 'facility' AND f.provider_id = e.facility_id
GROUP BY e.facility_id, f.name, e.year;
ALTER TABLE mart.cost_facility ADD PRIMARY KEY (facility_id, year);

-- drg is NULL where the source has none: one row per year for those (drg NULL)
CREATE TABLE mart.cost_drg AS
SELECT drg, year,
       count(*)::integer AS stays,
       count(DISTINCT patient_id)::integer AS patients,
       count(total_cost)::integer AS stays_costed,
       sum(total_cost)::numeric(14, 2) AS cost_total,
       round(avg(total_cost), 2) AS cost_mean,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY total_cost)::numeric, 2) AS cost_median,
       round(avg(los_days), 2) AS los_mean
FROM px_mart_enc
GROUP BY drg, year;
CREATE INDEX ON mart.cost_drg (drg, year);

-- One row per stay with the patient's next admission after its discharge (the
-- earliest admitted later than the discharge date; ties by encounter pseudonym),
-- the same rule as features.readmission's label.
CREATE TEMP TABLE px_mart_readm ON COMMIT DROP AS
WITH data_end AS (SELECT source, max(admission_date) AS d FROM px_mart_enc GROUP BY source)
SELECT i.encounter_id, i.patient_id, i.facility_id, i.year, i.admission_date, i.discharge_date,
       i.discharge_disposition,
       i.discharge_disposition NOT IN ('expired', 'transfer_acute', 'ama') AS index_eligible,
       i.discharge_date + 30 <= de.d AS followup_complete,
       n.encounter_id AS next_encounter_id, n.facility_id AS next_facility_id,
       n.admission_date AS next_admission_date,
       (n.admission_date - i.discharge_date) AS days_to_next,
       (CASE WHEN n.admission_date - i.discharge_date <= 30 THEN 1
             WHEN i.discharge_date + 30 <= de.d THEN 0 END)::smallint AS readmit_30d
FROM px_mart_enc i
JOIN data_end de ON de.source = i.source
LEFT JOIN LATERAL (SELECT p.encounter_id, p.facility_id, p.admission_date FROM px_mart_enc p
                   WHERE p.patient_id = i.patient_id AND p.admission_date > i.discharge_date
                   ORDER BY p.admission_date, p.encounter_id LIMIT 1) n ON true;

CREATE TABLE mart.readmission AS
SELECT r.*,
       EXISTS (SELECT 1 FROM px_mart_readm x
               WHERE x.next_encounter_id = r.encounter_id AND x.index_eligible AND x.readmit_30d = 1)
           AS is_readmission
FROM px_mart_readm r;
ALTER TABLE mart.readmission ADD PRIMARY KEY (encounter_id);
CREATE INDEX ON mart.readmission (facility_id, year);

CREATE TABLE mart.readmission_facility AS
SELECT facility_id, year,
       count(*)::integer AS index_stays,
       count(*) FILTER (WHERE readmit_30d = 1)::integer AS readmissions_30d,
       round(avg(readmit_30d), 4) AS readmit_rate,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY days_to_next) FILTER (WHERE readmit_30d = 1)::numeric, 1)
           AS days_to_readmission_median,
       count(*) FILTER (WHERE readmit_30d = 1 AND next_facility_id <> facility_id)::integer AS readmitted_elsewhere
FROM mart.readmission
WHERE index_eligible AND followup_complete
GROUP BY facility_id, year;
ALTER TABLE mart.readmission_facility ADD PRIMARY KEY (facility_id, year);

-- attending_id NULL (no attending recorded) is kept as its own row per facility
-- and year, so that a facility's rows add up to its stays.
CREATE TABLE mart.provider_utilization AS
SELECT e.facility_id, e.attending_id, c.name AS attending_name, c.specialty, e.year,
       count(*)::integer AS stays,
       count(DISTINCT e.patient_id)::integer AS patients,
       sum(e.los_days)::integer AS los_days_total,
       round(avg(e.los_days), 2) AS los_mean,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY e.los_days)::numeric, 1) AS los_median,
       count(e.total_cost)::integer AS stays_costed,
       sum(e.total_cost)::numeric(14, 2) AS cost_total,
       round(avg(e.total_cost), 2) AS cost_mean
FROM px_mart_enc e
LEFT JOIN wh.dim_provider c ON c.kind = 'clinician' AND c.provider_id = e.attending_id
GROUP BY e.facility_id, e.attending_id, c.name, c.specialty, e.year;
CREATE INDEX ON mart.provider_utilization (facility_id, year);
CREATE INDEX ON mart.provider_utilization (attending_id, year);

ANALYZE mart.cost_patient_year, mart.cost_facility, mart.cost_drg, mart.readmission, mart.readmission_facility,
    mart.provider_utilization;
