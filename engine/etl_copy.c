/* etl_copy.c: the ETL's COPY writer: rows appended to the batch's buffer are
 * streamed to the server through engine's px_copy_in (etl_copy_*), a spool file
 * is replayed through COPY (etl_copy_spool), PostgreSQL's binary COPY format is
 * written (etl_bin_*), and statements run with the batch id and the current
 * file's name as parameters (etl_exec, etl_sql). Calls nothing else of the ETL. */
#include "engine/etl_int.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define COPY_CHUNK (1 << 16)

/* ---- COPY ------------------------------------------------------------------- */

int etl_copy_begin(etl_ctx *x, const char *sql)
{
    /* A deep socket buffer lets the loader run ahead of the server by several
     * chunks, so that parsing here and COPY there overlap instead of taking turns. */
    int sndbuf = 8 << 20;
    (void)setsockopt(PQsocket(x->c), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    snprintf(x->copy_what, sizeof x->copy_what, "loading '%s'", x->in ? x->in->name : "?");
    px_buf keep = x->copy.buf; /* the buffer outlives each COPY: no reallocation per file */
    x->copy.buf = (px_buf){0};
    int rc = px_copy_in_begin(&x->copy, x->c, sql, x->copy_what, x->e);
    x->copy.buf = keep;
    x->copy.buf.len = 0;
    x->copy.chunk = COPY_CHUNK;
    return rc;
}

int etl_copy_flush(etl_ctx *x, int force) { return px_copy_in_flush(&x->copy, force, x->e); }

int etl_copy_end(etl_ctx *x, long long *rows)
{
    px_buf keep = {0};
    int rc = px_copy_in_flush(&x->copy, 1, x->e);
    keep = x->copy.buf; /* px_copy_in_end releases the buffer: keep it for the next COPY */
    x->copy.buf = (px_buf){0};
    keep.len = 0;
    int rc2 = px_copy_in_end(&x->copy, rc != 0, rows, x->e);
    x->copy.buf = keep;
    return rc ? rc : rc2;
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
        if (px_buf_reserve(&x->copy.buf, COPY_CHUNK) != 0) return px_err_set(x->e, PX_ENOMEM, "out of memory");
        size_t n = fread(x->copy.buf.data + x->copy.buf.len, 1, COPY_CHUNK, f);
        x->copy.buf.len += n;
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
    px_buf sharded = {0};
    snprintf(bid, sizeof bid, "%lld", x->batch);
    const char *params[2] = {bid, x->in ? x->in->name : ""};
    int np = strstr(sql, "$2") ? 2 : strstr(sql, "$1") ? 1 : 0;
    /* a load into a distributed warehouse reads and writes the fact tables
     * through its pending tables (shard_load.c) */
    if (x->shards) {
        int rw = etl_shard_sql(sql, &sharded);
        if (rw < 0) {
            px_buf_release(&sharded);
            return NULL; /* PGRES_FATAL_ERROR to the caller */
        }
        if (rw > 0) sql = sharded.data;
    }
    PGresult *r = PQexecParams(x->c, sql, np, NULL, params, NULL, NULL, 0);
    px_buf_release(&sharded);
    return r;
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

