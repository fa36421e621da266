/* etl_hash.c: the keys and digests of the ETL: pseudonyms (HMAC under the
 * installation key), digests of plain keys, provider keys, the per-file
 * duplicate sets, and the SHA-256 of each input, taken before the load
 * (etl_sha256_file) and again over the bytes the parser reads (etl_hash_*), so
 * that a file changed during its load fails the batch. Calls nothing else of
 * the ETL. */
#include "engine/etl_int.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- pseudonyms and digests -------------------------------------------------- */

void etl_pseudo(etl_ctx *x, px_id_kind kind, const char *v, size_t len, unsigned char bin[16], char hex[33])
{
    px_pseudo_id(x->ps, kind, v, len, hex);
    for (int i = 0; i < 16; i++) {
        int hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
        int lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;
        bin[i] = (unsigned char)(hi << 4 | lo);
    }
}

void etl_digest(const char *domain, const char *v, size_t len, unsigned char out[16])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, domain, strlen(domain));
    EVP_DigestUpdate(c, ":", 1);
    EVP_DigestUpdate(c, v, len);
    EVP_DigestFinal_ex(c, md, &n);
    EVP_MD_CTX_free(c);
    memcpy(out, md, 16);
}

void etl_provider_key(const char *v, size_t len, unsigned char out[16])
{
    memset(out, 0, 16);
    if (len <= 15) {
        out[0] = (unsigned char)len;
        memcpy(out + 1, v, len);
        return;
    }
    etl_digest("provider", v, len, out);
    out[0] |= 0x80; /* never a length of 0-15 */
}

int etl_uuid_key(const char *s, unsigned char out[16])
{
    int k = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '-') continue;
        int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (v < 0 || k >= 32) return -1;
        if (k % 2 == 0) out[k / 2] = (unsigned char)(v << 4);
        else out[k / 2] |= (unsigned char)v;
        k++;
    }
    return k == 32 ? 0 : -1;
}

static void hash_tap(void *ctx, const void *buf, size_t n)
{
    EVP_DigestUpdate((EVP_MD_CTX *)ctx, buf, n);
}

int etl_hash_begin(etl_ctx *x, px_csv *csv)
{
    EVP_MD_CTX_free(x->md);
    if (!(x->md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1)
        return px_err_set(x->e, PX_ENOMEM, "cannot start a SHA-256 digest");
    px_csv_set_tap(csv, hash_tap, x->md);
    return 0;
}

int etl_hash_end(etl_ctx *x, px_csv *csv)
{
    unsigned char d[32];
    char hex[65];
    EVP_DigestFinal_ex(x->md, d, NULL);
    EVP_MD_CTX_free(x->md);
    x->md = NULL;
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (!x->in->sha[0]) {
        memcpy(x->in->sha, hex, 65);
        x->in->bytes = px_csv_bytes(csv);
        return 0;
    }
    if (strcmp(hex, x->in->sha) != 0) {
        px_err_set(x->e, PX_ECORRUPT, "'%s' changed while it was being loaded; nothing was stored", x->in->name);
        px_err_hint(x->e, "load it again once whatever writes it has finished");
        return PX_ECORRUPT;
    }
    return 0;
}

int etl_seen(etl_ctx *x, px_keymap *seen, const char *domain, const char *key, size_t len)
{
    unsigned char k[16];
    int existed = 0;
    etl_digest(domain, key, len, k);
    if (!px_keymap_put(seen, k, &existed)) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    return existed;
}


int etl_sha256_file(const char *path, char hex[65], long long *bytes, px_err *e)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    static __thread unsigned char buf[1 << 20];
    ssize_t n;
    *bytes = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        EVP_DigestUpdate(c, buf, (size_t)n);
        *bytes += n;
    }
    close(fd);
    unsigned char md[32];
    EVP_DigestFinal_ex(c, md, NULL);
    EVP_MD_CTX_free(c);
    if (n < 0) return px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(errno));
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

