/* test_csv.c: the streaming CSV reader, driven through real files (and a pipe
 * fed one byte per write). Small inputs are compared as a dump, one line per
 * record: "<status>@<line>[field][field]..."; large ones field by field. */
#include "engine/internal.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

/* A temporary file holding data, already unlinked, positioned at 0. */
static int file_with(const void *data, size_t n)
{
    char path[] = "/tmp/px_test_csv_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    unlink(path);
    const char *p = data;
    for (size_t off = 0; off < n;) {
        ssize_t k = write(fd, p + off, n - off);
        if (k <= 0) {
            perror("write");
            exit(2);
        }
        off += (size_t)k;
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* Parses fd to the end; returns the dump (caller frees) or "ERROR" on -1. */
static char *dump_fd(int fd)
{
    px_buf b = { 0 };
    px_csv *c = px_csv_new(fd);
    px_csv_status st;
    int rc;
    px_buf_adds(&b, "");
    while ((rc = px_csv_next(c, &st)) == 1) {
        px_buf_printf(&b, "%d@%lld", (int)st, px_csv_line(c));
        for (int i = 0; i < px_csv_nfields(c); i++) {
            px_buf_addc(&b, '[');
            const char *f = px_csv_field(c, i);
            for (size_t k = 0; k < px_csv_field_len(c, i); k++)   /* NUL shown as <NUL> */
                f[k] ? px_buf_addc(&b, f[k]) : px_buf_adds(&b, "<NUL>");
            px_buf_addc(&b, ']');
        }
        px_buf_addc(&b, '\n');
    }
    if (rc < 0)
        px_buf_adds(&b, "ERROR");
    px_csv_free(c);
    return b.data;
}

static char *dump_n(const char *data, size_t n)
{
    int fd = file_with(data, n);
    char *d = dump_fd(fd);
    close(fd);
    return d;
}

#define CHECK_DUMP(input, expected) do { char *d_ = dump_n(input, sizeof(input) - 1); \
    CHECK_STR(d_, expected); free(d_); } while (0)

static void test_basic(void)
{
    CHECK_DUMP("a,b,c\n1,2,3\n", "0@1[a][b][c]\n0@2[1][2][3]\n");
    CHECK_DUMP("a,b\nc,d", "0@1[a][b]\n0@2[c][d]\n");             /* no final newline */
    CHECK_DUMP("a,\"b\"", "0@1[a][b]\n");
    CHECK_DUMP(",,\n\"\",x,\n", "0@1[][][]\n0@2[][x][]\n");         /* empty fields */
    CHECK_DUMP("", "");
    CHECK_DUMP("x", "0@1[x]\n");
}

static void test_quoting(void)
{
    CHECK_DUMP("h\n\"x,y\",\"line1\nline2\",z\nnext\n",
               "0@1[h]\n0@2[x,y][line1\nline2][z]\n0@4[next]\n");
    CHECK_DUMP("\"say \"\"hi\"\"\",\"\"\"\"\n", "0@1[say \"hi\"][\"]\n");
    CHECK_DUMP("\"a\n\n\nb\",c\nd\n", "0@1[a\n\n\nb][c]\n0@5[d]\n");   /* line numbers */
    CHECK_DUMP("p,\"\"\"\",\"a\"\"\"\n", "0@1[p][\"][a\"]\n");
}

static void test_crlf(void)
{
    CHECK_DUMP("a,b\r\nc,d\r\n", "0@1[a][b]\n0@2[c][d]\n");
    CHECK_DUMP("\"a\"\r\n\"b\"\r\n", "0@1[a]\n0@2[b]\n");
    CHECK_DUMP("\"a\r\nb\"\r\nz\r\n", "0@1[a\r\nb]\n0@3[z]\n");       /* CR kept inside quotes */
    CHECK_DUMP("a\rb\n", "0@1[a\rb]\n");                             /* lone CR is data */
    CHECK_DUMP("a,b\r", "0@1[a][b]\n");                              /* CR at EOF stripped */
}

static void test_blank_lines(void)
{
    CHECK_DUMP("a\n\nb\n\n\n", "0@1[a]\n0@2[]\n0@3[b]\n");   /* trailing blanks dropped */
    CHECK_DUMP("a\n\r\n", "0@1[a]\n");
    CHECK_DUMP("\n\n", "");
    CHECK_DUMP("\r\n\r\nx\n", "0@1[]\n0@2[]\n0@3[x]\n");
}

static void test_bad_quoting(void)
{
    CHECK_DUMP("ab\"c,d\nok\n", "1@1[ab\"c][d]\n0@2[ok]\n");
    CHECK_DUMP("\"ab\"c,d\nok\n", "1@1[abc][d]\n0@2[ok]\n");
    CHECK_DUMP("\"ab\" ,d\r\nok\n", "1@1[ab ][d]\n0@2[ok]\n");
    CHECK_DUMP("\"a\"b\"c\"\nok\n", "1@1[ab\"c\"]\n0@2[ok]\n");
    CHECK_DUMP("\"a\"\rx\nok\n", "1@1[a\rx]\n0@2[ok]\n");
    /* EOF inside quotes: the record runs to the end and is still returned. */
    CHECK_DUMP("a\n\"open,\nmore\n", "0@1[a]\n1@2[open,\nmore\n]\n");
    CHECK_DUMP("\"", "1@1[]\n");
}

static void test_bad_utf8(void)
{
    CHECK_DUMP("ok,\xc3\xa9,\xe2\x82\xac,\xf0\x9f\x98\x80,\xf4\x8f\xbf\xbf\n",
               "0@1[ok][\xc3\xa9][\xe2\x82\xac][\xf0\x9f\x98\x80][\xf4\x8f\xbf\xbf]\n");
    CHECK_DUMP("a,\xff\nok\n", "2@1[a][\xff]\n0@2[ok]\n");                 /* invalid byte */
    CHECK_DUMP("\xc3\nok\n", "2@1[\xc3]\n0@2[ok]\n");                      /* truncated */
    CHECK_DUMP("\xc3,\xa9\nok\n", "2@1[\xc3][\xa9]\n0@2[ok]\n");           /* split by a comma */
    CHECK_DUMP("\xe2\x82\nok\n", "2@1[\xe2\x82]\n0@2[ok]\n");
    CHECK_DUMP("\xc0\xaf\nok\n", "2@1[\xc0\xaf]\n0@2[ok]\n");              /* overlong '/' */
    CHECK_DUMP("\xe0\x80\xaf\nok\n", "2@1[\xe0\x80\xaf]\n0@2[ok]\n");      /* overlong, 3 bytes */
    CHECK_DUMP("\xf0\x80\x80\xaf\nok\n", "2@1[\xf0\x80\x80\xaf]\n0@2[ok]\n");
    CHECK_DUMP("\xed\xa0\x80\nok\n", "2@1[\xed\xa0\x80]\n0@2[ok]\n");      /* surrogate D800 */
    CHECK_DUMP("\xf4\x90\x80\x80\nok\n", "2@1[\xf4\x90\x80\x80]\n0@2[ok]\n"); /* > U+10FFFF */
    CHECK_DUMP("\"q\xe9\"\nok\n", "2@1[q\xe9]\n0@2[ok]\n");                /* latin-1 in quotes */
    CHECK_DUMP("abcdefghijklmnop\x80qrstuvwxyz\nok\n",                     /* after the 8-byte path */
               "2@1[abcdefghijklmnop\x80qrstuvwxyz]\n0@2[ok]\n");
    CHECK_DUMP("a\0b\nok\n", "2@1[a<NUL>b]\n0@2[ok]\n");                      /* NUL byte */
    /* bad quoting wins over bad UTF-8 */
    CHECK_DUMP("a\"\xff\nok\n", "1@1[a\"\xff]\n0@2[ok]\n");
}

/* head, then n bytes of filler, then tail, then "\nnext,rec\n". */
static char *long_record(const char *head, size_t n, char fill, const char *tail, size_t *len)
{
    size_t hl = strlen(head), tl = strlen(tail);
    const char *after = "\nnext,rec\n";
    char *s = malloc(hl + n + tl + strlen(after) + 1);
    memcpy(s, head, hl);
    memset(s + hl, fill, n);
    strcpy(s + hl + n, tail);
    strcat(s + hl + n, after);
    *len = hl + n + tl + strlen(after);
    return s;
}

/* Parses s: checks the first record's status, first field, and that "next,rec" follows at line. */
static void check_long(const char *s, size_t len, px_csv_status want, const char *f0, long long next_line)
{
    int fd = file_with(s, len);
    px_csv *c = px_csv_new(fd);
    px_csv_status st;
    CHECK_INT(px_csv_next(c, &st), 1);
    CHECK_INT(st, want);
    CHECK(px_csv_nfields(c) >= 1);
    CHECK_STR(px_csv_field(c, 0), f0);
    CHECK_INT(px_csv_next(c, &st), 1);
    CHECK_INT(st, PX_CSV_OK);
    CHECK_INT(px_csv_line(c), next_line);
    CHECK_INT(px_csv_nfields(c), 2);
    CHECK_STR(px_csv_field(c, 0), "next");
    CHECK_STR(px_csv_field(c, 1), "rec");
    CHECK_INT(px_csv_next(c, &st), 0);
    CHECK_INT(px_csv_bytes(c), (long long)len);
    px_csv_free(c);
    close(fd);
}

static void test_too_long(void)
{
    size_t len;
    char *s = long_record("a,", MIB - 4, 'x', ",b", &len);     /* exactly 1 MiB: fine */
    check_long(s, len, PX_CSV_OK, "a", 2);
    free(s);
    s = long_record("a,", MIB - 3, 'x', ",b", &len);           /* 1 MiB + 1 */
    check_long(s, len, PX_CSV_TOO_LONG, "a", 2);
    free(s);
    s = long_record("a,", 3 * MIB, 'y', "", &len);             /* spans several reads */
    check_long(s, len, PX_CSV_TOO_LONG, "a", 2);
    free(s);
    /* a long quoted field with commas and newlines: the skip must follow quotes */
    s = long_record("k,\"", 2 * MIB, '\n', "\"\"x,\"", &len);
    memcpy(s + 3 + MIB, ",\"\",", 4);
    check_long(s, len, PX_CSV_TOO_LONG, "k", (long long)(2 * MIB) - 2);
    free(s);
    /* fields parsed past the 1 MiB cut are dropped, the one across it is cut */
    size_t n = MIB - 2 + 4 * 200000;
    s = long_record("", MIB - 2, 'x', "", &len);
    s = realloc(s, n + 1);
    for (size_t k = MIB - 2; k < n; k += 4)
        memcpy(s + k, ",abc", 4);
    int fd = file_with(s, n);
    px_csv *c = px_csv_new(fd);
    px_csv_status st;
    CHECK_INT(px_csv_next(c, &st), 1);
    CHECK_INT(st, PX_CSV_TOO_LONG);
    CHECK_INT(px_csv_nfields(c), 2);
    CHECK_INT(px_csv_field_len(c, 0), MIB - 2);
    CHECK_STR(px_csv_field(c, 1), "a");
    CHECK_INT(px_csv_field_len(c, 1), 1);
    CHECK_INT(px_csv_next(c, &st), 0);
    px_csv_free(c);
    close(fd);
    free(s);
    /* the long field keeps its first bytes; the record ends at EOF */
    s = long_record("", MIB + 10, 'z', "", &len);
    fd = file_with(s, MIB + 10);
    c = px_csv_new(fd);
    CHECK_INT(px_csv_next(c, &st), 1);
    CHECK_INT(st, PX_CSV_TOO_LONG);
    CHECK_INT(px_csv_nfields(c), 1);
    CHECK_INT(px_csv_field_len(c, 0), MIB);
    CHECK_INT(strlen(px_csv_field(c, 0)), MIB);
    CHECK_INT(px_csv_next(c, &st), 0);
    px_csv_free(c);
    close(fd);
    free(s);
}

/* Record i of the boundary test: fields vary in length and quoting. */
static void make_fields(long i, char f[3][64])
{
    snprintf(f[0], 64, "E%06ld", i);
    if (i % 3 == 0)
        snprintf(f[1], 64, "say \"%ld\",\nok", i * 7);
    else
        snprintf(f[1], 64, "%.*s", (int)(i % 40), "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH");
    snprintf(f[2], 64, "\xc3\xa9%ld", i % 1000);
}

static void add_quoted(px_buf *b, const char *s)
{
    px_buf_addc(b, '"');
    for (; *s; s++) {
        if (*s == '"')
            px_buf_addc(b, '"');
        px_buf_addc(b, *s);
    }
    px_buf_addc(b, '"');
}

static uint64_t tap_sum, tap_n;
static void tap(void *ctx, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    CHECK(ctx == &tap_sum);
    for (size_t i = 0; i < n; i++)
        tap_sum = (tap_sum ^ p[i]) * 1099511628211ULL;   /* FNV-1a: order matters */
    tap_n += n;
}

/* ~9 MB of varied records: every read block boundary lands somewhere inside a record. */
static void test_boundaries_and_tap(void)
{
    const long n = 250000;
    px_buf b = { 0 };
    char f[3][64];
    for (long i = 0; i < n; i++) {
        make_fields(i, f);
        px_buf_printf(&b, "%s,", f[0]);
        if (i % 3 == 0 || i % 5 == 0)
            add_quoted(&b, f[1]);
        else
            px_buf_adds(&b, f[1]);
        px_buf_printf(&b, ",%s%s", f[2], i % 2 ? "\r\n" : "\n");
    }
    uint64_t want = 14695981039346656037ULL;
    for (size_t i = 0; i < b.len; i++)
        want = (want ^ (unsigned char)b.data[i]) * 1099511628211ULL;
    int fd = file_with(b.data, b.len);
    px_csv *c = px_csv_new(fd);
    tap_sum = 14695981039346656037ULL;
    tap_n = 0;
    px_csv_set_tap(c, tap, &tap_sum);
    px_csv_status st;
    long i = 0, bad = 0, line = 1;
    while (px_csv_next(c, &st) == 1) {
        make_fields(i, f);
        if (st != PX_CSV_OK || px_csv_nfields(c) != 3 || px_csv_line(c) != line ||
            strcmp(px_csv_field(c, 0), f[0]) || strcmp(px_csv_field(c, 1), f[1]) ||
            strcmp(px_csv_field(c, 2), f[2]) || px_csv_field_len(c, 1) != strlen(f[1]))
            bad++;
        line += i % 3 == 0 ? 2 : 1;
        i++;
    }
    CHECK_INT(i, n);
    CHECK_INT(bad, 0);
    CHECK_INT(px_csv_bytes(c), (long long)b.len);
    CHECK_INT(tap_n, b.len);
    CHECK(tap_sum == want);
    px_csv_free(c);
    close(fd);
    px_buf_release(&b);
}

/* The same tricky input through a pipe written one byte at a time, so the
 * reader refills at (almost) every position, must give the same dump. */
static void test_pipe_bytewise(void)
{
    static const char in[] = "h,\"q\"\"x\",\"a\r\nb\"\r\n\"ab\"c,d\r\n\xc3\xa9,\xe2\x82\n"
                             "\n\"x\"\r\n\"open\ny\"\r\r\n\"";
    char *want = dump_n(in, sizeof in - 1);
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        for (size_t i = 0; i + 1 < sizeof in; i++) {
            if (write(p[1], in + i, 1) != 1)
                _exit(1);
            usleep(200);
        }
        _exit(0);
    }
    close(p[1]);
    char *got = dump_fd(p[0]);
    close(p[0]);
    int ws;
    waitpid(pid, &ws, 0);
    CHECK_STR(got, want);
    CHECK_STR(want, "0@1[h][q\"x][a\r\nb]\n1@3[abc][d]\n2@4[\xc3\xa9][\xe2\x82]\n"
                    "0@5[]\n0@6[x]\n1@7[open\ny\r]\n1@9[]\n");
    free(want);
    free(got);
}

static void test_errors_and_api(void)
{
    px_csv_free(NULL);
    int fd = open("/tmp", O_RDONLY | O_DIRECTORY);
    px_csv *c = px_csv_new(fd);
    px_csv_status st;
    errno = 0;
    CHECK_INT(px_csv_next(c, &st), -1);
    CHECK_INT(errno, EISDIR);
    px_csv_free(c);
    close(fd);

    fd = file_with("a,b\nc\n", 6);
    c = px_csv_new(fd);
    CHECK_INT(px_csv_bytes(c), 0);
    CHECK_INT(px_csv_next(c, &st), 1);
    CHECK_INT(px_csv_bytes(c), 4);
    CHECK(px_csv_field(c, 2) == NULL);
    CHECK(px_csv_field(c, -1) == NULL);
    CHECK_INT(px_csv_field_len(c, 1), 1);
    CHECK_INT(px_csv_next(c, &st), 1);
    CHECK_INT(px_csv_bytes(c), 6);
    CHECK_INT(px_csv_next(c, &st), 0);
    CHECK_INT(px_csv_next(c, &st), 0);   /* stays at end */
    px_csv_free(c);
    close(fd);
}

int main(void)
{
    test_basic();
    test_quoting();
    test_crlf();
    test_blank_lines();
    test_bad_quoting();
    test_bad_utf8();
    test_too_long();
    test_boundaries_and_tap();
    test_pipe_bytewise();
    test_errors_and_api();
    return check_report("test_csv");
}
