/* test_serve_fast.c: the one-pass predict reader (serve/predict_fast.c) against
 * the cJSON path it stands in for. Every body of a generated corpus is read both
 * ways (srv_predict_inputs with fast 0 and 1); the two must agree exactly: the
 * same status, and then the same values bit for bit and the same flags, or the
 * same error body. The corpus: valid bodies in many number spellings and
 * whitespace, key orders and batch sizes, then each of them truncated, with bytes
 * replaced, inserted or deleted, keys doubled, dropped or escaped, values nested,
 * and numbers at the edges of the exact fast path (2^53, 10^22, 19 digits).
 * It also checks that the fast reader does take the plain bodies, and that the
 * numbers it reads equal strtod's. */
#include "serve/internal.h"
#include "tests/unit/check.h"
#include "tests/unit/serve_fixture.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static unsigned pick(unsigned n) { return (unsigned)(next() % n); }

/* The model: numeric, flag, categorical and dropped inputs. */
static char *sex_levels[] = {"F", "M"};
static char *adm_levels[] = {"elective", "emergency", "urgent", "\xc3\xa9tranger"};
static px_feature_info info[] = {
    {.name = "age_years", .kind = PX_COL_NUMERIC, .min = 18, .max = 104},
    {.name = "sex", .kind = PX_COL_CATEGORICAL, .nlevels = 2, .levels = sex_levels},
    {.name = "los_days", .kind = PX_COL_NUMERIC, .min = 0, .max = 60},
    {.name = "cci_chf", .kind = PX_COL_NUMERIC, .min = 0, .max = 1},
    {.name = "admission_type", .kind = PX_COL_CATEGORICAL, .nlevels = 4, .levels = adm_levels},
    {.name = "cost", .kind = PX_COL_NUMERIC, .min = -5e3, .max = 1e7},
    {.name = "unused", .kind = PX_COL_NUMERIC, .min = 1, .max = 1, .dropped = 1},
    {.name = "score", .kind = PX_COL_NUMERIC, .min = -1e300, .max = 1e300},
};
#define K (sizeof info / sizeof info[0])
static srv_feat feat[K];
static srv_model model;
static px_server *server;

static void setup(void)
{
    fixture_model(&model, feat, info, K, 3);
    server = calloc(1, sizeof *server);
    server->p = px_serve_default_params();
}

typedef struct outcome {
    unsigned st;
    size_t n, n_enc;
    int fast;
    double raw[64 * K];
    unsigned char flags[64 * K];
    int enc[64];
    char out[2048];
} outcome;

static void read_body(const char *body, size_t len, int fast, outcome *o)
{
    srv_req *r = fixture_request(server, &model, body, len);
    memset(o, 0, sizeof *o);
    o->st = srv_predict_inputs(r, fast, &o->n, &o->n_enc, &o->fast);
    if (o->st == 0 && o->n <= 64) {
        memcpy(o->raw, r->raw, o->n * K * sizeof *r->raw);
        memcpy(o->flags, r->flags, o->n * K);
        for (size_t i = 0; i < o->n; i++) o->enc[i] = r->from_encounter[i];
    }
    if (r->out.data) snprintf(o->out, sizeof o->out, "%s", r->out.data);
    fixture_request_free(r);
}

static int n_bodies, n_fast, n_ok, n_mismatch;
static outcome A, B;

/* Reads body both ways; returns whether the fast reader took it. */
static int both(const char *body, size_t len)
{
    read_body(body, len, 0, &A);
    read_body(body, len, 1, &B);
    n_bodies++;
    int same = A.st == B.st && !A.fast;
    if (same && A.st == 0)
        same = A.n == B.n && A.n_enc == B.n_enc && memcmp(A.raw, B.raw, A.n * K * sizeof(double)) == 0 &&
               memcmp(A.flags, B.flags, A.n * K) == 0 && memcmp(A.enc, B.enc, A.n * sizeof(int)) == 0;
    if (same && A.st != 0) same = strcmp(A.out, B.out) == 0 && !B.fast;
    if (!same && n_mismatch++ < 5)
        fprintf(stderr, "mismatch (cJSON %u, fast %u%s) on: %.*s\n  cJSON: %s\n  fast:  %s\n", A.st, B.st,
                B.fast ? ", read fast" : "", (int)len, body, A.out, B.out);
    CHECK(same);
    if (B.fast) n_fast++;
    if (A.st == 0) n_ok++;
    return B.fast;
}

/* ---- the generator --------------------------------------------------------- */

typedef struct sbuf {
    char d[8192];
    size_t n;
} sbuf;
static void put(sbuf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->n + l < sizeof b->d) memcpy(b->d + b->n, s, l), b->n += l;
    b->d[b->n] = '\0';
}
static void ws(sbuf *b, int plain)
{
    static const char *w[] = {"", "", "", " ", "\n", "\t", "\r\n  ", "  "};
    static const char *odd[] = {"\f", "\v", "\x01"};
    if (!plain && pick(40) == 0) put(b, odd[pick(3)]);
    else put(b, w[pick(8)]);
}

/* A number for input j, spelled one of many ways. */
static void number(sbuf *b, size_t j, int plain)
{
    char t[64];
    const px_feature_info *fi = &info[j];
    double lo = fi->min, hi = fi->max;
    if (hi - lo > 1e7) lo = -1e4, hi = 1e6; /* "score": a span a generator can draw from */
    /* plain: the spellings on the fast path; %.17g (17 digits, mostly above 2^53) is not */
    static const int plain_cases[] = {0, 1, 3, 4, 5, 6};
    switch (plain ? plain_cases[pick(6)] : (int)pick(12)) {
    case 0: snprintf(t, sizeof t, "%d", (int)(lo + pick((unsigned)(hi - lo + 1)))); break;
    case 1: snprintf(t, sizeof t, "%.*f", (int)pick(6), lo + (hi - lo) * (double)pick(1000000) / 1e6); break;
    case 2: snprintf(t, sizeof t, "%.17g", lo + (hi - lo) * (double)pick(1000000) / 1e6); break;
    case 3: snprintf(t, sizeof t, "%.*e", (int)pick(8), lo + (hi - lo) * (double)pick(1000) / 1e3); break;
    case 4: snprintf(t, sizeof t, "%.3E", lo + (hi - lo) * (double)pick(1000) / 1e3); break;
    case 5: snprintf(t, sizeof t, "%s", (const char *[]){"0", "-0", "0.0", "1", "1.0", "1e0", "10E-1", "0.5e1"}[pick(8)]); break;
    case 6: snprintf(t, sizeof t, "%.15g", lo + (hi - lo) * (double)pick(997) / 997); break;
    /* off the fast path, or invalid */
    case 7: snprintf(t, sizeof t, "%s", (const char *[]){"9007199254740993", "9007199254740992", "90071992547409921",
                                                          "1234567890123456789", "12345678901234567890", "1e22",
                                                          "1e23", "123e-22", "123e-23", "4.9e-324", "1e400", "-1e400",
                                                          "0.0000000000000000000000001", "1.7976931348623157e308"}[pick(14)]);
        break;
    case 8: snprintf(t, sizeof t, "%s", (const char *[]){"01", "1.", ".5", "+1", "1e", "1e+", "--1", "1.2.3", "0x10",
                                                          "1e5000", "NaN", "Infinity", "-", "1_0", "00"}[pick(15)]);
        break;
    case 9: snprintf(t, sizeof t, "%.0f", hi + 1 + pick(100)); break;  /* extrapolated or out of range */
    case 10: snprintf(t, sizeof t, "%.6f", lo - 0.5 - pick(100)); break;
    default: snprintf(t, sizeof t, "%s", (const char *[]){"\"12\"", "true", "false", "[1]", "{}", "null"}[pick(6)]);
    }
    put(b, t);
}

static void value(sbuf *b, size_t j, int plain)
{
    const px_feature_info *fi = &info[j];
    if (pick(25) == 0) {
        put(b, "null");
        return;
    }
    if (fi->kind == PX_COL_CATEGORICAL) {
        put(b, "\"");
        if (!plain && pick(8) == 0) put(b, (const char *[]){"F\\u0000", "\\u0046", "\\\"M", "x", "", "m", "F\x01"}[pick(7)]);
        else put(b, fi->levels[pick((unsigned)fi->nlevels)]);
        put(b, "\"");
        if (!plain && pick(20) == 0) b->n--, b->d[b->n] = '\0', put(b, "1");
        return;
    }
    if (strcmp(fi->name, "cci_chf") == 0) {
        put(b, (const char *[]){"0", "1", "true", "false", "0.0", "1e0", "2", "0.5"}[pick(plain ? 6 : 8)]);
        return;
    }
    number(b, j, plain);
}

static void instance(sbuf *b, int plain)
{
    size_t order[K];
    for (size_t j = 0; j < K; j++) order[j] = j;
    if (pick(3) == 0)
        for (size_t j = K - 1; j > 0; j--) {
            size_t q = pick((unsigned)j + 1), t = order[j];
            order[j] = order[q], order[q] = t;
        }
    put(b, "{");
    int first = 1;
    for (size_t q = 0; q < K; q++) {
        size_t j = order[q];
        if (info[j].dropped && pick(2)) continue;
        if (!plain && pick(60) == 0) continue; /* missing */
        if (!first) put(b, ","), ws(b, plain);
        first = 0;
        ws(b, plain);
        put(b, "\"");
        if (!plain && pick(80) == 0) put(b, "a\\u0067e_years"); /* "age_years", escaped */
        else put(b, info[j].name);
        put(b, "\"");
        ws(b, plain);
        put(b, ":");
        ws(b, plain);
        value(b, j, plain);
        ws(b, plain);
        if (!plain && pick(80) == 0) { /* doubled, unknown or lookup */
            put(b, (const char *[]){",\"sex\":\"F\"", ",\"bogus\":1", ",\"encounter_id\":\"e1\""}[pick(3)]);
        }
    }
    put(b, "}");
}

static void body(sbuf *b, int plain)
{
    b->n = 0;
    b->d[0] = '\0';
    ws(b, plain);
    put(b, "{");
    ws(b, plain);
    put(b, "\"instances\"");
    ws(b, plain);
    put(b, ":");
    ws(b, plain);
    put(b, "[");
    unsigned n = 1 + (pick(4) == 0 ? pick(6) : 0);
    for (unsigned i = 0; i < n; i++) {
        if (i) put(b, ","), ws(b, plain);
        ws(b, plain);
        if (!plain && pick(50) == 0) put(b, (const char *[]){"{\"encounter_id\":\"abc\"}", "[]", "3", "{}"}[pick(4)]);
        else instance(b, plain);
        ws(b, plain);
    }
    put(b, "]");
    ws(b, plain);
    put(b, "}");
    ws(b, plain);
}

static void mutate(sbuf *b)
{
    static const char set[] = "{}[],:\"\\ 0123456789.eE+-nultrfasx\x01\x80";
    size_t at = b->n ? pick((unsigned)b->n) : 0;
    switch (pick(5)) {
    case 0: b->n = at; break; /* truncated */
    case 1: if (b->n) b->d[at] = set[pick(sizeof set - 1)]; break;
    case 2: if (b->n + 1 < sizeof b->d) { memmove(b->d + at + 1, b->d + at, b->n - at); b->d[at] = set[pick(sizeof set - 1)]; b->n++; } break;
    case 3: if (b->n) { memmove(b->d + at, b->d + at + 1, b->n - at - 1); b->n--; } break;
    default: { /* a nested value */
        const char *colon = memchr(b->d + at, ':', b->n - at);
        if (colon && b->n + 4 < sizeof b->d) {
            size_t c = (size_t)(colon - b->d) + 1;
            memmove(b->d + c + 1, b->d + c, b->n - c);
            b->d[c] = '[';
            b->n++;
        }
    }
    }
    b->d[b->n] = '\0';
}

/* Numbers read by the fast path equal strtod's, bit for bit. */
static void numbers_exact(void)
{
    static const char *spell[] = {
        /* over 63 characters: left to cJSON (upstream reads only 63 of them) */
        "0.000000000000000000000000000000000000000000000000000000000000000000000",
        "-0.00000000000000000000000000000000000000000000000000000000000000000",
        "0.00000000000000000000000000000000000000000000000000000000000000000001e65",
        "0.0000000000000000000000000000000000000000000000000000000000001e60",
        "0.1", "0.3", "2.2250738585072014e-308", "123456789012345678", "9007199254740992", "8.98846567431158e15",
        "0.000001", "1e-22", "3.0e22", "17.000000000000001", "1.5", "-7.25e-3", "99.999999999999999",
        "4503599627370497.5"};
    const size_t score = 7; /* any finite number is in range */
    for (size_t q = 0; q < sizeof spell / sizeof *spell; q++) {
        char txt[256];
        int len = snprintf(txt, sizeof txt, "{\"instances\":[{\"age_years\":40,\"sex\":\"F\",\"los_days\":2,\"cci_chf\":0,"
                                            "\"admission_type\":\"urgent\",\"cost\":1,\"score\":%s}]}", spell[q]);
        int fast = both(txt, (size_t)len);
        if (q < 4) CHECK(!fast); /* the long ones */
        if (B.st == 0) {
            double want = strtod(spell[q], NULL);
            CHECK(memcmp(&B.raw[score], &want, sizeof want) == 0);
        }
    }
    /* random 15-17 digit decimals through the fast path */
    for (int q = 0; q < 20000; q++) {
        char num[64], txt[256];
        uint64_t m = next() % (UINT64_C(1) << 53);
        int e = (int)pick(45) - 22;
        snprintf(num, sizeof num, "%llue%d", (unsigned long long)m, e);
        int len = snprintf(txt, sizeof txt, "{\"instances\":[{\"age_years\":40,\"sex\":\"F\",\"los_days\":2,\"cci_chf\":0,"
                                            "\"admission_type\":\"urgent\",\"cost\":1,\"score\":%s}]}", num);
        int fast = both(txt, (size_t)len);
        CHECK(fast);
        double want = strtod(num, NULL);
        CHECK(B.st == 0 && memcmp(&B.raw[score], &want, sizeof want) == 0);
    }
}

int main(void)
{
    setup();
    srv_cjson_hooks_install();
    sbuf b;
    /* plain bodies: the fast reader takes every one that is valid */
    int plain_fast = 0, plain = 0;
    for (int q = 0; q < 4000; q++) {
        body(&b, 1);
        int fast = both(b.d, b.n);
        if (A.st != 0) continue; /* a value out of range: an error, the cJSON path's */
        plain++;
        plain_fast += fast;
    }
    fprintf(stderr, "plain bodies: 4000, valid: %d, read fast: %d\n", plain, plain_fast);
    CHECK(plain > 2000);
    CHECK_INT(plain_fast, plain);
    /* anything else, and mutations of everything */
    for (int q = 0; q < 20000; q++) {
        body(&b, pick(2));
        if (pick(3)) mutate(&b);
        if (pick(4) == 0) mutate(&b);
        both(b.d, b.n);
    }
    /* the batch limit */
    server->p.max_instances = 2;
    for (int q = 0; q < 2000; q++) {
        body(&b, pick(2));
        both(b.d, b.n);
    }
    server->p.max_instances = px_serve_default_params().max_instances;
    numbers_exact();
    /* an empty body and a few shapes */
    static const char *shapes[] = {"", " ", "{}", "[]", "{\"instances\":[]}", "{\"instances\":{}}", "{\"instances\":1}",
                                   "{\"instances\":[{}]}", "{\"instances\":[{\"age_years\":40}]}",
                                   "{\"instances\":[1]}", "{\"x\":1,\"instances\":[]}", "{\"instances\":[]} x"};
    for (size_t q = 0; q < sizeof shapes / sizeof *shapes; q++) both(shapes[q], strlen(shapes[q]));
    fprintf(stderr, "%d bodies: %d valid, %d read fast, %d mismatches\n", n_bodies, n_ok, n_fast, n_mismatch);
    CHECK_INT(n_mismatch, 0);
    CHECK(n_ok > 2000 && n_ok < n_bodies - 2000);
    srv_cjson_hooks_remove();
    free(server);
    return check_report("test_serve_fast");
}
