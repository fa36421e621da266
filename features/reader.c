/* reader.c: the one feature-row reader. A table's columns are looked up in
 * pg_catalog (px_feat_table_open) and turned into fields that travel in a binary
 * COPY ... TO STDOUT in their native form where PostgreSQL has one we decode
 * (float8, float4, int2/4/8, bool: no cast, no text formatting) and as float8 or
 * text otherwise (px_feat_table_field); px_feat_scan streams the rows to a
 * callback, decoded (numbers as double, NAN for NULL; text NUL-terminated, NULL
 * for NULL). px_feat_query runs the same SELECT with parameters and binary
 * results, decoded by the same decoder: the mode for a few rows on a hot path
 * (no COPY round trip). Training (dataset_load.c), KPI scoring (kpi/), the drift
 * check (serve/check.c) and the server's by-encounter lookup (serve/predict.c)
 * read feature rows through it, so a model sees the same input everywhere. Invariant: a failed scan drains the stream (the connection stays
 * usable) and returns the first error. */
#include "features/features.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct rcol {
    char *name;
    char type[64];   /* base type name: int4, numeric, bool, text, uuid, date ... */
    char cat;        /* pg_type.typcategory */
} rcol;

struct px_feat_table {
    char name[256];  /* schema.name as pg_catalog spells it */
    char *qname;     /* "schema"."name" */
    rcol *cols;
    size_t ncols;
};

static int oom(px_err *e) { return px_err_set(e, PX_ENOMEM, "out of memory reading a feature table"); }

void px_feat_table_free(px_feat_table *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->ncols; i++) free(t->cols[i].name);
    free(t->cols);
    free(t->qname);
    free(t);
}

const char *px_feat_table_name(const px_feat_table *t) { return t->name; }
const char *px_feat_table_quoted(const px_feat_table *t) { return t->qname; }
size_t px_feat_table_ncols(const px_feat_table *t) { return t->ncols; }
const char *px_feat_table_col(const px_feat_table *t, size_t i, const char **type, char *cat)
{
    if (i >= t->ncols) return NULL;
    if (type) *type = t->cols[i].type;
    if (cat) *cat = t->cols[i].cat;
    return t->cols[i].name;
}

int px_feat_table_index(const px_feat_table *t, const char *name)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0) return (int)i;
    return -1;
}

px_feat_table *px_feat_table_open(PGconn *c, const char *table, px_err *e)
{
    char schema[256] = "", rel[256];
    const char *dot = table ? strchr(table, '.') : NULL;
    if (!table || !table[0]) {
        px_err_set(e, PX_EINVAL, "no feature table named");
        return NULL;
    }
    if (dot) {
        snprintf(schema, sizeof schema, "%.*s", (int)(dot - table), table);
        snprintf(rel, sizeof rel, "%s", dot + 1);
    } else {
        snprintf(rel, sizeof rel, "%s", table);
    }
    px_feat_table *t = calloc(1, sizeof *t);
    PGresult *r = NULL;
    if (!t) {
        oom(e);
        return NULL;
    }
    const char *pv[2] = {schema[0] ? schema : NULL, rel};
    int rc = px_db_query(c, e, "cannot look up a feature table", &r,
                         "SELECT c.oid, n.nspname, c.relname FROM pg_class c"
                         " JOIN pg_namespace n ON n.oid = c.relnamespace"
                         " WHERE c.relname = $2 AND c.relkind IN ('r', 'v', 'm', 'p', 'f')"
                         "   AND (n.nspname = $1 OR ($1 IS NULL AND pg_table_is_visible(c.oid)))",
                         2, pv);
    if (rc) goto fail;
    if (PQntuples(r) != 1) {
        px_err_set(e, PX_ENOTFOUND, "table '%s' does not exist", table);
        goto fail;
    }
    snprintf(t->name, sizeof t->name, "%s.%s", PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
    char *qs = PQescapeIdentifier(c, PQgetvalue(r, 0, 1), strlen(PQgetvalue(r, 0, 1)));
    char *qr = PQescapeIdentifier(c, PQgetvalue(r, 0, 2), strlen(PQgetvalue(r, 0, 2)));
    size_t n = (qs ? strlen(qs) : 0) + (qr ? strlen(qr) : 0) + 2;
    if (qs && qr && (t->qname = malloc(n))) snprintf(t->qname, n, "%s.%s", qs, qr);
    PQfreemem(qs);
    PQfreemem(qr);
    if (!t->qname) {
        oom(e);
        goto fail;
    }
    char oid[32];
    snprintf(oid, sizeof oid, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    r = NULL;
    const char *po[1] = {oid};
    if (px_db_query(c, e, "cannot read the columns of a feature table", &r,
                    "SELECT a.attname, coalesce(b.typname, t.typname), coalesce(b.typcategory, t.typcategory)"
                    " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                    " LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'"
                    " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    1, po) != 0)
        goto fail;
    t->ncols = (size_t)PQntuples(r);
    if (!(t->cols = calloc(t->ncols + 1, sizeof *t->cols))) {
        t->ncols = 0;
        oom(e);
        goto fail;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        if (!(t->cols[i].name = strdup(PQgetvalue(r, (int)i, 0)))) {
            t->ncols = i;
            oom(e);
            goto fail;
        }
        snprintf(t->cols[i].type, sizeof t->cols[i].type, "%s", PQgetvalue(r, (int)i, 1));
        t->cols[i].cat = PQgetvalue(r, (int)i, 2)[0];
    }
    PQclear(r);
    return t;
fail:
    PQclear(r);
    px_feat_table_free(t);
    return NULL;
}

px_feat_wire px_feat_wire_of(const char *type, int as_text, const char **cast)
{
    static const struct { const char *type; px_feat_wire wire; } native[] = {
        {"float8", PX_WIRE_F8}, {"float4", PX_WIRE_F4}, {"int2", PX_WIRE_I2},
        {"int4", PX_WIRE_I4},   {"int8", PX_WIRE_I8},   {"bool", PX_WIRE_BOOL}};
    *cast = as_text ? "::text" : "::float8";
    if (as_text) return PX_WIRE_TEXT;
    for (size_t k = 0; k < sizeof native / sizeof native[0]; k++)
        if (strcmp(type, native[k].type) == 0) {
            *cast = "";
            return native[k].wire;
        }
    return PX_WIRE_F8;
}

int px_feat_field_set(px_feat_field *f, const char *sql, px_feat_wire wire, px_err *e)
{
    free(f->sql);
    f->wire = wire;
    if (!(f->sql = strdup(sql))) return oom(e);
    return 0;
}

int px_feat_table_field(PGconn *c, const px_feat_table *t, const char *alias, const char *col, int as_text,
                        px_feat_field *f, px_err *e)
{
    int i = px_feat_table_index(t, col);
    if (i < 0) return px_err_set(e, PX_ENOTFOUND, "column '%s' is not in table '%s'", col, t->name);
    const rcol *rc = &t->cols[i];
    if (!as_text && rc->cat != 'N' && rc->cat != 'B')
        return px_err_set(e, PX_EINVAL, "column '%s' of '%s' has type %s: a numeric input must be numeric or boolean",
                          col, t->name, rc->type);
    const char *cast;
    px_feat_wire w = px_feat_wire_of(rc->type, as_text, &cast);
    char *id = PQescapeIdentifier(c, col, strlen(col));
    if (!id) return oom(e);
    px_buf b = {0};
    int r = px_buf_printf(&b, "(%s%s%s)%s", alias ? alias : "", alias ? "." : "", id, cast);
    PQfreemem(id);
    free(f->sql);
    f->sql = b.data;
    f->wire = w;
    return r ? oom(e) : 0;
}

char *px_feat_table_value_sql(PGconn *c, const px_feat_table *t, const char *alias, const char *col, int as_text,
                              px_err *e)
{
    int i = px_feat_table_index(t, col);
    if (i < 0) {
        px_err_set(e, PX_ENOTFOUND, "column '%s' is not in table '%s'", col, t->name);
        return NULL;
    }
    const rcol *rc = &t->cols[i];
    if (!as_text && rc->cat != 'N' && rc->cat != 'B') {
        px_err_set(e, PX_EINVAL, "column '%s' of '%s' has type %s: a numeric input must be numeric or boolean", col,
                   t->name, rc->type);
        return NULL;
    }
    char *id = PQescapeIdentifier(c, col, strlen(col));
    px_buf b = {0};
    /* booleans as 0/1, as the reader decodes them */
    int r = id ? px_buf_printf(&b, "(%s%s%s)%s", alias ? alias : "", alias ? "." : "", id,
                               as_text ? "::text" : strcmp(rc->type, "bool") == 0 ? "::int::float8" : "::float8")
               : PX_ENOMEM;
    PQfreemem(id);
    if (r) {
        px_buf_release(&b);
        oom(e);
        return NULL;
    }
    return b.data;
}

void px_feat_fields_release(px_feat_field *f, size_t n)
{
    for (size_t i = 0; f && i < n; i++) {
        free(f[i].sql);
        f[i].sql = NULL;
    }
}

/* ---- the binary COPY stream ----------------------------------------------------- */

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* One field's value as a number; -1 when its length does not fit its wire type. */
static int decode_number(const unsigned char *p, int32_t len, px_feat_wire w, double *v)
{
    static const int32_t size[] = {8, 4, 2, 4, 8, 1};
    if ((unsigned)w >= sizeof size / sizeof size[0]) return -1;
    if (len != size[w]) return -1;
    switch (w) {
    case PX_WIRE_F8: {
        uint64_t u = be64(p);
        memcpy(v, &u, sizeof *v);
        break;
    }
    case PX_WIRE_F4: {
        uint32_t u = be32(p);
        float x;
        memcpy(&x, &u, sizeof x);
        *v = (double)x;
        break;
    }
    case PX_WIRE_I2: *v = (double)(int16_t)(p[0] << 8 | p[1]); break;
    case PX_WIRE_I4: *v = (double)(int32_t)be32(p); break;
    case PX_WIRE_I8: *v = (double)(int64_t)be64(p); break;
    default: *v = p[0] ? 1.0 : 0.0;
    }
    return 0;
}

typedef struct scan {
    size_t nf;
    const px_feat_field *f;
    double *num;
    const char **text;
    const unsigned char **raw;
    int32_t *len;
    char *tbuf;      /* the row's text values, NUL-terminated, back to back */
    size_t tcap;
} scan;

/* Decodes the fields whose bytes and lengths are in s->raw and s->len (-1: NULL):
 * the one decoder, for rows of a COPY stream and of a binary query result alike.
 * 0, -1 on a value that does not fit its wire type, -2 out of memory. */
static int decode_fields(scan *s)
{
    size_t need = 0;
    for (size_t k = 0; k < s->nf; k++)
        if (s->f[k].wire == PX_WIRE_TEXT && s->len[k] >= 0) need += (size_t)s->len[k] + 1;
    if (need > s->tcap) {
        char *nb = realloc(s->tbuf, need);
        if (!nb) return -2;
        s->tbuf = nb;
        s->tcap = need;
    }
    char *t = s->tbuf;
    for (size_t k = 0; k < s->nf; k++) {
        s->num[k] = NAN;
        s->text[k] = NULL;
        if (s->len[k] < 0) continue;
        if (s->f[k].wire == PX_WIRE_TEXT) {
            memcpy(t, s->raw[k], (size_t)s->len[k]);
            t[s->len[k]] = '\0';
            s->text[k] = t;
            t += s->len[k] + 1;
        } else if (s->f[k].wire < PX_WIRE_TEXT && decode_number(s->raw[k], s->len[k], s->f[k].wire, &s->num[k]) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Decodes one tuple at p (count already read) into s; -1 on a malformed tuple. */
static int decode_tuple(scan *s, const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *q = *pp;
    for (size_t k = 0; k < s->nf; k++) {
        if (q + 4 > end) return -1;
        int32_t len = (int32_t)be32(q);
        if (len < -1 || (len > 0 && (size_t)(end - q - 4) < (size_t)len)) return -1;
        s->raw[k] = q + 4;
        s->len[k] = len;
        q += 4 + (len > 0 ? len : 0);
    }
    int d = decode_fields(s);
    if (d == 0) *pp = q;
    return d;
}

/* "<head><fields> <from><tail>" into q, after checking the fields. */
static int build_select(px_buf *q, const char *head, const px_feat_field *f, size_t nf, const char *from,
                        const char *tail, px_err *e)
{
    int rc = px_buf_adds(q, head);
    for (size_t k = 0; k < nf && rc == 0; k++) {
        if (!f[k].sql || f[k].wire > PX_WIRE_BYTES)
            return px_err_set(e, PX_EINVAL, "feature scan: field %zu has no SQL or a bad wire type", k);
        rc = px_buf_printf(q, "%s%s", k ? ", " : "", f[k].sql);
    }
    if (rc == 0) rc = px_buf_printf(q, " %s%s", from ? from : "", tail);
    return rc ? oom(e) : 0;
}

static int scan_alloc(scan *s, const px_feat_field *f, size_t nf, px_err *e)
{
    memset(s, 0, sizeof *s);
    s->nf = nf, s->f = f;
    s->num = calloc(nf + 1, sizeof *s->num);
    s->text = calloc(nf + 1, sizeof *s->text);
    s->raw = calloc(nf + 1, sizeof *s->raw);
    s->len = calloc(nf + 1, sizeof *s->len);
    return !s->num || !s->text || !s->raw || !s->len ? oom(e) : 0;
}

static void scan_free(scan *s)
{
    free(s->num);
    free(s->text);
    free(s->raw);
    free(s->len);
    free(s->tbuf);
}

int px_feat_query(PGconn *c, const px_feat_field *f, size_t nf, const char *from, int nparams,
                  const char *const *params, px_feat_row_fn fn, void *arg, char sqlstate[6], px_err *e)
{
    scan s;
    px_buf q = {0};
    PGresult *r = NULL;
    if (sqlstate) sqlstate[0] = '\0';
    int rc = build_select(&q, "SELECT ", f, nf, from, "", e);
    if (rc == 0) rc = scan_alloc(&s, f, nf, e);
    else memset(&s, 0, sizeof s);
    if (rc) goto out;
    /* binary results: the values as the COPY stream carries them */
    r = PQexecParams(c, q.data, nparams, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (sqlstate && st) snprintf(sqlstate, 6, "%s", st);
        rc = px_db_fail(e, c, r, "cannot read feature rows");
        goto out;
    }
    if ((size_t)PQnfields(r) != nf) {
        rc = px_err_set(e, PX_EDB, "cannot read feature rows: a row of %d fields, expected %zu", PQnfields(r), nf);
        goto out;
    }
    px_feat_row row = {nf, s.num, s.text, s.raw, s.len};
    int rows = PQntuples(r);
    for (int i = 0; i < rows && rc == 0; i++) {
        for (size_t k = 0; k < nf; k++) {
            int null = PQgetisnull(r, i, (int)k);
            s.raw[k] = null ? NULL : (const unsigned char *)PQgetvalue(r, i, (int)k);
            s.len[k] = null ? -1 : PQgetlength(r, i, (int)k);
        }
        int d = decode_fields(&s);
        if (d == -2) rc = oom(e);
        else if (d != 0) rc = px_err_set(e, PX_EDB, "cannot read feature rows: a malformed row");
        else rc = fn(&row, arg, e);
    }
out:
    PQclear(r);
    px_buf_release(&q);
    scan_free(&s);
    return rc;
}

int px_feat_scan(PGconn *c, const px_feat_field *f, size_t nf, const char *from, px_feat_row_fn fn, void *arg,
                 px_err *e)
{
    static const unsigned char sig[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};
    scan s;
    px_buf q = {0};
    int rc = build_select(&q, "COPY (SELECT ", f, nf, from, ") TO STDOUT (FORMAT binary)", e);
    if (rc == 0) rc = scan_alloc(&s, f, nf, e);
    else memset(&s, 0, sizeof s);
    if (rc) goto out;
    PGresult *r = PQexec(c, q.data);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        rc = px_db_fail(e, c, r, "cannot read feature rows");
        PQclear(r);
        goto out;
    }
    PQclear(r);
    char *buf = NULL;
    int len, header = 1, done = 0;
    px_feat_row row = {nf, s.num, s.text, s.raw, s.len};
    while ((len = PQgetCopyData(c, &buf, 0)) > 0) {
        const unsigned char *p = (const unsigned char *)buf, *end = p + len;
        if (rc == 0 && header) {
            if (len < 19 || memcmp(p, sig, 11) != 0 || (size_t)(len - 19) < be32(p + 15))
                rc = px_err_set(e, PX_EDB, "cannot read feature rows: not a binary COPY stream");
            else
                p += 19 + be32(p + 15); /* flags, then the header extension */
            header = 0;
        }
        while (rc == 0 && !done && p + 2 <= end) {
            int16_t count = (int16_t)(p[0] << 8 | p[1]);
            p += 2;
            if (count == -1) {
                done = 1;
                break;
            }
            if ((size_t)count != nf) {
                rc = px_err_set(e, PX_EDB, "cannot read feature rows: a row of %d fields, expected %zu", count, nf);
                break;
            }
            int d = decode_tuple(&s, &p, end);
            if (d == -2) rc = oom(e);
            else if (d != 0) rc = px_err_set(e, PX_EDB, "cannot read feature rows: a malformed or truncated row");
            else rc = fn(&row, arg, e);
        }
        PQfreemem(buf); /* after an error the rest of the stream is drained */
        buf = NULL;
    }
    if (len == -2 && rc == 0) rc = px_db_fail(e, c, NULL, "lost the connection while reading feature rows");
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0) rc = px_db_fail(e, c, r, "cannot read feature rows");
        PQclear(r);
    }
out:
    px_buf_release(&q);
    scan_free(&s);
    return rc;
}
