/* jwt.c: the CDS Hooks 2.0 client authentication ("Trusting CDS Clients"). A
 * CDS client sends Authorization: Bearer <JWT> signed with its private key
 * (ES384 or RS384); the service checks the signature against the client's
 * public keys (a JWKS file given with --cds-jwks, keys chosen by kid), then
 * the claims: iss (one of --cds-issuers when given), sub present, aud equal to
 * the URL of the service endpoint being invoked, exp in the future (60 s of
 * clock skew allowed; at most an hour ahead, which bounds the replay cache),
 * and jti never seen before from that issuer until its exp has passed. Every
 * refusal is a 401 naming the reason; no token is logged. */
#include "serve/internal.h"
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JWT_MAX_KEYS 64
#define JWT_SKEW_S 60
#define JWT_MAX_AHEAD_S 3600
#define JTI_CAP 65536 /* slots for seen jti values (each held until its exp) */
#define JTI_PURGE (JTI_CAP * 3 / 4) /* above this many held, the expired are dropped */
#define JTI_FULL (JTI_CAP * 7 / 8)  /* this many unexpired held: new ones refused */

typedef struct jwt_key {
    char kid[128];
    int ec;              /* 1: EC P-384 (ES384); 0: RSA (RS384) */
    EVP_PKEY *pkey;
} jwt_key;

typedef struct jti_seen {
    unsigned char h[32]; /* SHA-256 of iss, NUL, jti */
    int64_t exp;         /* 0: empty slot */
} jti_seen;

struct srv_jwt {
    jwt_key keys[JWT_MAX_KEYS];
    size_t nkeys;
    char **issuers;      /* NULL: any */
    pthread_mutex_t mu;
    jti_seen *seen;      /* open addressing, JTI_CAP slots */
    size_t nseen;
    int64_t purge_at;    /* no held value can have expired before this time */
    unsigned long purges;
};

/* base64url without padding into out (cap bytes); returns the length or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i], v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '-') v = 62;
        else if (c == '_') v = 63;
        else if (c == '=' && i + 2 >= n) break; /* tolerated padding at the end */
        else return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap) return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}

static EVP_PKEY *key_from_jwk(const cJSON *k, int *ec, px_err *e)
{
    const char *kty = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "kty"));
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *n = NULL, *ex = NULL;
    unsigned char a[1024], b[1024];
    if (!bld) goto done;
    if (kty && strcmp(kty, "EC") == 0) {
        const char *crv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "crv"));
        const char *x = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "x"));
        const char *y = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "y"));
        if (!crv || strcmp(crv, "P-384") != 0 || !x || !y) {
            px_err_set(e, PX_EINVAL, "an EC key must be P-384 with x and y (ES384)");
            goto done;
        }
        long lx = b64url_decode(x, strlen(x), a + 1, 48), ly = b64url_decode(y, strlen(y), b, 48);
        if (lx != 48 || ly != 48) {
            px_err_set(e, PX_EINVAL, "an EC key's x and y must be 48 bytes each");
            goto done;
        }
        a[0] = 4; /* uncompressed point */
        memcpy(a + 49, b, 48);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "secp384r1", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, a, 97))
            goto done;
        *ec = 1;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else if (kty && strcmp(kty, "RSA") == 0) {
        const char *ns = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "n"));
        const char *es = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "e"));
        long ln = ns ? b64url_decode(ns, strlen(ns), a, sizeof a) : -1;
        long le = es ? b64url_decode(es, strlen(es), b, 16) : -1;
        if (ln < 256 || le < 1) {
            px_err_set(e, PX_EINVAL, "an RSA key needs n (2048 bits or more) and e");
            goto done;
        }
        n = BN_bin2bn(a, (int)ln, NULL);
        ex = BN_bin2bn(b, (int)le, NULL);
        if (!n || !ex || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, ex))
            goto done;
        *ec = 0;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else {
        px_err_set(e, PX_EINVAL, "key type '%s' is not supported (EC P-384 or RSA)", kty ? kty : "(none)");
        goto done;
    }
    if (!ctx || !(params = OSSL_PARAM_BLD_to_param(bld)) || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        px_err_set(e, PX_EINVAL, "OpenSSL refused the key");
        pkey = NULL;
    }
done:
    if (!pkey && !e->code) px_err_set(e, PX_ENOMEM, "out of memory reading a key");
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(ex);
    return pkey;
}

srv_jwt *srv_jwt_new(const char *jwks_path, const char *issuers, px_err *e)
{
    unsigned char *text = NULL;
    size_t len = 0;
    if (px_file_read(jwks_path, 1u << 20, &text, &len, e) != 0) {
        px_err_hint(e, "--cds-jwks needs a readable JWKS file ({\"keys\": [...]})");
        return NULL;
    }
    srv_jwt *j = calloc(1, sizeof *j);
    cJSON *doc = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    if (!j || !(j->seen = calloc(JTI_CAP, sizeof *j->seen))) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&j->mu, NULL);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, "keys"), *k;
    if (!cJSON_IsArray(keys) || cJSON_GetArraySize(keys) == 0) {
        px_err_set(e, PX_EINVAL, "--cds-jwks '%s' is not a JWKS with keys", jwks_path);
        goto fail;
    }
    cJSON_ArrayForEach(k, keys)
    {
        if (j->nkeys == JWT_MAX_KEYS) {
            px_err_set(e, PX_EINVAL, "--cds-jwks '%s' has more than %d keys", jwks_path, JWT_MAX_KEYS);
            goto fail;
        }
        jwt_key *jk = &j->keys[j->nkeys];
        const char *kid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "kid"));
        if (!kid || strlen(kid) >= sizeof jk->kid) {
            px_err_set(e, PX_EINVAL, "key %zu of '%s' has no kid (or one over 127 bytes)", j->nkeys, jwks_path);
            goto fail;
        }
        snprintf(jk->kid, sizeof jk->kid, "%s", kid);
        if (!(jk->pkey = key_from_jwk(k, &jk->ec, e))) {
            px_err_detail(e, "key '%s' of %s", kid, jwks_path);
            goto fail;
        }
        j->nkeys++;
    }
    if (issuers && *issuers) {
        size_t n = 1;
        for (const char *p = issuers; *p; p++) n += *p == ',';
        if (!(j->issuers = calloc(n + 1, sizeof *j->issuers))) {
            px_err_set(e, PX_ENOMEM, "out of memory");
            goto fail;
        }
        size_t m = 0;
        for (const char *p = issuers; *p;) {
            const char *c = strchr(p, ',');
            size_t l = c ? (size_t)(c - p) : strlen(p);
            if (l && !(j->issuers[m++] = strndup(p, l))) {
                px_err_set(e, PX_ENOMEM, "out of memory");
                goto fail;
            }
            if (!c) break;
            p = c + 1;
        }
    }
    cJSON_Delete(doc);
    return j;
fail:
    cJSON_Delete(doc);
    srv_jwt_free(j);
    return NULL;
}

void srv_jwt_free(srv_jwt *j)
{
    if (!j) return;
    for (size_t i = 0; i < j->nkeys; i++) EVP_PKEY_free(j->keys[i].pkey);
    if (j->issuers)
        for (char **p = j->issuers; *p; p++) free(*p);
    free(j->issuers);
    if (j->seen) pthread_mutex_destroy(&j->mu);
    free(j->seen);
    free(j);
}

/* Verifies sig over data with key (ES384: raw r||s as JWS has it). 1 if valid. */
static int verify(const jwt_key *k, const char *data, size_t n, const unsigned char *sig, size_t siglen)
{
    unsigned char der[160];
    const unsigned char *s = sig;
    size_t slen = siglen;
    if (k->ec) { /* JWS's 96 raw bytes to the DER ECDSA-Sig-Value OpenSSL verifies */
        if (siglen != 96) return 0;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 48, NULL), *ss = BN_bin2bn(sig + 48, 48, NULL);
        if (!es || !r || !ss || !ECDSA_SIG_set0(es, r, ss)) {
            ECDSA_SIG_free(es);
            BN_free(r);
            BN_free(ss);
            return 0;
        }
        unsigned char *p = der;
        int dl = i2d_ECDSA_SIG(es, NULL);
        if (dl <= 0 || (size_t)dl > sizeof der) {
            ECDSA_SIG_free(es);
            return 0;
        }
        i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);
        s = der;
        slen = (size_t)dl;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha384(), NULL, k->pkey) == 1 &&
             EVP_DigestVerify(ctx, s, slen, (const unsigned char *)data, n) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Records (iss, jti) until exp (plus the clock skew). 0; -1 when it was seen and
 * has not expired (a replay); -2 when JTI_FULL unexpired values are held.
 *
 * The slots are an open-addressing table. Above JTI_PURGE held values the expired
 * ones are dropped (the table rebuilt), but only once one can have expired
 * (purge_at: the earliest exp held, plus the skew): a table full of values that
 * are all still valid is not rebuilt on every new one, which cost a 64K-slot scan
 * per request under the lock. Refused from JTI_FULL on, so that probes stay short;
 * a value is held at most an hour and a minute (exp at most an hour ahead). */
int srv_jwt_jti_record(srv_jwt *j, const char *iss, const char *jti, int64_t exp, int64_t now)
{
    unsigned char h[32];
    unsigned int hl = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, iss, strlen(iss) + 1) == 1 && EVP_DigestUpdate(ctx, jti, strlen(jti)) == 1 &&
             EVP_DigestFinal_ex(ctx, h, &hl) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) return -1;
    pthread_mutex_lock(&j->mu);
    size_t m = JTI_CAP - 1, i;
    if (j->nseen > JTI_PURGE && now >= j->purge_at) { /* drop the expired (rehash the rest) */
        jti_seen *old = j->seen;
        jti_seen *fresh = calloc(JTI_CAP, sizeof *fresh);
        if (fresh) {
            j->nseen = 0;
            j->purge_at = INT64_MAX;
            for (size_t q = 0; q <= m; q++) {
                if (!old[q].exp || old[q].exp + JWT_SKEW_S < now) continue;
                uint64_t x;
                memcpy(&x, old[q].h, 8);
                for (i = (size_t)x & m; fresh[i].exp; i = (i + 1) & m) {}
                fresh[i] = old[q];
                j->nseen++;
                if (old[q].exp + JWT_SKEW_S + 1 < j->purge_at) j->purge_at = old[q].exp + JWT_SKEW_S + 1;
            }
            free(old);
            j->seen = fresh;
            j->purges++;
        }
    }
    int rc = 0;
    uint64_t x;
    memcpy(&x, h, 8);
    for (i = (size_t)x & m; j->seen[i].exp; i = (i + 1) & m)
        if (memcmp(j->seen[i].h, h, 32) == 0) break;
    if (j->seen[i].exp) { /* seen: a replay unless it has expired, then held again */
        if (j->seen[i].exp + JWT_SKEW_S >= now) rc = -1;
        else j->seen[i].exp = exp;
    } else if (j->nseen >= JTI_FULL) {
        rc = -2;
    } else {
        memcpy(j->seen[i].h, h, 32);
        j->seen[i].exp = exp;
        j->nseen++;
    }
    if (rc == 0 && exp + JWT_SKEW_S + 1 < j->purge_at) j->purge_at = exp + JWT_SKEW_S + 1;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void srv_jwt_jti_stats(srv_jwt *j, size_t *held, unsigned long *purges)
{
    pthread_mutex_lock(&j->mu);
    *held = j->nseen;
    *purges = j->purges;
    pthread_mutex_unlock(&j->mu);
}
int srv_jwt_check(srv_jwt *j, const char *token, const char *audience, char *iss_out, size_t iss_len, char *why,
                  size_t whylen)
{
#define FAIL(...) return snprintf(why, whylen, __VA_ARGS__), -1
    size_t tl = strlen(token);
    const char *d1 = memchr(token, '.', tl), *d2 = d1 ? memchr(d1 + 1, '.', tl - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || tl > 16384) FAIL("the bearer token is not a JWT (header.payload.signature)");
    unsigned char head[1024], body[8192], sig[1024];
    long hl = b64url_decode(token, (size_t)(d1 - token), head, sizeof head - 1);
    long bl = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), body, sizeof body - 1);
    long sl = b64url_decode(d2 + 1, tl - (size_t)(d2 + 1 - token), sig, sizeof sig);
    if (hl <= 0 || bl <= 0 || sl <= 0) FAIL("the JWT is not base64url");
    head[hl] = body[bl] = '\0';
    /* the token's JSON is the client's: parsed by malloc'd cJSON, not the request's arena */
    srv_arena_use(NULL);
    cJSON *h = cJSON_ParseWithLength((const char *)head, (size_t)hl);
    cJSON *c = cJSON_ParseWithLength((const char *)body, (size_t)bl);
    int rc = -1;
    const char *alg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(h, "alg"));
    const char *kid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(h, "kid"));
    const jwt_key *key = NULL;
    if (!h || !c || !cJSON_IsObject(c)) {
        snprintf(why, whylen, "the JWT's header or payload is not JSON");
        goto done;
    }
    if (!alg || (strcmp(alg, "ES384") != 0 && strcmp(alg, "RS384") != 0)) {
        snprintf(why, whylen, "the JWT's alg must be ES384 or RS384");
        goto done;
    }
    for (size_t i = 0; i < j->nkeys && !key; i++)
        if (kid && strcmp(j->keys[i].kid, kid) == 0) key = &j->keys[i];
    if (!key) {
        snprintf(why, whylen, "no key with the JWT's kid in the configured JWKS");
        goto done;
    }
    if (key->ec != (alg[0] == 'E')) {
        snprintf(why, whylen, "the JWT's alg does not match its key's type");
        goto done;
    }
    if (!verify(key, token, (size_t)(d2 - token), sig, (size_t)sl)) {
        snprintf(why, whylen, "the JWT's signature is not valid");
        goto done;
    }
    const char *iss = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "iss"));
    const char *sub = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "sub"));
    const char *jti = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "jti"));
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(c, "aud");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(c, "exp");
    if (!iss || !*iss || !sub || !*sub || !jti || !*jti || !aud || !cJSON_IsNumber(exp)) {
        snprintf(why, whylen, "the JWT needs iss, sub, aud, exp and jti");
        goto done;
    }
    if (j->issuers) {
        int ok = 0;
        for (char **p = j->issuers; *p && !ok; p++) ok = strcmp(*p, iss) == 0;
        if (!ok) {
            snprintf(why, whylen, "the JWT's issuer is not one this service trusts");
            goto done;
        }
    }
    int aud_ok = 0;
    if (cJSON_IsString(aud)) aud_ok = strcmp(aud->valuestring, audience) == 0;
    else if (cJSON_IsArray(aud)) {
        const cJSON *a;
        cJSON_ArrayForEach(a, aud) aud_ok |= cJSON_IsString(a) && strcmp(a->valuestring, audience) == 0;
    }
    if (!aud_ok) {
        snprintf(why, whylen, "the JWT's aud is not this service's URL (%.200s)", audience);
        goto done;
    }
    /* compared as doubles: exp is the client's number (1e300, -1e300), and only
     * one in [now - skew, now + an hour] is converted to an integer */
    int64_t now = (int64_t)time(NULL), ex;
    if (!(exp->valuedouble + JWT_SKEW_S >= (double)now)) {
        snprintf(why, whylen, "the JWT has expired");
        goto done;
    }
    if (exp->valuedouble > (double)(now + JWT_MAX_AHEAD_S)) {
        snprintf(why, whylen, "the JWT's exp is more than an hour ahead");
        goto done;
    }
    ex = (int64_t)exp->valuedouble;
    int seen = strlen(jti) > 256 ? -1 : srv_jwt_jti_record(j, iss, jti, ex, now);
    if (seen == -2) {
        snprintf(why, whylen, "the service holds %d unexpired JWT ids, its limit: new ones are refused until some expire",
                 JTI_FULL);
        goto done;
    }
    if (seen != 0) {
        snprintf(why, whylen, "the JWT's jti was used before (a replay)");
        goto done;
    }
    snprintf(iss_out, iss_len, "%s", iss);
    rc = 0;
done:
    cJSON_Delete(h);
    cJSON_Delete(c);
    return rc;
#undef FAIL
}
