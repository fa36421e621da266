/* model.c: a served model version: the model loaded through the registry's
 * verified path (signature and digest checked before a byte is parsed), its input
 * schema with the accepted range of every numeric input, risk bands from the
 * reference score distribution, and its drift monitor. Immutable once built (but
 * for the encounter lookup's slot, see predict.c); shared by reference count. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void model_destroy(void *p)
{
    srv_model *sm = p;
    px_model_free(sm->m);
    for (size_t j = 0; sm->f && j < sm->k; j++) free(sm->f[j].json_name);
    free(sm->f);
    srv_slot_release(&sm->lookup);
    free(sm->schema_json);
    free(sm);
}

/* The score at or below which `share` of the training rows fall, from the
 * reference's binned score distribution (edges are the upper bounds of bins).
 * NAN when there is no usable reference. */
static double score_cut(const cJSON *score, double share)
{
    const cJSON *edges = cJSON_GetObjectItemCaseSensitive(score, "edges");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(score, "counts");
    int ne = cJSON_GetArraySize(edges), nc = cJSON_GetArraySize(counts);
    if (!cJSON_IsArray(edges) || !cJSON_IsArray(counts) || ne < 1 || nc != ne + 1) return NAN;
    double total = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, counts) total += cJSON_IsNumber(x) ? x->valuedouble : 0;
    if (!(total > 0)) return NAN;
    /* the edge whose cumulative share is nearest the target: decile bins hold
     * 10% only up to ties and rounding */
    double cum = 0, best = NAN, gap = INFINITY;
    for (int b = 0; b < ne; b++) {
        const cJSON *c = cJSON_GetArrayItem(counts, b), *ed = cJSON_GetArrayItem(edges, b);
        if (!cJSON_IsNumber(c) || !cJSON_IsNumber(ed)) return NAN;
        cum += c->valuedouble;
        if (fabs(cum / total - share) < gap) {
            gap = fabs(cum / total - share);
            best = ed->valuedouble;
        }
    }
    return best;
}
/* Bands are relative to the population the model was trained on: "low" up to the
 * median training score, "medium" to the 80th percentile, "high" to the 90th,
 * "very_high" the top decile. A fixed probability would mean different things
 * for a 3% and a 20% outcome; without a reference, fixed cut-offs are used. */
const char *srv_band(const srv_model *sm, double v)
{
    if (!isfinite(v)) return "unknown";
    return v <= sm->band_cut[0] ? "low" : v <= sm->band_cut[1] ? "medium" : v <= sm->band_cut[2] ? "high" : "very_high";
}

static const cJSON *ref_feature(const cJSON *ref, const char *name)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(ref, "features"))
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0) return f;
    }
    return NULL;
}

/* A 0/1 flag: trained on exactly 0 and 1 (every reference edge is 0 or 1). */
static int is_flag(const px_feature_info *fi, const cJSON *rf)
{
    if (fi->min != 0 || fi->max != 1) return 0;
    const cJSON *edges = cJSON_GetObjectItemCaseSensitive(rf, "edges"), *x;
    if (!cJSON_IsArray(edges)) return 0;
    cJSON_ArrayForEach(x, edges) if (!cJSON_IsNumber(x) || (x->valuedouble != 0 && x->valuedouble != 1)) return 0;
    return 1;
}

static char *build_schema_json(const srv_model *sm)
{
    cJSON *o = cJSON_CreateObject(), *fs = cJSON_AddArrayToObject(o, "features");
    char *out = NULL;
    if (!o || !fs) goto done;
    for (size_t j = 0; j < sm->k; j++) {
        const srv_feat *f = &sm->f[j];
        cJSON *x = cJSON_CreateObject();
        if (!x) goto done;
        cJSON_AddItemToArray(fs, x);
        cJSON_AddStringToObject(x, "name", f->name);
        cJSON_AddStringToObject(x, "kind", f->numeric ? (f->flag ? "flag" : "numeric") : "categorical");
        if (f->numeric) {
            cJSON_AddNumberToObject(x, "training_min", f->info->min);
            cJSON_AddNumberToObject(x, "training_max", f->info->max);
            cJSON_AddNumberToObject(x, "accepted_min", f->lo);
            cJSON_AddNumberToObject(x, "accepted_max", f->hi);
        } else {
            cJSON *lv = cJSON_AddArrayToObject(x, "levels");
            for (size_t l = 0; lv && l < f->info->nlevels; l++)
                cJSON_AddItemToArray(lv, cJSON_CreateString(f->info->levels[l]));
            if (f->info->ref < f->info->nlevels) cJSON_AddStringToObject(x, "reference_level", f->info->levels[f->info->ref]);
        }
        cJSON_AddBoolToObject(x, "used", !f->info->dropped);
    }
    cJSON *bands = cJSON_AddObjectToObject(o, "bands");
    if (bands) {
        cJSON_AddNumberToObject(bands, "low_max", sm->band_cut[0]);
        cJSON_AddNumberToObject(bands, "medium_max", sm->band_cut[1]);
        cJSON_AddNumberToObject(bands, "high_max", sm->band_cut[2]);
    }
    out = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    return out;
}

int srv_feature_index(const srv_model *sm, const char *name, size_t n, size_t hint)
{
    if (hint < sm->k && sm->f[hint].namelen == n && memcmp(sm->f[hint].name, name, n) == 0) return (int)hint;
    for (size_t j = 0; j < sm->k; j++)
        if (sm->f[j].namelen == n && memcmp(sm->f[j].name, name, n) == 0) return (int)j;
    return -1;
}

void srv_model_derive(srv_model *sm)
{
    sm->least_instance_bytes = 2; /* {} */
    for (size_t j = 0; j < sm->k; j++)
        if (!sm->f[j].info->dropped) sm->least_instance_bytes += sm->f[j].namelen + 5; /* "name":0, */
}

const char *srv_contribution_scale(const srv_model *sm)
{
    switch (px_model_algo(sm->m)) {
    case PX_ALGO_LOGIT: return "log-odds";
    case PX_ALGO_POISSON: return "log";
    default: return "value";
    }
}

srv_model *srv_model_load(PGconn *c, const px_config *cfg, const char *name, int version, const char *algo,
                          const char *task, const char *feature_table, px_err *e)
{
    unsigned char *refbytes = NULL;
    size_t reflen = 0;
    cJSON *ref = NULL;
    srv_model *sm = calloc(1, sizeof *sm);
    if (!sm) {
        px_err_set(e, PX_ENOMEM, "out of memory loading model '%s' v%d", name, version);
        return NULL;
    }
    atomic_init(&sm->rc.refs, 1);
    sm->rc.destroy = model_destroy;
    srv_slot_init(&sm->lookup);
    snprintf(sm->name, sizeof sm->name, "%s", name);
    sm->version = version;
    snprintf(sm->algo, sizeof sm->algo, "%s", algo ? algo : "");
    snprintf(sm->task, sizeof sm->task, "%s", task ? task : "");
    snprintf(sm->feature_table, sizeof sm->feature_table, "%s", feature_table ? feature_table : "");
    /* the registry's load of a registered version: signature, every file's digest,
     * and the manifest's and model's digests recorded in registry.versions */
    if (!(sm->m = px_reg_load_version(c, cfg, name, version, "reference.json", &refbytes, &reflen, e))) goto fail;
    sm->k = px_model_nfeatures(sm->m);
    if (sm->k == 0 || sm->k > SRV_MAX_INPUTS) {
        px_err_set(e, PX_ECORRUPT, "cannot serve model '%s' v%d: %zu inputs", name, version, sm->k);
        goto fail;
    }
    /* the reference is optional for predictions (drift needs it) */
    if (refbytes) ref = cJSON_ParseWithLength((const char *)refbytes, reflen);
    if (!ref)
        px_log(PX_LOG_WARN, "serve: model '%s' v%d has no usable reference.json: %s", name, version,
               refbytes ? "it is not JSON" : "the manifest lists none");

    if (!(sm->f = calloc(sm->k, sizeof *sm->f))) {
        px_err_set(e, PX_ENOMEM, "out of memory loading model '%s' v%d", name, version);
        goto fail;
    }
    for (size_t j = 0; j < sm->k; j++) {
        srv_feat *f = &sm->f[j];
        f->info = px_model_feature(sm->m, j);
        f->name = f->info->name;
        f->namelen = strlen(f->name);
        f->numeric = f->info->kind == PX_COL_NUMERIC;
        px_buf jn = {0};
        if (px_buf_json_str(&jn, f->name, f->namelen) != 0) {
            px_buf_release(&jn);
            px_err_set(e, PX_ENOMEM, "out of memory loading model '%s' v%d", name, version);
            goto fail;
        }
        f->json_name = jn.data;
        f->json_namelen = jn.len;
        if (!f->numeric) continue;
        /* numbers outside the training range are extrapolation: accepted (and
         * flagged in the answer) up to a quarter of the range beyond either end, a
         * non-negative input never below 0; anything further is refused as out of range */
        double lo = f->info->min, hi = f->info->max, w = hi - lo;
        if (!isfinite(lo) || !isfinite(hi) || w < 0) lo = -INFINITY, hi = INFINITY, w = 0;
        f->lo = lo - w / 4;
        f->hi = hi + w / 4;
        if (lo >= 0 && f->lo < 0) f->lo = 0;
        if (ref && is_flag(f->info, ref_feature(ref, f->name))) {
            f->flag = 1;
            f->lo = 0;
            f->hi = 1;
        }
    }
    srv_model_derive(sm);
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(ref, "score");
    sm->band_cut[0] = score_cut(score, 0.5);
    sm->band_cut[1] = score_cut(score, 0.8);
    sm->band_cut[2] = score_cut(score, 0.9);
    if (isnan(sm->band_cut[0]) || isnan(sm->band_cut[1]) || isnan(sm->band_cut[2])) {
        sm->band_cut[0] = 0.1;
        sm->band_cut[1] = 0.2;
        sm->band_cut[2] = 0.3;
    }
    if (!(sm->schema_json = build_schema_json(sm))) {
        px_err_set(e, PX_ENOMEM, "out of memory loading model '%s' v%d", name, version);
        goto fail;
    }
    if (ref) {
        px_err de = {0};
        if (!(sm->drift = srv_drift_new(sm, ref, &de)))
            px_log(PX_LOG_WARN, "serve: model '%s' v%d: no drift monitoring: %s", name, version, de.msg);
    }
    snprintf(sm->version_header, sizeof sm->version_header, "%s/%d", sm->name, sm->version);
    snprintf(sm->version_json, sizeof sm->version_json, "%d", sm->version);
    sm->loaded_at_us = srv_wall_us();
    cJSON_Delete(ref);
    free(refbytes);
    return sm;
fail:
    cJSON_Delete(ref);
    free(refbytes);
    model_destroy(sm);
    return NULL;
}
