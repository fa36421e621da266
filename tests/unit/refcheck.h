/* refcheck.h: the reference files of the statistical unit tests, lines of
 * "tag v1 v2 ..." written by the R or Python script kept beside each test, read
 * one line at a time, and CHECK_REL, a relative comparison (absolute 1e-12 near
 * zero) that names the line's tag. Include after check.h. */
#ifndef PROGNOS_REFCHECK_H
#define PROGNOS_REFCHECK_H
#include <stdio.h>

#define REF_MAXV 256   /* values on one line */

static inline int near_rel(double a, double b, double rel)
{
    return fabs(a - b) <= rel * fabs(b) + 1e-12;
}

/* needs `const char *tag` in scope */
#define CHECK_REL(a, b, rel) do { double a__ = (a), b__ = (b); check_count++; \
    if (!near_rel(a__, b__, rel)) { check_failures++; fprintf(stderr, \
    "%s:%d: %s: %s == %.15g, expected %.15g (rel %g)\n", __FILE__, __LINE__, tag, #a, a__, b__, (double)(rel)); } \
    } while (0)

/* Called for each line: its tag, its n values (at most REF_MAXV), and the file,
 * positioned after the line, for a line that announces more lines. */
typedef void (*ref_line_fn)(FILE *f, const char *tag, const double *v, int n);

/* Reads path line by line into fn. 0, or -1 (and a message) when it cannot be opened. */
static inline int ref_read(const char *path, ref_line_fn fn)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open '%s'\n", path);
        return -1;
    }
    char line[16384];
    while (fgets(line, sizeof line, f)) {
        char tag[32];
        int off = 0;
        if (sscanf(line, "%31s%n", tag, &off) != 1) continue;
        double v[REF_MAXV];
        int n = 0, used;
        const char *s = line + off;
        while (n < REF_MAXV && sscanf(s, "%lf%n", &v[n], &used) == 1) {
            s += used;
            n++;
        }
        fn(f, tag, v, n);
    }
    fclose(f);
    return 0;
}
#endif
