/* drift.c: drift windows of a served model version and their tests against the
 * version's reference distributions (reference.json from the registry).
 *
 * Each monitored variable (every input, and the score) keeps counts over the
 * reference's own bins: numeric inputs use its decile edges (bin b holds
 * e[b-1] < x <= e[b]) plus a missing bin, categorical inputs one bin per level
 * plus "other" and missing. Requests add counts under the monitor's mutex; a
 * full (or old) window is queued for the poller, which tests each in turn (a
 * window's size never depends on how soon the poller runs):
 *   PSI against a critical value that grows as the samples shrink (see stats.c),
 *   never below psi_floor; KS (numeric) or chi-square (categorical) at the
 *   per-test level alpha / tests, and only for an effect of at least effect_floor.
 * The family-wise false-alarm rate of one window is then at most alpha (Bonferroni). */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

px_drift_params px_drift_default_params(void)
{
    px_drift_params p;
    p.alpha = 0.01;
    p.psi_floor = 0.1;
    p.effect_floor = 0.1;
    p.min_n = 100;
    return p;
}

void srv_drift_free(srv_drift *d)
{
    if (!d) return;
    for (size_t j = 0; j < d->nvars; j++) {
        free(d->vars[j].edges);
        free(d->vars[j].labels);
        free(d->vars[j].ref);
        free(d->vars[j].win);
        free(d->vars[j].closed);
    }
    for (size_t i = 0; i < d->nlevel_store; i++) free(d->level_store[i]);
    free(d->level_store);
    free(d->vars);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static double num_at(const cJSON *arr, int i)
{
    const cJSON *x = cJSON_GetArrayItem(arr, i);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static int alloc_bins(srv_var *v, size_t nbins)
{
    v->nbins = nbins;
    v->ref = calloc(nbins, sizeof *v->ref);
    v->win = calloc(nbins, sizeof *v->win);
    v->closed = calloc(nbins * SRV_DRIFT_QUEUE, sizeof *v->closed);
    return v->ref && v->win && v->closed ? 0 : -1;
}

/* A numeric summary {edges, counts, missing} into v; 0, or -1 when malformed. */
static int numeric_var(srv_var *v, const cJSON *o)
{
    const cJSON *edges = cJSON_GetObjectItemCaseSensitive(o, "edges");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(o, "counts");
    const cJSON *missing = cJSON_GetObjectItemCaseSensitive(o, "missing");
    int ne = cJSON_GetArraySize(edges), nc = cJSON_GetArraySize(counts);
    if (!cJSON_IsArray(edges) || !cJSON_IsArray(counts) || nc != ne + 1 || ne > 1000) return -1;
    v->numeric = 1;
    v->nedges = (size_t)ne;
    if (!(v->edges = malloc(((size_t)ne + 1) * sizeof *v->edges))) return -1;
    for (int i = 0; i < ne; i++) {
        v->edges[i] = num_at(edges, i);
        if (!isfinite(v->edges[i]) || (i > 0 && !(v->edges[i] > v->edges[i - 1]))) return -1;
    }
    if (alloc_bins(v, (size_t)ne + 2) != 0) return -1;
    for (int i = 0; i < nc; i++) {
        v->ref[i] = num_at(counts, i);
        if (!(v->ref[i] >= 0)) return -1;
    }
    v->ref[ne + 1] = cJSON_IsNumber(missing) && missing->valuedouble >= 0 ? missing->valuedouble : 0;
    return 0;
}

static int categorical_var(srv_drift *d, srv_var *v, const px_feature_info *fi, const cJSON *o)
{
    const cJSON *levels = cJSON_GetObjectItemCaseSensitive(o, "levels");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(o, "counts");
    const cJSON *other = cJSON_GetObjectItemCaseSensitive(o, "other");
    const cJSON *missing = cJSON_GetObjectItemCaseSensitive(o, "missing");
    int nl = cJSON_GetArraySize(levels);
    if (!cJSON_IsArray(levels) || cJSON_GetArraySize(counts) != nl) return -1;
    v->numeric = 0;
    if (alloc_bins(v, fi->nlevels + 2) != 0) return -1;
    if (!(v->labels = calloc(fi->nlevels + 2, sizeof *v->labels))) return -1;
    for (size_t l = 0; l < fi->nlevels; l++) v->labels[l] = fi->levels[l]; /* replaced by owned copies below */
    /* the reference's levels are matched to the model's by text */
    for (int i = 0; i < nl; i++) {
        const cJSON *lv = cJSON_GetArrayItem(levels, i);
        double c = num_at(counts, i);
        if (!cJSON_IsString(lv) || !(c >= 0)) return -1;
        size_t l = px_model_level_index(fi, lv->valuestring, strlen(lv->valuestring));
        v->ref[l < fi->nlevels ? l : fi->nlevels] += c;
    }
    v->ref[fi->nlevels] += cJSON_IsNumber(other) && other->valuedouble >= 0 ? other->valuedouble : 0;
    v->ref[fi->nlevels + 1] = cJSON_IsNumber(missing) && missing->valuedouble >= 0 ? missing->valuedouble : 0;
    /* own the labels: the monitor outlives the model version it watched */
    char **store = realloc(d->level_store, (d->nlevel_store + fi->nlevels) * sizeof *store);
    if (!store) return -1;
    d->level_store = store;
    for (size_t l = 0; l < fi->nlevels; l++) {
        char *copy = strdup(fi->levels[l]);
        if (!copy) return -1;
        d->level_store[d->nlevel_store++] = copy;
        v->labels[l] = copy;
    }
    v->labels[fi->nlevels] = "(other)";
    v->labels[fi->nlevels + 1] = "(missing)";
    return 0;
}

srv_drift *srv_drift_new(const srv_model *sm, const cJSON *ref, px_err *e)
{
    srv_drift *d = calloc(1, sizeof *d);
    if (!d) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    snprintf(d->name, sizeof d->name, "%s", sm->name);
    d->version = sm->version;
    d->nvars = sm->k + 1;
    d->opened_us = srv_mono_us();
    if (!(d->vars = calloc(d->nvars, sizeof *d->vars))) goto oom;
    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(ref, "features");
    if (!cJSON_IsArray(feats)) {
        px_err_set(e, PX_ECORRUPT, "reference of '%s' v%d has no features", sm->name, sm->version);
        goto fail;
    }
    size_t monitored = 0;
    for (size_t j = 0; j < sm->k; j++) {
        srv_var *v = &d->vars[j];
        const px_feature_info *fi = sm->f[j].info;
        snprintf(v->name, sizeof v->name, "%s", fi->name);
        const cJSON *o = NULL, *x;
        cJSON_ArrayForEach(x, feats)
        {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(x, "name");
            if (cJSON_IsString(n) && strcmp(n->valuestring, fi->name) == 0) o = x;
        }
        if (!o) continue; /* not in the reference: not monitored */
        int rc = fi->kind == PX_COL_NUMERIC ? numeric_var(v, o) : categorical_var(d, v, fi, o);
        if (rc != 0) {
            px_err_set(e, PX_ECORRUPT, "reference of '%s' v%d: malformed distribution of '%s'", sm->name, sm->version,
                       fi->name);
            goto fail;
        }
        monitored++;
    }
    srv_var *sv = &d->vars[sm->k];
    snprintf(sv->name, sizeof sv->name, "score");
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(ref, "score");
    if (score && numeric_var(sv, score) != 0) {
        px_err_set(e, PX_ECORRUPT, "reference of '%s' v%d: malformed score distribution", sm->name, sm->version);
        goto fail;
    }
    if (score) monitored++;
    if (monitored == 0) {
        px_err_set(e, PX_ECORRUPT, "reference of '%s' v%d describes none of its inputs", sm->name, sm->version);
        goto fail;
    }
    return d;
oom:
    px_err_set(e, PX_ENOMEM, "out of memory");
fail:
    srv_drift_free(d);
    return NULL;
}

size_t srv_drift_bin(const srv_drift *d, size_t j, double x)
{
    const srv_var *v = &d->vars[j];
    if (v->nbins == 0) return 0;
    if (v->numeric) {
        if (isnan(x)) return v->nedges + 1;
        /* first edge >= x: bin b holds e[b-1] < x <= e[b] */
        size_t lo = 0, hi = v->nedges;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (v->edges[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }
    size_t nl = v->nbins - 2;
    if (isnan(x)) return nl + 1;
    if (x < 0 || x >= (double)nl) return nl;
    return (size_t)x;
}

/* Called with d->mu held: the open window joins the queue of closed windows (the
 * poller tests each on its own); with the queue full it merges into the newest. */
static int close_window(srv_drift *d)
{
    size_t slot;
    if (d->q_len == SRV_DRIFT_QUEUE) slot = (d->q_head + d->q_len - 1) % SRV_DRIFT_QUEUE;
    else {
        slot = (d->q_head + d->q_len) % SRV_DRIFT_QUEUE;
        d->q_len++;
        d->q_n[slot] = 0;
        for (size_t j = 0; j < d->nvars; j++)
            if (d->vars[j].nbins)
                memset(d->vars[j].closed + slot * d->vars[j].nbins, 0, d->vars[j].nbins * sizeof *d->vars[j].closed);
    }
    for (size_t j = 0; j < d->nvars; j++) {
        srv_var *v = &d->vars[j];
        double *c = v->closed + slot * v->nbins;
        for (size_t b = 0; b < v->nbins; b++) {
            c[b] += v->win[b];
            v->win[b] = 0;
        }
    }
    d->q_n[slot] += d->n;
    d->n = 0;
    d->opened_us = srv_mono_us();
    return 1;
}

int srv_drift_add(srv_drift *d, const uint16_t *bins, size_t nrows, const px_serve_params *p)
{
    int closed = 0;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < nrows; i++) {
        const uint16_t *row = bins + i * d->nvars;
        for (size_t j = 0; j < d->nvars; j++)
            if (d->vars[j].nbins) d->vars[j].win[row[j]] += 1;
    }
    d->n += nrows;
    uint64_t age = srv_mono_us() - d->opened_us;
    /* full, and open for at least the minimum interval: under heavy traffic a window
     * grows past drift_window rather than closing many times a second */
    if ((d->n >= p->drift_window && age >= (uint64_t)p->drift_min_interval_ms * 1000u) ||
        (d->n >= p->drift_min_n && age >= (uint64_t)p->drift_window_s * 1000000u))
        closed = close_window(d);
    pthread_mutex_unlock(&d->mu);
    return closed;
}

void srv_drift_close(srv_drift *d)
{
    pthread_mutex_lock(&d->mu);
    if (d->n > 0) close_window(d);
    pthread_mutex_unlock(&d->mu);
}

int srv_drift_tick(srv_drift *d, const px_serve_params *p)
{
    int closed = 0;
    pthread_mutex_lock(&d->mu);
    uint64_t age = srv_mono_us() - d->opened_us;
    if ((d->n >= p->drift_window && age >= (uint64_t)p->drift_min_interval_ms * 1000u) ||
        (d->n >= p->drift_min_n && age >= (uint64_t)p->drift_window_s * 1000000u))
        closed = close_window(d);
    pthread_mutex_unlock(&d->mu);
    return closed;
}

void srv_drift_test_var(srv_var *v, const double *win, const px_drift_params *p, double alpha)
{
    v->psi = v->psi_crit = v->ks = v->ks_p = v->chi2 = v->chi2_p = v->cramer_v = NAN;
    v->chi2_df = 0;
    v->alert = 0;
    v->alert_test[0] = '\0';
    if (v->nbins == 0) return;
    /* bins empty in both samples carry no information and would only bias PSI
     * (through the 0.5 correction) and inflate its degrees of freedom */
    double a[1100], b[1100];
    size_t k = 0;
    double n = 0, m = 0;
    for (size_t i = 0; i < v->nbins && k < 1100; i++) {
        if (win[i] + v->ref[i] <= 0) continue;
        a[k] = win[i];
        b[k] = v->ref[i];
        n += a[k];
        m += b[k];
        k++;
    }
    if (k < 2 || !(n >= (double)p->min_n) || !(m > 0)) return;
    v->psi = px_drift_psi(a, b, k);
    double crit = px_drift_psi_critical(k, n, m, alpha);
    v->psi_crit = crit > p->psi_floor ? crit : p->psi_floor;
    if (v->psi > v->psi_crit) {
        v->alert = 1;
        snprintf(v->alert_test, sizeof v->alert_test, "psi");
    }
    if (v->numeric) {
        /* KS over the value bins only: the missing bin has no place on the axis */
        double wa[1100], wb[1100];
        size_t kv = 0;
        for (size_t i = 0; i + 1 < v->nbins && kv < 1100; i++) {
            wa[kv] = win[i];
            wb[kv] = v->ref[i];
            kv++;
        }
        v->ks = px_drift_ks(wa, wb, kv, &v->ks_p);
        if (v->ks_p < alpha && v->ks >= p->effect_floor && !v->alert) {
            v->alert = 1;
            snprintf(v->alert_test, sizeof v->alert_test, "ks");
        }
    } else if (px_drift_chi2(a, b, k, &v->chi2, &v->chi2_df, &v->chi2_p, &v->cramer_v) == 0) {
        if (v->chi2_p < alpha && v->cramer_v >= p->effect_floor && !v->alert) {
            v->alert = 1;
            snprintf(v->alert_test, sizeof v->alert_test, "chi2");
        }
    }
}

static double var_ref_n(const srv_var *v)
{
    double m = 0;
    for (size_t i = 0; i < v->nbins; i++) m += v->ref[i];
    return m;
}

int srv_drift_evaluate(srv_drift *d, const px_drift_params *p, srv_drift_alert *alerts, int max)
{
    pthread_mutex_lock(&d->mu);
    if (d->q_len == 0) {
        pthread_mutex_unlock(&d->mu);
        return -1;
    }
    size_t slot = d->q_head, n = d->q_n[slot], tests = 0;
    for (size_t j = 0; j < d->nvars; j++) tests += d->vars[j].nbins ? 2 : 0;
    double alpha = p->alpha / (double)(tests ? tests : 1);
    int na = 0;
    for (size_t j = 0; j < d->nvars; j++) {
        srv_var *v = &d->vars[j];
        srv_drift_test_var(v, v->closed + slot * v->nbins, p, alpha);
        if (v->alert && na < max) {
            srv_drift_alert *a = &alerts[na++];
            memset(a, 0, sizeof *a);
            snprintf(a->model, sizeof a->model, "%s", d->name);
            a->version = d->version;
            snprintf(a->feature, sizeof a->feature, "%s", v->name);
            snprintf(a->test, sizeof a->test, "%s", v->alert_test);
            a->psi = v->psi;
            if (strcmp(v->alert_test, "psi") == 0) {
                a->statistic = v->psi;
                a->threshold = v->psi_crit;
                a->p_value = NAN;
            } else if (strcmp(v->alert_test, "ks") == 0) {
                a->statistic = v->ks;
                a->threshold = p->effect_floor;
                a->p_value = v->ks_p;
            } else {
                a->statistic = v->chi2;
                a->threshold = p->effect_floor;
                a->p_value = v->chi2_p;
            }
            a->n = n;
            a->ref_n = (size_t)var_ref_n(v);
        }
    }
    d->q_head = (d->q_head + 1) % SRV_DRIFT_QUEUE;
    d->q_len--;
    d->last_n = n;
    d->last_at_us = srv_wall_us();
    d->windows++;
    d->alerts_last = na;
    pthread_mutex_unlock(&d->mu);
    return na;
}

void srv_drift_recorded(srv_drift *d)
{
    pthread_mutex_lock(&d->mu);
    d->recorded++;
    pthread_mutex_unlock(&d->mu);
}

static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

cJSON *srv_drift_json(srv_drift *d)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    pthread_mutex_lock(&d->mu);
    cJSON_AddStringToObject(o, "model", d->name);
    cJSON_AddNumberToObject(o, "version", d->version);
    cJSON_AddNumberToObject(o, "open_window_n", (double)d->n);
    cJSON_AddNumberToObject(o, "windows_tested", d->windows);
    cJSON_AddNumberToObject(o, "windows_recorded", d->recorded);
    cJSON_AddNumberToObject(o, "windows_waiting", (double)d->q_len);
    cJSON *last = cJSON_AddObjectToObject(o, "last_window");
    if (last && d->windows > 0) {
        cJSON_AddNumberToObject(last, "n", (double)d->last_n);
        cJSON_AddNumberToObject(last, "tested_at_unix", (double)(d->last_at_us / 1000000u));
        cJSON_AddNumberToObject(last, "alerts", d->alerts_last);
        cJSON *vars = cJSON_AddArrayToObject(last, "variables");
        for (size_t j = 0; vars && j < d->nvars; j++) {
            srv_var *v = &d->vars[j];
            if (!v->nbins) continue;
            cJSON *x = cJSON_CreateObject();
            if (!x) break;
            cJSON_AddItemToArray(vars, x);
            cJSON_AddStringToObject(x, "name", v->name);
            cJSON_AddStringToObject(x, "kind", v->numeric ? "numeric" : "categorical");
            cJSON_AddBoolToObject(x, "tested", isfinite(v->psi)); /* not when constant in both samples */
            add_num(x, "psi", v->psi);
            add_num(x, "psi_threshold", v->psi_crit);
            if (v->numeric) {
                add_num(x, "ks", v->ks);
                add_num(x, "ks_p", v->ks_p);
            } else {
                add_num(x, "chi2", v->chi2);
                cJSON_AddNumberToObject(x, "chi2_df", v->chi2_df);
                add_num(x, "chi2_p", v->chi2_p);
                add_num(x, "cramers_v", v->cramer_v);
            }
            cJSON_AddBoolToObject(x, "alert", v->alert);
            if (v->alert) cJSON_AddStringToObject(x, "test", v->alert_test);
        }
    } else if (last)
        cJSON_AddNullToObject(o, "tested_at_unix");
    pthread_mutex_unlock(&d->mu);
    return o;
}

/* Appends v to a text[] literal's elements ("a","b",...), quoted and escaped. */
static void lit_add(px_buf *b, const char *v)
{
    if (b->len > 1) px_buf_addc(b, ',');
    if (!v) {
        px_buf_adds(b, "NULL");
        return;
    }
    px_buf_addc(b, '"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\') px_buf_addc(b, '\\');
        px_buf_addc(b, *v);
    }
    px_buf_addc(b, '"');
}

/* One statement, one round trip (an implicit transaction): upserts the window's
 * alerts from parallel arrays (the data-modifying WITH runs to completion whether
 * read or not), and resolves the open alerts of this version and source that did
 * not fire; the two touch disjoint rows. */
int srv_alerts_store(PGconn *c, const char *model, int version, const srv_drift_alert *a, int n, const char *source,
                     px_err *e)
{
    enum { FEAT, TEST, STAT, THR, PV, PSI, WN, RN, NARR };
    px_buf arr[NARR];
    memset(arr, 0, sizeof arr);
    for (int k = 0; k < NARR; k++) px_buf_addc(&arr[k], '{');
    char num[40];
    for (int i = 0; i < n; i++) {
        lit_add(&arr[FEAT], a[i].feature);
        lit_add(&arr[TEST], a[i].test);
        snprintf(num, sizeof num, "%.17g", a[i].statistic);
        lit_add(&arr[STAT], num);
        snprintf(num, sizeof num, "%.17g", a[i].threshold);
        lit_add(&arr[THR], num);
        snprintf(num, sizeof num, "%.17g", a[i].p_value);
        lit_add(&arr[PV], isfinite(a[i].p_value) ? num : NULL);
        snprintf(num, sizeof num, "%.17g", a[i].psi);
        lit_add(&arr[PSI], isfinite(a[i].psi) ? num : NULL);
        snprintf(num, sizeof num, "%zu", a[i].n);
        lit_add(&arr[WN], num);
        snprintf(num, sizeof num, "%zu", a[i].ref_n);
        lit_add(&arr[RN], num);
    }
    int rc = 0, oom = 0;
    for (int k = 0; k < NARR; k++) oom |= px_buf_addc(&arr[k], '}') != 0;
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    PGresult *r = NULL;
    if (oom) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory storing drift alerts");
        goto done;
    }
    const char *vals[11] = {model, ver, source, arr[FEAT].data, arr[TEST].data, arr[STAT].data, arr[THR].data,
                            arr[PV].data, arr[PSI].data, arr[WN].data, arr[RN].data};
    char what[128];
    snprintf(what, sizeof what, "cannot store drift alerts of '%s' v%d", model, version);
    rc = px_db_query(c, e, what, NULL,
                     "WITH a AS (SELECT * FROM unnest($4::text[], $5::text[], $6::float8[], $7::float8[], $8::float8[],"
                     "  $9::float8[], $10::bigint[], $11::bigint[]) AS u(feature, test, statistic, threshold, p_value, psi,"
                     "  window_n, reference_n)),"
                     " up AS (INSERT INTO serve.drift_alerts (model, version, feature, test, statistic, threshold, p_value,"
                     "  psi, window_n, reference_n, source)"
                     "  SELECT $1, $2::int, feature, test, statistic, threshold, p_value, psi, window_n, reference_n, $3 FROM a"
                     "  ON CONFLICT (model, version, feature, test, source) WHERE resolved_at IS NULL DO UPDATE SET"
                     "  last_at = now(), windows = serve.drift_alerts.windows + 1, statistic = EXCLUDED.statistic,"
                     "  threshold = EXCLUDED.threshold, p_value = EXCLUDED.p_value, psi = EXCLUDED.psi,"
                     "  window_n = EXCLUDED.window_n)"
                     " UPDATE serve.drift_alerts d SET resolved_at = now() WHERE d.model = $1 AND d.version = $2::int"
                     " AND d.source = $3 AND d.resolved_at IS NULL"
                     " AND NOT EXISTS (SELECT 1 FROM a WHERE a.feature = d.feature AND a.test = d.test)",
                     11, vals);
done:
    PQclear(r);
    for (int k = 0; k < NARR; k++) px_buf_release(&arr[k]);
    return rc;
}
