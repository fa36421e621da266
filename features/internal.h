/* internal.h: declarations shared inside features/ only (no other folder includes it):
 * the comorbidity categories (which must agree with features.comorbidity_category,
 * migration 002), the column descriptors of the built-in sets, and the feature SQL
 * embedded at build time from features/sql/NAME.sql (features_sql.c, generated). */
#ifndef PROGNOS_FEATURES_INTERNAL_H
#define PROGNOS_FEATURES_INTERNAL_H

#include "features/features.h"

/* ---- comorbidity categories (comorbidity.c) ------------------------------ */

typedef struct feat_comorb {
    const char *col;           /* feature column and category name: cci_mi, elix_chf */
    int bit;                   /* position in the builder's bigint masks */
    int weight;                /* Charlson 1987 weight; 0 for Elixhauser */
    const char *superseded_by; /* hierarchy (index and count only), or NULL */
    const char *label;
} feat_comorb;

extern const feat_comorb feat_comorbs[];
extern const int feat_comorbs_count;   /* 17 Charlson + 31 Elixhauser */

/* The categories as one line per category ("col bit weight superseded_by"), in bit
 * order, as features.comorbidity_category must hold them. Static storage. */
const char *feat_comorb_signature(void);

/* Expands the placeholders of a feature-set SQL template (all but @FLAGCOLS@ read
 * the bigint mask column `cm`):
 *   @FLAGS@      the 48 flag columns  ((cm >> bit) & 1)::smallint AS cci_mi, ...
 *   @FLAGCOLS@   the same columns read from the alias f: f.cci_mi, f.cci_chf, ...
 *   @CHARLSON@   the Charlson index (weights, hierarchy)
 *   @ELIXCOUNT@  the Elixhauser count (hierarchy)
 * Returns a malloc'd string (caller frees) or NULL when out of memory. */
char *feat_expand_sql(const char *tmpl);

/* ---- column descriptors (sets.c) ------------------------------------------ */

typedef struct feat_col {
    const char *name;
    px_col_role role;
    px_col_kind kind;
    const char *doc;
} feat_col;

/* Fills out (room for max) with the columns of a built-in set, in table order;
 * returns how many, or -1 when max is too small. Strings are static. */
int feat_columns(const px_feat_set_info *s, feat_col *out, int max);
#define PX_FEAT_MAX_COLS 128

/* The SQL template of a set (features/sql/<name>.sql), or NULL. */
const char *feat_set_sql(const px_feat_set_info *s);

/* ---- embedded SQL (generated from features/sql/NAME.sql) ------------------- */

extern const char feat_sql_base[];
extern const char feat_sql_readmission[];
extern const char feat_sql_mortality[];
extern const char feat_sql_los[];

#endif
