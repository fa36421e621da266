/* compute.c: px_kpi_compute, one KPI run in one REPEATABLE READ transaction:
 * resolve and load (verified) each risk model, compile it to SQL (or score it in
 * C: SVMs) and sum every measure to the finest cell in one pass inside
 * PostgreSQL (score.c), roll up and compute intervals, flags, smoothing, funnel
 * limits and the hierarchical ratios in C, COPY the cells into kpi.results.
 * Invariant: a failed run leaves nothing (the transaction is rolled back). */
#include "kpi/internal.h"
#include <cjson/cJSON.h>
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int kpi_cmp_str(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(char *const *)elem);
}
/* ---- models ------------------------------------------------------------------ */

/* Resolves, verifies and loads one risk model and reads its training spec. */
static int model_open(PGconn *c, const px_config *cfg, int k, const char *ref, kpi_model *mi, px_err *e)
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
static int model_crude(PGconn *c, int k, kpi_model *mi, const char *why, px_kpi_run_info *info, cJSON *method,
                       px_err *e)
{
    const char *name = kpi_risk_model[k];
    const px_feat_set_info *set = px_feat_set_find(name);
    kpi_model_release(mi);
    mi->crude = 1;
    if (!(mi->info = cJSON_CreateObject())) return px_err_set(e, PX_ENOMEM, "out of memory");
    cJSON_AddBoolToObject(mi->info, "crude", 1);
    cJSON_AddStringToObject(mi->info, "reason", why);
    char ok[16] = "";
    if (set) {
        const char *pp[1] = {set->table};
        char *v = NULL;
        int rc = px_db_value(c, e, "cannot look up a feature table", &v, "SELECT (to_regclass($1) IS NOT NULL)::int",
                             1, pp);
        if (rc) return rc;
        snprintf(ok, sizeof ok, "%s", v ? v : "");
        free(v);
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
                            kpi_model *mi, px_kpi_run_info *info, cJSON *method, px_err *e)
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
/* ---- cells: one measure x period x unit --------------------------------------- */

static const char *const unit_type_names[3] = {"system", "facility", "department"};


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

/* The state of one run, shared by its phases. */
typedef struct run {
    PGconn *c;
    const px_config *cfg;
    const px_kpi_params *p;
    px_kpi_run_info *info;
    px_err *e;
    kpi_model mi[3];
    px_hier *hm[3];            /* the models' stored hierarchical models (NULL: none or not applied) */
    kpi_hier hier[3];
    kpi_hier_rows hr[3];
    kpi_cells cs;
    cJSON *models, *inputs, *method;
    char *batches, *models_s, *inputs_s, *method_s, *fp_s, *pred_sql;
    char enc[32], first[16], last[16], fph[65], kinds_s[64];
    char method_id[2][PX_KPI__COUNT][16]; /* kpi.methods ids of the method words: [crude][measure] */
} run;

static void run_release(run *R)
{
    for (int k = 0; k < 3; k++) {
        kpi_model_release(&R->mi[k]);
        kpi_hier_free(&R->hier[k]);
        kpi_hier_rows_free(&R->hr[k]);
        px_hier_free(R->hm[k]);
    }
    kpi_cells_free(&R->cs);
    cJSON_Delete(R->models);
    cJSON_Delete(R->inputs);
    cJSON_Delete(R->method);
    free(R->models_s), free(R->inputs_s), free(R->method_s), free(R->fp_s), free(R->batches), free(R->pred_sql);
}

/* One value of a one-row query into out (len bytes; "" for NULL). */
static int value_into(run *R, const char *what, const char *sql, char *out, size_t len)
{
    char *v = NULL;
    int rc = px_db_value(R->c, R->e, what, &v, sql, 0, NULL);
    if (rc == 0) snprintf(out, len, "%s", v ? v : "");
    free(v);
    return rc;
}

/* Phase 1: the warehouse's state: batches, the stays and their discharge range. */
static int run_state(run *R)
{
    PGresult *r = NULL;
    px_buf q = {0};
    int rc = px_etl_loaded_batches(R->c, &R->batches, R->e);
    /* one scan: stays and their discharge range (each shard's, combined here) */
    if (rc == 0 && px_buf_adds(&q, "SELECT coalesce(sum(n), 0), coalesce(min(lo)::text, ''), coalesce(max(hi)::text, '')"
                                   " FROM ("))
        rc = px_err_set(R->e, PX_ENOMEM, "out of memory");
    if (rc == 0)
        rc = px_shards_union(R->c, "fact_encounter",
                             "SELECT count(*) AS n, min(discharge_date) AS lo, max(discharge_date) AS hi FROM @REL@", &q,
                             R->e);
    if (rc == 0 && px_buf_adds(&q, ") x")) rc = px_err_set(R->e, PX_ENOMEM, "out of memory");
    if (rc == 0 && (rc = px_db_query(R->c, R->e, "cannot read wh.fact_encounter", &r, q.data, 0, NULL)) == 0) {
        snprintf(R->enc, sizeof R->enc, "%s", PQgetvalue(r, 0, 0));
        snprintf(R->first, sizeof R->first, "%.10s", PQgetvalue(r, 0, 1));
        snprintf(R->last, sizeof R->last, "%.10s", PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    px_buf_release(&q);
    if (rc) return rc;
    R->info->encounters = atoll(R->enc);
    if (R->info->encounters == 0) {
        rc = px_err_set(R->e, PX_ESTATE, "the warehouse holds no encounters");
        px_err_hint(R->e, "load data first: prognos etl load --format canonical --source DIR");
    }
    return rc;
}

/* The inputs entry of model k: its table, rows and latest catalog build. */
static int model_inputs(run *R, int k)
{
    kpi_model *mi = &R->mi[k];
    px_feat_table *t = px_feat_table_open(R->c, mi->table, R->e);
    px_buf q = {0};
    char cnt[32];
    int rc = t ? 0 : px_err_wrap(R->e, R->e->code ? R->e->code : PX_EDB, "cannot read feature table '%s' of risk model '%s'",
                                 mi->table, kpi_risk_model[k]);
    if (rc == 0 && px_buf_printf(&q, "SELECT count(*) FROM %s", px_feat_table_quoted(t))) rc = px_err_set(R->e, PX_ENOMEM, "out of memory");
    if (rc == 0 && (rc = value_into(R, "cannot count the rows of a feature table", q.data, cnt, sizeof cnt)) != 0)
        px_err_wrap(R->e, PX_EDB, "cannot read feature table '%s' of risk model '%s'", mi->table, kpi_risk_model[k]);
    px_buf_release(&q);
    px_feat_table_free(t);
    if (rc) return rc;
    cJSON *o = cJSON_AddObjectToObject(R->inputs, kpi_risk_model[k]);
    if (!o) return px_err_set(R->e, PX_ENOMEM, "out of memory");
    cJSON_AddStringToObject(o, "table", mi->table);
    cJSON_AddNumberToObject(o, "rows", atof(cnt));
    /* the table's latest build: a rebuild (new definition or data) is a new input */
    px_feat_build_row *fb = NULL;
    size_t nfb = 0;
    if ((rc = px_feat_latest_builds(R->c, mi->table, &fb, &nfb, R->e)) != 0) return rc;
    if (nfb == 1) {
        cJSON_AddNumberToObject(o, "build_id", (double)fb[0].build_id);
        cJSON_AddStringToObject(o, "definition_hash", fb[0].definition_hash);
        cJSON_AddStringToObject(o, "built_at", fb[0].built_at);
    }
    free(fb);
    return 0;
}

/* Phase 2: the risk models (resolved, verified, gated) and their feature tables. */
static int run_models(run *R)
{
    R->models = cJSON_CreateObject();
    R->inputs = cJSON_CreateObject();
    R->method = cJSON_CreateObject();
    if (!R->models || !R->inputs || !R->method) return px_err_set(R->e, PX_ENOMEM, "out of memory");
    for (int k = 0; k < 3; k++) {
        const char *ref = R->p->model_ref[k] ? R->p->model_ref[k] : "champion";
        int rc = model_open_gated(R->c, R->cfg, k, ref, R->p, &R->mi[k], R->info, R->method, R->e);
        if (rc) return rc;
        R->info->model_version[k] = R->mi[k].version;
        cJSON_AddItemReferenceToObject(R->models, kpi_risk_model[k], R->mi[k].info);
        if (!R->mi[k].skip && (rc = model_inputs(R, k)) != 0) return rc;
    }
    cJSON_AddNumberToObject(R->inputs, "encounters", (double)R->info->encounters);
    return 0;
}

/* Phase 3: the method, the run's fingerprint, and whether an identical run exists. */
static int run_method(run *R)
{
    const px_kpi_params *p = R->p;
    cJSON *method = R->method;
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
    char *kinds_s = R->kinds_s;
    snprintf(kinds_s, sizeof R->kinds_s, "{");
    for (int k = 1, n = 0; k <= PX_KPI_ALL; k <<= 1)
        if (p->periods & k) snprintf(kinds_s + strlen(kinds_s), sizeof R->kinds_s - strlen(kinds_s), "%s%s", n++ ? "," : "", kpi_kind_name(k));
    strcat(kinds_s, "}");

    /* identical inputs and method: nothing to do */
    cJSON *fp = cJSON_CreateObject();
    if (!fp) return px_err_set(R->e, PX_ENOMEM, "out of memory");
    cJSON_AddItemReferenceToObject(fp, "models", R->models);
    cJSON_AddItemReferenceToObject(fp, "inputs", R->inputs);
    cJSON_AddItemReferenceToObject(fp, "method", method);
    cJSON_AddStringToObject(fp, "batches", R->batches);
    cJSON_AddStringToObject(fp, "kinds", kinds_s);
    R->models_s = cJSON_PrintUnformatted(R->models);
    R->inputs_s = cJSON_PrintUnformatted(R->inputs);
    R->method_s = cJSON_PrintUnformatted(method);
    R->fp_s = cJSON_PrintUnformatted(fp);
    cJSON_Delete(fp);
    if (!R->models_s || !R->inputs_s || !R->method_s || !R->fp_s) return px_err_set(R->e, PX_ENOMEM, "out of memory");
    px_sha256_hex(R->fp_s, strlen(R->fp_s), R->fph);
    if (p->force) return 0;
    const char *pp[1] = {R->fph};
    char *id = NULL;
    int rc = px_db_value(R->c, R->e, "cannot read kpi.runs", &id, "SELECT max(run_id) FROM kpi.runs WHERE fingerprint = $1",
                         1, pp);
    if (rc == 0 && id) {
        px_kpi_run_info *info = R->info;
        info->run_id = atoll(id);
        info->unchanged = 1;
        snprintf(info->summary, sizeof info->summary,
                 "unchanged: run %lld already holds these KPIs (same models, batches and method)", info->run_id);
        rc = px_err_set(R->e, PX_ENOTHING, "%s", info->summary);
    }
    free(id);
    return rc;
}

/* Phase 4: the kpi.runs row. */
static int run_record(run *R)
{
    const char *pp[8] = {R->kinds_s, R->models_s, R->batches, R->inputs_s, R->method_s, R->fph,
                         R->first[0] ? R->first : NULL, R->last[0] ? R->last : NULL};
    PGresult *r = NULL;
    int rc = px_db_query(R->c, R->e, "cannot record the KPI run", &r,
                         "INSERT INTO kpi.runs (period_kinds, models, source_batches, inputs, method, fingerprint,"
                         " data_first, data_last, encounters, scored) VALUES ($1::text[], $2::jsonb, $3::bigint[],"
                         " $4::jsonb, $5::jsonb, $6, $7::date, $8::date, 0, 0) RETURNING run_id",
                         8, pp);
    if (rc == 0) R->info->run_id = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

/* Loads model k's stored hierarchical model (kpi/hier.c) and records in the
 * run's model summary whether it is applied and why not. */
static int hier_load(run *R, int k)
{
    kpi_model *mi = &R->mi[k];
    kpi_hier *h = &R->hier[k];
    int rc = 0;
    memset(h, 0, sizeof *h);
    if (R->p->no_hierarchical)
        snprintf(h->why, sizeof h->why, "not requested (--no-hierarchical): facilities use indirect standardization");
    else if (mi->crude || !mi->m)
        snprintf(h->why, sizeof h->why, "not applied: the measure is crude (no risk model may adjust it)");
    else
        rc = kpi_hier_load(R->cfg, kpi_risk_model[k], mi->version, mi->m, &R->hm[k], h, R->e);
    return rc;
}

static int hier_note(run *R, int k)
{
    const kpi_hier *h = &R->hier[k];
    cJSON *o = cJSON_AddObjectToObject(R->mi[k].info, "hierarchical");
    if (!o) return px_err_set(R->e, PX_ENOMEM, "out of memory");
    cJSON_AddBoolToObject(o, "applied", h->available);
    if (h->available) {
        cJSON_AddNumberToObject(o, "tau", h->tau);
        cJSON_AddNumberToObject(o, "mu", h->mu);
        cJSON_AddNumberToObject(o, "facilities", (double)h->nfac);
    }
    cJSON_AddStringToObject(o, "note", h->why);
    return 0;
}

/* Phase 5: each model compiled to SQL (or scored in C), with its hierarchical
 * model and reference shift. */
static int run_prepare(run *R)
{
    int rc = px_db_query(R->c, R->e, "cannot clear kpi.scored_c", NULL, "TRUNCATE kpi.scored_c", 0, NULL);
    for (int k = 0; k < 3 && rc == 0; k++) {
        kpi_model *mi = &R->mi[k];
        if (mi->skip) continue;
        if ((rc = hier_load(R, k)) != 0) break;
        if ((rc = kpi_score_prepare(R->c, R->p, k, mi, R->hm[k], R->info, R->e)) != 0) break;
        if (R->info->scored_in_c[k])
            add_note(R->info, "%s v%d scored in C (%s)", kpi_risk_model[k], mi->version,
                     R->p->score_in_c ? "--score-in-c" : "an SVM does not compile to SQL");
        R->info->reference_shift[k] = mi->shift;
        cJSON_AddNumberToObject(mi->info, "reference_shift", mi->shift);
    }
    return rc;
}

/* Phase 7: intervals, flags, smoothing and funnels per cell and group, then the
 * hierarchical ratios of the facilities. */
/* One model's hierarchical cells, on a thread of its own. */
typedef struct hier_job {
    run *R;
    int k, rc;
    px_err e;
} hier_job;

static void *hier_job_run(void *arg)
{
    hier_job *j = arg;
    run *R = j->R;
    j->rc = kpi_hier_cells(R->hm[j->k], &R->hr[j->k], kpi_risk_model[j->k], R->mi[j->k].version, R->p->periods,
                           R->p->conf, &R->hier[j->k], &j->e);
    return NULL;
}

static int run_stats(run *R)
{
    kpi_cells *cs = &R->cs;
    const px_kpi_params *p = R->p;
    /* the models' hierarchical cells are independent (each a Newton problem per
     * facility x period over its own rows): one thread each, the last on this one */
    hier_job jobs[3];
    pthread_t th[3];
    int started[3] = {0, 0, 0}, last = -1;
    memset(jobs, 0, sizeof jobs);
    for (int k = 0; k < 3; k++)
        if (R->hm[k] && R->hr[k].n) last = k;
    for (int k = 0; k < 3; k++) {
        jobs[k].R = R, jobs[k].k = k;
        if (!(R->hm[k] && R->hr[k].n)) continue;
        if (k != last && pthread_create(&th[k], NULL, hier_job_run, &jobs[k]) == 0) started[k] = 1;
        else hier_job_run(&jobs[k]);   /* the last one, or no thread to be had */
    }
    for (int k = 0; k < 3; k++)
        if (started[k]) pthread_join(th[k], NULL);
    for (int k = 0; k < 3; k++) {
        int rc = jobs[k].rc;
        if (rc) *R->e = jobs[k].e;
        if (rc == 0 && R->hm[k] && !R->hr[k].n)
            snprintf(R->hier[k].why, sizeof R->hier[k].why, "%s v%d: no stays to apply the hierarchical model to",
                     kpi_risk_model[k], R->mi[k].version);
        if (rc == 0 && !R->mi[k].skip) rc = hier_note(R, k);
        R->info->hierarchical[k] = R->hier[k].available;
        if (rc) return rc;
    }
    qsort(cs->v, cs->n, sizeof *cs->v, kpi_cell_cmp);
    for (size_t i = 0; i < cs->n;) {
        /* one (measure, kind, period): the system cell sorts first */
        size_t j = i;
        while (j < cs->n && cs->v[j].measure == cs->v[i].measure && cs->v[j].kind == cs->v[i].kind &&
               strcmp(cs->v[j].start, cs->v[i].start) == 0)
            j++;
        kpi_cell *sys = cs->v[i].utype == KPI_U_SYSTEM ? &cs->v[i] : NULL;
        if (sys) kpi_cell_stats(sys, NULL, p);
        for (size_t t = i; t < j; t++)
            if (&cs->v[t] != sys) kpi_cell_stats(&cs->v[t], sys, p);
        if (sys) {
            double rr = sys->rate;   /* the system's RSR is its own O/E x its crude rate */
            sys->rsr = sys->oe * rr, sys->rsr_lo = sys->oe_lo * rr, sys->rsr_hi = sys->oe_hi * rr;
        }
        for (size_t t = i; t < j;) {
            size_t u = t;
            while (u < j && cs->v[u].utype == cs->v[t].utype) u++;
            if (cs->v[t].utype != KPI_U_SYSTEM && kpi_group_stats(&cs->v[t], u - t, sys, p) != 0)
                return px_err_set(R->e, PX_ENOMEM, "out of memory");
            t = u;
        }
        /* facilities: the hierarchical standardized ratios, where a model holds one */
        for (size_t t = i; t < j; t++) kpi_cell_hier(&cs->v[t], sys, R->hier);
        i = j;
    }
    return 0;
}

/* The kpi.methods id of every method text a row can carry (the measure's words, and
 * its crude words when no risk model passed its gates), inserted where missing.
 * Runs before the run's transaction (autocommit): a text first written by a run
 * running beside this one is then visible to this one's snapshot. */
static int run_method_ids(run *R)
{
    for (int crude = 0; crude < 2; crude++)
        for (int m = 0; m < PX_KPI__COUNT; m++) {
            const char *w = crude ? kpi_crude_method_words((px_kpi_measure)m) : kpi_method_words((px_kpi_measure)m);
            const char *pv[1] = {w};
            PGresult *r = NULL;
            int rc = px_db_query(R->c, R->e, "cannot record the KPI methods", NULL,
                                 "INSERT INTO kpi.methods (words) VALUES ($1) ON CONFLICT (words) DO NOTHING", 1, pv);
            if (rc == 0)
                rc = px_db_query(R->c, R->e, "cannot read the KPI methods", &r,
                                 "SELECT method_id FROM kpi.methods WHERE words = $1", 1, pv);
            if (rc == 0 && PQntuples(r) != 1) rc = px_err_set(R->e, PX_ESTATE, "a KPI method text is missing from kpi.methods");
            if (rc == 0) snprintf(R->method_id[crude][m], sizeof R->method_id[crude][m], "%s", PQgetvalue(r, 0, 0));
            PQclear(r);
            if (rc != 0) return rc;
        }
    return 0;
}

/* One kpi.result_rows row of cell x as COPY text. */
static int cell_row(run *R, kpi_cell *x, px_buf *buf)
{
    char label[16], s[16], en[16];
    period_of(x->kind, x->start, R->first, R->last, label, s, en);
    int risk = x->measure != PX_KPI_VOLUME && x->measure != PX_KPI_COST;
    int rk = x->measure == PX_KPI_READMISSION ? 0 : x->measure == PX_KPI_MORTALITY ? 1 : 2;
    int sup = x->suppressed;
    int crude = risk && R->mi[rk].crude;
    if (crude) kpi_crude_cell(x);
    px_buf_printf(buf, "%lld\t%s\t%s\t%s\t%s\t%s\t%s", R->info->run_id, measure_names[x->measure],
                  kpi_kind_name(x->kind), label, s, en, unit_type_names[x->utype]);
    put_str(buf, x->unit);
    px_buf_printf(buf, "\t%.0f", x->n);
    double sup_nan = NAN;
    put_num(buf, sup ? sup_nan : x->o);
    put_num(buf, sup || !risk ? sup_nan : x->e);
    double vals[] = {x->rate, x->rate_lo, x->rate_hi, x->erate, x->oe, x->oe_lo, x->oe_hi};
    for (size_t v = 0; v < sizeof vals / sizeof *vals; v++) put_num(buf, sup ? sup_nan : vals[v]);
    put_str(buf, sup ? NULL : x->oe_method);
    double vals2[] = {x->rsr, x->rsr_lo, x->rsr_hi, x->eb, x->ebw};
    for (size_t v = 0; v < sizeof vals2 / sizeof *vals2; v++) put_num(buf, sup ? sup_nan : vals2[v]);
    /* funnel position and limits depend only on the precision: kept for plotting */
    double vals3[] = {x->fx, x->f95lo, x->f95hi, x->f998lo, x->f998hi, x->phi, x->fvar};
    for (size_t v = 0; v < sizeof vals3 / sizeof *vals3; v++) put_num(buf, sup ? sup_nan : vals3[v]);
    put_str(buf, x->flag);
    put_str(buf, sup ? "t" : "f");
    put_str(buf, risk && !crude ? kpi_risk_model[rk] : NULL);
    if (risk && !crude)
        px_buf_printf(buf, "\t%d", R->mi[rk].version);
    else
        px_buf_adds(buf, "\t\\N");
    double vals4[] = {x->sr, x->sr_lo, x->sr_hi, x->srsr, x->srsr_lo, x->srsr_hi};
    for (size_t v = 0; v < sizeof vals4 / sizeof *vals4; v++) put_num(buf, sup ? sup_nan : vals4[v]);
    put_str(buf, x->adjustment);
    put_str(buf, sup ? NULL : x->oe_flag);
    put_str(buf, R->method_id[crude][x->measure]);
    return px_buf_addc(buf, '\n');
}

/* Phase 8: the cells into kpi.result_rows (read through the view kpi.results, which adds
 * each row's method in words and its run's batches), the run's totals, the commit. */
static int run_store(run *R, double t0)
{
    px_copy_in w;
    int rc = px_copy_in_begin(&w, R->c,
                              "COPY kpi.result_rows (run_id, measure, period_kind, period, period_start, period_end,"
                              " unit_type, unit, n, observed, expected, rate, rate_lo, rate_hi, expected_rate, oe, oe_lo,"
                              " oe_hi, oe_method, rsr, rsr_lo, rsr_hi, eb_rate, eb_weight, funnel_x, funnel95_lo,"
                              " funnel95_hi, funnel998_lo, funnel998_hi, funnel_phi, funnel_var, flag, suppressed,"
                              " model_name, model_version, sr, sr_lo, sr_hi, srsr, srsr_lo, srsr_hi, adjustment,"
                              " oe_flag, method_id) FROM STDIN",
                              "the warehouse refused KPI rows", R->e);
    if (rc) return rc;
    for (size_t i = 0; i < R->cs.n && rc == 0; i++) {
        if (cell_row(R, &R->cs.v[i], &w.buf) < 0) rc = px_err_set(R->e, PX_ENOMEM, "out of memory");
        else rc = px_copy_in_flush(&w, 0, R->e);
    }
    if (rc == 0) rc = px_copy_in_flush(&w, 1, R->e);
    int rc2 = px_copy_in_end(&w, rc != 0, NULL, R->e);
    if (rc == 0) rc = rc2;
    if (rc) return rc;
    px_kpi_run_info *info = R->info;
    info->results = (long long)R->cs.n;
    free(R->models_s);
    if (!(R->models_s = cJSON_PrintUnformatted(R->models)) ||
        !(R->pred_sql = kpi_predictions_sql(info->run_id, R->mi)))
        return px_err_set(R->e, PX_ENOMEM, "out of memory");
    char rid[32], sc[32], secs[32];
    snprintf(rid, sizeof rid, "%lld", info->run_id);
    snprintf(sc, sizeof sc, "%lld", info->scored);
    snprintf(secs, sizeof secs, "%.3f", kpi_now() - t0);
    /* the models' summaries now carry their reference shifts and hierarchical notes */
    const char *pp[6] = {rid, R->enc, sc, secs, R->models_s, R->pred_sql};
    if ((rc = px_db_query(R->c, R->e, "cannot finish the KPI run", NULL,
                          "UPDATE kpi.runs SET encounters = $2::bigint, scored = $3::bigint, seconds = $4::float8,"
                          " models = $5::jsonb, predictions_sql = $6 WHERE run_id = $1::bigint",
                          6, pp)) != 0)
        return rc;
    return px_db_query(R->c, R->e, "cannot commit the KPI run", NULL, "COMMIT", 0, NULL);
}

static void run_summary(run *R)
{
    px_kpi_run_info *info = R->info;
    const kpi_model *mi = R->mi;
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
}

int px_kpi_compute(PGconn *c, const px_config *cfg, const px_kpi_params *p, px_kpi_run_info *info, px_err *e)
{
    double t0 = kpi_now(), ts;
    int rc = 0, began = 0;
    run R;
    memset(&R, 0, sizeof R);
    R.c = c, R.cfg = cfg, R.p = p, R.info = info, R.e = e;
    memset(info, 0, sizeof *info);
    px_models_init(); /* GSL reports, never aborts (once per process) */
    if (!p->periods || (p->periods & ~15) || !(p->conf > 0 && p->conf < 1) || p->min_cases < 0)
        return px_err_set(e, PX_EINVAL, "bad KPI parameters (periods, conf or min_cases)");
    char lock[64];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d)", PX_KPI_LOCK);
    /* a sharded warehouse: a killed load's batch still prepared on a shard is
     * resolved first, so that the stays read below are the recorded batches' */
    px_shards_recovery rec;
    if ((rc = px_shards_recover(c, 0, &rec, e)) != 0) return rc;
    if ((rc = run_method_ids(&R)) != 0) return rc;
    if ((rc = px_db_query(c, e, "cannot begin the KPI run", NULL, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0,
                          NULL)) != 0)
        goto out;
    began = 1;
    if ((rc = px_db_query(c, e, "cannot lock the KPI tables", NULL, lock, 0, NULL)) != 0) goto out;
    /* the compiled models are long expressions evaluated once per stay: compiling
     * them with LLVM costs more than it saves at this size */
    if ((rc = px_db_query(c, e, "cannot configure the KPI run", NULL, "SET LOCAL jit = off", 0, NULL)) != 0) goto out;
    if ((rc = run_state(&R)) != 0 || (rc = run_models(&R)) != 0 || (rc = run_method(&R)) != 0 ||
        (rc = run_record(&R)) != 0)
        goto out;
    info->seconds_inputs = kpi_now() - t0;
    ts = kpi_now();
    if ((rc = run_prepare(&R)) != 0) goto out;
    info->seconds_score = kpi_now() - ts;
    ts = kpi_now();
    long long rows[3] = {0, 0, 0};
    if ((rc = kpi_score_pass(c, R.mi, p->periods, &R.cs, R.hr, rows, e)) != 0) goto out;
    for (int k = 0; k < 3; k++) R.mi[k].rows = rows[k], info->scored += rows[k];
    info->seconds_sql = kpi_now() - ts;
    ts = kpi_now();
    if ((rc = run_stats(&R)) != 0) goto out;
    info->seconds_stats = kpi_now() - ts;
    ts = kpi_now();
    if ((rc = run_store(&R, t0)) != 0) goto out;
    began = 0;
    info->seconds_store = kpi_now() - ts;
    info->seconds = kpi_now() - t0;
    run_summary(&R);
out:
    if (began) px_db_exec(c, NULL, "ROLLBACK");
    run_release(&R);
    return rc;
}
