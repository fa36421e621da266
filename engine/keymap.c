/* keymap.c: an open-addressing hash map with 16-byte keys and fixed-size values.
 * Keys are HMAC pseudonyms or SHA-256 digests, already uniformly random, so the
 * first 8 bytes serve as the hash. Linear probing; grows at 50% load. */
#include "engine/etl_int.h"
#include <stdlib.h>
#include <string.h>

struct px_keymap {
    size_t vsize, esize, cap, count;
    unsigned char *slots; /* cap entries: [key:16][used:1][pad:7][value:vsize], 8-aligned */
};

static unsigned long long key_hash(const unsigned char *k)
{
    unsigned long long h;
    memcpy(&h, k, sizeof h);
    return h ^ (h >> 29);
}

px_keymap *px_keymap_new(size_t value_size)
{
    px_keymap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->vsize = value_size;
    m->esize = 24 + ((value_size + 7) & ~(size_t)7);
    m->cap = 1024;
    m->slots = calloc(m->cap, m->esize);
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void px_keymap_free(px_keymap *m)
{
    if (!m) return;
    free(m->slots);
    free(m);
}

size_t px_keymap_count(const px_keymap *m) { return m->count; }

static unsigned char *find(const px_keymap *m, const unsigned char *key)
{
    size_t mask = m->cap - 1, i = (size_t)key_hash(key) & mask;
    for (;;) {
        unsigned char *s = m->slots + i * m->esize;
        if (!s[16] || memcmp(s, key, 16) == 0) return s;
        i = (i + 1) & mask;
    }
}

void *px_keymap_get(const px_keymap *m, const unsigned char key[16])
{
    unsigned char *s = find(m, key);
    return s[16] ? s + 24 : NULL;
}

static int grow(px_keymap *m)
{
    px_keymap n = *m;
    n.cap = m->cap * 2;
    n.slots = calloc(n.cap, n.esize);
    if (!n.slots) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        unsigned char *s = m->slots + i * m->esize;
        if (s[16]) memcpy(find(&n, s), s, m->esize);
    }
    free(m->slots);
    *m = n;
    return 0;
}

void *px_keymap_put(px_keymap *m, const unsigned char key[16], int *existed)
{
    if ((m->count + 1) * 2 > m->cap && grow(m) != 0) return NULL;
    unsigned char *s = find(m, key);
    *existed = s[16];
    if (!s[16]) {
        memcpy(s, key, 16);
        s[16] = 1;
        memset(s + 24, 0, m->vsize);
        m->count++;
    }
    return s + 24;
}
