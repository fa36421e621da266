/* keys.c: the installation's Ed25519 signing key (OpenSSL 3 EVP), signatures over
 * manifests, and base64. The private key is PKCS#8 PEM, mode 0600, created once
 * with O_EXCL + link() so two first registrations cannot make two keys; the
 * public key is always $PROGNOS_HOME/signing.pub and must match the private key.
 * Ed25519 (RFC 8032) signatures are deterministic: same key, same bytes, same signature. */
#include "registry/internal.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX 16384

int reg_key_paths(const px_config *cfg, char *priv, size_t privlen, char *pub, size_t publen, px_err *e)
{
    const char *env = getenv("PROGNOS_SIGNING_KEY");
    int n1 = env && *env ? snprintf(priv, privlen, "%s", env) : snprintf(priv, privlen, "%s/signing.key", cfg->home);
    int n2 = snprintf(pub, publen, "%s/signing.pub", cfg->home);
    if (n1 < 0 || (size_t)n1 >= privlen || n2 < 0 || (size_t)n2 >= publen)
        return px_err_set(e, PX_EINVAL, "signing key path too long");
    return 0;
}

/* Appends OpenSSL's last error to e's detail. */
static void ssl_detail(px_err *e)
{
    unsigned long code = ERR_get_error();
    char buf[256];
    if (code) {
        ERR_error_string_n(code, buf, sizeof buf);
        px_err_detail(e, "%s", buf);
    }
    ERR_clear_error();
}

/* Loads a private key into *out (caller frees); the file must not be readable
 * by group or others. Returns 0 or PX_ESTATE / PX_EIO / PX_ENOMEM. */
static int load_private(const char *path, EVP_PKEY **out, px_err *e)
{
    unsigned char *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    struct stat st;
    int rc = 0;
    *out = NULL;
    if (stat(path, &st) != 0) {
        rc = px_err_set(e, PX_ESTATE, "cannot open the signing key '%s': %s", path, strerror(errno));
        px_err_hint(e, "run 'prognos db init' to create it, or set PROGNOS_SIGNING_KEY");
        return rc;
    }
    if ((st.st_mode & 077) != 0) {
        rc = px_err_set(e, PX_ESTATE, "signing key '%s' is readable by others", path);
        px_err_hint(e, "chmod 600 '%s'", path);
        return rc;
    }
    if ((rc = px_file_read(path, KEY_FILE_MAX, &pem, &len, e)) != 0) return rc;
    bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (!k) {
        rc = px_err_set(e, PX_ESTATE, "signing key '%s' is not a PEM private key", path);
        ssl_detail(e);
    } else if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
        rc = px_err_set(e, PX_ESTATE, "signing key '%s' is not an Ed25519 key", path);
        EVP_PKEY_free(k);
    } else {
        *out = k;
    }
    BIO_free(bio);
    OPENSSL_cleanse(pem, len);
    free(pem);
    return rc;
}

/* Loads a public key into *out (caller frees). Returns 0 or PX_ESTATE / PX_EIO. */
static int load_public(const char *path, EVP_PKEY **out, px_err *e)
{
    unsigned char *pem = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = px_file_read(path, KEY_FILE_MAX, &pem, &len, e);
    if (rc != 0) {
        if (rc == PX_ENOTFOUND) {
            rc = px_err_wrap(e, PX_ESTATE, "public signing key '%s' not found", path);
            px_err_hint(e, "run 'prognos db init', or copy the installation's signing.pub there");
        }
        return rc;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    if (!k) {
        rc = px_err_set(e, PX_ESTATE, "'%s' is not a PEM public key", path);
        ssl_detail(e);
    } else if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
        rc = px_err_set(e, PX_ESTATE, "public key '%s' is not an Ed25519 key", path);
        EVP_PKEY_free(k);
    } else {
        *out = k;
    }
    BIO_free(bio);
    free(pem);
    return rc;
}

/* PEM text of a key (private: PKCS#8, unencrypted) into *out; caller frees. */
static int pem_of(EVP_PKEY *k, int private, char **out, size_t *len, px_err *e)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *mem = NULL;
    int rc = 0;
    *out = NULL;
    if (!bio) return px_err_set(e, PX_ENOMEM, "out of memory");
    int ok = private ? PEM_write_bio_PKCS8PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_PUBKEY(bio, k);
    long n = ok ? BIO_get_mem_data(bio, &mem) : 0;
    if (!ok || n <= 0) {
        rc = px_err_set(e, PX_EIO, "cannot encode the signing key");
        ssl_detail(e);
        goto done;
    }
    *out = malloc((size_t)n);
    if (!*out) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(*out, mem, (size_t)n);
    *len = (size_t)n;
done:
    if (mem && n > 0) OPENSSL_cleanse(mem, (size_t)n);
    BIO_free(bio);
    return rc;
}

/* Writes a new private key file without ever replacing one: a temporary file
 * (0600) linked to path. Returns 0, 1 when path already existed, or PX_EIO. */
static int create_exclusive(const char *path, const char *data, size_t len, px_err *e)
{
    char tmp[4200];
    int rc = 0;
    int n = snprintf(tmp, sizeof tmp, "%s.new.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) return px_err_set(e, PX_EINVAL, "path too long: '%s'", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return px_err_set(e, PX_EIO, "cannot create '%s': %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) break;
        off += (size_t)w;
    }
    if (off < len || fsync(fd) != 0) {
        rc = px_err_set(e, PX_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        close(fd);
        goto done;
    }
    close(fd);
    if (link(tmp, path) != 0) {
        if (errno == EEXIST) rc = 1;
        else rc = px_err_set(e, PX_EIO, "cannot create '%s': %s", path, strerror(errno));
    }
done:
    unlink(tmp);
    return rc;
}

int px_reg_keygen(const px_config *cfg, px_err *e)
{
    char priv[4200], pub[4200];
    EVP_PKEY *k = NULL;
    char *pem = NULL, *pubpem = NULL;
    unsigned char *have = NULL;
    size_t pemlen = 0, publen = 0, havelen = 0;
    int rc;
    if ((rc = reg_key_paths(cfg, priv, sizeof priv, pub, sizeof pub, e)) != 0) return rc;
    if ((rc = px_mkdir_p(cfg->home, 0755, e)) != 0) return rc;
    if (access(priv, F_OK) != 0) {
        if (getenv("PROGNOS_SIGNING_KEY") && *getenv("PROGNOS_SIGNING_KEY")) {
            rc = px_err_set(e, PX_EIO, "signing key '%s' (PROGNOS_SIGNING_KEY) not found", priv);
            goto done;
        }
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        if (!k) {
            rc = px_err_set(e, PX_EIO, "cannot generate an Ed25519 key");
            ssl_detail(e);
            goto done;
        }
        if ((rc = pem_of(k, 1, &pem, &pemlen, e)) != 0) goto done;
        if ((rc = create_exclusive(priv, pem, pemlen, e)) < 0) goto done;
        rc = 0;
        EVP_PKEY_free(k); /* reload: if another process won the race, its key is the key */
        k = NULL;
    }
    if ((rc = load_private(priv, &k, e)) != 0) goto done;
    if ((rc = pem_of(k, 0, &pubpem, &publen, e)) != 0) goto done;
    rc = px_file_read(pub, KEY_FILE_MAX, &have, &havelen, e);
    if (rc == PX_ENOTFOUND) {
        rc = px_file_write_atomic(pub, pubpem, publen, 0644, e);
        goto done;
    }
    if (rc != 0) goto done;
    if (havelen != publen || memcmp(have, pubpem, publen) != 0) {
        rc = px_err_set(e, PX_EIO, "public key '%s' does not match the signing key '%s'", pub, priv);
        px_err_hint(e, "versions signed with this key would not verify; restore the matching pair, or remove "
                       "signing.pub to derive it from the key");
    }
done:
    if (pem) {
        OPENSSL_cleanse(pem, pemlen);
        free(pem);
    }
    free(pubpem);
    free(have);
    EVP_PKEY_free(k);
    return rc;
}

int reg_sign(const char *priv_path, const void *data, size_t len, unsigned char sig[REG_SIG_BYTES], px_err *e)
{
    EVP_PKEY *k = NULL;
    int rc = load_private(priv_path, &k, e);
    if (rc != 0) return rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = REG_SIG_BYTES;
    /* Ed25519 is one-shot (PureEdDSA): no digest is named, the message is signed whole */
    if (!ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, data, len) != 1 || siglen != REG_SIG_BYTES) {
        rc = px_err_set(e, PX_EIO, "cannot sign the manifest");
        ssl_detail(e);
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return rc;
}

int reg_verify_sig(const char *pub_path, const void *data, size_t len, const unsigned char *sig, size_t siglen,
                   px_err *e)
{
    EVP_PKEY *k = NULL;
    int rc = load_public(pub_path, &k, e);
    if (rc != 0) return rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) != 1) {
        rc = px_err_set(e, PX_EIO, "cannot set up signature verification");
        ssl_detail(e);
    } else if (siglen != REG_SIG_BYTES || EVP_DigestVerify(ctx, sig, siglen, data, len) != 1) {
        rc = px_err_set(e, PX_ECORRUPT, "signature mismatch");
        ERR_clear_error();
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return rc;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void reg_b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

static int b64val(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

long reg_b64_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
    if (n % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int a = b64val(in[i]), b = b64val(in[i + 1]);
        int c = in[i + 2] == '=' && last ? -2 : b64val(in[i + 2]);
        int d = in[i + 3] == '=' && last ? -2 : b64val(in[i + 3]);
        if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2)) return -1;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)(c < 0 ? 0 : c) << 6 | (unsigned)(d < 0 ? 0 : d);
        size_t k = c < 0 ? 1 : d < 0 ? 2 : 3;
        /* canonical encoding only: the unused low bits must be zero */
        if ((k == 1 && (v & 0xffff)) || (k == 2 && (v & 0xff))) return -1;
        if (o + k > outcap) return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (k > 1) out[o++] = (unsigned char)(v >> 8);
        if (k > 2) out[o++] = (unsigned char)v;
    }
    return (long)o;
}
