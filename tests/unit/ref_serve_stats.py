#!/usr/bin/python3
"""ref_serve_stats.py: reference values for tests/unit/test_serve_stats.c, from numpy
and scipy (an implementation independent of serve/stats.c). Writes
tests/fixtures/serve/drift_ref.txt; run it again only if the cases change:
    /usr/bin/python3 tests/unit/ref_serve_stats.py > tests/fixtures/serve/drift_ref.txt
Line formats (counts are ';'-separated window|reference):
    psi A|B value            PSI with 0.5 added to every count (serve/stats.c)
    crit k n m alpha value   (1/n + 1/m) * chi2.ppf(1 - alpha, k - 1)
    kq x value               scipy.stats.kstwobign.sf(x)
    ks A|B d p               D from scipy.stats.ks_2samp on the bins expanded to
                             values (ties at the bin index); p = kstwobign.sf(sqrt(nm/(n+m)) D)
    chi2 A|B stat df p v     scipy.stats.chi2_contingency(correction=False) on the
                             columns not empty in both; v = sqrt(stat / N)
"""
import numpy as np
import scipy
from scipy import stats

print(f"# numpy {np.__version__}, scipy {scipy.__version__}")

def fmt(v):
    return ";".join(str(int(x)) for x in v)

def psi(a, b):
    a = np.asarray(a, float) + 0.5
    b = np.asarray(b, float) + 0.5
    p, q = a / a.sum(), b / b.sum()
    return float(np.sum((p - q) * np.log(p / q)))

cases = [
    ([100, 100, 100, 100], [1000, 1000, 1000, 1000]),
    ([10, 20, 30, 40], [40, 30, 20, 10]),
    ([0, 5, 50, 45], [30, 30, 30, 10]),
    ([12, 9, 11, 8, 10, 13, 7, 10, 11, 9], [615, 615, 615, 614, 615, 615, 614, 615, 615, 615]),
    ([0, 0, 3, 97, 0], [20, 20, 20, 20, 20]),
    ([250, 0, 750], [2985, 3163, 0]),
    ([1, 2], [3, 4]),
]
for a, b in cases:
    print(f"psi {fmt(a)}|{fmt(b)} {psi(a, b):.17g}")

for k, n, m, alpha in [(10, 100, 6148, 0.01), (10, 1000, 6148, 0.01 / 52), (4, 50, 50, 0.05),
                       (2, 1e6, 1e6, 0.001), (7, 300, 2000, 1e-4)]:
    v = (1 / n + 1 / m) * stats.chi2.ppf(1 - alpha, k - 1)
    print(f"crit {k} {n:g} {m:g} {alpha:.17g} {v:.17g}")

for x in [0.05, 0.2, 0.4, 0.6, 0.8, 1.0, 1.1, 1.17, 1.19, 1.3, 1.36, 1.5, 1.63, 2.0, 2.5, 3.0, 4.0]:
    print(f"kq {x:g} {stats.kstwobign.sf(x):.17g}")

for a, b in cases[:5] + [([30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 0], [100] * 10 + [0])]:
    xa = np.repeat(np.arange(len(a)), a)
    xb = np.repeat(np.arange(len(b)), b)
    d = stats.ks_2samp(xa, xb).statistic
    n, m = len(xa), len(xb)
    p = stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * d)
    print(f"ks {fmt(a)}|{fmt(b)} {d:.17g} {p:.17g}")

for a, b in cases[:6] + [([5, 0, 0, 95], [50, 0, 10, 40])]:
    t = np.array([a, b], float)
    t = t[:, t.sum(axis=0) > 0]
    stat, p, df, _ = stats.chi2_contingency(t, correction=False)
    v = np.sqrt(stat / t.sum())
    print(f"chi2 {fmt(a)}|{fmt(b)} {stat:.17g} {df} {p:.17g} {v:.17g}")
