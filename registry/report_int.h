/* report_int.h: what the files of the registry's reports share (report.c,
 * report_card.c, report_util.c); no other file includes it. */
#ifndef PROGNOS_REGISTRY_REPORT_INT_H
#define PROGNOS_REGISTRY_REPORT_INT_H

#include "registry/internal.h"
#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <stdio.h>

/* A verified CSV artifact as rows of fields (header included); rep_csv_free frees. */
typedef struct csv_rows { size_t n, cap; char ***row; size_t *ncol; } csv_rows;

/* Everything show and card need about one version, verified. */
typedef struct version_info {
    char dir[4200];
    reg_manifest m;
    cJSON *row;       /* the registry.versions row as JSON (+ aliases, alias_history, decisions) */
    cJSON *metrics;   /* metrics.json */
    cJSON *ref;       /* reference.json */
    csv_rows coef;    /* coefficients.csv (n = 0 when none) */
    csv_rows calib;   /* calibration.csv (n = 0 when none) */
} version_info;

/* Writes the report b to out in one go. */
int rep_emit(px_buf *b, FILE *out, px_err *e);
/* A number member of o (NaN when absent), a string member ("" when absent). */
double rep_jnum(const cJSON *o, const char *k);
const char *rep_jstr(const cJSON *o, const char *k);
/* v with digits decimals, a count, an AUC with its interval, into buf ("-" when unknown). */
const char *rep_num(char *buf, size_t n, double v, int digits);
const char *rep_count(char *buf, size_t n, double v);
const char *rep_auc_ci(char *buf, size_t n, const cJSON *ev, const char *ci_word);
/* s as one Markdown table cell (| escaped, line breaks as spaces). */
void rep_md_cell(px_buf *b, const char *s);
cJSON *rep_read_json(const reg_manifest *m, const char *dir, const char *file, px_err *e);
void rep_csv_free(csv_rows *t);
int rep_read_csv(const reg_manifest *m, const char *dir, const char *file, csv_rows *t, px_err *e);
/* One version's row and verified artifacts (verb names the command in errors). */
int rep_info_load(PGconn *c, const px_config *cfg, const char *name, const char *ref, const char *verb,
                  version_info *vi, px_err *e);
void rep_info_release(version_info *vi);
/* j as one-line JSON (free it), NULL for NULL. */
char *rep_compact(const cJSON *j);
/* The quality gates' verdict as text (md 0) or Markdown (md 1). */
void rep_gates_section(px_buf *b, const version_info *vi, int md);

#endif
