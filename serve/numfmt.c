/* numfmt.c: numbers in JSON answers: the shortest round-trip decimal (exact
 * values: V2 tensors, CDS risk) and six significant digits written without
 * snprintf (the predict answer's many numbers). Non-finite values are null. */
#include "serve/internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t srv_fmt_double(char *out, double v)
{
    if (!isfinite(v)) {
        memcpy(out, "null", 5);
        return 4;
    }
    /* %.15g round-trips almost every value a model produces and is much shorter
     * than %.17g; a value that does not round-trip gets the 17 digits */
    int n = snprintf(out, 32, "%.15g", v);
    if (strtod(out, NULL) != v) n = snprintf(out, 32, "%.17g", v);
    return (size_t)n;
}

/* 6 significant digits, fast for the common magnitudes (a response carries
 * dozens of numbers; snprintf("%g") would be most of its cost). */
size_t srv_fmt6(char *out, double v)
{
    if (!isfinite(v)) {
        memcpy(out, "null", 4);
        return 4;
    }
    if (v == 0) {
        out[0] = '0';
        return 1;
    }
    double a = fabs(v);
    if (a < 1e-4 || a >= 1e9) return (size_t)snprintf(out, 32, "%.6g", v);
    static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10};
    static const double thr[] = {1e-3, 1e-2, 1e-1, 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    /* decimal exponent by comparison: a is in [1e-4, 1e9) */
    int e10 = -4;
    while (e10 < 8 && a >= thr[e10 + 4]) e10++;
    int dec = 5 - e10;
    if (dec < 0) dec = 0;
    unsigned long long u = (unsigned long long)llround(a * p10[dec]);
    /* the digits of u, two at a time; the last dec of them are the fraction */
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char d[24];
    int t = 24;
    while (u >= 100) {
        unsigned q = (unsigned)(u % 100);
        u /= 100;
        d[--t] = pairs[2 * q + 1];
        d[--t] = pairs[2 * q];
    }
    if (u >= 10) {
        d[--t] = pairs[2 * u + 1];
        d[--t] = pairs[2 * u];
    } else
        d[--t] = (char)('0' + u);
    while (24 - t <= dec) d[--t] = '0'; /* at least one digit before the point */
    int len = 24 - t, ilen = len - dec, flen = dec;
    while (flen > 0 && d[t + ilen + flen - 1] == '0') flen--;
    size_t n = 0;
    if (v < 0) out[n++] = '-';
    memcpy(out + n, d + t, (size_t)ilen);
    n += (size_t)ilen;
    if (flen > 0) {
        out[n++] = '.';
        memcpy(out + n, d + t + ilen, (size_t)flen);
        n += (size_t)flen;
    }
    return n;
}
