/* auth.c: API keys. A key is "pxk_<id>_<secret>" with 256 random bits of secret;
 * serve.api_keys keeps the id, role and SHA-256 of the secret, never the secret.
 * A fast hash is the right one here: the secret is random, not a password, so
 * there is nothing to guess. Requests are checked against an in-memory copy of
 * the active keys (refreshed by the poller), comparing digests in constant time. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[] = {"", "predict", "read", "admin"};

const char *px_key_role_name(px_key_role r)
{
    return r >= PX_KEY_PREDICT && r <= PX_KEY_ADMIN ? role_names[r] : "?";
}

int px_key_role_parse(const char *s, px_key_role *r)
{
    for (int i = PX_KEY_PREDICT; i <= PX_KEY_ADMIN; i++)
        if (s && strcmp(s, role_names[i]) == 0) {
            *r = (px_key_role)i;
            return 0;
        }
    return PX_EINVAL;
}

/* admin may do everything; predict and read only their own routes */
int srv_role_allows(px_key_role have, px_key_role need)
{
    return have == PX_KEY_ADMIN || have == need;
}

/* SHA-256 fetched once: OpenSSL 3 looks an algorithm up by name on every
 * EVP_sha256() use, which is most of the cost of hashing 43 bytes */
static EVP_MD *g_sha256;
static pthread_once_t g_sha256_once = PTHREAD_ONCE_INIT;
static void fetch_sha256(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static int sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    pthread_once(&g_sha256_once, fetch_sha256);
    return EVP_Digest(data, len, out, &n, g_sha256 ? g_sha256 : EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int is_hex_id(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hexval((unsigned char)s[i]) < 0) return 0;
    return 1;
}

static void base64url(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[(acc >> bits) & 63];
        }
    }
    if (bits > 0) out[o++] = tab[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int px_key_create(PGconn *c, const char *name, px_key_role role, char *key, size_t keylen, char id[13], px_err *e)
{
    unsigned char idb[6], sec[32], digest[32];
    char secret[48], digest_hex[65];
    PGresult *r = NULL;
    int rc = 0;
    if (keylen < PX_KEY_LEN + 1) return px_err_set(e, PX_EINVAL, "key buffer too small");
    if (role < PX_KEY_PREDICT || role > PX_KEY_ADMIN) return px_err_set(e, PX_EINVAL, "unknown key role");
    if (!name) name = "";
    if (strlen(name) > 200) return px_err_set(e, PX_EINVAL, "key name too long (at most 200 bytes)");
    if (RAND_bytes(idb, sizeof idb) != 1 || RAND_bytes(sec, sizeof sec) != 1)
        return px_err_set(e, PX_EIO, "cannot create an API key: no randomness from OpenSSL");
    to_hex(idb, sizeof idb, id);
    base64url(sec, sizeof sec, secret);   /* 43 characters */
    if (sha256(secret, strlen(secret), digest) != 0) {
        rc = px_err_set(e, PX_EIO, "cannot create an API key: SHA-256 failed");
        goto done;
    }
    to_hex(digest, sizeof digest, digest_hex);
    const char *vals[4] = {id, name, px_key_role_name(role), digest_hex};
    char what[64];
    snprintf(what, sizeof what, "cannot store API key '%s'", id);
    if ((rc = px_db_query(c, e, what, NULL,
                          "WITH k AS (INSERT INTO serve.api_keys (key_id, name, role, secret_sha256)"
                          " VALUES ($1, $2, $3, $4) RETURNING key_id, role, name)"
                          " INSERT INTO audit.events (action, object, detail)"
                          " SELECT 'serve.key_create', key_id, jsonb_build_object('role', role, 'name', name) FROM k",
                          4, vals)) != 0)
        goto done;
    snprintf(key, keylen, "pxk_%s_%s", id, secret);
done:
    PQclear(r);
    OPENSSL_cleanse(sec, sizeof sec);
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int px_key_revoke(PGconn *c, const char *id, px_err *e)
{
    PGresult *r = NULL;
    int rc = 0;
    if (!id || strlen(id) != 12 || !is_hex_id(id, 12))
        return px_err_set(e, PX_EINVAL, "'%s' is not a key id (12 hex digits)", id ? id : "");
    const char *vals[1] = {id};
    char what[64];
    snprintf(what, sizeof what, "cannot revoke API key '%s'", id);
    rc = px_db_query(c, e, what, &r,
                     "WITH k AS (UPDATE serve.api_keys SET revoked_at = now()"
                     " WHERE key_id = $1 AND revoked_at IS NULL RETURNING key_id)"
                     " INSERT INTO audit.events (action, object) SELECT 'serve.key_revoke', key_id FROM k"
                     " RETURNING object",
                     1, vals);
    if (rc == 0 && PQntuples(r) == 0)
        rc = px_err_set(e, PX_ENOTFOUND, "no active API key '%s'", id);
    PQclear(r);
    return rc;
}

int px_key_list(PGconn *c, int json, FILE *out, px_err *e)
{
    PGresult *r = NULL;
    int rc = px_db_query(c, e, "cannot list API keys", &r,
                         json ? "SELECT coalesce(json_agg(json_build_object('id', key_id, 'name', name, 'role', role,"
                                " 'created_at', created_at, 'revoked_at', revoked_at) ORDER BY created_at, key_id),"
                                " '[]')::text FROM serve.api_keys"
                              : "SELECT key_id, role, to_char(created_at, 'YYYY-MM-DD HH24:MI'),"
                                " coalesce(to_char(revoked_at, 'YYYY-MM-DD HH24:MI'), ''), name"
                                " FROM serve.api_keys ORDER BY created_at, key_id",
                         0, NULL);
    if (rc != 0) goto done;
    if (json) {
        fprintf(out, "%s\n", PQgetvalue(r, 0, 0));
        goto done;
    }
    fprintf(out, "%-12s  %-7s  %-16s  %-16s  %s\n", "id", "role", "created", "revoked", "name");
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(out, "%-12s  %-7s  %-16s  %-16s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                PQgetvalue(r, i, 3), PQgetvalue(r, i, 4));
done:
    PQclear(r);
    return rc;
}

static void keyset_destroy(void *p)
{
    srv_keyset *ks = p;
    OPENSSL_cleanse(ks->keys, ks->n * sizeof ks->keys[0]);
    free(ks);
}

srv_keyset *srv_keys_fetch(PGconn *c, px_err *e)
{
    srv_keyset *ks = NULL;
    PGresult *r = NULL;
    /* The generation is taken before the query: the poller and the key refresher fetch
     * on their own connections, and of two fetches the one whose query started later
     * read the later state (a revocation included). Numbered after the query, a fetch
     * that started before a revocation and returned after a later one would be
     * installed over it (keys_install keeps the larger generation), and the revoked
     * key would work for one more interval. */
    static atomic_ullong generation;
    unsigned long long gen = atomic_fetch_add(&generation, 1) + 1;
    if (px_db_query(c, e, "cannot read API keys", &r,
                    "SELECT key_id, role, secret_sha256 FROM serve.api_keys WHERE revoked_at IS NULL ORDER BY key_id", 0,
                    NULL) != 0)
        goto done;
    size_t n = (size_t)PQntuples(r);
    if (!(ks = calloc(1, sizeof *ks + n * sizeof ks->keys[0]))) {
        px_err_set(e, PX_ENOMEM, "out of memory reading API keys");
        goto done;
    }
    atomic_init(&ks->rc.refs, 1);
    ks->rc.destroy = keyset_destroy;
    ks->gen = gen;
    for (size_t i = 0; i < n; i++) {
        const char *id = PQgetvalue(r, (int)i, 0), *hx = PQgetvalue(r, (int)i, 2);
        px_key_role role;
        if (strlen(id) != 12 || strlen(hx) != 64 || px_key_role_parse(PQgetvalue(r, (int)i, 1), &role) != 0) continue;
        srv_key *k = &ks->keys[ks->n];
        memcpy(k->id, id, 13);
        k->role = role;
        int bad = 0;
        for (int b = 0; b < 32; b++) {
            int hi = hexval((unsigned char)hx[2 * b]), lo = hexval((unsigned char)hx[2 * b + 1]);
            if (hi < 0 || lo < 0) bad = 1;
            k->hash[b] = (unsigned char)((hi << 4) | (lo & 15));
        }
        if (!bad) ks->n++;
    }
done:
    PQclear(r);
    return ks;
}

/* The last key each worker thread verified, for the key set it was verified
 * against: a client sends the same key on every request, and hashing it is the
 * largest part of checking it. A hit needs the whole presented key to equal the
 * cached one (compared in constant time) and the key set to be the same one. */
static __thread struct {
    uint64_t gen;
    char key[PX_KEY_LEN];
    srv_key k;
} last_key;

int srv_key_match(const srv_keyset *ks, const char *presented, srv_key *out)
{
    static const unsigned char dummy[32];
    if (!ks || !presented) return 0;
    size_t len = strlen(presented);
    if (len != PX_KEY_LEN || memcmp(presented, "pxk_", 4) != 0 || presented[16] != '_' || !is_hex_id(presented + 4, 12))
        return 0;
    if (last_key.gen == ks->gen && CRYPTO_memcmp(last_key.key, presented, PX_KEY_LEN) == 0) {
        *out = last_key.k;
        return 1;
    }
    unsigned char digest[32];
    if (sha256(presented + 17, len - 17, digest) != 0) return 0;
    /* the id is public: a binary search over it leaks nothing; the secret's digest
     * is compared in constant time, also against a dummy when the id is unknown */
    size_t lo = 0, hi = ks->n;
    const srv_key *k = NULL;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = memcmp(ks->keys[mid].id, presented + 4, 12);
        if (cmp == 0) {
            k = &ks->keys[mid];
            break;
        }
        if (cmp < 0) lo = mid + 1;
        else hi = mid;
    }
    int same = CRYPTO_memcmp(k ? k->hash : dummy, digest, 32) == 0;
    OPENSSL_cleanse(digest, sizeof digest);
    if (!k || !same) return 0;
    *out = *k;
    last_key.gen = ks->gen;
    memcpy(last_key.key, presented, PX_KEY_LEN);
    last_key.k = *k;
    return 1;
}
