-- 002_features: the feature store: the catalog of feature-table builds and the
-- Charlson / Elixhauser comorbidity maps (Quan et al. 2005) the builder uses.
-- The feature tables themselves (features.readmission, .mortality, .los) are
-- created by the builder (features/), not here. Codes are stored as in the
-- warehouse: no dot, upper case (I509, 4280, V4581); a map row matches every
-- code that starts with its code_prefix.

CREATE SCHEMA features;

-- One row per build of a feature table. source_batches: the etl batch ids in
-- the warehouse when it was built; columns: [{name, role, kind, doc}] for every
-- column, role key|group|time|feature|label|info, kind numeric|categorical.
CREATE TABLE features.catalog (
    build_id        bigserial PRIMARY KEY,
    set_name        text NOT NULL,
    table_name      text NOT NULL,
    definition_hash char(64) NOT NULL CHECK (definition_hash ~ '^[0-9a-f]{64}$'),
    row_count       bigint NOT NULL CHECK (row_count >= 0),
    positives       bigint NOT NULL CHECK (positives >= 0 AND positives <= row_count),
    source_batches  bigint[] NOT NULL,
    columns         jsonb NOT NULL CHECK (jsonb_typeof(columns) = 'array'),
    built_at        timestamptz NOT NULL DEFAULT now(),
    seconds         double precision NOT NULL CHECK (seconds >= 0)
);
CREATE INDEX catalog_set ON features.catalog (set_name, build_id);
CREATE INDEX catalog_table ON features.catalog (table_name, build_id);

-- The categories: category is the feature column it fills. bit is its position
-- in the builder's bigint masks (fixed: features/comorbidity.c holds the same
-- table and refuses to build when they disagree). weight: the Charlson 1987
-- weight, which Quan 2005 keeps (NULL for Elixhauser). superseded_by: the
-- hierarchy, applied in charlson_index and elix_count only (the flags are raw).
CREATE TABLE features.comorbidity_category (
    scheme        text NOT NULL CHECK (scheme IN ('charlson', 'elixhauser')),
    category      text PRIMARY KEY CHECK (category ~ '^(cci|elix)_[a-z_]+$'),
    bit           smallint NOT NULL UNIQUE CHECK (bit BETWEEN 0 AND 62),
    weight        smallint CHECK ((scheme = 'charlson') = (weight IS NOT NULL)),
    superseded_by text REFERENCES features.comorbidity_category,
    label         text NOT NULL,
    UNIQUE (scheme, category)
);

CREATE TABLE features.comorbidity_map (
    code_system text NOT NULL CHECK (code_system IN ('icd9', 'icd10')),
    scheme      text NOT NULL,
    category    text NOT NULL,
    code_prefix text NOT NULL CHECK (code_prefix ~ '^[A-Z0-9]{3,7}$'),
    PRIMARY KEY (code_system, code_prefix, category),
    FOREIGN KEY (scheme, category) REFERENCES features.comorbidity_category (scheme, category)
);

INSERT INTO features.comorbidity_category (scheme, category, bit, weight, superseded_by, label) VALUES
    ('charlson', 'cci_mi',          0, 1, NULL, 'myocardial infarction'),
    ('charlson', 'cci_chf',         1, 1, NULL, 'congestive heart failure'),
    ('charlson', 'cci_pvd',         2, 1, NULL, 'peripheral vascular disease'),
    ('charlson', 'cci_cvd',         3, 1, NULL, 'cerebrovascular disease'),
    ('charlson', 'cci_dementia',    4, 1, NULL, 'dementia'),
    ('charlson', 'cci_cpd',         5, 1, NULL, 'chronic pulmonary disease'),
    ('charlson', 'cci_rheum',       6, 1, NULL, 'rheumatic disease'),
    ('charlson', 'cci_pud',         7, 1, NULL, 'peptic ulcer disease'),
    ('charlson', 'cci_mod_liver',  14, 3, NULL, 'moderate or severe liver disease'),
    ('charlson', 'cci_mild_liver',  8, 1, 'cci_mod_liver', 'mild liver disease'),
    ('charlson', 'cci_diab_cc',    10, 2, NULL, 'diabetes with chronic complication'),
    ('charlson', 'cci_diab',        9, 1, 'cci_diab_cc', 'diabetes without chronic complication'),
    ('charlson', 'cci_hemi',       11, 2, NULL, 'hemiplegia or paraplegia'),
    ('charlson', 'cci_renal',      12, 2, NULL, 'renal disease'),
    ('charlson', 'cci_mets',       15, 6, NULL, 'metastatic solid tumour'),
    ('charlson', 'cci_cancer',     13, 2, 'cci_mets', 'any malignancy, including lymphoma and leukaemia, except malignant neoplasm of skin'),
    ('charlson', 'cci_aids',       16, 6, NULL, 'AIDS/HIV'),
    ('elixhauser', 'elix_chf',               17, NULL, NULL, 'congestive heart failure'),
    ('elixhauser', 'elix_arrhythmia',        18, NULL, NULL, 'cardiac arrhythmias'),
    ('elixhauser', 'elix_valve',             19, NULL, NULL, 'valvular disease'),
    ('elixhauser', 'elix_pulm_circ',         20, NULL, NULL, 'pulmonary circulation disorders'),
    ('elixhauser', 'elix_pvd',               21, NULL, NULL, 'peripheral vascular disorders'),
    ('elixhauser', 'elix_htn_cx',            23, NULL, NULL, 'hypertension, complicated'),
    ('elixhauser', 'elix_htn_uncx',          22, NULL, 'elix_htn_cx', 'hypertension, uncomplicated'),
    ('elixhauser', 'elix_paralysis',         24, NULL, NULL, 'paralysis'),
    ('elixhauser', 'elix_neuro_other',       25, NULL, NULL, 'other neurological disorders'),
    ('elixhauser', 'elix_cpd',               26, NULL, NULL, 'chronic pulmonary disease'),
    ('elixhauser', 'elix_diab_cx',           28, NULL, NULL, 'diabetes, complicated'),
    ('elixhauser', 'elix_diab_uncx',         27, NULL, 'elix_diab_cx', 'diabetes, uncomplicated'),
    ('elixhauser', 'elix_hypothyroid',       29, NULL, NULL, 'hypothyroidism'),
    ('elixhauser', 'elix_renal',             30, NULL, NULL, 'renal failure'),
    ('elixhauser', 'elix_liver',             31, NULL, NULL, 'liver disease'),
    ('elixhauser', 'elix_pud',               32, NULL, NULL, 'peptic ulcer disease excluding bleeding'),
    ('elixhauser', 'elix_aids',              33, NULL, NULL, 'AIDS/HIV'),
    ('elixhauser', 'elix_lymphoma',          34, NULL, NULL, 'lymphoma'),
    ('elixhauser', 'elix_mets',              35, NULL, NULL, 'metastatic cancer'),
    ('elixhauser', 'elix_solid_tumor',       36, NULL, 'elix_mets', 'solid tumour without metastasis'),
    ('elixhauser', 'elix_rheum',             37, NULL, NULL, 'rheumatoid arthritis/collagen vascular diseases'),
    ('elixhauser', 'elix_coag',              38, NULL, NULL, 'coagulopathy'),
    ('elixhauser', 'elix_obesity',           39, NULL, NULL, 'obesity'),
    ('elixhauser', 'elix_weight_loss',       40, NULL, NULL, 'weight loss'),
    ('elixhauser', 'elix_fluid_lytes',       41, NULL, NULL, 'fluid and electrolyte disorders'),
    ('elixhauser', 'elix_blood_loss_anemia', 42, NULL, NULL, 'blood loss anaemia'),
    ('elixhauser', 'elix_deficiency_anemia', 43, NULL, NULL, 'deficiency anaemias'),
    ('elixhauser', 'elix_alcohol',           44, NULL, NULL, 'alcohol abuse'),
    ('elixhauser', 'elix_drugs',             45, NULL, NULL, 'drug abuse'),
    ('elixhauser', 'elix_psychoses',         46, NULL, NULL, 'psychoses'),
    ('elixhauser', 'elix_depression',        47, NULL, NULL, 'depression');

-- The coding algorithms of Quan H, Sundararajan V, Halfon P, et al. Coding
-- algorithms for defining comorbidities in ICD-9-CM and ICD-10 administrative
-- data. Med Care 2005;43(11):1130-9: Table 1 (Charlson, "enhanced ICD-9-CM" and
-- ICD-10) and Table 2 (Elixhauser, enhanced ICD-9-CM and ICD-10).
-- Transcribed from, and checked against, two public implementations: the
-- mapping of the R package 'comorbidity' (A. Gasparini, data-raw/make-mapping.R,
-- github.com/ellessenne/comorbidity) for all four lists, and the SAS macros of
-- Quan's group shipped with the R package 'icd' (data-raw/ICD10_Charlson.sas,
-- data-raw/ICD10_Elixhauser.sas, github.com/jackwasey/icd) for ICD-10.
-- Notation: "I60-I69" is every prefix from I60 to I69 (same letters, same width),
-- as the paper writes "I60.x-I69.x"; "4254-4259" is 425.4-425.9. The paper's
-- "47.1" in the ICD-9 PVD row is its known misprint for 447.1. The ICD-10 lists
-- are WHO ICD-10 and are applied to ICD-10-CM codes by prefix, as is usual; codes
-- that exist only in ICD-10-CM (E08, E09, C4A...) map to nothing, as in both
-- implementations above.
CREATE TEMP TABLE map_spec ON COMMIT DROP AS
SELECT s.code_system, s.category, it
FROM (VALUES
    -- Charlson, ICD-9-CM
    ('icd9', 'cci_mi',         '410 412'),
    ('icd9', 'cci_chf',        '39891 40201 40211 40291 40401 40403 40411 40413 40491 40493 4254-4259 428'),
    ('icd9', 'cci_pvd',        '0930 4373 440 441 4431-4439 4471 5571 5579 V434'),
    ('icd9', 'cci_cvd',        '36234 430-438'),
    ('icd9', 'cci_dementia',   '290 2941 3312'),
    ('icd9', 'cci_cpd',        '4168 4169 490-505 5064 5081 5088'),
    ('icd9', 'cci_rheum',      '4465 7100-7104 7140-7142 7148 725'),
    ('icd9', 'cci_pud',        '531-534'),
    ('icd9', 'cci_mild_liver', '07022 07023 07032 07033 07044 07054 0706 0709 570 571 5733 5734 5738 5739 V427'),
    ('icd9', 'cci_diab',       '2500-2503 2508 2509'),
    ('icd9', 'cci_diab_cc',    '2504-2507'),
    ('icd9', 'cci_hemi',       '3341 342 343 3440-3446 3449'),
    ('icd9', 'cci_renal',      '40301 40311 40391 40402 40403 40412 40413 40492 40493 582 5830-5837 585 586 5880 V420 V451 V56'),
    ('icd9', 'cci_cancer',     '140-172 174-195 200-208 2386'),
    ('icd9', 'cci_mod_liver',  '4560-4562 5722-5728'),
    ('icd9', 'cci_mets',       '196-199'),
    ('icd9', 'cci_aids',       '042-044'),
    -- Charlson, ICD-10
    ('icd10', 'cci_mi',         'I21 I22 I252'),
    ('icd10', 'cci_chf',        'I099 I110 I130 I132 I255 I420 I425-I429 I43 I50 P290'),
    ('icd10', 'cci_pvd',        'I70 I71 I731 I738 I739 I771 I790 I792 K551 K558 K559 Z958 Z959'),
    ('icd10', 'cci_cvd',        'G45 G46 H340 I60-I69'),
    ('icd10', 'cci_dementia',   'F00-F03 F051 G30 G311'),
    ('icd10', 'cci_cpd',        'I278 I279 J40-J47 J60-J67 J684 J701 J703'),
    ('icd10', 'cci_rheum',      'M05 M06 M315 M32-M34 M351 M353 M360'),
    ('icd10', 'cci_pud',        'K25-K28'),
    ('icd10', 'cci_mild_liver', 'B18 K700-K703 K709 K713-K715 K717 K73 K74 K760 K762-K764 K768 K769 Z944'),
    ('icd10', 'cci_diab',       'E100 E101 E106 E108 E109 E110 E111 E116 E118 E119 E120 E121 E126 E128 E129 '
                                'E130 E131 E136 E138 E139 E140 E141 E146 E148 E149'),
    ('icd10', 'cci_diab_cc',    'E102-E105 E107 E112-E115 E117 E122-E125 E127 E132-E135 E137 E142-E145 E147'),
    ('icd10', 'cci_hemi',       'G041 G114 G801 G802 G81 G82 G830-G834 G839'),
    ('icd10', 'cci_renal',      'I120 I131 N032-N037 N052-N057 N18 N19 N250 Z490-Z492 Z940 Z992'),
    ('icd10', 'cci_cancer',     'C00-C26 C30-C34 C37-C41 C43 C45-C58 C60-C76 C81-C85 C88 C90-C97'),
    ('icd10', 'cci_mod_liver',  'I850 I859 I864 I982 K704 K711 K721 K729 K765 K766 K767'),
    ('icd10', 'cci_mets',       'C77-C80'),
    ('icd10', 'cci_aids',       'B20-B22 B24'),
    -- Elixhauser, ICD-9-CM
    ('icd9', 'elix_chf',               '39891 40201 40211 40291 40401 40403 40411 40413 40491 40493 4254-4259 428'),
    ('icd9', 'elix_arrhythmia',        '4260 42610 42612 42613 4267 4269 4270-4274 4276-4279 7850 99601 99604 V450 V533'),
    ('icd9', 'elix_valve',             '0932 394-397 424 7463-7466 V422 V433'),
    ('icd9', 'elix_pulm_circ',         '4150 4151 416 4170 4178 4179'),
    ('icd9', 'elix_pvd',               '0930 4373 440 441 4431-4439 4471 5571 5579 V434'),
    ('icd9', 'elix_htn_uncx',          '401'),
    ('icd9', 'elix_htn_cx',            '402-405'),
    ('icd9', 'elix_paralysis',         '3341 342 343 3440-3446 3449'),
    ('icd9', 'elix_neuro_other',       '3319 3320 3321 3334 3335 33392 334 335 3362 340 341 345 3481 3483 7803 7843'),
    ('icd9', 'elix_cpd',               '4168 4169 490-505 5064 5081 5088'),
    ('icd9', 'elix_diab_uncx',         '2500-2503'),
    ('icd9', 'elix_diab_cx',           '2504-2509'),
    ('icd9', 'elix_hypothyroid',       '2409 243 244 2461 2468'),
    ('icd9', 'elix_renal',             '40301 40311 40391 40402 40403 40412 40413 40492 40493 585 586 5880 V420 V451 V56'),
    ('icd9', 'elix_liver',             '07022 07023 07032 07033 07044 07054 0706 0709 4560-4562 570 571 5722-5728 '
                                       '5733 5734 5738 5739 V427'),
    ('icd9', 'elix_pud',               '5317 5319 5327 5329 5337 5339 5347 5349'),
    ('icd9', 'elix_aids',              '042-044'),
    ('icd9', 'elix_lymphoma',          '200-202 2030 2386'),
    ('icd9', 'elix_mets',              '196-199'),
    ('icd9', 'elix_solid_tumor',       '140-172 174-195'),
    ('icd9', 'elix_rheum',             '446 7010 7100-7104 7108 7109 7112 714 7193 720 725 7285 72889 72930'),
    ('icd9', 'elix_coag',              '286 2871 2873-2875'),
    ('icd9', 'elix_obesity',           '2780'),
    ('icd9', 'elix_weight_loss',       '260-263 7832 7994'),
    ('icd9', 'elix_fluid_lytes',       '2536 276'),
    ('icd9', 'elix_blood_loss_anemia', '2800'),
    ('icd9', 'elix_deficiency_anemia', '2801-2809 281'),
    ('icd9', 'elix_alcohol',           '2652 2911-2913 2915-2919 3030 3039 3050 3575 4255 5353 5710-5713 980 V113'),
    ('icd9', 'elix_drugs',             '292 304 3052-3059 V6542'),
    ('icd9', 'elix_psychoses',         '2938 295 29604 29614 29644 29654 297 298'),
    ('icd9', 'elix_depression',        '2962 2963 2965 3004 309 311'),
    -- Elixhauser, ICD-10
    ('icd10', 'elix_chf',               'I099 I110 I130 I132 I255 I420 I425-I429 I43 I50 P290'),
    ('icd10', 'elix_arrhythmia',        'I441-I443 I456 I459 I47-I49 R000 R001 R008 T821 Z450 Z950'),
    ('icd10', 'elix_valve',             'A520 I05-I08 I091 I098 I34-I39 Q230-Q233 Z952-Z954'),
    ('icd10', 'elix_pulm_circ',         'I26 I27 I280 I288 I289'),
    ('icd10', 'elix_pvd',               'I70 I71 I731 I738 I739 I771 I790 I792 K551 K558 K559 Z958 Z959'),
    ('icd10', 'elix_htn_uncx',          'I10'),
    ('icd10', 'elix_htn_cx',            'I11-I13 I15'),
    ('icd10', 'elix_paralysis',         'G041 G114 G801 G802 G81 G82 G830-G834 G839'),
    ('icd10', 'elix_neuro_other',       'G10-G13 G20-G22 G254 G255 G312 G318 G319 G32 G35-G37 G40 G41 G931 G934 R470 R56'),
    ('icd10', 'elix_cpd',               'I278 I279 J40-J47 J60-J67 J684 J701 J703'),
    ('icd10', 'elix_diab_uncx',         'E100 E101 E109 E110 E111 E119 E120 E121 E129 E130 E131 E139 E140 E141 E149'),
    ('icd10', 'elix_diab_cx',           'E102-E108 E112-E118 E122-E128 E132-E138 E142-E148'),
    ('icd10', 'elix_hypothyroid',       'E00-E03 E890'),
    ('icd10', 'elix_renal',             'I120 I131 N18 N19 N250 Z490-Z492 Z940 Z992'),
    ('icd10', 'elix_liver',             'B18 I85 I864 I982 K70 K711 K713-K715 K717 K72-K74 K760 K762-K769 Z944'),
    ('icd10', 'elix_pud',               'K257 K259 K267 K269 K277 K279 K287 K289'),
    ('icd10', 'elix_aids',              'B20-B22 B24'),
    ('icd10', 'elix_lymphoma',          'C81-C85 C88 C96 C900 C902'),
    ('icd10', 'elix_mets',              'C77-C80'),
    ('icd10', 'elix_solid_tumor',       'C00-C26 C30-C34 C37-C41 C43 C45-C58 C60-C76 C97'),
    ('icd10', 'elix_rheum',             'L940 L941 L943 M05 M06 M08 M120 M123 M30 M310-M313 M32-M35 M45 M461 M468 M469'),
    ('icd10', 'elix_coag',              'D65-D68 D691 D693-D696'),
    ('icd10', 'elix_obesity',           'E66'),
    ('icd10', 'elix_weight_loss',       'E40-E46 R634 R64'),
    ('icd10', 'elix_fluid_lytes',       'E222 E86 E87'),
    ('icd10', 'elix_blood_loss_anemia', 'D500'),
    ('icd10', 'elix_deficiency_anemia', 'D508 D509 D51-D53'),
    ('icd10', 'elix_alcohol',           'F10 E52 G621 I426 K292 K700 K703 K709 T51 Z502 Z714 Z721'),
    ('icd10', 'elix_drugs',             'F11-F16 F18 F19 Z715 Z722'),
    ('icd10', 'elix_psychoses',         'F20 F22-F25 F28 F29 F302 F312 F315'),
    ('icd10', 'elix_depression',        'F204 F313-F315 F32 F33 F341 F412 F432')
) s(code_system, category, items)
CROSS JOIN LATERAL regexp_split_to_table(s.items, '\s+') AS it;

-- A range must keep its letters and width ("C00-C26", not "C00-D26" or "C0-C26"),
-- and every item must be well formed: refuse the migration rather than map the
-- wrong codes.
DO $$
DECLARE bad text;
BEGIN
    SELECT string_agg(it, ', ') INTO bad FROM map_spec
    WHERE it !~ '^[A-Z]*[0-9]+(-[A-Z]*[0-9]+)?$'
       OR (it LIKE '%-%' AND (substring(split_part(it, '-', 1) FROM '^[A-Z]*') <> substring(split_part(it, '-', 2) FROM '^[A-Z]*')
                              OR length(split_part(it, '-', 1)) <> length(split_part(it, '-', 2))
                              OR split_part(it, '-', 1) >= split_part(it, '-', 2)));
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'comorbidity map: malformed items: %', bad;
    END IF;
END $$;

INSERT INTO features.comorbidity_map (code_system, scheme, category, code_prefix)
SELECT DISTINCT s.code_system, k.scheme, s.category, x.code
FROM map_spec s
JOIN features.comorbidity_category k USING (category)
CROSS JOIN LATERAL (
    -- a range "<letters><n>-<letters><m>" expands to every prefix n..m, zero-padded
    -- to n's width; anything else is a single prefix
    SELECT CASE WHEN s.it LIKE '%-%'
                THEN substring(it FROM '^[A-Z]*')
                     || lpad(g::text, length(split_part(it, '-', 1)) - length(substring(it FROM '^[A-Z]*')), '0')
                ELSE it END
    FROM generate_series(
        CASE WHEN it LIKE '%-%' THEN substring(split_part(it, '-', 1) FROM '[0-9]+$')::integer ELSE 0 END,
        CASE WHEN it LIKE '%-%' THEN substring(split_part(it, '-', 2) FROM '[0-9]+$')::integer ELSE 0 END) g
) x(code);

-- The categories of one code, as a bit mask (bit = comorbidity_category.bit):
-- every map row whose prefix starts the code. The builder applies the same rule
-- to all distinct codes of the warehouse at once (features/sql/base.sql).
CREATE FUNCTION features.code_mask(sys text, code text) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(bit_or(1::bigint << k.bit), 0)
    FROM features.comorbidity_map m JOIN features.comorbidity_category k USING (category)
    WHERE m.code_system = sys
      AND m.code_prefix IN (left(code, 3), left(code, 4), left(code, 5), left(code, 6), left(code, 7))
$$;

-- The version of the maps: SHA-256 over their content in a fixed (byte) order,
-- so that an edited map changes every feature set's definition hash.
CREATE FUNCTION features.map_digest() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(convert_to(
        (SELECT string_agg(format('%s %s %s %s %s %s', scheme, category, bit, coalesce(weight::text, '-'),
                                  coalesce(superseded_by, '-'), label), E'\n' ORDER BY bit)
         FROM features.comorbidity_category)
        || E'\n--\n' ||
        (SELECT string_agg(format('%s %s %s', code_system, category, code_prefix), E'\n'
                           ORDER BY code_system COLLATE "C", category COLLATE "C", code_prefix COLLATE "C")
         FROM features.comorbidity_map), 'UTF8')), 'hex')
$$;

-- Statistics now: the builder's first lookups must not wait for autovacuum to
-- learn that the map has 1,258 rows (without them it scans the map per code).
ANALYZE features.comorbidity_category;
ANALYZE features.comorbidity_map;
