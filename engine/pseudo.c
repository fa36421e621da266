/* pseudo.c: keyed pseudonyms for identifiers (HMAC-SHA256, RFC 2104).
 * The key never leaves this process and the key file; the inner and outer
 * padded key blocks are precomputed once so that each pseudonym costs two
 * SHA-256 compressions of the message plus two of the pads. */
#include "engine/internal.h"
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_BYTES 32

struct px_pseudo {
    SHA256_CTX inner, outer; /* states after absorbing key^ipad, key^opad */
};

/* SHA256_* are deprecated in OpenSSL 3 in favour of EVP, but EVP allocates per
 * call and cannot snapshot a state as cheaply; the low-level API is still shipped. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static const char *const domain[PX_ID__COUNT] = {
    "patient", "encounter", "ssn", "mrn", "name", "phone", "email",
};

int px_pseudo_keygen(const char *path, px_err *e)
{
    if (access(path, F_OK) == 0) return 0;
    unsigned char key[KEY_BYTES];
    char hex[KEY_BYTES * 2 + 2];
    if (RAND_bytes(key, sizeof key) != 1) return px_err_set(e, PX_EIO, "cannot get random bytes for the key");
    for (int i = 0; i < KEY_BYTES; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
    hex[KEY_BYTES * 2] = '\n';
    hex[KEY_BYTES * 2 + 1] = '\0';
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        if (errno == EEXIST) return 0;
        return px_err_set(e, PX_EIO, "cannot create key file '%s': %s", path, strerror(errno));
    }
    ssize_t w = write(fd, hex, KEY_BYTES * 2 + 1);
    int ok = w == KEY_BYTES * 2 + 1 && fsync(fd) == 0;
    close(fd);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(hex, sizeof hex);
    if (!ok) {
        unlink(path);
        return px_err_set(e, PX_EIO, "cannot write key file '%s'", path);
    }
    px_log(PX_LOG_INFO, "created pseudonymization key %s", path);
    return 0;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

px_pseudo *px_pseudo_load(const char *path, px_err *e)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        px_err_set(e, PX_ESTATE, "cannot open the pseudonymization key '%s': %s", path, strerror(errno));
        px_err_hint(e, "run 'prognos db init' to create it, or set PROGNOS_KEY_FILE");
        return NULL;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        close(fd);
        px_err_set(e, PX_ESTATE, "key file '%s' is readable by others", path);
        px_err_hint(e, "chmod 600 '%s'", path);
        return NULL;
    }
    char hex[KEY_BYTES * 2 + 8];
    ssize_t n = read(fd, hex, sizeof hex - 1);
    close(fd);
    while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r' || hex[n - 1] == ' ')) n--;
    unsigned char key[KEY_BYTES];
    if (n != KEY_BYTES * 2) {
        px_err_set(e, PX_ECORRUPT, "key file '%s' is not 64 hex digits", path);
        return NULL;
    }
    for (int i = 0; i < KEY_BYTES; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            px_err_set(e, PX_ECORRUPT, "key file '%s' is not 64 hex digits", path);
            return NULL;
        }
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    px_pseudo *p = calloc(1, sizeof *p);
    if (!p) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        return NULL;
    }
    unsigned char ipad[SHA256_CBLOCK], opad[SHA256_CBLOCK];
    memset(ipad, 0x36, sizeof ipad);
    memset(opad, 0x5c, sizeof opad);
    for (int i = 0; i < KEY_BYTES; i++) {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    SHA256_Init(&p->inner);
    SHA256_Update(&p->inner, ipad, sizeof ipad);
    SHA256_Init(&p->outer);
    SHA256_Update(&p->outer, opad, sizeof opad);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
    OPENSSL_cleanse(hex, sizeof hex);
    return p;
}

void px_pseudo_free(px_pseudo *p)
{
    if (!p) return;
    OPENSSL_cleanse(p, sizeof *p);
    free(p);
}

/* Canonical form of an identifier before hashing, so that trivial formatting
 * differences ("123-45-6789" vs "123456789", "Smith" vs "SMITH ") link. */
static size_t normalize(px_id_kind kind, const char *v, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    while (len && isspace((unsigned char)*v)) v++, len--;
    while (len && isspace((unsigned char)v[len - 1])) len--;
    for (size_t i = 0; i < len && o < cap; i++) {
        unsigned char ch = (unsigned char)v[i];
        switch (kind) {
        case PX_ID_SSN:
        case PX_ID_PHONE:
            if (isdigit(ch)) out[o++] = (char)ch;
            break;
        case PX_ID_NAME:
        case PX_ID_EMAIL:
            out[o++] = (char)tolower(ch);
            break;
        default:
            out[o++] = (char)ch;
        }
    }
    return o;
}

void px_pseudo_id(const px_pseudo *p, px_id_kind kind, const char *value, size_t len, char out[33])
{
    static const char hexd[] = "0123456789abcdef";
    char norm[512];
    size_t n = normalize(kind, value, len, norm, sizeof norm);
    unsigned char inner[SHA256_DIGEST_LENGTH], mac[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = p->inner;
    SHA256_Update(&c, domain[kind], strlen(domain[kind]));
    SHA256_Update(&c, ":", 1);
    SHA256_Update(&c, norm, n);
    SHA256_Final(inner, &c);
    c = p->outer;
    SHA256_Update(&c, inner, sizeof inner);
    SHA256_Final(mac, &c);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexd[mac[i] >> 4];
        out[2 * i + 1] = hexd[mac[i] & 15];
    }
    out[32] = '\0';
    /* the plaintext (and the hash state that holds its last block) does not stay on the stack */
    OPENSSL_cleanse(norm, n);
    OPENSSL_cleanse(&c, sizeof c);
    OPENSSL_cleanse(inner, sizeof inner);
    OPENSSL_cleanse(mac, sizeof mac);
}
