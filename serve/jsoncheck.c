/* jsoncheck.c: a strict RFC 8259 check of a request body before cJSON parses it.
 * cJSON is lenient where a clinical input must not be: it reads "01" as 1 and
 * "70." as 70 (it hands any run of number characters to strtod), skips every byte
 * up to 0x20 as white space (so raw control bytes between tokens pass), and turns
 * \u0000 into a NUL that cuts the C string it hands out ("ed\u0000x" would read as
 * the level "ed"). Its recursion also goes as deep as its compiled-in
 * CJSON_NESTING_LIMIT (1000), which a 1 MiB body of '[' reaches easily. So every
 * body it sees has passed this linear scan: the JSON grammar exactly (numbers,
 * literals, the four white-space bytes, escapes, surrogate pairs), strings of
 * valid UTF-8 without control characters or \u0000, one value and nothing after
 * it, and at most max_depth levels of arrays and objects. */
#include "serve/serve.h"
#include <stdint.h>
#include <string.h>

typedef struct jc {
    const unsigned char *t;
    size_t len, i;
    const char *why; /* what is wrong at i; static text */
} jc;

static int bad(jc *c, const char *why)
{
    c->why = why;
    return PX_ECORRUPT;
}

static void ws(jc *c)
{
    while (c->i < c->len) {
        unsigned char ch = c->t[c->i];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') return;
        c->i++;
    }
}

static int hex4(jc *c, size_t at, unsigned *out)
{
    unsigned v = 0;
    if (at + 4 > c->len) return -1;
    for (size_t k = 0; k < 4; k++) {
        unsigned char h = c->t[at + k];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* The length of the valid UTF-8 sequence at t[i] (a lead byte >= 0x80), or 0:
 * no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF (RFC 3629). */
size_t px_utf8_seq(const unsigned char *t, size_t len, size_t i)
{
    unsigned char b = t[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (b >= 0xc2 && b <= 0xdf) n = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        n = 3;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 4;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (i + n > len || t[i + 1] < lo || t[i + 1] > hi) return 0;
    for (size_t k = 2; k < n; k++)
        if (t[i + k] < 0x80 || t[i + k] > 0xbf) return 0;
    return n;
}

/* A string from its opening quote to past its closing one. */
static int string(jc *c)
{
    c->i++;
    for (;;) {
        if (c->i >= c->len) return bad(c, "a string is not terminated");
        unsigned char ch = c->t[c->i];
        if (ch == '"') {
            c->i++;
            return 0;
        }
        if (ch < 0x20) return bad(c, "a string holds a raw control character");
        if (ch >= 0x80) {
            size_t n = px_utf8_seq(c->t, c->len, c->i);
            if (!n) return bad(c, "a string holds bytes that are not UTF-8");
            c->i += n;
            continue;
        }
        if (ch != '\\') {
            c->i++;
            continue;
        }
        if (c->i + 1 >= c->len) return bad(c, "a string is not terminated");
        unsigned char e = c->t[c->i + 1];
        if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
            c->i += 2;
            continue;
        }
        unsigned u, u2;
        if (e != 'u' || hex4(c, c->i + 2, &u) != 0) return bad(c, "a string holds an invalid escape");
        if (u == 0) return bad(c, "a string holds the escape \\u0000");
        if (u >= 0xdc00 && u <= 0xdfff) return bad(c, "a string holds a lone UTF-16 surrogate");
        if (u >= 0xd800 && u <= 0xdbff) { /* a pair: the low half must follow */
            if (c->i + 7 >= c->len || c->t[c->i + 6] != '\\' || c->t[c->i + 7] != 'u' ||
                hex4(c, c->i + 8, &u2) != 0 || u2 < 0xdc00 || u2 > 0xdfff)
                return bad(c, "a string holds a lone UTF-16 surrogate");
            c->i += 6;
        }
        c->i += 6;
    }
}

static int digits(jc *c)
{
    size_t s = c->i;
    while (c->i < c->len && c->t[c->i] >= '0' && c->t[c->i] <= '9') c->i++;
    return c->i > s;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int number(jc *c)
{
    if (c->t[c->i] == '-') c->i++;
    if (c->i >= c->len || c->t[c->i] < '0' || c->t[c->i] > '9') return bad(c, "a number has no digits");
    if (c->t[c->i] == '0') {
        c->i++;
        if (c->i < c->len && c->t[c->i] >= '0' && c->t[c->i] <= '9')
            return bad(c, "a number has a leading zero");
    } else
        digits(c);
    if (c->i < c->len && c->t[c->i] == '.') {
        c->i++;
        if (!digits(c)) return bad(c, "a number has no digits after its decimal point");
    }
    if (c->i < c->len && (c->t[c->i] == 'e' || c->t[c->i] == 'E')) {
        c->i++;
        if (c->i < c->len && (c->t[c->i] == '+' || c->t[c->i] == '-')) c->i++;
        if (!digits(c)) return bad(c, "a number has no digits in its exponent");
    }
    return 0;
}

static int literal(jc *c, const char *w, size_t n)
{
    if (c->len - c->i < n || memcmp(c->t + c->i, w, n) != 0) return bad(c, "an unknown word (not true, false or null)");
    c->i += n;
    return 0;
}

int px_json_validate(const char *text, size_t len, int max_depth, size_t *offset, const char **why)
{
    jc c = {(const unsigned char *)text, len, 0, NULL};
    /* open containers, innermost last: 1 an object, 0 an array (max_depth <= 64) */
    uint64_t kind = 0;
    int depth = 0, rc = 0;
    if (max_depth > 64) max_depth = 64;
    for (;;) {
        /* a value */
        ws(&c);
        if (c.i >= c.len) {
            rc = bad(&c, depth ? "the body ends inside an array or object" : "the body is empty");
            goto out;
        }
        unsigned char ch = c.t[c.i];
        if (ch == '{' || ch == '[') {
            if (++depth > max_depth) {
                rc = PX_EINVAL;
                c.why = "too deep";
                goto out;
            }
            kind = (kind << 1) | (ch == '{');
            c.i++;
            ws(&c);
            if (c.i < c.len && c.t[c.i] == (ch == '{' ? '}' : ']')) { /* empty */
                c.i++;
                depth--;
                kind >>= 1;
            } else if (ch == '{') {
                if (c.i >= c.len || c.t[c.i] != '"') {
                    rc = bad(&c, "an object member does not start with a quoted name");
                    goto out;
                }
                if ((rc = string(&c)) != 0) goto out;
                ws(&c);
                if (c.i >= c.len || c.t[c.i] != ':') {
                    rc = bad(&c, "a member name is not followed by ':'");
                    goto out;
                }
                c.i++;
                continue;
            } else
                continue;
        } else if (ch == '"') {
            if ((rc = string(&c)) != 0) goto out;
        } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            if ((rc = number(&c)) != 0) goto out;
        } else if (ch == 't') {
            if ((rc = literal(&c, "true", 4)) != 0) goto out;
        } else if (ch == 'f') {
            if ((rc = literal(&c, "false", 5)) != 0) goto out;
        } else if (ch == 'n') {
            if ((rc = literal(&c, "null", 4)) != 0) goto out;
        } else {
            rc = bad(&c, ch < 0x20 || ch == 0x7f ? "a raw control byte outside a string" : "an unexpected character");
            goto out;
        }
        /* after a value: close containers, or go on to the next member or element */
        for (;;) {
            ws(&c);
            if (depth == 0) {
                if (c.i < c.len) rc = bad(&c, "something follows the JSON value");
                goto out;
            }
            int obj = (int)(kind & 1);
            if (c.i >= c.len) {
                rc = bad(&c, "the body ends inside an array or object");
                goto out;
            }
            ch = c.t[c.i];
            if (ch == (obj ? '}' : ']')) {
                c.i++;
                depth--;
                kind >>= 1;
                continue;
            }
            if (ch != ',') {
                rc = bad(&c, obj ? "expected ',' or '}' after a member" : "expected ',' or ']' after an element");
                goto out;
            }
            c.i++;
            if (obj) {
                ws(&c);
                if (c.i >= c.len || c.t[c.i] != '"') {
                    rc = bad(&c, "an object member does not start with a quoted name");
                    goto out;
                }
                if ((rc = string(&c)) != 0) goto out;
                ws(&c);
                if (c.i >= c.len || c.t[c.i] != ':') {
                    rc = bad(&c, "a member name is not followed by ':'");
                    goto out;
                }
                c.i++;
            }
            break;
        }
    }
out:
    if (rc != 0) {
        if (offset) *offset = c.i;
        if (why) *why = c.why;
    }
    return rc;
}

int px_json_precheck(const char *text, size_t len, int max_depth, size_t *offset)
{
    return px_json_validate(text, len, max_depth, offset, NULL);
}
