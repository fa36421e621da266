#!/usr/bin/env python3
"""kpi_laplace_ref.py: reference draws of the seeded Laplace mechanism (kpi/stats.c)
from an independent Python implementation of splitmix64 seeding xoshiro256**
(Blackman & Vigna; splitmix64 of seed 0 starts 0xe220a8397b1dcdaf), 53-bit
uniforms centred in their cell, and the inverse-CDF Laplace draw.
Regenerate: python3 tests/unit/kpi_laplace_ref.py > tests/unit/kpi_laplace_ref.txt"""
import math

M = (1 << 64) - 1

def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return state, z ^ (z >> 31)

def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M

class Xoshiro:
    def __init__(self, seed):
        self.s = []
        st = seed
        for _ in range(4):
            st, v = splitmix64(st)
            self.s.append(v)

    def next(self):
        s = self.s
        out = (rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 17) & M
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return out

    def uniform(self):
        return ((self.next() >> 11) + 0.5) * 2.0 ** -53

    def laplace(self, scale):
        v = self.uniform() - 0.5
        return -scale * (-1 if v < 0 else 1) * math.log(1 - 2 * abs(v))

assert splitmix64(0)[1] == 0xE220A8397B1DCDAF
for seed, scale in ((0, 1.0), (42, 2.0), (18446744073709551615, 0.5)):
    g = Xoshiro(seed)
    for i in range(8):
        print("laplace", seed, scale, i, repr(g.laplace(scale)))
