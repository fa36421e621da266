/* fuzz_jwt.c: libFuzzer target for the CDS clients' JWTs and key sets
 * (serve/jwt.c). A fixed test key (below; never used anywhere else) is the one
 * key of the service's JWKS, so that mutations of a signed token's header and
 * claims get past the signature into the claim checks. Input: a mode byte, then
 * bytes.
 *  mode & 3 = 0: the bytes are the bearer token (up to the first NUL).
 *  mode & 3 = 1: the bytes are the header JSON, '\n', the claims JSON; the
 *    harness writes them as base64url, signs them with ES384 and replaces every
 *    "NOW" in the claims by the current Unix time (so that exp can be valid);
 *  mode & 3 = 3: the same with one bit of the signature flipped;
 *  mode & 3 = 2: the bytes are a JWKS file given to srv_jwt_new (--cds-jwks).
 * Checks: no crash, leak or UB; a token is accepted only when the harness
 * signed it with the key (mode 1), then with an issuer of the configured list;
 * a refusal names its reason; a JWKS is refused with a message or loads.
 * Once per process (so in the ctest replay too), signed tokens whose exp is out
 * of any integer's range are refused for the right reason (regression: exp
 * 1e300 was converted to an integer, undefined behaviour that read as
 * "expired" on x86). */
#define _GNU_SOURCE
#include "serve/internal.h"
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

/* EC P-384, generated for this harness only (openssl genpkey -algorithm EC
 * -pkeyopt ec_paramgen_curve:P-384). */
static const char test_priv[] = "-----BEGIN PRIVATE KEY-----\n"
                                "MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAFH6F7SY5n8syggHha\n"
                                "uQZ0zR4FcCVe5HfCgCG2OZ+q5G3/26VfVhYfG1Omv8qO4fyhZANiAARojviD9YQd\n"
                                "w8K0zs/sjP6s2MMYbx5IFf/xKR+iTmGOT2I8jtkat1vHOAZvIyygD3mffPZ0XDQp\n"
                                "1a1pqb/t2gkhN4XqLgNDQl5zZz7mlilvixSnCvU570Rf3ei1+LbogcI=\n"
                                "-----END PRIVATE KEY-----\n";
static const char issuers[] = "https://ehr.example,https://other.example";
static const char audience[] = "https://cds.example/cds-services/readmission-risk";

static EVP_PKEY *priv;
static srv_jwt *jwt;
static char dir[64], jwks_path[128], fuzz_path[128];

static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63], out[o++] = a[(v >> 6) & 63], out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18], out[o++] = a[(v >> 12) & 63], out[o++] = a[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static void put(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (n && write(fd, p, n) != (ssize_t)n) || close(fd) != 0) FAIL("cannot write '%s'", path);
}

static void cleanup(void)
{
    srv_jwt_free(jwt);
    EVP_PKEY_free(priv);
    unlink(jwks_path);
    unlink(fuzz_path);
    rmdir(dir);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "%s", "/tmp/fuzz_jwt.XXXXXX");
    if (!mkdtemp(dir)) FAIL("no temporary directory");
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", dir);
    snprintf(fuzz_path, sizeof fuzz_path, "%s/fuzzed.json", dir);
    BIO *bio = BIO_new_mem_buf(test_priv, -1);
    priv = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    BIGNUM *x = NULL, *y = NULL;
    unsigned char xb[48], yb[48];
    if (!priv || !EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_EC_PUB_X, &x) ||
        !EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_EC_PUB_Y, &y) || BN_bn2binpad(x, xb, 48) != 48 ||
        BN_bn2binpad(y, yb, 48) != 48)
        FAIL("cannot read the test key");
    BN_free(x);
    BN_free(y);
    char xs[80], ys[80], doc[512];
    b64url(xb, 48, xs);
    b64url(yb, 48, ys);
    int n = snprintf(doc, sizeof doc,
                     "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"fuzz-1\",\"alg\":\"ES384\",\"x\":\"%s\","
                     "\"y\":\"%s\"}]}",
                     xs, ys);
    put(jwks_path, doc, (size_t)n);
    px_err e = {0};
    if (!(jwt = srv_jwt_new(jwks_path, issuers, &e))) FAIL("the test JWKS does not load: %s", e.msg);
    atexit(cleanup);
}

/* header '\n' claims -> a signed compact JWS in out (NUL-terminated), or 0. */
static size_t sign(const uint8_t *data, size_t size, int flip, char *out, size_t cap)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    size_t hl = (size_t)(nl - data), cl = size - hl - 1;
    /* the claims with "NOW" replaced by the current time (at most 20 bytes for 3) */
    char *claims = malloc(cl * 7 + 1), now[24];
    if (!claims) abort();
    int nowl = snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    size_t c = 0;
    for (size_t i = 0; i < cl;) {
        if (i + 3 <= cl && memcmp(nl + 1 + i, "NOW", 3) == 0) {
            memcpy(claims + c, now, (size_t)nowl);
            c += (size_t)nowl, i += 3;
        } else {
            claims[c++] = (char)nl[1 + i++];
        }
    }
    if ((hl + c) * 4 / 3 + 200 > cap) {
        free(claims);
        return 0;
    }
    size_t o = b64url(data, hl, out);
    out[o++] = '.';
    o += b64url((const unsigned char *)claims, c, out + o);
    free(claims);
    unsigned char der[160], raw[96];
    size_t dl = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, priv) != 1 ||
        EVP_DigestSign(ctx, der, &dl, (const unsigned char *)out, o) != 1)
        FAIL("cannot sign");
    EVP_MD_CTX_free(ctx);
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
    if (!es || BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 48) != 48 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 48, 48) != 48)
        FAIL("cannot read the signature");
    ECDSA_SIG_free(es);
    if (flip) raw[size % 96] ^= (unsigned char)(1u << (size % 8));
    out[o++] = '.';
    o += b64url(raw, 96, out + o);
    return o;
}

/* Signed tokens with exp far outside [now - 60 s, now + 1 h]: refused, naming why. */
static void self_check(void)
{
    static const char *const cases[][2] = {{"1e300", "more than an hour ahead"},
                                           {"1.8446744073709552e19", "more than an hour ahead"},
                                           {"-1e300", "expired"},
                                           {"-9.3e18", "expired"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char in[512], token[1200], iss[64], why[256] = "";
        int n = snprintf(in, sizeof in,
                         "{\"alg\":\"ES384\",\"kid\":\"fuzz-1\"}\n{\"iss\":\"https://ehr.example\",\"sub\":\"c\","
                         "\"aud\":\"%s\",\"exp\":%s,\"jti\":\"self-%zu\"}",
                         audience, cases[i][0], i);
        if (!sign((const uint8_t *)in, (size_t)n, 0, token, sizeof token)) FAIL("cannot build a token");
        if (srv_jwt_check(jwt, token, audience, iss, sizeof iss, why, sizeof why) == 0 || !strstr(why, cases[i][1]))
            FAIL("a token with exp %s: '%s', not '%s'", cases[i][0], why, cases[i][1]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!jwt) setup(), self_check();
    if (size < 1 || size > 24000) return 0;
    int mode = data[0] & 3;
    data++, size--;
    if (mode == 2) {
        put(fuzz_path, data, size);
        px_err e = {0};
        srv_jwt *j = srv_jwt_new(fuzz_path, NULL, &e);
        if (!j && !e.msg[0]) FAIL("a JWKS refused without a message");
        srv_jwt_free(j);
        return 0;
    }
    char *token = malloc(size * 2 + 400);
    if (!token) abort();
    if (mode == 0) {
        memcpy(token, data, size);
        token[size] = '\0';
    } else if (!sign(data, size, mode == 3, token, size * 2 + 400)) {
        free(token);
        return 0;
    }
    char iss[256] = "", why[256] = "";
    int rc = srv_jwt_check(jwt, token, audience, iss, sizeof iss, why, sizeof why);
    if (rc == 0) {
        if (mode != 1) FAIL("a token %s was accepted", mode ? "with a flipped signature bit" : "not signed here");
        if (strcmp(iss, "https://ehr.example") != 0 && strcmp(iss, "https://other.example") != 0)
            FAIL("accepted issuer '%s'", iss);
    } else if (rc != -1 || !why[0]) {
        FAIL("refused with %d and reason '%s'", rc, why);
    }
    free(token);
    return 0;
}
