/* test_jwt_cache.c: the CDS clients' JWT replay cache (serve/jwt.c,
 * srv_jwt_jti_record), driven with explicit times (no clock, no sleeping).
 * - a jti is refused again until its exp plus the 60 s skew, per issuer, and
 *   may come back after that;
 * - above 3/4 of its slots the cache drops the expired values, but only once
 *   one can have expired: filled with values that are all still valid it is
 *   rebuilt once, not on every new value (it was rebuilt on each one, a scan of
 *   64K slots under the lock per request);
 * - at 7/8 of its slots, all unexpired, a new value is refused (-2), a replay
 *   is still a replay (-1), and once they expire new values are taken again;
 * - a value held through the rebuilds is still refused as a replay.
 * The JWKS is the fuzz corpus's EC key (tests/fuzz/corpus/jwt/jwks_ec, its mode
 * byte skipped): the cache needs a service, not a signature.
 * Usage: test_jwt_cache JWKS_CORPUS_FILE */
#define _GNU_SOURCE
#include "check.h"
#include "serve/internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAP 65536
#define PURGE (CAP * 3 / 4)
#define FULL (CAP * 7 / 8)
#define SKEW 60

#define SETUP(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: set-up failed: %s\n", __FILE__, __LINE__, #cond); \
    exit(1); } } while (0)

static srv_jwt *service(const char *corpus)
{
    FILE *in = fopen(corpus, "rb");
    SETUP(in != NULL);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    SETUP(n > 1 && buf[0] == 2); /* mode byte 2: a JWKS file */
    char path[] = "/tmp/test_jwt_cache.XXXXXX";
    int fd = mkstemp(path);
    SETUP(fd >= 0);
    SETUP(write(fd, buf + 1, n - 1) == (ssize_t)(n - 1));
    close(fd);
    px_err e = {0};
    srv_jwt *j = srv_jwt_new(path, NULL, &e);
    unlink(path);
    if (!j) fprintf(stderr, "srv_jwt_new: %s (%s)\n", e.msg, e.detail);
    SETUP(j != NULL);
    return j;
}

static int rec(srv_jwt *j, const char *iss, long k, int64_t exp, int64_t now)
{
    char jti[32];
    snprintf(jti, sizeof jti, "id-%ld", k);
    return srv_jwt_jti_record(j, iss, jti, exp, now);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2);
    const int64_t t0 = 1800000000; /* 2027-01-15 */
    size_t held;
    unsigned long purges;

    /* replays, expiry, issuers */
    srv_jwt *j = service(argv[1]);
    CHECK(srv_jwt_jti_record(j, "https://a", "x", t0 + 300, t0) == 0);
    CHECK(srv_jwt_jti_record(j, "https://a", "x", t0 + 300, t0 + 10) == -1);
    CHECK(srv_jwt_jti_record(j, "https://a", "x", t0 + 300, t0 + 300 + SKEW) == -1); /* within the skew */
    CHECK(srv_jwt_jti_record(j, "https://b", "x", t0 + 300, t0 + 10) == 0);          /* another issuer */
    CHECK(srv_jwt_jti_record(j, "https://a", "x", t0 + 900, t0 + 300 + SKEW + 1) == 0); /* expired: again */
    CHECK(srv_jwt_jti_record(j, "https://a", "x", t0 + 900, t0 + 400) == -1);
    srv_jwt_free(j);

    /* filled with values that all stay valid: one rebuild, then refused at 7/8 */
    j = service(argv[1]);
    const int64_t keep_exp = t0 + 3600;
    CHECK(srv_jwt_jti_record(j, "https://a", "kept", keep_exp + 3600, t0) == 0);
    long k = 0;
    int rc = 0;
    for (; k < CAP && (rc = rec(j, "https://a", k, keep_exp, t0 + k / 1000)) == 0; k++) {}
    srv_jwt_jti_stats(j, &held, &purges);
    printf("filled: %ld values taken, then %d; %zu held, %lu rebuilds\n", k, rc, held, purges);
    CHECK_INT(rc, -2);
    CHECK_INT(held, FULL);
    CHECK_INT(k, FULL - 1);         /* "kept" is the first */
    CHECK_INT(purges, 1);           /* once, crossing 3/4: none of them could have expired since */
    CHECK(rec(j, "https://a", 5, keep_exp, t0 + 100) == -1);   /* a replay is still a replay */
    CHECK(srv_jwt_jti_record(j, "https://a", "kept", keep_exp, t0 + 100) == -1);

    /* once they expire (exp + skew), the next value drops them and is taken */
    const int64_t later = keep_exp + SKEW + 1;
    CHECK(rec(j, "https://a", CAP + 1, later + 600, later) == 0);
    srv_jwt_jti_stats(j, &held, &purges);
    printf("after expiry: %zu held, %lu rebuilds\n", held, purges);
    CHECK_INT(purges, 2);
    CHECK_INT(held, 2);             /* "kept" (exp an hour later) and the new one */
    CHECK(srv_jwt_jti_record(j, "https://a", "kept", keep_exp + 3600, later) == -1);
    CHECK(rec(j, "https://a", 7, later + 600, later) == 0);   /* an expired id may come again */
    srv_jwt_free(j);
    if (!check_failures)
        printf("ok - JWT replay cache: replays refused per issuer until exp + skew; rebuilt once when full of valid ids; "
               "new ids refused at 7/8 until some expire\n");
    return check_report("test_jwt_cache");
}
