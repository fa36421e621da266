/* etl_fhir_read.c: the database-free part of the FHIR loader (etl_fhir.c):
 * FHIR R4 Bulk Data NDJSON in, the six canonical tables out (temporary CSV
 * files), each row with the NDJSON file and line it came from.
 *
 * Two passes. Pass 1 reads every new NDJSON file of the batch: Organization,
 * Practitioner and Patient become canonical rows at once; Encounter, Condition
 * and Procedure are kept in a compact form, because a Condition's place in its
 * stay (rank, admitting, present on admission) is on the Encounter, and an
 * Encounter's facility may be an Organization read later. Other resource types
 * are counted as skipped, lines that are not resources rejected (etl_reject).
 * Pass 2 writes the stays, their diagnoses and procedures.
 *
 * The reading rules (which Encounters are inpatient stays, which codings are
 * used, admission type/source and disposition) are engine/fhir.h's, which
 * features/fhir.c uses too. Also the fuzz target's subject (tests/fuzz/fuzz_fhir.c). */
#include "engine/etl_int.h"
#include "engine/fhir.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINE (64u << 20) /* one resource per line; a larger one is rejected */

typedef struct fx_origin { int file; long long line; } fx_origin;

/* one canonical table being written */
typedef struct fx_out {
    FILE *f;
    fx_origin *orig; /* row k (line k + 2 of the CSV) came from orig[k] */
    long long rows, cap;
} fx_out;

typedef struct fx_dxref { char *cond; int rank; char admitting, poa; } fx_dxref;

typedef struct fx_enc {
    char *id;
    int file, stay;
    long long line;
    char *f[12];         /* canonical encounters columns, by index (NULL = empty) */
    char *fac, *att;     /* facility and attending references (resolved in pass 2) */
    int fac_kind, att_kind;
    fx_dxref *dx;
    int ndx;
} fx_enc;

typedef struct fx_code {
    char *id, *enc, *date;
    int file, dx, status; /* status: px_fhir_icd's 0/1/-1 */
    long long line;
    char sys[8], code[16];
    int rank, seq;        /* rank class for ordering; the seq given */
    char poa;
} fx_code;

typedef struct fx_skip { int file; char reason[160]; long long n; } fx_skip;

typedef struct fx_map_val { long long idx; } fx_map_val;

struct etl_fhir {
    etl_ctx *x;
    etl_input *files;
    int nfiles;
    fx_out out[PX_TAB__COUNT];
    fx_enc *enc;
    long long nenc, capenc;
    fx_code *code;
    long long ncode, capcode;
    fx_skip *skip;
    int nskip, capskip;
    long long *read_f, *skipped_f, *unmapped_f;
    px_keymap *ids;       /* (type, id) seen: duplicates */
    px_keymap *encs;      /* Encounter id -> index in enc */
    px_keymap *cond_enc;  /* Condition id -> index in enc (from Encounter.diagnosis) */
    px_keymap *org_ident; /* Organization identifier value -> index in strs */
    px_keymap *prac;      /* Practitioner id or identifier value -> index in strs */
    etl_codemap *codemap; /* --code-map, or NULL */
    char **strs;
    long long nstrs, capstrs;
    px_buf notes;         /* unmapped code systems: "system n" lines */
};
typedef struct etl_fhir fhir_ctx;

/* ---- small helpers ---------------------------------------------------------- */


static long long str_add(fhir_ctx *F, const char *s)
{
    if (F->nstrs == F->capstrs) {
        long long nc = F->capstrs ? F->capstrs * 2 : 256;
        char **nv = realloc(F->strs, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        F->strs = nv;
        F->capstrs = nc;
    }
    if (!(F->strs[F->nstrs] = strdup(s))) return -1;
    return F->nstrs++;
}

static void key_of(const char *domain, const char *v, unsigned char k[16]) { etl_digest(domain, v, strlen(v), k); }

static int map_set(fhir_ctx *F, px_keymap *m, const char *domain, const char *key, long long idx)
{
    unsigned char k[16];
    int existed = 0;
    key_of(domain, key, k);
    fx_map_val *v = px_keymap_put(m, k, &existed);
    if (!v) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    if (!existed) v->idx = idx;
    return 0;
}

static long long map_get(px_keymap *m, const char *domain, const char *key)
{
    unsigned char k[16];
    key_of(domain, key, k);
    fx_map_val *v = px_keymap_get(m, k);
    return v ? v->idx : -1;
}

static int skip(fhir_ctx *F, int file, const char *fmt, const char *arg)
{
    char reason[160];
    snprintf(reason, sizeof reason, fmt, arg);
    if (F->nskip >= 1000) snprintf(reason, sizeof reason, "other reasons (more than 1000 distinct)");
    F->skipped_f[file]++;
    for (int i = 0; i < F->nskip; i++)
        if (F->skip[i].file == file && strcmp(F->skip[i].reason, reason) == 0) {
            F->skip[i].n++;
            return 0;
        }
    if (F->nskip == F->capskip) {
        int nc = F->capskip ? F->capskip * 2 : 16;
        fx_skip *nv = realloc(F->skip, (size_t)nc * sizeof *nv);
        if (!nv) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
        F->skip = nv;
        F->capskip = nc;
    }
    fx_skip *s = &F->skip[F->nskip++];
    s->file = file;
    s->n = 1;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
    return 0;
}

/* Rejects a resource of the current NDJSON file at FHIR level (before it is a
 * canonical row): the stored row holds its type only, no identifier. */
static void reject_res(fhir_ctx *F, long long line, const char *type, const char *reason, const char *field,
                       const char *detail)
{
    char row[160] = "";
    if (type) {
        px_buf b = {0};
        px_buf_adds(&b, "{\"resourceType\":");
        px_buf_json_str(&b, type, etl_utf8_cut(type, strlen(type), 64));
        px_buf_adds(&b, "}");
        if (b.data) snprintf(row, sizeof row, "%s", b.data);
        px_buf_release(&b);
    }
    etl_reject(F->x, line, reason, field, detail, row[0] ? row : NULL);
}

/* One canonical CSV row: every field quoted; line ends inside values become
 * spaces, so that row k is line k + 2 of the file. */
static int out_row(fhir_ctx *F, int table, int file, long long line, char *const *v)
{
    fx_out *o = &F->out[table];
    const px_table *t = &px_canonical[table];
    if (o->rows == o->cap) {
        long long nc = o->cap ? o->cap * 2 : 1024;
        fx_origin *nv = realloc(o->orig, (size_t)nc * sizeof *nv);
        if (!nv) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
        o->orig = nv;
        o->cap = nc;
    }
    for (int i = 0; i < t->ncols; i++) {
        if (i) fputc(',', o->f);
        if (!v[i] || !*v[i]) continue;
        fputc('"', o->f);
        for (const char *p = v[i]; *p; p++) {
            if (*p == '"') fputs("\"\"", o->f);
            else if (*p == '\n' || *p == '\r') fputc(' ', o->f);
            else fputc(*p, o->f);
        }
        fputc('"', o->f);
    }
    fputc('\n', o->f);
    o->orig[o->rows].file = file;
    o->orig[o->rows].line = line;
    o->rows++;
    return ferror(o->f) ? px_err_set(F->x->e, PX_EIO, "cannot write a temporary file: %s", strerror(errno)) : 0;
}

/* ---- pass 1: resources -------------------------------------------------------------- */

static const char *ident_value(const cJSON *res, const char *system, const char *type_code)
{
    const cJSON *id;
    cJSON_ArrayForEach(id, cJSON_GetObjectItemCaseSensitive(res, "identifier")) {
        const char *sys = px_fhir_str(id, "system"), *v = px_fhir_str(id, "value");
        if (!v) continue;
        if (system && sys && strcmp(sys, system) == 0) return v;
        if (type_code) {
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(id, "type"), "coding")) {
                const char *code = px_fhir_str(c, "code");
                if (code && strcmp(code, type_code) == 0) return v;
            }
        }
    }
    return NULL;
}

/* The date part of a FHIR dateTime ("2020-01-02T..." -> "2020-01-02") into
 * buf; other forms as they are (the canonical checks refuse them). */
static const char *date_part(const char *s, char *buf, size_t len)
{
    if (!s) return NULL;
    if (strlen(s) > 10 && s[10] == 'T') {
        snprintf(buf, len, "%.10s", s);
        return buf;
    }
    return s;
}

static const char *ext_value(const cJSON *res, const char *url_suffix, const char *key, char *buf, size_t len)
{
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(res, "extension")) {
        const char *url = px_fhir_str(x, "url");
        size_t ul = url ? strlen(url) : 0, sl = strlen(url_suffix);
        if (ul < sl || strcmp(url + ul - sl, url_suffix) != 0) continue;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(x, key);
        if (cJSON_IsString(v)) return v->valuestring;
        if (cJSON_IsNumber(v)) {
            snprintf(buf, len, "%.0f", v->valuedouble);
            return buf;
        }
        if (cJSON_IsObject(v) && px_fhir_ref(v, NULL, buf, len) == 1) return buf;
    }
    return NULL;
}

static int do_organization(fhir_ctx *F, const cJSON *r, const char *id, int file, long long line)
{
    char *v[5] = {0}, beds[32];
    v[0] = (char *)id;
    v[1] = (char *)px_fhir_str(r, "name");
    const char *type = "other";
    const cJSON *t, *c;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(r, "type"))
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(t, "coding")) {
            const char *sys = px_fhir_str(c, "system");
            if (sys && strcmp(sys, PX_FHIR_CS_FACILITY_TYPE) == 0 && px_fhir_str(c, "code")) type = px_fhir_str(c, "code");
        }
    v[2] = (char *)type;
    const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "address"), 0);
    const char *state = px_fhir_str(a, "state");
    if (state && strlen(state) == 2) v[3] = (char *)state; /* a state's name rather than its code: left out */
    const char *b = ext_value(r, "beds", "valueInteger", beds, sizeof beds);
    if (!b) b = ext_value(r, "bed-count-extension", "valueInteger", beds, sizeof beds);
    if (b && atoll(b) > 0) v[4] = (char *)b;
    /* an Encounter may name it by identifier (Synthea's conditional references) */
    long long si = str_add(F, id);
    if (si < 0) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    const cJSON *idn;
    cJSON_ArrayForEach(idn, cJSON_GetObjectItemCaseSensitive(r, "identifier")) {
        const char *val = px_fhir_str(idn, "value");
        if (val && map_set(F, F->org_ident, "org", val, si) != 0) return F->x->e->code;
    }
    return out_row(F, PX_TAB_FACILITIES, file, line, v);
}

static int do_practitioner(fhir_ctx *F, const cJSON *r, const char *id, int file, long long line)
{
    char *v[4] = {0}, name[256] = "", fac[128];
    const char *npi = ident_value(r, "http://hl7.org/fhir/sid/us-npi", NULL);
    v[0] = (char *)(npi ? npi : id);
    const cJSON *n = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "name"), 0);
    if (px_fhir_str(n, "text")) {
        snprintf(name, sizeof name, "%s", px_fhir_str(n, "text"));
    } else if (n) {
        const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(n, "given"), 0);
        snprintf(name, sizeof name, "%s%s%s", cJSON_IsString(g) ? g->valuestring : "",
                 cJSON_IsString(g) && px_fhir_str(n, "family") ? " " : "",
                 px_fhir_str(n, "family") ? px_fhir_str(n, "family") : "");
    }
    v[1] = name;
    v[2] = (char *)ext_value(r, "/specialty", "valueCode", NULL, 0);
    v[3] = (char *)ext_value(r, "/main-facility", "valueReference", fac, sizeof fac);
    long long si = str_add(F, v[0]);
    if (si < 0) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    if (map_set(F, F->prac, "prac", id, si) != 0) return F->x->e->code;
    const cJSON *idn;
    cJSON_ArrayForEach(idn, cJSON_GetObjectItemCaseSensitive(r, "identifier")) {
        const char *val = px_fhir_str(idn, "value");
        if (val && map_set(F, F->prac, "prac", val, si) != 0) return F->x->e->code;
    }
    return out_row(F, PX_TAB_PROVIDERS, file, line, v);
}

static int do_patient(fhir_ctx *F, const cJSON *r, const char *id, int file, long long line)
{
    char *v[11] = {0}, dd[16];
    v[0] = (char *)id;
    v[1] = (char *)ident_value(r, NULL, "MR");
    v[2] = (char *)ident_value(r, "http://hl7.org/fhir/sid/us-ssn", NULL);
    const cJSON *n, *name = NULL;
    cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(r, "name")) {
        const char *use = px_fhir_str(n, "use");
        if (!name || (use && strcmp(use, "official") == 0)) name = n;
    }
    const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(name, "given"), 0);
    v[3] = cJSON_IsString(g) ? g->valuestring : NULL;
    v[4] = (char *)px_fhir_str(name, "family");
    v[5] = (char *)px_fhir_str(r, "birthDate");
    const char *gender = px_fhir_str(r, "gender");
    v[6] = gender && strcmp(gender, "male") == 0 ? "M" : gender && strcmp(gender, "female") == 0 ? "F" : "U";
    v[7] = (char *)px_fhir_str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "address"), 0), "postalCode");
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(r, "telecom")) {
        const char *sys = px_fhir_str(t, "system"), *val = px_fhir_str(t, "value");
        if (!sys || !val) continue;
        if (strcmp(sys, "phone") == 0 && !v[8]) v[8] = (char *)val;
        if (strcmp(sys, "email") == 0 && !v[9]) v[9] = (char *)val;
    }
    v[10] = (char *)date_part(px_fhir_str(r, "deceasedDateTime"), dd, sizeof dd);
    return out_row(F, PX_TAB_PATIENTS, file, line, v);
}

static int do_encounter(fhir_ctx *F, const cJSON *r, const char *id, int file, long long line)
{
    if (F->nenc == F->capenc) {
        long long nc = F->capenc ? F->capenc * 2 : 1024;
        fx_enc *nv = realloc(F->enc, (size_t)nc * sizeof *nv);
        if (!nv) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
        F->enc = nv;
        F->capenc = nc;
    }
    fx_enc *en = &F->enc[F->nenc];
    memset(en, 0, sizeof *en);
    en->id = strdup(id);
    en->file = file;
    en->line = line;
    en->stay = px_fhir_is_stay(r);
    if (!en->id || map_set(F, F->encs, "enc", id, F->nenc) != 0) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    F->nenc++;
    /* its diagnosis list: which Conditions are its own, and how */
    const cJSON *d;
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "diagnosis"));
    if (n > 0 && !(en->dx = calloc((size_t)n, sizeof *en->dx))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(r, "diagnosis")) {
        char cid[256];
        if (px_fhir_ref(cJSON_GetObjectItemCaseSensitive(d, "condition"), "Condition", cid, sizeof cid) != 1) continue;
        fx_dxref *x = &en->dx[en->ndx];
        char poa = 0;
        int rank = 0, adm = 0;
        px_fhir_enc_dx(r, cid, &rank, &adm, &poa);
        if (!(x->cond = strdup(cid))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
        x->rank = rank;
        x->admitting = (char)adm;
        x->poa = poa;
        if (map_set(F, F->cond_enc, "cond", cid, F->nenc - 1) != 0) return F->x->e->code;
        en->ndx++;
    }
    if (!en->stay) {
        const char *cls = px_fhir_str(cJSON_GetObjectItemCaseSensitive(r, "class"), "code");
        return skip(F, file, "Encounter of class %s: not an inpatient stay", cls ? cls : "(none)");
    }
    char ref[256];
    const char *val[12] = {0};
    val[0] = id;
    if (px_fhir_ref(cJSON_GetObjectItemCaseSensitive(r, "subject"), "Patient", ref, sizeof ref)) val[1] = ref;
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(r, "period");
    char a[16], b[16];
    val[4] = date_part(px_fhir_str(per, "start"), a, sizeof a);
    val[5] = date_part(px_fhir_str(per, "end"), b, sizeof b);
    val[6] = px_fhir_admission_type(r);
    val[7] = px_fhir_admission_source(r);
    val[8] = px_fhir_disposition(r);
    val[9] = px_fhir_str(cJSON_GetObjectItemCaseSensitive(r, "serviceType"), "text");
    for (int i = 0; i < 12; i++)
        if (val[i] && !(en->f[i] = strdup(val[i]))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    en->fac_kind = px_fhir_ref(cJSON_GetObjectItemCaseSensitive(r, "serviceProvider"), "Organization", ref, sizeof ref);
    if (en->fac_kind && !(en->fac = strdup(ref))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    /* the attending: ATND, else the primary performer, else the first practitioner */
    const cJSON *p, *best = NULL;
    int best_score = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "participant")) {
        int score = 1;
        const cJSON *t, *c;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(p, "type"))
            cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(t, "coding")) {
                const char *code = px_fhir_str(c, "code");
                if (code && strcmp(code, "ATND") == 0) score = 3;
                else if (code && strcmp(code, "PPRF") == 0 && score < 2) score = 2;
            }
        char pr[256];
        if (px_fhir_ref(cJSON_GetObjectItemCaseSensitive(p, "individual"), "Practitioner", pr, sizeof pr) &&
            score > best_score)
            best = p, best_score = score;
    }
    if (best) {
        en->att_kind = px_fhir_ref(cJSON_GetObjectItemCaseSensitive(best, "individual"), "Practitioner", ref, sizeof ref);
        if (!(en->att = strdup(ref))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    }
    return 0;
}

static int do_code(fhir_ctx *F, const cJSON *r, const char *id, int file, long long line, int dx)
{
    if (!px_fhir_usable(r))
        return skip(F, file, dx ? "Condition %s or refuted" : "Procedure %s or not done", "entered in error");
    if (F->ncode == F->capcode) {
        long long nc = F->capcode ? F->capcode * 2 : 4096;
        fx_code *nv = realloc(F->code, (size_t)nc * sizeof *nv);
        if (!nv) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
        F->code = nv;
        F->capcode = nc;
    }
    fx_code *c = &F->code[F->ncode];
    memset(c, 0, sizeof *c);
    c->file = file;
    c->line = line;
    c->dx = dx;
    char ref[256];
    if (!(c->id = strdup(id))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    if (px_fhir_ref(cJSON_GetObjectItemCaseSensitive(r, "encounter"), "Encounter", ref, sizeof ref) == 1 &&
        !(c->enc = strdup(ref)))
        return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    int valid;
    const char *other = NULL;
    const cJSON *concept = cJSON_GetObjectItemCaseSensitive(r, "code");
    c->status = px_fhir_icd(concept, !dx, c->sys, c->code, &valid, &other);
    if (c->status == 1 && F->codemap) { /* a crosswalk the user gave (etl_codemap.c) */
        const cJSON *cd;
        cJSON_ArrayForEach(cd, cJSON_GetObjectItemCaseSensitive(concept, "coding")) {
            const char *sys = px_fhir_str(cd, "system"), *code = px_fhir_str(cd, "code");
            if (!sys || !code) continue;
            const char *to = etl_codemap_get(F->codemap, sys, code), *bar = to ? strchr(to, '|') : NULL;
            if (!bar) continue;
            snprintf(c->sys, sizeof c->sys, "%.*s", (int)(bar - to), to);
            snprintf(c->code, sizeof c->code, "%s", bar + 1);
            c->status = 0;
            break;
        }
    }
    if (c->status == 1 && !(c->date = strdup(other))) return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    if (!dx && c->status == 0) {
        char d[16];
        const char *s = px_fhir_str(r, "performedDateTime");
        if (!s) s = px_fhir_str(cJSON_GetObjectItemCaseSensitive(r, "performedPeriod"), "start");
        if ((s = date_part(s, d, sizeof d)) && !(c->date = strdup(s)))
            return px_err_set(F->x->e, PX_ENOMEM, "out of memory");
    }
    F->ncode++;
    return 0;
}

/* Reads one NDJSON file, hashing what it reads against the digest taken before. */
static int read_file(fhir_ctx *F, int fi)
{
    etl_ctx *x = F->x;
    etl_input *in = &F->files[fi];
    x->in = in;
    FILE *f = fopen(in->path, "r");
    if (!f) return px_err_set(x->e, PX_EIO, "cannot open '%s': %s", in->path, strerror(errno));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        fclose(f);
        EVP_MD_CTX_free(md);
        return px_err_set(x->e, PX_ENOMEM, "cannot start a SHA-256 digest");
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long ln = 0, bytes = 0;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        EVP_DigestUpdate(md, line, (size_t)n);
        bytes += n;
        ln++;
        size_t len = (size_t)n;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        if (len == 0) continue; /* a blank line holds no resource */
        F->read_f[fi]++;
        if ((ln & 0x3ff) == 0) etl_progress(x, bytes);
        if (len > MAX_LINE) {
            reject_res(F, ln, NULL, "fhir_json", NULL, "a line over 64 MiB; the resource is not stored");
            continue;
        }
        cJSON *r = cJSON_ParseWithLength(line, len);
        if (!r) {
            const char *at = cJSON_GetErrorPtr();
            char detail[160];
            snprintf(detail, sizeof detail, "not valid JSON (at byte %lld of the line)",
                     at && at >= line && at <= line + len ? (long long)(at - line) + 1 : 1LL);
            reject_res(F, ln, NULL, "fhir_json", NULL, detail);
            continue;
        }
        const char *type = px_fhir_str(r, "resourceType"), *id = px_fhir_str(r, "id");
        char detail[200];
        if (!cJSON_IsObject(r) || !type || !*type) {
            reject_res(F, ln, NULL, "fhir_structure", "resourceType", "not a FHIR resource: no resourceType");
        } else if (strcmp(type, "Patient") && strcmp(type, "Encounter") && strcmp(type, "Condition") &&
                   strcmp(type, "Procedure") && strcmp(type, "Organization") && strcmp(type, "Practitioner")) {
            char t[72];
            snprintf(t, sizeof t, "%.*s", (int)etl_utf8_cut(type, strlen(type), 64), type);
            rc = skip(F, fi, "%s: a resource type the warehouse does not hold", t);
        } else if (!id || !*id || strlen(id) > 64) {
            snprintf(detail, sizeof detail, "%s without a valid id (1-64 characters)", type);
            reject_res(F, ln, type, "fhir_structure", "id", detail);
        } else {
            int dupl = 0;
            char key[160];
            snprintf(key, sizeof key, "%s/%s", type, id);
            unsigned char k[16];
            key_of("res", key, k);
            if (!px_keymap_put(F->ids, k, &dupl)) rc = px_err_set(x->e, PX_ENOMEM, "out of memory");
            else if (dupl) {
                snprintf(detail, sizeof detail, "%s with the same id as an earlier resource of this batch", type);
                reject_res(F, ln, type, "duplicate_key", "id", detail);
            } else if (strcmp(type, "Organization") == 0) rc = do_organization(F, r, id, fi, ln);
            else if (strcmp(type, "Practitioner") == 0) rc = do_practitioner(F, r, id, fi, ln);
            else if (strcmp(type, "Patient") == 0) rc = do_patient(F, r, id, fi, ln);
            else if (strcmp(type, "Encounter") == 0) rc = do_encounter(F, r, id, fi, ln);
            else rc = do_code(F, r, id, fi, ln, strcmp(type, "Condition") == 0);
        }
        cJSON_Delete(r);
    }
    if (rc == 0 && ferror(f)) rc = px_err_set(x->e, PX_EIO, "cannot read '%s': %s", in->path, strerror(errno));
    free(line);
    fclose(f);
    unsigned char d[32];
    char hex[65];
    EVP_DigestFinal_ex(md, d, NULL);
    EVP_MD_CTX_free(md);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (rc == 0 && (strcmp(hex, in->sha) != 0 || bytes != in->bytes)) {
        px_err_set(x->e, PX_ECORRUPT, "'%s' changed while it was being loaded; nothing was stored", in->name);
        px_err_hint(x->e, "load it again once whatever writes it has finished");
        return PX_ECORRUPT;
    }
    return rc;
}

/* ---- pass 2: stays, diagnoses, procedures ----------------------------------------- */

static int code_cmp(const void *a, const void *b)
{
    const fx_code *x = a, *y = b;
    int c = strcmp(x->enc ? x->enc : "", y->enc ? y->enc : "");
    if (c) return c;
    if (x->dx != y->dx) return x->dx ? -1 : 1;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int write_stays(fhir_ctx *F)
{
    for (long long i = 0; i < F->nenc; i++) {
        fx_enc *en = &F->enc[i];
        if (!en->stay) continue;
        char *v[12];
        memcpy(v, en->f, sizeof v);
        if (en->fac) {
            long long k = en->fac_kind == 2 ? map_get(F->org_ident, "org", en->fac) : -1;
            v[2] = k >= 0 ? F->strs[k] : en->fac;
        }
        if (en->att) {
            long long k = map_get(F->prac, "prac", en->att);
            v[3] = k >= 0 ? F->strs[k] : en->att;
        }
        int rc = out_row(F, PX_TAB_ENCOUNTERS, en->file, en->line, v);
        if (rc) return rc;
    }
    return 0;
}

/* Each Condition and Procedure: its stay, its place there (seq: the rank, 0 for
 * the admitting diagnosis, the unranked after the ranked by id), its code. */
static int write_codes(fhir_ctx *F)
{
    etl_ctx *x = F->x;
    long long keep = 0;
    for (long long i = 0; i < F->ncode; i++) {
        fx_code *c = &F->code[i];
        long long ei = c->enc ? map_get(F->encs, "enc", c->enc) : -1;
        int rc = 0;
        if (!c->enc && c->dx && (ei = map_get(F->cond_enc, "cond", c->id)) >= 0 && !(c->enc = strdup(F->enc[ei].id)))
            rc = px_err_set(x->e, PX_ENOMEM, "out of memory");
        const char *type = c->dx ? "Condition" : "Procedure";
        if (rc == 0 && !c->enc) rc = skip(F, c->file, "%s not of an encounter", type);
        else if (rc == 0 && ei >= 0 && !F->enc[ei].stay)
            rc = skip(F, c->file, "%s of an encounter that is not an inpatient stay", type);
        else if (rc == 0 && c->status == 1) {
            /* coded in another system only (SNOMED CT as Synthea writes): a warning, by system */
            x->in = &F->files[c->file];
            char detail[400];
            snprintf(detail, sizeof detail, "%s coded only in %.200s, not ICD-10-CM or ICD-9-CM; give --code-map FILE "
                     "to map it", type, c->date);
            etl_warn(x, c->line, "unmapped_code_system", "code", detail);
            F->unmapped_f[c->file]++;
            char reason[300];
            snprintf(reason, sizeof reason, "%s coded only in %.200s", type, c->date);
            rc = skip(F, c->file, "%s", reason);
        } else if (rc == 0) {
            c->rank = 1000000; /* unranked: after the ranked */
            if (ei >= 0)
                for (int k = 0; c->dx && k < F->enc[ei].ndx; k++)
                    if (strcmp(F->enc[ei].dx[k].cond, c->id) == 0) {
                        c->rank = F->enc[ei].dx[k].admitting ? 0 : F->enc[ei].dx[k].rank ? F->enc[ei].dx[k].rank : 1000000;
                        c->poa = F->enc[ei].dx[k].poa;
                    }
            F->code[keep++] = *c;
            continue;
        }
        free(c->id), free(c->enc), free(c->date);
        if (rc) { /* what is left of the list goes, so that nothing is freed twice */
            for (long long k = i + 1; k < F->ncode; k++) free(F->code[k].id), free(F->code[k].enc), free(F->code[k].date);
            F->ncode = keep;
            return rc;
        }
    }
    F->ncode = keep;
    if (F->ncode > 1) qsort(F->code, (size_t)F->ncode, sizeof *F->code, code_cmp);
    for (long long i = 0; i < F->ncode;) {
        long long j = i;
        int next = 0;
        while (j < F->ncode && strcmp(F->code[j].enc, F->code[i].enc) == 0 && F->code[j].dx == F->code[i].dx) {
            fx_code *c = &F->code[j];
            c->seq = c->rank < 1000000 ? c->rank : next + 1;
            if (c->seq > next) next = c->seq;
            j++;
        }
        for (long long k = i; k < j; k++) {
            fx_code *c = &F->code[k];
            char seq[16], poa[2] = {c->poa, 0};
            snprintf(seq, sizeof seq, "%d", c->seq);
            int rc;
            if (c->dx) {
                char *v[5] = {c->enc, seq, c->status == 0 ? c->sys : NULL, c->status == 0 ? c->code : NULL, poa};
                rc = out_row(F, PX_TAB_DIAGNOSES, c->file, c->line, v);
            } else {
                char *v[5] = {c->enc, seq, c->status == 0 ? c->sys : NULL, c->status == 0 ? c->code : NULL, c->date};
                rc = out_row(F, PX_TAB_PROCEDURES, c->file, c->line, v);
            }
            if (rc) return rc;
        }
        i = j;
    }
    return 0;
}

void etl_fhir_free(etl_fhir *F)
{
    if (!F) return;
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        if (F->out[t].f) fclose(F->out[t].f);
        free(F->out[t].orig);
    }
    for (long long i = 0; i < F->nenc; i++) {
        fx_enc *en = &F->enc[i];
        free(en->id), free(en->fac), free(en->att);
        for (int k = 0; k < 12; k++) free(en->f[k]);
        for (int k = 0; k < en->ndx; k++) free(en->dx[k].cond);
        free(en->dx);
    }
    free(F->enc);
    for (long long i = 0; i < F->ncode; i++) free(F->code[i].id), free(F->code[i].enc), free(F->code[i].date);
    free(F->code);
    free(F->skip);
    free(F->read_f), free(F->skipped_f), free(F->unmapped_f);
    px_keymap_free(F->ids), px_keymap_free(F->encs), px_keymap_free(F->cond_enc);
    px_keymap_free(F->org_ident), px_keymap_free(F->prac);
    etl_codemap_free(F->codemap);
    for (long long i = 0; i < F->nstrs; i++) free(F->strs[i]);
    free(F->strs);
    px_buf_release(&F->notes);
    free(F);
}

/* The skip reasons of file fi as a JSON object {"reason": n, ...}. */
void etl_fhir_skipped_json(const etl_fhir *F, int file, px_buf *b)
{
    int first = 1;
    px_buf_addc(b, '{');
    for (int i = 0; i < F->nskip; i++) {
        if (F->skip[i].file != file) continue;
        if (!first) px_buf_addc(b, ',');
        px_buf_json_str(b, F->skip[i].reason, strlen(F->skip[i].reason));
        px_buf_printf(b, ":%lld", F->skip[i].n);
        first = 0;
    }
    px_buf_addc(b, '}');
}

etl_fhir *etl_fhir_new(etl_ctx *x, etl_input *inputs, int n)
{
    fhir_ctx *F = calloc(1, sizeof *F);
    if (!F) {
        px_err_set(x->e, PX_ENOMEM, "out of memory");
        return NULL;
    }
    F->x = x;
    F->files = inputs;
    F->nfiles = n;
    F->read_f = calloc((size_t)n + 1, sizeof *F->read_f);
    F->skipped_f = calloc((size_t)n + 1, sizeof *F->skipped_f);
    F->unmapped_f = calloc((size_t)n + 1, sizeof *F->unmapped_f);
    F->ids = px_keymap_new(0);
    F->encs = px_keymap_new(sizeof(fx_map_val));
    F->cond_enc = px_keymap_new(sizeof(fx_map_val));
    F->org_ident = px_keymap_new(sizeof(fx_map_val));
    F->prac = px_keymap_new(sizeof(fx_map_val));
    if (!F->read_f || !F->skipped_f || !F->unmapped_f || !F->ids || !F->encs || !F->cond_enc || !F->org_ident ||
        !F->prac) {
        px_err_set(x->e, PX_ENOMEM, "out of memory");
        etl_fhir_free(F);
        return NULL;
    }
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        const px_table *tb = &px_canonical[t];
        if (!(F->out[t].f = tmpfile())) {
            px_err_set(x->e, PX_EIO, "cannot create a temporary file: %s", strerror(errno));
            etl_fhir_free(F);
            return NULL;
        }
        for (int i = 0; i < tb->ncols; i++) fprintf(F->out[t].f, "%s%s", i ? "," : "", tb->cols[i].name);
        fputc('\n', F->out[t].f);
    }
    return F;
}

int etl_fhir_read(etl_fhir *F)
{
    etl_ctx *x = F->x;
    int rc = 0;
    if (x->p->code_map && !(F->codemap = etl_codemap_read(x->p->code_map, x->e))) return x->e->code;
    for (int i = 0; i < F->nfiles && rc == 0; i++) {
        if (F->files[i].prior_batch) continue;
        x->read = x->rejected = x->loaded = 0;
        rc = read_file(F, i);
        x->done_bytes += F->files[i].bytes;
    }
    if (rc == 0) rc = write_stays(F);
    if (rc == 0) rc = write_codes(F);
    for (int t = 0; rc == 0 && t < PX_TAB__COUNT; t++)
        if (fflush(F->out[t].f) != 0 || fseeko(F->out[t].f, 0, SEEK_SET) != 0)
            rc = px_err_set(x->e, PX_EIO, "cannot read back a temporary file: %s", strerror(errno));
    return rc;
}

FILE *etl_fhir_table(const etl_fhir *F, int table, long long *rows)
{
    if (rows) *rows = F->out[table].rows;
    return F->out[table].f;
}

void etl_fhir_counts(const etl_fhir *F, int file, long long *read, long long *skipped)
{
    *read = F->read_f[file];
    *skipped = F->skipped_f[file];
}

void etl_fhir_origin(const etl_fhir *F, int table, long long row, const char **file, long long *line)
{
    *file = F->files[F->out[table].orig[row].file].name;
    *line = F->out[table].orig[row].line;
}

long long etl_fhir_unmapped(const etl_fhir *F, int file) { return F->unmapped_f[file]; }
