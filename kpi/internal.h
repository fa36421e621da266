/* internal.h: declarations shared inside kpi/ only (compute.c, report.c, svg.c);
 * no other folder includes it. */
#ifndef PROGNOS_KPI_INTERNAL_H
#define PROGNOS_KPI_INTERNAL_H

#include "kpi/kpi.h"
#include <libpq-fe.h>

/* Advisory lock held for a whole KPI run: runs are computed one at a time. */
#define PX_KPI_LOCK PX_LOCK_KPI

/* The three risk-adjusted measures and the registry models they use, in order. */
extern const px_kpi_measure kpi_risk_measure[3];
extern const char *const kpi_risk_model[3];

/* Period kind flag -> name ("month", ...), and back (0 when unknown). */
const char *kpi_kind_name(int kind);
int kpi_kind_flag(const char *name);

/* ---- one risk model in a run (compute.c, score.c) ---- */

struct cJSON;
typedef struct kpi_model {
    int version;
    px_model *m;
    char table[256], label[64];
    struct cJSON *info;   /* summary stored in kpi.runs.models */
    long long rows;       /* feature-table rows scored */
    int crude;            /* 1: no usable model: observed outcomes only (m NULL, version 0) */
    int skip;             /* 1: not even a feature table: the measure is not computed */
    /* set by kpi_score_prepare */
    char *pred_sql;       /* the prediction as SQL over the feature table aliased t: the compiled
                           * model, or the C scores (kpi.scored_c) joined in; NULL when crude */
    char *hier_sql;       /* the hierarchical model's fixed-effect eta as SQL, or NULL */
    char *label_sql;      /* t."<label>"::float8 */
    int in_c;             /* 1: scored in C (an SVM, or score_in_c) */
    double shift;         /* reference shift (0: pooled) */
    char *from_sql;       /* FROM ... WHERE <label> IS NOT NULL: the model's rows */
    char units;           /* 't' or 'w': the alias holding discharge_date, facility_id, department */
} kpi_model;
void kpi_model_release(kpi_model *mi);

/* ---- cells: one measure x period x unit (compute.c, score.c) ---- */

enum { KPI_U_SYSTEM, KPI_U_FACILITY, KPI_U_DEPARTMENT };

typedef struct kpi_cell {
    int measure, kind, utype;
    char start[11];          /* period start, YYYY-MM-DD ("1900-01-01" for all) */
    char *unit;
    double n, o, e, vpq, syy, sye, see;   /* sums: cases, observed, expected, sum p(1-p), y^2, y e, e^2 */
    /* results (NAN = NULL) */
    double rate, rate_lo, rate_hi, erate, oe, oe_lo, oe_hi, rsr, rsr_lo, rsr_hi, eb, ebw;
    double fx, f95lo, f95hi, f998lo, f998hi, phi, fvar;
    const char *oe_method, *flag;
    int suppressed;
    /* facilities: the stored hierarchical model applied (NAN when not) */
    double sr, sr_lo, sr_hi, srsr, srsr_lo, srsr_hi;
    const char *adjustment, *oe_flag;
} kpi_cell;

typedef struct kpi_cells {
    kpi_cell *v;
    size_t n, cap;
} kpi_cells;
void kpi_cells_free(kpi_cells *cs);

/* cells.c: qsort order (measure, kind, start, unit type, unit); the statistics of
 * one cell (sys: its period's system cell, NULL for the system itself); EB and
 * funnels across the k cells of one unit type in one period (0 or PX_ENOMEM);
 * what a crude measure's cell keeps; a facility's hierarchical ratio (hier: the
 * three risk models'). */
int kpi_cell_cmp(const void *a, const void *b);
void kpi_cell_stats(kpi_cell *x, const kpi_cell *sys, const px_kpi_params *p);
int kpi_group_stats(kpi_cell *g, size_t k, const kpi_cell *sys, const px_kpi_params *p);
void kpi_crude_cell(kpi_cell *x);
const char *kpi_crude_method_words(px_kpi_measure m);
struct kpi_hier;
void kpi_cell_hier(kpi_cell *x, const kpi_cell *sys, const struct kpi_hier *hier);

/* The stays' hierarchical linear predictors per facility x month of one model
 * (from the one pass), for hier.c; for a Poisson model one pseudo-stay per
 * finest cell (see score.c). y carries the outcomes as sums: the outcomes' sum
 * of a finest cell on one of its stays, 0 on the others (the conditional mode
 * needs only the sum: px_glmm_unit_ratio_sum), so that any period's sum is the
 * sum of its rows' y. */
typedef struct kpi_hier_rows {
    size_t n, cap;
    int *fac, *ym;           /* facility index (into facs), year * 12 + month - 1 */
    double *eta, *y;
    char **facs;             /* facility names, byte order */
    size_t nfac;
} kpi_hier_rows;
void kpi_hier_rows_free(kpi_hier_rows *r);

/* Prepares model k for the one pass (score.c): a logit or poisson model is
 * compiled to SQL; an SVM (or every model when p->score_in_c) is scored in C
 * through the feature reader and its scores stored in kpi.scored_c; with the
 * average-facility reference, the shift is computed from the scores. h: the
 * model's stored hierarchical model or NULL. Notes what it did in info. */
int kpi_score_prepare(PGconn *c, const px_kpi_params *p, int k, kpi_model *mi, const px_hier *h,
                      px_kpi_run_info *info, px_err *e);
/* The one pass: every measure scored and summed to the finest cell (month x
 * facility x department) in SQL, read with the feature reader, rolled up in C
 * to every requested period kind and unit type (cells appended to cs); the
 * hierarchical rows of each model with a hier_sql into hr[k]; rows[k]: the
 * stays of model k summed. */
int kpi_score_pass(PGconn *c, const kpi_model *mi, int kinds, kpi_cells *cs, kpi_hier_rows *hr, long long *rows,
                   px_err *e);
/* The query behind the view kpi.predictions for this run (stored in
 * kpi.runs.predictions_sql; migration 012): the stays' predictions computed on
 * read with the same SQL as the pass. malloc'd; NULL when out of memory. */
char *kpi_predictions_sql(long long run_id, const kpi_model *mi);

/* bsearch comparator of a string key against an array of char *. */
int kpi_cmp_str(const void *key, const void *elem);

/* Monotonic seconds. */
double kpi_now(void);

/* What the report says about the method, in plain words (static strings). */
const char *kpi_method_words(px_kpi_measure m);

/* ---- charts (svg.c) ---- */

/* One plotted item: a label, a position (x; y with interval lo..hi) and a CSS class. */
typedef struct kpi_point {
    const char *label;
    double x, y, lo, hi;
    const char *cls;
} kpi_point;

/* Appends s HTML/XML-escaped. */
void kpi_html_esc(px_buf *b, const char *s);
/* Forest plot: one row per point (y, lo..hi on the x axis), a reference line at ref. */
int kpi_svg_forest(px_buf *b, const char *aria, const kpi_point *p, size_t n, double ref);
/* A funnel plot's control limit at precision x for level conf (upper or lower). */
typedef double (*kpi_limit_fn)(double x, double conf, int upper, const void *arg);
/* Funnel plot: points (x = precision, y = O/E) with 95% and 99.8% limits from lim. */
int kpi_svg_funnel(px_buf *b, const char *aria, const kpi_point *p, size_t n, kpi_limit_fn lim, const void *arg,
                   const char *xlabel);
/* Trend over periods (points in order: label = period, y with lo..hi band),
 * with an optional expected line; pct: the values are proportions. */
/* A sparkline of n values (NAN: a gap), the current one dotted; no axes. */
int kpi_svg_spark(px_buf *b, const char *aria, const double *y, size_t n, size_t cur);
int kpi_svg_trend(px_buf *b, const char *aria, const kpi_point *p, size_t n, const double *expected, int pct,
                  const char *ylabel);


/* ---- the stored hierarchical model, applied (hier.c) ---- */

/* One facility x period: the empirical-Bayes intercept u (SD sd) with the
 * stored (beta, mu, tau) fixed, predicted / expected = sr with its interval. */
typedef struct kpi_hier_cell {
    int kind, fac;
    char start[16];       /* period start as the aggregation labels it ("1900-01-01" for all) */
    double n, u, sd, predicted, expected, sr, lo, hi;   /* n: rows (a Poisson model: finest cells) */
} kpi_hier_cell;

typedef struct kpi_hier {
    int available;        /* 0: no hierarchical.json with the version (why says so) */
    double tau, mu;
    long long rows;
    char **facs;          /* facility names, byte order */
    size_t nfac;
    kpi_hier_cell *cells;
    size_t ncells;
    char why[320];
} kpi_hier;

/* Reads and verifies hierarchical.json of version (name, version): *out is
 * the parsed model (caller frees with px_hier_free), or NULL when the version
 * has none (h->why says so). A tampered file fails the run (PX_ECORRUPT). */
int kpi_hier_load(const px_config *cfg, const char *name, int version, const px_model *m, px_hier **out,
                  kpi_hier *h, px_err *e);
/* Fills h's cells for the requested period kinds from the stays' rows (one
 * empirical-Bayes intercept per facility x period, px_glmm_unit_ratio). */
int kpi_hier_cells(const px_hier *model, const kpi_hier_rows *rows, const char *name, int version, int kinds,
                   double conf, kpi_hier *h, px_err *e);
/* Index of a cell in h->cells, or -1. */
int kpi_hier_find(const kpi_hier *h, int kind, const char *start, const char *unit);
void kpi_hier_free(kpi_hier *h);

#endif
