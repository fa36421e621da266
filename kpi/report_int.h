/* report_int.h: what the files of the KPI report share (kpi/ only): the rows of
 * a stored run, the targets and benchmarks, and the functions each file offers.
 * Calls go one way: report.c -> report_goals.c, report_html.c, report_export.c;
 * report_html.c -> report_league.c; all -> report_fmt.c and svg.c. */
#ifndef PROGNOS_KPI_REPORT_INT_H
#define PROGNOS_KPI_REPORT_INT_H

#include "kpi/internal.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

/* ---- the rows of a run ----------------------------------------------------- */

typedef struct row {
    int measure, utype;
    char unit[128], period[16], start[16], end[16];
    double n, o, e, rate, rlo, rhi, erate, oe, oelo, oehi, rsr, rsrlo, rsrhi, eb, ebw;
    double fx, f95lo, f95hi, f998lo, f998hi, phi, fvar;
    char flag[16], oe_method[16];
    int suppressed, version;
    double sr, srlo, srhi, srsr, srsrlo, srsrhi;   /* hierarchical (facilities), NAN when none */
    char adjustment[16];                          /* none, indirect, hierarchical */
} row;

typedef struct run_info {
    long long run_id;
    char kind[16], period[16], computed_at[64], computed_by[64], first[16], last[16];
    long long encounters;
    cJSON *models, *method;
    char *batches;      /* the run's source_batches as array text; owned */
} run_info;

typedef struct rows {
    row *v;
    size_t n;
} rows;

/* Counts one stay can enter in a release: volume (n) and, for readmission and
 * mortality, n, observed and expected, each at system, facility and department. */
#define DP_COUNTS_PER_STAY 21

/* ---- targets and national benchmarks ---------------------------------------------- */

/* A value someone set for a measure (--target, --targets FILE) or a national
 * rate from the public CMS files (--benchmarks DIR). */
typedef struct goal {
    double value;              /* on the measure's scale (proportion, days, dollars) */
    int higher_better;         /* direction: 1 when higher is better */
    char source[160];
} goal;

typedef struct goals {
    goal target[PX_KPI__COUNT];
    goal bench[PX_KPI__COUNT][2];   /* Hospital Compare, HRRP */
} goals;

/* ---- targets and benchmarks (report_goals.c) ---- */

/* --targets FILE: JSON when the first non-blank byte is [ or {, else CSV. 0, or
 * PX_EINVAL / PX_EIO / PX_ENOMEM in e naming the file, line and field. */
int kpi_targets_load(goals *g, const char *path, px_err *e);
/* --benchmarks DIR: national rates from the CMS files found there. */
int kpi_benchmarks_load(goals *g, const char *dir, px_err *e);

/* ---- formatting and lookups (report_fmt.c) ---- */

double kpi_res_dbl(PGresult *r, int i, int j);          /* a result field, NAN when NULL */
extern const char *const kpi_utype_names[3];             /* system, facility, department */
extern const char *const kpi_mlabel[PX_KPI__COUNT];      /* "30-day readmission rate", ... */
int kpi_is_rate(int m);                                  /* readmission or mortality */
int kpi_lower_is_better(int m);
void kpi_thousands(char *out, size_t len, double v);     /* "1,234" */
/* A value on its measure's scale, for reading: "14.2%", "4.71 days", "$18,020", "1,234". */
void kpi_fmt_val(char *out, size_t len, int m, double v);
void kpi_fmt_num(char *out, size_t len, const char *f, double v);   /* "&ndash;" when not finite */
/* data-NAME='%.12g' (empty when NULL): the stored value at full precision */
void kpi_data_attr(px_buf *b, const char *name, double v);
const char *kpi_flag_words(const char *f);               /* "worse than expected", ... */
const row *kpi_find_row(const rows *rs, int m, int utype, const char *unit, const char *period);
/* The periods of the run in order (distinct labels of the system volume rows). */
size_t kpi_periods_list(const rows *rs, const char **out, size_t max);
int kpi_named_unit(const row *x);      /* not the department of stays that had none */
double kpi_flag_ratio(const row *x);   /* hierarchical SR where there is one, else O/E */
int kpi_measure_crude(const run_info *ri, int m);   /* risk measure computed without a model */

/* ---- the page (report_html.c, report_league.c) ---- */

/* The whole HTML page into b; fills info's flag counts. 0 or PX_ENOMEM. */
int kpi_report_html(PGconn *c, px_buf *b, rows *rs, const run_info *ri, const px_kpi_report_params *p,
                    const goals *g, px_kpi_report_info *info);
/* League table, forest plot and funnel plot of risk measure m for unit type utype
 * (1 facility, 2 department); *units and *suppressed receive the counts. */
int kpi_league(px_buf *b, const rows *rs, const run_info *ri, int m, int utype, int *units, int *suppressed, int dp);

/* ---- exports (report_export.c) ---- */

/* The period's rows as the JSON document; malloc'd (caller frees), NULL on out of memory. */
char *kpi_report_json(const rows *rs, const run_info *ri, const px_kpi_report_params *p, const goals *g);
/* The period's rows as CSV into b. 0 or PX_ENOMEM. */
int kpi_report_csv(px_buf *b, const rows *rs, const run_info *ri);

#endif
