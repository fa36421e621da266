/* predict_fast.c: the common predict body read in one pass, without cJSON.
 *
 * Nearly every request a CDS system sends is {"instances":[{...}]} with plain
 * names, plain strings and short decimal numbers, every value valid for its
 * input. cJSON builds a tree of two allocations per value and hands each number
 * to strtod (which asks for the locale each time); for a 26-input instance that
 * was a quarter of the server's user time. This reader accepts only that common
 * shape, and only when it can produce exactly what the cJSON path would; on
 * anything else (an escape, a nested value, a long or unusual number, a missing,
 * unknown, duplicate or invalid field, too many instances) it gives up and the
 * cJSON path reads the body again and names what is wrong. So it never decides
 * an error, and the answers are the same with or without it: unit_serve_fast
 * checks that on a generated corpus.
 *
 * Numbers: an integer mantissa of at most 2^53 and a power of ten of at most 22
 * are both exact doubles, so one IEEE multiplication or division rounds the
 * quotient correctly (Clinger's fast path), which is what strtod returns. */
#include "serve/internal.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#define WS(c) ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')

typedef struct rd {
    const unsigned char *p, *end;
} rd;

static void skip_ws(rd *t)
{
    while (t->p < t->end && WS(*t->p)) t->p++;
}

static int eat(rd *t, unsigned char c)
{
    skip_ws(t);
    if (t->p >= t->end || *t->p != c) return 0;
    t->p++;
    return 1;
}

/* A string without escapes or control characters: its bytes in [*s, *s + *n). */
static int plain_string(rd *t, const unsigned char **s, size_t *n)
{
    if (t->p >= t->end || *t->p != '"') return 0;
    const unsigned char *b = ++t->p;
    while (t->p < t->end && *t->p != '"') {
        if (*t->p == '\\' || *t->p < 0x20) return 0;
        t->p++;
    }
    if (t->p >= t->end) return 0;
    *s = b;
    *n = (size_t)(t->p - b);
    t->p++;
    return 1;
}

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* An RFC 8259 number whose value the fast path gets exactly; 0 otherwise. */
static int plain_number(rd *t, double *out)
{
    const unsigned char *p = t->p, *end = t->end;
    int neg = 0;
    if (p < end && *p == '-') neg = 1, p++;
    if (p >= end || *p < '0' || *p > '9') return 0;
    uint64_t m = 0;
    int digits = 0, scale = 0;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (++digits > 18) return 0;
            m = m * 10 + (uint64_t)(*p++ - '0');
        }
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (m == 0 && *p == '0') { /* leading zeros of 0.000x add no digit */
                scale--;
                p++;
                continue;
            }
            if (++digits > 18) return 0;
            m = m * 10 + (uint64_t)(*p++ - '0');
            scale--;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0, e = 0, ed = 0;
        if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (++ed > 3) return 0;
            e = e * 10 + (*p++ - '0');
        }
        scale += eneg ? -e : e;
    }
    /* what follows a number in an object: anything else is cJSON's to judge */
    if (p >= end || !(WS(*p) || *p == ',' || *p == '}')) return 0;
    /* upstream cJSON reads at most 63 characters of a number (Debian's patch for
     * CVE-2023-26819 lifts that): a longer one, such as 0.000...0 with many zeros,
     * is left to it whichever it is */
    if (p - t->p > 63) return 0;
    if (m > (UINT64_C(1) << 53)) return 0;
    double d = (double)m;
    if (m != 0) {
        if (scale < -22 || scale > 22) return 0;
        d = scale < 0 ? d / pow10_exact[-scale] : d * pow10_exact[scale];
    }
    *out = neg ? -d : d;
    t->p = p;
    return 1;
}

static int word(rd *t, const char *w, size_t n)
{
    if ((size_t)(t->end - t->p) < n || memcmp(t->p, w, n) != 0) return 0;
    t->p += n;
    return 1;
}

/* One value of input f, as check_value in predict.c accepts it; 0 to give up. */
static int value(rd *t, const srv_feat *f, double *x, unsigned char *flags)
{
    skip_ws(t);
    if (t->p >= t->end) return 0;
    unsigned char c = *t->p;
    if (c == 'n') {
        if (!word(t, "null", 4)) return 0;
        *x = NAN;
        *flags |= SRV_FLAG_IMPUTED;
        return 1;
    }
    if (!f->numeric) {
        const unsigned char *s;
        size_t n;
        if (!plain_string(t, &s, &n)) return 0;
        size_t l = px_model_level_index(f->info, (const char *)s, n);
        if (l == (size_t)-1) return 0;
        *x = (double)l;
        return 1;
    }
    double d;
    if (c == 't' || c == 'f') {
        if (!f->flag) return 0;
        if (word(t, "true", 4)) d = 1;
        else if (word(t, "false", 5)) d = 0;
        else return 0;
    } else if (!plain_number(t, &d))
        return 0;
    if (f->flag && d != 0 && d != 1) return 0;
    if (d < f->lo || d > f->hi) return 0;
    if (d < f->info->min || d > f->info->max) *flags |= SRV_FLAG_EXTRAPOLATED;
    *x = d;
    return 1;
}

size_t srv_predict_fast(const srv_model *sm, const char *body, size_t len, size_t cap, double *raw,
                        unsigned char *flags, unsigned char *seen)
{
    const size_t k = sm->k;
    rd t = {(const unsigned char *)body, (const unsigned char *)body + len};
    const unsigned char *s;
    size_t sn;
    if (!eat(&t, '{')) return 0;
    skip_ws(&t);
    if (!plain_string(&t, &s, &sn) || sn != 9 || memcmp(s, "instances", 9) != 0) return 0;
    if (!eat(&t, ':') || !eat(&t, '[')) return 0;
    size_t n = 0;
    for (;;) {
        if (n == cap || !eat(&t, '{')) return 0;
        double *x = raw + n * k;
        unsigned char *fl = flags + n * k;
        memset(seen, 0, k);
        memset(fl, 0, k);
        size_t pos = 0;
        skip_ws(&t);
        if (t.p < t.end && *t.p == '}') return 0; /* an empty instance: missing inputs */
        for (;;) {
            skip_ws(&t);
            if (!plain_string(&t, &s, &sn)) return 0;
            if (sn == 12 && memcmp(s, "encounter_id", 12) == 0) return 0; /* a lookup: the cJSON path's */
            int j = srv_feature_index(sm, (const char *)s, sn, pos++);
            if (j < 0 || seen[j]) return 0;
            seen[j] = 1;
            if (!eat(&t, ':') || !value(&t, &sm->f[j], &x[j], &fl[j])) return 0;
            if (eat(&t, ',')) continue;
            if (eat(&t, '}')) break;
            return 0;
        }
        for (size_t j = 0; j < k; j++) {
            if (seen[j]) continue;
            if (!sm->f[j].info->dropped) return 0;
            x[j] = NAN;
        }
        n++;
        if (eat(&t, ',')) continue;
        if (eat(&t, ']')) break;
        return 0;
    }
    if (!eat(&t, '}')) return 0;
    skip_ws(&t);
    return t.p == t.end ? n : 0;
}
