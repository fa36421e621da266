/* compute.c: px_kpi_compute, one KPI run in one REPEATABLE READ transaction:
 * resolve and load (verified) each risk model, score its feature table row by row
 * (COPY out), write the predictions to kpi.predictions (COPY in), aggregate them
 * per measure x period x unit with GROUPING SETS in SQL, then compute intervals,
 * flags, smoothing and funnel limits in C and COPY the cells into kpi.results.
 * Invariant: a failed run leaves nothing (the transaction is rolled back). */
#include "kpi/internal.h"
#include <cjson/cJSON.h>
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COPY_CHUNK (1 << 20)

const px_kpi_measure kpi_risk_measure[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
const char *const kpi_risk_model[3] = {"readmission", "mortality", "los"};

static const char *const measure_names[PX_KPI__COUNT] = {"volume", "readmission", "mortality", "los", "cost"};

const char *px_kpi_measure_name(px_kpi_measure m)
{
    return (unsigned)m < PX_KPI__COUNT ? measure_names[m] : "?";
}

int px_kpi_measure_parse(const char *s, px_kpi_measure *m)
{
    for (int i = 0; i < PX_KPI__COUNT; i++)
        if (s && strcmp(s, measure_names[i]) == 0) {
            *m = (px_kpi_measure)i;
            return 0;
        }
    return PX_EINVAL;
}

const char *kpi_kind_name(int kind)
{
    switch (kind) {
    case PX_KPI_MONTH: return "month";
    case PX_KPI_QUARTER: return "quarter";
    case PX_KPI_YEAR: return "year";
    case PX_KPI_ALL: return "all";
    default: return "?";
    }
}

int kpi_kind_flag(const char *name)
{
    static const int kinds[4] = {PX_KPI_MONTH, PX_KPI_QUARTER, PX_KPI_YEAR, PX_KPI_ALL};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, kpi_kind_name(kinds[i])) == 0) return kinds[i];
    return 0;
}

int px_kpi_periods_parse(const char *s, int *flags)
{
    if (!s || !*s) return PX_EINVAL;
    int f = 0;
    const char *p = s;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        char w[16];
        if (len == 0 || len >= sizeof w) return PX_EINVAL;
        memcpy(w, p, len);
        w[len] = 0;
        int k = kpi_kind_flag(w);
        if (!k) return PX_EINVAL;
        f |= k;
        p += len + (q != NULL);
        if (q && !*p) return PX_EINVAL;
    }
    *flags = f;
    return 0;
}

double kpi_now(void) { return px_mono_s(); }

const char *kpi_method_words(px_kpi_measure m)
{
    switch (m) {
    case PX_KPI_VOLUME:
        return "volume: discharges in the period; no interval";
    case PX_KPI_READMISSION:
    case PX_KPI_MORTALITY:
        return "crude rate with Wilson score interval; expected = sum of the model's predicted risks; "
               "O/E with exact Poisson (Garwood) limits below byar_min_events events, Byar's approximation "
               "from there; risk-standardized rate = O/E x system crude rate; worse/better when the O/E "
               "interval excludes 1; EB: AHRQ reliability-weighted shrinkage to the system rate, "
               "DerSimonian-Laird signal variance; funnel: Spiegelhalter (2005) interpolated exact Poisson "
               "limits at the unit's expected events; facilities (adjustment = hierarchical): CMS standardized "
               "ratio sr = predicted / expected from the model's stored random-intercept model, srsr = sr x system "
               "rate, flag from the sr interval (normal posterior of the facility intercept); system and "
               "departments: indirect (O/E); intervals treat model coefficients as known";
    case PX_KPI_LOS:
        return "crude mean with Student t interval; expected = sum of the model's expected days; O/E = "
               "sum(days) / sum(expected) with a robust (HC0 sandwich, log-scale) interval; risk-standardized "
               "ALOS = O/E x system mean; worse/better when the O/E interval excludes 1; EB: AHRQ reliability "
               "weight; funnel: normal limits with the system's per-stay residual variance; facilities (adjustment = "
               "hierarchical): standardized ratio from the model's stored random-intercept Poisson model, flag from "
               "its interval; intervals treat model coefficients as known";
    case PX_KPI_COST:
        return "crude mean cost per encounter with Student t interval; not risk-adjusted";
    default:
        return "";
    }
}

px_kpi_params px_kpi_default_params(void)
{
    px_kpi_params p;
    memset(&p, 0, sizeof p);
    p.periods = PX_KPI_MONTH | PX_KPI_QUARTER | PX_KPI_YEAR | PX_KPI_ALL;
    p.conf = 0.95;
    p.min_cases = 25;
    p.byar_min_events = PX_KPI_BYAR_MIN_EVENTS;
    p.reference = PX_KPI_REF_POOLED;
    return p;
}

/* ---- small helpers ----------------------------------------------------------- */

static int exec_ok(PGconn *c, px_err *e, const char *sql, const char *what)
{
    PGresult *r = PQexec(c, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK
                 ? 0
                 : px_db_fail(e, c, r, what);
    PQclear(r);
    return rc;
}

/* "schema.table" -> quoted "schema"."table" (caller frees), NULL on a bad name. */
static char *quote_table(PGconn *c, const char *t)
{
    const char *dot = strchr(t, '.');
    char *s = NULL, *n = NULL, *out = NULL;
    if (!dot || dot == t || !dot[1] || strchr(dot + 1, '.')) return NULL;
    s = PQescapeIdentifier(c, t, (size_t)(dot - t));
    n = PQescapeIdentifier(c, dot + 1, strlen(dot + 1));
    if (s && n && (out = malloc(strlen(s) + strlen(n) + 2))) sprintf(out, "%s.%s", s, n);
    PQfreemem(s);
    PQfreemem(n);
    return out;
}

/* One field of a COPY text row starting at *p (ends at tab or newline); unescapes
 * in place. Returns the field (NUL-terminated), NULL for \N; *p moves past it. */
int kpi_feature_columns(PGconn *c, const px_model *m, px_buf *q, px_err *e)
{
    size_t nf = m ? px_model_nfeatures(m) : 0; /* a crude measure reads no inputs */
    for (size_t j = 0; j < nf; j++) {
        const px_feature_info *fi = px_model_feature(m, j);
        char *id = PQescapeIdentifier(c, fi->name, strlen(fi->name));
        if (!id) return px_err_set(e, PX_ENOMEM, "out of memory");
        int rc = px_buf_printf(q, ", t.%s", id);
        PQfreemem(id);
        if (rc < 0) return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    return 0;
}

char *kpi_copy_field(char **p, char *end, int *ok)
{
    char *s = *p, *w = s, *r = s;
    if (s >= end) {
        *ok = 0;
        return NULL;
    }
    while (r < end && *r != '\t' && *r != '\n') {
        if (*r == '\\' && r + 1 < end) {
            r++;
            switch (*r) {
            case 'N': *w++ = 0; r++; goto check_null;
            case 't': *w++ = '\t'; break;
            case 'n': *w++ = '\n'; break;
            case 'r': *w++ = '\r'; break;
            case 'b': *w++ = '\b'; break;
            case 'f': *w++ = '\f'; break;
            case 'v': *w++ = '\v'; break;
            default: *w++ = *r; break;
            }
            r++;
        } else {
            *w++ = *r++;
        }
    }
    *p = r + (r < end);
    *w = 0;
    return s;
check_null:
    *p = r + (r < end);
    return NULL;
}

int kpi_cmp_str(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(char *const *)elem);
}

/* A COPY text value as a number: booleans t/f, else strtod; NAN when NULL or unparsable. */
double kpi_num_value(const char *s)
{
    if (!s) return NAN;
    if (s[0] == 't' && !s[1]) return 1;
    if (s[0] == 'f' && !s[1]) return 0;
    char *end;
    double v = strtod(s, &end);
    return end != s && !*end ? v : NAN;
}

/* ---- models ------------------------------------------------------------------ */

typedef struct model_in {
    int version;
    px_model *m;
    char table[256], label[64];
    cJSON *info;          /* summary stored in kpi.runs.models */
    long long rows;       /* feature-table rows scored */
    int crude;            /* 1: no usable model: observed outcomes only (m NULL, version 0) */
    int skip;             /* 1: not even a feature table: the measure is not computed */
} model_in;

/* Resolves, verifies and loads one risk model and reads its training spec. */
static int model_open(PGconn *c, const px_config *cfg, int k, const char *ref, model_in *mi, px_err *e)
{
    const char *name = kpi_risk_model[k];
    int rc, version = 0;
    if ((rc = px_reg_resolve(c, name, ref, &version, e)) != 0) {
        if (rc == PX_ENOTFOUND || rc == PX_EINVAL) {
            px_err_set(e, rc, "no version '%s' of risk model '%s' is registered", ref, name);
            px_err_hint(e, "train it first: prognos train --model %s", name);
        }
        return rc;
    }
    char vref[16];
    snprintf(vref, sizeof vref, "%d", version);
    if (!(mi->m = px_reg_load(c, cfg, name, vref, &mi->version, e))) return e && e->code ? e->code : PX_EIO;
    px_reg_version_row row;
    if ((rc = px_reg_version_info(c, name, version, &row, e)) == PX_ENOTFOUND) {
        rc = px_err_set(e, PX_ENOTFOUND, "risk model '%s' v%d is not in the registry", name, version);
    } else if (rc == 0) {
        snprintf(mi->table, sizeof mi->table, "%s", row.feature_table);
        snprintf(mi->label, sizeof mi->label, "%s", row.label);
        if (!(mi->info = cJSON_Parse(row.summary_json))) rc = px_err_set(e, PX_ENOMEM, "out of memory");
        if (!rc && (!mi->table[0] || !mi->label[0]))
            rc = px_err_set(e, PX_EINVAL, "risk model '%s' v%d names no feature table or label", name, version);
    }
    px_reg_version_row_free(&row);
    return rc;
}

static void model_close(model_in *mi)
{
    px_model_free(mi->m);
    cJSON_Delete(mi->info);
    memset(mi, 0, sizeof *mi);
}

/* Appends "; "-separated text to info->notes. */
static void add_note(px_kpi_run_info *info, const char *fmt, ...)
{
    size_t l = strlen(info->notes);
    if (l + 3 >= sizeof info->notes) return;
    if (l) l += (size_t)snprintf(info->notes + l, sizeof info->notes - l, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(info->notes + l, sizeof info->notes - l, fmt, ap);
    va_end(ap);
}

/* The quality gates of a registered version: 1 passed or not evaluated (a version
 * from before the gates), 0 failed; *accepted: failed but accepted at training;
 * failed: the failed gates' names ("a, b"). */
static int gates_of(PGconn *c, const char *name, int version, int *accepted, char *failed, size_t flen, px_err *e)
{
    int passed = 1, rc = px_reg_gates_status(c, name, version, &passed, accepted, failed, flen, e);
    return rc < 0 ? rc : passed;
}

/* Without a usable model: the measure's built-in feature table and label give
 * the observed outcomes (crude); without the table, the measure is skipped. */
static int model_crude(PGconn *c, int k, model_in *mi, const char *why, px_kpi_run_info *info, cJSON *method,
                       px_err *e)
{
    const char *name = kpi_risk_model[k];
    const px_feat_set_info *set = px_feat_set_find(name);
    model_close(mi);
    mi->crude = 1;
    if (!(mi->info = cJSON_CreateObject())) return px_err_set(e, PX_ENOMEM, "out of memory");
    cJSON_AddBoolToObject(mi->info, "crude", 1);
    cJSON_AddStringToObject(mi->info, "reason", why);
    char ok[16] = "";
    if (set) {
        const char *pp[1] = {set->table};
        PGresult *r = PQexecParams(c, "SELECT (to_regclass($1) IS NOT NULL)::int", 1, NULL, pp, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            int rc = px_db_fail(e, c, r, "cannot look up a feature table");
            PQclear(r);
            return rc;
        }
        snprintf(ok, sizeof ok, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    char words[600];
    if (set && strcmp(ok, "1") == 0) {
        snprintf(mi->table, sizeof mi->table, "%s", set->table);
        snprintf(mi->label, sizeof mi->label, "%s", set->label);
        info->crude[k] = 1;
        add_note(info, "%s crude (not risk-adjusted): %s", name, why);
        snprintf(words, sizeof words, "crude, not risk-adjusted: %s", why);
    } else {
        mi->skip = 1;
        info->skipped[k] = 1;
        add_note(info, "%s not computed: %s, and no feature table %s", name, why, set ? set->table : "");
        snprintf(words, sizeof words, "not computed: %s; build the features (prognos features build)", why);
    }
    cJSON_AddStringToObject(mi->info, "adjustment", words);
    char key[64];
    snprintf(key, sizeof key, "%s_adjustment", name);
    cJSON_AddStringToObject(method, key, words);
    return 0;
}

/* model_open with the quality gates: a missing champion, or a model that failed
 * its gates (unless accepted at training or p->allow_failed_gates), leaves the
 * measure crude; an explicitly named model that is missing is an error, one that
 * failed its gates is refused. See px_kpi_compute in kpi.h. */
static int model_open_gated(PGconn *c, const px_config *cfg, int k, const char *ref, const px_kpi_params *p,
                            model_in *mi, px_kpi_run_info *info, cJSON *method, px_err *e)
{
    const char *name = kpi_risk_model[k];
    int explicit_ref = p->model_ref[k] != NULL;
    char why[512];
    int rc = model_open(c, cfg, k, ref, mi, e);
    if (rc == PX_ENOTFOUND && !explicit_ref) {
        /* say why there is none: never trained, or its latest version failed its gates */
        int latest = 0, acc = 0, pass = 1;
        char failed[256] = "";
        px_err e2 = {0};
        if (px_reg_resolve(c, name, "latest", &latest, &e2) == 0)
            pass = gates_of(c, name, latest, &acc, failed, sizeof failed, &e2);
        if (latest && pass == 0)
            snprintf(why, sizeof why, "risk model '%s' has no champion: its latest version v%d failed its quality gates (%s)",
                     name, latest, failed);
        else
            snprintf(why, sizeof why, "no champion of risk model '%s' (train it: prognos train --model %s)", name, name);
        px_err_clear(e);
        return model_crude(c, k, mi, why, info, method, e);
    }
    if (rc != 0) return rc;
    int accepted = 0;
    char failed[256];
    int passed = gates_of(c, name, mi->version, &accepted, failed, sizeof failed, e);
    if (passed < 0) return passed;
    if (passed) return 0;
    cJSON_AddStringToObject(mi->info, "gates_failed", failed);
    if (accepted || p->allow_failed_gates) {
        cJSON_AddStringToObject(mi->info, "gates_override",
                                accepted ? "accepted at training (--accept-failed-gates)" : "--allow-failed-gates");
        add_note(info, "%s adjusted by v%d although it failed its quality gates (%s; %s)", name, mi->version, failed,
                 accepted ? "accepted at training" : "--allow-failed-gates");
        return 0;
    }
    if (explicit_ref) {
        rc = px_err_set(e, PX_EINVAL, "risk model '%s' v%d failed its quality gates (%s): it may not adjust KPIs",
                        name, mi->version, failed);
        px_err_hint(e, "see prognos registry show %s %d; compute anyway with --allow-failed-gates", name,
                    mi->version);
        return rc;
    }
    snprintf(why, sizeof why, "risk model '%s' v%d failed its quality gates (%s)", name, mi->version, failed);
    return model_crude(c, k, mi, why, info, method, e);
}

/* The scored rows of one model, in memory until the reference shift is known. */
typedef struct scored {
    size_t n, cap;
    char *ids;          /* n encounter ids, 36 characters each (uuid text), no separators */
    double *p, *y;      /* model output (probability or expected days), observed outcome */
    int *fac;           /* facility index */
    char **facs;        /* facility names by index */
    size_t nfac, capfac;
    unsigned *slot;     /* open-addressing hash of facility names: index + 1, 0 = empty */
    size_t nslot;
} scored;

static void scored_free(scored *s)
{
    free(s->ids), free(s->p), free(s->y), free(s->fac), free(s->slot);
    for (size_t i = 0; i < s->nfac; i++) free(s->facs[i]);
    free(s->facs);
    memset(s, 0, sizeof *s);
}

/* Index of a facility name, added when new; -1 on out of memory. */
static int fac_index(scored *s, const char *name)
{
    if (s->nfac * 2 >= s->nslot) {
        size_t ns = s->nslot ? s->nslot * 2 : 1024;
        unsigned *sl = calloc(ns, sizeof *sl);
        if (!sl) return -1;
        for (size_t i = 0; i < s->nfac; i++) {
            size_t h = (size_t)(px_hash_str(s->facs[i]) & (ns - 1));
            while (sl[h]) h = (h + 1) & (ns - 1);
            sl[h] = (unsigned)i + 1;
        }
        free(s->slot);
        s->slot = sl;
        s->nslot = ns;
    }
    size_t h = (size_t)(px_hash_str(name) & (s->nslot - 1));
    while (s->slot[h]) {
        if (strcmp(s->facs[s->slot[h] - 1], name) == 0) return (int)s->slot[h] - 1;
        h = (h + 1) & (s->nslot - 1);
    }
    if (s->nfac == s->capfac) {
        size_t nc = s->capfac ? s->capfac * 2 : 256;
        char **f = realloc(s->facs, nc * sizeof *f);
        if (!f) return -1;
        s->facs = f;
        s->capfac = nc;
    }
    if (!(s->facs[s->nfac] = strdup(name))) return -1;
    s->slot[h] = (unsigned)++s->nfac;
    return (int)s->nfac - 1;
}

static int scored_push(scored *s, const char *id, double p, double y, int fac)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 65536;
        char *ids = realloc(s->ids, nc * 36);
        if (ids) s->ids = ids;
        double *pp = realloc(s->p, nc * sizeof *pp);
        if (pp) s->p = pp;
        double *yy = realloc(s->y, nc * sizeof *yy);
        if (yy) s->y = yy;
        int *ff = realloc(s->fac, nc * sizeof *ff);
        if (ff) s->fac = ff;
        if (!ids || !pp || !yy || !ff) return -1;
        s->cap = nc;
    }
    size_t len = strlen(id);
    if (len != 36) return -2;
    memcpy(s->ids + s->n * 36, id, 36);
    s->p[s->n] = p;
    s->y[s->n] = y;
    s->fac[s->n] = fac;
    s->n++;
    return 0;
}

/* Scores every labelled row of the model's feature table (with the stay's
 * facility from the warehouse) into s. */
static int model_score(PGconn *c, int k, model_in *mi, scored *s, px_err *e)
{
    size_t nf = mi->m ? px_model_nfeatures(mi->m) : 0; /* crude: the outcome only */
    int rc = 0;
    px_buf q = {0};
    char *tab = quote_table(c, mi->table), *lab = PQescapeIdentifier(c, mi->label, strlen(mi->label));
    double *raw = calloc(nf ? nf : 1, sizeof *raw);
    char *row = NULL;
    PGresult *r = NULL;
    if (!tab || !lab || !raw) {
        rc = tab ? px_err_set(e, PX_ENOMEM, "out of memory")
                 : px_err_set(e, PX_EINVAL, "risk model '%s' names a bad feature table '%s'", kpi_risk_model[k],
                              mi->table);
        goto out;
    }
    px_buf_printf(&q, "COPY (SELECT t.encounter_id, w.facility_id, t.%s", lab);
    if ((rc = kpi_feature_columns(c, mi->m, &q, e)) != 0) goto out;
    if (px_buf_printf(&q, " FROM %s t JOIN wh.fact_encounter w USING (encounter_id) WHERE t.%s IS NOT NULL)"
                          " TO STDOUT", tab, lab) < 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    r = PQexec(c, q.data);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        px_db_fail(e, c, r, "cannot read a feature table");
        rc = px_err_wrap(e, PX_EDB, "cannot read feature table '%s' for risk model '%s' v%d", mi->table,
                         kpi_risk_model[k], mi->version);
        goto out;
    }
    PQclear(r);
    r = NULL;
    int n;
    while ((n = PQgetCopyData(c, &row, 0)) > 0) {
        char *p = row, *end = row + n;
        int ok = 1;
        char *id = kpi_copy_field(&p, end, &ok);
        char *facility = kpi_copy_field(&p, end, &ok);
        double y = kpi_num_value(kpi_copy_field(&p, end, &ok));
        for (size_t j = 0; j < nf && ok; j++) {
            char *v = kpi_copy_field(&p, end, &ok);
            const px_feature_info *fi = px_model_feature(mi->m, j);
            if (fi->kind == PX_COL_CATEGORICAL && v) {
                /* levels are in byte order; an unseen level counts as the reference */
                char **hit = fi->nlevels ? bsearch(v, fi->levels, fi->nlevels, sizeof *fi->levels, kpi_cmp_str) : NULL;
                raw[j] = hit ? (double)(hit - fi->levels) : (double)fi->ref;
            } else {
                raw[j] = kpi_num_value(v);
            }
        }
        if (!ok || !id || !facility || !(y >= 0)) {
            rc = px_err_set(e, PX_EINVAL, "feature table '%s' has a row without encounter or valid label '%s'",
                            mi->table, mi->label);
            break;
        }
        double pred = NAN;
        if (mi->m && (rc = px_model_predict(mi->m, raw, &pred, NULL, e)) != 0) break;
        /* probabilities are in [0,1]; an SVR's expected days may dip below 0 */
        if (mi->m && !(pred >= 0)) pred = 0;
        int fi = fac_index(s, facility), pr = fi < 0 ? -1 : scored_push(s, id, pred, y, fi);
        if (pr != 0) {
            rc = pr == -2 ? px_err_set(e, PX_EINVAL, "feature table '%s' has an encounter_id that is not a uuid",
                                       mi->table)
                          : px_err_set(e, PX_ENOMEM, "out of memory holding predictions");
            break;
        }
        PQfreemem(row);
        row = NULL;
    }
    PQfreemem(row);
    row = NULL;
    if (rc) {
        /* drain the stream so the connection is usable for the rollback */
        while ((n = PQgetCopyData(c, &row, 0)) > 0) PQfreemem(row);
        row = NULL;
    } else if (n == -2) {
        rc = px_db_fail(e, c, NULL, "lost the connection while reading a feature table");
    }
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0)
            rc = px_db_fail(e, c, r, "cannot read a feature table");
        PQclear(r);
    }
    mi->rows = (long long)s->n;
out:
    PQclear(r);
    free(raw);
    free(tab);
    PQfreemem(lab);
    px_buf_release(&q);
    return rc;
}

static int binary_model(const model_in *mi)
{
    if (!mi->m) return 0;
    px_algo a = px_model_algo(mi->m);
    return a == PX_ALGO_LOGIT || a == PX_ALGO_SVC;
}

static double clamp_p(double p)
{
    return p < 1e-12 ? 1e-12 : p > 1 - 1e-12 ? 1 - 1e-12 : p;
}

/* The expected value of a row under the reference shift c: on the logit scale for
 * probabilities, multiplicative for expected days. */
static double shifted(double p, double c, int binary)
{
    if (c == 0) return p;
    if (!binary) return p * exp(c);
    double eta = log(clamp_p(p) / (1 - clamp_p(p))) + c;
    return 1 / (1 + exp(-eta));
}

/* The CMS-style reference: the risk model was fitted without facility terms, so
 * its intercept is the pooled one, pulled towards the facilities with many
 * stays and large effects (on the log-odds scale a worse facility adds more events
 * than an equally better one removes). CMS's measures (Krumholz et al. 2006; the
 * Yale/CORE readmission and mortality methodology) compute expected counts at the
 * average hospital's intercept of a random-intercept model. Two-stage version of
 * that with the champion's predictions as a fixed offset: each facility's own
 * intercept a_j (MLE given the offset: sum logistic(eta + a_j) = O_j by Newton;
 * log(O_j / E_j) for expected days) and its variance v_j, then the random-effects
 * (DerSimonian-Laird) mean c = sum a_j / (v_j + tau2) / sum 1 / (v_j + tau2).
 * Facilities with no event (or only events) have no finite a_j and are left out.
 * Returns c (0 when fewer than two facilities qualify). */
static double reference_shift(const scored *s, int binary)
{
    size_t nf = s->nfac;
    double *o = calloc(nf ? nf : 1, sizeof *o), *cnt = calloc(nf ? nf : 1, sizeof *cnt),
           *a = calloc(nf ? nf : 1, sizeof *a), *v = calloc(nf ? nf : 1, sizeof *v),
           *f = calloc(nf ? nf : 1, sizeof *f), *d = calloc(nf ? nf : 1, sizeof *d);
    double c = 0;
    if (!o || !cnt || !a || !v || !f || !d) goto out;
    for (size_t i = 0; i < s->n; i++) o[s->fac[i]] += s->y[i], cnt[s->fac[i]] += 1;
    if (binary) {
        /* Newton on all facilities at once: one pass over the rows per iteration */
        for (int it = 0; it < 30; it++) {
            memset(f, 0, nf * sizeof *f);
            memset(d, 0, nf * sizeof *d);
            for (size_t i = 0; i < s->n; i++) {
                double q = shifted(s->p[i], a[s->fac[i]], 1);
                if (a[s->fac[i]] == 0) q = clamp_p(s->p[i]);
                f[s->fac[i]] += q;
                d[s->fac[i]] += q * (1 - q);
            }
            double worst = 0;
            for (size_t j = 0; j < nf; j++) {
                if (o[j] <= 0 || o[j] >= cnt[j] || !(d[j] > 0)) continue;
                double step = (o[j] - f[j]) / d[j];
                if (step > 2) step = 2;
                if (step < -2) step = -2;
                a[j] += step;
                if (fabs(step) > worst) worst = fabs(step);
                v[j] = 1 / d[j];
            }
            if (worst < 1e-10) break;
        }
    } else {
        for (size_t i = 0; i < s->n; i++) f[s->fac[i]] += s->p[i];
        /* robust variance of log(O/E): sum (y - R e)^2 / O^2 */
        for (size_t j = 0; j < nf; j++) a[j] = o[j] > 0 && f[j] > 0 ? log(o[j] / f[j]) : 0;
        for (size_t i = 0; i < s->n; i++) {
            size_t j = (size_t)s->fac[i];
            double r = s->y[i] - exp(a[j]) * s->p[i];
            d[j] += r * r;
        }
        for (size_t j = 0; j < nf; j++) v[j] = o[j] > 0 ? d[j] / (o[j] * o[j]) : 0;
    }
    /* DerSimonian-Laird over the facilities with a finite intercept */
    double sw = 0, sw2 = 0, swa = 0;
    size_t k = 0;
    for (size_t j = 0; j < nf; j++) {
        int okj = binary ? o[j] > 0 && o[j] < cnt[j] : o[j] > 0 && f[j] > 0;
        if (!okj || !(v[j] > 0) || !isfinite(a[j])) {
            v[j] = NAN;
            continue;
        }
        sw += 1 / v[j], sw2 += 1 / (v[j] * v[j]), swa += a[j] / v[j];
        k++;
    }
    if (k < 2) goto out;
    double mean = swa / sw, q = 0;
    for (size_t j = 0; j < nf; j++)
        if (isfinite(v[j])) q += (a[j] - mean) * (a[j] - mean) / v[j];
    double tau2 = (q - (double)(k - 1)) / (sw - sw2 / sw);
    if (!(tau2 > 0)) tau2 = 0;
    double num = 0, den = 0;
    for (size_t j = 0; j < nf; j++)
        if (isfinite(v[j])) num += a[j] / (v[j] + tau2), den += 1 / (v[j] + tau2);
    c = num / den;
out:
    free(o), free(cnt), free(a), free(v), free(f), free(d);
    return isfinite(c) ? c : 0;
}

/* Appends the COPY rows (run_id, measure, version, encounter_id, predicted,
 * expected, observed) of one model. */
static int scored_rows(const scored *s, long long run_id, int k, int version, double shift, int binary, px_buf *out)
{
    char prefix[64];
    int plen = snprintf(prefix, sizeof prefix, "%lld\t%s\t%d\t", run_id, kpi_risk_model[k], version);
    if (px_buf_reserve(out, s->n * 80) < 0) return PX_ENOMEM;
    if (version == 0) /* crude: no model, no prediction */
        plen = snprintf(prefix, sizeof prefix, "%lld\t%s\t\\N\t", run_id, kpi_risk_model[k]);
    for (size_t i = 0; i < s->n; i++) {
        char num[96];
        int nl = version == 0 ? snprintf(num, sizeof num, "\t\\N\t\\N\t%.12g\n", s->y[i])
                              : snprintf(num, sizeof num, "\t%.12g\t%.12g\t%.12g\n", s->p[i],
                                         shifted(s->p[i], shift, binary), s->y[i]);
        if (px_buf_add(out, prefix, (size_t)plen) < 0 || px_buf_add(out, s->ids + i * 36, 36) < 0 ||
            px_buf_add(out, num, (size_t)nl) < 0)
            return PX_ENOMEM;
    }
    return 0;
}

/* COPY buf (complete rows) into a table. */
static int copy_in(PGconn *c, const char *sql, const px_buf *b, px_err *e)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        rc = px_db_fail(e, c, r, "cannot start COPY");
        PQclear(r);
        return rc;
    }
    PQclear(r);
    for (size_t off = 0; off < b->len && rc == 0;) {
        size_t len = b->len - off < COPY_CHUNK ? b->len - off : COPY_CHUNK;
        if (PQputCopyData(c, b->data + off, (int)len) != 1) rc = px_db_fail(e, c, NULL, "lost the connection in COPY");
        off += len;
    }
    if (PQputCopyEnd(c, rc ? "aborted by prognos" : NULL) != 1 && rc == 0)
        rc = px_db_fail(e, c, NULL, "cannot finish COPY");
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0) rc = px_db_fail(e, c, r, "the warehouse refused KPI rows");
        PQclear(r);
    }
    return rc;
}

/* ---- cells: one measure x period x unit --------------------------------------- */

enum { U_SYSTEM, U_FACILITY, U_DEPARTMENT };
static const char *const unit_type_names[3] = {"system", "facility", "department"};

typedef struct cell {
    int measure, kind, utype;
    char start[11];          /* period start, YYYY-MM-DD */
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
} cell;

static int cell_cmp(const void *a, const void *b)
{
    const cell *x = a, *y = b;
    if (x->measure != y->measure) return x->measure - y->measure;
    if (x->kind != y->kind) return x->kind - y->kind;
    int s = strcmp(x->start, y->start);
    if (s) return s;
    if (x->utype != y->utype) return x->utype - y->utype;
    return strcmp(x->unit, y->unit);
}

typedef struct cells {
    cell *v;
    size_t n, cap;
} cells;

static void cells_free(cells *cs)
{
    for (size_t i = 0; i < cs->n; i++) free(cs->v[i].unit);
    free(cs->v);
}

/* The GROUPING SETS clause for the requested period kinds: per period, by
 * facility, by department, and the system. Columns pm/pq/py are period starts. */
static void grouping_sets(px_buf *b, int kinds)
{
    static const struct { int kind; const char *col; } k[3] = {
        {PX_KPI_MONTH, "pm"}, {PX_KPI_QUARTER, "pq"}, {PX_KPI_YEAR, "py"}};
    int first = 1;
    px_buf_adds(b, "GROUPING SETS (");
    for (int i = 0; i < 3; i++) {
        if (!(kinds & k[i].kind)) continue;
        px_buf_printf(b, "%s(%s, facility_id), (%s, dept), (%s)", first ? "" : ", ", k[i].col, k[i].col, k[i].col);
        first = 0;
    }
    if (kinds & PX_KPI_ALL) px_buf_printf(b, "%s(facility_id), (dept), ()", first ? "" : ", ");
    px_buf_adds(b, ")");
}

/* Runs one aggregation and appends its rows as cells. The query returns:
 * measure, kind, start, utype, unit, n, o, e, vpq, syy, sye, see. */
static int fetch_cells(PGconn *c, const char *sql, const char *run_id, cells *cs, px_err *e)
{
    const char *params[1] = {run_id};
    PGresult *r = PQexecParams(c, sql, run_id ? 1 : 0, NULL, run_id ? params : NULL, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_db_fail(e, c, r, "cannot aggregate KPI cells");
        goto out;
    }
    int nt = PQntuples(r);
    if (cs->n + (size_t)nt > cs->cap) {
        size_t cap = cs->n + (size_t)nt + 64;
        cell *v = realloc(cs->v, cap * sizeof *v);
        if (!v) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        cs->v = v;
        cs->cap = cap;
    }
    for (int i = 0; i < nt; i++) {
        cell *x = &cs->v[cs->n];
        memset(x, 0, sizeof *x);
        if (px_kpi_measure_parse(PQgetvalue(r, i, 0), (px_kpi_measure *)&x->measure) != 0 ||
            !(x->kind = kpi_kind_flag(PQgetvalue(r, i, 1)))) {
            rc = px_err_set(e, PX_EDB, "aggregation returned an unknown measure or period kind");
            goto out;
        }
        snprintf(x->start, sizeof x->start, "%s", PQgetvalue(r, i, 2));
        x->utype = atoi(PQgetvalue(r, i, 3));
        if (!(x->unit = strdup(PQgetvalue(r, i, 4)))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        double *sums[7] = {&x->n, &x->o, &x->e, &x->vpq, &x->syy, &x->sye, &x->see};
        for (int j = 0; j < 7; j++) *sums[j] = PQgetisnull(r, i, 5 + j) ? 0 : strtod(PQgetvalue(r, i, 5 + j), NULL);
        cs->n++;
    }
out:
    PQclear(r);
    return rc;
}

/* The shared SELECT head: kind, start and unit type from GROUPING(); only the
 * period columns of the requested kinds may appear (GROUPING() refuses others). */
static void select_head(px_buf *b, const char *measure_expr, int kinds)
{
    static const struct { int kind; const char *col; } k[3] = {
        {PX_KPI_MONTH, "pm"}, {PX_KPI_QUARTER, "pq"}, {PX_KPI_YEAR, "py"}};
    px_buf_printf(b, "SELECT %s, ", measure_expr);
    if (kinds & (PX_KPI_MONTH | PX_KPI_QUARTER | PX_KPI_YEAR)) {
        px_buf_adds(b, "CASE");
        for (int i = 0; i < 3; i++)
            if (kinds & k[i].kind)
                px_buf_printf(b, " WHEN GROUPING(%s) = 0 THEN '%s'", k[i].col, kpi_kind_name(k[i].kind));
        px_buf_adds(b, " ELSE 'all' END");
    } else {
        px_buf_adds(b, "'all'");   /* a CASE needs at least one WHEN */
    }
    px_buf_adds(b, ", coalesce(");
    for (int i = 0; i < 3; i++)
        if (kinds & k[i].kind) px_buf_printf(b, "%s, ", k[i].col);
    px_buf_adds(b, "'1900-01-01'::date),"
                   " CASE WHEN GROUPING(facility_id) = 0 THEN 1 WHEN GROUPING(dept) = 0 THEN 2 ELSE 0 END,"
                   " coalesce(facility_id, dept, 'all'),");
}

/* Aggregation in two steps, both set-based: first by the finest cell (measure,
 * month, facility, department) in one hash pass over the stays, then the
 * GROUPING SETS roll-up over those few thousand partial sums (sums add up, so
 * quarters, years, departments and the system come from them exactly). Rolling
 * up the stays directly would hash every stay once per grouping set. */
static int aggregate(PGconn *c, long long run_id, int kinds, cells *cs, px_err *e)
{
    px_buf q = {0};
    int rc = 0;
    char rid[32];
    snprintf(rid, sizeof rid, "%lld", run_id);
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        q.len = 0;
        if (pass == 0)
            /* risk-adjusted measures: the predictions joined to the stays' units and dates */
            px_buf_adds(&q, "WITH base AS (SELECT p.measure, date_trunc('month', f.discharge_date)::date AS pm,"
                            " f.facility_id, coalesce(nullif(f.department, ''), 'unknown') AS dept, count(*) AS n,"
                            " sum(p.observed) AS o, sum(p.expected) AS e, sum(p.expected * (1 - p.expected)) AS vpq,"
                            " sum(p.observed * p.observed) AS syy, sum(p.observed * p.expected) AS sye,"
                            " sum(p.expected * p.expected) AS see"
                            " FROM kpi.predictions p JOIN wh.fact_encounter f USING (encounter_id)"
                            " WHERE p.run_id = $1::bigint GROUP BY 1, 2, 3, 4)");
        else
            /* volume: every stay in the warehouse; cost: every stay with a recorded
             * cost (total_cost is NULL when the extract had none: unknown, not zero,
             * so such stays are neither in the sum nor in the denominator, and a unit
             * with no costed stay has no cost measure at all) */
            px_buf_adds(&q, "WITH stays AS (SELECT date_trunc('month', discharge_date)::date AS pm, facility_id,"
                            " coalesce(nullif(department, ''), 'unknown') AS dept, count(*) AS n,"
                            " count(total_cost) AS ncost,"
                            " sum(total_cost)::float8 AS cost, sum(total_cost * total_cost)::float8 AS cost2"
                            " FROM wh.fact_encounter GROUP BY 1, 2, 3),"
                            " base AS (SELECT 'volume'::text AS measure, pm, facility_id, dept, n, n::float8 AS o,"
                            " NULL::float8 AS e, NULL::float8 AS vpq, NULL::float8 AS syy, NULL::float8 AS sye,"
                            " NULL::float8 AS see FROM stays UNION ALL SELECT 'cost', pm, facility_id, dept, ncost, cost,"
                            " NULL, NULL, cost2, NULL, NULL FROM stays WHERE ncost > 0 AND $1::bigint = $1::bigint)");
        px_buf_adds(&q, ", b AS (SELECT *, date_trunc('quarter', pm)::date AS pq, date_trunc('year', pm)::date AS py"
                        " FROM base) ");
        select_head(&q, "measure", kinds);
        px_buf_adds(&q, " sum(n), sum(o), sum(e), sum(vpq), sum(syy), sum(sye), sum(see) FROM b GROUP BY measure, ");
        grouping_sets(&q, kinds);
        if (!q.data) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            break;
        }
        rc = fetch_cells(c, q.data, rid, cs, e);
    }
    px_buf_release(&q);
    return rc;
}

static int is_rate(int m)
{
    return m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY;
}

/* Crude estimate, O/E, RSR and flag of one cell; sys is its period's system cell. */
static void cell_stats(cell *x, const cell *sys, const px_kpi_params *p)
{
    double conf = p->conf;
    px_ci ci;
    x->rate = x->rate_lo = x->rate_hi = x->erate = x->oe = x->oe_lo = x->oe_hi = NAN;
    x->rsr = x->rsr_lo = x->rsr_hi = x->eb = x->ebw = NAN;
    x->fx = x->f95lo = x->f95hi = x->f998lo = x->f998hi = x->phi = x->fvar = NAN;
    x->oe_method = NULL;
    x->flag = x->utype == U_SYSTEM ? "reference" : "no_different";
    x->suppressed = x->measure != PX_KPI_VOLUME && x->n < p->min_cases;
    if (x->measure == PX_KPI_VOLUME) {
        x->flag = "not_adjusted";
        return;
    }
    if (is_rate(x->measure)) {
        if (px_kpi_wilson(x->o, x->n, conf, &ci) == 0) x->rate = ci.est, x->rate_lo = ci.lo, x->rate_hi = ci.hi;
    } else if (px_kpi_mean_t(x->n, x->o, x->syy, conf, &ci) == 0) {
        x->rate = ci.est, x->rate_lo = ci.lo, x->rate_hi = ci.hi;
    } else if (x->n > 0) {
        x->rate = x->o / x->n;
    }
    if (x->measure == PX_KPI_COST) {
        x->flag = x->utype == U_SYSTEM ? "reference" : "not_adjusted";
        return;
    }
    if (x->n > 0) x->erate = x->e / x->n;
    px_kpi_ci_method cm;
    int ok = is_rate(x->measure) ? px_kpi_oe(x->o, x->e, conf, p->byar_min_events, &ci, &cm) == 0
                                 : px_kpi_ratio_robust(x->n, x->o, x->e, x->syy, x->sye, x->see, conf, &ci) == 0;
    if (ok) {
        x->oe = ci.est, x->oe_lo = ci.lo, x->oe_hi = ci.hi;
        x->oe_method = is_rate(x->measure) ? px_kpi_ci_method_name(cm) : "robust-log";
        double ref = sys ? sys->rate : NAN;   /* the system's crude rate (or mean) */
        x->rsr = x->oe * ref, x->rsr_lo = x->oe_lo * ref, x->rsr_hi = x->oe_hi * ref;
        if (x->utype != U_SYSTEM) x->flag = px_kpi_flag(x->oe_lo, x->oe_hi);
    }
    if (x->suppressed && x->utype != U_SYSTEM) x->flag = "suppressed";
}

/* A crude measure's cell (no usable risk model): the crude rate and its interval
 * stay; no expected count and nothing derived from it (O/E, RSR, EB, funnel). */
static void crude_cell(cell *x)
{
    x->e = x->erate = x->oe = x->oe_lo = x->oe_hi = NAN;
    x->rsr = x->rsr_lo = x->rsr_hi = x->eb = x->ebw = NAN;
    x->fx = x->f95lo = x->f95hi = x->f998lo = x->f998hi = x->phi = x->fvar = NAN;
    x->oe_method = NULL;
    /* nor a hierarchical ratio: the stored random-intercept model belongs to the
     * same version that failed its gates (or there is none) */
    x->sr = x->sr_lo = x->sr_hi = x->srsr = x->srsr_lo = x->srsr_hi = NAN;
    x->adjustment = "none";
    x->oe_flag = NULL;
    if (x->utype != U_SYSTEM && !x->suppressed) x->flag = "not_adjusted";
}

static const char *crude_method_words(px_kpi_measure m)
{
    return m == PX_KPI_LOS ? "crude mean with Student t interval; NOT risk-adjusted: no risk model passed its quality "
                             "gates (see kpi.runs.method los_adjustment); no expected days, O/E or flag"
                           : "crude rate with Wilson score interval; NOT risk-adjusted: no risk model passed its quality "
                             "gates (see kpi.runs.method <measure>_adjustment); no expected count, O/E or flag";
}

/* EB smoothing and funnel limits across the units of one type in one period. */
static int group_stats(cell *g, size_t k, const cell *sys, const px_kpi_params *p)
{
    if (k == 0 || !sys || g[0].measure == PX_KPI_VOLUME || g[0].measure == PX_KPI_COST) return 0;
    int rate = is_rate(g[0].measure);
    double ref = sys->rate;
    double *r = malloc(k * sizeof *r), *v = malloc(k * sizeof *v), *sm = malloc(k * sizeof *sm),
           *w = malloc(k * sizeof *w), *z = malloc(k * sizeof *z);
    int rc = 0;
    if (!r || !v || !sm || !w || !z) {
        rc = PX_ENOMEM;
        goto out;
    }
    /* LOS funnel: the system's per-stay residual variance on the O/E scale,
     * sum (y - e)^2 / n / ebar^2 (from the system cell's sums) */
    double fvar = rate ? NAN : px_kpi_los_funnel_var(sys->n, sys->e, sys->syy, sys->sye, sys->see);
    for (size_t i = 0; i < k; i++) {
        cell *x = &g[i];
        r[i] = x->rsr;
        /* noise variance of the risk-standardized rate: binary measures use the
         * model's own Bernoulli variance sum p(1-p) (as AHRQ does), LOS the robust one */
        v[i] = rate ? px_kpi_eb_var_binary(ref, x->vpq, x->e) : px_kpi_eb_var_ratio(ref, x->oe, x->oe_hi, p->conf);
        /* z-scores for the over-dispersion factor: units with enough cases only */
        z[i] = NAN;
        if (x->n >= p->min_cases && isfinite(x->oe)) {
            if (rate && x->e > 0) z[i] = (x->o - x->e) / sqrt(x->e);
            if (!rate && fvar > 0) z[i] = (x->oe - 1) / sqrt(fvar / x->n);
        }
    }
    px_kpi_eb_smooth(r, v, k, ref, sm, w, NULL);
    double phi = 1;
    if (p->overdispersion) {
        double f = px_kpi_overdispersion(z, k, 0.10);
        if (f > 1) phi = f;
    }
    for (size_t i = 0; i < k; i++) {
        cell *x = &g[i];
        x->eb = sm[i], x->ebw = w[i], x->phi = phi;
        if (rate && x->e > 0) {
            x->fx = x->e;
            px_kpi_funnel_oe(x->e, 0.95, phi, &x->f95lo, &x->f95hi);
            px_kpi_funnel_oe(x->e, 0.998, phi, &x->f998lo, &x->f998hi);
        } else if (!rate && x->n > 0 && isfinite(fvar)) {
            x->fx = x->n;
            x->fvar = fvar;
            px_kpi_funnel_normal(x->n, 1, fvar, 0.95, phi, &x->f95lo, &x->f95hi);
            px_kpi_funnel_normal(x->n, 1, fvar, 0.998, phi, &x->f998lo, &x->f998hi);
        }
    }
out:
    free(r), free(v), free(sm), free(w), free(z);
    return rc;
}

/* Applies model k's stored hierarchical model (kpi/hier.c) and records in the
 * run's model summary whether it was applied and why not. */
static int hier_apply(PGconn *c, const px_config *cfg, const px_kpi_params *p, int k, model_in *mi, kpi_hier *h,
                      px_err *e)
{
    int rc = 0;
    memset(h, 0, sizeof *h);
    if (p->no_hierarchical) {
        snprintf(h->why, sizeof h->why, "not requested (--no-hierarchical): facilities use indirect standardization");
    } else if (mi->crude || !mi->m) {
        snprintf(h->why, sizeof h->why, "not applied: the measure is crude (no risk model may adjust it)");
    } else {
        char *tab = quote_table(c, mi->table);
        if (!tab) return px_err_set(e, PX_ENOMEM, "out of memory");
        rc = kpi_hier_apply(c, cfg, kpi_risk_model[k], mi->version, mi->m, tab, mi->label, p->periods, p->conf, h, e);
        free(tab);
        if (rc) return rc;
    }
    cJSON *o = cJSON_AddObjectToObject(mi->info, "hierarchical");
    if (!o) return px_err_set(e, PX_ENOMEM, "out of memory");
    cJSON_AddBoolToObject(o, "applied", h->available);
    if (h->available) {
        cJSON_AddNumberToObject(o, "tau", h->tau);
        cJSON_AddNumberToObject(o, "mu", h->mu);
        cJSON_AddNumberToObject(o, "facilities", (double)h->nfac);
    }
    cJSON_AddStringToObject(o, "note", h->why);
    return 0;
}

/* The method columns of a cell, and for a facility of a risk-adjusted measure
 * whose model holds a hierarchical model: its standardized ratio, the
 * risk-standardized rate (sr x the system's crude rate) and the flag from the
 * sr interval (the O/E flag is kept in oe_flag). */
static void hier_cell(cell *x, const cell *sys, const kpi_hier *hier)
{
    x->sr = x->sr_lo = x->sr_hi = x->srsr = x->srsr_lo = x->srsr_hi = NAN;
    x->oe_flag = NULL;
    int risk = x->measure == PX_KPI_READMISSION || x->measure == PX_KPI_MORTALITY || x->measure == PX_KPI_LOS;
    if (!risk) {
        x->adjustment = "none";
        return;
    }
    x->oe_flag = x->flag;
    x->adjustment = "indirect";   /* system headline and departments: O/E with the pooled model */
    if (x->utype != U_FACILITY) return;
    const kpi_hier *h = &hier[x->measure == PX_KPI_READMISSION ? 0 : x->measure == PX_KPI_MORTALITY ? 1 : 2];
    if (!h->available) return;
    int i = kpi_hier_find(h, x->kind, x->start, x->unit);
    if (i < 0) return;
    const kpi_hier_cell *hc = &h->cells[i];
    double ref = sys ? sys->rate : NAN;
    x->adjustment = "hierarchical";
    x->sr = hc->sr, x->sr_lo = hc->lo, x->sr_hi = hc->hi;
    x->srsr = hc->sr * ref, x->srsr_lo = hc->lo * ref, x->srsr_hi = hc->hi * ref;
    if (!x->suppressed) x->flag = px_kpi_flag(hc->lo, hc->hi);
}

/* Label and end date of a period from its kind and start (first/last: the
 * data's discharge range, for "all"). label, s and end hold 16 bytes. */
static void period_of(int kind, const char *start, const char *first, const char *last, char *label, char *s,
                      char *end)
{
    int y = atoi(start) % 10000, m = atoi(start + 5);
    if (y < 0) y = 0;
    if (m < 1 || m > 12) m = 1;
    int em = m;
    switch (kind) {
    case PX_KPI_MONTH: snprintf(label, 16, "%04d-%02d", y, m); break;
    case PX_KPI_QUARTER: snprintf(label, 16, "%04d-Q%c", y, (char)('1' + (m - 1) / 3)); em = m + 2; break;
    case PX_KPI_YEAR: snprintf(label, 16, "%04d", y); em = 12; break;
    default:
        snprintf(label, 16, "all");
        snprintf(s, 16, "%.10s", first);
        snprintf(end, 16, "%.10s", last);
        return;
    }
    snprintf(s, 16, "%04d-%02d-01", y, m);
    snprintf(end, 16, "%04d-%02d-%02d", y, em, px_days_in_month(y, em));
}

static void put_num(px_buf *b, double v)
{
    if (isfinite(v))
        px_buf_printf(b, "\t%.12g", v);
    else
        px_buf_adds(b, "\t\\N");
}

static void put_str(px_buf *b, const char *s)
{
    px_buf_addc(b, '\t');
    if (s)
        px_buf_copy_field(b, s, strlen(s));
    else
        px_buf_adds(b, "\\N");
}

/* ---- the run ------------------------------------------------------------------ */

static int scalar(PGconn *c, px_err *e, const char *sql, char *out, size_t len)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = px_db_fail(e, c, r, "cannot read the warehouse's state");
    else
        snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

int px_kpi_compute(PGconn *c, const px_config *cfg, const px_kpi_params *p, px_kpi_run_info *info, px_err *e)
{
    double t0 = kpi_now(), t_score = 0, t_sql = 0;
    int rc = 0, began = 0;
    model_in mi[3];
    kpi_hier hier[3];
    cells cs = {0};
    px_buf buf = {0};
    cJSON *models = NULL, *inputs = NULL, *method = NULL, *fp = NULL;
    char *models_s = NULL, *inputs_s = NULL, *method_s = NULL, *fp_s = NULL, *batches = NULL;
    PGresult *r = NULL;
    memset(mi, 0, sizeof mi);
    memset(hier, 0, sizeof hier);
    memset(info, 0, sizeof *info);
    px_models_init(); /* GSL reports, never aborts (once per process) */
    if (!p->periods || (p->periods & ~15) || !(p->conf > 0 && p->conf < 1) || p->min_cases < 0)
        return px_err_set(e, PX_EINVAL, "bad KPI parameters (periods, conf or min_cases)");

    if ((rc = exec_ok(c, e, "BEGIN ISOLATION LEVEL REPEATABLE READ", "cannot begin the KPI run")) != 0) goto out;
    began = 1;
    char lock[64];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d)", PX_KPI_LOCK);
    if ((rc = exec_ok(c, e, lock, "cannot lock the KPI tables")) != 0) goto out;

    /* inputs: batches, the stays' date range, the models and their feature tables */
    char enc[32], first[16], last[16];
    if ((rc = px_etl_loaded_batches(c, &batches, e)) != 0) goto out;
    {
        /* one scan: stays and their discharge range */
        r = PQexec(c, "SELECT count(*), coalesce(min(discharge_date)::text, ''),"
                      " coalesce(max(discharge_date)::text, '') FROM wh.fact_encounter");
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            rc = px_db_fail(e, c, r, "cannot read wh.fact_encounter");
            goto out;
        }
        snprintf(enc, sizeof enc, "%s", PQgetvalue(r, 0, 0));
        snprintf(first, sizeof first, "%.10s", PQgetvalue(r, 0, 1));
        snprintf(last, sizeof last, "%.10s", PQgetvalue(r, 0, 2));
        PQclear(r);
        r = NULL;
    }
    info->encounters = atoll(enc);
    if (info->encounters == 0) {
        rc = px_err_set(e, PX_ESTATE, "the warehouse holds no encounters");
        px_err_hint(e, "load data first: prognos etl load --format canonical --source DIR");
        goto out;
    }
    models = cJSON_CreateObject();
    inputs = cJSON_CreateObject();
    method = cJSON_CreateObject();
    if (!models || !inputs || !method) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < 3; k++) {
        const char *ref = p->model_ref[k] ? p->model_ref[k] : "champion";
        if ((rc = model_open_gated(c, cfg, k, ref, p, &mi[k], info, method, e)) != 0) goto out;
        info->model_version[k] = mi[k].version;
        cJSON_AddItemReferenceToObject(models, kpi_risk_model[k], mi[k].info);
        if (mi[k].skip) continue;
        char q[512], cnt[32];
        char *tab = quote_table(c, mi[k].table);
        if (!tab) {
            rc = px_err_set(e, PX_EINVAL, "risk model '%s' names a bad feature table '%s'", kpi_risk_model[k],
                            mi[k].table);
            goto out;
        }
        snprintf(q, sizeof q, "SELECT count(*) FROM %s", tab);
        free(tab);
        if ((rc = scalar(c, e, q, cnt, sizeof cnt)) != 0) {
            px_err_set(e, PX_EDB, "cannot read feature table '%s' of risk model '%s'", mi[k].table,
                       kpi_risk_model[k]);
            goto out;
        }
        cJSON *t = cJSON_AddObjectToObject(inputs, kpi_risk_model[k]);
        cJSON_AddStringToObject(t, "table", mi[k].table);
        cJSON_AddNumberToObject(t, "rows", atof(cnt));
        /* the table's latest build: a rebuild (new definition or data) is a new input */
        px_feat_build_row *fb = NULL;
        size_t nfb = 0;
        if ((rc = px_feat_latest_builds(c, mi[k].table, &fb, &nfb, e)) != 0) goto out;
        if (nfb == 1) {
            cJSON_AddNumberToObject(t, "build_id", (double)fb[0].build_id);
            cJSON_AddStringToObject(t, "definition_hash", fb[0].definition_hash);
            cJSON_AddStringToObject(t, "built_at", fb[0].built_at);
        }
        free(fb);
    }
    cJSON_AddNumberToObject(inputs, "encounters", (double)info->encounters);
    cJSON_AddNumberToObject(method, "conf", p->conf);
    cJSON_AddNumberToObject(method, "min_cases", p->min_cases);
    cJSON_AddNumberToObject(method, "byar_min_events", p->byar_min_events);
    cJSON_AddBoolToObject(method, "overdispersion", p->overdispersion);
    cJSON_AddStringToObject(method, "period_assignment", "discharge date");
    cJSON_AddStringToObject(method, "reference",
                            p->reference == PX_KPI_REF_POOLED
                                ? "pooled (default): expected = the model's predictions as they are (indirect "
                                  "standardization); on the rows the model was fitted on the system's expected equals "
                                  "its observed up to calibration-in-the-large"
                                : "average facility (explicit option): predictions shifted by the DerSimonian-Laird "
                                  "mean of the facility intercepts given the model; see reference_shift per model; "
                                  "unstable when most facilities have few stays");
    cJSON_AddStringToObject(method, "facility_adjustment",
                            p->no_hierarchical
                                ? "indirect standardization only (O/E with the pooled model)"
                                : "hierarchical (CMS Hospital Compare): the risk model's stored random-intercept model "
                                  "(hierarchical.json) applied without refitting; per facility x period the "
                                  "intercept by empirical Bayes with (beta, mu, tau) fixed, sr = predicted / "
                                  "expected, srsr = sr x the system's crude rate, interval from the intercept's "
                                  "normal posterior; facility flags from the sr interval; where a model has none, "
                                  "O/E as for departments");
    cJSON_AddStringToObject(method, "intervals",
                            "every interval treats the risk model's coefficients (and the hierarchical model's beta, "
                            "mu, tau) as known: estimation uncertainty of the models is not propagated");
    for (int m = 0; m < PX_KPI__COUNT; m++) cJSON_AddStringToObject(method, measure_names[m], kpi_method_words(m));
    char kinds_s[64] = "{";
    for (int k = 1, n = 0; k <= PX_KPI_ALL; k <<= 1)
        if (p->periods & k) snprintf(kinds_s + strlen(kinds_s), sizeof kinds_s - strlen(kinds_s), "%s%s", n++ ? "," : "", kpi_kind_name(k));
    strcat(kinds_s, "}");

    /* identical inputs and method: nothing to do */
    if (!(fp = cJSON_CreateObject())) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    cJSON_AddItemReferenceToObject(fp, "models", models);
    cJSON_AddItemReferenceToObject(fp, "inputs", inputs);
    cJSON_AddItemReferenceToObject(fp, "method", method);
    cJSON_AddStringToObject(fp, "batches", batches);
    cJSON_AddStringToObject(fp, "kinds", kinds_s);
    models_s = cJSON_PrintUnformatted(models);
    inputs_s = cJSON_PrintUnformatted(inputs);
    method_s = cJSON_PrintUnformatted(method);
    fp_s = cJSON_PrintUnformatted(fp);
    if (!models_s || !inputs_s || !method_s || !fp_s) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    char fph[65];
    px_sha256_hex(fp_s, strlen(fp_s), fph);
    if (!p->force) {
        const char *pp[1] = {fph};
        r = PQexecParams(c, "SELECT max(run_id) FROM kpi.runs WHERE fingerprint = $1", 1, NULL, pp, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = px_db_fail(e, c, r, "cannot read kpi.runs");
            goto out;
        }
        if (!PQgetisnull(r, 0, 0)) {
            info->run_id = atoll(PQgetvalue(r, 0, 0));
            info->unchanged = 1;
            snprintf(info->summary, sizeof info->summary,
                     "unchanged: run %lld already holds these KPIs (same models, batches and method)", info->run_id);
            rc = px_err_set(e, PX_ENOTHING, "%s", info->summary);
            goto out;
        }
        PQclear(r);
        r = NULL;
    }

    {
        const char *pp[8] = {kinds_s, models_s, batches, inputs_s, method_s, fph, first[0] ? first : NULL,
                             last[0] ? last : NULL};
        r = PQexecParams(c,
                         "INSERT INTO kpi.runs (period_kinds, models, source_batches, inputs, method, fingerprint,"
                         " data_first, data_last, encounters, scored) VALUES ($1::text[], $2::jsonb, $3::bigint[],"
                         " $4::jsonb, $5::jsonb, $6, $7::date, $8::date, 0, 0) RETURNING run_id",
                         8, NULL, pp, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = px_db_fail(e, c, r, "cannot record the KPI run");
            goto out;
        }
        info->run_id = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        r = NULL;
    }

    /* score and store the predictions */
    double ts = kpi_now();
    if ((rc = exec_ok(c, e, "TRUNCATE kpi.predictions", "cannot clear kpi.predictions")) != 0) goto out;
    for (int k = 0; k < 3; k++) {
        scored sc;
        memset(&sc, 0, sizeof sc);
        buf.len = 0;
        if (mi[k].skip) continue;
        if ((rc = model_score(c, k, &mi[k], &sc, e)) != 0) {
            scored_free(&sc);
            goto out;
        }
        int binary = binary_model(&mi[k]);
        double shift = p->reference == PX_KPI_REF_POOLED || mi[k].crude ? 0 : reference_shift(&sc, binary);
        info->reference_shift[k] = shift;
        cJSON_AddNumberToObject(mi[k].info, "reference_shift", shift);
        rc = scored_rows(&sc, info->run_id, k, mi[k].version, shift, binary, &buf);
        scored_free(&sc);
        if (rc) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory buffering predictions");
            goto out;
        }
        if ((rc = copy_in(c, "COPY kpi.predictions (run_id, measure, model_version, encounter_id, predicted,"
                             " expected, observed) FROM STDIN", &buf, e)) != 0)
            goto out;
        info->scored += mi[k].rows;
        if ((rc = hier_apply(c, cfg, p, k, &mi[k], &hier[k], e)) != 0) goto out;
        info->hierarchical[k] = hier[k].available;
    }
    /* the models' summaries now carry their reference shifts */
    {
        char rid[32];
        free(models_s);
        if (!(models_s = cJSON_PrintUnformatted(models))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        snprintf(rid, sizeof rid, "%lld", info->run_id);
        const char *pp[2] = {rid, models_s};
        r = PQexecParams(c, "UPDATE kpi.runs SET models = $2::jsonb WHERE run_id = $1::bigint", 2, NULL, pp, NULL,
                         NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = px_db_fail(e, c, r, "cannot record the models of the KPI run");
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    t_score = kpi_now() - ts;

    /* aggregate in SQL, then the statistics per cell and per group */
    ts = kpi_now();
    if ((rc = exec_ok(c, e, "ANALYZE kpi.predictions", "cannot analyze kpi.predictions")) != 0) goto out;
    if ((rc = aggregate(c, info->run_id, p->periods, &cs, e)) != 0) goto out;
    t_sql = kpi_now() - ts;
    qsort(cs.v, cs.n, sizeof *cs.v, cell_cmp);
    for (size_t i = 0; i < cs.n;) {
        /* one (measure, kind, period): the system cell sorts first */
        size_t j = i;
        while (j < cs.n && cs.v[j].measure == cs.v[i].measure && cs.v[j].kind == cs.v[i].kind &&
               strcmp(cs.v[j].start, cs.v[i].start) == 0)
            j++;
        cell *sys = cs.v[i].utype == U_SYSTEM ? &cs.v[i] : NULL;
        if (sys) cell_stats(sys, NULL, p);
        for (size_t t = i; t < j; t++)
            if (&cs.v[t] != sys) cell_stats(&cs.v[t], sys, p);
        if (sys) {
            double rr = sys->rate;   /* the system's RSR is its own O/E x its crude rate */
            sys->rsr = sys->oe * rr, sys->rsr_lo = sys->oe_lo * rr, sys->rsr_hi = sys->oe_hi * rr;
        }
        for (size_t t = i; t < j;) {
            size_t u = t;
            while (u < j && cs.v[u].utype == cs.v[t].utype) u++;
            if (cs.v[t].utype != U_SYSTEM && group_stats(&cs.v[t], u - t, sys, p) != 0) {
                rc = px_err_set(e, PX_ENOMEM, "out of memory");
                goto out;
            }
            t = u;
        }
        i = j;
    }

    /* facilities: the hierarchical standardized ratios, where a model holds one */
    for (size_t i = 0; i < cs.n;) {
        size_t j = i;
        while (j < cs.n && cs.v[j].measure == cs.v[i].measure && cs.v[j].kind == cs.v[i].kind &&
               strcmp(cs.v[j].start, cs.v[i].start) == 0)
            j++;
        const cell *sys = cs.v[i].utype == U_SYSTEM ? &cs.v[i] : NULL;
        for (size_t t = i; t < j; t++) hier_cell(&cs.v[t], sys, hier);
        i = j;
    }

    /* store the cells */
    buf.len = 0;
    for (size_t i = 0; i < cs.n; i++) {
        cell *x = &cs.v[i];
        char label[16], s[16], en[16];
        period_of(x->kind, x->start, first, last, label, s, en);
        int risk = x->measure != PX_KPI_VOLUME && x->measure != PX_KPI_COST;
        int rk = x->measure == PX_KPI_READMISSION ? 0 : x->measure == PX_KPI_MORTALITY ? 1 : 2;
        int ver = risk ? mi[rk].version : 0;
        int sup = x->suppressed;
        int crude = risk && mi[rk].crude;
        if (crude) crude_cell(x);
        px_buf_printf(&buf, "%lld\t%s\t%s\t%s\t%s\t%s\t%s", info->run_id, measure_names[x->measure],
                      kpi_kind_name(x->kind), label, s, en, unit_type_names[x->utype]);
        put_str(&buf, x->unit);
        px_buf_printf(&buf, "\t%.0f", x->n);
        double sup_nan = NAN;
        put_num(&buf, sup ? sup_nan : x->o);
        put_num(&buf, sup || !risk ? sup_nan : x->e);
        double vals[] = {x->rate, x->rate_lo, x->rate_hi, x->erate, x->oe, x->oe_lo, x->oe_hi};
        for (size_t v = 0; v < sizeof vals / sizeof *vals; v++) put_num(&buf, sup ? sup_nan : vals[v]);
        put_str(&buf, sup ? NULL : x->oe_method);
        double vals2[] = {x->rsr, x->rsr_lo, x->rsr_hi, x->eb, x->ebw};
        for (size_t v = 0; v < sizeof vals2 / sizeof *vals2; v++) put_num(&buf, sup ? sup_nan : vals2[v]);
        /* funnel position and limits depend only on the precision: kept for plotting */
        double vals3[] = {x->fx, x->f95lo, x->f95hi, x->f998lo, x->f998hi, x->phi, x->fvar};
        for (size_t v = 0; v < sizeof vals3 / sizeof *vals3; v++) put_num(&buf, sup ? sup_nan : vals3[v]);
        put_str(&buf, x->flag);
        put_str(&buf, sup ? "t" : "f");
        put_str(&buf, risk && !crude ? kpi_risk_model[rk] : NULL);
        if (risk && !crude)
            px_buf_printf(&buf, "\t%d", ver);
        else
            px_buf_adds(&buf, "\t\\N");
        put_str(&buf, batches);
        put_str(&buf, crude ? crude_method_words(x->measure) : kpi_method_words(x->measure));
        double vals4[] = {x->sr, x->sr_lo, x->sr_hi, x->srsr, x->srsr_lo, x->srsr_hi};
        for (size_t v = 0; v < sizeof vals4 / sizeof *vals4; v++) put_num(&buf, sup ? sup_nan : vals4[v]);
        put_str(&buf, x->adjustment);
        put_str(&buf, sup ? NULL : x->oe_flag);
        if (px_buf_addc(&buf, '\n') < 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
    }
    if ((rc = copy_in(c,
                      "COPY kpi.results (run_id, measure, period_kind, period, period_start, period_end, unit_type,"
                      " unit, n, observed, expected, rate, rate_lo, rate_hi, expected_rate, oe, oe_lo, oe_hi,"
                      " oe_method, rsr, rsr_lo, rsr_hi, eb_rate, eb_weight, funnel_x, funnel95_lo, funnel95_hi,"
                      " funnel998_lo, funnel998_hi, funnel_phi, funnel_var, flag, suppressed, model_name,"
                      " model_version, source_batches, method, sr, sr_lo, sr_hi, srsr, srsr_lo, srsr_hi,"
                      " adjustment, oe_flag) FROM STDIN",
                      &buf, e)) != 0)
        goto out;
    info->results = (long long)cs.n;
    info->seconds = kpi_now() - t0;
    info->seconds_score = t_score;
    info->seconds_sql = t_sql;
    {
        char rid[32], sc[32], secs[32];
        snprintf(rid, sizeof rid, "%lld", info->run_id);
        snprintf(sc, sizeof sc, "%lld", info->scored);
        snprintf(secs, sizeof secs, "%.3f", info->seconds);
        const char *pp[4] = {rid, enc, sc, secs};
        r = PQexecParams(c, "UPDATE kpi.runs SET encounters = $2::bigint, scored = $3::bigint, seconds = $4::float8"
                            " WHERE run_id = $1::bigint",
                         4, NULL, pp, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = px_db_fail(e, c, r, "cannot finish the KPI run");
            goto out;
        }
    }
    if ((rc = exec_ok(c, e, "COMMIT", "cannot commit the KPI run")) != 0) goto out;
    began = 0;
    snprintf(info->summary, sizeof info->summary,
             "run %lld: %lld result rows from %lld stays (%lld scored; readmission v%d, mortality v%d, los v%d;"
             " facilities by the hierarchical ratio: %s, %s, %s) in %.2f s",
             info->run_id, info->results, info->encounters, info->scored, mi[0].version, mi[1].version,
             mi[2].version, info->hierarchical[0] ? "yes" : mi[0].crude ? "no (crude)" : "no (O/E)",
             info->hierarchical[1] ? "yes" : mi[1].crude ? "no (crude)" : "no (O/E)",
             info->hierarchical[2] ? "yes" : mi[2].crude ? "no (crude)" : "no (O/E)", info->seconds);
    if (info->notes[0]) {
        size_t l = strlen(info->summary);
        snprintf(info->summary + l, sizeof info->summary - l, "; %s", info->notes);
    }
out:
    PQclear(r);
    if (began) exec_ok(c, NULL, "ROLLBACK", "rollback");
    for (int k = 0; k < 3; k++) model_close(&mi[k]), kpi_hier_free(&hier[k]);
    cells_free(&cs);
    px_buf_release(&buf);
    cJSON_Delete(fp);
    cJSON_Delete(models);
    cJSON_Delete(inputs);
    cJSON_Delete(method);
    free(models_s), free(inputs_s), free(method_s), free(fp_s), free(batches);
    return rc;
}
