/* test_registry.c: the registry's signing and artifact layer without a database:
 * Ed25519 against the RFC 8032 test vectors, base64 against RFC 4648's, key
 * creation and its guards, and signed artifact directories refusing every kind
 * of tampering with PX_ECORRUPT and a message naming the file. */
#include "registry/internal.h"
#include "tests/unit/check.h"
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t unhex(const char *hex, unsigned char *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) out[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    return n;
}

/* RFC 8032 section 7.1, tests 1-3: secret key, public key, message, signature. */
static const char *const rfc8032[3][4] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
};

static void test_rfc8032(void)
{
    char priv[512], pub[512];
    for (int t = 0; t < 3; t++) {
        unsigned char sk[32], pk[32], msg[8], want[64], sig[64];
        unhex(rfc8032[t][0], sk);
        unhex(rfc8032[t][1], pk);
        size_t mlen = unhex(rfc8032[t][2], msg);
        unhex(rfc8032[t][3], want);
        EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, sk, 32);
        EVP_PKEY *p = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, 32);
        CHECK(k && p);
        snprintf(priv, sizeof priv, "%s/rfc%d.key", root, t);
        snprintf(pub, sizeof pub, "%s/rfc%d.pub", root, t);
        FILE *f = fopen(priv, "w");
        PEM_write_PKCS8PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
        fclose(f);
        chmod(priv, 0600);
        f = fopen(pub, "w");
        PEM_write_PUBKEY(f, p);
        fclose(f);
        px_err e = {0};
        CHECK_INT(reg_sign(priv, msg, mlen, sig, &e), 0);
        CHECK(memcmp(sig, want, 64) == 0);
        CHECK_INT(reg_verify_sig(pub, msg, mlen, want, 64, &e), 0);
        want[t * 7] ^= 1;
        CHECK_INT(reg_verify_sig(pub, msg, mlen, want, 64, &e), PX_ECORRUPT);
        want[t * 7] ^= 1;
        CHECK_INT(reg_verify_sig(pub, msg, mlen, want, 63, &e), PX_ECORRUPT);
        if (mlen) {
            msg[0] ^= 0x80;
            CHECK_INT(reg_verify_sig(pub, msg, mlen, want, 64, &e), PX_ECORRUPT);
        }
        EVP_PKEY_free(k);
        EVP_PKEY_free(p);
    }
}

static void test_base64(void)
{
    static const char *const v[][2] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},    {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char enc[32];
        unsigned char dec[32];
        reg_b64_encode((const unsigned char *)v[i][0], strlen(v[i][0]), enc);
        CHECK_STR(enc, v[i][1]);
        long n = reg_b64_decode(v[i][1], strlen(v[i][1]), dec, sizeof dec);
        CHECK_INT(n, (long)strlen(v[i][0]));
        CHECK(n >= 0 && memcmp(dec, v[i][0], (size_t)n) == 0);
    }
    unsigned char d[32];
    static const char *const bad[] = {"Zg=", "Zh==", "Zm9v\n", "=Zm9", "Zg==Zg==", "Zm9-", "Z===", "Zm=v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK_INT(reg_b64_decode(bad[i], strlen(bad[i]), d, sizeof d), -1);
    CHECK_INT(reg_b64_decode("Zm9vYmFy", 8, d, 5), -1); /* does not fit */
}

static void test_keygen(px_config *cfg)
{
    char priv[4200], pub[4200], a[4096], b[4096];
    px_err e = {0};
    struct stat st;
    CHECK_INT(reg_key_paths(cfg, priv, sizeof priv, pub, sizeof pub, &e), 0);
    CHECK_INT(px_reg_keygen(cfg, &e), 0);
    CHECK(stat(priv, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(pub, &st) == 0 && (st.st_mode & 0777) == 0644);
    read_file(priv, a, sizeof a);
    CHECK(strncmp(a, "-----BEGIN PRIVATE KEY-----\n", 28) == 0); /* PKCS#8 */
    read_file(pub, b, sizeof b);
    CHECK(strncmp(b, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
    /* idempotent: the same key afterwards */
    CHECK_INT(px_reg_keygen(cfg, &e), 0);
    char a2[4096], b2[4096];
    read_file(priv, a2, sizeof a2);
    read_file(pub, b2, sizeof b2);
    CHECK_STR(a2, a);
    CHECK_STR(b2, b);
    /* a lost public key is derived again, identically */
    unlink(pub);
    CHECK_INT(px_reg_keygen(cfg, &e), 0);
    read_file(pub, b2, sizeof b2);
    CHECK_STR(b2, b);
    /* a public key of another pair is refused */
    char other[512];
    snprintf(other, sizeof other, "%s/rfc0.pub", root);
    read_file(other, b2, sizeof b2);
    write_file(pub, b2, strlen(b2));
    px_err_clear(&e);
    CHECK_INT(px_reg_keygen(cfg, &e), PX_EIO);
    CHECK(strstr(e.msg, "does not match the signing key") != NULL);
    write_file(pub, b, strlen(b));
    /* a private key readable by others is refused */
    chmod(priv, 0644);
    unsigned char sig[64];
    px_err_clear(&e);
    CHECK_INT(reg_sign(priv, "x", 1, sig, &e), PX_ESTATE);
    CHECK(strstr(e.msg, "readable by others") != NULL);
    chmod(priv, 0600);
    /* PROGNOS_SIGNING_KEY naming a missing file is an error, not a new key */
    char missing[512];
    snprintf(missing, sizeof missing, "%s/nope.key", root);
    setenv("PROGNOS_SIGNING_KEY", missing, 1);
    px_err_clear(&e);
    CHECK_INT(px_reg_keygen(cfg, &e), PX_EIO);
    CHECK(strstr(e.msg, "PROGNOS_SIGNING_KEY") != NULL);
    CHECK(access(missing, F_OK) != 0);
    unsetenv("PROGNOS_SIGNING_KEY");
}

/* Writes a fresh signed directory <root>/home/registry/demo/<version>. */
static int make_dir(px_config *cfg, int version, char *dir, size_t dirlen, char msha[65])
{
    char tmp[4300], priv[4200], pub[4200];
    px_err e = {0};
    reg_dir(cfg, "demo", version, dir, dirlen, &e);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    char mdir[4200];
    reg_dir(cfg, "demo", 0, mdir, sizeof mdir, &e);
    px_mkdir_p(mdir, 0755, &e);
    reg_rmdir(dir, &e);
    reg_key_paths(cfg, priv, sizeof priv, pub, sizeof pub, &e);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", REG_MANIFEST_FORMAT);
    cJSON_AddStringToObject(m, "name", "demo");
    cJSON_AddNumberToObject(m, "version", version);
    reg_file files[] = {{"model.bin", (const unsigned char *)"prognos-model 1\nweights 1 2 3\n", 30},
                        {"metrics.json", (const unsigned char *)"{\"overall\":{}}\n", 15},
                        {"empty.csv", (const unsigned char *)"", 0}};
    int rc = reg_write_dir(tmp, dir, m, files, 3, priv, msha, &e);
    cJSON_Delete(m);
    return rc;
}

static int open_read(px_config *cfg, const char *dir, int version, const char *file, px_err *e)
{
    char priv[4200], pub[4200];
    reg_key_paths(cfg, priv, sizeof priv, pub, sizeof pub, e);
    reg_manifest m;
    int rc = reg_manifest_open(dir, pub, "demo", version, "cannot load", &m, e);
    if (rc != 0) return rc;
    unsigned char *d = NULL;
    size_t n = 0;
    rc = file ? reg_manifest_read(&m, dir, file, &d, &n, e) : reg_manifest_check_all(&m, dir, NULL, e);
    free(d);
    reg_manifest_release(&m);
    return rc;
}

static void test_artifacts(px_config *cfg)
{
    char dir[4200], path[4400], msha[65], msha2[65], buf[8192];
    px_err e = {0};
    CHECK_INT(make_dir(cfg, 1, dir, sizeof dir, msha), 0);
    snprintf(path, sizeof path, "%s.tmp", dir);
    CHECK(access(path, F_OK) != 0); /* renamed into place */
    /* the manifest lists the files in name order with digests, and its digest is msha */
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    size_t n = read_file(path, buf, sizeof buf);
    char got[65];
    px_sha256_hex(buf, n, got);
    CHECK_STR(got, msha);
    char *pe = strstr(buf, "\"empty.csv\""), *pm = strstr(buf, "\"metrics.json\""), *pb = strstr(buf, "\"model.bin\"");
    CHECK(pe && pm && pb && pe < pm && pm < pb);
    /* SHA-256 of the empty string */
    CHECK(strstr(buf, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") != NULL);
    /* deterministic: the same inputs give the same bytes, signature included */
    char sig1[256], sig2[256];
    snprintf(path, sizeof path, "%s/manifest.sig", dir);
    read_file(path, sig1, sizeof sig1);
    CHECK_INT((int)strlen(sig1), 89); /* 88 base64 characters and a newline */
    CHECK_INT(make_dir(cfg, 1, dir, sizeof dir, msha2), 0);
    read_file(path, sig2, sizeof sig2);
    CHECK_STR(msha2, msha);
    CHECK_STR(sig2, sig1);

    CHECK_INT(open_read(cfg, dir, 1, "model.bin", &e), 0);
    CHECK_INT(open_read(cfg, dir, 1, "empty.csv", &e), 0);
    CHECK_INT(open_read(cfg, dir, 1, NULL, &e), 0);
    CHECK_INT(open_read(cfg, dir, 1, "manifest.json", &e), PX_ENOTFOUND);
    CHECK_INT(open_read(cfg, dir, 1, "../x", &e), PX_ENOTFOUND);

    struct {
        const char *what, *expect;
    } cases[] = {
        {"flip a byte of model.bin", "model.bin failed its integrity check"},
        {"truncate model.bin", "model.bin is truncated"},
        {"append to model.bin", "model.bin is longer than signed"},
        {"delete model.bin", "model.bin is missing"},
        {"edit manifest.json", "signature mismatch"},
        {"garble manifest.sig", "manifest.sig is malformed"},
        {"sign with another key", "signature mismatch"},
        {"delete manifest.sig", "manifest.sig is missing"},
        {"extra file", "unexpected file 'notes.txt'"},
        {"version 2 signed manifest in v1", "signed for model 'demo' v2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_INT(make_dir(cfg, 1, dir, sizeof dir, msha), 0);
        char p[4400];
        switch (i) {
        case 0:
            snprintf(p, sizeof p, "%s/model.bin", dir);
            n = read_file(p, buf, sizeof buf);
            buf[5] ^= 0x01;
            write_file(p, buf, n);
            break;
        case 1:
            snprintf(p, sizeof p, "%s/model.bin", dir);
            CHECK(truncate(p, 10) == 0);
            break;
        case 2:
            snprintf(p, sizeof p, "%s/model.bin", dir);
            n = read_file(p, buf, sizeof buf);
            write_file(p, buf, n + 1);
            break;
        case 3:
            snprintf(p, sizeof p, "%s/model.bin", dir);
            unlink(p);
            break;
        case 4:
            snprintf(p, sizeof p, "%s/manifest.json", dir);
            n = read_file(p, buf, sizeof buf);
            char *at = strstr(buf, "\"version\":\t1"); /* change one character, same length */
            CHECK(at != NULL);
            if (at) at[0] = ' ';
            write_file(p, buf, n);
            break;
        case 5:
            snprintf(p, sizeof p, "%s/manifest.sig", dir);
            write_file(p, "not a signature\n", 16);
            break;
        case 6: {
            /* a valid signature of these exact bytes, by another key */
            char other[512];
            unsigned char sig[64];
            char b64[100];
            snprintf(other, sizeof other, "%s/rfc1.key", root);
            snprintf(p, sizeof p, "%s/manifest.json", dir);
            n = read_file(p, buf, sizeof buf);
            CHECK_INT(reg_sign(other, buf, n, sig, &e), 0);
            reg_b64_encode(sig, 64, b64);
            strcat(b64, "\n");
            snprintf(p, sizeof p, "%s/manifest.sig", dir);
            write_file(p, b64, strlen(b64));
            break;
        }
        case 7:
            snprintf(p, sizeof p, "%s/manifest.sig", dir);
            unlink(p);
            break;
        case 8:
            snprintf(p, sizeof p, "%s/notes.txt", dir);
            write_file(p, "hi", 2);
            break;
        case 9: {
            char d2[4200], m2[65], cmd[12000];
            CHECK_INT(make_dir(cfg, 2, d2, sizeof d2, m2), 0);
            int w = snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, d2, dir);
            CHECK(w > 0 && (size_t)w < sizeof cmd && system(cmd) == 0);
            break;
        }
        }
        px_err_clear(&e);
        int rc = open_read(cfg, dir, 1, i == 8 ? NULL : "model.bin", &e);
        if (rc != PX_ECORRUPT || !strstr(e.msg, cases[i].expect) || !strstr(e.msg, "model 'demo' v1"))
            fprintf(stderr, "case '%s': rc %d, message '%s'\n", cases[i].what, rc, e.msg);
        CHECK_INT(rc, PX_ECORRUPT);
        CHECK(strstr(e.msg, cases[i].expect) != NULL);
        CHECK(strstr(e.msg, "cannot load model 'demo' v1") != NULL);
    }
    /* a missing directory */
    reg_rmdir(dir, &e);
    px_err_clear(&e);
    CHECK_INT(open_read(cfg, dir, 1, "model.bin", &e), PX_ECORRUPT);
    CHECK(strstr(e.msg, "artifact directory") != NULL);
    /* file names that could leave the directory are refused at write time */
    cJSON *m = cJSON_CreateObject();
    reg_file evil[] = {{"../evil", (const unsigned char *)"x", 1}};
    char tmp[4300], priv[4200], pub[4200];
    reg_key_paths(cfg, priv, sizeof priv, pub, sizeof pub, &e);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    CHECK_INT(reg_write_dir(tmp, dir, m, evil, 1, priv, msha, &e), PX_EINVAL);
    CHECK(access(tmp, F_OK) != 0 && access(dir, F_OK) != 0);
    cJSON_Delete(m);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/test_registry.XXXXXX");
    if (!mkdtemp(root)) return 1;
    unsetenv("PROGNOS_SIGNING_KEY");
    px_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.home, sizeof cfg.home, "%s/home", root);
    CHECK(reg_valid_name("readmission") && reg_valid_name("a") && reg_valid_name("los_v2"));
    CHECK(!reg_valid_name("") && !reg_valid_name("1x") && !reg_valid_name("A") && !reg_valid_name("a-b") &&
          !reg_valid_name("a/b") && !reg_valid_name("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl"));
    test_base64();
    test_rfc8032();
    test_keygen(&cfg);
    test_artifacts(&cfg);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (check_failures == 0 && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", root);
    return check_report("test_registry");
}
