/* textio.c: the strict tokens of the model and SVM frame formats. Anything that
 * is not exactly what the writers print is refused, so that a parser never acts
 * on a number or a length it has not fully checked. */
#include "models/internal.h"
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int px_tx_lit(px_tx *c, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) return -1;
    c->p += n;
    return 0;
}

int px_tx_size(px_tx *c, size_t *out)
{
    const char *s = c->p;
    size_t v = 0;
    while (s < c->end && *s >= '0' && *s <= '9') {
        if (v > ((size_t)-1 - 9) / 10) return -1;
        v = v * 10 + (size_t)(*s - '0');
        s++;
    }
    if (s == c->p || (s - c->p > 1 && *c->p == '0')) return -1;
    *out = v;
    c->p = s;
    return 0;
}

int px_tx_int(px_tx *c, long *out)
{
    const char *s = c->p;
    int neg = 0;
    if (s < c->end && *s == '-') {
        neg = 1;
        s++;
    }
    const char *d0 = s;
    long v = 0;
    while (s < c->end && *s >= '0' && *s <= '9') {
        if (v > (INT_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
        s++;
    }
    if (s == d0) return -1;
    *out = neg ? -v : v;
    c->p = s;
    return 0;
}

int px_tx_num(px_tx *c, double *out)
{
    const char *s = c->p;
    if (s < c->end && *s == '-') s++;
    const char *d0 = s;
    while (s < c->end && *s >= '0' && *s <= '9') s++;
    if (s == d0) return -1;
    if (s < c->end && *s == '.') {
        s++;
        const char *f0 = s;
        while (s < c->end && *s >= '0' && *s <= '9') s++;
        if (s == f0) return -1;
    }
    if (s < c->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < c->end && (*s == '+' || *s == '-')) s++;
        const char *e0 = s;
        while (s < c->end && *s >= '0' && *s <= '9') s++;
        if (s == e0 || s - e0 > 4) return -1;
    }
    size_t n = (size_t)(s - c->p);
    if (n >= 64) return -1;
    char buf[64];
    memcpy(buf, c->p, n);
    buf[n] = '\0';
    char *endp;
    double v = strtod(buf, &endp);
    if (*endp != '\0' || !isfinite(v)) return -1;
    *out = v;
    c->p = s;
    return 0;
}

int px_tx_gnum(px_tx *c, double *out)
{
    if (px_tx_lit(c, "nan") == 0 || px_tx_lit(c, "-nan") == 0) {
        *out = NAN;
        return 0;
    }
    if (px_tx_lit(c, "inf") == 0) {
        *out = INFINITY;
        return 0;
    }
    if (px_tx_lit(c, "-inf") == 0) {
        *out = -INFINITY;
        return 0;
    }
    return px_tx_num(c, out);
}

int px_tx_str(px_tx *c, const char **s, size_t *len)
{
    px_tx t = *c;
    size_t n;
    if (px_tx_size(&t, &n) < 0 || px_tx_lit(&t, " ") < 0 || n > (size_t)(t.end - t.p)) return -1;
    if (memchr(t.p, '\0', n)) return -1;
    *s = t.p;
    *len = n;
    t.p += n;
    *c = t;
    return 0;
}
