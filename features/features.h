/* features.h: feature-set definitions, comorbidity maps and the SQL feature-table
 * builder, and the extraction of any feature table into an in-memory dataset.
 *
 * Feature tables are built set-based inside PostgreSQL (features.<set>), one row
 * per index admission, point-in-time correct: a row's features use only what was
 * known at its prediction time (discharge for readmission, admission for
 * mortality and LOS). Every build writes a row to features.catalog. */
#ifndef PROGNOS_FEATURES_H
#define PROGNOS_FEATURES_H

#include "engine/engine.h"

/* ---- column roles and kinds ------------------------------------------- */

typedef enum {
    PX_ROLE_KEY,      /* row identity (encounter_id): never a feature */
    PX_ROLE_GROUP,    /* patient pseudonym: holdout grouping, never a feature */
    PX_ROLE_TIME,     /* prediction time (date): temporal holdout, never a feature */
    PX_ROLE_FEATURE,  /* a model input */
    PX_ROLE_LABEL,    /* an outcome */
    PX_ROLE_INFO      /* descriptive or after-the-fact (facility, death after discharge): never a feature */
} px_col_role;

typedef enum {
    PX_COL_NUMERIC,      /* integers, reals, booleans (0/1) */
    PX_COL_CATEGORICAL   /* text: one-hot encoded by models/ */
} px_col_kind;

/* ---- built-in feature sets --------------------------------------------- */

typedef struct px_feat_set_info {
    const char *name;                     /* readmission | mortality | los */
    const char *table;                    /* features.readmission ... */
    const char *label;                    /* label column: readmit_30d, death_30d, los_days */
    int binary;                           /* 1 for a 0/1 label */
    const char *time_col;                 /* discharge_date (readmission) or admission_date */
    const char *const *default_features;  /* NULL-terminated: the built-in model's inputs */
    const char *doc;                      /* one paragraph: cohort, label, exclusions */
} px_feat_set_info;

extern const px_feat_set_info px_feat_sets[];
extern const int px_feat_sets_count;
/* NULL when the name is not a built-in set. */
const px_feat_set_info *px_feat_set_find(const char *name);

typedef struct px_feat_build_result {
    long long build_id;      /* features.catalog row */
    long long rows;          /* rows in the table */
    long long positives;     /* label = 1 (binary sets), else 0 */
    char def_hash[65];       /* SHA-256 of the set's SQL definition and comorbidity map */
    double seconds;          /* wall time of the build */
    int unchanged;           /* 1: already built from the same batches with the same definition; nothing done */
} px_feat_build_result;

/* Builds (or rebuilds) features.<set> in one transaction and records it in
 * features.catalog. Returns 0, or a negative PX_E* code (nothing changed).
 * c must not be inside a transaction (PX_ESTATE). The per-stay tables it starts
 * from stay in c's temporary schema until c is closed, so that the next set built
 * on c from the same batches reuses them. */
int px_feat_build(PGconn *c, const char *set, px_feat_build_result *r, px_err *e);

/* ---- the catalog, read by other folders (catalog.c) -------------------- */

typedef struct px_feat_build_row {
    char set[32];             /* the set's name */
    char table[160];          /* schema.table */
    long long build_id;
    char definition_hash[72];
    char built_at[48];        /* built_at::text (timestamptz, the session's zone) */
} px_feat_build_row;

/* The latest build of each table: of every set (table NULL or "", by set name) or
 * of that table (0 or 1 row). No rows when the catalog does not exist yet. Caller
 * frees *out. 0 or PX_EDB. */
int px_feat_latest_builds(PGconn *c, const char *table, px_feat_build_row **out, size_t *n, px_err *e);

/* `prognos features list`: the latest build of every set as a table (or JSON), with
 * its rows, positives, definition hash, batches, build time and whether the table
 * still exists. 0 or PX_EDB. */
int px_feat_list(PGconn *c, int json, FILE *out, px_err *e);

/* ---- the same features from FHIR resources (fhir.c) ---------------------- */

/* The feature instance of one stay, computed from FHIR R4 resources as a CDS
 * Hooks prefetch gives them, by the definitions the SQL feature tables use (one
 * definition, two executions; README "Features from FHIR"). prefetch is an
 * object with keys patient (the Patient), encounter (the stay's Encounter),
 * conditions, encounters and procedures (the patient's; each a single
 * resource, an array, or a searchset Bundle; missing keys are empty). set is
 * readmission, mortality or los. as_of is the prediction time as a FHIR date or
 * dateTime, or NULL: the Encounter's period.end for readmission, its start for
 * mortality and los; it fills a missing period.end (a stay being discharged).
 * Returns a new object (caller frees with cJSON_Delete) in the /v1 predict
 * instance format: every feature column of features.<set> (role feature), by
 * name, a number or a string, null where the warehouse has NULL (the SynPUF
 * chronic-condition flags). NULL with e set on a bad prefetch (PX_EINVAL,
 * naming what is wrong) or out of memory. Thread-safe. */
struct cJSON;
struct cJSON *px_feat_from_fhir(const struct cJSON *prefetch, const char *set, const char *as_of, px_err *e);

/* The comorbidity categories (bit mask, feat_comorbs bits) of one ICD code
 * ("icd9" | "icd10", normalized, no dot), by the map of features.comorbidity_map
 * read from the migration that fills it. 0 or PX_ESTATE. */
int px_feat_comorbidity_mask(const char *code_system, const char *code, uint64_t *mask, px_err *e);

/* ---- marts (marts.c, features/sql/marts.sql) ------------------------------ */

/* The mart tables, in the order of px_feat_marts_result.rows (static strings). */
#define PX_FEAT_MARTS 6
extern const char *const px_feat_marts[];
extern const int px_feat_marts_count;

typedef struct px_feat_marts_result {
    long long rows[PX_FEAT_MARTS]; /* rows of each mart table, in px_feat_marts order */
    double seconds;                /* wall time of the build */
} px_feat_marts_result;

/* Rebuilds every table of the mart schema (cost of care per patient-year,
 * facility and DRG; readmissions; provider utilization) from the warehouse in
 * one transaction and records the build in audit.events. Returns 0, or a
 * negative PX_E* code with nothing changed. c must not be inside a transaction. */
int px_feat_marts_build(PGconn *c, px_feat_marts_result *r, px_err *e);

/* ---- datasets: a feature table in memory ------------------------------- */

typedef struct px_dataset_params {
    const char *table;                 /* schema.table (quoted safely by the loader) */
    const char *label;                 /* label column (required) */
    const char *time_col;              /* NULL: the catalog's, else 'discharge_date', else 'admission_date', else none */
    const char *group_col;             /* NULL: 'patient_id' when present, else none */
    const char *const *features;       /* NULL-terminated list, or NULL: every column whose role is
                                        * feature (catalog) or, for other tables, every numeric,
                                        * boolean or text column that is not key/time/group/label */
    const char *const *extra;          /* NULL-terminated text columns kept as strings (e.g. facility_id), or NULL */
    size_t max_levels;                 /* categorical columns with more distinct values are refused (default 200) */
} px_dataset_params;

px_dataset_params px_dataset_default_params(void);

/* A dense, row-major table of n rows and p feature columns, ordered by
 * (time, key) so that the same table gives the same dataset. */
typedef struct px_dataset {
    size_t n, p;
    char **names;          /* p feature column names */
    px_col_kind *kind;     /* p */
    double *x;             /* n*p: numeric value, or for categorical columns the index of the
                            * value in levels[j]; NAN when missing */
    size_t *nlevels;       /* p: number of distinct values (0 for numeric columns) */
    char ***levels;        /* p arrays of nlevels[j] strings, sorted by byte order (NULL for numeric) */
    double *y;             /* n labels (rows with a missing label are dropped and counted) */
    int32_t *day;          /* n prediction times, days since 1970-01-01 (0 when there is no time column) */
    uint64_t *group;       /* n patient group keys (first 64 bits of the pseudonym; 0 when none) */
    char *sex;             /* n: 'F', 'M', 'U' or 0, from a column named sex (or female), for subgroups */
    double *age;           /* n: from a column named age_years (or age), NAN when absent */
    size_t nextra;
    char **extra_names;    /* nextra */
    char **extra;          /* n*nextra strings (NULL when missing) */
    size_t dropped_missing_label;
    char table[256];
    char label[64];
    char time_col[64];
    char definition_hash[65];  /* the catalog's, or "" for a user's table */
    char fingerprint[65];      /* SHA-256 over names, kinds, levels, x, y and day: the training data's identity */
} px_dataset;

/* Allocates an empty dataset of n rows and p columns (all arrays zeroed, x
 * set to NAN); names must then be filled. Caller frees with px_dataset_free. */
px_dataset *px_dataset_new(size_t n, size_t p);
/* Loads a feature table. Caller frees. NULL on error: unknown table or column
 * (named), a label that is not numeric, too many levels, out of memory. */
px_dataset *px_dataset_load(PGconn *c, const px_dataset_params *p, px_err *e);
/* Recomputes d->fingerprint from its content. */
void px_dataset_fingerprint(px_dataset *d);
void px_dataset_free(px_dataset *d);   /* accepts NULL */
/* Index of a feature column by name, or -1. */
int px_dataset_col(const px_dataset *d, const char *name);

/* ---- the feature-row reader (reader.c) ----------------------------------- */

/* Every consumer of feature rows (training, KPI scoring, the drift check, the
 * server's by-encounter lookup) reads them through these: a binary COPY streamed
 * to a callback, or one binary query decoded the same way. */

/* How a value travels in the binary COPY. */
typedef enum {
    PX_WIRE_F8, PX_WIRE_F4, PX_WIRE_I2, PX_WIRE_I4, PX_WIRE_I8, PX_WIRE_BOOL,
    PX_WIRE_TEXT,   /* text (categorical values, ids) */
    PX_WIRE_UUID,   /* 16 raw bytes (row->raw only) */
    PX_WIRE_BYTES   /* any other binary form, not decoded (row->raw only: arrays) */
} px_feat_wire;

/* One value read: a trusted SQL expression (built by px_feat_table_field, or by
 * the caller from constants and quoted identifiers) and its wire type. */
typedef struct px_feat_field {
    char *sql;           /* owned; px_feat_fields_release frees it */
    px_feat_wire wire;
} px_feat_field;

/* One decoded row, valid during the callback only. */
typedef struct px_feat_row {
    size_t n;
    const double *num;              /* n: numbers (NAN for NULL; NAN for text and uuid fields) */
    const char *const *text;        /* n: text fields NUL-terminated (NULL for NULL and other fields) */
    const unsigned char *const *raw;/* n: the field's bytes as sent (network order) */
    const int32_t *len;             /* n: their lengths, -1 for NULL */
} px_feat_row;

/* Called once per row; returns 0 to go on, or a negative PX_E* code (with e
 * set) that stops the scan and is returned by px_feat_scan. */
typedef int (*px_feat_row_fn)(const px_feat_row *row, void *arg, px_err *e);

/* A table (or view) and its columns' types, from pg_catalog. */
typedef struct px_feat_table px_feat_table;
/* "schema.name" or a visible "name". Caller frees with px_feat_table_free.
 * NULL on error (PX_ENOTFOUND naming the table, PX_EDB, PX_ENOMEM). */
px_feat_table *px_feat_table_open(PGconn *c, const char *table, px_err *e);
void px_feat_table_free(px_feat_table *t);   /* accepts NULL */
const char *px_feat_table_name(const px_feat_table *t);     /* schema.name */
const char *px_feat_table_quoted(const px_feat_table *t);   /* "schema"."name" */
size_t px_feat_table_ncols(const px_feat_table *t);
/* Column i's name, base type name and pg_type category (NULL past the end). */
const char *px_feat_table_col(const px_feat_table *t, size_t i, const char **type, char *cat);
int px_feat_table_index(const px_feat_table *t, const char *name);   /* -1 when absent */
/* The wire type of a column of base type `type` and the cast its SQL needs
 * ("", "::float8" or "::text"). */
px_feat_wire px_feat_wire_of(const char *type, int as_text, const char **cast);
/* Fills f (its old sql freed) with column col of t read as text (as_text) or as a
 * number, qualified by alias when not NULL. PX_ENOTFOUND (no such column),
 * PX_EINVAL (a number asked of a non-numeric column), PX_ENOMEM. */
int px_feat_table_field(PGconn *c, const px_feat_table *t, const char *alias, const char *col, int as_text,
                        px_feat_field *f, px_err *e);
/* Column col of t as an SQL value over alias (NULL: none): text (as_text), or
 * float8 with booleans as 0/1, the values the reader gives: what a model
 * compiled to SQL reads (px_model_sql's colsql). malloc'd; NULL with e set
 * (PX_ENOTFOUND, PX_EINVAL: a number asked of a non-numeric column, PX_ENOMEM). */
char *px_feat_table_value_sql(PGconn *c, const px_feat_table *t, const char *alias, const char *col, int as_text,
                              px_err *e);
/* Fills f with a copy of the trusted expression sql. */
int px_feat_field_set(px_feat_field *f, const char *sql, px_feat_wire wire, px_err *e);
void px_feat_fields_release(px_feat_field *f, size_t n);
/* Runs COPY (SELECT <fields> <from>) TO STDOUT (FORMAT binary) and calls fn for
 * every row in the order the server sends them. from: trusted SQL ("FROM ... t
 * WHERE ..."). Returns 0, the callback's error, or PX_EDB / PX_ENOMEM; the
 * connection is usable afterwards either way. */
int px_feat_scan(PGconn *c, const px_feat_field *f, size_t nf, const char *from, px_feat_row_fn fn, void *arg,
                 px_err *e);
/* The single-query mode, for a few rows on a hot path: SELECT <fields> <from>
 * with nparams text parameters ($1 ...) and binary results, each row decoded by
 * px_feat_scan's decoder and given to fn. sqlstate (6 bytes, or NULL) gets the
 * server's SQLSTATE of a failed query ("" otherwise). Returns as px_feat_scan. */
int px_feat_query(PGconn *c, const px_feat_field *f, size_t nf, const char *from, int nparams,
                  const char *const *params, px_feat_row_fn fn, void *arg, char sqlstate[6], px_err *e);

/* ---- research export (export.c) ------------------------------------------ */

/* A de-identified extract of a built feature table (HIPAA Safe Harbor): see
 * README "Research export" for every transformation. */
typedef struct px_export_params {
    const char *cohort;                 /* readmission | mortality | los */
    const char *out_dir;                /* created (mode 0700) when missing */
    int jsonl;                          /* 0: data.csv, 1: data.jsonl */
    int force;                          /* 1: write into a non-empty out_dir, replacing an earlier export */
    int dates_year;                     /* 0: dates shifted per patient; 1: year + days from the patient's first admission */
    int max_shift_days;                 /* offsets are 1..max_shift_days days back (default 365) */
    const char *date_shift_key_file;    /* NULL: a random key per export; else a file of >= 32 secret bytes */
    int min_cell;                       /* K: categorical levels with fewer rows are suppressed (default 11) */
    int min_zip3_patients;              /* N: ZIP3 prefixes with fewer patients in the export become 000 (default 20) */
} px_export_params;

px_export_params px_export_default_params(void);

typedef struct px_export_result {
    long long rows, patients;
    int columns;
    int suppressed_levels;               /* over all columns */
    long long ages_grouped;              /* rows with age 90+ */
    long long zip3_recoded;              /* rows whose ZIP3 became 000 (small area or Safe Harbor list) */
    char data_sha256[65];
} px_export_result;

/* Writes data.csv|data.jsonl, data_dictionary.csv, manifest.json and SHA256SUMS
 * into p->out_dir, each under a temporary name first, and records the export in
 * audit.events. c must not be inside a transaction. Returns 0, or a negative
 * PX_E* code with nothing written (PX_EINVAL: bad parameters or a non-empty
 * directory without force; PX_ENOTFOUND: the set was never built). */
int px_feat_export(PGconn *c, const px_export_params *p, px_export_result *r, px_err *e);

/* The clinical words of a comorbidity feature column ("cci_chf" -> "congestive
 * heart failure"), or NULL when col is not one. Static text. */
const char *px_feat_comorbidity_words(const char *col);

#endif
