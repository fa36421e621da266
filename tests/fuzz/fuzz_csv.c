/* fuzz_csv.c: libFuzzer target for the streaming CSV reader (engine/csv.c) and the
 * canonical field validators (engine/validate.c) that the canonical loader applies
 * to its fields. Input: one byte choosing how the stream is cut into reads, then
 * the CSV text. Checks, for any input:
 *  - one input in 256 (cut byte 0xFF) is repeated past 1 MiB, for the
 *    records over the limit (PX_CSV_TOO_LONG), read in one go and not compared;
 *  - the same records (status, line, fields byte for byte) whether the text
 *    arrives in one read(2) or in many short ones (a SOCK_SEQPACKET socket
 *    returns one message per read, so the cuts are deterministic);
 *  - a record with status OK has fields of valid UTF-8 without NUL, whose
 *    length is the field's strlen; px_csv_bytes() is the input size at the end;
 *  - the first record is taken as a header and matched to the canonical table
 *    with most columns in common; every later record's fields go through that
 *    table's validators as check_columns() (etl_canonical.c) calls them, and
 *    every field through the date, number and ICD checks: no crash, and a
 *    date accepted formats back to the same text, a normalized ICD code is
 *    upper-case alphanumeric of at most 15 characters. */
#define _GNU_SOURCE
#include "engine/internal.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

/* One record as read: the status, line and the fields joined with their lengths. */
typedef struct rec {
    int rc, status, nf;
    long long line;
    char *blob; /* nf x (size_t len, bytes) */
    size_t blen, bcap;
    struct rec *next;
} rec;

static void free_recs(rec *r)
{
    while (r) {
        rec *n = r->next;
        free(r->blob);
        free(r);
        r = n;
    }
}

/* Strict UTF-8 (RFC 3629), written independently of csv.c's. */
static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07;
        else return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Reads every record from fd; checks the per-record invariants. */
static rec *read_all(int fd, size_t size, int keep, int *ok)
{
    *ok = 0;
    px_csv *c = px_csv_new(fd);
    if (!c) return NULL;
    rec *head = NULL, **tail = &head;
    for (size_t guard = 0;; guard++) {
        if (guard > size + 1) FAIL("more records than bytes: the reader does not advance");
        px_csv_status st = PX_CSV_OK;
        int rc = px_csv_next(c, &st);
        if (rc < 0) {
            free_recs(head);
            px_csv_free(c);
            return NULL;
        }
        rec *r = calloc(1, sizeof *r);
        if (!r) abort();
        r->rc = rc;
        *tail = r;
        tail = &r->next;
        if (rc == 0) break;
        r->status = (int)st;
        r->line = px_csv_line(c);
        r->nf = px_csv_nfields(c);
        if (r->nf < 1) FAIL("a record with %d fields", r->nf);
        for (int i = 0; i < r->nf; i++) {
            const char *f = px_csv_field(c, i);
            size_t n = px_csv_field_len(c, i);
            if (!f) FAIL("field %d of %d is NULL", i, r->nf);
            if (f[n] != '\0') FAIL("field %d is not NUL-terminated at its length", i);
            if (st == PX_CSV_OK) {
                if (strlen(f) != n) FAIL("an OK record's field %d holds a NUL", i);
                if (!utf8_ok((const unsigned char *)f, n)) FAIL("an OK record's field %d is not UTF-8", i);
            }
            if (r->blen + sizeof n + n > r->bcap) { /* geometric: a 1 MiB record may hold 500,000 fields */
                size_t cap = 2 * (r->blen + sizeof n + n) + 64;
                char *nb = realloc(r->blob, cap);
                if (!nb) abort();
                r->blob = nb;
                r->bcap = cap;
            }
            memcpy(r->blob + r->blen, &n, sizeof n);
            memcpy(r->blob + r->blen + sizeof n, f, n);
            r->blen += sizeof n + n;
        }
        if (r->blen - (size_t)r->nf * sizeof(size_t) > ((size_t)1 << 20))
            FAIL("a record keeps %zu bytes of fields, over the 1 MiB limit", r->blen - (size_t)r->nf * sizeof(size_t));
        if (!keep) { /* checked; not kept (a repeated input may hold a million records) */
            head = NULL; /* r is the only record linked */
            tail = &head;
            free(r->blob);
            free(r);
        }
    }
    if ((size_t)px_csv_bytes(c) != size) FAIL("consumed %lld bytes of %zu", px_csv_bytes(c), size);
    px_csv_free(c);
    *ok = 1;
    return head;
}

static void same(const rec *a, const rec *b)
{
    long k = 0;
    for (; a && b; a = a->next, b = b->next, k++) {
        if (a->rc != b->rc || a->status != b->status || a->line != b->line || a->nf != b->nf ||
            a->blen != b->blen || (a->blen && memcmp(a->blob, b->blob, a->blen) != 0))
            FAIL("record %ld differs between one read and short reads (status %d/%d, line %lld/%lld, %d/%d fields)",
                 k, a->status, b->status, a->line, b->line, a->nf, b->nf);
    }
    if (a || b) FAIL("a different number of records between one read and short reads");
}

/* The validators on one field, as the canonical loader applies them by type,
 * and every field through all of them (they must hold for any bytes). */
static void validate_field(const char *v, size_t n, const px_col *col)
{
    int days;
    char out[16], fmt[11];
    if (px_date_parse_iso(v, n, &days) == 0) {
        px_date_format(days, fmt);
        if (n != 10 || memcmp(fmt, v, 10) != 0) FAIL("date '%.*s' formats back as '%s'", (int)n, v, fmt);
    }
    if (px_date_parse_partial(v, n, &days) == 0) {
        px_date_format(days, fmt);
        if (n > 10 || memcmp(fmt, v, n) != 0) FAIL("partial date '%.*s' formats back as '%s'", (int)n, v, fmt);
    }
    if (px_date_parse_ymd8(v, n, &days) == 0) {
        px_date_format(days, fmt);
        if (n != 8 || memcmp(fmt, v, 4) != 0 || memcmp(fmt + 5, v + 4, 2) != 0 || memcmp(fmt + 8, v + 6, 2) != 0)
            FAIL("date '%.*s' formats back as '%s'", (int)n, v, fmt);
    }
    long long iv;
    if (px_parse_int(v, n, &iv) == 0) {
        char b[32];
        int k = snprintf(b, sizeof b, "%lld", iv);
        /* leading zeros are allowed, so compare without them */
        size_t s = v[0] == '-';
        while (s + 1 < n && v[s] == '0') s++;
        if (strcmp(b + (iv < 0), v + s) != 0 && !(iv == 0 && k == 1)) FAIL("integer '%.*s' read as %lld", (int)n, v, iv);
    }
    double dv;
    if (px_parse_num(v, n, &dv) == 0 && !isfinite(dv)) FAIL("number '%.*s' read as %g", (int)n, v, dv);
    int m = px_icd_normalize(v, n, out);
    if (m >= 0) {
        if (m > 15 || out[m] != '\0') FAIL("normalized ICD code of length %d", m);
        for (int i = 0; i < m; i++)
            if (!((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'A' && out[i] <= 'Z'))) FAIL("normalized ICD '%s'", out);
        (void)px_icd9_dx_valid(out, (size_t)m);
        (void)px_icd9_px_valid(out, (size_t)m);
        (void)px_icd10_dx_valid(out, (size_t)m);
        (void)px_icd10_pcs_valid(out, (size_t)m);
    }
    (void)px_icd9_dx_valid(v, n);
    (void)px_icd10_dx_valid(v, n);
    if (!col) return;
    if (col->type == PX_T_ENUM)
        for (int k = 0; col->enum_values[k]; k++)
            (void)(strlen(col->enum_values[k]) == n && strncasecmp(col->enum_values[k], v, n) == 0);
}

/* The header decides the table; later records are validated column by column. */
static void validate(const rec *r)
{
    if (!r || r->rc != 1 || r->status != PX_CSV_OK) return;
    const px_table *best = NULL;
    int pos[64], bestn = 0;
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        int hits = 0;
        size_t off = 0;
        for (int i = 0; i < r->nf; i++) {
            size_t n;
            memcpy(&n, r->blob + off, sizeof n);
            char name[64];
            if (n < sizeof name) {
                memcpy(name, r->blob + off + sizeof n, n);
                name[n] = '\0';
                if (px_canonical_col(&px_canonical[t], name) >= 0) hits++;
            }
            off += sizeof n + n;
        }
        if (hits > bestn) bestn = hits, best = &px_canonical[t];
    }
    for (int i = 0; i < 64; i++) pos[i] = -1;
    if (best) {
        size_t off = 0;
        for (int i = 0; i < r->nf; i++) {
            size_t n;
            memcpy(&n, r->blob + off, sizeof n);
            char name[64];
            if (n < sizeof name && i < 64) {
                memcpy(name, r->blob + off + sizeof n, n);
                name[n] = '\0';
                pos[i] = px_canonical_col(best, name);
            }
            off += sizeof n + n;
        }
    }
    for (const rec *q = r->next; q && q->rc == 1; q = q->next) {
        size_t off = 0;
        for (int i = 0; i < q->nf; i++) {
            size_t n;
            memcpy(&n, q->blob + off, sizeof n);
            /* an exact-size, NUL-terminated copy, so that ASan sees a read past the field */
            char *v = malloc(n + 1);
            if (!v) abort();
            memcpy(v, q->blob + off + sizeof n, n);
            v[n] = '\0';
            validate_field(v, n, best && i < 64 && pos[i] >= 0 ? &best->cols[pos[i]] : NULL);
            free(v);
            off += sizeof n + n;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t cut = 1 + data[0] % 64; /* the size of each short read */
    int big = data[0] == 0xFF;     /* 1 in 256: the text repeated past 1 MiB */
    data++, size--;
    uint8_t *rep = NULL;
    if (big && size > 0) {
        /* records over the 1 MiB limit (PX_CSV_TOO_LONG, cut and skipped to
         * their end) need more bytes than libFuzzer's inputs hold */
        size_t n = ((size_t)1 << 20) + 4096 + size;
        n -= n % size;
        rep = malloc(n);
        if (!rep) abort();
        for (size_t k = 0; k < n; k += size) memcpy(rep + k, data, size);
        data = rep, size = n;
    }

    /* one read: a memory file */
    int mfd = memfd_create("fuzz_csv", MFD_CLOEXEC);
    if (mfd < 0) abort();
    if (size && write(mfd, data, size) != (ssize_t)size) abort();
    lseek(mfd, 0, SEEK_SET);
    int ok1;
    rec *one = read_all(mfd, size, !rep, &ok1);
    close(mfd);
    if (!ok1) FAIL("read error on a memory file");

    /* short reads: up to 100 messages of `cut` bytes, then the rest in one */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) abort();
    size_t put = 0;
    int sent = 1;
    for (int k = 0; put < size && sent; k++) {
        size_t n = k < 100 ? cut : size - put;
        if (n > size - put) n = size - put;
        if (send(sv[0], data + put, n, MSG_DONTWAIT) != (ssize_t)n) sent = 0;
        put += n;
    }
    shutdown(sv[0], SHUT_WR);
    if (sent && !rep) {
        int ok2;
        rec *many = read_all(sv[1], size, 1, &ok2);
        if (!ok2) FAIL("read error on a socket");
        same(one, many);
        free_recs(many);
    }
    close(sv[0]);
    close(sv[1]);

    validate(one);
    free_recs(one);
    free(rep);
    return 0;
}
