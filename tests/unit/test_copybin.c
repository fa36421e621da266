/* test_copybin.c: the ETL's COPY binary encoder. Numerics are compared byte for
 * byte with PostgreSQL's own numeric_send (vectors from numeric_send_vectors.sql,
 * beside this file); integers, dates and NULLs with the documented layout. */
#include "engine/etl_int.h"
#include "check.h"

static const char *hex(const px_buf *b, size_t from)
{
    static char out[512];
    size_t o = 0;
    for (size_t i = from; i < b->len && o + 3 < sizeof out; i++) o += (size_t)snprintf(out + o, 3, "%02x", (unsigned char)b->data[i]);
    out[o] = '\0';
    return out;
}

static void numeric_is(const char *text, const char *want)
{
    px_buf b = {0};
    CHECK_INT(etl_bin_numeric(&b, text, strlen(text)), 0);
    CHECK(b.len >= 4);
    /* the 4-byte field length, then exactly numeric_send's bytes */
    CHECK_INT(((unsigned char)b.data[0] << 24 | (unsigned char)b.data[1] << 16 | (unsigned char)b.data[2] << 8 |
               (unsigned char)b.data[3]), (long long)strlen(want) / 2);
    CHECK_STR(hex(&b, 4), want);
    px_buf_release(&b);
}

int main(void)
{
    static const char *const vectors[][2] = {
        {"0", "0000000000000000"},
        {"0.00", "0000000000000002"},
        {"12000.50", "0003000100000002000107d01388"},
        {"10832.73", "0003000100000002000103401c84"},
        {"0.05", "0001ffff0000000201f4"},
        {"-17.5", "000200004000000100111388"},
        {"1234567.891", "0003000100000003007b11d722ce"},
        {"100000000", "00010002000000000001"},
        {"0.0001", "0001ffff000000040001"},
        {"007.250", "0002000000000003000709c4"},
        {"-0", "0000000000000000"},
        {"99999999.99", "0003000100000002270f270f26ac"},
        {"1", "00010000000000000001"},
        {".5", "0001ffff000000011388"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) numeric_is(vectors[i][0], vectors[i][1]);

    /* not plain decimals: refused, nothing written */
    static const char *const bad[] = {"", "-", ".", "1e5", "1.2.3", "12a", " 1", "0x10", "+"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_buf b = {0};
        CHECK_INT(etl_bin_numeric(&b, bad[i], strlen(bad[i])), -1);
        CHECK_INT(b.len, 0);
        px_buf_release(&b);
    }

    px_buf b = {0};
    etl_bin_header(&b);
    CHECK_INT(b.len, 19);
    CHECK(memcmp(b.data, "PGCOPY\n\377\r\n\0", 11) == 0);
    size_t h = b.len;
    etl_bin_row(&b, 3);
    etl_bin_i16(&b, -2);
    etl_bin_date(&b, 10957 + 31); /* 2000-02-01: day 31 of PostgreSQL's epoch */
    etl_bin_null(&b);
    etl_bin_i64(&b, 1LL << 40);
    etl_bin_bytes(&b, "ab", 2);
    etl_bin_trailer(&b);
    CHECK_STR(hex(&b, h), "0003" "00000002fffe" "000000040000001f" "ffffffff" "000000080000010000000000" "000000026162" "ffff");
    px_buf_release(&b);
    return check_report("copybin");
}
