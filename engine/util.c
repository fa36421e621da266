/* util.c: error structs, logging, and the small shared pieces (monotonic clock,
 * string hash, quantiles).
 * The log file holds only what is safe to keep: counts, batch ids, pseudonyms,
 * file names. Callers never pass identifiers to px_log(). */
#include "engine/engine.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int px_err_set(px_err *e, int code, const char *fmt, ...)
{
    if (!e) return code;
    va_list ap;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->detail[0] = e->hint[0] = '\0';
    return code;
}

void px_err_detail(px_err *e, const char *fmt, ...)
{
    if (!e) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
}

void px_err_hint(px_err *e, const char *fmt, ...)
{
    if (!e) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->hint, sizeof e->hint, fmt, ap);
    va_end(ap);
}

int px_err_wrap(px_err *e, int code, const char *fmt, ...)
{
    if (!e) return code;
    /* cause = "cause: " msg [": " detail], cut to fit; built by hand because the two
     * fields together may exceed the detail's size */
    char cause[sizeof e->detail];
    size_t n = 0;
    const char *parts[4] = {e->msg[0] || e->detail[0] ? "cause: " : "", e->msg,
                            e->msg[0] && e->detail[0] ? ": " : "", e->detail};
    for (int i = 0; i < 4; i++)
        for (const char *p = parts[i]; *p && n + 1 < sizeof cause; p++) cause[n++] = *p;
    /* libpq messages end in a newline; the cause reads as one line */
    while (n && (cause[n - 1] == '\n' || cause[n - 1] == ' ')) n--;
    cause[n] = '\0';
    va_list ap;
    if (code) e->code = code; /* else the cause's code stands */
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    memcpy(e->detail, cause, n + 1);
    return e->code;
}

void px_err_clear(px_err *e)
{
    if (e) memset(e, 0, sizeof *e);
}

/* Prints one multi-line message; detail lines from libpq often end in '\n'. */
static void print_trimmed(const char *label, const char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
    if (n) fprintf(stderr, "%s%.*s\n", label, (int)n, s);
}

void px_err_print(const px_err *e)
{
    print_trimmed("prognos: error: ", e->msg[0] ? e->msg : "unknown error");
    print_trimmed("detail: ", e->detail);
    print_trimmed("hint: ", e->hint);
}

static FILE *log_file;
/* Libraries do not print: log lines reach stderr only when a command asks. */
static int stderr_level = PX_LOG_ERROR + 1;

void px_log_open(const char *home)
{
    char dir[4200], path[4300];
    if (log_file) return;
    snprintf(dir, sizeof dir, "%s/log", home);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return;
    snprintf(path, sizeof path, "%s/prognos.log", dir);
    log_file = fopen(path, "a");
}

void px_log_set_stderr_level(px_log_level min) { stderr_level = (int)min; }

void px_log(px_log_level lvl, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warning", "error"};
    char msg[2048], ts[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if ((int)lvl >= stderr_level) fprintf(stderr, "prognos: %s: %s\n", names[lvl], msg);
    if (log_file) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(log_file, "%s %s [%d] %s\n", ts, names[lvl], (int)getpid(), msg);
        fflush(log_file);
    }
}

void px_log_close(void)
{
    if (log_file) fclose(log_file);
    log_file = NULL;
}

int px_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double px_quantile7(const double *s, size_t n, double p)
{
    double h = (double)(n - 1) * p;
    size_t i = (size_t)floor(h);
    if (i + 1 >= n) return s[n - 1];
    return s[i] + (h - (double)i) * (s[i + 1] - s[i]);
}

double px_mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

uint64_t px_mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

uint64_t px_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a 64-bit offset basis and prime */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}
