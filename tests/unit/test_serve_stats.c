/* test_serve_stats.c: the drift statistics (serve/stats.c) against scipy's values in
 * tests/fixtures/serve/drift_ref.txt (made by tests/unit/ref_serve_stats.py), the
 * false-alarm rate of the sample-size-aware PSI limit on unchanged data, the JSON
 * depth pre-check and API key matching. Tolerances: 1e-9 relative for closed forms,
 * 1e-7 absolute for the Kolmogorov series and quantiles. */
#include "serve/internal.h"
#include "tests/unit/check.h"
#include <stdlib.h>

#define CHECK_REL(a, b, tol) CHECK_NEAR(a, b, (tol) * (fabs(b) > 1 ? fabs(b) : 1))

static size_t parse_counts(const char *s, double *out, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        char *end;
        out[n++] = strtod(s, &end);
        if (*end != ';') break;
        s = end + 1;
    }
    return n;
}

/* "A|B" into a and b; returns k (both the same length) or 0. */
static size_t parse_pair(char *s, double *a, double *b)
{
    char *bar = strchr(s, '|');
    if (!bar) return 0;
    *bar = '\0';
    size_t ka = parse_counts(s, a, 64), kb = parse_counts(bar + 1, b, 64);
    return ka == kb ? ka : 0;
}

static void reference_values(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[4096];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char kind[16], pair[2048];
        double a[64], b[64];
        if (line[0] == '#') continue;
        if (sscanf(line, "%15s", kind) != 1) continue;
        cases++;
        if (strcmp(kind, "psi") == 0) {
            double want;
            CHECK(sscanf(line, "psi %2047s %lf", pair, &want) == 2);
            size_t k = parse_pair(pair, a, b);
            CHECK(k > 0);
            CHECK_REL(px_drift_psi(a, b, k), want, 1e-9);
        } else if (strcmp(kind, "crit") == 0) {
            double k, n, m, alpha, want;
            CHECK(sscanf(line, "crit %lf %lf %lf %lf %lf", &k, &n, &m, &alpha, &want) == 5);
            CHECK_REL(px_drift_psi_critical((size_t)k, n, m, alpha), want, 1e-7);
        } else if (strcmp(kind, "kq") == 0) {
            double x, want;
            CHECK(sscanf(line, "kq %lf %lf", &x, &want) == 2);
            CHECK_NEAR(px_drift_kolmogorov_q(x), want, 1e-9);
        } else if (strcmp(kind, "ks") == 0) {
            double d, p, gotp;
            CHECK(sscanf(line, "ks %2047s %lf %lf", pair, &d, &p) == 3);
            size_t k = parse_pair(pair, a, b);
            CHECK(k > 0);
            CHECK_NEAR(px_drift_ks(a, b, k, &gotp), d, 1e-12);
            CHECK_NEAR(gotp, p, 1e-9);
        } else if (strcmp(kind, "chi2") == 0) {
            double stat, dfw, p, v, gs, gp, gv;
            int gdf;
            CHECK(sscanf(line, "chi2 %2047s %lf %lf %lf %lf", pair, &stat, &dfw, &p, &v) == 5);
            size_t k = parse_pair(pair, a, b);
            CHECK(k > 0);
            CHECK_INT(px_drift_chi2(a, b, k, &gs, &gdf, &gp, &gv), 0);
            CHECK_REL(gs, stat, 1e-9);
            CHECK_INT(gdf, (int)dfw);
            CHECK_NEAR(gp, p, 1e-9);
            CHECK_REL(gv, v, 1e-9);
        } else
            CHECK(!"unknown reference line");
    }
    fclose(f);
    CHECK(cases >= 40);
}

/* xorshift64*: a seeded generator for the simulation below */
static uint64_t rng = 88172645463325252ULL;
static double unif(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ULL) >> 11) * 0x1.0p-53;
}

/* Unchanged data: windows of n drawn from the reference's own 10 equal bins.
 * The issue this limit answers: a fixed PSI cut-off of 0.1 fires on a large
 * share of such windows at n = 100 (E[PSI] is about 9 (1/n + 1/m) = 0.09), while
 * the sample-size-aware limit at alpha = 0.01 fires on about 1%. */
static void null_calibration(void)
{
    const size_t k = 10, sims = 4000;
    const double n = 100, m = 5000, alpha = 0.01;
    double ref[10], win[10];
    for (size_t i = 0; i < k; i++) ref[i] = m / (double)k;
    double crit = px_drift_psi_critical(k, n, m, alpha);
    size_t fire_fixed = 0, fire_aware = 0;
    for (size_t s = 0; s < sims; s++) {
        for (size_t i = 0; i < k; i++) win[i] = 0;
        for (size_t j = 0; j < (size_t)n; j++) win[(size_t)(unif() * (double)k)]++;
        double psi = px_drift_psi(win, ref, k);
        fire_fixed += psi > 0.1;
        fire_aware += psi > crit;
    }
    double rate_fixed = (double)fire_fixed / (double)sims, rate_aware = (double)fire_aware / (double)sims;
    fprintf(stderr, "null windows (n=100): fixed 0.1 cut-off fires %.3f, limit %.4f fires %.4f\n", rate_fixed, crit,
            rate_aware);
    CHECK(rate_fixed > 0.2);
    CHECK(rate_aware < 0.025); /* 0.01 nominal; the chi-square approximation is slightly liberal at n=100 */
    CHECK(rate_aware > 0.001);

    /* and a real shift is caught: a quarter of the mass moved from the lowest bins to the highest */
    size_t caught = 0;
    for (size_t s = 0; s < 500; s++) {
        for (size_t i = 0; i < k; i++) win[i] = 0;
        for (size_t j = 0; j < (size_t)n; j++) {
            double u = unif();
            if (u < 0.25) u = 0.75 + u; /* [0, .25) -> [.75, 1) */
            win[(size_t)(u * (double)k)]++;
        }
        caught += px_drift_psi(win, ref, k) > crit;
    }
    CHECK(caught > 450);
}

static void depth_check(void)
{
    size_t off = 0;
    CHECK_INT(px_json_precheck("{\"instances\":[{\"a\":1}]}", 23, 3, &off), 0);
    CHECK_INT(px_json_precheck("{\"instances\":[{\"a\":[1]}]}", 25, 3, &off), PX_EINVAL);
    CHECK_INT(off, 19);
    /* brackets inside strings, escaped quotes and backslashes do not count */
    const char *s = "{\"a\":\"[[[[\\\"{{{{\\\\\",\"b\":[1]}";
    CHECK_INT(px_json_precheck(s, strlen(s), 2, &off), 0);
    char deep[2001];
    memset(deep, '[', 2000);
    deep[2000] = '\0';
    CHECK_INT(px_json_precheck(deep, 2000, 8, &off), PX_EINVAL);
    CHECK_INT(off, 8);
    CHECK_INT(px_json_precheck("]]]]{}", 6, 1, &off), PX_ECORRUPT); /* unbalanced */
    CHECK_INT(off, 0);
    /* strict RFC 8259 where cJSON is lenient: each of these is scored by cJSON alone */
    static const struct {
        const char *text;
        size_t at;
    } refused[] = {
        {"{\"a\":01}", 6},         {"{\"a\":70.}", 8},         {"{\"a\":-}", 6},
        {"{\"a\":1e}", 7},          {"{\"a\":.5}", 5},          {"{\"a\":+1}", 5},
        {"{\"a\":1}\x01", 7},       {"\x01{\"a\":1}", 0},       {"{\"a\":\x0b1}", 5},
        {"{\"a\":1,}", 7},          {"[1,]", 3},                {"{\"a\" 1}", 5},
        {"{\"a\":tru}", 5},         {"{\"a\":\"\\x\"}", 6},     {"{\"a\":\"\\ud800\"}", 6},
        {"{\"a\":\"\\udc00x\"}", 6}, {"{\"a\":\"\xc3\"}", 6},     {"{\"a\":\"\xe2\x82\"}", 6},
        {"{\"a\":\"\xc0\xaf\"}", 6}, {"{\"a\":\"\xed\xa0\x80\"}", 6}, {"{\"a\":1} {}", 8},
        {"", 0},                    {"{\"a\":[1}", 7},          {"{1:2}", 1},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        const char *why = NULL;
        off = 99;
        CHECK_INT(px_json_validate(refused[i].text, strlen(refused[i].text), 8, &off, &why), PX_ECORRUPT);
        CHECK_INT(off, refused[i].at);
        CHECK(why != NULL);
    }
    static const char *accepted[] = {
        "{\"a\":0}", "{\"a\":-0.5e+3}", "{\"a\":10E-2}", " [ ] ", "{\"a\":\"\\ud83d\\ude00 \xc3\xa9 \xf0\x9f\x98\x80\"}",
        "{\"a\":[true,false,null,{}],\"b\":\"\\/\\b\\f\\n\\r\\t\\\"\"}\r\n",
    };
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
        CHECK_INT(px_json_validate(accepted[i], strlen(accepted[i]), 8, &off, NULL), 0);
    /* control characters and \u0000 in strings; fine outside them and as other escapes */
    CHECK_INT(px_json_precheck("{\"a\":\"x\ty\"}", 11, 8, &off), PX_ECORRUPT);
    CHECK_INT(off, 7);
    CHECK_INT(px_json_precheck("{\"a\":\"ed\\u0000x\"}", 17, 8, &off), PX_ECORRUPT);
    CHECK_INT(off, 8);
    const char *fine = "{\"a\":\n\t\"\\u0041\\n\\\\u0000\"}";
    CHECK_INT(px_json_precheck(fine, strlen(fine), 8, &off), 0);
}

static void key_match(void)
{
    srv_keyset *ks = calloc(1, sizeof *ks + 2 * sizeof ks->keys[0]);
    CHECK(ks != NULL);
    if (!ks) return;
    ks->n = 2;
    /* secret "AAAA...A" (43 characters); its SHA-256 */
    const char *secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    char hex[65];
    px_sha256_hex(secret, strlen(secret), hex);
    for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        ks->keys[0].hash[i] = ks->keys[1].hash[i] = (unsigned char)v;
    }
    memcpy(ks->keys[0].id, "00000000000a", 13);
    ks->keys[0].role = PX_KEY_READ;
    memcpy(ks->keys[1].id, "00000000000b", 13);
    ks->keys[1].role = PX_KEY_PREDICT;
    srv_key k;
    char key[80];
    snprintf(key, sizeof key, "pxk_00000000000b_%s", secret);
    CHECK_INT(srv_key_match(ks, key, &k), 1);
    CHECK_STR(k.id, "00000000000b");
    CHECK_INT(k.role, PX_KEY_PREDICT);
    key[20] = 'B'; /* one character of the secret */
    CHECK_INT(srv_key_match(ks, key, &k), 0);
    snprintf(key, sizeof key, "pxk_00000000000c_%s", secret); /* unknown id */
    CHECK_INT(srv_key_match(ks, key, &k), 0);
    snprintf(key, sizeof key, "pxk_00000000000a_%sA", secret); /* too long */
    CHECK_INT(srv_key_match(ks, key, &k), 0);
    CHECK_INT(srv_key_match(ks, "", &k), 0);
    CHECK_INT(srv_role_allows(PX_KEY_ADMIN, PX_KEY_PREDICT), 1);
    CHECK_INT(srv_role_allows(PX_KEY_READ, PX_KEY_PREDICT), 0);
    CHECK_INT(srv_role_allows(PX_KEY_PREDICT, PX_KEY_READ), 0);
    free(ks);
}

int main(int argc, char **argv)
{
    reference_values(argc > 1 ? argv[1] : "tests/fixtures/serve/drift_ref.txt");
    null_calibration();
    depth_check();
    key_match();
    /* degenerate inputs answer NAN / EINVAL, never crash */
    double z[3] = {0, 0, 0}, one[3] = {1, 2, 3}, p = 0;
    CHECK(isnan(px_drift_ks(z, one, 3, &p)) && isnan(p));
    CHECK_INT(px_drift_chi2(z, one, 3, NULL, NULL, NULL, NULL), PX_EINVAL);
    CHECK(isnan(px_drift_psi_critical(1, 10, 10, 0.01)));
    CHECK(isnan(px_drift_psi(z, one, 0)));
    CHECK_NEAR(px_drift_kolmogorov_q(0), 1, 0);
    return check_report("test_serve_stats");
}
