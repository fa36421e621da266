-- 010_kpi_hierarchical: the CMS hierarchical standardized ratio beside the O/E
-- (indirect standardization) in kpi.results, and which method each row uses.
-- sr = predicted / expected from the risk model's stored random-intercept model
-- (facility rows only; NULL where none is stored), srsr = sr x the system's
-- crude rate; oe_flag: the flag the O/E interval gives (flag is the sr one for
-- facilities with an sr). Intervals treat the models' coefficients as known.
ALTER TABLE kpi.results
    ADD COLUMN sr double precision,
    ADD COLUMN sr_lo double precision,
    ADD COLUMN sr_hi double precision,
    ADD COLUMN srsr double precision,
    ADD COLUMN srsr_lo double precision,
    ADD COLUMN srsr_hi double precision,
    ADD COLUMN adjustment text CHECK (adjustment IN ('none', 'indirect', 'hierarchical')),
    ADD COLUMN oe_flag text CHECK (oe_flag IN ('worse', 'better', 'no_different', 'suppressed', 'reference',
                                                'not_adjusted')),
    ADD CONSTRAINT results_sr_suppressed CHECK (NOT suppressed OR sr IS NULL);
