/* internal.h: declarations shared inside kpi/ only (compute.c, report.c, svg.c);
 * no other folder includes it. */
#ifndef PROGNOS_KPI_INTERNAL_H
#define PROGNOS_KPI_INTERNAL_H

#include "kpi/kpi.h"
#include <libpq-fe.h>

/* Advisory lock held for a whole KPI run: runs are computed one at a time. */
#define PX_KPI_LOCK 7070005

/* The three risk-adjusted measures and the registry models they use, in order. */
extern const px_kpi_measure kpi_risk_measure[3];
extern const char *const kpi_risk_model[3];

/* Period kind flag -> name ("month", ...), and back (0 when unknown). */
const char *kpi_kind_name(int kind);
int kpi_kind_flag(const char *name);

/* Sets e from a failed result (or the connection when r is NULL) and returns PX_EDB. */
int kpi_db_fail(px_err *e, PGconn *c, PGresult *r, const char *what);

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
int kpi_svg_trend(px_buf *b, const char *aria, const kpi_point *p, size_t n, const double *expected, int pct,
                  const char *ylabel);

#endif
