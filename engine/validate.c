/* validate.c: field validators for the ETL: calendar dates, integers, decimals and
 * ICD code syntax. All take (s, len) and read exactly len bytes: s need not be
 * NUL-terminated, and the whole field must match (no spaces, no trailing text).
 * Dates are days since 1970-01-01 in the proleptic Gregorian calendar, no time zone. */
#include "engine/internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- dates ------------------------------------------------------------------ */

/* Calendar arithmetic: px_days_from_civil / px_civil_from_days (engine/calendar.c). */

/* n ASCII digits at s as a number, or -1 if any is not a digit. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Accepts years 1800..9999: older dates in clinical data are typing errors. */
static int make_date(int y, int m, int d, int *days)
{
    if (y < 1800 || y > 9999 || m < 1 || m > 12 || d < 1 || d > px_days_in_month(y, m))
        return -1;
    *days = px_days_from_civil(y, m, d);
    return 0;
}

int px_date_parse_iso(const char *s, size_t len, int *days)
{
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 0 || m < 0 || d < 0)
        return -1;
    return make_date(y, m, d, days);
}

/* Partial dates as de-identified extracts give them: the whole date, the month
 * or the year alone. The day (and month) left out are taken as the first, so
 * the result is the earliest day the value allows. */
int px_date_parse_partial(const char *s, size_t len, int *days)
{
    if (len == 10) return px_date_parse_iso(s, len, days);
    int y = len >= 4 ? digits(s, 4) : -1;
    if (y < 0) return -1;
    if (len == 4) return make_date(y, 1, 1, days);
    if (len != 7 || s[4] != '-') return -1;
    int m = digits(s + 5, 2);
    return m < 0 ? -1 : make_date(y, m, 1, days);
}

int px_date_parse_ymd8(const char *s, size_t len, int *days)
{
    if (len != 8)
        return -1;
    int y = digits(s, 4), m = digits(s + 4, 2), d = digits(s + 6, 2);
    if (y < 0 || m < 0 || d < 0)
        return -1;
    return make_date(y, m, d, days);
}

/* Writes YYYY-MM-DD and a NUL. Days outside years 0000..9999 (never produced by
 * the parsers) give "0000-00-00". */
void px_date_format(int days, char out[11])
{
    int y, m, d;
    if (days < -719528 || days > 2932896) {   /* 0000-01-01 .. 9999-12-31 */
        memcpy(out, "0000-00-00", 11);
        return;
    }
    px_civil_from_days(days, &y, &m, &d);
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = '\0';
}

int px_date_year(int days)
{
    int y, m, d;
    px_civil_from_days(days, &y, &m, &d);
    return y;
}

/* Today's date in UTC (not local time: the server's time zone must not matter). */
int px_date_today(void)
{
    time_t t = time(NULL);
    long long s = (long long)t;
    return (int)((s >= 0 ? s : s - 86399) / 86400);
}

/* ---- numbers ------------------------------------------------------------------ */

/* -?[0-9]+ with no overflow; leading zeros allowed. */
int px_parse_int(const char *s, size_t len, long long *v)
{
    bool neg = len > 0 && s[0] == '-';
    unsigned long long limit = neg ? (unsigned long long)LLONG_MAX + 1 : LLONG_MAX;
    unsigned long long acc = 0;
    size_t i = neg;
    if (i == len)
        return -1;
    for (; i < len; i++) {
        unsigned dg = (unsigned)(unsigned char)s[i] - '0';
        if (dg > 9 || acc > (limit - dg) / 10)
            return -1;
        acc = acc * 10 + dg;
    }
    *v = neg ? (acc == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)acc)
             : (long long)acc;
    return 0;
}

/* -?[0-9]+(\.[0-9]+)? : no '+', exponent, inf/nan, hex, spaces or bare dots.
 * Converted by strtod after the syntax check, for correct rounding. strtod reads
 * the decimal point of the C locale: Prognos never calls setlocale(), so it is '.'.
 * Fields over 100 characters are refused (no real measurement is that long). */
int px_parse_num(const char *s, size_t len, double *v)
{
    char tmp[101];
    size_t i = len > 0 && s[0] == '-', nint = 0, nfrac = 0;
    if (len >= sizeof tmp)
        return -1;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, nint++;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, nfrac++;
        if (nfrac == 0)
            return -1;
    }
    if (i != len || nint == 0)
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    double d = strtod(tmp, NULL);
    if (!isfinite(d))
        return -1;
    *v = d;
    return 0;
}

/* ---- ICD codes ------------------------------------------------------------------ */

/* Letters are accepted in either case (px_icd_normalize upper-cases). A dot is
 * allowed only at the system's position and must be followed by a character. */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static bool is_alpha(char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'); }
static bool is_alnum(char ch) { return is_digit(ch) || is_alpha(ch); }
static char upper(char ch) { return ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch; }

/* Copies s without the dot at position dotpos (if there) into out (16 bytes).
 * Returns the length, or -1 if longer than 15, if a dot is elsewhere or last. */
static int undot(const char *s, size_t len, size_t dotpos, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (i != dotpos || i + 1 == len)
                return -1;
            continue;
        }
        if (n == 15)
            return -1;
        out[n++] = upper(s[i]);
    }
    out[n] = '\0';
    return (int)n;
}

static bool all_digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!is_digit(s[i]))
            return false;
    return true;
}

/* 3-5 digits (dot after 3); V + 2-4 digits (dot after 3); E + 3-4 digits (dot after 4). */
bool px_icd9_dx_valid(const char *s, size_t len)
{
    char c[16];
    bool e = len > 0 && upper(s[0]) == 'E';
    int n = undot(s, len, e ? 4 : 3, c);
    if (n < 0)
        return false;
    if (c[0] == 'E')
        return n >= 4 && n <= 5 && all_digits(c + 1, n - 1);
    if (c[0] == 'V')
        return n >= 3 && n <= 5 && all_digits(c + 1, n - 1);
    return n >= 3 && n <= 5 && all_digits(c, n);
}

/* 2 digits, then an optional dot and 0-2 digits: 2-4 digits in all. */
bool px_icd9_px_valid(const char *s, size_t len)
{
    char c[16];
    int n = undot(s, len, 2, c);
    return n >= 2 && n <= 4 && all_digits(c, n);
}

/* Letter except U (reserved for emergency use), digit, letter or digit, then
 * up to 4 letters or digits; dot after the third character. */
bool px_icd10_dx_valid(const char *s, size_t len)
{
    char c[16];
    int n = undot(s, len, 3, c);
    if (n < 3 || n > 7 || !is_alpha(c[0]) || c[0] == 'U' || !is_digit(c[1]))
        return false;
    for (int i = 2; i < n; i++)
        if (!is_alnum(c[i]))
            return false;
    return true;
}

/* Exactly 7 characters of 0-9 and A-Z without I and O (PCS avoids them because
 * they read as 1 and 0); no dot. */
bool px_icd10_pcs_valid(const char *s, size_t len)
{
    if (len != 7)
        return false;
    for (size_t i = 0; i < 7; i++) {
        char ch = upper(s[i]);
        if (!is_alnum(ch) || ch == 'I' || ch == 'O')
            return false;
    }
    return true;
}

/* Removes every dot and upper-cases into out (>= 16 bytes, NUL-terminated).
 * Returns the length, or -1 if longer than 15 or a byte is not alnum or dot. */
int px_icd_normalize(const char *s, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.')
            continue;
        if (!is_alnum(s[i]) || n == 15)
            return -1;
        out[n++] = upper(s[i]);
    }
    out[n] = '\0';
    return (int)n;
}
