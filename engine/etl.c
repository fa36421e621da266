/* etl.c: one ETL batch, whatever the format: find the inputs, fingerprint them
 * (SHA-256), skip those already loaded, then load the rest inside ONE
 * transaction, so that a killed load leaves nothing behind and a rerun loads
 * everything. The format loaders (etl_canonical.c, etl_synpuf.c) parse,
 * validate and pseudonymize; this file streams COPY data and spools rejects. */
#include "engine/etl_int.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The latest batch that loaded a file with this SHA-256. Loads forced with
 * --force record the same digest again: max(), never a bare scalar subquery. */
#define PRIOR_BATCH_SQL "SELECT coalesce(max(batch_id)::text, '') FROM etl.batch_files WHERE sha256 = '%s'"

/* Held for the whole batch transaction: loads run one at a time. */
#define PX_ETL_LOCK PX_LOCK_ETL
#define COPY_CHUNK (1 << 16)

px_etl_params px_etl_default_params(void)
{
    px_etl_params p = {.format = PX_FMT_CANONICAL, .max_reject_rate = 5.0};
    return p;
}

/* ---- COPY ------------------------------------------------------------------- */

int etl_copy_begin(etl_ctx *x, const char *sql)
{
    /* A deep socket buffer lets the loader run ahead of the server by several
     * chunks, so that parsing here and COPY there overlap instead of taking turns. */
    int sndbuf = 8 << 20;
    (void)setsockopt(PQsocket(x->c), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    PGresult *r = PQexec(x->c, sql);
    int ok = PQresultStatus(r) == PGRES_COPY_IN;
    if (!ok) {
        px_err_set(x->e, PX_EDB, "cannot start loading '%s'", x->in ? x->in->name : "?");
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
    }
    PQclear(r);
    x->out.len = 0;
    return ok ? 0 : PX_EDB;
}

int etl_copy_flush(etl_ctx *x, int force)
{
    if (x->out.len == 0 || (!force && x->out.len < COPY_CHUNK)) return 0;
    if (PQputCopyData(x->c, x->out.data, (int)x->out.len) != 1) {
        px_err_set(x->e, PX_EDB, "lost the database connection while loading");
        px_err_detail(x->e, "%s", PQerrorMessage(x->c));
        return PX_EDB;
    }
    x->out.len = 0;
    return 0;
}

int etl_copy_end(etl_ctx *x, long long *rows)
{
    int rc = etl_copy_flush(x, 1);
    if (PQputCopyEnd(x->c, rc ? "aborted by prognos" : NULL) != 1 && rc == 0) {
        px_err_set(x->e, PX_EDB, "cannot finish COPY");
        px_err_detail(x->e, "%s", PQerrorMessage(x->c));
        rc = PX_EDB;
    }
    PGresult *r;
    while ((r = PQgetResult(x->c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0) {
            if (PQstatus(x->c) == CONNECTION_BAD)
                px_err_set(x->e, PX_EDB, "lost the connection to the warehouse while loading '%s'",
                           x->in ? x->in->name : "?");
            else
                px_err_set(x->e, PX_EDB, "the warehouse refused rows of '%s'", x->in ? x->in->name : "?");
            px_err_detail(x->e, "%s", PQresultErrorMessage(r));
            rc = PX_EDB;
        } else if (rows) {
            *rows = atoll(PQcmdTuples(r));
        }
        PQclear(r);
    }
    return rc;
}

/* ---- COPY binary ---------------------------------------------------------------- */

static void put_be(px_buf *b, unsigned long long v, int bytes)
{
    if (px_buf_reserve(b, (size_t)bytes) != 0) return;
    for (int i = bytes - 1; i >= 0; i--) b->data[b->len++] = (char)(v >> (8 * i) & 0xff);
}

void etl_bin_header(px_buf *b)
{
    px_buf_add(b, "PGCOPY\n\377\r\n\0", 11);
    put_be(b, 0, 4); /* flags: no OIDs */
    put_be(b, 0, 4); /* header extension length */
}
void etl_bin_trailer(px_buf *b) { put_be(b, 0xffff, 2); }
void etl_bin_row(px_buf *b, int nfields) { put_be(b, (unsigned)nfields, 2); }
void etl_bin_null(px_buf *b) { put_be(b, 0xffffffffu, 4); }
void etl_bin_bytes(px_buf *b, const void *p, size_t n)
{
    put_be(b, n, 4);
    px_buf_add(b, p, n);
}
void etl_bin_i16(px_buf *b, int v)
{
    put_be(b, 2, 4);
    put_be(b, (unsigned short)v, 2);
}
void etl_bin_i32(px_buf *b, int v)
{
    put_be(b, 4, 4);
    put_be(b, (unsigned)v, 4);
}
void etl_bin_i64(px_buf *b, long long v)
{
    put_be(b, 8, 4);
    put_be(b, (unsigned long long)v, 8);
}
void etl_bin_date(px_buf *b, int days_since_1970) { etl_bin_i32(b, days_since_1970 - 10957); }

/* numeric_send's layout: ndigits, weight, sign, dscale (int16 each), then
 * ndigits base-10000 digits, the first of which is 10000^weight. */
int etl_bin_numeric(px_buf *b, const char *s, size_t n)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    size_t ib = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    size_t ie = i, fb = i, fe = i;
    if (i < n && s[i] == '.') {
        fb = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        fe = i;
    }
    if (i != n || (ie == ib && fe == fb) || fe - fb > 60 || ie - ib > 60) return -1;
    while (ib < ie && s[ib] == '0') ib++; /* leading zeros */
    /* the digits, left-padded to a multiple of 4 before the point and right-padded after */
    char d[160];
    size_t ni = ie - ib, pad = (4 - ni % 4) % 4, nd = 0;
    for (size_t k = 0; k < pad; k++) d[nd++] = '0';
    memcpy(d + nd, s + ib, ni), nd += ni;
    int int_groups = (int)((ni + pad) / 4);
    memcpy(d + nd, s + fb, fe - fb), nd += fe - fb;
    while (nd % 4) d[nd++] = '0';
    int ng = (int)(nd / 4), first = 0, last = ng;
    unsigned short g[40];
    for (int k = 0; k < ng; k++)
        g[k] = (unsigned short)((d[4 * k] - '0') * 1000 + (d[4 * k + 1] - '0') * 100 + (d[4 * k + 2] - '0') * 10 +
                                (d[4 * k + 3] - '0'));
    while (first < last && g[first] == 0) first++;
    while (last > first && g[last - 1] == 0) last--;
    int ndig = last - first, weight = ndig ? int_groups - 1 - first : 0;
    put_be(b, (unsigned)(8 + 2 * ndig), 4);
    put_be(b, (unsigned)ndig, 2);
    put_be(b, (unsigned short)(short)weight, 2);
    put_be(b, ndig && neg ? 0x4000 : 0, 2);
    put_be(b, (unsigned)(fe - fb), 2);
    for (int k = first; k < last; k++) put_be(b, g[k], 2);
    return 0;
}

int etl_copy_spool(etl_ctx *x, FILE *f, const char *sql, long long *rows)
{
    int rc;
    if (rows) *rows = 0;
    if (fflush(f) != 0 || fseeko(f, 0, SEEK_END) != 0)
        return px_err_set(x->e, PX_EIO, "cannot write a spool file: %s", strerror(errno));
    if (ftello(f) == 0) return 0;
    rewind(f);
    if ((rc = etl_copy_begin(x, sql)) != 0) return rc;
    for (;;) {
        if (px_buf_reserve(&x->out, COPY_CHUNK) != 0) return px_err_set(x->e, PX_ENOMEM, "out of memory");
        size_t n = fread(x->out.data + x->out.len, 1, COPY_CHUNK, f);
        x->out.len += n;
        if ((rc = etl_copy_flush(x, 1)) != 0) break;
        if (n < COPY_CHUNK) break;
    }
    int rc2 = etl_copy_end(x, rows);
    rewind(f);
    if (ftruncate(fileno(f), 0) != 0) rc = rc ? rc : px_err_set(x->e, PX_EIO, "cannot reset a spool file");
    return rc ? rc : rc2;
}

PGresult *etl_exec(etl_ctx *x, const char *sql)
{
    char bid[32];
    snprintf(bid, sizeof bid, "%lld", x->batch);
    const char *params[2] = {bid, x->in ? x->in->name : ""};
    int np = strstr(sql, "$2") ? 2 : strstr(sql, "$1") ? 1 : 0;
    return PQexecParams(x->c, sql, np, NULL, params, NULL, NULL, 0);
}

int etl_sql(etl_ctx *x, const char *sql, long long *a, long long *b)
{
    PGresult *r = etl_exec(x, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = px_err_set(x->e, PX_EDB, "merging '%s' into the warehouse failed", x->in ? x->in->name : "?");
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
    } else {
        int row = st == PGRES_TUPLES_OK && PQntuples(r) > 0;
        if (a) *a = row ? atoll(PQgetvalue(r, 0, 0)) : atoll(PQcmdTuples(r));
        if (b) *b = row && PQnfields(r) > 1 ? atoll(PQgetvalue(r, 0, 1)) : 0;
    }
    PQclear(r);
    return rc;
}

/* ---- rejects ------------------------------------------------------------------- */

void etl_reject(etl_ctx *x, long long line, const char *reason, const char *field, const char *detail,
                const char *row_json)
{
    px_buf b = {0};
    px_buf_printf(&b, "%lld\t", x->batch);
    px_buf_copy_field(&b, x->in->name, strlen(x->in->name));
    px_buf_printf(&b, "\t%lld\t%s\t", line, reason);
    if (field) px_buf_copy_field(&b, field, strlen(field));
    else px_buf_copy_field(&b, NULL, 0);
    px_buf_addc(&b, '\t');
    px_buf_copy_field(&b, detail, strlen(detail));
    px_buf_addc(&b, '\t');
    if (row_json) px_buf_copy_field(&b, row_json, strlen(row_json));
    else px_buf_copy_field(&b, NULL, 0);
    px_buf_addc(&b, '\n');
    fwrite(b.data, 1, b.len, x->rej);
    px_buf_release(&b);
    x->rejected++;
    x->rej_spooled++;
}

size_t etl_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max) return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}

const char *etl_csv_reason(px_csv_status st)
{
    switch (st) {
    case PX_CSV_BAD_QUOTING: return "csv_quoting";
    case PX_CSV_BAD_UTF8: return "csv_utf8";
    case PX_CSV_TOO_LONG: return "csv_too_long";
    default: return "csv_column_count";
    }
}

void etl_future_detail(const etl_ctx *x, const char *col, char *buf, size_t len)
{
    char ref[11];
    px_date_format(x->today, ref);
    snprintf(buf, len, "'%s' is after the reference date %s (%s); for extracts whose dates are shifted, "
             "load with --future-dates allow", col, ref, x->p->today ? "--as-of" : "today, or --as-of");
}

void etl_warn(etl_ctx *x, long long line, const char *reason, const char *field, const char *detail)
{
    px_buf b = {0};
    px_buf_printf(&b, "%lld\t", x->batch);
    px_buf_copy_field(&b, x->in->name, strlen(x->in->name));
    px_buf_printf(&b, "\t%lld\t%s\t", line, reason);
    px_buf_copy_field(&b, field, strlen(field));
    px_buf_addc(&b, '\t');
    px_buf_copy_field(&b, detail, strlen(detail));
    px_buf_addc(&b, '\n');
    fwrite(b.data, 1, b.len, x->warn);
    px_buf_release(&b);
    x->warn_spooled++;
}

int etl_rejects_flush(etl_ctx *x)
{
    long long nrej = 0, nwarn = 0;
    if (ferror(x->rej) || ferror(x->warn))
        return px_err_set(x->e, PX_EIO, "cannot write the reject spool of '%s'", x->in->name);
    int rc = etl_copy_spool(x, x->rej,
                            "COPY etl.rejects (batch_id, file_name, line, reason, field, detail, row_data) FROM STDIN",
                            &nrej);
    if (rc == 0)
        rc = etl_copy_spool(x, x->warn, "COPY etl.warnings (batch_id, file_name, line, reason, field, detail) FROM STDIN",
                            &nwarn);
    if (rc == 0 && (nrej != x->rej_spooled || nwarn != x->warn_spooled))
        rc = px_err_set(x->e, PX_ESTATE, "the server stored %lld rejects and %lld warnings of '%s', prognos spooled "
                        "%lld and %lld", nrej, nwarn, x->in->name, x->rej_spooled, x->warn_spooled);
    x->rej_spooled = x->warn_spooled = 0;
    return rc;
}

/* ---- progress --------------------------------------------------------------- */

/* Reports through the caller's px_etl_params.on_progress; never writes itself. */
void etl_progress(etl_ctx *x, long long file_bytes_done)
{
    if (!x->p->on_progress || x->total_bytes <= 0) return;
    long long done = x->done_bytes + file_bytes_done;
    int pct = (int)(done * 100 / x->total_bytes);
    if (pct == x->last_draw && file_bytes_done != 0) return;
    x->last_draw = pct;
    x->p->on_progress(x->p->progress_arg, "loading", x->in ? x->in->name : "", pct > 100 ? 100 : pct);
}

void etl_progress_phase(etl_ctx *x, const char *phase)
{
    if (!x->p->on_progress || x->total_bytes <= 0) return;
    x->p->on_progress(x->p->progress_arg, phase, x->in ? x->in->name : "", -1);
    x->last_draw = -1;
}

/* ---- pseudonyms and digests -------------------------------------------------- */

void etl_pseudo(etl_ctx *x, px_id_kind kind, const char *v, size_t len, unsigned char bin[16], char hex[33])
{
    px_pseudo_id(x->ps, kind, v, len, hex);
    for (int i = 0; i < 16; i++) {
        int hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
        int lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;
        bin[i] = (unsigned char)(hi << 4 | lo);
    }
}

void etl_digest(const char *domain, const char *v, size_t len, unsigned char out[16])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, domain, strlen(domain));
    EVP_DigestUpdate(c, ":", 1);
    EVP_DigestUpdate(c, v, len);
    EVP_DigestFinal_ex(c, md, &n);
    EVP_MD_CTX_free(c);
    memcpy(out, md, 16);
}

void etl_provider_key(const char *v, size_t len, unsigned char out[16])
{
    memset(out, 0, 16);
    if (len <= 15) {
        out[0] = (unsigned char)len;
        memcpy(out + 1, v, len);
        return;
    }
    etl_digest("provider", v, len, out);
    out[0] |= 0x80; /* never a length of 0-15 */
}

int etl_uuid_key(const char *s, unsigned char out[16])
{
    int k = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '-') continue;
        int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (v < 0 || k >= 32) return -1;
        if (k % 2 == 0) out[k / 2] = (unsigned char)(v << 4);
        else out[k / 2] |= (unsigned char)v;
        k++;
    }
    return k == 32 ? 0 : -1;
}

int etl_mark_rejected_encounters(etl_ctx *x)
{
    PGresult *r = etl_exec(x, "SELECT row_data->>'encounter_id', reason = 'duplicate_key' FROM etl.rejects"
                              " WHERE batch_id = $1 AND file_name = $2 AND row_data ? 'encounter_id'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        px_err_set(x->e, PX_EDB, "cannot read the rejected encounters of '%s'", x->in->name);
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return PX_EDB;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        unsigned char key[16];
        if (etl_uuid_key(PQgetvalue(r, i, 0), key) != 0) continue;
        etl_encounter *en = px_keymap_get(x->encounters, key);
        if (en) en->state = PQgetvalue(r, i, 1)[0] == 't' ? ENC_EXISTING : ENC_REJECTED;
    }
    PQclear(r);
    return 0;
}

static void hash_tap(void *ctx, const void *buf, size_t n)
{
    EVP_DigestUpdate((EVP_MD_CTX *)ctx, buf, n);
}

int etl_hash_begin(etl_ctx *x, px_csv *csv)
{
    EVP_MD_CTX_free(x->md);
    if (!(x->md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1)
        return px_err_set(x->e, PX_ENOMEM, "cannot start a SHA-256 digest");
    px_csv_set_tap(csv, hash_tap, x->md);
    return 0;
}

int etl_hash_end(etl_ctx *x, px_csv *csv)
{
    unsigned char d[32];
    char hex[65];
    EVP_DigestFinal_ex(x->md, d, NULL);
    EVP_MD_CTX_free(x->md);
    x->md = NULL;
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (!x->in->sha[0]) {
        memcpy(x->in->sha, hex, 65);
        x->in->bytes = px_csv_bytes(csv);
        return 0;
    }
    if (strcmp(hex, x->in->sha) != 0) {
        px_err_set(x->e, PX_ECORRUPT, "'%s' changed while it was being loaded; nothing was stored", x->in->name);
        px_err_hint(x->e, "load it again once whatever writes it has finished");
        return PX_ECORRUPT;
    }
    return 0;
}

int etl_seen(etl_ctx *x, px_keymap *seen, const char *domain, const char *key, size_t len)
{
    unsigned char k[16];
    int existed = 0;
    etl_digest(domain, key, len, k);
    if (!px_keymap_put(seen, k, &existed)) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    return existed;
}

/* ---- per-file bookkeeping ------------------------------------------------------- */

int etl_file_done(etl_ctx *x)
{
    if (x->read != x->loaded + x->rejected) {
        px_err_set(x->e, PX_ESTATE, "row accounting failed for '%s': read %lld, loaded %lld, rejected %lld",
                   x->in->name, x->read, x->loaded, x->rejected);
        px_err_hint(x->e, "this is a bug in prognos; nothing was stored");
        return PX_ESTATE;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO etl.batch_files (batch_id, file_name, table_name, sha256, bytes, rows_read,"
             " rows_loaded, rows_rejected) VALUES ($1, $2, '%s', '%s', %lld, %lld, %lld, %lld)",
             x->in->table == ETL_SYN_BENE ? "beneficiary" : x->in->table == ETL_SYN_CLAIMS ? "inpatient_claims"
                                                                                         : px_canonical[x->in->table].name,
             x->in->sha, x->in->bytes, x->read, x->loaded, x->rejected);
    int rc = etl_sql(x, sql, NULL, NULL);
    if (rc == 0)
        px_log(PX_LOG_INFO, "batch %lld: %s: %lld read, %lld loaded, %lld rejected", x->batch, x->in->name,
               x->read, x->loaded, x->rejected);
    return rc;
}

/* ---- inputs ------------------------------------------------------------------ */

static int sha256_file(const char *path, char hex[65], long long *bytes, px_err *e)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    static __thread unsigned char buf[1 << 20];
    ssize_t n;
    *bytes = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        EVP_DigestUpdate(c, buf, (size_t)n);
        *bytes += n;
    }
    close(fd);
    unsigned char md[32];
    EVP_DigestFinal_ex(c, md, NULL);
    EVP_MD_CTX_free(c);
    if (n < 0) return px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(errno));
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int add_input(etl_input **v, int *n, const char *dir, const char *name, int table, int year)
{
    etl_input *nv = realloc(*v, sizeof **v * (size_t)(*n + 1));
    if (!nv) return -1;
    *v = nv;
    etl_input *in = &nv[(*n)++];
    memset(in, 0, sizeof *in);
    snprintf(in->path, sizeof in->path, "%s/%s", dir, name);
    snprintf(in->name, sizeof in->name, "%s", name);
    in->table = table;
    in->year = year;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* SynPUF: the beneficiary summary files (any years, oldest first), then the
 * inpatient claims, by their CMS file names. */
static int find_synpuf(const char *dir, etl_input **v, int *n, px_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return px_err_set(e, PX_EIO, "cannot open source directory '%s': %s", dir, strerror(errno));
    char *names[256];
    int k = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        if (len < 5 || strcmp(nm + len - 4, ".csv") != 0) continue;
        if (!strstr(nm, "Beneficiary_Summary_File") && !strstr(nm, "Inpatient_Claims")) continue;
        if (k == 256 || !(names[k] = strdup(nm))) {
            closedir(d);
            for (int i = 0; i < k; i++) free(names[i]);
            return px_err_set(e, PX_EINVAL, "too many SynPUF files in '%s' (at most 256 per load)", dir);
        }
        k++;
    }
    closedir(d);
    qsort(names, (size_t)k, sizeof names[0], cmp_names);
    int rc = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < k; i++) {
            int bene = strstr(names[i], "Beneficiary_Summary_File") != NULL;
            if (bene != (pass == 0)) continue;
            int year = 0;
            const char *y = strstr(names[i], "_20");
            if (bene && y) year = atoi(y + 1);
            if (bene && (year < 1990 || year > 2100)) {
                rc = px_err_set(e, PX_EINVAL, "cannot tell the year of SynPUF file '%s'", names[i]);
                goto out;
            }
            if (add_input(v, n, dir, names[i], bene ? ETL_SYN_BENE : ETL_SYN_CLAIMS, year) != 0) {
                rc = px_err_set(e, PX_ENOMEM, "out of memory");
                goto out;
            }
        }
    if (*n == 0) {
        rc = px_err_set(e, PX_EINVAL, "no SynPUF files in '%s'", dir);
        px_err_hint(e, "expected DE1_0_<year>_Beneficiary_Summary_File_*.csv and "
                       "DE1_0_2008_to_2010_Inpatient_Claims_*.csv");
    }
out:
    for (int i = 0; i < k; i++) free(names[i]);
    return rc;
}

static int find_canonical(const char *dir, etl_input **v, int *n, px_err *e)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return px_err_set(e, PX_EIO, "source '%s' is not a directory", dir);
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, px_canonical[t].file);
        if (access(path, R_OK) != 0) continue;
        if (add_input(v, n, dir, px_canonical[t].file, t, 0) != 0) return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    if (*n == 0) {
        px_err_set(e, PX_EINVAL, "no canonical files in '%s'", dir);
        px_err_hint(e, "expected facilities.csv, providers.csv, patients.csv, encounters.csv, diagnoses.csv, "
                       "procedures.csv (see 'prognos etl layout')");
        return PX_EINVAL;
    }
    return 0;
}

/* ---- postgres source: a source table streamed as CSV through a pipe -------------- */

struct pg_feed {
    PGconn *src;
    int fd;
    char err[512];
};

/* Copies the source's COPY stream into the pipe. If the parser stops reading
 * (it failed), the rest of the stream is drained unwritten: libpq must see the
 * COPY to its end before the connection can be used or closed cleanly. */
static void *pg_feed_run(void *arg)
{
    struct pg_feed *f = arg;
    char *row;
    int n, writing = 1;
    while ((n = PQgetCopyData(f->src, &row, 0)) > 0) {
        const char *p = row;
        while (writing && n > 0) {
            ssize_t w = write(f->fd, p, (size_t)n);
            if (w < 0) {
                if (errno == EINTR) continue;
                snprintf(f->err, sizeof f->err, "pipe write failed: %s", strerror(errno));
                writing = 0;
                break;
            }
            p += w;
            n -= (int)w;
        }
        PQfreemem(row);
    }
    if (n == -2 && !f->err[0]) snprintf(f->err, sizeof f->err, "%s", PQerrorMessage(f->src));
    close(f->fd);
    PGresult *r;
    while ((r = PQgetResult(f->src)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && !f->err[0])
            snprintf(f->err, sizeof f->err, "%s", PQresultErrorMessage(r));
        PQclear(r);
    }
    return NULL;
}

/* The source as recorded in etl.batches: libpq parses the URI or conninfo and
 * it is rebuilt as keyword=value pairs without the password. */
static void redact_uri(const char *uri, char *out, size_t len)
{
    PQconninfoOption *opts = PQconninfoParse(uri, NULL);
    size_t o = 0;
    out[0] = '\0';
    if (!opts) {
        snprintf(out, len, "(unparseable connection string)");
        return;
    }
    for (PQconninfoOption *op = opts; op->keyword && o + 1 < len; op++) {
        if (!op->val || !*op->val || strcmp(op->keyword, "password") == 0) continue;
        int n = snprintf(out + o, len - o, "%s%s=%s", o ? " " : "", op->keyword, op->val);
        if (n < 0 || (size_t)n >= len - o) break;
        o += (size_t)n;
    }
    PQconninfoFree(opts);
}

/* ---- the batch ------------------------------------------------------------------ */

static int load_input(etl_ctx *x, etl_input *in, PGconn *src, int *skipped)
{
    int rc = 0, fd = -1;
    pthread_t th;
    struct pg_feed feed = {0};
    int pipefd[2] = {-1, -1};
    x->in = in;
    x->read = x->rejected = x->loaded = 0;
    *skipped = 0;

    if (src) { /* postgres: COPY (SELECT ...) TO STDOUT, parsed like the CSV file */
        const px_table *t = &px_canonical[in->table];
        char sql[2048] = "COPY (SELECT ";
        for (int i = 0; i < t->ncols; i++) {
            strcat(sql, i ? ", " : "");
            strcat(sql, t->cols[i].name);
        }
        strcat(sql, " FROM ");
        strcat(sql, in->path);
        /* every column: the same rows must give the same bytes (and SHA-256) in any physical order */
        strcat(sql, " ORDER BY ");
        for (int i = 0; i < t->ncols; i++) {
            char n[16];
            snprintf(n, sizeof n, "%s%d", i ? ", " : "", i + 1);
            strcat(sql, n);
        }
        strcat(sql, ") TO STDOUT WITH (FORMAT csv, HEADER true)");
        PGresult *r = PQexec(src, sql);
        int ok = PQresultStatus(r) == PGRES_COPY_OUT;
        if (!ok) {
            px_err_set(x->e, PX_EDB, "cannot read source table '%s'", in->path);
            px_err_detail(x->e, "%s", PQresultErrorMessage(r));
        }
        PQclear(r);
        if (!ok) return PX_EDB;
        if (pipe(pipefd) != 0) return px_err_set(x->e, PX_EIO, "pipe: %s", strerror(errno));
        feed.src = src;
        feed.fd = pipefd[1];
        if (pthread_create(&th, NULL, pg_feed_run, &feed) != 0) {
            close(pipefd[0]);
            close(pipefd[1]);
            return px_err_set(x->e, PX_EIO, "cannot start the source reader");
        }
        fd = pipefd[0];
    } else {
        fd = open(in->path, O_RDONLY);
        if (fd < 0) return px_err_set(x->e, PX_EIO, "cannot open '%s': %s", in->path, strerror(errno));
    }

    if (x->p->format == PX_FMT_SYNPUF) rc = etl_synpuf_file(x, fd);
    else rc = etl_canonical_file(x, fd);
    close(fd);
    if (src) {
        pthread_join(th, NULL);
        if (rc == 0 && feed.err[0]) {
            px_err_set(x->e, PX_EDB, "reading source table '%s' failed", in->path);
            px_err_detail(x->e, "%s", feed.err);
            rc = PX_EDB;
        }
    }
    if (rc != 0) return rc;
    if (src) {
        /* a source table's fingerprint is known only now: unchanged means skip */
        char q[256];
        snprintf(q, sizeof q, PRIOR_BATCH_SQL, in->sha);
        char prior[32] = "";
        if (px_db_scalar(x->c, x->e, prior, sizeof prior, q) != 0) return x->e->code;
        if (prior[0] && !x->p->force) {
            in->prior_batch = atoll(prior);
            *skipped = 1;
            return px_db_exec(x->c, x->e, "ROLLBACK TO SAVEPOINT px_input");
        }
    }
    return etl_file_done(x);
}

static int open_spools(etl_ctx *x)
{
    x->rej = tmpfile();
    x->spool = tmpfile();
    x->warn = tmpfile();
    x->patients = px_keymap_new(sizeof(etl_patient));
    x->encounters = px_keymap_new(sizeof(etl_encounter));
    if (!x->rej || !x->spool || !x->warn) return px_err_set(x->e, PX_EIO, "cannot create spool files: %s", strerror(errno));
    if (!x->patients || !x->encounters) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    return 0;
}

static void close_ctx(etl_ctx *x)
{
    EVP_MD_CTX_free(x->md);
    if (x->rej) fclose(x->rej);
    if (x->spool) fclose(x->spool);
    if (x->warn) fclose(x->warn);
    px_keymap_free(x->patients);
    px_keymap_free(x->encounters);
    px_keymap_free(x->facilities);
    px_keymap_free(x->clinicians);
    px_buf_release(&x->out);
    px_pseudo_free(x->ps);
    if (x->c) PQfinish(x->c);
}

static int discover(const px_etl_params *p, etl_input **inputs, int *n, PGconn **src, px_err *e)
{
    if (!p->source || !*p->source) return px_err_set(e, PX_EINVAL, "no --source given");
    if (p->format == PX_FMT_SYNPUF) return find_synpuf(p->source, inputs, n, e);
    if (p->format == PX_FMT_CANONICAL) return find_canonical(p->source, inputs, n, e);
    *src = px_db_connect_url(p->source, e);
    if (!*src) return e->code;
    /* one snapshot for all tables, so rows written meanwhile cannot split a reference */
    if (px_db_exec(*src, e, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") != 0) return e->code;
    /* every canonical table that exists in the source, by name, in load order */
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        char q[256], found[8] = "";
        snprintf(q, sizeof q, "SELECT to_regclass('%s') IS NOT NULL", px_canonical[t].name);
        if (px_db_scalar(*src, e, found, sizeof found, q) != 0) return e->code;
        if (strcmp(found, "t") != 0) continue;
        etl_input *nv = realloc(*inputs, sizeof **inputs * (size_t)(*n + 1));
        if (!nv) return px_err_set(e, PX_ENOMEM, "out of memory");
        *inputs = nv;
        etl_input *in = &nv[(*n)++];
        memset(in, 0, sizeof *in);
        snprintf(in->path, sizeof in->path, "%s", px_canonical[t].name);
        snprintf(in->name, sizeof in->name, "%s", px_canonical[t].name);
        in->table = t;
    }
    if (*n == 0) {
        px_err_set(e, PX_EINVAL, "the source database has none of the canonical tables");
        px_err_hint(e, "expected tables facilities, providers, patients, encounters, diagnoses, procedures "
                       "in the search_path, with the canonical columns");
        return PX_EINVAL;
    }
    return 0;
}

static const char *fmt_name(px_etl_format f)
{
    return f == PX_FMT_SYNPUF ? "synpuf" : f == PX_FMT_CANONICAL ? "canonical" : "postgres";
}

/* Rejects of the batch by reason, most frequent first, each with one example
 * ("future_date 40 (e.g. encounters.csv line 7: ...)"), into buf; *counted
 * gets the rejects that count against --max-reject-rate: all but duplicate_key,
 * whose key the warehouse holds already (from this batch or an earlier one). */
static int reject_summary(etl_ctx *x, char *buf, size_t len, long long *counted)
{
    PGresult *r = etl_exec(x, "SELECT reason, count(*), (array_agg(file_name || ' line ' || line || ': ' || detail"
                              " ORDER BY file_name, line))[1] FROM etl.rejects WHERE batch_id = $1"
                              " GROUP BY reason ORDER BY 2 DESC, 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        px_err_set(x->e, PX_EDB, "cannot count the rejects of batch %lld", x->batch);
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return PX_EDB;
    }
    size_t o = 0;
    buf[0] = '\0';
    *counted = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        long long n = atoll(PQgetvalue(r, i, 1));
        if (strcmp(PQgetvalue(r, i, 0), "duplicate_key") != 0) *counted += n;
        if (o + 1 >= len) continue;
        int k = snprintf(buf + o, len - o, "%s%s %lld (e.g. %s)", i ? "; " : "", PQgetvalue(r, i, 0), n,
                         PQgetvalue(r, i, 2));
        o = k < 0 ? o : (size_t)k >= len - o ? len - 1 : o + (size_t)k;
    }
    PQclear(r);
    return 0;
}

/* After a batch that drew an id did not commit: rolls back what is left of its
 * transaction and records the batch in etl.failed_batches, in a transaction of
 * its own, so that the id is not a silent gap. Best effort: a connection that is
 * gone records nothing (the log has the error). */
static void record_failure(etl_ctx *x, const char *srcname, const char *started, const px_etl_result *r)
{
    if (!x->c || x->batch <= 0 || PQstatus(x->c) != CONNECTION_OK) return;
    PGTransactionStatusType ts = PQtransactionStatus(x->c);
    if (ts == PQTRANS_ACTIVE) return; /* a command still running: the connection cannot be reused */
    if (ts != PQTRANS_IDLE && px_db_exec(x->c, NULL, "ROLLBACK") != 0) return;
    char reason[2048], bid[32], nread[32], nrej[32];
    snprintf(reason, sizeof reason, "%s%s%s", x->e->msg, x->e->detail[0] ? ": " : "", x->e->detail);
    snprintf(bid, sizeof bid, "%lld", x->batch);
    snprintf(nread, sizeof nread, "%lld", r->rows_read);
    snprintf(nrej, sizeof nrej, "%lld", r->rows_rejected);
    const char *params[7] = {bid, fmt_name(x->p->format), srcname, started, nread, nrej, reason};
    PGresult *res = PQexecParams(x->c, "INSERT INTO etl.failed_batches (batch_id, format, source, started_at,"
                                       " rows_read, rows_rejected, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                                       " ON CONFLICT (batch_id) DO NOTHING",
                                 7, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        px_log(PX_LOG_WARN, "cannot record failed batch %lld: %s", x->batch, PQresultErrorMessage(res));
    PQclear(res);
}

int px_etl_load(const px_config *cfg, const px_etl_params *p, px_etl_result *r, px_err *e)
{
    etl_ctx x;
    etl_input *inputs = NULL;
    int n = 0, rc;
    char srcname[4096] = "", started[64] = "";
    PGconn *src = NULL;
    memset(&x, 0, sizeof x);
    memset(r, 0, sizeof *r);
    x.cfg = cfg;
    x.p = p;
    x.e = e;
    x.today = px_date_today();
    if (p->today && px_date_parse_iso(p->today, strlen(p->today), &x.today) != 0)
        return px_err_set(e, PX_EINVAL, "bad reference date '%s'", p->today);

    if ((rc = discover(p, &inputs, &n, &src, e)) != 0) goto out;
    if (!src)
        for (int i = 0; i < n; i++)
            if ((rc = sha256_file(inputs[i].path, inputs[i].sha, &inputs[i].bytes, e)) != 0) goto out;
    if (!(x.c = px_db_connect(cfg, e))) { /* initialises a new home, key included */
        rc = e->code;
        goto out;
    }
    if (!(x.ps = px_pseudo_load(cfg->key_file, e))) {
        rc = e->code;
        goto out;
    }
    /* JIT compilation costs seconds on the merge queries and saves nothing on set-based joins */
    if ((rc = px_db_exec(x.c, e, "SET jit = off; BEGIN")) != 0) goto out;
    char q[512];
    snprintf(q, sizeof q, "SELECT pg_advisory_xact_lock(%d)", PX_ETL_LOCK);
    if ((rc = px_db_exec(x.c, e, q)) != 0) goto out;
    /* which files were loaded before (checked under the lock) */
    int todo = 0;
    for (int i = 0; i < n; i++) {
        char prior[32] = "";
        if (!src) {
            snprintf(q, sizeof q, PRIOR_BATCH_SQL, inputs[i].sha);
            if ((rc = px_db_scalar(x.c, e, prior, sizeof prior, q)) != 0) goto out;
            if (p->force) prior[0] = '\0';
            /* the same bytes twice in one source: load them once */
            for (int k = 0; k < i && !prior[0]; k++)
                if (strcmp(inputs[k].sha, inputs[i].sha) == 0) snprintf(prior, sizeof prior, "-1");
            if (prior[0]) {
                inputs[i].prior_batch = atoll(prior);
                r->files_skipped++;
                continue;
            }
        }
        x.total_bytes += inputs[i].bytes;
        todo++;
    }
    if (todo == 0) {
        px_db_exec(x.c, NULL, "ROLLBACK");
        rc = px_err_set(e, PX_ENOTHING, "nothing to load: all %d input%s were loaded before (batch %lld)", n,
                        n == 1 ? "" : "s", inputs[0].prior_batch);
        goto out;
    }
    if (src) redact_uri(p->source, srcname, sizeof srcname);
    else if (!realpath(p->source, srcname)) snprintf(srcname, sizeof srcname, "%s", p->source);
    {
        const char *params[2] = {fmt_name(p->format), srcname};
        PGresult *res = PQexecParams(x.c, "INSERT INTO etl.batches (format, source) VALUES ($1, $2)"
                                     " RETURNING batch_id, started_at::text", 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = px_err_set(e, PX_EDB, "cannot open a batch");
            px_err_detail(e, "%s", PQresultErrorMessage(res));
            PQclear(res);
            goto out;
        }
        x.batch = atoll(PQgetvalue(res, 0, 0));
        snprintf(started, sizeof started, "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
    }
    if ((rc = open_spools(&x)) != 0) goto out;
    rc = p->format == PX_FMT_SYNPUF ? etl_synpuf_begin(&x) : etl_canonical_begin(&x);
    if (rc != 0) goto out;
    for (int i = 0; i < n; i++) {
        if (inputs[i].prior_batch) continue;
        int skipped = 0;
        if (src && (rc = px_db_exec(x.c, e, "SAVEPOINT px_input")) != 0) goto out;
        if ((rc = load_input(&x, &inputs[i], src, &skipped)) != 0) goto out;
        x.done_bytes += inputs[i].bytes;
        if (skipped) {
            r->files_skipped++;
            if (inputs[i].table == PX_TAB_PATIENTS) { /* rolled back: the warehouse's rows hold */
                px_keymap_free(x.patients);
                if (!(x.patients = px_keymap_new(sizeof(etl_patient)))) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    goto out;
                }
            }
            if (inputs[i].table == PX_TAB_ENCOUNTERS) { /* nothing of it is in this batch */
                px_keymap_free(x.encounters);
                if (!(x.encounters = px_keymap_new(sizeof(etl_encounter)))) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    goto out;
                }
            }
            continue;
        }
        r->files_loaded++;
        r->rows_read += x.read;
        r->rows_loaded += x.loaded;
        r->rows_rejected += x.rejected;
    }
    if (p->on_progress) p->on_progress(p->progress_arg, "done", "", 100);
    if (r->files_loaded == 0) {
        /* nothing failed: the batch id goes back (sequences ignore ROLLBACK; no other
         * load can have drawn one while this one holds the lock), so that a scheduler
         * polling an unchanged source leaves neither gaps nor failed batches */
        snprintf(q, sizeof q, "SELECT setval(pg_get_serial_sequence('etl.batches', 'batch_id'), %lld, false)", x.batch);
        if (px_db_exec(x.c, NULL, q) == 0) x.batch = 0;
        px_db_exec(x.c, NULL, "ROLLBACK");
        rc = px_err_set(e, PX_ENOTHING, "nothing to load: every source table is unchanged since it was loaded");
        goto out;
    }
    x.in = NULL;
    if (r->rows_rejected > 0) { /* over --max-reject-rate: roll back, say why */
        char summary[1024];
        long long counted = 0;
        if ((rc = reject_summary(&x, summary, sizeof summary, &counted)) != 0) goto out;
        if ((double)counted * 100.0 > p->max_reject_rate * (double)r->rows_read) {
            rc = px_err_set(e, PX_EREJECTS, "batch %lld rejected %lld of %lld rows (%.1f%%), more than "
                            "--max-reject-rate %g%%: rolled back, nothing was stored", x.batch, counted,
                            r->rows_read, 100.0 * (double)counted / (double)r->rows_read, p->max_reject_rate);
            px_err_detail(e, "%s", summary);
            px_err_hint(e, "correct the extract or the options (--as-of, --future-dates allow) and load it again: "
                           "nothing was committed, so no --force is needed; a higher --max-reject-rate keeps "
                           "the valid rows whatever the rate");
            goto out;
        }
    }
    snprintf(q, sizeof q,
             "UPDATE etl.batches SET finished_at = clock_timestamp(), rows_read = %lld, rows_loaded = %lld,"
             " rows_rejected = %lld WHERE batch_id = $1",
             r->rows_read, r->rows_loaded, r->rows_rejected);
    if ((rc = etl_sql(&x, q, NULL, NULL)) != 0) goto out;
    snprintf(q, sizeof q,
             "INSERT INTO audit.events (action, object, detail) VALUES ('etl.load', 'batch ' || $1,"
             " jsonb_build_object('files', %d, 'rows_read', %lld, 'rows_loaded', %lld, 'rows_rejected', %lld,"
             " 'file', nullif($2, '')))",
             r->files_loaded, r->rows_read, r->rows_loaded, r->rows_rejected);
    if ((rc = etl_sql(&x, q, NULL, NULL)) != 0) goto out;
    if ((rc = px_db_exec(x.c, e, "COMMIT")) != 0) goto out;
    r->batch_id = x.batch;
    px_log(PX_LOG_INFO, "batch %lld committed: %d files, %lld read, %lld loaded, %lld rejected", x.batch,
           r->files_loaded, r->rows_read, r->rows_loaded, r->rows_rejected);
out:
    if (rc != 0 && rc != PX_ENOTHING && x.c) {
        if (p->on_progress) p->on_progress(p->progress_arg, "failed", "", -1);
        px_log(PX_LOG_ERROR, "load of %s source failed: %s", fmt_name(p->format), e->msg);
    }
    if (rc != 0) record_failure(&x, srcname, started, r);
    if (x.notes.data) snprintf(r->notes, sizeof r->notes, "%s", x.notes.data);
    px_buf_release(&x.notes);
    close_ctx(&x);
    if (src) PQfinish(src);
    free(inputs);
    return rc;
}
