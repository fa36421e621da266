/* opts.c: the numbers of command-line options, parsed one way for every command:
 * the whole argument must be the number (no blanks, no trailing text, no
 * overflow), so "5x", " 5" and "" are usage errors, never a silent 5 or 0. */
#include "engine/cli/cli.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>

int px_cli_ll(const char *s, long long lo, long long hi, long long *v)
{
    char *end;
    if (!s || (*s != '-' && (*s < '0' || *s > '9'))) return -1;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int px_cli_u64(const char *s, uint64_t *v)
{
    char *end;
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *v = (uint64_t)x;
    return 0;
}

int px_cli_double(const char *s, double *v)
{
    char *end;
    if (!s || !*s || *s == ' ' || *s == '\t' || *s == '\n') return -1;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) return -1;
    *v = x;
    return 0;
}
