/* train.c: the training job: feature table -> dataset -> temporal, patient-grouped
 * holdout -> fit -> evaluation on the holdout (overall, by sex, by age band) ->
 * registered, signed version. Retraining with promotion gates is retrain.c.
 *
 * Holdout: the latest holdout_time_share of prediction times AND the patients whose
 * (keyed) pseudonym falls in a fixed holdout group. Training uses the earlier times
 * of the other patients, so no patient is on both sides and the test period is later
 * than anything trained on. The group depends only on the pseudonym, so every
 * version of a model keeps the same holdout patients: a champion has never seen the
 * patients a candidate is evaluated on, and both are compared on the same rows. */
#include "registry/train_int.h"
#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

px_train_params px_train_default_params(void)
{
    px_train_params p;
    memset(&p, 0, sizeof p);
    p.algo = PX_ALGO_LOGIT;
    p.holdout_time_share = 0.25;
    p.holdout_patient_share = 0.3;
    p.build_features = 1;
    p.gates = px_gate_default_params();
    p.hier = px_hier_default_params();
    return p;
}

/* splitmix64 finalizer: spreads the pseudonym's bits so that the group test below
 * is a fair coin per patient. The pseudonym is already an HMAC under the
 * installation key, so this needs no key of its own. */
static uint64_t mix64(uint64_t z)
{
    return px_splitmix64(&z);   /* one step from state z: z + gamma, mixed */
}

#define HOLDOUT_SALT 0x70726f676e6f7331ULL /* "prognos1": changing it changes every holdout */

static int in_holdout_group(uint64_t group, double share)
{
    if (group == 0) return 0;
    return (double)(mix64(group ^ HOLDOUT_SALT) >> 11) * 0x1.0p-53 < share;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void reg_job_release(reg_job *j)
{
    px_dataset_free(j->d);
    free(j->train);
    free(j->test);
    px_model_free(j->m);
    free(j->test_scores);
    free(j->metrics_json);
    free(j->split_json);
    free(j->params_json);
    free(j->reference_json);
    free(j->calibration_csv);
    free(j->hier_json);
    free(j->batches_json);
    free(j->gates_json);
    memset(j, 0, sizeof *j);
}

static int split_rows(reg_job *j, const px_train_params *p, px_err *e)
{
    px_dataset *d = j->d;
    j->train = malloc((d->n ? d->n : 1) * sizeof *j->train);
    j->test = malloc((d->n ? d->n : 1) * sizeof *j->test);
    if (!j->train || !j->test) return px_err_set(e, PX_ENOMEM, "out of memory splitting %zu rows", d->n);
    int has_time = d->time_col[0] != '\0';
    j->cutoff = 0;
    if (has_time && d->n > 0) {
        int32_t *days = malloc(d->n * sizeof *days);
        if (!days) return px_err_set(e, PX_ENOMEM, "out of memory splitting %zu rows", d->n);
        memcpy(days, d->day, d->n * sizeof *days);
        qsort(days, d->n, sizeof *days, cmp_i32);
        size_t q = (size_t)floor((double)d->n * (1.0 - p->holdout_time_share));
        if (q >= d->n) q = d->n - 1;
        j->cutoff = days[q];
        free(days);
    }
    int has_group = 0;
    for (size_t i = 0; i < d->n && !has_group; i++) has_group = d->group[i] != 0;
    /* Without patient groups only time separates the sides: a holdout starting before
     * the champion's would hold out rows the champion was trained on. */
    if (has_time && !has_group && j->min_cutoff > j->cutoff) j->cutoff = j->min_cutoff;
    j->method = has_group && has_time ? "temporal x patient-group holdout"
                : has_group          ? "patient-group holdout (no time column)"
                : has_time           ? "temporal holdout (no patient column)"
                                     : "random row holdout (no time or patient column)";
    for (size_t i = 0; i < d->n; i++) {
        int late = has_time ? d->day[i] >= j->cutoff : 1;
        int hold = has_group ? in_holdout_group(d->group[i], p->holdout_patient_share) : 0;
        if (!has_group && !has_time) hold = (double)(mix64(i) >> 11) * 0x1.0p-53 < p->holdout_patient_share;
        if (has_group && has_time) {
            if (late && hold) j->test[j->ntest++] = i;
            else if (!late && !hold) j->train[j->ntrain++] = i;
        } else if (has_group) { /* no time column: the patient groups alone */
            if (hold) j->test[j->ntest++] = i;
            else j->train[j->ntrain++] = i;
        } else if (has_time) {
            if (late) j->test[j->ntest++] = i;
            else j->train[j->ntrain++] = i;
        } else {
            if (hold) j->test[j->ntest++] = i;
            else j->train[j->ntrain++] = i;
        }
    }
    if (j->ntrain < 10) return px_err_set(e, PX_EINVAL, "too few training rows in '%s' (%zu of %zu)", d->table, j->ntrain, d->n);
    if (j->ntest < 10) return px_err_set(e, PX_EINVAL, "too few holdout rows in '%s' (%zu of %zu)", d->table, j->ntest, d->n);
    return 0;
}

static void date_str(int32_t days, char out[11])
{
    time_t t = (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

/* Parses a compact JSON text into a cJSON node (NULL if it is not JSON). */
static cJSON *json_of(char *text)
{
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    free(text);
    return o;
}

static const char *const age_band_names[] = {"<50", "50-64", "65-74", "75-84", "85+"};

static int age_band(double age)
{
    if (isnan(age)) return -1;
    return age < 50 ? 0 : age < 65 ? 1 : age < 75 ? 2 : age < 85 ? 3 : 4;
}

/* Evaluation of a subset of the holdout (rows given by a predicate) as JSON, or
 * JSON null when the subset cannot be evaluated (too small, one class). */
static cJSON *eval_subset(const reg_job *j, const double *scores, int (*pick)(const reg_job *, size_t, int), int arg)
{
    size_t n = 0;
    double *y = malloc((j->ntest ? j->ntest : 1) * sizeof *y), *s = malloc((j->ntest ? j->ntest : 1) * sizeof *s);
    cJSON *out = NULL;
    if (!y || !s) goto done;
    for (size_t k = 0; k < j->ntest; k++) {
        size_t i = j->test[k];
        if (!pick(j, i, arg)) continue;
        y[n] = j->d->y[i];
        s[n] = scores[k];
        n++;
    }
    px_err e = {0};
    if (j->binary) {
        px_eval_bin ev;
        if (n >= 20 && px_eval_binary(y, s, n, &ev, &e) == 0) out = json_of(px_eval_bin_json(&ev));
    } else {
        px_eval_reg ev;
        if (n >= 20 && px_eval_regression(y, s, n, &ev, &e) == 0) out = json_of(px_eval_reg_json(&ev));
    }
done:
    free(y);
    free(s);
    return out ? out : cJSON_CreateNull();
}

static int pick_sex(const reg_job *j, size_t i, int arg) { return j->d->sex[i] == (char)arg; }
static int pick_age(const reg_job *j, size_t i, int arg) { return age_band(j->d->age[i]) == arg; }

typedef struct scored { double s, y; } scored;

static int cmp_scored_desc(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x < y) - (x > y);
}

/* The holdout ROC curve at up to 200 points (every distinct score when fewer), for
 * plots: a version's evaluation stays inspectable without its holdout rows. */
static cJSON *roc_curve(const reg_job *j)
{
    size_t n = j->ntest;
    scored *v = malloc((n ? n : 1) * sizeof *v);
    cJSON *o = cJSON_CreateObject();
    if (!v || !o) {
        free(v);
        cJSON_Delete(o);
        return cJSON_CreateNull();
    }
    double pos = 0;
    for (size_t k = 0; k < n; k++) {
        v[k].s = j->test_scores[k];
        v[k].y = j->d->y[j->test[k]];
        pos += v[k].y;
    }
    double neg = (double)n - pos;
    qsort(v, n, sizeof *v, cmp_scored_desc);
    cJSON *fpr = cJSON_AddArrayToObject(o, "fpr"), *tpr = cJSON_AddArrayToObject(o, "tpr"),
          *thr = cJSON_AddArrayToObject(o, "threshold");
    cJSON_AddItemToArray(fpr, cJSON_CreateNumber(0));
    cJSON_AddItemToArray(tpr, cJSON_CreateNumber(0));
    cJSON_AddItemToArray(thr, cJSON_CreateNumber(1));
    double tp = 0, fp = 0;
    size_t step = n / 200 + 1, last = 0;
    for (size_t k = 0; k < n; k++) {
        tp += v[k].y;
        fp += 1 - v[k].y;
        int boundary = k + 1 == n || v[k + 1].s != v[k].s;
        if (boundary && (k + 1 - last >= step || k + 1 == n)) {
            last = k + 1;
            cJSON_AddItemToArray(fpr, cJSON_CreateNumber(neg > 0 ? fp / neg : 0));
            cJSON_AddItemToArray(tpr, cJSON_CreateNumber(pos > 0 ? tp / pos : 0));
            cJSON_AddItemToArray(thr, cJSON_CreateNumber(v[k].s));
        }
    }
    free(v);
    return o;
}

static int build_metrics(reg_job *j, px_err *e)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return px_err_set(e, PX_ENOMEM, "out of memory");
    cJSON *overall = j->binary ? json_of(px_eval_bin_json(&j->eb)) : json_of(px_eval_reg_json(&j->er));
    cJSON_AddItemToObject(root, "overall", overall ? overall : cJSON_CreateNull());
    cJSON *bysex = cJSON_AddObjectToObject(root, "by_sex");
    static const char sexes[] = {'F', 'M'};
    for (int k = 0; k < 2; k++) {
        char key[2] = {sexes[k], 0};
        cJSON_AddItemToObject(bysex, key, eval_subset(j, j->test_scores, pick_sex, sexes[k]));
    }
    cJSON *byage = cJSON_AddObjectToObject(root, "by_age_band");
    for (int b = 0; b < 5; b++) cJSON_AddItemToObject(byage, age_band_names[b], eval_subset(j, j->test_scores, pick_age, b));
    if (j->binary) cJSON_AddItemToObject(root, "roc", roc_curve(j));
    cJSON *fit = cJSON_AddObjectToObject(root, "fit");
    cJSON_AddNumberToObject(fit, "n_train", (double)j->ntrain);
    cJSON_AddNumberToObject(fit, "iterations", j->fi.iterations);
    cJSON_AddBoolToObject(fit, "converged", j->fi.converged);
    cJSON_AddBoolToObject(fit, "separation", j->fi.separation);
    if (j->fp.algo == PX_ALGO_LOGIT || j->fp.algo == PX_ALGO_POISSON) {
        cJSON_AddNumberToObject(fit, "deviance", j->fi.deviance);
        cJSON_AddNumberToObject(fit, "null_deviance", j->fi.null_deviance);
    } else {
        cJSON_AddNumberToObject(fit, "svm_rows_used", (double)j->fi.svm.n_used);
        cJSON_AddNumberToObject(fit, "support_vectors", (double)j->fi.svm.n_sv);
        cJSON_AddNumberToObject(fit, "C", j->fi.svm.C);
        cJSON_AddNumberToObject(fit, "gamma", j->fi.svm.gamma);
        cJSON_AddNumberToObject(fit, "cv_score", j->fi.svm.cv_score);
    }
    cJSON_AddStringToObject(fit, "warning", j->fi.warning);
    /* the gates travel in the signed metrics.json; registration copies them to the row */
    cJSON *gates = j->gates_json ? cJSON_Parse(j->gates_json) : NULL;
    cJSON_AddItemToObject(root, "gates", gates ? gates : cJSON_CreateNull());
    j->metrics_json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return j->metrics_json ? 0 : px_err_set(e, PX_ENOMEM, "out of memory");
}

static int build_split(reg_job *j, const px_train_params *p, px_err *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return px_err_set(e, PX_ENOMEM, "out of memory");
    cJSON_AddStringToObject(o, "method", j->method);
    cJSON_AddStringToObject(o, "time_column", j->d->time_col);
    char day[11] = "";
    if (j->cutoff) date_str(j->cutoff, day);
    cJSON_AddStringToObject(o, "holdout_from", day);
    cJSON_AddNumberToObject(o, "holdout_time_share", p->holdout_time_share);
    cJSON_AddNumberToObject(o, "holdout_patient_share", p->holdout_patient_share);
    cJSON_AddNumberToObject(o, "rows", (double)j->d->n);
    cJSON_AddNumberToObject(o, "train_rows", (double)j->ntrain);
    cJSON_AddNumberToObject(o, "holdout_rows", (double)j->ntest);
    cJSON_AddNumberToObject(o, "dropped_missing_label", (double)j->d->dropped_missing_label);
    if (j->binary) {
        double ev_tr = 0, ev_te = 0;
        for (size_t k = 0; k < j->ntrain; k++) ev_tr += j->d->y[j->train[k]];
        for (size_t k = 0; k < j->ntest; k++) ev_te += j->d->y[j->test[k]];
        cJSON_AddNumberToObject(o, "train_events", ev_tr);
        cJSON_AddNumberToObject(o, "holdout_events", ev_te);
    }
    j->split_json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return j->split_json ? 0 : px_err_set(e, PX_ENOMEM, "out of memory");
}

static int build_params(reg_job *j, px_err *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return px_err_set(e, PX_ENOMEM, "out of memory");
    cJSON_AddStringToObject(o, "algo", px_algo_name(j->fp.algo));
    /* the model's own inputs: when retraining, the champion's columns may have been loaded beside them */
    cJSON *f = cJSON_AddArrayToObject(o, "features");
    for (size_t k = 0; k < px_model_nfeatures(j->m); k++)
        cJSON_AddItemToArray(f, cJSON_CreateString(px_model_feature(j->m, k)->name));
    if (j->fp.algo == PX_ALGO_LOGIT || j->fp.algo == PX_ALGO_POISSON) {
        cJSON_AddNumberToObject(o, "l2", j->fp.glm.l2);
        cJSON_AddNumberToObject(o, "max_iter", j->fp.glm.max_iter);
        cJSON_AddNumberToObject(o, "tol", j->fp.glm.tol);
    } else {
        cJSON_AddNumberToObject(o, "C", j->fp.svm.C);
        cJSON_AddNumberToObject(o, "gamma", j->fp.svm.gamma);
        cJSON_AddNumberToObject(o, "epsilon", j->fp.svm.epsilon);
        cJSON_AddNumberToObject(o, "cv_folds", j->fp.svm.cv_folds);
        cJSON_AddNumberToObject(o, "max_rows", (double)j->fp.svm.max_rows);
        cJSON_AddNumberToObject(o, "seed", (double)j->fp.svm.seed);
    }
    cJSON *g = cJSON_AddObjectToObject(o, "gates");
    if (g) {
        cJSON_AddNumberToObject(g, "min_epp", j->gp.min_epp);
        cJSON_AddNumberToObject(g, "min_holdout_events", j->gp.min_holdout_events);
        cJSON_AddNumberToObject(g, "min_auc_lo", j->gp.min_auc_lo);
        cJSON_AddNumberToObject(g, "slope_lo", j->gp.slope_lo);
        cJSON_AddNumberToObject(g, "slope_hi", j->gp.slope_hi);
        if (isfinite(j->gp.max_value)) cJSON_AddNumberToObject(g, "max_value", j->gp.max_value);
        cJSON_AddNumberToObject(g, "max_rmse_over_mean", j->gp.max_rmse_over_mean);
    }
    j->params_json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return j->params_json ? 0 : px_err_set(e, PX_ENOMEM, "out of memory");
}

static int build_calibration(reg_job *j, px_err *e)
{
    px_buf b = {0};
    if (!j->binary) {
        j->calibration_csv = strdup("");
        return j->calibration_csv ? 0 : px_err_set(e, PX_ENOMEM, "out of memory");
    }
    px_buf_adds(&b, "group,n,events,mean_predicted,observed_rate\n");
    for (size_t g = 0; g < j->eb.ngroups; g++)
        px_buf_printf(&b, "%zu,%zu,%.0f,%.6f,%.6f\n", g + 1, j->eb.group[g].n, j->eb.group[g].events,
                      j->eb.group[g].mean_pred, j->eb.group[g].obs_rate);
    if (px_buf_addc(&b, '\0') != 0) {
        px_buf_release(&b);
        return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    j->calibration_csv = b.data;
    return 0;
}

/* The etl batches present now: the data vintage a version was trained on. */
static int load_batches(PGconn *c, reg_job *j, px_err *e)
{
    /* px_db_value: no fixed buffer to cut a long history short */
    int rc = px_db_value(c, e, "cannot read etl.batches", &j->batches_json,
                         "SELECT coalesce(json_agg(batch_id ORDER BY batch_id), '[]')::text FROM etl.batches", 0, NULL);
    if (rc == 0 && !j->batches_json) rc = px_err_set(e, PX_EDB, "cannot read etl.batches");
    return rc;
}

/* a followed by the names of b not in a, NULL-terminated; the strings are not copied. Caller frees the array. */
static const char **feature_list_union(const char *const *a, const char *const *b)
{
    size_t na = 0, nb = 0;
    while (a && a[na]) na++;
    while (b && b[nb]) nb++;
    const char **out = calloc(na + nb + 1, sizeof *out);
    if (!out) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < na; i++) out[n++] = a[i];
    for (size_t i = 0; i < nb; i++) {
        int seen = 0;
        for (size_t k = 0; k < n && !seen; k++) seen = strcmp(out[k], b[i]) == 0;
        if (!seen) out[n++] = b[i];
    }
    return out;
}

/* A copy of d with only the named columns, in that order (fingerprint recomputed).
 * NULL on error (a column missing, out of memory). Caller frees. */
static px_dataset *dataset_subset(const px_dataset *d, const char *const *cols, px_err *e)
{
    size_t p = 0;
    while (cols[p]) p++;
    px_dataset *s = px_dataset_new(d->n, p);
    if (!s) goto oom;
    for (size_t k = 0; k < p; k++) {
        int col = px_dataset_col(d, cols[k]);
        if (col < 0) {
            px_err_set(e, PX_EINVAL, "feature '%s' is not in '%s'", cols[k], d->table);
            px_dataset_free(s);
            return NULL;
        }
        if (!(s->names[k] = strdup(cols[k]))) goto oom;
        s->kind[k] = d->kind[col];
        if (d->nlevels[col]) {
            if (!(s->levels[k] = calloc(d->nlevels[col], sizeof(char *)))) goto oom;
            s->nlevels[k] = d->nlevels[col];
            for (size_t l = 0; l < d->nlevels[col]; l++)
                if (!(s->levels[k][l] = strdup(d->levels[col][l]))) goto oom;
        }
        for (size_t i = 0; i < d->n; i++) s->x[i * p + k] = d->x[i * d->p + (size_t)col];
    }
    memcpy(s->y, d->y, d->n * sizeof *s->y);
    memcpy(s->day, d->day, d->n * sizeof *s->day);
    memcpy(s->group, d->group, d->n * sizeof *s->group);
    memcpy(s->sex, d->sex, d->n);
    memcpy(s->age, d->age, d->n * sizeof *s->age);
    s->dropped_missing_label = d->dropped_missing_label;
    memcpy(s->table, d->table, sizeof s->table);
    memcpy(s->label, d->label, sizeof s->label);
    memcpy(s->time_col, d->time_col, sizeof s->time_col);
    memcpy(s->definition_hash, d->definition_hash, sizeof s->definition_hash);
    px_dataset_fingerprint(s);
    return s;
oom:
    px_dataset_free(s);
    px_err_set(e, PX_ENOMEM, "out of memory copying a dataset");
    return NULL;
}

/* The evaluation of a holdout with a single class: counts and Brier score, every
 * discrimination and calibration statistic NAN (written as null), and a warning. */
static void holdout_one_class(reg_job *j, const double *y, size_t events)
{
    memset(&j->eb, 0, sizeof j->eb);
    j->eb.n = j->ntest;
    j->eb.events = events;
    double se = 0;
    for (size_t k = 0; k < j->ntest; k++) se += (j->test_scores[k] - y[k]) * (j->test_scores[k] - y[k]);
    j->eb.brier = se / (double)j->ntest;
    j->eb.auc = j->eb.auc_se = j->eb.auc_lo = j->eb.auc_hi = j->eb.auprc = NAN;
    j->eb.cal_intercept = j->eb.cal_slope = j->eb.hl_chi2 = j->eb.hl_p = NAN;
    for (int t = 0; t < PX_EVAL_THRESHOLDS; t++) j->eb.thr[t].threshold = NAN;
    snprintf(j->fi.warning, sizeof j->fi.warning, "the holdout has %s: AUC and calibration are undefined",
             events ? "only events" : "no events");
}

/* The quality gates on the fitted model, its training predictions and the holdout
 * evaluation: fills j->gates_json, gates_passed and gates_summary. */
static int job_gates(reg_job *j, const px_train_params *p, const double *train_scores, px_err *e)
{
    px_gate_params gp = j->gp;
    px_gate_input in;
    memset(&in, 0, sizeof in);
    in.binary = j->binary;
    in.glm = j->fp.algo == PX_ALGO_LOGIT || j->fp.algo == PX_ALGO_POISSON;
    in.n_train = j->ntrain;
    in.n_test = j->ntest;
    for (size_t k = 0; k < j->ntrain; k++) in.train_events += j->d->y[j->train[k]] == 1.0;
    for (size_t k = 0; k < j->ntest; k++) in.test_events += j->d->y[j->test[k]] == 1.0;
    /* candidate parameters: every input's design columns; one for an input dropped as constant */
    for (size_t k = 0; k < px_model_nfeatures(j->m); k++) {
        const px_feature_info *f = px_model_feature(j->m, k);
        in.n_params += f->dropped ? 1 : f->ncols;
    }
    in.separation = j->fi.separation;
    in.converged = j->fi.converged;
    in.auc_lo = j->binary ? j->eb.auc_lo : NAN;
    in.cal_slope = j->binary ? j->eb.cal_slope : NAN;
    if (!j->binary) {
        /* the mean-only model: the training rows' mean, scored on the holdout */
        double mean = 0, sse = 0;
        for (size_t k = 0; k < j->ntrain; k++) mean += j->d->y[j->train[k]];
        mean /= (double)j->ntrain;
        for (size_t k = 0; k < j->ntest; k++) {
            double r = j->d->y[j->test[k]] - mean;
            sse += r * r;
        }
        in.rmse = j->er.rmse;
        in.rmse_mean = sqrt(sse / (double)j->ntest);
    }
    in.train_pred = train_scores;
    in.n_pred = j->ntrain;
    in.accepted = p->accept_failed_gates;
    if (!(j->gates_json = px_gate_eval(&gp, &in, &j->gates_passed, j->gates_summary, sizeof j->gates_summary)))
        return px_err_set(e, PX_ENOMEM, "out of memory");
    return 0;
}

/* Loads the dataset, splits, fits and evaluates. extra_features: columns to load
 * beside the model's own (the champion's, to score it on the same rows). */
int reg_job_run(PGconn *c, const px_config *cfg, const px_train_params *p, const char *const *extra_features,
                   reg_job *j, px_err *e)
{
    (void)cfg;
    int rc = 0;
    double t0 = px_mono_s();
    /* a name, table or label cut short by its buffer would train or register something else */
    if (!p->model || strlen(p->model) >= sizeof j->name)
        return px_err_set(e, PX_EINVAL, "model name missing or longer than %zu characters", sizeof j->name - 1);
    if ((p->table && strlen(p->table) >= sizeof j->table) || (p->label && strlen(p->label) >= sizeof j->label))
        return px_err_set(e, PX_EINVAL, "table or label name of '%s' too long", p->model);
    snprintf(j->name, sizeof j->name, "%s", p->model);
    j->set = p->table ? NULL : px_feat_set_find(p->model);
    if (!p->table && !j->set)
        return px_err_set(e, PX_EINVAL, "'%s' is not a built-in model (readmission, mortality, los)", p->model);
    if (j->set && p->table == NULL && p->build_features) {
        px_feat_build_result br;
        if ((rc = px_feat_build(c, j->set->name, &br, e)) != 0) return rc;
        px_log(PX_LOG_INFO, "features.%s: %lld rows (%s)", j->set->name, br.rows, br.unchanged ? "unchanged" : "built");
    }
    snprintf(j->table, sizeof j->table, "%s", p->table ? p->table : j->set->table);
    snprintf(j->label, sizeof j->label, "%s", p->label ? p->label : j->set ? j->set->label : "");
    if (!j->label[0]) return px_err_set(e, PX_EINVAL, "no label column given for table '%s'", j->table);

    const char *const *own = p->features ? p->features : j->set ? j->set->default_features : NULL;
    const char **feats = NULL;
    px_dataset_params dp = px_dataset_default_params();
    dp.table = j->table;
    dp.label = j->label;
    if (!p->no_hier) dp.extra = reg_hier_unit_columns(c, j->table);
    if (own && extra_features) {
        if (!(feats = feature_list_union(own, extra_features))) return px_err_set(e, PX_ENOMEM, "out of memory");
        dp.features = feats;
    } else {
        dp.features = own;
    }
    j->d = px_dataset_load(c, &dp, e);
    free(feats);
    if (!j->d) return e->code ? e->code : PX_EDB;
    if (j->d->n == 0) return px_err_set(e, PX_EINVAL, "table '%s' has no rows with a label", j->table);

    j->binary = 1;
    for (size_t i = 0; i < j->d->n && j->binary; i++) j->binary = j->d->y[i] == 0.0 || j->d->y[i] == 1.0;
    px_algo algo = p->algo_given ? p->algo : j->binary ? PX_ALGO_LOGIT : PX_ALGO_POISSON;
    if (j->binary != (algo == PX_ALGO_LOGIT || algo == PX_ALGO_SVC))
        return px_err_set(e, PX_EINVAL, "algorithm '%s' does not fit the label '%s' (%s)", px_algo_name(algo), j->label,
                          j->binary ? "a 0/1 outcome: use logit or svc" : "a numeric outcome: use poisson or svr");
    j->fp = px_fit_default_params(algo);
    j->fp.glm.l2 = p->l2;
    if (p->svm_max_rows) j->fp.svm.max_rows = p->svm_max_rows;
    if (j->set && strcmp(j->set->name, "los") == 0) j->fp.max_value = PX_MODEL_LOS_MAX_DAYS;
    j->gp = p->gates;
    if (j->fp.max_value < j->gp.max_value) j->gp.max_value = j->fp.max_value; /* LOS: 365 days */

    if ((rc = split_rows(j, p, e)) != 0) return rc;
    /* the model sees only its own columns (the champion's may have been loaded beside them) */
    if (extra_features && own) {
        px_dataset *sub = dataset_subset(j->d, own, e);
        if (!sub) return e->code ? e->code : PX_ENOMEM;
        j->m = px_model_fit(sub, j->train, j->ntrain, &j->fp, &j->fi, e);
        /* the version's identity is its own training data, whatever else was loaded */
        memcpy(j->d->fingerprint, sub->fingerprint, sizeof sub->fingerprint);
        px_dataset_free(sub);
        if (!j->m) return e->code ? e->code : PX_EINVAL;
    }
    if (!j->m) {
        j->m = px_model_fit(j->d, j->train, j->ntrain, &j->fp, &j->fi, e);
        if (!j->m) return e->code ? e->code : PX_EINVAL;
    }
    if (!(j->test_scores = malloc(j->ntest * sizeof *j->test_scores))) return px_err_set(e, PX_ENOMEM, "out of memory");
    if ((rc = px_model_score(j->m, j->d, j->test, j->ntest, j->test_scores, e)) != 0) return rc;
    double *y = malloc(j->ntest * sizeof *y);
    if (!y) return px_err_set(e, PX_ENOMEM, "out of memory");
    for (size_t k = 0; k < j->ntest; k++) y[k] = j->d->y[j->test[k]];
    if (j->binary) {
        size_t events = 0;
        for (size_t k = 0; k < j->ntest; k++) events += y[k] == 1.0;
        if (events == 0 || events == j->ntest) {
            /* one class only (a small source, few deaths): discrimination is undefined,
             * the rest is still worth recording; the gates then keep the champion */
            holdout_one_class(j, y, events);
            rc = 0;
        } else {
            rc = px_eval_binary(y, j->test_scores, j->ntest, &j->eb, e);
        }
    } else {
        rc = px_eval_regression(y, j->test_scores, j->ntest, &j->er, e);
    }
    free(y);
    if (rc != 0) return rc;

    double *train_scores = malloc(j->ntrain * sizeof *train_scores);
    if (!train_scores) return px_err_set(e, PX_ENOMEM, "out of memory");
    if ((rc = px_model_score(j->m, j->d, j->train, j->ntrain, train_scores, e)) == 0)
        if (!(j->reference_json = px_reg_reference_json(j->m, j->d, j->train, j->ntrain, train_scores, e)))
            rc = e->code ? e->code : PX_ENOMEM;
    if (rc == 0) rc = job_gates(j, p, train_scores, e);
    free(train_scores);
    if (rc != 0) return rc;
    if ((rc = build_metrics(j, e)) || (rc = build_split(j, p, e)) || (rc = build_params(j, e)) ||
        (rc = build_calibration(j, e)) || (rc = load_batches(c, j, e)))
        return rc;
    if (!p->no_hier) {
        /* The hierarchical fit and its bootstrap refits are most of a training run's time.
         * A version with the same data and parameters already exists (a scheduled retrain
         * of unchanged data): nothing will be registered, so do not fit it again. */
        int same = 0;
        if ((rc = reg_find_same(c, j->name, j->d->fingerprint, px_algo_name(j->fp.algo), j->params_json,
                                j->d->definition_hash, &same, e)) != 0)
            return rc;
        if (same) {
            snprintf(j->hier_note, sizeof j->hier_note,
                     "hierarchical model not refitted: v%d was trained on the same data with the same model"
                     " parameters (the hierarchical settings are not part of a version's identity)", same);
        } else {
            j->hier_json = reg_hier_fit_json(j->m, j->d, &p->hier, j->hier_note, sizeof j->hier_note);
            px_log(j->hier_json ? PX_LOG_INFO : PX_LOG_WARN, "%s: %s", j->name, j->hier_note);
        }
    }
    j->fi.seconds = px_mono_s() - t0;
    return 0;
}

int reg_job_register(PGconn *c, const px_config *cfg, reg_job *j, int *version, px_err *e)
{
    px_reg_new v;
    memset(&v, 0, sizeof v);
    v.name = j->name;
    v.algo = px_algo_name(j->fp.algo);
    v.task = j->binary ? "binary" : "regression";
    v.params_json = j->params_json;
    v.feature_set = j->set ? j->set->name : "";
    v.feature_table = j->table;
    v.label = j->label;
    v.definition_hash = j->d->definition_hash;
    v.fingerprint = j->d->fingerprint;
    v.split_json = j->split_json;
    v.metrics_json = j->metrics_json;
    v.calibration_csv = j->calibration_csv;
    v.reference_json = j->reference_json;
    v.model = j->m;
    v.source_batches = j->batches_json;
    v.hierarchical_json = j->hier_json;
    return px_reg_register(c, cfg, &v, version, e);
}

static void fill_result(const reg_job *j, int version, int created, px_train_result *r)
{
    memset(r, 0, sizeof *r);
    r->version = version;
    r->created = created;
    r->n_train = j->ntrain;
    r->n_test = j->ntest;
    r->gates_passed = j->gates_passed;
    snprintf(r->gates_summary, sizeof r->gates_summary, "%s", j->gates_summary);
    cJSON *g = j->gates_json ? cJSON_Parse(j->gates_json) : NULL;
    const cJSON *failed = cJSON_GetObjectItemCaseSensitive(g, "failed");
    size_t used = 0;
    for (const cJSON *f = failed ? failed->child : NULL; f && used < sizeof r->gates_failed; f = f->next)
        if (cJSON_IsString(f)) {
            int n = snprintf(r->gates_failed + used, sizeof r->gates_failed - used, "%s%s", used ? "," : "",
                             f->valuestring);
            if (n > 0) used += (size_t)n;
        }
    cJSON_Delete(g);
    if (j->binary && isnan(j->eb.auc)) {
        snprintf(r->summary, sizeof r->summary, "%s v%d (%s): %zu training rows, %zu holdout rows; %s", j->name,
                 version, px_algo_name(j->fp.algo), j->ntrain, j->ntest, j->fi.warning);
        r->auc = r->auc_lo = r->auc_hi = NAN;
    } else if (j->binary) {
        r->auc = j->eb.auc;
        r->auc_lo = j->eb.auc_lo;
        r->auc_hi = j->eb.auc_hi;
        snprintf(r->summary, sizeof r->summary,
                 "%s v%d (%s): %zu training rows, %zu holdout rows; AUC %.3f (95%% CI %.3f-%.3f), Brier %.4f, "
                 "calibration slope %.2f",
                 j->name, version, px_algo_name(j->fp.algo), j->ntrain, j->ntest, j->eb.auc, j->eb.auc_lo,
                 j->eb.auc_hi, j->eb.brier, j->eb.cal_slope);
    } else {
        r->rmse = j->er.rmse;
        r->r2 = j->er.r2;
        snprintf(r->summary, sizeof r->summary,
                 "%s v%d (%s): %zu training rows, %zu holdout rows; MAE %.3f, RMSE %.3f, R2 %.3f", j->name, version,
                 px_algo_name(j->fp.algo), j->ntrain, j->ntest, j->er.mae, j->er.rmse, j->er.r2);
    }
}

int reg_record_decision(PGconn *c, const char *name, int candidate, int champion, const char *decision,
                           const char *gates_json, const char *metrics_json, const char *message, px_err *e)
{
    char cand[16], champ[16];
    snprintf(cand, sizeof cand, "%d", candidate);
    snprintf(champ, sizeof champ, "%d", champion);
    const char *params[7] = {name, candidate ? cand : NULL, champion ? champ : NULL, decision, gates_json,
                             metrics_json, message};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO registry.decisions (name, candidate_version, champion_version, decision,"
                               " gates, metrics, message) VALUES ($1, $2, $3, $4, coalesce($5::jsonb, '{}'),"
                               " coalesce($6::jsonb, '{}'), $7)",
                               7, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        px_err_set(e, PX_EDB, "cannot record the retraining decision for '%s'", name);
        px_err_detail(e, "%s", PQresultErrorMessage(r));
        px_log(PX_LOG_ERROR, "cannot record the retraining decision for '%s': %s", name, PQresultErrorMessage(r));
    }
    PQclear(r);
    if (ok) {
        const char *ap[2] = {name, message};
        r = PQexecParams(c,
                         "INSERT INTO audit.events (action, object, detail) VALUES ('registry.retrain', $1,"
                         " jsonb_build_object('message', $2::text))",
                         2, NULL, ap, NULL, NULL, 0);
        PQclear(r);
    }
    return ok ? 0 : PX_EDB;
}

/* A model without a champion: the new version becomes it if it passed its gates,
 * or failed them with --accept-failed-gates (recorded in registry.decisions). */
static int train_first_champion(PGconn *c, const px_config *cfg, const reg_job *j, const px_train_params *p, int version, px_train_result *r,
                                px_err *e)
{
    int rc;
    if (j->gates_passed) {
        if ((rc = px_reg_promote(c, cfg, j->name, version, "champion", "first version of the model", e)) == 0)
            r->champion = 1;
        return rc;
    }
    if (!p->accept_failed_gates) return 0;
    char msg[1400];
    snprintf(msg, sizeof msg, "v%d failed its quality gates and was accepted with --accept-failed-gates: %s", version,
             j->gates_summary);
    if ((rc = px_reg_promote(c, cfg, j->name, version, "champion", msg, e)) != 0) return rc;
    r->champion = 1;
    r->gates_accepted = 1;
    return reg_record_decision(c, j->name, version, 0, "promoted", j->gates_json, NULL, msg, e);
}

int px_train(PGconn *c, const px_config *cfg, const px_train_params *p, px_train_result *r, px_err *e)
{
    reg_job j;
    memset(&j, 0, sizeof j);
    int version = 0, rc = reg_job_run(c, cfg, p, NULL, &j, e);
    if (rc == 0) {
        rc = reg_job_register(c, cfg, &j, &version, e);
        int created = rc == 0;
        if (rc == PX_ENOTHING) {
            px_err_clear(e);
            rc = 0;
        }
        if (rc == 0) {
            fill_result(&j, version, created, r);
            snprintf(r->hierarchical, sizeof r->hierarchical, "%s", j.hier_note);
            r->gates_accepted = !j.gates_passed && p->accept_failed_gates;
            if (!created && p->accept_failed_gates && !j.gates_passed)
                rc = px_reg_accept_gates(c, j.name, version, "prognos train (the version existed)", e);
        }
        if (rc == 0) {
            /* the first version of a model becomes its champion: serving and KPIs need one */
            int champ = 0;
            px_err e2 = {0};
            /* only a missing champion: a failed lookup must not promote anything */
            int rr = px_reg_resolve(c, j.name, "champion", &champ, &e2);
            if (rr != 0 && rr != PX_ENOTFOUND) {
                *e = e2;
                rc = rr;
            } else if (rr == PX_ENOTFOUND) {
                rc = train_first_champion(c, cfg, &j, p, version, r, e);
            } else {
                r->champion = champ == version;
            }
        }
    }
    reg_job_release(&j);
    return rc;
}

