/* test_pseudo.c: HMAC pseudonyms against Python's hmac (test_pseudo_ref.py),
 * normalization (formatting differences link, domains separate), and the key
 * file rules (created 0600, refused when readable by others, refused if corrupt). */
#include "engine/engine.h"
#include "check.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { px_id_kind kind; const char *value, *expect; } ref[] = {
    /* from tests/unit/test_pseudo_ref.py; key = bytes 0x00..0x1f */
    {PX_ID_SSN, "123-45-6789", "359296a1d68d1b998395f04bb523ffb9"},
    {PX_ID_SSN, " 123456789 ", "359296a1d68d1b998395f04bb523ffb9"},
    {PX_ID_PATIENT, "00016F745862898F", "1ffb18772f10c093ab360c6cf8d29382"},
    {PX_ID_NAME, "Smith", "22b8489296f9c07cd7f5b5be09a1184d"},
    {PX_ID_EMAIL, "Jane.Doe@example.org", "061a413f2e717d88d553f0c3c2e7b6ca"},
    {PX_ID_PHONE, "(555) 123-4567", "5ae28429061dca9eb38f412333927a53"},
    {PX_ID_ENCOUNTER, "E1", "df0fa6d07a455fb68c03cd5bcb3fc5b2"},
};

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

int main(void)
{
    char dir[] = "/tmp/px_pseudo_XXXXXX";
    char path[256];
    px_err e = {0};
    if (!mkdtemp(dir)) return 1;

    snprintf(path, sizeof path, "%s/fixed.key", dir);
    write_file(path, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0600);
    px_pseudo *p = px_pseudo_load(path, &e);
    CHECK(p != NULL);
    if (p) {
        char out[33];
        for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
            px_pseudo_id(p, ref[i].kind, ref[i].value, strlen(ref[i].value), out);
            CHECK_STR(out, ref[i].expect);
        }
        /* same digits, different identifier kinds: unrelated pseudonyms */
        char a[33], b[33];
        px_pseudo_id(p, PX_ID_SSN, "123456789", 9, a);
        px_pseudo_id(p, PX_ID_MRN, "123456789", 9, b);
        CHECK(strcmp(a, b) != 0);
        /* never the plain SHA-256 of the value */
        CHECK(strncmp(a, "15e2b0d3c33891ebb0f1ef609ec41942", 32) != 0);
    }
    px_pseudo_free(p);
    px_pseudo_free(NULL);

    /* keygen: mode 0600, 64 hex digits, a second keygen keeps the first key */
    snprintf(path, sizeof path, "%s/new.key", dir);
    CHECK_INT(px_pseudo_keygen(path, &e), 0);
    struct stat st;
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    CHECK_INT(st.st_size, 65);
    p = px_pseudo_load(path, &e);
    char k1[33], k2[33];
    px_pseudo_id(p, PX_ID_SSN, "1", 1, k1);
    px_pseudo_free(p);
    CHECK_INT(px_pseudo_keygen(path, &e), 0);
    p = px_pseudo_load(path, &e);
    px_pseudo_id(p, PX_ID_SSN, "1", 1, k2);
    px_pseudo_free(p);
    CHECK_STR(k1, k2);

    /* refused: group/other-readable key, wrong length, non-hex, missing */
    chmod(path, 0644);
    px_err_clear(&e);
    CHECK(px_pseudo_load(path, &e) == NULL);
    CHECK(strstr(e.msg, "readable by others") != NULL);
    snprintf(path, sizeof path, "%s/short.key", dir);
    write_file(path, "abcd\n", 0600);
    CHECK(px_pseudo_load(path, &e) == NULL);
    CHECK_INT(e.code, PX_ECORRUPT);
    snprintf(path, sizeof path, "%s/nothex.key", dir);
    write_file(path, "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0600);
    CHECK(px_pseudo_load(path, &e) == NULL);
    CHECK_INT(e.code, PX_ECORRUPT);
    snprintf(path, sizeof path, "%s/missing.key", dir);
    CHECK(px_pseudo_load(path, &e) == NULL);
    CHECK_INT(e.code, PX_ESTATE);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return check_report("test_pseudo");
}
