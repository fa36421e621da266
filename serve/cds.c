/* cds.c: CDS Hooks 2.0 services (https://cds-hooks.hl7.org/2.0/).
 *
 *   GET  /cds-services                discovery: the services whose models are served
 *   POST /cds-services/{id}           a hook call: one card per model of the service
 *   POST /cds-services/{id}/feedback  what the clinician did with a card (serve.cds_feedback)
 *
 * readmission-risk (hook encounter-discharge) scores the readmission model;
 * stay-outlook (patient-view, when an encounter is in context) the mortality
 * and length-of-stay models. A stay's features are computed from the prefetch
 * (Patient, the Encounter, the patient's Conditions, Encounters and Procedures)
 * by px_feat_from_fhir, the same definitions the feature tables are built
 * with; when the prefetch is incomplete and the stay is in the warehouse (its
 * EHR encounter id pseudonymized with the ETL's key finds the model's feature
 * row) the warehouse row is scored; otherwise 412. Each card is scored, audited
 * and drift-counted as a /v1 prediction (srv_score), under its own request id,
 * which is the card's uuid: feedback joins the audit trail by it. Nothing of the
 * patient is logged, stored or echoed but the card itself. Callers authenticate
 * with the CDS client's JWT when --cds-jwks is set (jwt.c), else a predict key. */
#include "serve/internal.h"
#include "features/features.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct cds_service {
    const char *id, *hook, *title, *description;
    const char *models[3]; /* NULL-terminated */
} cds_service;

static const cds_service services[] = {
    {"readmission-risk", "encounter-discharge", "30-day readmission risk at discharge",
     "The risk of an unplanned readmission within 30 days of this discharge, with the factors that raise or lower it "
     "most, from the stay's diagnoses, procedures, prior admissions and demographics.",
     {"readmission", NULL}},
    {"stay-outlook", "patient-view", "30-day mortality risk and expected length of stay",
     "For a patient with an inpatient encounter in context: the risk of death within 30 days of admission and the "
     "expected length of the stay, with the factors that raise or lower each most.",
     {"mortality", "los", NULL}},
};
#define NSERVICES (sizeof services / sizeof services[0])

/* The prefetch templates (the keys are those px_feat_from_fhir reads). The
 * encounters of the last 12 months use CDS Hooks 2.0's date token; an EHR that
 * sends more is fine: the features count only what precedes the stay. */
static const char *const prefetch_keys[5] = {"patient", "encounter", "conditions", "encounters", "procedures"};
static const char *const prefetch_templates[5] = {
    "Patient/{{context.patientId}}", "Encounter/{{context.encounterId}}", "Condition?patient={{context.patientId}}",
    "Encounter?patient={{context.patientId}}&date=ge{{today() - 1 years}}", "Procedure?patient={{context.patientId}}"};

static const cds_service *find_service(const char *id)
{
    for (size_t i = 0; i < NSERVICES; i++)
        if (strcmp(services[i].id, id) == 0) return &services[i];
    return NULL;
}

static int served_slot(px_server *s, const char *name)
{
    int n = atomic_load(&s->nmodels);
    for (int i = 0; i < n; i++)
        if (strcmp(s->names[i], name) == 0) return i;
    return -1;
}

/* ---- authentication --------------------------------------------------------------- */

unsigned srv_cds_authorize(srv_req *r, struct MHD_Connection *conn, const char *url)
{
    px_server *s = r->s;
    const char *a = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7) != 0) {
        atomic_fetch_add_explicit(&s->metrics.jwt_refused, 1, memory_order_relaxed);
        return srv_error(r, 401, "unauthorized", NULL, "a CDS client's JWT is required (Authorization: Bearer <jwt>)");
    }
    a += 7;
    while (*a == ' ') a++;
    /* aud: the URL of the endpoint invoked; for feedback, the service's URL is also taken */
    char aud[512], aud2[512], iss[256], why[300];
    snprintf(aud, sizeof aud, "%s%s", s->public_url, url);
    int rc = srv_jwt_check(s->jwt, a, aud, iss, sizeof iss, why, sizeof why);
    if (rc != 0 && r->route == R_CDS_FEEDBACK) {
        snprintf(aud2, sizeof aud2, "%s/cds-services/%s", s->public_url, r->model_name);
        char why2[300];
        if (strstr(why, "aud") && srv_jwt_check(s->jwt, a, aud2, iss, sizeof iss, why2, sizeof why2) == 0) rc = 0;
    }
    if (rc != 0) {
        atomic_fetch_add_explicit(&s->metrics.jwt_refused, 1, memory_order_relaxed);
        return srv_error(r, 401, "unauthorized", NULL, "%s", why);
    }
    /* the audit's key id: 12 hex digits of the issuer's SHA-256 */
    char hex[65];
    px_sha256_hex(iss, strlen(iss), hex);
    memcpy(r->key.id, hex, 12);
    r->key.id[12] = '\0';
    r->key.role = PX_KEY_PREDICT;
    r->has_key = 1;
    r->jwt = 1;
    return 0;
}

/* ---- discovery ----------------------------------------------------------------------- */

unsigned srv_cds_discovery(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "services");
    for (size_t i = 0; arr && i < NSERVICES; i++) {
        const cds_service *sv = &services[i];
        int any = 0;
        for (int m = 0; sv->models[m]; m++) any |= served_slot(r->s, sv->models[m]) >= 0;
        if (!any) continue;
        cJSON *x = cJSON_CreateObject();
        if (!x) break;
        cJSON_AddItemToArray(arr, x);
        cJSON_AddStringToObject(x, "hook", sv->hook);
        cJSON_AddStringToObject(x, "id", sv->id);
        cJSON_AddStringToObject(x, "title", sv->title);
        cJSON_AddStringToObject(x, "description", sv->description);
        cJSON *pf = cJSON_AddObjectToObject(x, "prefetch");
        for (int k = 0; pf && k < 5; k++) cJSON_AddStringToObject(pf, prefetch_keys[k], prefetch_templates[k]);
        cJSON_AddStringToObject(x, "usageRequirements",
                                "Send the prefetch (or let the service read the stay from its warehouse, where it "
                                "was loaded); authenticate with a JWT signed by a key in the service's JWKS.");
    }
    return srv_send_json(r, o, 200, 0);
}

/* ---- cards ------------------------------------------------------------------------------- */

/* The clinical words of an input (static text or buf). */
static const char *words(const char *name, char *buf, size_t n)
{
    static const char *const table[][2] = {
        {"age_years", "Age"},
        {"female", "Female sex"},
        {"sex", "Sex"},
        {"emergency", "Emergency admission"},
        {"admission_type", "Admission type"},
        {"admission_source", "Admission source"},
        {"charlson_index", "Charlson comorbidity index"},
        {"elix_count", "Number of Elixhauser comorbidities"},
        {"prior_adm_6m", "Admissions in the previous 6 months"},
        {"prior_adm_12m", "Admissions in the previous 12 months"},
        {"ed_visits_6m", "Emergency visits in the previous 6 months"},
        {"n_diagnoses", "Diagnoses coded this stay"},
        {"n_procedures", "Procedures this stay"},
        {"los_days", "Length of stay (days)"},
        {"discharge_disposition", "Discharge disposition"},
        {"lace_score", "LACE index"},
        {"department", "Department"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i][0], name) == 0) return table[i][1];
    const char *w = px_feat_comorbidity_words(name);
    if (w) {
        snprintf(buf, n, "%c%s", w[0] >= 'a' && w[0] <= 'z' ? w[0] - 32 : w[0], w + 1);
        return buf;
    }
    if (strncmp(name, "cc_", 3) == 0) { /* the CMS chronic-condition flags */
        snprintf(buf, n, "Chronic condition: %s", name + 3);
    } else
        snprintf(buf, n, "%s", name);
    for (char *p = buf; *p; p++)
        if (*p == '_') *p = ' ';
    return buf;
}

typedef struct task_words {
    const char *model, *summary; /* summary: what the number is */
    int percent;                 /* 1: a probability shown in per cent; 0: days */
} task_words;

static task_words task_of(const srv_model *sm)
{
    if (strcmp(sm->name, "readmission") == 0) return (task_words){sm->name, "30-day readmission risk", 1};
    if (strcmp(sm->name, "mortality") == 0) return (task_words){sm->name, "30-day mortality risk", 1};
    if (strcmp(sm->name, "los") == 0) return (task_words){sm->name, "Expected length of stay", 0};
    return (task_words){sm->name, sm->name, strcmp(srv_contribution_scale(sm), "log-odds") == 0};
}

static const char *band_words(const char *band)
{
    if (strcmp(band, "low") == 0) return "at or below the median of the training population";
    if (strcmp(band, "medium") == 0) return "between the training population's median and 80th percentile";
    if (strcmp(band, "high") == 0) return "between the training population's 80th and 90th percentiles";
    if (strcmp(band, "very_high") == 0) return "above the training population's 90th percentile";
    return "not banded";
}

static const char *indicator_of(const char *band)
{
    return strcmp(band, "very_high") == 0 ? "critical" : strcmp(band, "high") == 0 ? "warning" : "info";
}

/* The value of input j for the detail: a level, present/absent, or a number. */
static void value_words(const srv_feat *f, double x, char *out, size_t n)
{
    if (isnan(x)) snprintf(out, n, "unknown");
    else if (!f->numeric) snprintf(out, n, "%s", (size_t)x < f->info->nlevels ? f->info->levels[(size_t)x] : "?");
    else if (f->flag) snprintf(out, n, "%s", x != 0 ? "present" : "absent");
    else snprintf(out, n, "%.4g", x);
}

/* One card for the scored instance (r->values[0], r->contrib, r->raw). */
static cJSON *make_card(srv_req *r, const cds_service *sv, const char *uuid, int from_warehouse)
{
    const srv_model *sm = r->sm;
    const px_server *s = r->s;
    double v = r->values[0];
    const char *band = srv_band(sm, v);
    task_words t = task_of(sm);
    char num[48], summary[160], wbuf[160], vbuf[80], link[400];
    if (t.percent) snprintf(num, sizeof num, "%.1f%%", 100 * v);
    else snprintf(num, sizeof num, "%.1f days", v);
    snprintf(summary, sizeof summary, "%s: %s (%s)", t.summary, num, strcmp(band, "very_high") == 0 ? "very high" : band);
    snprintf(link, sizeof link, "%s/v1/models/%s/card", s->public_url, sm->name);
    px_buf d = {0};
    px_buf_printf(&d, "**%s: %s**, %s band: %s.\n\nWhat raises or lowers it most:\n\n", t.summary, num,
                  strcmp(band, "very_high") == 0 ? "very high" : band, band_words(band));
    size_t order[SRV_MAX_INPUTS];
    size_t m = srv_contrib_order(sm, r->contrib, order), shown = 0;
    for (size_t q = 0; q < m && shown < 5; q++) {
        size_t j = order[q];
        double c = r->contrib[j];
        if (!(fabs(c) > 0)) break;
        value_words(&sm->f[j], r->raw[j], vbuf, sizeof vbuf);
        px_buf_printf(&d, "- %s: %s (%s)\n", words(sm->f[j].name, wbuf, sizeof wbuf), vbuf, c > 0 ? "raises" : "lowers");
        shown++;
    }
    if (!shown) px_buf_adds(&d, "- no input moves it from the training population's average\n");
    px_buf_printf(&d, "\nModel *%s* version %d (%s), computed from %s. [Model card](%s)\n", sm->name, sm->version,
                  sm->algo, from_warehouse ? "the stay as loaded in the warehouse" : "the EHR's FHIR resources", link);
    cJSON *c = cJSON_CreateObject();
    if (!c || !d.data) {
        cJSON_Delete(c);
        px_buf_release(&d);
        return NULL;
    }
    cJSON_AddStringToObject(c, "uuid", uuid);
    cJSON_AddStringToObject(c, "summary", summary);
    cJSON_AddStringToObject(c, "indicator", indicator_of(band));
    cJSON_AddStringToObject(c, "detail", d.data);
    px_buf_release(&d);
    cJSON *src = cJSON_AddObjectToObject(c, "source");
    char label[160];
    snprintf(label, sizeof label, "Prognos: %s model v%d", sm->name, sm->version);
    cJSON_AddStringToObject(src, "label", label);
    cJSON_AddStringToObject(src, "url", link);
    cJSON *topic = cJSON_AddObjectToObject(src, "topic");
    cJSON_AddStringToObject(topic, "system", "urn:prognos:cds-services");
    cJSON_AddStringToObject(topic, "code", sv->id);
    cJSON_AddStringToObject(topic, "display", sv->title);
    cJSON *links = cJSON_AddArrayToObject(c, "links"), *l = cJSON_CreateObject();
    cJSON_AddItemToArray(links, l);
    snprintf(label, sizeof label, "Model card: %s v%d", sm->name, sm->version);
    cJSON_AddStringToObject(l, "label", label);
    cJSON_AddStringToObject(l, "url", link);
    cJSON_AddStringToObject(l, "type", "absolute");
    /* the numbers themselves, for systems that read more than the text */
    cJSON *ext = cJSON_AddObjectToObject(c, "extension"), *px = cJSON_AddObjectToObject(ext, "prognos");
    cJSON_AddStringToObject(px, "model", sm->name);
    cJSON_AddNumberToObject(px, "version", sm->version);
    cJSON_AddNumberToObject(px, "value", v);
    cJSON_AddStringToObject(px, "band", band);
    cJSON_AddStringToObject(px, "contribution_scale", srv_contribution_scale(sm));
    cJSON_AddStringToObject(px, "source", from_warehouse ? "warehouse" : "prefetch");
    return c;
}

/* The 32 hex digits of a request id as a UUID. */
static void as_uuid(const char *hex, char out[37])
{
    for (int i = 0, o = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) out[o++] = '-';
        out[o++] = hex[i];
        out[o] = '\0';
    }
}

/* Is prefetch complete (the five keys, none null)? */
static int prefetch_complete(const cJSON *pf)
{
    if (!cJSON_IsObject(pf)) return 0;
    for (int k = 0; k < 5; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(pf, prefetch_keys[k]);
        if (!x || cJSON_IsNull(x)) return 0;
    }
    return 1;
}

/* The feature set of a model's table ("features.readmission" -> "readmission"). */
static const char *set_of(const srv_model *sm)
{
    const char *dot = strrchr(sm->feature_table, '.');
    return dot ? dot + 1 : sm->feature_table;
}

/* Fills r->raw / r->flags (one instance) from the FHIR instance. 0 or the status. */
static unsigned inputs_from_instance(srv_req *r, const cJSON *inst)
{
    const srv_model *sm = r->sm;
    for (size_t j = 0; j < sm->k; j++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(inst, sm->f[j].name);
        if (!v) {
            if (sm->f[j].info->dropped) {
                r->raw[j] = NAN;
                continue;
            }
            return srv_error(r, 422, "cannot_compute", sm->f[j].name,
                             "the FHIR resources do not give input '%s' of model '%s' v%d", sm->f[j].name, sm->name,
                             sm->version);
        }
        unsigned st = srv_check_value(r, 0, &sm->f[j], v, &r->raw[j], &r->flags[j]);
        if (st) return st;
    }
    return 0;
}

/* Checks the hook request's shape: 0 or the status of the error written. */
static unsigned check_request(srv_req *r, const cds_service *sv, const cJSON **ctx, const cJSON **pf)
{
    static const char *const keys[] = {"hook", "hookInstance", "fhirServer", "fhirAuthorization", "context",
                                       "prefetch", "extension", NULL};
    const cJSON *x;
    cJSON_ArrayForEach(x, r->json)
    {
        int ok = 0;
        for (int k = 0; keys[k] && !ok; k++) ok = strcmp(keys[k], x->string) == 0;
        if (!ok) return srv_error(r, 400, "unknown_field", x->string, "a CDS Hooks request has no member '%.64s'", x->string);
    }
    const char *hook = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->json, "hook"));
    if (!hook) return srv_error(r, 400, "missing_field", "hook", "hook is required");
    if (strcmp(hook, sv->hook) != 0)
        return srv_error(r, 400, "invalid_value", "hook", "service '%s' answers hook '%s', not '%.64s'", sv->id, sv->hook,
                         hook);
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r->json, "hookInstance")))
        return srv_error(r, 400, "missing_field", "hookInstance", "hookInstance (a UUID string) is required");
    *ctx = cJSON_GetObjectItemCaseSensitive(r->json, "context");
    if (!cJSON_IsObject(*ctx)) return srv_error(r, 400, "missing_field", "context", "context (an object) is required");
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(*ctx, "patientId");
    if (!cJSON_IsString(pid) || !*pid->valuestring)
        return srv_error(r, 400, "missing_field", "context.patientId", "context.patientId is required");
    const cJSON *eid = cJSON_GetObjectItemCaseSensitive(*ctx, "encounterId");
    if (eid && (!cJSON_IsString(eid) || !*eid->valuestring || strlen(eid->valuestring) > 64))
        return srv_error(r, 400, "invalid_value", "context.encounterId", "context.encounterId must be a string of 1-64 bytes");
    if (!eid && strcmp(sv->hook, "encounter-discharge") == 0)
        return srv_error(r, 400, "missing_field", "context.encounterId", "encounter-discharge needs context.encounterId");
    *pf = cJSON_GetObjectItemCaseSensitive(r->json, "prefetch");
    if (*pf && !cJSON_IsObject(*pf) && !cJSON_IsNull(*pf))
        return srv_error(r, 400, "wrong_type", "prefetch", "prefetch must be an object");
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(r->json, "fhirAuthorization");
    if (fa && !cJSON_IsObject(fa) && !cJSON_IsNull(fa))
        return srv_error(r, 400, "wrong_type", "fhirAuthorization", "fhirAuthorization must be an object");
    return 0;
}

/* Parses r->body strictly into r->json (an object). 0 or the status. */
static unsigned parse_body(srv_req *r)
{
    size_t off = 0;
    const char *why = NULL;
    if (r->body.len == 0) return srv_error(r, 400, "invalid_json", NULL, "the body is empty");
    int pc = px_json_validate(r->body.data, r->body.len, r->s->p.max_depth + 24, &off, &why);
    if (pc == PX_EINVAL)
        return srv_error(r, 400, "too_deep", NULL, "the JSON nests too deep (at byte %zu)", off);
    if (pc != 0) return srv_error(r, 400, "invalid_json", NULL, "the body is not valid JSON: %s (at byte %zu)", why, off);
    srv_arena_use(&r->arena);
    r->json = cJSON_ParseWithLengthOpts(r->body.data, r->body.len + 1, NULL, 1);
    srv_arena_use(NULL);
    if (!r->json) return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    if (!cJSON_IsObject(r->json)) return srv_error(r, 400, "invalid_request", NULL, "the body must be a JSON object");
    return 0;
}

/* The service a POST names (404 when none) and its JSON body (parse_body). */
static unsigned service_and_body(srv_req *r, const cds_service **sv)
{
    *sv = find_service(r->model_name);
    if (!*sv) return srv_error(r, 404, "unknown_service", NULL, "no CDS service '%.64s' (GET /cds-services)", r->model_name);
    return parse_body(r);
}

unsigned srv_cds_call(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    px_server *s = r->s;
    const cds_service *sv = NULL;
    unsigned st = service_and_body(r, &sv);
    if (st) return st;
    const cJSON *ctx = NULL, *pf = NULL;
    if ((st = check_request(r, sv, &ctx, &pf)) != 0) return st;
    const char *eid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ctx, "encounterId"));
    cJSON *out = cJSON_CreateObject(), *cards = cJSON_AddArrayToObject(out, "cards");
    if (!cards) {
        cJSON_Delete(out);
        return srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
    }
    if (!eid) /* patient-view outside a stay: nothing to say */
        return srv_send_json(r, out, 200, 0);
    int complete = prefetch_complete(pf), served = 0;
    char first_id[33];
    memcpy(first_id, r->request_id, sizeof first_id);
    for (int m = 0; sv->models[m]; m++) {
        int slot = served_slot(s, sv->models[m]);
        if (slot < 0) continue;
        srv_release(r->sm);
        if (!(r->sm = srv_acquire(&s->models[slot]))) continue;
        served++;
        const srv_model *sm = r->sm;
        size_t k = sm->k;
        srv_arena *arena = &r->arena;
        r->raw = srv_arena_alloc(arena, k * sizeof *r->raw, 0);
        r->flags = srv_arena_alloc(arena, 2 * k, 1);
        r->from_encounter = srv_arena_alloc(arena, sizeof *r->from_encounter, 1);
        if (!r->raw || !r->flags || !r->from_encounter) {
            st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
            goto fail;
        }
        int from_warehouse = 0;
        if (complete) {
            /* an encounter being discharged may have no period.end yet: today ends it */
            const cJSON *enc = cJSON_GetObjectItemCaseSensitive(pf, "encounter");
            const cJSON *end = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(enc, "period"), "end");
            char today[16];
            time_t now = time(NULL);
            struct tm tm;
            gmtime_r(&now, &tm);
            strftime(today, sizeof today, "%Y-%m-%d", &tm);
            px_err e = {0};
            cJSON *inst = px_feat_from_fhir(pf, set_of(sm), cJSON_IsString(end) ? NULL : today, &e);
            if (!inst) {
                st = e.code == PX_ENOMEM ? srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory")
                                         : srv_error(r, 400, "invalid_prefetch", "prefetch", "%s%s%s", e.msg,
                                                     e.detail[0] ? ": " : "", e.detail);
                goto fail;
            }
            st = inputs_from_instance(r, inst);
            cJSON_Delete(inst);
            if (st) goto fail;
        } else {
            /* the stay as loaded: the EHR's encounter id, pseudonymized as the ETL did */
            char (*pseudo)[33] = r->pseudo ? r->pseudo : (r->pseudo = calloc(1, sizeof *pseudo));
            if (!pseudo) {
                st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
                goto fail;
            }
            px_pseudo_id(s->pseudo, PX_ID_ENCOUNTER, eid, strlen(eid), pseudo[0]);
            r->from_encounter[0] = 1;
            st = srv_lookup_encounters(r, 1, 1, "context.encounterId%.0zu"); /* %.0zu: the index 0, printed as nothing */
            if (st == 404 || st == 422) {
                st = srv_error(r, 412, "prefetch_required", "prefetch",
                               "the prefetch (%s, %s, %s, %s, %s) is needed: the stay is not in the warehouse",
                               prefetch_keys[0], prefetch_keys[1], prefetch_keys[2], prefetch_keys[3],
                               prefetch_keys[4]);
                goto fail;
            }
            if (st) goto fail;
            from_warehouse = 1;
            atomic_fetch_add_explicit(&s->metrics.cds_warehouse, 1, memory_order_relaxed);
        }
        /* each card its own request id (its uuid), so each is one audit record */
        if (m > 0) srv_request_id(s, r->request_id);
        if ((st = srv_score(r, slot, 1, from_warehouse)) != 0) goto fail;
        char uuid[37];
        as_uuid(r->request_id, uuid);
        cJSON *card = make_card(r, sv, uuid, from_warehouse);
        if (!card) {
            st = srv_error(r, 503, "out_of_memory", NULL, "the server is out of memory");
            goto fail;
        }
        cJSON_AddItemToArray(cards, card);
        atomic_fetch_add_explicit(&s->metrics.cds_cards, 1, memory_order_relaxed);
    }
    memcpy(r->request_id, first_id, sizeof first_id);
    if (!served) {
        cJSON_Delete(out);
        return srv_error(r, 503, "model_unavailable", NULL, "no model of service '%s' is served", sv->id);
    }
    return srv_send_json(r, out, 200, 0);
fail: /* r->request_id stays the one the error body names */
    cJSON_Delete(out);
    return st;
}

/* ---- feedback ------------------------------------------------------------------------ */

static int is_uuid(const char *s)
{
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    }
    return 1;
}

/* A short string member or NULL; *bad set when present and not a string of at most max bytes. */
static const char *short_str(const cJSON *o, const char *k, size_t max, int *bad)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x || cJSON_IsNull(x)) return NULL;
    if (!cJSON_IsString(x) || strlen(x->valuestring) > max) {
        *bad = 1;
        return NULL;
    }
    return x->valuestring;
}

unsigned srv_cds_feedback(srv_req *r, struct MHD_Connection *conn)
{
    (void)conn;
    px_server *s = r->s;
    const cds_service *sv = NULL;
    unsigned st = service_and_body(r, &sv);
    if (st) return st;
    const cJSON *x;
    cJSON_ArrayForEach(x, r->json)
    {
        if (strcmp(x->string, "feedback") != 0)
            return srv_error(r, 400, "unknown_field", x->string, "a feedback request holds only \"feedback\"");
    }
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(r->json, "feedback");
    int n = cJSON_GetArraySize(fb);
    if (!cJSON_IsArray(fb) || n < 1 || n > 100)
        return srv_error(r, 400, fb ? "invalid_value" : "missing_field", "feedback",
                         "feedback must be an array of 1 to 100 items");
    /* every item checked before anything is stored */
    char field[64];
    int i = 0;
    cJSON_ArrayForEach(x, fb)
    {
        int bad = 0;
        snprintf(field, sizeof field, "feedback[%d]", i++);
        if (!cJSON_IsObject(x)) return srv_error(r, 400, "wrong_type", field, "each feedback item must be an object");
        const char *card = short_str(x, "card", 64, &bad), *outcome = short_str(x, "outcome", 16, &bad);
        const char *when = short_str(x, "outcomeTimestamp", 40, &bad);
        if (bad || !is_uuid(card))
            return srv_error(r, 400, "invalid_value", field, "card must be the card's uuid");
        if (!outcome || (strcmp(outcome, "accepted") != 0 && strcmp(outcome, "overridden") != 0))
            return srv_error(r, 400, "invalid_value", field, "outcome must be accepted or overridden");
        if (when && !(strlen(when) >= 10 && when[4] == '-' && when[7] == '-'))
            return srv_error(r, 400, "invalid_value", field, "outcomeTimestamp must be an ISO 8601 instant");
        const cJSON *acc = cJSON_GetObjectItemCaseSensitive(x, "acceptedSuggestions");
        if (acc && !cJSON_IsArray(acc))
            return srv_error(r, 400, "wrong_type", field, "acceptedSuggestions must be an array");
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(x, "overrideReason");
        if (ov && !cJSON_IsObject(ov) && !cJSON_IsNull(ov))
            return srv_error(r, 400, "wrong_type", field, "overrideReason must be an object");
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(ov, "reason");
        if (reason && !cJSON_IsObject(reason))
            return srv_error(r, 400, "wrong_type", field, "overrideReason.reason must be a Coding");
        short_str(reason, "code", 256, &bad);
        short_str(reason, "system", 512, &bad);
        short_str(reason, "display", 512, &bad);
        const cJSON *uc = cJSON_GetObjectItemCaseSensitive(ov, "userComment");
        if (bad || (uc && !cJSON_IsString(uc) && !cJSON_IsNull(uc)))
            return srv_error(r, 400, "invalid_value", field, "overrideReason's code, system, display and userComment "
                                                             "must be strings");
    }
    px_err e = {0};
    PGconn *c = srv_pool_get(s, &e);
    if (!c) return srv_error(r, 503, "database_unavailable", NULL, "the warehouse is unreachable");
    int rc = px_db_query(c, &e, "cannot start storing feedback", NULL, "BEGIN", 0, NULL);
    int accepted = 0;
    char client[20];
    snprintf(client, sizeof client, "%s%s", r->jwt ? "jwt:" : "", r->key.id);
    cJSON_ArrayForEach(x, fb)
    {
        if (rc != 0) break;
        int bad = 0;
        const cJSON *ov = cJSON_GetObjectItemCaseSensitive(x, "overrideReason");
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(ov, "reason");
        const cJSON *uc = cJSON_GetObjectItemCaseSensitive(ov, "userComment");
        char nacc[16];
        snprintf(nacc, sizeof nacc, "%d", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(x, "acceptedSuggestions")));
        const char *outcome = short_str(x, "outcome", 16, &bad);
        accepted += strcmp(outcome, "accepted") == 0;
        const char *p[10] = {sv->id,
                             short_str(x, "card", 64, &bad),
                             outcome,
                             short_str(x, "outcomeTimestamp", 40, &bad),
                             nacc,
                             short_str(reason, "code", 256, &bad),
                             short_str(reason, "system", 512, &bad),
                             short_str(reason, "display", 512, &bad),
                             cJSON_IsString(uc) && *uc->valuestring ? "true" : "false",
                             client};
        rc = px_db_query(c, &e, "cannot store CDS feedback", NULL,
                         "INSERT INTO serve.cds_feedback (service_id, card_uuid, outcome, outcome_at,"
                         " accepted_suggestions, override_code, override_system, override_display, comment_given,"
                         " client) VALUES ($1, $2::uuid, $3, $4::timestamptz, $5::integer, $6, $7, $8, $9::boolean, $10)",
                         10, p);
    }
    if (rc == 0) rc = px_db_query(c, &e, "cannot store CDS feedback", NULL, "COMMIT", 0, NULL);
    else px_db_query(c, NULL, "rollback", NULL, "ROLLBACK", 0, NULL);
    int broken = PQstatus(c) != CONNECTION_OK;
    srv_pool_put(s, c, broken);
    if (rc != 0) {
        /* a timestamp PostgreSQL could not read is the client's fault */
        if (!broken && (strstr(e.msg, "date/time") || strstr(e.detail, "date/time") || strstr(e.msg, "timestamp") ||
                        strstr(e.detail, "timestamp")))
            return srv_error(r, 400, "invalid_value", "feedback", "an outcomeTimestamp is not a valid instant");
        px_log(PX_LOG_WARN, "serve: CDS feedback: %s: %s", e.msg, e.detail);
        return srv_error(r, 503, "database_unavailable", NULL, "cannot store the feedback");
    }
    atomic_fetch_add_explicit(&s->metrics.cds_feedback_accepted, (unsigned long long)accepted, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics.cds_feedback_overridden, (unsigned long long)(n - accepted),
                              memory_order_relaxed);
    r->out.len = 0;
    px_buf_printf(&r->out, "{\"stored\":%d,\"request_id\":\"%s\"}\n", n, r->request_id);
    return 200;
}
