/* rng.c: the seeded generator every library shares (splitmix64 seeding
 * xoshiro256**; the step itself is inline in engine.h). One definition, so the
 * synthetic data, the KPI's differential-privacy noise and the SVM's shuffles
 * draw from the same documented sequence for a given seed. */
#include "engine/engine.h"

uint64_t px_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void px_rng_seed(px_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = px_splitmix64(&x);
}
