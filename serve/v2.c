/* v2.c: the Open Inference Protocol V2 (KServe / Triton REST): health, server
 * and model metadata, model readiness and inference.
 *
 * An inference request carries one named tensor per model input, shape [batch]
 * (or [batch, 1]), FP64 for numeric inputs (0/1 for flags) and BYTES for
 * categorical ones, data flat in row order; null is an unknown value, imputed as
 * in /v1. Each element passes the same checks as a /v1 instance's value
 * (srv_check_value: range, levels), the rows are scored, audited and
 * drift-counted as /v1 predictions (srv_score), and the answer has three output
 * tensors: "probability" (classifiers) or "value" (regressions) FP64 [batch],
 * "band" BYTES [batch], and "contributions" FP64 [batch, inputs] in the order of
 * the model's inputs (parameters.feature_names). Errors follow the protocol:
 * {"error": "<message>"}, with the server's code, field and request id beside. */
#include "serve/internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int has_version_arg(const srv_req *r)
{
    return r->route == R_V2_MODEL_VERSION || r->route == R_V2_MODEL_VERSION_READY || r->route == R_V2_INFER_VERSION;
}

/* The served model of the path, checked against the path's version (if any):
 * slot with r->sm acquired, or -1 with the error written into *st. */
static int v2_model(srv_req *r, unsigned *st)
{
    int slot = srv_predict_model(r, st);
    if (slot < 0) return -1;
    if (has_version_arg(r) && strcmp(r->path_arg2, r->sm->version_json) != 0) {
        *st = srv_error(r, 404, "unknown_version", NULL, "model '%s' is served at version %d, not '%.20s'",
                        r->sm->name, r->sm->version, r->path_arg2);
        return -1;
    }
    return slot;
}

static const char *out_name(const srv_model *sm)
{
    return strcmp(srv_contribution_scale(sm), "log-odds") == 0 || strcmp(sm->algo, "svc") == 0 ? "probability"
                                                                                                 : "value";
}

unsigned srv_v2_live(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    r->out.len = 0;
    px_buf_adds(&r->out, "{\"live\":true}\n");
    return 200;
}

unsigned srv_v2_ready(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    px_server *s = r->s;
    if (!atomic_load(&s->ready)) return srv_error(r, 503, "not_ready", NULL, "not every served model is loaded");
    if (srv_audit_depth(&s->audit) >= s->audit.cap)
        return srv_error(r, 503, "not_ready", NULL, "the audit queue is full");
    r->out.len = 0;
    px_buf_adds(&r->out, "{\"ready\":true}\n");
    return 200;
}

unsigned srv_v2_server(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    r->out.len = 0;
    px_buf_adds(&r->out, "{\"name\":\"prognos\",\"version\":\"" PX_VERSION "\",\"extensions\":[]}\n");
    return 200;
}

unsigned srv_v2_model(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    unsigned st = 0;
    if (v2_model(r, &st) < 0) return st;
    const srv_model *sm = r->sm;
    px_buf *b = &r->out;
    b->len = 0;
    px_buf_adds(b, "{\"name\":");
    px_buf_json_str(b, sm->name, strlen(sm->name));
    px_buf_printf(b, ",\"versions\":[\"%d\"],\"platform\":\"prognos_%s\",\"inputs\":[", sm->version, sm->algo);
    int first = 1;
    for (size_t j = 0; j < sm->k; j++) {
        if (sm->f[j].info->dropped) continue; /* constant in training: optional, unused */
        px_buf_adds(b, first ? "{\"name\":" : ",{\"name\":");
        px_buf_add(b, sm->f[j].json_name, sm->f[j].json_namelen);
        px_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":[-1]}", sm->f[j].numeric ? "FP64" : "BYTES");
        first = 0;
    }
    px_buf_printf(b,
                  "],\"outputs\":[{\"name\":\"%s\",\"datatype\":\"FP64\",\"shape\":[-1]},"
                  "{\"name\":\"band\",\"datatype\":\"BYTES\",\"shape\":[-1]},"
                  "{\"name\":\"contributions\",\"datatype\":\"FP64\",\"shape\":[-1,%zu]}],"
                  "\"parameters\":{\"task\":",
                  out_name(sm), sm->k);
    px_buf_json_str(b, sm->task, strlen(sm->task));
    px_buf_printf(b, ",\"contribution_scale\":\"%s\",\"feature_names\":[", srv_contribution_scale(sm));
    for (size_t j = 0; j < sm->k; j++) {
        if (j) px_buf_addc(b, ',');
        px_buf_add(b, sm->f[j].json_name, sm->f[j].json_namelen);
    }
    if (px_buf_adds(b, "]}}\n") != 0) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    return 200;
}

unsigned srv_v2_model_ready(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    unsigned st = 0;
    if (v2_model(r, &st) < 0) return st;
    r->out.len = 0;
    px_buf_adds(&r->out, "{\"name\":");
    px_buf_json_str(&r->out, r->sm->name, strlen(r->sm->name));
    px_buf_adds(&r->out, ",\"ready\":true}\n");
    return 200;
}

/* A tensor member's name is one of names[] (NULL-terminated)? */
static int known_key(const char *k, const char *const *names)
{
    for (; *names; names++)
        if (strcmp(k, *names) == 0) return 1;
    return 0;
}

/* The batch size of an input tensor's shape ([n] or [n, 1]), or 0. */
static size_t tensor_rows(const cJSON *shape)
{
    int dims = cJSON_GetArraySize(shape);
    if (!cJSON_IsArray(shape) || dims < 1 || dims > 2) return 0;
    const cJSON *d0 = cJSON_GetArrayItem(shape, 0), *d1 = cJSON_GetArrayItem(shape, 1);
    if (!cJSON_IsNumber(d0) || d0->valuedouble < 1 || d0->valuedouble > 1e9 || d0->valuedouble != (double)(size_t)d0->valuedouble)
        return 0;
    if (dims == 2 && (!cJSON_IsNumber(d1) || d1->valuedouble != 1)) return 0;
    return (size_t)d0->valuedouble;
}

/* Reads and checks the inference request into r->raw / r->flags; *n rows and
 * the requested outputs (bit 0 the value, 1 band, 2 contributions). Not static:
 * tests/fuzz/fuzz_v2.c reads bodies with it. */
unsigned srv_v2_inputs(srv_req *r, size_t *n_out, unsigned *want)
{
    px_server *s = r->s;
    const srv_model *sm = r->sm;
    size_t k = sm->k, off = 0;
    const char *why = NULL;
    if (r->body.len == 0) return srv_error(r, 400, "invalid_json", NULL, "the body is empty");
    int pc = px_json_validate(r->body.data, r->body.len, s->p.max_depth, &off, &why);
    if (pc == PX_EINVAL)
        return srv_error(r, 400, "too_deep", NULL, "the JSON nests deeper than %d levels (at byte %zu)", s->p.max_depth,
                         off);
    if (pc != 0) return srv_error(r, 400, "invalid_json", NULL, "the body is not valid JSON: %s (at byte %zu)", why, off);
    srv_arena_use(&r->arena);
    r->json = cJSON_ParseWithLengthOpts(r->body.data, r->body.len + 1, NULL, 1);
    srv_arena_use(NULL);
    if (!r->json) return srv_error(r, 400, "invalid_json", NULL, "the body is not valid JSON");
    if (!cJSON_IsObject(r->json))
        return srv_error(r, 400, "invalid_request", NULL, "the body must be an inference request object");
    static const char *const top[] = {"id", "parameters", "inputs", "outputs", NULL};
    const cJSON *x, *inputs = NULL, *outputs = NULL;
    cJSON_ArrayForEach(x, r->json)
    {
        if (!known_key(x->string, top))
            return srv_error(r, 400, "unknown_field", x->string, "an inference request holds id, parameters, inputs "
                                                                 "and outputs, not '%.64s'", x->string);
        if (strcmp(x->string, "id") == 0 && !cJSON_IsString(x))
            return srv_error(r, 400, "wrong_type", "id", "id must be a string");
        if (strcmp(x->string, "parameters") == 0 && !cJSON_IsObject(x))
            return srv_error(r, 400, "wrong_type", "parameters", "parameters must be an object");
        if (strcmp(x->string, "inputs") == 0) inputs = x;
        if (strcmp(x->string, "outputs") == 0) outputs = x;
    }
    if (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) == 0)
        return srv_error(r, 400, inputs ? "wrong_type" : "missing_field", "inputs",
                         "inputs must be a non-empty array of tensors");
    /* the batch size, from the first tensor; every tensor must agree */
    size_t n = 0;
    unsigned char *seen = calloc(k, 1);
    const cJSON **tensor = calloc(k, sizeof *tensor);
    unsigned st = 0;
    char field[160];
    if (!seen || !tensor) {
        st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
        goto done;
    }
    size_t t = 0;
    cJSON_ArrayForEach(x, inputs)
    {
        static const char *const keys[] = {"name", "shape", "datatype", "parameters", "data", NULL};
        snprintf(field, sizeof field, "inputs[%zu]", t);
        if (!cJSON_IsObject(x)) {
            st = srv_error(r, 400, "wrong_type", field, "each input must be a tensor object");
            goto done;
        }
        const cJSON *y;
        cJSON_ArrayForEach(y, x)
        {
            if (!known_key(y->string, keys)) {
                st = srv_error(r, 400, "unknown_field", field, "a tensor holds name, shape, datatype, parameters and "
                                                               "data, not '%.64s'", y->string);
                goto done;
            }
        }
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "name"));
        if (!name) {
            st = srv_error(r, 400, "missing_field", field, "the tensor has no name");
            goto done;
        }
        int j = srv_feature_index(sm, name, strlen(name), t);
        if (j < 0) {
            st = srv_error(r, 400, "unknown_field", field, "'%.64s' is not an input of model '%s' v%d", name, sm->name,
                           sm->version);
            goto done;
        }
        snprintf(field, sizeof field, "inputs.%s", sm->f[j].name);
        if (seen[j]) {
            st = srv_error(r, 400, "duplicate_field", field, "%s is given twice", sm->f[j].name);
            goto done;
        }
        seen[j] = 1;
        const char *dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "datatype"));
        const char *want_dt = sm->f[j].numeric ? "FP64" : "BYTES";
        if (!dt || strcmp(dt, want_dt) != 0) {
            st = srv_error(r, 400, "wrong_type", field, "%s must have datatype %s", sm->f[j].name, want_dt);
            goto done;
        }
        size_t rows = tensor_rows(cJSON_GetObjectItemCaseSensitive(x, "shape"));
        if (rows == 0) {
            st = srv_error(r, 400, "invalid_value", field, "the shape of %s must be [batch] or [batch, 1], batch >= 1",
                           sm->f[j].name);
            goto done;
        }
        if (n == 0) {
            n = rows;
            if (n > s->p.max_instances) {
                st = srv_error(r, 413, "too_many_instances", field, "a batch of %zu; the limit is %zu per request", n,
                               s->p.max_instances);
                goto done;
            }
        } else if (rows != n) {
            st = srv_error(r, 400, "invalid_value", field, "%s has %zu rows; the first input has %zu", sm->f[j].name,
                           rows, n);
            goto done;
        }
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(x, "data");
        if (!cJSON_IsArray(data) || (size_t)cJSON_GetArraySize(data) != n) {
            st = srv_error(r, 400, data ? "invalid_value" : "missing_field", field,
                           "the data of %s must be a flat array of %zu values", sm->f[j].name, n);
            goto done;
        }
        tensor[j] = data;
        t++;
    }
    for (size_t j = 0; j < k; j++) {
        if (seen[j] || sm->f[j].info->dropped) continue;
        snprintf(field, sizeof field, "inputs.%s", sm->f[j].name);
        st = srv_error(r, 400, "missing_field", field, "%s is required (a tensor of %s; null elements if unknown)",
                       sm->f[j].name, sm->f[j].numeric ? "FP64" : "BYTES");
        goto done;
    }
    /* the requested outputs */
    *want = 7;
    if (outputs) {
        if (!cJSON_IsArray(outputs)) {
            st = srv_error(r, 400, "wrong_type", "outputs", "outputs must be an array");
            goto done;
        }
        *want = 0;
        size_t o = 0;
        cJSON_ArrayForEach(x, outputs)
        {
            const char *name = cJSON_IsObject(x) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "name"))
                                                 : NULL;
            snprintf(field, sizeof field, "outputs[%zu]", o++);
            const cJSON *y;
            /* members only of an object: an array's elements have no name (outputs: [[1]]) */
            if (name)
                cJSON_ArrayForEach(y, x)
                {
                    if (strcmp(y->string, "name") != 0 && strcmp(y->string, "parameters") != 0) name = NULL;
                }
            if (!name) {
                st = srv_error(r, 400, "invalid_value", field, "a requested output is {\"name\": ...}");
                goto done;
            }
            if (strcmp(name, out_name(sm)) == 0) *want |= 1;
            else if (strcmp(name, "band") == 0) *want |= 2;
            else if (strcmp(name, "contributions") == 0) *want |= 4;
            else {
                st = srv_error(r, 400, "unknown_output", field, "model '%s' has outputs %s, band and contributions",
                               sm->name, out_name(sm));
                goto done;
            }
        }
    }
    /* every element, checked as /v1 checks an instance's value */
    r->raw = srv_arena_alloc(&r->arena, n * k * sizeof *r->raw, 0);
    r->flags = srv_arena_alloc(&r->arena, n * k, 1);
    r->from_encounter = srv_arena_alloc(&r->arena, n * sizeof *r->from_encounter, 1);
    if (!r->raw || !r->flags || !r->from_encounter) {
        st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
        goto done;
    }
    for (size_t j = 0; j < k; j++) {
        const cJSON *v = tensor[j] ? tensor[j]->child : NULL;
        for (size_t i = 0; i < n; i++) {
            if (!tensor[j]) { /* a dropped input not given */
                r->raw[i * k + j] = NAN;
                continue;
            }
            if ((st = srv_check_value(r, i, &sm->f[j], v, &r->raw[i * k + j], &r->flags[i * k + j])) != 0) goto done;
            v = v->next;
        }
    }
    *n_out = n;
done:
    free(seen);
    free(tensor);
    return st;
}

unsigned srv_v2_infer(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    unsigned st = 0, want = 0;
    int slot = v2_model(r, &st);
    if (slot < 0) return st;
    size_t n = 0;
    if ((st = srv_v2_inputs(r, &n, &want)) != 0) return st;
    if ((st = srv_score(r, slot, n, 0)) != 0) return st;
    const srv_model *sm = r->sm;
    size_t k = sm->k;
    px_buf *b = &r->out;
    b->len = 0;
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->json, "id"));
    px_buf_adds(b, "{\"model_name\":");
    px_buf_json_str(b, sm->name, strlen(sm->name));
    px_buf_printf(b, ",\"model_version\":\"%d\",\"id\":", sm->version);
    if (id) px_buf_json_str(b, id, strlen(id));
    else px_buf_printf(b, "\"%s\"", r->request_id);
    px_buf_printf(b, ",\"parameters\":{\"request_id\":\"%s\",\"contribution_scale\":\"%s\",\"feature_names\":[",
                  r->request_id, srv_contribution_scale(sm));
    for (size_t j = 0; j < k; j++) {
        if (j) px_buf_addc(b, ',');
        px_buf_add(b, sm->f[j].json_name, sm->f[j].json_namelen);
    }
    px_buf_adds(b, "]},\"outputs\":[");
    /* the numbers: written straight into reserved room (32 bytes each at most) */
    if (px_buf_reserve(b, 256 + n * (k + 1) * 34 + n * 16) != 0)
        return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    int first = 1;
    if (want & 1) {
        px_buf_printf(b, "{\"name\":\"%s\",\"datatype\":\"FP64\",\"shape\":[%zu],\"data\":[", out_name(sm), n);
        for (size_t i = 0; i < n; i++) {
            if (i) b->data[b->len++] = ',';
            b->len += srv_fmt_double(b->data + b->len, r->values[i]);
        }
        px_buf_adds(b, "]}");
        first = 0;
    }
    if (want & 2) {
        px_buf_printf(b, "%s{\"name\":\"band\",\"datatype\":\"BYTES\",\"shape\":[%zu],\"data\":[", first ? "" : ",", n);
        for (size_t i = 0; i < n; i++) px_buf_printf(b, "%s\"%s\"", i ? "," : "", srv_band(sm, r->values[i]));
        px_buf_adds(b, "]}");
        first = 0;
    }
    if (want & 4) {
        px_buf_printf(b, "%s{\"name\":\"contributions\",\"datatype\":\"FP64\",\"shape\":[%zu,%zu],\"data\":[",
                      first ? "" : ",", n, k);
        if (px_buf_reserve(b, n * k * 34 + 16) != 0)
            return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
        for (size_t i = 0; i < n * k; i++) {
            if (i) b->data[b->len++] = ',';
            b->len += srv_fmt_double(b->data + b->len, r->contrib[i]);
        }
        px_buf_adds(b, "]}");
    }
    if (px_buf_adds(b, "]}\n") != 0) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    return 200;
}
