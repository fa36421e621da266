/* predict.c: POST /v1/models/{model}/predict.
 *
 * Order of work, cheapest refusal first: model served?, JSON depth, parse,
 * shape, batch size, every field of every instance against the schema
 * (missing, unknown, duplicate, wrong type, out of range: 400 naming the field
 * as instances[i].name), encounter lookups, scoring, the audit record (a full
 * audit queue refuses the answer), drift counts, the answer. An instance given
 * as {"encounter_id": "..."} is pseudonymized with the installation key exactly
 * as the ETL does and looked up in the model's feature table; the plaintext is
 * never logged, stored or echoed, and the body holding it is wiped on completion. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLAG_IMPUTED SRV_FLAG_IMPUTED
#define FLAG_EXTRAPOLATED SRV_FLAG_EXTRAPOLATED
#define FLAG_UNKNOWN_LEVEL SRV_FLAG_UNKNOWN_LEVEL

static int find_slot(px_server *s, const char *name)
{
    int n = atomic_load(&s->nmodels);
    for (int i = 0; i < n; i++)
        if (strcmp(s->names[i], name) == 0) return i;
    return -1;
}

int srv_is_encounter_key(const char *k)
{
    return k && k[0] == 'e' && k[1] == 'n' && strcmp(k, "encounter_id") == 0;
}

/* The instance's encounter_id member, or NULL (as cJSON_GetObjectItemCaseSensitive). */
static const cJSON *encounter_member(const cJSON *inst)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, inst)
    {
        if (srv_is_encounter_key(v->string)) return v;
    }
    return NULL;
}

/* "a, b, c" of a categorical input's levels, cut to fit. */
static void levels_list(const px_feature_info *fi, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t l = 0; l < fi->nlevels && o + 8 < n; l++) {
        int w = snprintf(out + o, n - o, "%s%s", l ? ", " : "", fi->levels[l]);
        if (w < 0 || (size_t)w >= n - o) {
            snprintf(out + o, n - o, ", ...");
            break;
        }
        o += (size_t)w;
    }
}

/* Validates one value of instance i for feature j into *x. 0 or the status written. */
unsigned srv_check_value(srv_req *r, size_t i, const srv_feat *f, const cJSON *v, double *x, unsigned char *flags)
{
    if (cJSON_IsNull(v)) { /* explicitly unknown: imputed by the training mean / reference level */
        *x = NAN;
        *flags |= FLAG_IMPUTED;
        return 0;
    }
    char field[128];
#define FIELD                                                                                              \
    (srv_route_is_v2_infer(r->route) ? snprintf(field, sizeof field, "inputs.%s.data[%zu]", f->name, i)        \
                                    : snprintf(field, sizeof field, "instances[%zu].%s", i, f->name),      \
     field)
    if (f->numeric) {
        double d;
        if (cJSON_IsNumber(v)) d = v->valuedouble;
        else if (cJSON_IsBool(v) && f->flag) d = cJSON_IsTrue(v) ? 1 : 0;
        else return srv_error(r, 400, "wrong_type", FIELD, "%s must be a number%s", f->name, f->flag ? " (0 or 1)" : "");
        if (!isfinite(d)) return srv_error(r, 400, "invalid_value", FIELD, "%s must be a finite number", f->name);
        if (f->flag && d != 0 && d != 1) return srv_error(r, 400, "out_of_range", FIELD, "%s is a flag: 0 or 1", f->name);
        if (d < f->lo || d > f->hi)
            return srv_error(r, 400, "out_of_range", FIELD,
                             "%s is outside the accepted range [%g, %g] (training range [%g, %g])", f->name, f->lo,
                             f->hi, f->info->min, f->info->max);
        if (d < f->info->min || d > f->info->max) *flags |= FLAG_EXTRAPOLATED;
        *x = d;
        return 0;
    }
    if (!cJSON_IsString(v)) return srv_error(r, 400, "wrong_type", FIELD, "%s must be a string", f->name);
    size_t l = px_model_level_index(f->info, v->valuestring, strlen(v->valuestring));
    if (l == (size_t)-1) {
        char lv[300];
        levels_list(f->info, lv, sizeof lv);
        return srv_error(r, 400, "unknown_level", FIELD, "%s must be one of: %s", f->name, lv);
    }
    *x = (double)l;
    return 0;
#undef FIELD
}

static unsigned check_instance(srv_req *r, size_t i, const cJSON *inst, double *raw, unsigned char *flags,
                               unsigned char *seen)
{
    const srv_model *sm = r->sm;
    char field[160];
    memset(seen, 0, sm->k);
    size_t pos = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, inst)
    {
        int j = v->string ? srv_feature_index(sm, v->string, strlen(v->string), pos) : -1;
        pos++;
        if (j < 0) {
            snprintf(field, sizeof field, "instances[%zu].%.64s", i, v->string ? v->string : "");
            return srv_error(r, 400, "unknown_field", field, "'%.64s' is not an input of model '%s' v%d",
                             v->string ? v->string : "", sm->name, sm->version);
        }
        if (seen[j]) {
            snprintf(field, sizeof field, "instances[%zu].%s", i, sm->f[j].name);
            return srv_error(r, 400, "duplicate_field", field, "%s is given twice", sm->f[j].name);
        }
        seen[j] = 1;
        unsigned st = srv_check_value(r, i, &sm->f[j], v, &raw[j], &flags[j]);
        if (st) return st;
    }
    for (size_t j = 0; j < sm->k; j++) {
        if (seen[j]) continue;
        if (sm->f[j].info->dropped) { /* constant in training: unused, so optional */
            raw[j] = NAN;
            continue;
        }
        snprintf(field, sizeof field, "instances[%zu].%s", i, sm->f[j].name);
        return srv_error(r, 400, "missing_field", field, "%s is required (null if unknown)", sm->f[j].name);
    }
    return 0;
}

/* Fills the pseudonyms of the instances given by encounter id (r->pseudo) from
 * the body's instances array. 0, or 503 when out of memory. */
static unsigned pseudonymize(srv_req *r, const cJSON *arr, size_t n)
{
    char (*pseudo)[33] = r->pseudo = calloc(n, sizeof *pseudo);
    if (!pseudo) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    size_t i = 0;
    const cJSON *inst;
    cJSON_ArrayForEach(inst, arr)
    {
        if (r->from_encounter[i]) {
            const cJSON *id = encounter_member(inst);
            px_pseudo_id(r->s->pseudo, PX_ID_ENCOUNTER, id->valuestring, strlen(id->valuestring), pseudo[i]);
        }
        i++;
    }
    return 0;
}

/* The encounter lookup's reader fields: encounter_id as a uuid, then the model's
 * inputs as px_feat_table_field reads them for training (numbers in their native
 * binary form, categories as text), over the model's feature table. Built from
 * pg_catalog on first use and kept in the model's slot; dropped when a lookup
 * through it fails, so a table altered or dropped later is looked up afresh. */
typedef struct srv_lookup {
    srv_rc rc;
    px_feat_field *f;   /* k + 1 */
    size_t nf;
    char *from;         /* FROM <table> f WHERE f.encounter_id = ANY ($1::uuid[]) */
} srv_lookup;

static void lookup_destroy(void *p)
{
    srv_lookup *l = p;
    px_feat_fields_release(l->f, l->nf);
    free(l->f);
    free(l->from);
    free(l);
}

static srv_lookup *lookup_build(PGconn *c, const srv_model *sm, px_err *e)
{
    srv_lookup *l = calloc(1, sizeof *l);
    px_feat_table *t = NULL;
    px_buf from = {0};
    int rc = 0;
    if (!l || !(l->f = calloc(sm->k + 1, sizeof *l->f))) {
        free(l);
        px_err_set(e, PX_ENOMEM, "out of memory");
        return NULL;
    }
    atomic_init(&l->rc.refs, 1);
    l->rc.destroy = lookup_destroy;
    l->nf = sm->k + 1;
    if (!(t = px_feat_table_open(c, sm->feature_table, e))) goto fail;
    if (px_feat_table_index(t, "encounter_id") < 0) {
        px_err_set(e, PX_ENOTFOUND, "table '%s' has no column encounter_id", px_feat_table_name(t));
        goto fail;
    }
    rc = px_feat_field_set(&l->f[0], "(f.encounter_id)::uuid", PX_WIRE_UUID, e);
    for (size_t j = 0; j < sm->k && rc == 0; j++)
        rc = px_feat_table_field(c, t, "f", sm->f[j].name, sm->f[j].info->kind == PX_COL_CATEGORICAL, &l->f[j + 1], e);
    if (rc) goto fail;
    if (px_buf_printf(&from, "FROM %s f WHERE f.encounter_id = ANY ($1::uuid[])", px_feat_table_quoted(t)) != 0) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto fail;
    }
    l->from = from.data;
    px_feat_table_free(t);
    return l;
fail:
    px_buf_release(&from);
    px_feat_table_free(t);
    srv_release(l);
    return NULL;
}

/* The rows of one lookup, matched to the instances that asked for them. */
typedef struct enc_scan {
    const srv_model *sm;
    size_t n;
    const int *from_encounter;
    const unsigned char (*id)[16];   /* n: the pseudonyms as uuid bytes */
    unsigned char *found;            /* n */
    double *raw;                     /* n * k */
    unsigned char *flags;            /* n * k */
} enc_scan;

static int enc_row(const px_feat_row *row, void *arg, px_err *e)
{
    enc_scan *s = arg;
    const srv_model *sm = s->sm;
    size_t k = sm->k;
    (void)e;
    if (row->len[0] != 16) return 0; /* a NULL encounter_id matches nothing */
    for (size_t i = 0; i < s->n; i++) {
        if (!s->from_encounter[i] || s->found[i] || memcmp(s->id[i], row->raw[0], 16) != 0) continue;
        double *raw = s->raw + i * k;
        unsigned char *flags = s->flags + i * k;
        /* the encoder every consumer uses; then what the answer reports of each input */
        px_model_raw_row(sm->m, row->num + 1, row->text + 1, raw);
        for (size_t j = 0; j < k; j++) {
            const srv_feat *f = &sm->f[j];
            if (f->numeric) {
                if (!isfinite(raw[j])) { /* NULL, or NaN / infinity stored in a column: imputed */
                    raw[j] = NAN;
                    flags[j] |= FLAG_IMPUTED;
                } else if (raw[j] < f->info->min || raw[j] > f->info->max)
                    flags[j] |= FLAG_EXTRAPOLATED;
            } else if (isnan(raw[j])) /* unseen: scored as the reference level */
                flags[j] |= row->text[j + 1] ? FLAG_UNKNOWN_LEVEL : FLAG_IMPUTED;
        }
        s->found[i] = 1;
    }
    return 0;
}

static int hex_nibble(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10; }

unsigned srv_lookup_encounters(srv_req *r, size_t n, size_t n_enc, const char *what)
{
    px_server *s = r->s;
    const srv_model *sm = r->sm;
    char (*pseudo)[33] = r->pseudo;
    px_buf *lit = &r->scratch;
    srv_lookup *l = NULL;
    PGconn *c = NULL;
    unsigned st = 0;
    int broken = 0;
    size_t i, first = 1;
    enc_scan es = {sm, n, r->from_encounter, NULL, NULL, r->raw, r->flags};
    unsigned char (*id)[16] = srv_arena_alloc(&r->arena, n * 16, 0);
    es.id = (const unsigned char (*)[16])id;
    es.found = srv_arena_alloc(&r->arena, n, 1);
    lit->len = 0;
    px_buf_addc(lit, '{');
    for (i = 0; i < n; i++) {
        if (!r->from_encounter[i]) continue;
        if (!first) px_buf_addc(lit, ',');
        px_buf_adds(lit, pseudo[i]);
        first = 0;
        for (size_t b = 0; id && b < 16; b++)
            id[i][b] = (unsigned char)(hex_nibble(pseudo[i][2 * b]) << 4 | hex_nibble(pseudo[i][2 * b + 1]));
    }
    if (px_buf_addc(lit, '}') != 0 || !id || !es.found) {
        st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
        goto done;
    }
    px_err e = {0};
    if (!(c = srv_pool_get(s, &e))) {
        atomic_fetch_add(&s->metrics.encounter_lookup_errors, 1);
        st = srv_error(r, 503, "database_unavailable", NULL, "cannot look up encounters: the warehouse is unreachable");
        goto done;
    }
    const char *vals[1] = {lit->data};
    char state[6] = "";
    int rc = 0;
    /* a cached field list that fails is rebuilt from pg_catalog and tried once more */
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = 0;
        state[0] = '\0';
        /* the slot is the one mutable part of a served model (internally locked) */
        if (!(l = srv_acquire((srv_slot *)&sm->lookup))) {
            if (!(l = lookup_build(c, sm, &e))) {
                rc = e.code ? e.code : PX_EDB;
                break;
            }
            atomic_fetch_add(&l->rc.refs, 1);             /* one for the slot, one for us */
            srv_slot_swap((srv_slot *)&sm->lookup, l);
            fresh = 1;
        }
        memset(es.found, 0, n);
        for (i = 0; i < n; i++) /* a failed first attempt may have flagged some */
            if (r->from_encounter[i]) memset(r->flags + i * sm->k, 0, sm->k);
        rc = px_feat_query(c, l->f, l->nf, l->from, 1, vals, enc_row, &es, state, &e);
        if (rc == 0) break;
        srv_slot_swap((srv_slot *)&sm->lookup, NULL);
        srv_release(l);
        l = NULL;
        if (fresh || PQstatus(c) != CONNECTION_OK || strcmp(state, "57014") == 0) break;
    }
    if (rc) {
        atomic_fetch_add(&s->metrics.encounter_lookup_errors, 1);
        px_log(PX_LOG_WARN, "serve: encounter lookup for '%s' v%d failed: %s%s%s", sm->name, sm->version, e.msg,
               e.detail[0] ? ": " : "", e.detail);
        if (rc == PX_ENOTFOUND || rc == PX_EINVAL || strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0)
            st = srv_error(r, 422, "lookup_unavailable", NULL,
                           "model '%s' v%d cannot look up encounters: its feature table '%s' is missing or has no "
                           "encounter_id and inputs",
                           sm->name, sm->version, sm->feature_table);
        else if (rc == PX_ENOMEM)
            st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
        else if (strcmp(state, "57014") == 0)
            st = srv_error(r, 503, "database_timeout", NULL, "the encounter lookup took too long");
        else {
            broken = PQstatus(c) != CONNECTION_OK;
            st = srv_error(r, 503, "database_unavailable", NULL, "cannot look up encounters");
        }
        goto done;
    }
    atomic_fetch_add(&s->metrics.encounter_lookups, n_enc);
    for (i = 0; i < n; i++) {
        if (!r->from_encounter[i] || es.found[i]) continue;
        char field[64];
        snprintf(field, sizeof field, what, i);
        st = srv_error(r, 404, "encounter_not_found", field,
                       "no feature row for this encounter in %s (not loaded, or not in the model's cohort)",
                       sm->feature_table);
        goto done;
    }
done:
    srv_release(l);
    if (c) srv_pool_put(s, c, broken);
    return st;
}

/* The cJSON path: any body, every error named. */
static unsigned inputs_cjson(srv_req *r, size_t *n_out, size_t *n_enc_out)
{
    px_server *s = r->s;
    const srv_model *sm = r->sm;
    size_t off = 0;
    const char *why = NULL;
    int pc = px_json_validate(r->body.data, r->body.len, s->p.max_depth, &off, &why);
    if (pc == PX_EINVAL)
        return srv_error(r, 400, "too_deep", NULL, "the JSON nests deeper than %d levels (at byte %zu)", s->p.max_depth,
                         off);
    if (pc != 0) return srv_error(r, 400, "invalid_json", NULL, "the body is not valid JSON: %s (at byte %zu)", why, off);
    const char *end = NULL;
    srv_arena_use(&r->arena);
    r->json = cJSON_ParseWithLengthOpts(r->body.data, r->body.len + 1, &end, 1);
    srv_arena_use(NULL);
    if (!r->json) {
        size_t at = end && end >= r->body.data ? (size_t)(end - r->body.data) : 0;
        return srv_error(r, 400, "invalid_json", NULL, "the body is not valid JSON (near byte %zu)", at);
    }
    if (!cJSON_IsObject(r->json))
        return srv_error(r, 400, "invalid_request", NULL, "the body must be an object: {\"instances\": [...]}");
    const cJSON *arr = NULL, *x;
    cJSON_ArrayForEach(x, r->json)
    {
        if (x->string && strcmp(x->string, "instances") == 0 && !arr) arr = x;
        else {
            char field[80];
            snprintf(field, sizeof field, "%.64s", x->string ? x->string : "");
            return srv_error(r, 400, "unknown_field", field, "the body holds only \"instances\"");
        }
    }
    if (!arr || !cJSON_IsArray(arr))
        return srv_error(r, 400, arr ? "wrong_type" : "missing_field", "instances", "instances must be an array of objects");
    size_t n = (size_t)cJSON_GetArraySize(arr), k = sm->k;
    if (n == 0) return srv_error(r, 400, "invalid_value", "instances", "instances is empty");
    if (n > s->p.max_instances)
        return srv_error(r, 413, "too_many_instances", "instances", "%zu instances; the limit is %zu per request", n,
                         s->p.max_instances);
    unsigned char *flags, *seen;
    srv_arena *arena = &r->arena; /* released with the request */
    r->raw = srv_arena_alloc(arena, n * k * sizeof *r->raw, 0);
    r->from_encounter = srv_arena_alloc(arena, n * sizeof *r->from_encounter, 1);
    flags = r->flags = srv_arena_alloc(arena, n * k + k, 1); /* the last k bytes: the per-instance "seen" scratch */
    if (!r->raw || !r->from_encounter || !flags)
        return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    seen = flags + n * k;
    size_t i = 0, n_enc = 0;
    const cJSON *inst;
    cJSON_ArrayForEach(inst, arr)
    {
        char field[64];
        if (!cJSON_IsObject(inst)) {
            snprintf(field, sizeof field, "instances[%zu]", i);
            return srv_error(r, 400, "wrong_type", field, "each instance must be an object");
        }
        const cJSON *id = encounter_member(inst);
        if (id) {
            snprintf(field, sizeof field, "instances[%zu].encounter_id", i);
            if (cJSON_GetArraySize(inst) != 1)
                return srv_error(r, 400, "invalid_request", field,
                                 "an instance gives either encounter_id or inputs, not both");
            size_t len = cJSON_IsString(id) ? strlen(id->valuestring) : 0;
            int ok = len >= 1 && len <= 64;
            for (size_t c = 0; ok && c < len; c++) ok = (unsigned char)id->valuestring[c] >= 0x20;
            if (!ok)
                return srv_error(r, 400, cJSON_IsString(id) ? "invalid_value" : "wrong_type", field,
                                 "encounter_id must be a string of 1 to 64 printable characters");
            r->from_encounter[i] = 1;
            n_enc++;
        } else {
            unsigned st = check_instance(r, i, inst, r->raw + i * k, flags + i * k, seen);
            if (st) return st;
        }
        i++;
    }
    *n_out = n;
    *n_enc_out = n_enc;
    return 0;
}

unsigned srv_predict_inputs(srv_req *r, int fast, size_t *n_out, size_t *n_enc_out, int *was_fast)
{
    const srv_model *sm = r->sm;
    const px_server *s = r->s;
    size_t k = sm->k;
    *was_fast = 0;
    if (r->body.len == 0) return srv_error(r, 400, "invalid_json", NULL, "the body is empty");
    if (fast && s->p.max_depth >= 3) {
        /* room for as many instances as the body has objects, within the limit */
        size_t cap = 0;
        for (const char *p = r->body.data, *e = p + r->body.len; (p = memchr(p, '{', (size_t)(e - p))); p++) cap++;
        cap = cap > 1 ? cap - 1 : 0;
        if (cap > s->p.max_instances) cap = s->p.max_instances;
        /* and as many as the body has room for: braces in strings count above,
         * but an instance the reader takes holds every required input */
        if (cap > r->body.len / sm->least_instance_bytes) cap = r->body.len / sm->least_instance_bytes;
        srv_arena *arena = &r->arena;
        double *raw = cap ? srv_arena_alloc(arena, cap * k * sizeof *raw, 0) : NULL;
        unsigned char *flags = cap ? srv_arena_alloc(arena, cap * k + k, 0) : NULL;
        size_t n = raw && flags ? srv_predict_fast(sm, r->body.data, r->body.len, cap, raw, flags, flags + cap * k) : 0;
        if (n > 0 && (r->from_encounter = srv_arena_alloc(arena, n * sizeof *r->from_encounter, 1))) {
            r->raw = raw;
            r->flags = flags;
            *n_out = n;
            *n_enc_out = 0;
            *was_fast = 1;
            return 0;
        }
    }
    return inputs_cjson(r, n_out, n_enc_out);
}

/* The served model named by the request's path: its slot, with r->sm acquired;
 * or -1 with the error written (404 unknown, 503 not loaded). */
int srv_predict_model(srv_req *r, unsigned *st)
{
    px_server *s = r->s;
    int slot = find_slot(s, r->model_name);
    if (slot < 0) {
        *st = srv_error(r, 404, "unknown_model", NULL, "no model '%.64s' is served (GET /v1/models lists them)",
                        r->model_name);
        return -1;
    }
    if (!(r->sm = srv_acquire(&s->models[slot]))) {
        *st = srv_error(r, 503, "model_unavailable", NULL, "model '%s' is not loaded (see the server log)",
                        r->model_name);
        return -1;
    }
    return slot;
}

unsigned srv_score(srv_req *r, int slot, size_t n, int by_encounter)
{
    px_server *s = r->s;
    const srv_model *sm = r->sm;
    size_t k = sm->k, i;
    unsigned st = 0;
    srv_arena *arena = &r->arena;
    r->contrib = srv_arena_alloc(arena, n * k * sizeof *r->contrib, 0);
    r->values = srv_arena_alloc(arena, n * sizeof *r->values, 0);
    r->bins = srv_arena_alloc(arena, n * (k + 1) * sizeof *r->bins, 0);
    if (!r->contrib || !r->values || !r->bins)
        return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    px_err e = {0};
    for (i = 0; i < n; i++)
        if (px_model_predict(sm->m, r->raw + i * k, &r->values[i], r->contrib + i * k, &e) != 0) {
            char field[64];
            snprintf(field, sizeof field, "instances[%zu]", i);
            return srv_error(r, 422, "cannot_score", field, "%s", e.msg);
        }

    /* the audit record comes before the answer: no record, no answer */
    srv_audit_rec ar;
    memset(&ar, 0, sizeof ar);
    ar.at_us = srv_wall_us();
    memcpy(ar.key_id, r->key.id, sizeof ar.key_id);
    ar.model = (uint16_t)slot;
    ar.version = sm->version;
    for (int h = 0; h < 16; h++) {
        int hi = r->request_id[2 * h], lo = r->request_id[2 * h + 1];
        ar.request_id[h] = (unsigned char)(((hi <= '9' ? hi - '0' : hi - 'a' + 10) << 4) | (lo <= '9' ? lo - '0' : lo - 'a' + 10));
    }
    ar.instances = (uint32_t)n;
    ar.by_encounter = (uint32_t)by_encounter;
    ar.latency_us = (uint32_t)(srv_mono_us() - r->t0_us);
    if (srv_audit_push(&s->audit, &ar) != 0)
        return srv_error(r, 503, "audit_unavailable", NULL,
                         "predictions are not answered while they cannot be audited (the audit backlog is full)");
    atomic_fetch_add_explicit(&s->metrics.instances, n, memory_order_relaxed);
    if (sm->drift) {
        srv_drift *d = sm->drift;
        for (i = 0; i < n; i++) {
            uint16_t *row = r->bins + i * (k + 1);
            for (size_t j = 0; j < k; j++) row[j] = (uint16_t)srv_drift_bin(d, j, r->raw[i * k + j]);
            row[k] = (uint16_t)srv_drift_bin(d, k, r->values[i]);
        }
        if (srv_drift_add(d, r->bins, n, &s->p)) {
            char b = 1;
            ssize_t w = write(s->poll_pipe[1], &b, 1);
            (void)w;
        }
        atomic_fetch_add_explicit(&d->predictions, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&d->requests, 1, memory_order_relaxed);
    }
    return st;
}

size_t srv_contrib_order(const srv_model *sm, const double *c, size_t *order)
{
    double mag[SRV_MAX_INPUTS];
    size_t m = 0;
    /* largest effect first, ties in input order (insertion sort on the
     * magnitudes: k is small) */
    for (size_t j = 0; j < sm->k && j < SRV_MAX_INPUTS; j++) {
        if (sm->f[j].info->dropped) continue;
        double a = fabs(c[j]);
        size_t p = m++;
        while (p > 0 && mag[p - 1] < a) {
            order[p] = order[p - 1];
            mag[p] = mag[p - 1];
            p--;
        }
        order[p] = j;
        mag[p] = a;
    }
    return m;
}

unsigned srv_route_predict(srv_req *r)
{
    px_server *s = r->s;
    unsigned st = 0;
    int slot = srv_predict_model(r, &st);
    if (slot < 0) return st;
    const srv_model *sm = r->sm;
    size_t n = 0, n_enc = 0, k = sm->k, i;
    int was_fast;
    st = srv_predict_inputs(r, s->p.fast_parse, &n, &n_enc, &was_fast);
    if (st) return st;
    if (was_fast) atomic_fetch_add_explicit(&s->metrics.fast_parsed, 1, memory_order_relaxed);
    unsigned char *flags = r->flags;
    if (n_enc && ((st = pseudonymize(r, cJSON_GetObjectItemCaseSensitive(r->json, "instances"), n)) != 0 ||
                  (st = srv_lookup_encounters(r, n, n_enc, "instances[%zu].encounter_id")) != 0))
        goto done;
    if ((st = srv_score(r, slot, n, (int)n_enc)) != 0) goto done;
    /* the answer: the head with px_buf, then the predictions written straight
     * into room reserved for their largest possible size (no check per piece) */
    px_buf *b = &r->out;
    b->len = 0;
    size_t names = 0; /* the inputs' names as JSON strings */
    for (size_t j = 0; j < k; j++) names += sm->f[j].json_namelen;
    /* per instance: fixed text and two numbers (< 200 bytes); per contribution
     * {"feature":NAME,"value":NUM} (< 60 + name); the three flag lists name
     * each input at most once each (3 x (name + 1)) */
    size_t room = 64 + n * (200 + k * 64 + 4 * names);
    px_buf_adds(b, "{\"model\":");
    px_buf_json_str(b, sm->name, strlen(sm->name));
    px_buf_adds(b, ",\"version\":");
    px_buf_adds(b, sm->version_json);
    px_buf_adds(b, ",\"request_id\":\"");
    px_buf_adds(b, r->request_id);
    px_buf_adds(b, "\",\"contribution_scale\":\"");
    px_buf_adds(b, srv_contribution_scale(sm));
    if (px_buf_adds(b, "\",\"predictions\":[") != 0 || px_buf_reserve(b, room) != 0) {
        st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
        goto done;
    }
    char *o = b->data + b->len;
#define PUT(lit) (memcpy(o, lit, sizeof lit - 1), o += sizeof lit - 1)
#define PUTN(p, len) (memcpy(o, p, len), o += len)
    size_t order[SRV_MAX_INPUTS];
    for (i = 0; i < n; i++) {
        const double *c = r->contrib + i * k;
        if (i) *o++ = ',';
        PUT("{\"value\":");
        o += srv_fmt6(o, r->values[i]);
        PUT(",\"band\":\"");
        const char *band = srv_band(sm, r->values[i]);
        PUTN(band, strlen(band));
        PUT("\",\"contributions\":[");
        size_t m = srv_contrib_order(sm, c, order);
        for (size_t q = 0; q < m; q++) {
            size_t j = order[q];
            if (q) *o++ = ',';
            PUT("{\"feature\":");
            PUTN(sm->f[j].json_name, sm->f[j].json_namelen);
            PUT(",\"value\":");
            o += srv_fmt6(o, c[j]);
            *o++ = '}';
        }
        *o++ = ']';
        if (r->from_encounter[i]) PUT(",\"source\":\"encounter\"");
        static const unsigned char which[3] = {FLAG_IMPUTED, FLAG_EXTRAPOLATED, FLAG_UNKNOWN_LEVEL};
        static const char *const key[3] = {",\"imputed\":[", ",\"extrapolated\":[", ",\"unknown_level\":["};
        const unsigned char *fl = flags + i * k;
        for (int w = 0; w < 3; w++) {
            int any = 0;
            for (size_t j = 0; j < k; j++) {
                if (!(fl[j] & which[w])) continue;
                if (any) *o++ = ',';
                else PUTN(key[w], strlen(key[w]));
                PUTN(sm->f[j].json_name, sm->f[j].json_namelen);
                any = 1;
            }
            if (any) *o++ = ']';
        }
        *o++ = '}';
    }
    PUT("]}\n");
#undef PUT
#undef PUTN
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    st = 200;
done:
    return st;
}
