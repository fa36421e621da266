/* test_validate.c: field validators (dates, numbers, ICD syntax) and the px_buf
 * encoders (COPY text, JSON strings). Expected day counts come from Python's
 * datetime: (date(y, m, d) - date(1970, 1, 1)).days. */
#include "engine/internal.h"
#include "tests/unit/check.h"

#include <limits.h>
#include <stdlib.h>
#include <time.h>

/* Parses an ISO date given as a C string; returns days or INT_MIN when invalid. */
static int iso(const char *s)
{
    int d = -12345;
    return px_date_parse_iso(s, strlen(s), &d) == 0 ? d : INT_MIN;
}

static int partial(const char *s)
{
    int d = -12345;
    return px_date_parse_partial(s, strlen(s), &d) == 0 ? d : INT_MIN;
}

static int ymd8(const char *s)
{
    int d = -12345;
    return px_date_parse_ymd8(s, strlen(s), &d) == 0 ? d : INT_MIN;
}

static void test_dates(void)
{
    CHECK_INT(iso("1970-01-01"), 0);
    CHECK_INT(iso("1969-12-31"), -1);
    CHECK_INT(iso("2000-03-01"), 11017);
    CHECK_INT(iso("2000-02-29"), 11016);   /* divisible by 400: leap */
    CHECK_INT(iso("2020-02-29"), 18321);
    CHECK_INT(iso("2024-12-31"), 20088);
    CHECK_INT(iso("1900-03-01"), -25508);
    CHECK_INT(iso("1800-01-01"), -62091);
    CHECK_INT(iso("9999-12-31"), 2932896);
    CHECK_INT(iso("2019-02-29"), INT_MIN);
    CHECK_INT(iso("1900-02-29"), INT_MIN); /* divisible by 100, not 400 */
    CHECK_INT(iso("2021-04-31"), INT_MIN);
    CHECK_INT(iso("2021-13-01"), INT_MIN);
    CHECK_INT(iso("2021-00-10"), INT_MIN);
    CHECK_INT(iso("2021-01-00"), INT_MIN);
    CHECK_INT(iso("1799-12-31"), INT_MIN);
    CHECK_INT(iso("2021-1-01"), INT_MIN);
    CHECK_INT(iso("2021-01-01 "), INT_MIN);
    CHECK_INT(iso("2021/01/01"), INT_MIN);
    CHECK_INT(iso("20210101"), INT_MIN);
    CHECK_INT(iso("2021-01-0a"), INT_MIN);
    CHECK_INT(iso("+021-01-01"), INT_MIN);
    CHECK_INT(iso(""), INT_MIN);
    int d = 7;
    CHECK_INT(px_date_parse_iso("2021-01-01xyz", 10, &d), 0);   /* reads exactly len bytes */
    CHECK_INT(d, 18628);

    /* partial dates (birth_date of de-identified extracts): the first day of the period */
    CHECK_INT(partial("2000"), 10957);
    CHECK_INT(partial("2024-02"), 19754);
    CHECK_INT(partial("2020-02-29"), 18321);
    CHECK_INT(partial("2301"), 120895);
    CHECK_INT(partial("1800"), -62091);
    CHECK_INT(partial("9999-12"), 2932866);
    CHECK_INT(partial("1799"), INT_MIN);
    CHECK_INT(partial("2024-13"), INT_MIN);
    CHECK_INT(partial("2024-00"), INT_MIN);
    CHECK_INT(partial("2024-1"), INT_MIN);
    CHECK_INT(partial("2024/02"), INT_MIN);
    CHECK_INT(partial("202"), INT_MIN);
    CHECK_INT(partial("20240"), INT_MIN);
    CHECK_INT(partial("2024-02-"), INT_MIN);
    CHECK_INT(partial("2019-02-29"), INT_MIN);
    CHECK_INT(partial("2024-02-1"), INT_MIN);
    CHECK_INT(partial("y2k!"), INT_MIN);
    CHECK_INT(partial(""), INT_MIN);
    d = 7;
    CHECK_INT(px_date_parse_partial("2021-05xyz", 7, &d), 0);   /* reads exactly len bytes */
    CHECK_INT(d, 18748);

    CHECK_INT(ymd8("20000301"), 11017);
    CHECK_INT(ymd8("19700101"), 0);
    CHECK_INT(ymd8("20190229"), INT_MIN);
    CHECK_INT(ymd8("2000-03-01"), INT_MIN);
    CHECK_INT(ymd8("2000031"), INT_MIN);
    CHECK_INT(ymd8("2000030 "), INT_MIN);
    CHECK_INT(ymd8("-2000301"), INT_MIN);
}

static void test_date_format(void)
{
    char out[11];
    px_date_format(0, out);
    CHECK_STR(out, "1970-01-01");
    px_date_format(11016, out);
    CHECK_STR(out, "2000-02-29");
    px_date_format(-25508, out);
    CHECK_STR(out, "1900-03-01");
    px_date_format(2932896, out);
    CHECK_STR(out, "9999-12-31");
    px_date_format(-719528, out);
    CHECK_STR(out, "0000-01-01");
    px_date_format(2932897, out);
    CHECK_STR(out, "0000-00-00");
    CHECK_INT(px_date_year(0), 1970);
    CHECK_INT(px_date_year(-1), 1969);
    CHECK_INT(px_date_year(11016), 2000);
    CHECK_INT(px_date_year(18627), 2020);   /* 2020-12-31 */
    CHECK_INT(px_date_year(18628), 2021);

    /* every day from 1800 to 9999 round-trips through format and parse */
    long bad = 0;
    for (int day = -62091; day <= 2932896; day++) {
        int back = -1;
        px_date_format(day, out);
        if (px_date_parse_iso(out, 10, &back) != 0 || back != day ||
            px_date_year(day) != atoi(out))
            bad++;
    }
    CHECK_INT(bad, 0);

    int today = px_date_today();
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char want[11];
    strftime(want, sizeof want, "%Y-%m-%d", &tm);
    px_date_format(today, out);
    CHECK_STR(out, want);   /* may fail only across a UTC midnight */
}

static long long pint(const char *s, int *ok)
{
    long long v = -777;
    *ok = px_parse_int(s, strlen(s), &v) == 0;
    return v;
}

static void test_int(void)
{
    int ok;
    CHECK_INT(pint("0", &ok), 0);
    CHECK(ok);
    CHECK_INT(pint("-42", &ok), -42);
    CHECK(ok);
    CHECK_INT(pint("007", &ok), 7);
    CHECK(ok);
    CHECK_INT(pint("9223372036854775807", &ok), LLONG_MAX);
    CHECK(ok);
    CHECK_INT(pint("-9223372036854775808", &ok), LLONG_MIN);
    CHECK(ok);
    const char *bad[] = { "", "-", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "12a",
                          "9223372036854775808", "-9223372036854775809",
                          "99999999999999999999", "--1", NULL };
    for (int i = 0; bad[i]; i++) {
        long long v = pint(bad[i], &ok);
        CHECK(!ok);
        CHECK_INT(v, -777);   /* untouched on failure */
    }
    long long v = 0;
    CHECK_INT(px_parse_int("123456", 3, &v), 0);
    CHECK_INT(v, 123);
}

static void test_num(void)
{
    double v = -1;
    CHECK_INT(px_parse_num("-12.50", 6, &v), 0);
    CHECK_NEAR(v, -12.5, 0);
    CHECK_INT(px_parse_num("3", 1, &v), 0);
    CHECK_NEAR(v, 3, 0);
    CHECK_INT(px_parse_num("0.1", 3, &v), 0);
    CHECK(v == 0.1);   /* correctly rounded, as strtod does */
    CHECK_INT(px_parse_num("123456789.125", 13, &v), 0);
    CHECK_NEAR(v, 123456789.125, 0);
    CHECK_INT(px_parse_num("2.5xyz", 3, &v), 0);   /* exactly len bytes */
    CHECK_NEAR(v, 2.5, 0);
    const char *bad[] = { "", "-", ".5", "5.", "+1", "1e3", "1E3", "inf", "-inf", "nan",
                          "NaN", "0x1p3", " 1", "1 ", "1,5", "1.2.3", "--1", "1-", NULL };
    for (int i = 0; bad[i]; i++) {
        v = -777;
        CHECK_INT(px_parse_num(bad[i], strlen(bad[i]), &v), -1);
        CHECK_NEAR(v, -777, 0);
    }
    char big[200];
    memset(big, '9', sizeof big);
    CHECK_INT(px_parse_num(big, 100, &v), 0);
    CHECK_NEAR(v / 1e100, 1, 1e-12);
    CHECK_INT(px_parse_num(big, 101, &v), -1);   /* over 100 characters */
}

#define ICD(fn, s) fn(s, strlen(s))

static void test_icd9(void)
{
    const char *ok_dx[] = { "4019", "401.9", "250.00", "25000", "401", "V5866", "V58.66", "V58",
                            "v5866", "E8889", "E888.9", "E888", "7843", "784.3", NULL };
    const char *bad_dx[] = { "12", "4019A", "V5", "ABC", "", "40", "401999", "40.19",
                             "401.", ".401", "4.019", "V586666", "V5A", "E88", "E88889",
                             "E88.89", "E8888.", "401.9.", "I50.9", "401 9", NULL };
    for (int i = 0; ok_dx[i]; i++) {
        if (!ICD(px_icd9_dx_valid, ok_dx[i]))
            fprintf(stderr, "icd9 dx should be valid: %s\n", ok_dx[i]);
        CHECK(ICD(px_icd9_dx_valid, ok_dx[i]));
    }
    for (int i = 0; bad_dx[i]; i++) {
        if (ICD(px_icd9_dx_valid, bad_dx[i]))
            fprintf(stderr, "icd9 dx should be invalid: %s\n", bad_dx[i]);
        CHECK(!ICD(px_icd9_dx_valid, bad_dx[i]));
    }
    const char *ok_px[] = { "99", "9904", "99.04", "99.0", "990", "01.1", NULL };
    const char *bad_px[] = { "9", "99041", "99.041", "9.904", "99.", "A904", "99.A", "", NULL };
    for (int i = 0; ok_px[i]; i++)
        CHECK(ICD(px_icd9_px_valid, ok_px[i]));
    for (int i = 0; bad_px[i]; i++)
        CHECK(!ICD(px_icd9_px_valid, bad_px[i]));
}

static void test_icd10(void)
{
    const char *ok_dx[] = { "I50.9", "I509", "J44.1", "S72.001A", "S72001A", "C34.90", "A00",
                            "Z99.89", "i50.9", "C4A.0", "M1A.0110", NULL };
    const char *bad_dx[] = { "U07.1", "U071", "I5", "150.9", "I50.", "I50.90123", "I5009123",
                             "I5.09", "IA0.9", "I50-9", "I50.9 ", "", ".I509", NULL };
    for (int i = 0; ok_dx[i]; i++) {
        if (!ICD(px_icd10_dx_valid, ok_dx[i]))
            fprintf(stderr, "icd10 dx should be valid: %s\n", ok_dx[i]);
        CHECK(ICD(px_icd10_dx_valid, ok_dx[i]));
    }
    for (int i = 0; bad_dx[i]; i++) {
        if (ICD(px_icd10_dx_valid, bad_dx[i]))
            fprintf(stderr, "icd10 dx should be invalid: %s\n", bad_dx[i]);
        CHECK(!ICD(px_icd10_dx_valid, bad_dx[i]));
    }
    const char *ok_pcs[] = { "02703ZZ", "0DTJ4ZZ", "B2151ZZ", "XW033E5", "0dtj4zz", NULL };
    const char *bad_pcs[] = { "02703ZI", "0270", "02703Z", "02703ZZZ", "0270.3ZZ", "O2703ZZ",
                              "02703Z-", "", NULL };
    for (int i = 0; ok_pcs[i]; i++)
        CHECK(ICD(px_icd10_pcs_valid, ok_pcs[i]));
    for (int i = 0; bad_pcs[i]; i++)
        CHECK(!ICD(px_icd10_pcs_valid, bad_pcs[i]));
}

static void test_icd_normalize(void)
{
    char out[16];
    CHECK_INT(px_icd_normalize("i50.9", 5, out), 4);
    CHECK_STR(out, "I509");
    CHECK_INT(px_icd_normalize("250.00", 6, out), 5);
    CHECK_STR(out, "25000");
    CHECK_INT(px_icd_normalize("s72.001a", 8, out), 7);
    CHECK_STR(out, "S72001A");
    CHECK_INT(px_icd_normalize("", 0, out), 0);
    CHECK_STR(out, "");
    CHECK_INT(px_icd_normalize("ABCDEFGHIJKLMNO", 15, out), 15);
    CHECK_INT(px_icd_normalize("ABCDEFGHIJKLMNOP", 16, out), -1);
    CHECK_INT(px_icd_normalize("A.B.C.D.E.F.G.H.I.J.K.L.M.N.O", 29, out), 15);
    CHECK_INT(px_icd_normalize("I50 9", 5, out), -1);
    CHECK_INT(px_icd_normalize("I50-9", 5, out), -1);
    CHECK_INT(px_icd_normalize("I\xc3\xa9", 3, out), -1);
}

static void test_buf(void)
{
    px_buf b = { 0 };
    CHECK_INT(px_buf_copy_field(&b, NULL, 0), 0);
    CHECK_STR(b.data, "\\N");
    b.len = 0;
    CHECK_INT(px_buf_copy_field(&b, "", 0), 0);
    CHECK_INT(b.len, 0);
    CHECK_STR(b.data, "");
    CHECK_INT(px_buf_copy_field(&b, "a\\b\tc\nd\re", 9), 0);
    CHECK_STR(b.data, "a\\\\b\\tc\\nd\\re");
    b.len = 0;
    CHECK_INT(px_buf_copy_field(&b, "\\N", 2), 0);   /* the text \N is not NULL */
    CHECK_STR(b.data, "\\\\N");
    b.len = 0;
    CHECK_INT(px_buf_copy_field(&b, "plain\xc3\xa9xyz", 8), 0);   /* exactly len bytes */
    CHECK_STR(b.data, "plain\xc3\xa9x");

    b.len = 0;
    CHECK_INT(px_buf_json_str(&b, "a\"b\\c/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9", 16), 0);
    CHECK_STR(b.data, "\"a\\\"b\\\\c/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\"");
    b.len = 0;
    CHECK_INT(px_buf_json_str(&b, "", 0), 0);
    CHECK_STR(b.data, "\"\"");

    b.len = 0;
    CHECK_INT(px_buf_printf(&b, "%s=%d", "n", 42), 0);
    CHECK_INT(px_buf_printf(&b, ",%0300d", 7), 0);      /* grows past the first capacity */
    CHECK_INT(b.len, 4 + 301);
    CHECK(strncmp(b.data, "n=42,000", 8) == 0 && b.data[b.len - 1] == '7' && b.data[b.len] == '\0');
    size_t cap = b.cap;
    CHECK_INT(px_buf_reserve(&b, cap * 3), 0);
    CHECK(b.cap >= b.len + cap * 3 + 1);
    CHECK_INT(px_buf_reserve(&b, (size_t)-1), PX_ENOMEM);
    CHECK_INT(px_buf_addc(&b, 'z'), 0);
    CHECK_INT(px_buf_adds(&b, "yx"), 0);
    CHECK_STR(b.data + 305, "zyx");
    px_buf_release(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    px_buf_release(&b);   /* twice is harmless */

    for (int i = 0; i < 100000; i++)   /* doubling keeps this linear */
        px_buf_addc(&b, (char)('a' + i % 26));
    CHECK_INT(b.len, 100000);
    CHECK(b.cap < 4 * b.len);
    CHECK_INT(b.data[99999], 'a' + 99999 % 26);
    px_buf_release(&b);
}

int main(void)
{
    test_dates();
    test_date_format();
    test_int();
    test_num();
    test_icd9();
    test_icd10();
    test_icd_normalize();
    test_buf();
    return check_report("test_validate");
}
