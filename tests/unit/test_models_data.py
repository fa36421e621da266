#!/usr/bin/python3
"""test_models_data.py: writes the fixtures of the models tests (deterministic).

  tests/fixtures/models/glm.csv  3000 rows: age, los_prior, female, site (A..D,
      'B' the most frequent), yb (0/1 from a planted logistic model) and cnt (an
      over-dispersed count: negative binomial with a log-linear mean).
  tests/fixtures/models/sep.csv  200 rows: x, z, y_complete (y = x > 0: complete
      separation) and y_quasi (z = 1 => y = 1, z = 0 mixed: quasi-complete).
Run: /usr/bin/python3 tests/unit/test_models_data.py   (numpy)
"""
import os
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "fixtures", "models")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(20240603)

n = 3000
age = np.round(rng.normal(65, 12, n), 1)
los_prior = np.round(rng.exponential(2.0, n), 2)
female = rng.integers(0, 2, n)
site = rng.choice(np.array(["A", "B", "C", "D"]), n, p=[0.2, 0.4, 0.25, 0.15])
eff = {"A": 0.0, "B": 0.4, "C": -0.5, "D": 0.8}
s = np.array([eff[v] for v in site])
eta = -1.0 + 0.03 * (age - 65) + 0.2 * los_prior - 0.3 * female + s
yb = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
mu = np.exp(0.5 + 0.01 * (age - 65) + 0.1 * los_prior + 0.2 * female + 0.5 * s)
size = 2.0  # negative binomial: var = mu + mu^2 / size
cnt = rng.negative_binomial(size, size / (size + mu))
with open(os.path.join(out, "glm.csv"), "w") as f:
    f.write("age,los_prior,female,site,yb,cnt\n")
    for i in range(n):
        f.write(f"{age[i]:.1f},{los_prior[i]:.2f},{female[i]},{site[i]},{yb[i]},{cnt[i]}\n")

m = 200
x = np.round(rng.normal(0, 1, m), 4)
x[np.abs(x) < 0.01] = 0.5  # keep rows off the boundary
z = (rng.random(m) < 0.3).astype(int)
yc = (x > 0).astype(int)
yq = np.where(z == 1, 1, (rng.random(m) < 1 / (1 + np.exp(-x))).astype(int))
with open(os.path.join(out, "sep.csv"), "w") as f:
    f.write("x,z,y_complete,y_quasi\n")
    for i in range(m):
        f.write(f"{x[i]:.4f},{z[i]},{yc[i]},{yq[i]}\n")
print("wrote glm.csv (%d rows, %d events, mean count %.2f) and sep.csv" % (n, yb.sum(), cnt.mean()))
