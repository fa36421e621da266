/* test_keymap.c: the batch index's hash map: inserts across many growths, lookups
 * of present and absent keys, values zeroed on insert and kept across growth,
 * keys that share their first 8 bytes (the hash) but differ after. */
#include "engine/etl_int.h"
#include "check.h"
#include <stdlib.h>

static void key_of(unsigned i, unsigned char k[16])
{
    /* splitmix-like spread, as pseudonyms are uniformly random */
    unsigned long long z = (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 31;
    memcpy(k, &z, 8);
    memcpy(k + 8, &i, sizeof i);
    memset(k + 8 + sizeof i, 0xA5, 8 - sizeof i);
}

int main(void)
{
    enum { N = 200000 };
    px_keymap *m = px_keymap_new(sizeof(etl_encounter));
    CHECK(m != NULL);
    unsigned char k[16];
    int existed, zeroed = 1;
    for (unsigned i = 0; i < N; i++) {
        key_of(i, k);
        etl_encounter *e = px_keymap_put(m, k, &existed);
        CHECK(e != NULL && !existed);
        if (e->state || e->line || e->dx_seen[0] || e->dx_seen[1]) zeroed = 0;
        e->line = (long long)i * 3;
        e->adm_days = (int)i;
        e->dx_seen[1] = i;
    }
    CHECK(zeroed);
    CHECK_INT(px_keymap_count(m), N);
    int wrong = 0;
    for (unsigned i = 0; i < N; i++) {
        key_of(i, k);
        etl_encounter *e = px_keymap_get(m, k);
        if (!e || e->line != (long long)i * 3 || e->adm_days != (int)i || e->dx_seen[1] != i) wrong++;
    }
    CHECK_INT(wrong, 0);
    /* re-put finds the existing entry and leaves its value alone */
    key_of(12345, k);
    etl_encounter *e = px_keymap_put(m, k, &existed);
    CHECK(existed && e->line == 12345LL * 3);
    CHECK_INT(px_keymap_count(m), N);
    /* absent keys, including one that shares the hashed prefix of a present key */
    key_of(N + 7, k);
    CHECK(px_keymap_get(m, k) == NULL);
    key_of(42, k);
    k[15] ^= 1;
    CHECK(px_keymap_get(m, k) == NULL);
    e = px_keymap_put(m, k, &existed);
    CHECK(e != NULL && !existed && e->line == 0);
    CHECK_INT(px_keymap_count(m), N + 1);
    px_keymap_free(m);
    px_keymap_free(NULL);
    return check_report("test_keymap");
}
