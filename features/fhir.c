/* fhir.c: the feature instance of one stay computed from FHIR R4 resources (a
 * CDS Hooks prefetch), by the definitions of features/sql/base.sql and
 * <set>.sql: one feature definition, two executions. The SQL path and this one
 * share the reading rules of engine/fhir.h (which stays, which codes, admission
 * type, source and disposition) and the comorbidity map itself: the map is read
 * from the text of the migration that fills features.comorbidity_map, so there
 * is no second copy to drift; the categories' bits, weights and hierarchy are
 * feat_comorbs (comorbidity.c), which the builder checks against the database.
 * tests/integration/features_fhir.sh compares every feature of every stay of a
 * generated dataset with the SQL feature tables. */
#include "features/internal.h"
#include "engine/fhir.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the comorbidity map, from migration 002's map_spec ----------------------- */

typedef struct map_row {
    char sys;          /* 9 or 10 */
    char prefix[8];
    uint64_t mask;
} map_row;

static map_row *g_map;
static size_t g_nmap;
static int g_map_err;
static pthread_once_t g_map_once = PTHREAD_ONCE_INIT;

static int map_cmp(const void *a, const void *b)
{
    const map_row *x = a, *y = b;
    if (x->sys != y->sys) return x->sys - y->sys;
    return strcmp(x->prefix, y->prefix);
}

static const char *skip_space(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n') p++;
            continue;
        }
        return p;
    }
}

/* A SQL string literal and the literals adjacent to it (SQL concatenates
 * literals separated by a newline), into out. NULL on a parse failure. */
static const char *sql_string(const char *p, char *out, size_t len)
{
    size_t n = 0;
    p = skip_space(p);
    if (*p != '\'') return NULL;
    while (*p == '\'') {
        p++;
        for (;;) {
            if (!*p) return NULL;
            if (*p == '\'' && p[1] == '\'') p++;
            else if (*p == '\'') break;
            if (n + 1 >= len) return NULL;
            out[n++] = *p++;
        }
        p = skip_space(p + 1);
    }
    out[n] = '\0';
    return p;
}

static int comorb_bit(const char *category)
{
    for (int i = 0; i < feat_comorbs_count; i++)
        if (strcmp(feat_comorbs[i].col, category) == 0) return feat_comorbs[i].bit;
    return -1;
}

static int map_add(char sys, const char *prefix, int bit, size_t *cap)
{
    if (strlen(prefix) < 3 || strlen(prefix) > 7) return -1;
    if (g_nmap == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        map_row *nm = realloc(g_map, nc * sizeof *nm);
        if (!nm) return -1;
        g_map = nm;
        *cap = nc;
    }
    map_row *r = &g_map[g_nmap++];
    r->sys = sys;
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
    r->mask = (uint64_t)1 << bit;
    return 0;
}

/* One item of the spec: a prefix, or a range "<letters><n>-<letters><m>" that
 * stands for every prefix n..m zero-padded to n's width (as the migration's
 * expansion does). */
static int map_item(char sys, const char *it, int bit, size_t *cap)
{
    const char *dash = strchr(it, '-');
    if (!dash) return map_add(sys, it, bit, cap);
    size_t nl = strspn(it, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    size_t w = (size_t)(dash - it) - nl;
    if (w == 0 || w > 6 || strncmp(it, dash + 1, nl) != 0) return -1;
    long a = strtol(it + nl, NULL, 10), b = strtol(dash + 1 + nl, NULL, 10);
    if (b < a || b - a > 100000) return -1;
    for (long g = a; g <= b; g++) {
        char pre[16];
        snprintf(pre, sizeof pre, "%.*s%0*ld", (int)nl, it, (int)w, g);
        if (map_add(sys, pre, bit, cap) != 0) return -1;
    }
    return 0;
}

static void map_load(void)
{
    const char *sql = px_db_migration_containing("CREATE TEMP TABLE map_spec");
    const char *p = sql ? strstr(sql, "CREATE TEMP TABLE map_spec") : NULL;
    p = p ? strstr(p, "(VALUES") : NULL;
    size_t cap = 0;
    if (!p) {
        g_map_err = 1;
        return;
    }
    p += 7;
    for (;;) {
        p = skip_space(p);
        if (*p == ')') break;
        if (*p != '(') goto bad;
        char sys[16], cat[64], items[2048];
        if (!(p = sql_string(p + 1, sys, sizeof sys)) || *p != ',') goto bad;
        if (!(p = sql_string(p + 1, cat, sizeof cat)) || *p != ',') goto bad;
        if (!(p = sql_string(p + 1, items, sizeof items)) || *p != ')') goto bad;
        p = skip_space(p + 1);
        if (*p == ',') p++;
        int bit = comorb_bit(cat);
        char s = strcmp(sys, "icd9") == 0 ? 9 : strcmp(sys, "icd10") == 0 ? 10 : 0;
        if (bit < 0 || !s) goto bad;
        for (char *save = NULL, *it = strtok_r(items, " \t\n", &save); it; it = strtok_r(NULL, " \t\n", &save))
            if (map_item(s, it, bit, &cap) != 0) goto bad;
    }
    qsort(g_map, g_nmap, sizeof *g_map, map_cmp);
    size_t k = 0; /* one row per (system, prefix), categories OR-ed */
    for (size_t i = 0; i < g_nmap; i++) {
        if (k > 0 && map_cmp(&g_map[k - 1], &g_map[i]) == 0) g_map[k - 1].mask |= g_map[i].mask;
        else g_map[k++] = g_map[i];
    }
    g_nmap = k;
    return;
bad:
    g_map_err = 1;
}

/* The categories of a code (normalized, no dot): its first 3..7 characters
 * looked up as prefixes, as base.sql's px_enc_dx does. */
static uint64_t code_mask(const char *sys, const char *code)
{
    map_row key = {.sys = strcmp(sys, "icd9") == 0 ? 9 : 10};
    uint64_t m = 0;
    size_t len = strlen(code);
    for (size_t k = 3; k <= 7 && k <= len; k++) {
        snprintf(key.prefix, sizeof key.prefix, "%.*s", (int)k, code);
        const map_row *r = bsearch(&key, g_map, g_nmap, sizeof *g_map, map_cmp);
        if (r) m |= r->mask;
    }
    return m;
}

int px_feat_comorbidity_mask(const char *code_system, const char *code, uint64_t *mask, px_err *e)
{
    pthread_once(&g_map_once, map_load);
    if (g_map_err || g_nmap == 0)
        return px_err_set(e, PX_ESTATE, "cannot read the comorbidity map from the embedded migrations");
    *mask = code_mask(code_system, code);
    return 0;
}

/* ---- the prefetch ------------------------------------------------------------- */

typedef struct stay {
    const cJSON *res;
    char id[256];
    int adm, dis;       /* days; dis = -1 when not ended */
    int ok;             /* an inpatient stay with both dates: counts as a prior stay */
    uint64_t mask_all;
} stay;

typedef struct collect {
    const cJSON **v;
    int n, cap;
    const char *type;
    int oom;
} collect;

static void collect_fn(const cJSON *res, void *ctx)
{
    collect *c = ctx;
    const char *t = px_fhir_str(res, "resourceType");
    if (!t || strcmp(t, c->type) != 0) return;
    const char *id = px_fhir_str(res, "id");
    for (int i = 0; id && i < c->n; i++) { /* the same resource twice counts once */
        const char *o = px_fhir_str(c->v[i], "id");
        if (o && strcmp(o, id) == 0) return;
    }
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 32;
        const cJSON **nv = realloc(c->v, (size_t)nc * sizeof *nv);
        if (!nv) {
            c->oom = 1;
            return;
        }
        c->v = nv;
        c->cap = nc;
    }
    c->v[c->n++] = res;
}

static int gather(const cJSON *prefetch, const char *key, const char *type, collect *c)
{
    c->type = type;
    px_fhir_each(cJSON_GetObjectItemCaseSensitive(prefetch, key), collect_fn, c);
    return c->oom ? -1 : 0;
}

/* The encounter a Condition or Procedure belongs to: its own encounter
 * reference, else (Conditions) the encounter whose diagnosis list names it. */
static int owner(const cJSON *res, stay *stays, int nst, int cond)
{
    char id[256];
    if (px_fhir_ref(cJSON_GetObjectItemCaseSensitive(res, "encounter"), "Encounter", id, sizeof id) == 1) {
        for (int i = 0; i < nst; i++)
            if (strcmp(stays[i].id, id) == 0) return i;
        return -1;
    }
    const char *cid = px_fhir_str(res, "id");
    if (!cond || !cid) return -1;
    for (int i = 0; i < nst; i++) {
        int rank, adm;
        char poa;
        if (px_fhir_enc_dx(stays[i].res, cid, &rank, &adm, &poa)) return i;
    }
    return -1;
}

static int add_num(cJSON *o, const char *k, double v) { return cJSON_AddNumberToObject(o, k, v) ? 0 : -1; }

cJSON *px_feat_from_fhir(const cJSON *prefetch, const char *set, const char *as_of, px_err *e)
{
    const px_feat_set_info *si = px_feat_set_find(set);
    if (!si) {
        px_err_set(e, PX_EINVAL, "unknown feature set '%s'", set ? set : "(null)");
        px_err_hint(e, "readmission, mortality or los");
        return NULL;
    }
    if (!cJSON_IsObject(prefetch)) {
        px_err_set(e, PX_EINVAL, "the prefetch is not a JSON object");
        return NULL;
    }
    int at_discharge = strcmp(si->time_col, "discharge_date") == 0;
    int asof = -1;
    if (as_of && px_fhir_date(as_of, 0, &asof) != 0) {
        px_err_set(e, PX_EINVAL, "bad prediction time '%s'", as_of);
        px_err_hint(e, "a FHIR date or dateTime, e.g. 2024-03-01");
        return NULL;
    }
    uint64_t probe;
    if (px_feat_comorbidity_mask("icd10", "I50", &probe, e) != 0) return NULL;

    collect pats = {0}, encs = {0}, conds = {0}, procs = {0}, cur = {0};
    stay *stays = NULL;
    cJSON *out = NULL;
    if (gather(prefetch, "patient", "Patient", &pats) || gather(prefetch, "encounter", "Encounter", &cur) ||
        gather(prefetch, "encounter", "Encounter", &encs) || gather(prefetch, "encounters", "Encounter", &encs) ||
        gather(prefetch, "conditions", "Condition", &conds) || gather(prefetch, "procedures", "Procedure", &procs)) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    if (pats.n != 1) {
        px_err_set(e, PX_EINVAL, "the prefetch must hold one Patient under \"patient\" (found %d)", pats.n);
        goto out;
    }
    if (cur.n != 1) {
        px_err_set(e, PX_EINVAL, "the prefetch must hold one Encounter under \"encounter\" (found %d)", cur.n);
        goto out;
    }
    const cJSON *pat = pats.v[0], *enc = cur.v[0];
    const char *pid = px_fhir_str(pat, "id");

    /* the patient's encounters: the index stay first */
    if (!(stays = calloc((size_t)encs.n, sizeof *stays))) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    int nst = 0, me = -1;
    for (int i = 0; i < encs.n; i++) {
        const cJSON *r = encs.v[i];
        char sub[256];
        if (pid && px_fhir_ref(cJSON_GetObjectItemCaseSensitive(r, "subject"), "Patient", sub, sizeof sub) == 1 &&
            strcmp(sub, pid) != 0)
            continue; /* another patient's */
        stay *s = &stays[nst];
        s->res = r;
        snprintf(s->id, sizeof s->id, "%s", px_fhir_str(r, "id") ? px_fhir_str(r, "id") : "");
        const cJSON *per = cJSON_GetObjectItemCaseSensitive(r, "period");
        s->adm = s->dis = -1;
        int has_adm = px_fhir_date(px_fhir_str(per, "start"), 0, &s->adm) == 0;
        if (px_fhir_date(px_fhir_str(per, "end"), 0, &s->dis) != 0) s->dis = -1;
        s->ok = has_adm && s->dis >= s->adm && px_fhir_is_stay(r);
        if (r == enc) me = nst;
        nst++;
    }
    if (me < 0) {
        px_err_set(e, PX_EINVAL, "the encounter's subject is not the prefetch's Patient");
        goto out;
    }
    stay *ix = &stays[me];
    if (ix->adm < 0) {
        px_err_set(e, PX_EINVAL, "the encounter has no valid period.start (the admission date)");
        goto out;
    }
    if (ix->dis < 0) ix->dis = asof;
    if (at_discharge && ix->dis < 0) {
        px_err_set(e, PX_EINVAL, "the encounter has no period.end and no prediction time was given");
        px_err_hint(e, "the %s set is predicted at discharge: give the discharge date", si->name);
        goto out;
    }
    if (ix->dis >= 0 && ix->dis < ix->adm) {
        px_err_set(e, PX_EINVAL, "the encounter ends before it starts");
        goto out;
    }

    /* diagnoses (base.sql px_enc_dx): seq 0, the admitting diagnosis, adds to the
     * masks but not to the counts; POA N is unknown at admission */
    int n_dx = 0, n_dx_poa = 0;
    uint64_t mask_poa = 0;
    for (int i = 0; i < conds.n; i++) {
        const cJSON *c = conds.v[i];
        char sys[8], code[16];
        int valid = 0;
        const char *other;
        if (!px_fhir_usable(c) ||
            px_fhir_icd(cJSON_GetObjectItemCaseSensitive(c, "code"), 0, sys, code, &valid, &other) != 0 || !valid)
            continue;
        int k = owner(c, stays, nst, 1);
        if (k < 0 || (k != me && !stays[k].ok)) continue;
        uint64_t m = code_mask(sys, code);
        stays[k].mask_all |= m;
        if (k != me) continue;
        int rank = 0, admitting = 0;
        char poa = 0;
        const char *cid = px_fhir_str(c, "id");
        if (cid) px_fhir_enc_dx(ix->res, cid, &rank, &admitting, &poa);
        if (!admitting) n_dx++;
        if (poa != 'N') {
            mask_poa |= m;
            if (!admitting) n_dx_poa++;
        }
    }
    int n_px = 0, n_px_day0 = 0;
    for (int i = 0; i < procs.n; i++) {
        const cJSON *p = procs.v[i];
        char sys[8], code[16];
        int valid = 0, d;
        const char *other;
        if (!px_fhir_usable(p) ||
            px_fhir_icd(cJSON_GetObjectItemCaseSensitive(p, "code"), 1, sys, code, &valid, &other) != 0 || !valid ||
            owner(p, stays, nst, 0) != me)
            continue;
        n_px++;
        if (px_fhir_procedure_date(p, &d) == 0 && d == ix->adm) n_px_day0++;
    }

    /* prior stays (base.sql px_pairs, px_pairs_mask): admitted 1-365 days before; their codes
     * once discharged by the prediction time's reference date */
    int prior6 = 0, prior12 = 0, ed6 = 0;
    uint64_t cm_adm = mask_poa, cm_dis = ix->mask_all;
    for (int i = 0; i < nst; i++) {
        stay *p = &stays[i];
        if (i == me || !p->ok || p->adm >= ix->adm || p->adm < ix->adm - 365) continue;
        if (strcmp(p->id, ix->id) == 0) continue;
        prior12++;
        if (p->adm >= ix->adm - 182) {
            prior6++;
            if (strcmp(px_fhir_admission_source(p->res), "ed") == 0) ed6++;
        }
        if (p->dis <= ix->adm) cm_adm |= p->mask_all;
        if (ix->dis >= 0 && p->dis <= ix->dis) cm_dis |= p->mask_all;
    }
    prior6 = prior6 > 5 ? 5 : prior6;
    prior12 = prior12 > 5 ? 5 : prior12;
    ed6 = ed6 > 4 ? 4 : ed6;
    uint64_t cm = at_discharge ? cm_dis : cm_adm;

    /* the scores over the flags (comorbidity.c's add_score, in C) */
    int charlson = 0, elix = 0;
    for (int i = 0; i < feat_comorbs_count; i++) {
        const feat_comorb *k = &feat_comorbs[i];
        if (!(cm >> k->bit & 1)) continue;
        if (k->superseded_by) {
            int sb = comorb_bit(k->superseded_by);
            if (sb >= 0 && (cm >> sb & 1)) continue;
        }
        if (strncmp(k->col, "cci_", 4) == 0) charlson += k->weight;
        else elix++;
    }

    const char *bd = px_fhir_str(pat, "birthDate");
    int bdays;
    if (px_fhir_date(bd, 1, &bdays) != 0) {
        px_err_set(e, PX_EINVAL, "the Patient has no valid birthDate");
        goto out;
    }
    int adm_year = px_fhir_year(ix->adm), birth_year = px_fhir_year(bdays);
    const char *g = px_fhir_str(pat, "gender");
    const char *sex = g && strcmp(g, "male") == 0 ? "M" : g && strcmp(g, "female") == 0 ? "F" : "U";
    const char *atype = px_fhir_admission_type(ix->res);
    const char *asrc = px_fhir_admission_source(ix->res);
    const char *disp = px_fhir_disposition(ix->res);
    int los = ix->dis >= 0 ? ix->dis - ix->adm : -1;

    feat_col cols[PX_FEAT_MAX_COLS];
    int ncol = feat_columns(si, cols, PX_FEAT_MAX_COLS);
    if (ncol < 0 || !(out = cJSON_CreateObject())) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    int rc = 0;
    for (int i = 0; i < ncol && rc == 0; i++) {
        const char *n = cols[i].name;
        if (cols[i].role != PX_ROLE_FEATURE) continue;
        int bit = comorb_bit(n);
        if (bit >= 0) rc = add_num(out, n, (double)(cm >> bit & 1));
        else if (strcmp(n, "age_years") == 0) rc = add_num(out, n, adm_year - birth_year);
        else if (strcmp(n, "female") == 0) rc = add_num(out, n, sex[0] == 'F');
        else if (strcmp(n, "admission_type") == 0) rc = cJSON_AddStringToObject(out, n, atype) ? 0 : -1;
        else if (strcmp(n, "admission_source") == 0) rc = cJSON_AddStringToObject(out, n, asrc) ? 0 : -1;
        else if (strcmp(n, "emergency") == 0) rc = add_num(out, n, strcmp(atype, "emergency") == 0);
        else if (strcmp(n, "charlson_index") == 0) rc = add_num(out, n, charlson);
        else if (strcmp(n, "elix_count") == 0) rc = add_num(out, n, elix);
        else if (strcmp(n, "prior_adm_6m") == 0) rc = add_num(out, n, prior6);
        else if (strcmp(n, "prior_adm_12m") == 0) rc = add_num(out, n, prior12);
        else if (strcmp(n, "ed_visits_6m") == 0) rc = add_num(out, n, ed6);
        else if (strcmp(n, "n_diagnoses") == 0) rc = add_num(out, n, at_discharge ? n_dx : n_dx_poa);
        else if (strcmp(n, "n_procedures") == 0) rc = add_num(out, n, at_discharge ? n_px : n_px_day0);
        else if (strcmp(n, "los_days") == 0) rc = add_num(out, n, los);
        else if (strcmp(n, "discharge_disposition") == 0) rc = cJSON_AddStringToObject(out, n, disp) ? 0 : -1;
        else if (strcmp(n, "lace_score") == 0) {
            /* readmission.sql: LOS points + 3 if emergency + Charlson (5 for 4+) + ED visits */
            int l = los < 1 ? 0 : los <= 3 ? los : los <= 6 ? 4 : los <= 13 ? 5 : 7;
            rc = add_num(out, n, l + (strcmp(atype, "emergency") == 0 ? 3 : 0) + (charlson >= 4 ? 5 : charlson) + ed6);
        } else if (strncmp(n, "cc_", 3) == 0) {
            /* SynPUF's beneficiary summary flags: no FHIR source, NULL as outside SynPUF */
            rc = cJSON_AddNullToObject(out, n) ? 0 : -1;
        } else {
            px_err_set(e, PX_ESTATE, "feature '%s' of set %s has no FHIR definition", n, si->name);
            px_err_hint(e, "this is a bug in prognos: features/fhir.c must define every feature column");
            cJSON_Delete(out);
            out = NULL;
            goto out;
        }
    }
    if (rc != 0) {
        cJSON_Delete(out);
        out = NULL;
        px_err_set(e, PX_ENOMEM, "out of memory");
    }
out:
    free(pats.v);
    free(encs.v);
    free(conds.v);
    free(procs.v);
    free(cur.v);
    free(stays);
    return out;
}
