/* registry.c: registering versions (artifacts first, then the row, under a
 * per-model advisory lock), resolving references, verified loading and
 * verification, and aliases. A version's artifacts are never rewritten; a
 * registration that fails after writing them removes them again. */
#include "registry/internal.h"
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The registry's per-model lock: class PX_LOCK_REGISTRY_CLASS (engine.h), the
 * second key hashtext(name). */
int reg_lock_name(PGconn *c, const char *name, px_err *e)
{
    char cls[16];
    snprintf(cls, sizeof cls, "%d", PX_LOCK_REGISTRY_CLASS);
    const char *p[2] = {cls, name};
    return px_db_query(c, e, "cannot lock the model in the registry", NULL,
                       "SELECT pg_advisory_xact_lock($1::int, hashtext($2))", 2, p);
}

int reg_row_digests(PGconn *c, const char *name, int version, char manifest_sha[65], char model_sha[65], px_err *e)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *p[2] = {name, ver};
    PGresult *r = NULL;
    int rc = px_db_query(c, e, "cannot read the registry", &r,
                       "SELECT manifest_sha256, model_sha256 FROM registry.versions WHERE name = $1 AND version = $2",
                       2, p);
    if (rc != 0) return rc;
    if (PQntuples(r) != 1) {
        rc = px_err_set(e, PX_ENOTFOUND, "model '%s' has no version %d", name, version);
    } else {
        snprintf(manifest_sha, 65, "%s", PQgetvalue(r, 0, 0));
        snprintf(model_sha, 65, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return rc;
}

static int is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* register and promote run their own transaction (the per-model lock is
 * transaction-scoped): a caller's open transaction would be committed by them. */
static int check_idle(PGconn *c, const char *what, px_err *e)
{
    if (PQtransactionStatus(c) == PQTRANS_IDLE) return 0;
    return px_err_set(e, PX_ESTATE, "cannot %s inside an open transaction", what);
}

static void rollback(PGconn *c)
{
    PGresult *r = PQexec(c, "ROLLBACK");
    PQclear(r);
}

/* ---- artifacts of a new version --------------------------------------------- */

/* A CSV field, quoted when it holds a comma, quote or line break (RFC 4180). */
static int csv_field(px_buf *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) return px_buf_adds(b, s);
    int rc = px_buf_addc(b, '"');
    for (const char *p = s; *p && rc == 0; p++) rc = *p == '"' ? px_buf_adds(b, "\"\"") : px_buf_addc(b, *p);
    return rc ? rc : px_buf_addc(b, '"');
}

/* coefficients.csv: estimates on the features' original scale with 95% Wald
 * intervals (estimate +- z_0.975 * se), and the exponentiated estimate and
 * interval: odds ratios for the logit, ratios of means for the log-link Poisson
 * GLM. Empty (no file) for SVMs, which have no coefficients. */
static int coefficients_csv(const px_model *m, px_buf *b, px_err *e)
{
    static const double z = 1.959963984540054; /* qnorm(0.975) */
    size_t n = 0;
    const px_term *t = px_model_terms(m, &n);
    px_algo a = px_model_algo(m);
    if (n == 0 || !t) return 0;
    int rc = px_buf_adds(b, a == PX_ALGO_LOGIT ? "term,estimate,se,lower,upper,odds_ratio,or_lower,or_upper\n"
                                               : "term,estimate,se,lower,upper,rate_ratio,rr_lower,rr_upper\n");
    for (size_t i = 0; i < n && rc == 0; i++) {
        double lo = t[i].beta - z * t[i].se, hi = t[i].beta + z * t[i].se;
        rc = csv_field(b, t[i].name);
        if (rc == 0)
            rc = px_buf_printf(b, ",%.10g,%.10g,%.10g,%.10g,%.10g,%.10g,%.10g\n", t[i].beta, t[i].se, lo, hi,
                               exp(t[i].beta), exp(lo), exp(hi));
    }
    return rc ? px_err_set(e, PX_ENOMEM, "out of memory") : 0;
}

/* The model's inputs as fitted: kinds, scaling, training ranges and levels. */
static cJSON *feature_schema(const px_model *m)
{
    cJSON *arr = cJSON_CreateArray();
    size_t k = px_model_nfeatures(m);
    for (size_t j = 0; arr && j < k; j++) {
        const px_feature_info *f = px_model_feature(m, j);
        cJSON *o = cJSON_CreateObject();
        if (!o || !f) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", f->name);
        cJSON_AddStringToObject(o, "kind", f->kind == PX_COL_NUMERIC ? "numeric" : "categorical");
        cJSON_AddBoolToObject(o, "dropped", f->dropped != 0);
        if (f->kind == PX_COL_NUMERIC) {
            cJSON_AddNumberToObject(o, "mean", f->mean);
            cJSON_AddNumberToObject(o, "sd", f->sd);
            cJSON_AddNumberToObject(o, "min", f->min);
            cJSON_AddNumberToObject(o, "max", f->max);
        } else {
            cJSON *lv = cJSON_AddArrayToObject(o, "levels");
            for (size_t l = 0; lv && l < f->nlevels; l++) cJSON_AddItemToArray(lv, cJSON_CreateString(f->levels[l]));
            if (f->ref < f->nlevels) cJSON_AddStringToObject(o, "reference", f->levels[f->ref]);
        }
    }
    return arr;
}

/* The signing key's identity: SHA-256 of signing.pub's bytes. "" when unreadable. */
static void key_id(const char *pub, char out[65])
{
    unsigned char *d = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (px_file_read(pub, 16384, &d, &n, NULL) == 0) px_sha256_hex(d, n, out);
    free(d);
}

static int check_new(const px_reg_new *v, px_err *e)
{
    if (!v || !v->model) return px_err_set(e, PX_EINVAL, "cannot register: no model given");
    if (!reg_valid_name(v->name))
        return px_err_set(e, PX_EINVAL, "cannot register model '%s': the name must match [a-z][a-z0-9_]{0,62}",
                          v->name ? v->name : "");
    const char *algo = px_algo_name(px_model_algo(v->model));
    if (!v->algo || strcmp(v->algo, algo) != 0)
        return px_err_set(e, PX_EINVAL, "cannot register model '%s': algo '%s' but the model is '%s'", v->name,
                          v->algo ? v->algo : "", algo);
    int binary = strcmp(algo, "logit") == 0 || strcmp(algo, "svc") == 0;
    if (!v->task || strcmp(v->task, binary ? "binary" : "regression") != 0)
        return px_err_set(e, PX_EINVAL, "cannot register model '%s': task '%s' does not fit a %s model", v->name,
                          v->task ? v->task : "", algo);
    if (!is_hex64(v->fingerprint))
        return px_err_set(e, PX_EINVAL, "cannot register model '%s': the fingerprint is not a SHA-256", v->name);
    if (v->definition_hash && *v->definition_hash && !is_hex64(v->definition_hash))
        return px_err_set(e, PX_EINVAL, "cannot register model '%s': the definition hash is not a SHA-256", v->name);
    if (!v->feature_table || !*v->feature_table || !v->label || !*v->label)
        return px_err_set(e, PX_EINVAL, "cannot register model '%s': feature table and label are required", v->name);
    return 0;
}

/* Builds the manifest without its "files" (reg_write_dir adds those). */
static cJSON *manifest_new(const px_reg_new *v, int version, const cJSON *params, const cJSON *split,
                           const cJSON *batches, const char *keyid, px_err *e)
{
    cJSON *m = cJSON_CreateObject();
    cJSON *feats = feature_schema(v->model);
    if (!m || !feats) goto oom;
    cJSON_AddStringToObject(m, "format", REG_MANIFEST_FORMAT);
    cJSON_AddStringToObject(m, "name", v->name);
    cJSON_AddNumberToObject(m, "version", version);
    cJSON_AddStringToObject(m, "algo", v->algo);
    cJSON_AddStringToObject(m, "task", v->task);
    cJSON_AddStringToObject(m, "feature_set", v->feature_set ? v->feature_set : "");
    cJSON_AddStringToObject(m, "feature_table", v->feature_table);
    cJSON_AddStringToObject(m, "definition_hash", v->definition_hash ? v->definition_hash : "");
    cJSON_AddStringToObject(m, "label", v->label);
    cJSON_AddStringToObject(m, "fingerprint", v->fingerprint);
    cJSON_AddItemToObject(m, "params", cJSON_Duplicate(params, 1));
    cJSON_AddItemToObject(m, "split", cJSON_Duplicate(split, 1));
    cJSON_AddItemToObject(m, "source_batches", cJSON_Duplicate(batches, 1));
    cJSON_AddItemToObject(m, "features", feats);
    feats = NULL;
    cJSON_AddStringToObject(m, "key_id", keyid);
    /* cJSON's adders fail quietly on ENOMEM: count what landed */
    if (cJSON_GetArraySize(m) != 15) goto oom;
    return m;
oom:
    cJSON_Delete(m);
    cJSON_Delete(feats);
    px_err_set(e, PX_ENOMEM, "out of memory");
    return NULL;
}

int reg_find_same(PGconn *c, const char *name, const char *fingerprint, const char *algo, const char *params_json,
                  const char *definition_hash, int *version, px_err *e)
{
    PGresult *r = NULL;
    const char *p[5] = {name, fingerprint, algo, params_json, definition_hash ? definition_hash : ""};
    *version = 0;
    int rc = px_db_query(c, e, "cannot read the registry", &r,
                         "SELECT version FROM registry.versions WHERE name = $1 AND fingerprint = $2 AND algo = $3"
                         " AND params = $4::jsonb AND definition_hash = $5 ORDER BY version LIMIT 1",
                         5, p);
    if (rc == 0 && PQntuples(r) == 1) *version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

int px_reg_register(PGconn *c, const px_config *cfg, const px_reg_new *v, int *version, px_err *e)
{
    cJSON *params = NULL, *split = NULL, *metrics = NULL, *ref = NULL, *batches = NULL, *manifest = NULL;
    char *metrics_text = NULL, *ref_text = NULL;
    px_buf model = {0}, coef = {0};
    PGresult *r = NULL;
    char priv[4200], pub[4200], mdir[4200], dir[4200], tmp[4300], vs[16], msha[65], modsha[65], kid[65];
    int rc, in_tx = 0, wrote = 0, ver = 0;
    *version = 0;
    if ((rc = check_new(v, e)) != 0) return rc;
    if ((rc = check_idle(c, "register a model version", e)) != 0) return rc;
    if (!(params = reg_json_parse(v->params_json, "{}", 0, "params", e)) ||
        !(split = reg_json_parse(v->split_json, "{}", 0, "split", e)) ||
        !(metrics = reg_json_parse(v->metrics_json, "{}", 0, "metrics", e)) ||
        !(ref = reg_json_parse(v->reference_json, "{}", 0, "reference distributions", e)) ||
        !(batches = reg_json_parse(v->source_batches, "[]", 1, "source batches", e))) {
        rc = PX_EINVAL;
        goto done;
    }
    if ((rc = px_reg_keygen(cfg, e)) != 0) goto done;
    if ((rc = reg_key_paths(cfg, priv, sizeof priv, pub, sizeof pub, e)) != 0) goto done;
    key_id(pub, kid);
    if ((rc = px_model_save(v->model, &model, e)) != 0) goto done;
    if ((rc = coefficients_csv(v->model, &coef, e)) != 0) goto done;
    if (!(metrics_text = reg_json_print(metrics)) || !(ref_text = reg_json_print(ref))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    px_sha256_hex(model.data, model.len, modsha);

    if ((rc = px_db_query(c, e, "cannot start a registry transaction", NULL, "BEGIN", 0, NULL)) != 0) goto done;
    in_tx = 1;
    if ((rc = reg_lock_name(c, v->name, e)) != 0) goto done;
    {
        char *ptext = cJSON_PrintUnformatted(params);
        int same = 0;
        rc = reg_find_same(c, v->name, v->fingerprint, v->algo, ptext ? ptext : "{}", v->definition_hash, &same, e);
        free(ptext);
        if (rc != 0) goto done;
        if (same) {
            *version = same;
            rc = px_err_set(e, PX_ENOTHING,
                            "model '%s' v%d was trained on the same data with the same algorithm and parameters; "
                            "nothing registered", v->name, *version);
            goto done;
        }
    }
    const char *p1[1] = {v->name};
    if ((rc = px_db_query(c, e, "cannot read the registry", &r,
                        "SELECT coalesce(max(version), 0) + 1 FROM registry.versions WHERE name = $1", 1, p1)) != 0)
        goto done;
    ver = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    r = NULL;

    if ((rc = reg_dir(cfg, v->name, 0, mdir, sizeof mdir, e)) != 0) goto done;
    if ((rc = reg_dir(cfg, v->name, ver, dir, sizeof dir, e)) != 0) goto done;
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    if ((rc = px_mkdir_p(mdir, 0755, e)) != 0) goto done;
    /* We hold the model's lock and no row has this version: a directory of
     * that name is left over from a registration that died before COMMIT. */
    if ((rc = reg_rmdir(tmp, e)) != 0) goto done;
    struct stat st;
    if (stat(dir, &st) == 0) {
        px_log(PX_LOG_WARN, "registry: removing unregistered artifacts of '%s' v%d left by a failed registration",
               v->name, ver);
        if ((rc = reg_rmdir(dir, e)) != 0) goto done;
    }
    if (!(manifest = manifest_new(v, ver, params, split, batches, kid, e))) {
        rc = PX_ENOMEM;
        goto done;
    }
    reg_file files[6];
    size_t nf = 0;
    files[nf++] = (reg_file){"model.bin", (const unsigned char *)model.data, model.len};
    files[nf++] = (reg_file){"metrics.json", (const unsigned char *)metrics_text, strlen(metrics_text)};
    files[nf++] = (reg_file){"reference.json", (const unsigned char *)ref_text, strlen(ref_text)};
    if (v->calibration_csv && *v->calibration_csv)
        files[nf++] = (reg_file){"calibration.csv", (const unsigned char *)v->calibration_csv,
                                 strlen(v->calibration_csv)};
    if (coef.len) files[nf++] = (reg_file){"coefficients.csv", (const unsigned char *)coef.data, coef.len};
    if (v->hierarchical_json && *v->hierarchical_json)
        files[nf++] = (reg_file){"hierarchical.json", (const unsigned char *)v->hierarchical_json,
                                 strlen(v->hierarchical_json)};
    if ((rc = reg_write_dir(tmp, dir, manifest, files, nf, priv, msha, e)) != 0) goto done;
    wrote = 1;

    snprintf(vs, sizeof vs, "%d", ver);
    {
        char *ptext = cJSON_PrintUnformatted(params), *stext = cJSON_PrintUnformatted(split);
        char *mtext = cJSON_PrintUnformatted(metrics), *btext = cJSON_PrintUnformatted(batches);
        const char *p[16] = {v->name, vs, v->algo, v->task, ptext, v->feature_set ? v->feature_set : "",
                             v->feature_table, v->label, v->definition_hash ? v->definition_hash : "",
                             v->fingerprint, stext, mtext, btext, dir, msha, modsha};
        if (!ptext || !stext || !mtext || !btext) rc = px_err_set(e, PX_ENOMEM, "out of memory");
        else
            rc = px_db_query(c, e, "cannot record the version in the registry", NULL,
                           "INSERT INTO registry.versions (name, version, algo, task, params, feature_set,"
                           " feature_table, label, definition_hash, fingerprint, split, metrics, source_batches,"
                           " artifact_dir, manifest_sha256, model_sha256, gates)"
                           " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb,"
                           " $13::jsonb, $14, $15, $16,"
                           /* the quality gates' verdict, from the signed metrics.json (008_gates) */
                           " CASE WHEN jsonb_typeof($12::jsonb->'gates') = 'object' THEN $12::jsonb->'gates'"
                           " ELSE '{}' END)",
                           16, p);
        free(ptext);
        free(stext);
        free(mtext);
        free(btext);
        if (rc != 0) goto done;
    }
    if ((rc = px_db_query(c, e, "cannot commit the registration", NULL, "COMMIT", 0, NULL)) != 0) goto done;
    in_tx = 0;
    *version = ver;
    px_log(PX_LOG_INFO, "registry: registered '%s' v%d (manifest %.16s)", v->name, ver, msha);
done:
    PQclear(r);
    if (in_tx) rollback(c);
    /* no row, no artifacts (a COMMIT that failed is treated as not done) */
    if (rc != 0 && wrote) reg_rmdir(dir, NULL);
    cJSON_Delete(params);
    cJSON_Delete(split);
    cJSON_Delete(metrics);
    cJSON_Delete(ref);
    cJSON_Delete(batches);
    cJSON_Delete(manifest);
    free(metrics_text);
    free(ref_text);
    px_buf_release(&model);
    px_buf_release(&coef);
    return rc;
}

/* ---- references ---------------------------------------------------------------- */

/* "3" or "v3": 1..INT_MAX without signs, spaces or leading zeros. */
static int parse_version(const char *s, int *v)
{
    if (*s == 'v') s++;
    if (*s < '1' || *s > '9' || strlen(s) > 9) return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    *v = atoi(s);
    return 0;
}

int px_reg_resolve(PGconn *c, const char *name, const char *ref, int *version, px_err *e)
{
    PGresult *r = NULL;
    int rc = 0, want = 0;
    *version = 0;
    if (!reg_valid_name(name)) return px_err_set(e, PX_EINVAL, "invalid model name '%s'", name ? name : "");
    const char *p[2] = {name, ref};
    if (!ref || !*ref) {
        /* no reference: the champion when there is one, else the latest version */
        rc = px_db_query(c, e, "cannot read the registry", &r,
                       "SELECT coalesce((SELECT version FROM registry.aliases WHERE name = $1 AND alias = 'champion'),"
                       " (SELECT max(version) FROM registry.versions WHERE name = $1))",
                       1, p);
    } else if (strcmp(ref, "champion") == 0 || strcmp(ref, "challenger") == 0) {
        rc = px_db_query(c, e, "cannot read the registry", &r,
                       "SELECT version FROM registry.aliases WHERE name = $1 AND alias = $2", 2, p);
    } else if (strcmp(ref, "latest") == 0) {
        rc = px_db_query(c, e, "cannot read the registry", &r,
                       "SELECT max(version) FROM registry.versions WHERE name = $1", 1, p);
    } else if (parse_version(ref, &want) == 0) {
        char vs[16];
        snprintf(vs, sizeof vs, "%d", want);
        p[1] = vs;
        rc = px_db_query(c, e, "cannot read the registry", &r,
                       "SELECT version FROM registry.versions WHERE name = $1 AND version = $2", 2, p);
    } else {
        px_err_set(e, PX_EINVAL, "invalid version reference '%s'", ref);
        px_err_hint(e, "use a number (3 or v3), champion, challenger or latest");
        return PX_EINVAL;
    }
    if (rc != 0) return rc;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
        *version = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        return 0;
    }
    PQclear(r);
    /* say which part is missing: the model, or the version / alias */
    if ((rc = px_db_query(c, e, "cannot read the registry", &r,
                        "SELECT count(*) FROM registry.versions WHERE name = $1", 1, p)) != 0)
        return rc;
    int any = atoi(PQgetvalue(r, 0, 0)) > 0;
    PQclear(r);
    if (!any) return px_err_set(e, PX_ENOTFOUND, "no model named '%s' in the registry", name);
    if (want) return px_err_set(e, PX_ENOTFOUND, "model '%s' has no version %d", name, want);
    return px_err_set(e, PX_ENOTFOUND, "model '%s' has no %s", name, ref);
}

/* ---- verified reading ------------------------------------------------------- */

/* Checks every other file of an open manifest, then parses model.bin after its
 * digest checked out, and checks it agrees with the manifest. Caller frees. */
static px_model *model_from(const reg_manifest *m, const char *dir, px_err *e)
{
    unsigned char *bytes = NULL;
    size_t len = 0;
    /* a version is loaded whole or not at all: any altered, missing or added
     * file means the directory is not what was signed */
    if (reg_manifest_check_all(m, dir, "model.bin", e) != 0) return NULL;
    if (reg_manifest_read(m, dir, "model.bin", &bytes, &len, e) != 0) {
        if (e && e->code == PX_ENOTFOUND) px_err_wrap(e, PX_ECORRUPT, "%s: the manifest lists no model.bin", m->ctx);
        return NULL;
    }
    px_model *model = px_model_load(bytes, len, e);
    free(bytes);
    if (!model) {
        px_err_wrap(e, PX_ECORRUPT, "%s: model.bin does not parse", m->ctx);
        return NULL;
    }
    const cJSON *algo = cJSON_GetObjectItemCaseSensitive(m->json, "algo");
    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(m->json, "features");
    if (!cJSON_IsString(algo) || strcmp(algo->valuestring, px_algo_name(px_model_algo(model))) != 0 ||
        (size_t)cJSON_GetArraySize(feats) != px_model_nfeatures(model)) {
        px_err_set(e, PX_ECORRUPT, "%s: model.bin does not match its manifest (algorithm or features)", m->ctx);
        px_model_free(model);
        return NULL;
    }
    return model;
}

static int pub_path(const px_config *cfg, char *pub, size_t n, px_err *e)
{
    char priv[4200];
    return reg_key_paths(cfg, priv, sizeof priv, pub, n, e);
}

int px_reg_read_file(const px_config *cfg, const char *name, int version, const char *file, unsigned char **data,
                     size_t *len, px_err *e)
{
    char dir[4200], pub[4200];
    reg_manifest m;
    int rc;
    *data = NULL;
    *len = 0;
    if ((rc = reg_dir(cfg, name, version, dir, sizeof dir, e)) != 0) return rc;
    if ((rc = pub_path(cfg, pub, sizeof pub, e)) != 0) return rc;
    if ((rc = reg_manifest_open(dir, pub, name, version, "cannot read", &m, e)) != 0) return rc;
    rc = reg_manifest_read(&m, dir, file, data, len, e);
    reg_manifest_release(&m);
    return rc;
}

px_model *px_reg_load_dir(const char *dir, const char *pubkey_path, px_err *e)
{
    reg_manifest m;
    /* In the registry's layout (.../<name>/<version>) the path names the version:
     * errors then name it too, and the signed manifest must be that version's,
     * so a validly signed older version copied over a newer one is refused. */
    char name[64] = "", path[4200];
    int version = 0, n = snprintf(path, sizeof path, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        px_err_set(e, PX_EINVAL, "path too long: '%s'", dir);
        return NULL;
    }
    while (n > 1 && path[n - 1] == '/') path[--n] = '\0';
    char *base = strrchr(path, '/');
    if (base && parse_version(base + 1, &version) == 0 && base[1] != 'v') {
        *base = '\0';
        const char *pn = strrchr(path, '/');
        pn = pn ? pn + 1 : path;
        if (reg_valid_name(pn)) memcpy(name, pn, strlen(pn) + 1); /* at most 63 characters */
    }
    if (reg_manifest_open(dir, pubkey_path, name[0] ? name : NULL, name[0] ? version : 0, "cannot load", &m, e) != 0)
        return NULL;
    px_model *model = model_from(&m, dir, e);
    reg_manifest_release(&m);
    return model;
}

int reg_open_version(PGconn *c, const px_config *cfg, const char *name, int version, const char *verb, char *dir,
                     size_t dirlen, reg_manifest *m, px_err *e)
{
    char pub[4200], msha[65], modsha[65], got[65];
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = reg_row_digests(c, name, version, msha, modsha, e)) != 0) return rc;
    if ((rc = reg_dir(cfg, name, version, dir, dirlen, e)) != 0) return rc;
    if ((rc = pub_path(cfg, pub, sizeof pub, e)) != 0) return rc;
    if ((rc = reg_manifest_open(dir, pub, name, version, verb, m, e)) != 0) return rc;
    px_sha256_hex(m->bytes, m->len, got);
    if (strcmp(got, msha) != 0) {
        rc = px_err_set(e, PX_ECORRUPT, "%s: manifest.json differs from the one registered", m->ctx);
        px_err_detail(e, "registered %s, found %s", msha, got);
        reg_manifest_release(m);
        return rc;
    }
    /* model.bin's digest in the signed manifest must be the registered one too */
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m->json, "files"), "model.bin");
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(mb, "sha256");
    if (!cJSON_IsString(sha) || strcmp(sha->valuestring, modsha) != 0) {
        rc = px_err_set(e, PX_ECORRUPT, "%s: model.bin differs from the one registered", m->ctx);
        reg_manifest_release(m);
    }
    return rc;
}

px_model *px_reg_load_version(PGconn *c, const px_config *cfg, const char *name, int version, const char *extra,
                              unsigned char **data, size_t *len, px_err *e)
{
    char dir[4200];
    reg_manifest m;
    if (data) *data = NULL;
    if (len) *len = 0;
    /* the row's digests bind the manifest: a manifest edited and re-signed with
     * this installation's key is not the one registered */
    if (reg_open_version(c, cfg, name, version, "cannot load", dir, sizeof dir, &m, e) != 0) return NULL;
    px_model *model = model_from(&m, dir, e);
    if (model && extra && data && len) {
        /* from the same verified manifest, so the model and the file are one version */
        px_err fe = {0};
        if (reg_manifest_read(&m, dir, extra, data, len, &fe) != 0 && fe.code != PX_ENOTFOUND) {
            if (e) *e = fe;
            px_model_free(model);
            model = NULL;
        }
    }
    reg_manifest_release(&m);
    return model;
}

px_model *px_reg_load(PGconn *c, const px_config *cfg, const char *name, const char *ref, int *version, px_err *e)
{
    int v = 0;
    if (version) *version = 0;
    if (px_reg_resolve(c, name, ref, &v, e) != 0) return NULL;
    px_model *model = px_reg_load_version(c, cfg, name, v, NULL, NULL, NULL, e);
    if (model && version) *version = v;
    return model;
}

int px_reg_verify(PGconn *c, const px_config *cfg, const char *name, int version, px_err *e)
{
    char dir[4200];
    reg_manifest m;
    int rc;
    if ((rc = reg_open_version(c, cfg, name, version, "cannot verify", dir, sizeof dir, &m, e)) != 0) return rc;
    px_model *model = model_from(&m, dir, e);
    if (!model) {
        rc = PX_ECORRUPT;
        goto done;
    }
    px_model_free(model);
    /* the JSON artifacts must parse too: show and card read them */
    static const char *const json_files[] = {"metrics.json", "reference.json"};
    for (size_t i = 0; i < 2; i++) {
        unsigned char *d = NULL;
        size_t n = 0;
        if ((rc = reg_manifest_read(&m, dir, json_files[i], &d, &n, e)) != 0) {
            if (rc == PX_ENOTFOUND) rc = px_err_wrap(e, PX_ECORRUPT, "%s: the manifest lists no %s", m.ctx, json_files[i]);
            goto done;
        }
        cJSON *j = cJSON_ParseWithLength((const char *)d, n);
        free(d);
        if (!j) {
            rc = px_err_set(e, PX_ECORRUPT, "%s: %s is not JSON", m.ctx, json_files[i]);
            goto done;
        }
        cJSON_Delete(j);
    }
done:
    reg_manifest_release(&m);
    return rc;
}

/* ---- aliases -------------------------------------------------------------------- */

int px_reg_promote(PGconn *c, const px_config *cfg, const char *name, int version, const char *alias,
                   const char *reason, px_err *e)
{
    PGresult *r = NULL;
    char vs[16], from[16] = "";
    int rc, in_tx = 0;
    if (!alias || !*alias) alias = "champion";
    if (strcmp(alias, "champion") != 0 && strcmp(alias, "challenger") != 0)
        return px_err_set(e, PX_EINVAL, "invalid alias '%s' (champion or challenger)", alias);
    if (!reg_valid_name(name)) return px_err_set(e, PX_EINVAL, "invalid model name '%s'", name ? name : "");
    snprintf(vs, sizeof vs, "%d", version);
    if (!reason) reason = "";
    if ((rc = check_idle(c, "promote a model version", e)) != 0) return rc;
    if ((rc = px_db_query(c, e, "cannot start a registry transaction", NULL, "BEGIN", 0, NULL)) != 0) return rc;
    in_tx = 1;
    if ((rc = reg_lock_name(c, name, e)) != 0) goto done;
    const char *p2[2] = {name, vs};
    if ((rc = px_db_query(c, e, "cannot read the registry", &r,
                        "SELECT 1 FROM registry.versions WHERE name = $1 AND version = $2", 2, p2)) != 0)
        goto done;
    if (PQntuples(r) != 1) {
        rc = px_err_set(e, PX_ENOTFOUND, "cannot promote: model '%s' has no version %d", name, version);
        goto done;
    }
    PQclear(r);
    r = NULL;
    /* the invariant every alias keeps: it points at a version whose artifacts
     * verify (a version that does not would not load in the server) */
    if ((rc = px_reg_verify(c, cfg, name, version, e)) != 0) {
        px_err_wrap(e, 0, "cannot promote model '%s' v%d: it failed verification", name, version);
        goto done;
    }
    const char *pa[2] = {name, alias};
    if ((rc = px_db_query(c, e, "cannot read the registry", &r,
                        "SELECT version FROM registry.aliases WHERE name = $1 AND alias = $2 FOR UPDATE", 2, pa)) != 0)
        goto done;
    if (PQntuples(r) == 1) snprintf(from, sizeof from, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    r = NULL;
    if (from[0] && atoi(from) == version) {
        rc = px_err_set(e, PX_ENOTHING, "model '%s' v%d is already the %s", name, version, alias);
        goto done;
    }
    const char *p[5] = {name, alias, from[0] ? from : NULL, vs, reason};
    const char *p3[3] = {name, alias, vs};
    if ((rc = px_db_query(c, e, "cannot set the alias", NULL,
                        "INSERT INTO registry.aliases (name, alias, version) VALUES ($1, $2, $3)"
                        " ON CONFLICT (name, alias) DO UPDATE SET version = EXCLUDED.version, updated_at = now(),"
                        " updated_by = session_user",
                        3, p3)) != 0)
        goto done;
    if ((rc = px_db_query(c, e, "cannot record the alias change", NULL,
                        "INSERT INTO registry.alias_history (name, alias, from_version, to_version, reason)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        5, p)) != 0)
        goto done;
    if ((rc = px_db_audit_commit(c, e, "cannot write the audit event",
                                 "INSERT INTO audit.events (action, object, detail) VALUES ('registry.promote', $1,"
                                 " jsonb_build_object('alias', $2::text, 'from_version', $3::int,"
                                 " 'to_version', $4::int, 'reason', $5::text))",
                                 5, p, "cannot commit the promotion", &in_tx)) != 0)
        goto done;
    px_log(PX_LOG_INFO, "registry: '%s' %s -> v%d (was %s)", name, alias, version, from[0] ? from : "unset");
done:
    PQclear(r);
    if (in_tx) rollback(c);
    return rc;
}
