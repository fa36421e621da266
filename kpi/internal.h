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

/* One field of a COPY text row starting at *p (ends at tab or newline), unescaped in
 * place. Returns the field (NUL-terminated), NULL for \N; *p moves past it; *ok = 0
 * when the row has ended. Shared by the scoring pass (compute.c) and hier.c. */
char *kpi_copy_field(char **p, char *end, int *ok);
/* Appends ", t.<feature>" (quoted) for every input of model m (none when m is NULL: a crude measure) to q, for the COPY
 * that reads a feature table aliased t. 0, or PX_ENOMEM in e. */
int kpi_feature_columns(PGconn *c, const px_model *m, px_buf *q, px_err *e);
/* A COPY text value as a number: booleans t/f, else strtod; NAN when NULL or unparsable. */
double kpi_num_value(const char *s);
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
    double n, u, sd, predicted, expected, sr, lo, hi;
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

/* Reads and verifies hierarchical.json of version (name, version) (absent: 0
 * with out->available = 0), scores every labelled row of the feature table
 * table_q (quoted) with it and fills the cells of the requested period kinds.
 * A tampered file fails the run (PX_ECORRUPT). */
int kpi_hier_apply(PGconn *c, const px_config *cfg, const char *name, int version, const px_model *m,
                   const char *table_q, const char *label, int kinds, double conf, kpi_hier *out, px_err *e);
/* Index of a cell in h->cells, or -1. */
int kpi_hier_find(const kpi_hier *h, int kind, const char *start, const char *unit);
void kpi_hier_free(kpi_hier *h);

#endif
