/* export.c: the de-identified research extract of a feature table (HIPAA Safe
 * Harbor, 45 CFR 164.514(b)(2)). Invariants: no pseudonym of an identifier leaves
 * (encounter_id and patient_id become fresh random numbers under a per-export key
 * that is never stored), every date is shifted per patient by a keyed offset or cut
 * to the year, ages over 89 are one group, small ZIP3 areas are 000, categorical
 * levels of fewer than K rows are suppressed; files are written under temporary
 * names and renamed only when all of them are complete. */
#include "features/internal.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

px_export_params px_export_default_params(void)
{
    px_export_params p = {0};
    p.cohort = "readmission";
    p.max_shift_days = 365;
    p.min_cell = 11;
    p.min_zip3_patients = 20;
    return p;
}

/* One output column: its SQL expression over t (the feature table) and p (the
 * patient table), its name, JSON kind and what was done to it. */
typedef struct xcol {
    char name[80];
    char expr[512];
    char type[40];           /* integer, number, text, date */
    const char *meaning;     /* static or owned by the catalog result */
    char transform[300];
    int text;                /* quoted in JSON */
    char **supp;             /* levels recoded to 'suppressed' (small cells); n_supp */
    int n_supp;
    char src[80];            /* the source column whose levels are counted, or "" */
} xcol;

#define X_MAX 256
#define F_DATA_CSV "data.csv"
#define F_DATA_JSONL "data.jsonl"
#define F_DICT "data_dictionary.csv"
#define F_MANIFEST "manifest.json"
#define F_SUMS "SHA256SUMS"

typedef struct xctx {
    PGconn *c;
    const px_export_params *p;
    const px_feat_set_info *set;
    xcol col[X_MAX];
    int ncol;
    unsigned char id_key[32];       /* the row / study id key: random, never stored */
    unsigned char ipad[64], opad[64]; /* HMAC-SHA256 pads of the date-shift key */
    PGresult *catalog;              /* build_id, definition_hash, source_batches, built_at, row_count, columns */
    PGresult *cols;                 /* name, role, kind, doc, sqltype */
    char tmp[6][4200];              /* temporary files to remove on failure */
    int ntmp;
} xctx;

/* ---- validation (before anything is written) ---------------------------- */

static int dir_state(const char *dir, int *exists, int *nonempty, px_err *e)
{
    struct stat st;
    *exists = *nonempty = 0;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) return 0;
        return px_err_set(e, PX_EIO, "cannot read output directory '%s': %s", dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return px_err_set(e, PX_EINVAL, "output path '%s' is not a directory", dir);
    *exists = 1;
    DIR *d = opendir(dir);
    if (!d) return px_err_set(e, PX_EIO, "cannot read output directory '%s': %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) { *nonempty = 1; break; }
    closedir(d);
    return 0;
}

/* The date-shift key: the file's bytes (at least 32), or 32 random bytes. HMAC
 * (RFC 2104) pads are precomputed so that SQL computes the HMAC with sha256(). */
static int date_key(xctx *x, px_err *e)
{
    unsigned char key[64] = {0};
    if (x->p->date_shift_key_file) {
        unsigned char *data = NULL;
        size_t len = 0;
        if (px_file_read(x->p->date_shift_key_file, 1 << 20, &data, &len, e) != 0) return e->code;
        if (len < 32) {
            free(data);
            px_err_set(e, PX_EINVAL, "date-shift key file '%s' holds %zu bytes, at least 32 are needed",
                       x->p->date_shift_key_file, len);
            px_err_hint(e, "make one with: head -c 32 /dev/urandom > FILE (keep it secret, never with the export)");
            return PX_EINVAL;
        }
        if (len > 64) { /* RFC 2104: longer keys are hashed first */
            unsigned int n = 0;
            EVP_Digest(data, len, key, &n, EVP_sha256(), NULL);
            (void)n;
        } else {
            memcpy(key, data, len); /* zero-padded to the block, as RFC 2104 */
        }
        OPENSSL_cleanse(data, len);
        free(data);
    } else if (RAND_bytes(key, 32) != 1) {
        return px_err_set(e, PX_EIO, "cannot draw a random date-shift key");
    }
    for (int i = 0; i < 64; i++) {
        x->ipad[i] = key[i] ^ 0x36;
        x->opad[i] = key[i] ^ 0x5c;
    }
    OPENSSL_cleanse(key, sizeof key);
    if (RAND_bytes(x->id_key, sizeof x->id_key) != 1) return px_err_set(e, PX_EIO, "cannot draw a random id key");
    return 0;
}

static int load_catalog(xctx *x, px_err *e)
{
    const char *pv[1] = {x->set->table};
    x->catalog = PQexecParams(x->c,
                              "SELECT build_id, definition_hash, array_to_json(source_batches)::text,"
                              " to_char(built_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), row_count,"
                              " to_regclass(table_name) IS NOT NULL"
                              " FROM features.catalog WHERE table_name = $1 ORDER BY build_id DESC LIMIT 1",
                              1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(x->catalog) != PGRES_TUPLES_OK) return px_db_fail(e, x->c, x->catalog, "cannot read features.catalog");
    if (PQntuples(x->catalog) == 0 || strcmp(PQgetvalue(x->catalog, 0, 5), "t") != 0) {
        px_err_set(e, PX_ENOTFOUND, "no feature table '%s' to export", x->set->table);
        px_err_hint(e, "build it first: prognos features build --set %s", x->set->name);
        return PX_ENOTFOUND;
    }
    const char *bv[1] = {PQgetvalue(x->catalog, 0, 0)};
    x->cols = PQexecParams(x->c,
                           "SELECT a.attname, coalesce(c->>'role', 'info'), coalesce(c->>'kind', 'numeric'),"
                           " coalesce(c->>'doc', ''), format_type(a.atttypid, a.atttypmod)"
                           " FROM pg_attribute a"
                           " LEFT JOIN (SELECT x AS c FROM features.catalog, jsonb_array_elements(columns) x"
                           "            WHERE build_id = $1) d ON d.c->>'name' = a.attname::text"
                           " WHERE a.attrelid = (SELECT table_name FROM features.catalog WHERE build_id = $1)::regclass"
                           " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                           1, NULL, bv, NULL, NULL, 0);
    if (PQresultStatus(x->cols) != PGRES_TUPLES_OK) return px_db_fail(e, x->c, x->cols, "cannot read the feature table's columns");
    return 0;
}

/* ---- the column plan ------------------------------------------------------ */

static xcol *add_col(xctx *x, const char *name, const char *type, int text, const char *meaning)
{
    if (x->ncol >= X_MAX) return NULL;
    xcol *k = &x->col[x->ncol++];
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    snprintf(k->type, sizeof k->type, "%s", type);
    k->text = text;
    k->meaning = meaning;
    return k;
}

static int plan(xctx *x, px_err *e)
{
    const px_export_params *p = x->p;
    xcol *k;
    int has_pat = 0, has_adm = 0;
    for (int i = 0; i < PQntuples(x->cols); i++) {
        if (strcmp(PQgetvalue(x->cols, i, 0), "patient_id") == 0) has_pat = 1;
        if (strcmp(PQgetvalue(x->cols, i, 0), "admission_date") == 0) has_adm = 1;
    }
    if (!has_pat || !has_adm)
        return px_err_set(e, PX_ECORRUPT, "feature table '%s' has no patient_id or admission_date column", x->set->table);

    k = add_col(x, "row_id", "integer", 0, "the row: a random number 1..rows, drawn anew at each export");
    snprintf(k->expr, sizeof k->expr, "row_number() OVER (ORDER BY sha256($1::bytea || convert_to(t.encounter_id::text, 'UTF8')))");
    snprintf(k->transform, sizeof k->transform,
             "replaces encounter_id: rank under a random per-export key that is never stored; cannot be linked back");
    k = add_col(x, "study_id", "integer", 0, "the patient within this export: a random number 1..patients");
    snprintf(k->expr, sizeof k->expr, "p.study_id");
    snprintf(k->transform, sizeof k->transform,
             "replaces patient_id: rank under a random per-export key that is never stored; cannot be linked back, "
             "and differs between exports");

    for (int i = 0; i < PQntuples(x->cols); i++) {
        const char *name = PQgetvalue(x->cols, i, 0), *role = PQgetvalue(x->cols, i, 1);
        const char *kind = PQgetvalue(x->cols, i, 2), *doc = PQgetvalue(x->cols, i, 3);
        const char *type = PQgetvalue(x->cols, i, 4);
        if (strcmp(role, "key") == 0 || strcmp(role, "group") == 0 || strcmp(type, "uuid") == 0 ||
            strcmp(type, "bytea") == 0)
            continue; /* identities and pseudonyms never leave */
        if (strcmp(type, "date") == 0) {
            if (!p->dates_year) {
                k = add_col(x, name, "date", 1, doc);
                if (!k) goto full;
                snprintf(k->expr, sizeof k->expr, "(t.%s - p.shift_days)", name);
                snprintf(k->transform, sizeof k->transform,
                         "moved back by the patient's offset of 1-%d days (HMAC-SHA256 of the patient under the "
                         "date-shift key); intervals within a patient are kept", p->max_shift_days);
            } else {
                char nm[80];
                snprintf(nm, sizeof nm, "%s_year", name);
                if (!(k = add_col(x, nm, "integer", 0, doc))) goto full;
                snprintf(k->expr, sizeof k->expr, "extract(year FROM t.%s)::integer", name);
                snprintf(k->transform, sizeof k->transform, "the year of %s only", name);
                snprintf(nm, sizeof nm, "%s_day", name);
                if (!(k = add_col(x, nm, "integer", 0, doc))) goto full;
                snprintf(k->expr, sizeof k->expr, "(t.%s - p.first_date)", name);
                snprintf(k->transform, sizeof k->transform,
                         "days from the patient's first admission in this export to %s", name);
            }
            continue;
        }
        if (strcmp(name, "age_years") == 0 || strcmp(name, "age") == 0) {
            if (!(k = add_col(x, name, "text", 1, doc))) goto full;
            snprintf(k->expr, sizeof k->expr, "CASE WHEN t.%s > 89 THEN '90+' ELSE t.%s::text END", name, name);
            snprintf(k->transform, sizeof k->transform, "ages over 89 grouped as '90+' (Safe Harbor)");
            continue;
        }
        int text = strcmp(kind, "categorical") == 0 || strcmp(type, "text") == 0 ||
                   strncmp(type, "character", 9) == 0;
        if (!(k = add_col(x, name, text ? "text" : (strstr(type, "int") ? "integer" : "number"), text, doc)))
            goto full;
        snprintf(k->expr, sizeof k->expr, "t.%s", name);
        if (text) {
            snprintf(k->src, sizeof k->src, "t.%s", name);
            snprintf(k->transform, sizeof k->transform, "levels of fewer than %d rows recoded to 'suppressed'%s",
                     p->min_cell, strcmp(name, "facility_id") == 0 ? " (a facility, not an individual: kept)" : "");
        } else {
            snprintf(k->transform, sizeof k->transform, "none");
        }
    }
    if (!(k = add_col(x, "zip3", "text", 1, "the patient's 3-digit ZIP prefix (wh.dim_patient)"))) goto full;
    snprintf(k->expr, sizeof k->expr, "p.zip3");
    snprintf(k->transform, sizeof k->transform,
             "'000' when the prefix has fewer than %d patients in this export (no census table: the export's own "
             "count stands in for Safe Harbor's 20,000 people) or is on the Safe Harbor list (done at load)",
             p->min_zip3_patients);
    if (!(k = add_col(x, "state", "text", 1, "the patient's state (wh.dim_patient)"))) goto full;
    snprintf(k->expr, sizeof k->expr, "p.state");
    snprintf(k->src, sizeof k->src, "p.state");
    snprintf(k->transform, sizeof k->transform, "levels of fewer than %d rows recoded to 'suppressed'", p->min_cell);
    return 0;
full:
    return px_err_set(e, PX_EINVAL, "feature table '%s' has more than %d columns", x->set->table, X_MAX);
}

/* The patients of the export: study id (rank under the random key), date offset
 * (HMAC-SHA256 under the date key: the first 4 bytes as an unsigned big-endian
 * integer mod max_shift_days, plus 1), first admission, and ZIP3 with small areas
 * as 000. $1 id key, $2 ipad, $3 opad, $4 max shift, $5 min ZIP3 patients. */
static const char pat_sql_fmt[] =
    "CREATE TEMP TABLE px_export_pat ON COMMIT DROP AS"
    " WITH pt AS (SELECT t.patient_id, min(t.admission_date) AS first_date FROM %s t GROUP BY t.patient_id),"
    " h AS (SELECT pt.*, sha256($3::bytea || sha256($2::bytea || convert_to(pt.patient_id::text, 'UTF8'))) AS mac,"
    "        dense_rank() OVER (ORDER BY sha256($1::bytea || convert_to(pt.patient_id::text, 'UTF8'))) AS study_id"
    "       FROM pt),"
    " z AS (SELECT h.patient_id, h.first_date, h.study_id,"
    "        ((get_byte(mac, 0)::bigint << 24) | (get_byte(mac, 1) << 16) | (get_byte(mac, 2) << 8)"
    "         | get_byte(mac, 3)) %% $4::integer + 1 AS shift_days, d.zip3, d.state"
    "       FROM h LEFT JOIN wh.dim_patient d ON d.patient_id::text = h.patient_id::text)"
    " SELECT patient_id, first_date, study_id::integer, shift_days::integer, state,"
    "        CASE WHEN zip3 IS NULL THEN NULL"
    "             WHEN count(*) OVER (PARTITION BY zip3) < $5::integer THEN '000' ELSE zip3 END AS zip3"
    " FROM z";

/* Small cells (the CMS cell-size rule, default 11): levels of fewer than K rows
 * are suppressed; when the suppressed levels together hold fewer than K rows, the
 * next smallest level is suppressed too (complementary suppression), so that a
 * documented level cannot be recovered from the others. NULL is not a level. */
static int small_cells(xctx *x, xcol *k, const char *from, px_err *e)
{
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT %s::text, count(*) FROM %s WHERE %s IS NOT NULL GROUP BY 1 ORDER BY 2, 1",
             k->src, from, k->src);
    PGresult *r = PQexec(x->c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return px_db_fail(e, x->c, r, "cannot count the levels of a column");
    int n = PQntuples(r), ns = 0;
    long long total = 0;
    while (ns < n) {
        long long cnt = atoll(PQgetvalue(r, ns, 1));
        if (cnt < x->p->min_cell || (total > 0 && total < x->p->min_cell)) {
            total += cnt;
            ns++;
        } else {
            break;
        }
    }
    if (ns > 0) {
        k->supp = calloc((size_t)ns, sizeof *k->supp);
        if (!k->supp) { PQclear(r); return px_err_set(e, PX_ENOMEM, "out of memory"); }
        for (int i = 0; i < ns; i++)
            if (!(k->supp[k->n_supp++] = strdup(PQgetvalue(r, i, 0)))) {
                PQclear(r);
                return px_err_set(e, PX_ENOMEM, "out of memory");
            }
    }
    PQclear(r);
    return 0;
}

/* A PostgreSQL text[] literal of the suppressed levels (sent as a parameter, so
 * that no suppressed value appears in the recorded query). */
static char *array_literal(const xcol *k)
{
    px_buf b = {0};
    px_buf_addc(&b, '{');
    for (int i = 0; i < k->n_supp; i++) {
        if (i) px_buf_addc(&b, ',');
        px_buf_addc(&b, '"');
        for (const char *s = k->supp[i]; *s; s++) {
            if (*s == '"' || *s == '\\') px_buf_addc(&b, '\\');
            px_buf_addc(&b, *s);
        }
        px_buf_addc(&b, '"');
    }
    if (px_buf_addc(&b, '}') < 0) { px_buf_release(&b); return NULL; }
    return b.data;
}

/* ---- writing -------------------------------------------------------------- */

static int csv_field(px_buf *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) return px_buf_adds(b, s);
    px_buf_addc(b, '"');
    for (; *s; s++) {
        if (*s == '"') px_buf_addc(b, '"');
        px_buf_addc(b, *s);
    }
    return px_buf_addc(b, '"');
}

typedef struct xfile {
    FILE *f;
    EVP_MD_CTX *md;
    char path[4200], tmp[4200], sha[65];
    long long bytes;
} xfile;

static int xf_open(xctx *x, xfile *f, const char *name, px_err *e)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/%s", x->p->out_dir, name);
    snprintf(f->tmp, sizeof f->tmp, "%s/.%s.tmp.%ld", x->p->out_dir, name, (long)getpid());
    int fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !(f->f = fdopen(fd, "w"))) {
        if (fd >= 0) close(fd);
        return px_err_set(e, PX_EIO, "cannot create '%s': %s", f->tmp, strerror(errno));
    }
    snprintf(x->tmp[x->ntmp++], sizeof x->tmp[0], "%s", f->tmp);
    f->md = EVP_MD_CTX_new();
    if (!f->md || EVP_DigestInit_ex(f->md, EVP_sha256(), NULL) != 1) return px_err_set(e, PX_ENOMEM, "out of memory");
    return 0;
}

static int xf_write(xfile *f, const void *d, size_t n, px_err *e)
{
    if (fwrite(d, 1, n, f->f) != n) return px_err_set(e, PX_EIO, "cannot write '%s': %s", f->tmp, strerror(errno));
    EVP_DigestUpdate(f->md, d, n);
    f->bytes += (long long)n;
    return 0;
}

/* Flushes and syncs (the rename comes later, when every file is complete). */
static int xf_close(xfile *f, px_err *e)
{
    unsigned char md[32];
    unsigned int n = 0;
    int bad = fflush(f->f) != 0 || fsync(fileno(f->f)) != 0;
    if (fclose(f->f) != 0) bad = 1;
    f->f = NULL;
    EVP_DigestFinal_ex(f->md, md, &n);
    EVP_MD_CTX_free(f->md);
    f->md = NULL;
    for (int i = 0; i < 32; i++) snprintf(f->sha + 2 * i, 3, "%02x", md[i]);
    if (bad) return px_err_set(e, PX_EIO, "cannot write '%s': %s", f->tmp, strerror(errno));
    return 0;
}

static void xf_abort(xfile *f)
{
    if (f->f) fclose(f->f);
    if (f->md) EVP_MD_CTX_free(f->md);
    f->f = NULL;
    f->md = NULL;
}

/* Streams the query's rows into the data file (single-row mode: memory does not
 * grow with the table). */
static int write_data(xctx *x, xfile *f, const char *query, int nparams, const char *const *pv, const int *plen,
                      const int *pfmt, long long *rows, px_err *e)
{
    px_buf b = {0};
    int rc = 0;
    /* the query need not use every parameter: their types are given (bytea x3, integer x2, text[]) */
    Oid types[X_MAX + 8];
    for (int i = 0; i < nparams && i < X_MAX + 8; i++) types[i] = i < 3 ? 17 : i < 5 ? 23 : 1009;
    if (!x->p->jsonl) {
        for (int j = 0; j < x->ncol; j++) {
            if (j) px_buf_addc(&b, ',');
            csv_field(&b, x->col[j].name);
        }
        px_buf_addc(&b, '\n');
    }
    if (!PQsendQueryParams(x->c, query, nparams, types, pv, plen, pfmt, 0) || !PQsetSingleRowMode(x->c)) {
        px_buf_release(&b);
        return px_db_fail(e, x->c, NULL, "cannot run the export query");
    }
    PGresult *r;
    *rows = 0;
    while ((r = PQgetResult(x->c))) {
        int st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE && rc == 0) {
            for (int j = 0; j < x->ncol; j++) {
                int null = PQgetisnull(r, 0, j);
                const char *v = PQgetvalue(r, 0, j);
                if (x->p->jsonl) {
                    px_buf_adds(&b, j ? "," : "{");
                    px_buf_json_str(&b, x->col[j].name, strlen(x->col[j].name));
                    px_buf_addc(&b, ':');
                    if (null) px_buf_adds(&b, "null");
                    else if (x->col[j].text) px_buf_json_str(&b, v, strlen(v));
                    else px_buf_adds(&b, v);
                } else {
                    if (j) px_buf_addc(&b, ',');
                    if (!null) csv_field(&b, v);
                }
            }
            if (x->p->jsonl) px_buf_addc(&b, '}');
            if (px_buf_addc(&b, '\n') < 0) rc = px_err_set(e, PX_ENOMEM, "out of memory");
            (*rows)++;
            if (rc == 0 && b.len > (1 << 20)) {
                rc = xf_write(f, b.data, b.len, e);
                b.len = 0;
            }
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && rc == 0) {
            rc = px_db_fail(e, x->c, r, "the export query failed");
        }
        PQclear(r);
    }
    if (rc == 0 && b.len) rc = xf_write(f, b.data, b.len, e);
    px_buf_release(&b);
    return rc;
}

static int write_dictionary(xctx *x, xfile *f, px_err *e)
{
    px_buf b = {0};
    px_buf_adds(&b, "name,type,meaning,transformation,suppressed_levels\n");
    for (int j = 0; j < x->ncol; j++) {
        const xcol *k = &x->col[j];
        char n[32];
        snprintf(n, sizeof n, "%d", k->n_supp);
        csv_field(&b, k->name);
        px_buf_addc(&b, ',');
        csv_field(&b, k->type);
        px_buf_addc(&b, ',');
        csv_field(&b, k->meaning ? k->meaning : "");
        px_buf_addc(&b, ',');
        csv_field(&b, k->transform);
        px_buf_addc(&b, ',');
        px_buf_adds(&b, n);
        if (px_buf_addc(&b, '\n') < 0) { px_buf_release(&b); return px_err_set(e, PX_ENOMEM, "out of memory"); }
    }
    int rc = xf_write(f, b.data, b.len, e);
    px_buf_release(&b);
    return rc;
}

static void json_kv_str(px_buf *b, const char *k, const char *v)
{
    px_buf_json_str(b, k, strlen(k));
    px_buf_addc(b, ':');
    px_buf_json_str(b, v, strlen(v));
}

static char *batches_json(xctx *x, px_err *e)
{
    const char *pv[1] = {PQgetvalue(x->catalog, 0, 2)};
    PGresult *r = PQexecParams(x->c,
                               "SELECT coalesce(json_agg(json_build_object('batch_id', batch_id, 'format', format,"
                               " 'started_at', to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                               " 'finished_at', to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                               " 'rows_loaded', rows_loaded) ORDER BY batch_id), '[]')::text"
                               " FROM etl.batches WHERE batch_id IN"
                               " (SELECT json_array_elements_text($1::json)::bigint)",
                               1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) { px_db_fail(e, x->c, r, "cannot read etl.batches"); PQclear(r); return NULL; }
    char *s = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!s) px_err_set(e, PX_ENOMEM, "out of memory");
    return s;
}

static int build_manifest(xctx *x, px_buf *b, const xfile *data, const xfile *dict, const char *pat_sql,
                          const char *query, const char *batches, const char *at, px_export_result *res)
{
    const px_export_params *p = x->p;
    px_buf_adds(b, "{\n  ");
    json_kv_str(b, "format_version", "1");
    px_buf_adds(b, ",\n  ");
    json_kv_str(b, "generator", "prognos " PX_VERSION);
    px_buf_adds(b, ",\n  ");
    json_kv_str(b, "exported_at", at);
    px_buf_adds(b, ",\n  ");
    json_kv_str(b, "cohort", x->set->name);
    px_buf_adds(b, ",\n  ");
    json_kv_str(b, "cohort_definition", x->set->doc);
    px_buf_printf(b, ",\n  \"rows\": %lld,\n  \"patients\": %lld,\n  \"columns\": %d,", res->rows, res->patients,
                  x->ncol);
    px_buf_printf(b, "\n  \"files\": [\n    {\"name\": \"%s\", \"rows\": %lld, \"bytes\": %lld, \"sha256\": \"%s\"},"
                     "\n    {\"name\": \"%s\", \"rows\": %d, \"bytes\": %lld, \"sha256\": \"%s\"}\n  ],",
                  p->jsonl ? F_DATA_JSONL : F_DATA_CSV, res->rows, data->bytes, data->sha, F_DICT, x->ncol,
                  dict->bytes, dict->sha);
    px_buf_adds(b, "\n  \"parameters\": {");
    json_kv_str(b, "format", p->jsonl ? "jsonl" : "csv");
    px_buf_adds(b, ", ");
    json_kv_str(b, "dates", p->dates_year ? "year" : "shift");
    px_buf_printf(b, ", \"max_shift_days\": %d, ", p->max_shift_days);
    json_kv_str(b, "date_shift_key", p->date_shift_key_file ? "from a key file (not recorded)"
                                                            : "random for this export, not stored");
    px_buf_adds(b, ", ");
    json_kv_str(b, "id_key", "random for this export, not stored");
    px_buf_printf(b, ", \"min_cell\": %d, \"min_zip3_patients\": %d, \"age_top_code\": 90},", p->min_cell,
                  p->min_zip3_patients);
    px_buf_printf(b, "\n  \"deidentification\": {\"ages_grouped_90_plus\": %lld, \"zip3_set_to_000\": %lld,"
                     " \"suppressed\": {",
                  res->ages_grouped, res->zip3_recoded);
    int first = 1;
    for (int j = 0; j < x->ncol; j++) {
        if (!x->col[j].n_supp) continue;
        px_buf_printf(b, "%s\"%s\": %d", first ? "" : ", ", x->col[j].name, x->col[j].n_supp);
        first = 0;
    }
    px_buf_adds(b, "}},");
    px_buf_adds(b, "\n  \"feature_build\": {");
    px_buf_printf(b, "\"build_id\": %s, ", PQgetvalue(x->catalog, 0, 0));
    json_kv_str(b, "table", x->set->table);
    px_buf_adds(b, ", ");
    json_kv_str(b, "definition_hash", PQgetvalue(x->catalog, 0, 1));
    px_buf_adds(b, ", ");
    json_kv_str(b, "built_at", PQgetvalue(x->catalog, 0, 3));
    px_buf_printf(b, ", \"rows\": %s, \"source_batches\": %s},", PQgetvalue(x->catalog, 0, 4),
                  PQgetvalue(x->catalog, 0, 2));
    px_buf_printf(b, "\n  \"etl_batches\": %s,", batches);
    px_buf_adds(b, "\n  \"query\": {");
    json_kv_str(b, "patients", pat_sql);
    px_buf_adds(b, ", ");
    json_kv_str(b, "rows", query);
    px_buf_adds(b, ", ");
    json_kv_str(b, "parameters", "$1 id key, $2/$3 HMAC pads of the date-shift key, $4 max_shift_days, "
                                 "$5 min_zip3_patients, $6.. the suppressed levels of each column (not recorded)");
    px_buf_adds(b, "}\n}\n");
    return b->data ? 0 : PX_ENOMEM;
}

static int rename_into_place(xctx *x, const char *tmp, const char *path, px_err *e)
{
    if (rename(tmp, path) != 0) return px_err_set(e, PX_EIO, "cannot rename '%s': %s", tmp, strerror(errno));
    for (int i = 0; i < x->ntmp; i++)
        if (strcmp(x->tmp[i], tmp) == 0) x->tmp[i][0] = 0;
    return 0;
}

/* ---- the export ------------------------------------------------------------ */

int px_feat_export(PGconn *c, const px_export_params *p, px_export_result *res, px_err *e)
{
    xctx *x = calloc(1, sizeof *x);
    if (!x) return px_err_set(e, PX_ENOMEM, "out of memory");
    memset(res, 0, sizeof *res);
    x->c = c;
    x->p = p;
    int rc = 0, exists = 0, nonempty = 0, made_dir = 0, in_tx = 0;
    char *query = NULL, *pat_sql = NULL, *batches = NULL;
    const char **pv = NULL;
    int *plen = NULL, *pfmt = NULL, np = 5;
    xfile data = {0}, dict = {0};
    px_buf man = {0}, sums = {0};

    if (!(x->set = px_feat_set_find(p->cohort))) {
        rc = px_err_set(e, PX_EINVAL, "unknown cohort '%s' (readmission, mortality or los)", p->cohort ? p->cohort : "");
        goto out;
    }
    if (!p->out_dir || !*p->out_dir) { rc = px_err_set(e, PX_EINVAL, "no output directory given"); goto out; }
    if (p->max_shift_days < 1 || p->max_shift_days > 3650 || p->min_cell < 1 || p->min_zip3_patients < 1) {
        rc = px_err_set(e, PX_EINVAL, "max_shift_days must be 1-3650, min_cell and min_zip3_patients at least 1");
        goto out;
    }
    if ((rc = dir_state(p->out_dir, &exists, &nonempty, e)) != 0) goto out;
    if (nonempty && !p->force) {
        rc = px_err_set(e, PX_EINVAL, "output directory '%s' is not empty", p->out_dir);
        px_err_hint(e, "give an empty or new directory, or --force to replace an earlier export there");
        goto out;
    }
    if ((rc = date_key(x, e)) != 0) goto out;
    if ((rc = px_db_query(x->c, e, "cannot begin the export's transaction", NULL, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL)) != 0)
        goto out;
    in_tx = 1;
    if ((rc = load_catalog(x, e)) != 0 || (rc = plan(x, e)) != 0) goto out;

    /* the patients: ids, offsets, ZIP3 */
    size_t ql = sizeof pat_sql_fmt + strlen(x->set->table);
    if (!(pat_sql = malloc(ql))) { rc = px_err_set(e, PX_ENOMEM, "out of memory"); goto out; }
    snprintf(pat_sql, ql, pat_sql_fmt, x->set->table);
    pv = calloc(X_MAX + 8, sizeof *pv);
    plen = calloc(X_MAX + 8, sizeof *plen);
    pfmt = calloc(X_MAX + 8, sizeof *pfmt);
    if (!pv || !plen || !pfmt) { rc = px_err_set(e, PX_ENOMEM, "out of memory"); goto out; }
    char shift[16], minzip[16];
    snprintf(shift, sizeof shift, "%d", p->max_shift_days);
    snprintf(minzip, sizeof minzip, "%d", p->min_zip3_patients);
    pv[0] = (const char *)x->id_key, plen[0] = 32, pfmt[0] = 1;
    pv[1] = (const char *)x->ipad, plen[1] = 64, pfmt[1] = 1;
    pv[2] = (const char *)x->opad, plen[2] = 64, pfmt[2] = 1;
    pv[3] = shift;
    pv[4] = minzip;
    PGresult *r = PQexecParams(c, pat_sql, 5, NULL, pv, plen, pfmt, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) { rc = px_db_fail(e, x->c, r, "cannot draw the export's patients"); PQclear(r); goto out; }
    PQclear(r);
    r = PQexec(c, "SELECT (SELECT count(*) FROM px_export_pat), (SELECT count(*) FROM px_export_pat WHERE zip3 = '000')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) { rc = px_db_fail(e, x->c, r, "cannot count the export's patients"); PQclear(r); goto out; }
    res->patients = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);

    /* small cells, then the query: each suppressed column reads CASE WHEN v = ANY($n) */
    char from[400];
    snprintf(from, sizeof from, "%s t JOIN px_export_pat p ON p.patient_id = t.patient_id", x->set->table);
    px_buf q = {0};
    px_buf_adds(&q, "SELECT ");
    for (int j = 0; j < x->ncol; j++) {
        xcol *k = &x->col[j];
        if (k->src[0] && (rc = small_cells(x, k, from, e)) != 0) { px_buf_release(&q); goto out; }
        if (j) px_buf_adds(&q, ", ");
        if (k->n_supp) {
            if (!(pv[np] = array_literal(k))) { px_buf_release(&q); rc = px_err_set(e, PX_ENOMEM, "out of memory"); goto out; }
            np++;
            px_buf_printf(&q, "CASE WHEN %s::text = ANY($%d::text[]) THEN 'suppressed' ELSE %s::text END", k->expr, np,
                          k->expr);
        } else {
            px_buf_adds(&q, k->expr);
        }
    }
    px_buf_printf(&q, " FROM %s ORDER BY 1", from);
    if (!q.data) { rc = px_err_set(e, PX_ENOMEM, "out of memory"); goto out; }
    query = q.data;
    /* the figures the manifest reports */
    {
        char cnt[1024];
        snprintf(cnt, sizeof cnt, "SELECT count(*) FILTER (WHERE t.age_years > 89),"
                                  " count(*) FILTER (WHERE p.zip3 = '000') FROM %s", from);
        r = PQexec(c, cnt);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) { rc = px_db_fail(e, x->c, r, "cannot count grouped ages"); PQclear(r); goto out; }
        res->ages_grouped = atoll(PQgetvalue(r, 0, 0));
        res->zip3_recoded = atoll(PQgetvalue(r, 0, 1));
        PQclear(r);
    }
    if (!(batches = batches_json(x, e))) { rc = e->code; goto out; }

    /* files: the directory only now, when every check passed */
    if (!exists) {
        if ((rc = px_mkdir_p(p->out_dir, 0700, e)) != 0) goto out;
        made_dir = 1;
    }
    if ((rc = xf_open(x, &data, p->jsonl ? F_DATA_JSONL : F_DATA_CSV, e)) != 0 ||
        (rc = write_data(x, &data, query, np, pv, plen, pfmt, &res->rows, e)) != 0 || (rc = xf_close(&data, e)) != 0)
        goto out;
    if ((rc = xf_open(x, &dict, F_DICT, e)) != 0 || (rc = write_dictionary(x, &dict, e)) != 0 ||
        (rc = xf_close(&dict, e)) != 0)
        goto out;
    char at[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (build_manifest(x, &man, &data, &dict, pat_sql, query, batches, at, res) != 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    char msha[65];
    px_sha256_hex(man.data, man.len, msha);
    px_buf_printf(&sums, "%s  %s\n%s  %s\n%s  %s\n", data.sha, p->jsonl ? F_DATA_JSONL : F_DATA_CSV, dict.sha, F_DICT,
                  msha, F_MANIFEST);
    if (!sums.data) { rc = px_err_set(e, PX_ENOMEM, "out of memory"); goto out; }
    memcpy(res->data_sha256, data.sha, 65);
    res->columns = x->ncol;
    for (int j = 0; j < x->ncol; j++) res->suppressed_levels += x->col[j].n_supp;

    /* the audit trail, then the files into place (manifest last but one, sums last) */
    {
        px_buf d = {0};
        px_buf_printf(&d, "{\"rows\": %lld, \"patients\": %lld, \"format\": \"%s\", \"dates\": \"%s\", \"sha256\": \"%s\","
                          " \"build_id\": %s, \"out\": ",
                      res->rows, res->patients, p->jsonl ? "jsonl" : "csv", p->dates_year ? "year" : "shift",
                      data.sha, PQgetvalue(x->catalog, 0, 0));
        px_buf_json_str(&d, p->out_dir, strlen(p->out_dir));
        px_buf_adds(&d, "}");
        if (!d.data) { rc = px_err_set(e, PX_ENOMEM, "out of memory"); goto out; }
        const char *av[2] = {x->set->name, d.data};
        r = PQexecParams(c, "INSERT INTO audit.events (action, object, detail) VALUES ('export.research', $1, $2::jsonb)",
                         2, NULL, av, NULL, NULL, 0);
        px_buf_release(&d);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) { rc = px_db_fail(e, x->c, r, "cannot record the export in audit.events"); PQclear(r); goto out; }
        PQclear(r);
    }
    char mpath[4200], spath[4200];
    snprintf(mpath, sizeof mpath, "%s/%s", p->out_dir, F_MANIFEST);
    snprintf(spath, sizeof spath, "%s/%s", p->out_dir, F_SUMS);
    if ((rc = px_db_query(x->c, e, "cannot commit the export's audit record", NULL, "COMMIT", 0, NULL)) != 0) goto out;
    in_tx = 0;
    if ((rc = rename_into_place(x, data.tmp, data.path, e)) != 0 || (rc = rename_into_place(x, dict.tmp, dict.path, e)) != 0 ||
        (rc = px_file_write_atomic(mpath, man.data, man.len, 0600, e)) != 0 ||
        (rc = px_file_write_atomic(spath, sums.data, sums.len, 0600, e)) != 0)
        goto out;
    /* --force: the other format's data file of an earlier export would be stale */
    char stale[4200];
    snprintf(stale, sizeof stale, "%s/%s", p->out_dir, p->jsonl ? F_DATA_CSV : F_DATA_JSONL);
    unlink(stale);

out:
    xf_abort(&data);
    xf_abort(&dict);
    if (in_tx) {
        PGresult *rb = PQexec(c, "ROLLBACK");
        PQclear(rb);
    }
    for (int i = 0; i < x->ntmp; i++)
        if (x->tmp[i][0]) unlink(x->tmp[i]);
    if (rc != 0 && made_dir) rmdir(p->out_dir);
    if (pv)
        for (int i = 5; i < np; i++) free((void *)pv[i]);
    for (int j = 0; j < x->ncol; j++) {
        for (int i = 0; i < x->col[j].n_supp; i++) free(x->col[j].supp[i]);
        free(x->col[j].supp);
    }
    OPENSSL_cleanse(x->id_key, sizeof x->id_key);
    OPENSSL_cleanse(x->ipad, sizeof x->ipad);
    OPENSSL_cleanse(x->opad, sizeof x->opad);
    free(pv);
    free(plen);
    free(pfmt);
    free(query);
    free(pat_sql);
    free(batches);
    px_buf_release(&man);
    px_buf_release(&sums);
    PQclear(x->catalog);
    PQclear(x->cols);
    free(x);
    return rc;
}
