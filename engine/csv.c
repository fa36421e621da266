/* csv.c: streaming RFC 4180 reader over a file descriptor; the ETL hot path.
 * Records are de-quoted in place: the buffer holds [output of the current record |
 * consumed gap | unread input], and the write index never passes the read index
 * (w <= r), so fields are NUL-terminated slices of the buffer, valid until the
 * next px_csv_next(). Memory is fixed (one 2 MiB buffer): a record over 1 MiB is
 * cut there and parsed on to its end without being stored (PX_CSV_TOO_LONG). */
#include "engine/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CSV_MAX_REC ((size_t)1 << 20) /* longest record, raw bytes without its line end */
#define CSV_BLOCK ((size_t)1 << 20)   /* minimum free space for one read(2) */
#define CSV_CAP (CSV_MAX_REC + CSV_BLOCK + 64)

enum { S_START, S_PLAIN, S_QUOTED, S_QUOTE_SEEN }; /* parser state within a field */

typedef struct csv_field { size_t off, len; } csv_field; /* off: from record start */

struct px_csv {
    int fd, eof;
    unsigned char *buf;        /* CSV_CAP + 1 bytes (room for a final NUL) */
    size_t rec, r, w, end;     /* record start, read, write, end of data */
    long long rstart;          /* r - rstart = raw bytes of the record consumed */
    long long total_read;      /* bytes read from fd */
    long long line;            /* line number of the next record */
    long long rec_line;        /* first line of the current record */
    csv_field *fields;
    int nf, fcap;
    size_t fstart;             /* offset of the open field from rec */
    int state, skipping, bad_quote, has_nul;
    unsigned hi;               /* OR of all plain bytes: bit 7 set = non-ASCII seen */
    size_t keep;               /* TOO_LONG: output bytes kept */
    long long rawlen;          /* raw length of the current record */
    long long blank_line;      /* line of the next blank record to return */
    long long next_line;       /* first line of the parked record */
    long long nblank, pend_blank;
    int cur_blank, have_next;  /* current record is a blank line; record parked */
    px_csv_status status;
    void (*tap)(void *ctx, const void *buf, size_t n);
    void *tap_ctx;
};

/* Bytes that stop the fast loops outside and inside quotes. NUL is in both: it
 * is the sentinel written at buf[end], and a NUL in the data marks it bad. */
static const unsigned char plain_stop[256] = { [0] = 1, [','] = 1, ['"'] = 1, ['\n'] = 1, ['\r'] = 1 };
static const unsigned char quoted_stop[256] = { [0] = 1, ['"'] = 1, ['\n'] = 1 };

/* Returns a reader owning a 2 MiB buffer, or NULL when out of memory.
 * The caller frees it with px_csv_free(); fd stays open and owned by the caller. */
px_csv *px_csv_new(int fd)
{
    px_csv *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->line = 1;
    c->fcap = 64;
    c->buf = malloc(CSV_CAP + 1);
    c->fields = malloc((size_t)c->fcap * sizeof *c->fields);
    if (!c->buf || !c->fields) {
        px_csv_free(c);
        return NULL;
    }
    return c;
}

void px_csv_free(px_csv *c)
{
    if (!c)
        return;
    free(c->buf);
    free(c->fields);
    free(c);
}

void px_csv_set_tap(px_csv *c, void (*tap)(void *ctx, const void *buf, size_t n), void *ctx)
{
    c->tap = tap;
    c->tap_ctx = ctx;
}

/* ---- buffer management ---------------------------------------------------- */

/* Grows the field table; keeps nf < fcap so one more field always fits. */
static int grow_fields(px_csv *c)
{
    int ncap = c->fcap * 2;
    csv_field *f = realloc(c->fields, (size_t)ncap * sizeof *f);
    if (!f) {
        errno = ENOMEM;
        return -1;
    }
    c->fields = f;
    c->fcap = ncap;
    return 0;
}

/* The record passed CSV_MAX_REC raw bytes: keep its first CSV_MAX_REC output
 * bytes (fields cut there) and parse on to its end without storing more. */
static void enter_skip(px_csv *c)
{
    size_t keep = c->w - c->rec;
    if (keep > CSV_MAX_REC)
        keep = CSV_MAX_REC;
    while (c->nf > 0 && c->fields[c->nf - 1].off >= keep)
        c->nf--;
    if (c->nf > 0 && c->fields[c->nf - 1].off + c->fields[c->nf - 1].len > keep)
        c->fields[c->nf - 1].len = keep - c->fields[c->nf - 1].off;
    if (c->fstart < keep) {
        c->fields[c->nf].off = c->fstart;
        c->fields[c->nf].len = keep - c->fstart;
        c->nf++;
    }
    c->skipping = 1;
    c->keep = keep;
}

/* Moves the record's output and the unread input to the front of the buffer,
 * then reads once. Returns 1 when bytes arrived, 0 at end of input, -1 on a
 * read error (errno set). Afterwards buf[end] is the NUL sentinel. */
static int refill(px_csv *c)
{
    if (!c->skipping && (long long)c->r - c->rstart > (long long)CSV_MAX_REC)
        enter_skip(c);
    if (c->skipping)
        c->w = c->rec + c->keep;
    size_t outn = c->w - c->rec, inn = c->end - c->r;
    if (c->rec != 0 || c->w != c->r) {
        memmove(c->buf, c->buf + c->rec, outn);
        memmove(c->buf + outn, c->buf + c->r, inn);
        c->rstart -= (long long)(c->r - outn);
        c->rec = 0;
        c->w = c->r = outn;
        c->end = outn + inn;
        c->buf[c->end] = '\0';
    }
    if (c->eof)
        return 0;
    ssize_t n;
    do
        n = read(c->fd, c->buf + c->end, CSV_CAP - c->end);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    if (n == 0) {
        c->eof = 1;
        return 0;
    }
    if (c->tap)
        c->tap(c->tap_ctx, c->buf + c->end, (size_t)n);
    c->end += (size_t)n;
    c->total_read += n;
    c->buf[c->end] = '\0';
    return 1;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t v;
        if (n - i >= 8 && (memcpy(&v, s + i, 8), (v & 0x8080808080808080ULL) == 0)) {
            i += 8;
            continue;
        }
        unsigned char ch = s[i], lo = 0x80, hi = 0xBF;
        size_t need;
        if (ch < 0x80) {
            i++;
            continue;
        }
        if (ch >= 0xC2 && ch <= 0xDF) need = 1;
        else if (ch == 0xE0) { need = 2; lo = 0xA0; }     /* overlong below U+0800 */
        else if (ch == 0xED) { need = 2; hi = 0x9F; }     /* surrogates D800..DFFF */
        else if (ch >= 0xE1 && ch <= 0xEF) need = 2;
        else if (ch == 0xF0) { need = 3; lo = 0x90; }     /* overlong below U+10000 */
        else if (ch >= 0xF1 && ch <= 0xF3) need = 3;
        else if (ch == 0xF4) { need = 3; hi = 0x8F; }     /* above U+10FFFF */
        else return false;                                /* 80..C1, F5..FF */
        if (n - i <= need || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

/* ---- the parser ------------------------------------------------------------- */

/* Closes the open field at w: records it and writes its NUL. Returns 0 or -1. */
static int end_field(px_csv *c)
{
    if (c->skipping)
        return 0;
    c->fields[c->nf].off = c->fstart;
    c->fields[c->nf].len = c->w - c->rec - c->fstart;
    c->buf[c->w++] = '\0';
    c->fstart = c->w - c->rec;
    if (++c->nf == c->fcap)
        return grow_fields(c);
    return 0;
}

/* Ends the record; rawlen excludes the line end. Sets the status. Returns 1 or -1. */
static int finish(px_csv *c, long long rawlen)
{
    c->rawlen = rawlen;
    if (c->skipping) {
        c->buf[c->rec + c->keep] = '\0';
        c->status = PX_CSV_TOO_LONG;
        return 1;
    }
    if (end_field(c) < 0)
        return -1;
    if (rawlen > (long long)CSV_MAX_REC)
        c->status = PX_CSV_TOO_LONG;
    else if (c->bad_quote)
        c->status = PX_CSV_BAD_QUOTING;
    else if (c->has_nul || ((c->hi & 0x80) && !utf8_valid(c->buf + c->rec, c->w - c->rec)))
        c->status = PX_CSV_BAD_UTF8;
    else
        c->status = PX_CSV_OK;
    return 1;
}

/* At r: a line end of termlen bytes ("\n" or "\r\n"). */
static int end_line(px_csv *c, size_t termlen)
{
    long long rawlen = (long long)c->r - c->rstart;
    c->r += termlen;
    c->line++;
    return finish(c, rawlen);
}

/* Copies bytes of an unquoted field up to the next special byte. Without a
 * de-quoted field earlier in the record w == r and nothing needs moving. */
static inline void scan_plain(px_csv *c)
{
    unsigned char *b = c->buf;
    size_t r = c->r, w = c->w;
    unsigned hi = 0;
    if (r == w) {
        while (!plain_stop[b[r]])
            hi |= b[r++];
        w = r;
    } else {
        while (!plain_stop[b[r]]) {
            hi |= b[r];
            b[w++] = b[r++];
        }
    }
    c->r = r;
    c->w = w;
    c->hi |= hi;
}

static inline void scan_quoted(px_csv *c)
{
    unsigned char *b = c->buf;
    size_t r = c->r, w = c->w;
    unsigned hi = 0;
    while (!quoted_stop[b[r]]) {
        hi |= b[r];
        b[w++] = b[r++];
    }
    c->r = r;
    c->w = w;
    c->hi |= hi;
}

enum { STEP_MORE = 0, STEP_DONE = 1, STEP_NEED = 2, STEP_ERR = -1, STEP_LONE_CR = -2 };

/* A '\r' at r outside quotes: a line end when "\r\n"; STEP_NEED when the
 * next byte is not in the buffer yet; otherwise STEP_LONE_CR (a lone CR is data). */
static int cr_line_end(px_csv *c)
{
    if (c->r + 1 == c->end)
        return STEP_NEED;
    if (c->buf[c->r + 1] == '\n')
        return end_line(c, 2);
    return STEP_LONE_CR;
}

/* A special byte at r (r < end) outside quotes. */
static int plain_special(px_csv *c)
{
    unsigned char ch = c->buf[c->r];
    if (ch == ',') {
        c->r++;
        c->state = S_START;
        return end_field(c);
    }
    if (ch == '\n')
        return end_line(c, 1);
    if (ch == '\r') {
        int rc = cr_line_end(c);
        if (rc != STEP_LONE_CR)
            return rc;
    } else if (ch == '"') {
        c->bad_quote = 1;
    } else {
        c->has_nul = 1;
    }
    c->buf[c->w++] = ch;   /* lone CR, stray quote or NUL: kept as data */
    c->r++;
    return STEP_MORE;
}

/* A special byte at r (r < end) inside quotes. */
static int quoted_special(px_csv *c)
{
    unsigned char ch = c->buf[c->r];
    if (ch == '"') {
        c->r++;
        c->state = S_QUOTE_SEEN;
        return STEP_MORE;
    }
    if (ch == '\n')
        c->line++;
    else
        c->has_nul = 1;
    c->buf[c->w++] = ch;
    c->r++;
    return STEP_MORE;
}

/* The byte after a closing (or the first of a doubled) quote. */
static int after_quote(px_csv *c)
{
    unsigned char ch = c->buf[c->r];
    if (ch == '"') {
        c->buf[c->w++] = '"';
        c->r++;
        c->state = S_QUOTED;
        return STEP_MORE;
    }
    if (ch == ',' || ch == '\n') {
        c->state = S_PLAIN;
        return plain_special(c);
    }
    if (ch == '\r') {
        int rc = cr_line_end(c);
        if (rc != STEP_LONE_CR)
            return rc;
    }
    c->bad_quote = 1;      /* "ab"c: the rest of the field is taken as plain text */
    c->state = S_PLAIN;
    return STEP_MORE;
}

/* Advances the parse at r < end. Returns a STEP_ code. */
static int step(px_csv *c)
{
    switch (c->state) {
    case S_START:
        if (c->buf[c->r] == '"') {
            c->r++;
            c->state = S_QUOTED;
            return STEP_MORE;
        }
        c->state = S_PLAIN;
        /* fall through */
    case S_PLAIN:
        scan_plain(c);
        return c->r == c->end ? STEP_MORE : plain_special(c);
    case S_QUOTED:
        scan_quoted(c);
        return c->r == c->end ? STEP_MORE : quoted_special(c);
    default:
        return after_quote(c);
    }
}

/* End of input inside a record (r == end): returns 1 with the record, or 0 when
 * nothing is left. A pending CR (cr) is a line end. EOF inside quotes is bad. */
static int finish_eof(px_csv *c, int cr)
{
    long long rawlen = (long long)c->r - c->rstart;  /* a pending CR is not counted */
    if (cr)
        c->r++;
    if (rawlen == 0)
        return 0;
    if (c->state == S_QUOTED)
        c->bad_quote = 1;
    return finish(c, rawlen);
}

/* Parses the next physical record. Returns 1, 0 at end of input, -1 on error. */
static int parse_record(px_csv *c)
{
    if (c->r == c->end) {
        c->r = c->end = 0;
        c->buf[0] = '\0';
    }
    c->rec = c->w = c->r;
    c->rstart = (long long)c->r;
    c->nf = 0;
    c->fstart = 0;
    c->state = S_START;
    c->skipping = c->bad_quote = c->has_nul = 0;
    c->hi = 0;
    c->rec_line = c->line;
    for (;;) {
        int rc = c->r == c->end ? STEP_NEED : step(c);
        if (rc == STEP_DONE || rc == STEP_ERR)
            return rc;
        if (rc == STEP_NEED) {
            int cr = c->r != c->end;   /* waiting for the byte after a CR */
            rc = refill(c);
            if (rc < 0)
                return -1;
            if (rc == 0)
                return finish_eof(c, cr);
        }
    }
}

/* ---- public API --------------------------------------------------------------- */

static int emit_blank(px_csv *c, px_csv_status *status)
{
    c->pend_blank--;
    c->cur_blank = 1;
    c->rec_line = c->blank_line++;
    *status = PX_CSV_OK;
    return 1;
}

/* Returns 1 with a record and its status, 0 at end of input, -1 on a read error
 * or when out of memory (errno set; then only px_csv_free() is meaningful).
 * A TOO_LONG record's fields may be cut at 1 MiB. Blank lines are held back: a
 * run of them followed by a record comes out as records of one empty field (the
 * caller rejects them); a run that reaches the end of input is dropped. NUL
 * bytes make a record BAD_UTF8: C strings and PostgreSQL text cannot hold them. */
int px_csv_next(px_csv *c, px_csv_status *status)
{
    c->cur_blank = 0;
    if (c->pend_blank > 0)
        return emit_blank(c, status);
    if (c->have_next) {
        c->have_next = 0;
        c->rec_line = c->next_line;
        *status = c->status;
        return 1;
    }
    for (;;) {
        int rc = parse_record(c);
        if (rc <= 0)
            return rc;
        if (c->rawlen != 0)
            break;
        if (c->nblank++ == 0)
            c->blank_line = c->rec_line;
    }
    if (c->nblank > 0) {
        c->pend_blank = c->nblank;
        c->nblank = 0;
        c->have_next = 1;
        c->next_line = c->rec_line;
        return emit_blank(c, status);
    }
    *status = c->status;
    return 1;
}

int px_csv_nfields(const px_csv *c)
{
    return c->cur_blank ? 1 : c->nf;
}

/* Points into the reader's buffer (or a static ""); NULL when i is out of range. */
const char *px_csv_field(const px_csv *c, int i)
{
    if (i < 0 || i >= px_csv_nfields(c))
        return NULL;
    if (c->cur_blank)
        return "";
    return (const char *)c->buf + c->rec + c->fields[i].off;
}

size_t px_csv_field_len(const px_csv *c, int i)
{
    if (i < 0 || i >= px_csv_nfields(c) || c->cur_blank)
        return 0;
    return c->fields[i].len;
}

long long px_csv_line(const px_csv *c)
{
    return c->rec_line;
}

long long px_csv_bytes(const px_csv *c)
{
    return c->total_read - (long long)(c->end - c->r);
}
