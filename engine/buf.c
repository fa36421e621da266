/* buf.c: growable byte buffer, with encoders for PostgreSQL COPY text format and
 * JSON string literals. Invariant: once anything was added, data[len] == '\0'
 * (capacity always holds len + 1), so data can be used as a C string. The caller
 * owns the struct ({0} is an empty buffer) and frees data with px_buf_release().
 * The first failure is sticky (err, px_buf_failed): a writer may append freely and
 * check once at the end; px_buf_reset / px_buf_release clear it. */
#include "engine/internal.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Records the first failure (sticky) and returns this one's code. */
static int buf_fail(px_buf *b, int code)
{
    if (!b->err)
        b->err = code;
    return code;
}

/* Ensures room for extra more bytes plus the NUL, doubling the capacity.
 * Returns 0, or PX_ENOMEM with the buffer unchanged. */
int px_buf_reserve(px_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return buf_fail(b, PX_ENOMEM);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return buf_fail(b, PX_ENOMEM);
    b->data = p;
    b->cap = cap;
    return 0;
}

int px_buf_failed(const px_buf *b)
{
    return b->err;
}

void px_buf_reset(px_buf *b)
{
    b->len = 0;
    b->err = 0;
    if (b->data)
        b->data[0] = '\0';
}

int px_buf_add(px_buf *b, const void *p, size_t n)
{
    if (px_buf_reserve(b, n) < 0)
        return PX_ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int px_buf_addc(px_buf *b, char ch)
{
    return px_buf_add(b, &ch, 1);
}

int px_buf_adds(px_buf *b, const char *s)
{
    return px_buf_add(b, s, strlen(s));
}

/* Appends formatted text: one vsnprintf into the free room, a second one after
 * growing when it did not fit. Returns 0, PX_ENOMEM, or PX_EINVAL when
 * vsnprintf fails; on failure len is unchanged. */
int px_buf_printf(px_buf *b, const char *fmt, ...)
{
    va_list ap;
    size_t room = b->cap - b->len;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    int rc = n < 0 ? buf_fail(b, PX_EINVAL) : 0;
    if (rc == 0 && (size_t)n >= room) {
        rc = px_buf_reserve(b, (size_t)n);
        if (rc == 0) {
            va_start(ap, fmt);
            vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
            va_end(ap);
        }
    }
    if (rc == 0)
        b->len += (size_t)n;
    if (b->data)
        b->data[b->len] = '\0';
    return rc;
}

/* Frees data and zeroes the struct, which is then an empty buffer again. */
void px_buf_release(px_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->err = 0;
}

/* One field for COPY ... FROM STDIN in text format: s == NULL writes \N (SQL
 * NULL); otherwise the len bytes with backslash, tab, newline and CR escaped,
 * so len == 0 writes an empty string. s must not contain NUL bytes (PostgreSQL
 * text cannot hold them; the CSV reader rejects them). */
int px_buf_copy_field(px_buf *b, const char *s, size_t len)
{
    if (!s)
        return px_buf_add(b, "\\N", 2);
    if (px_buf_reserve(b, len) < 0)
        return PX_ENOMEM;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        char esc;
        switch (s[i]) {
        case '\\': esc = '\\'; break;
        case '\t': esc = 't'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        default: continue;
        }
        char pair[2] = { '\\', esc };
        if (px_buf_add(b, s + start, i - start) < 0 || px_buf_add(b, pair, 2) < 0)
            return PX_ENOMEM;
        start = i + 1;
    }
    return px_buf_add(b, s + start, len - start);
}

/* A JSON string literal (RFC 8259 section 7): quote and backslash escaped,
 * control characters as \b \f \n \r \t or \u00XX. s is valid UTF-8 and is
 * copied as is otherwise. */
int px_buf_json_str(px_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (px_buf_reserve(b, len + 2) < 0 || px_buf_addc(b, '"') < 0)
        return PX_ENOMEM;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[6] = { '\\', 0, 0, 0, 0, 0 };
        size_t n = 2;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            if (ch >= 0x20)
                continue;
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            n = 6;
        }
        if (px_buf_add(b, s + start, i - start) < 0 || px_buf_add(b, esc, n) < 0)
            return PX_ENOMEM;
        start = i + 1;
    }
    if (px_buf_add(b, s + start, len - start) < 0 || px_buf_addc(b, '"') < 0)
        return PX_ENOMEM;
    return 0;
}
