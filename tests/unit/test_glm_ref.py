#!/usr/bin/python3
"""test_glm_ref.py: ridge reference values for test_glm.c, by an independent
Newton solve in numpy, and a cross-check of R's unpenalized values (glm_ref.txt)
against statsmodels.

Ridge: minimize -loglik(beta) + l2/2 * sum_{j>=1} beta_j^2 (intercept unpenalized)
on the design test_glm builds from glm.csv: 1, age, los_prior, female, site=B,
site=C, site=D. Newton from beta = 0 until the step is below 1e-13.
  logit, l2 = 5: cov = (X'WX + l2 P)^-1
  poisson, l2 = 3: cov = bread meat bread, bread = (X'WX + l2 P)^-1,
                   meat = X' diag((y - mu)^2) X   (HC0 sandwich)
Writes tests/fixtures/models/glm_ridge_ref.txt ("key value" lines).
Run: /usr/bin/python3 tests/unit/test_glm_ref.py   (numpy, pandas, statsmodels)
"""
import os
import numpy as np
import pandas as pd
import statsmodels.api as sm

here = os.path.dirname(os.path.abspath(__file__))
fx = os.path.join(here, "..", "fixtures", "models")
d = pd.read_csv(os.path.join(fx, "glm.csv"))
X = np.column_stack([np.ones(len(d)), d.age, d.los_prior, d.female,
                     (d.site == "B").astype(float), (d.site == "C").astype(float), (d.site == "D").astype(float)])
k = X.shape[1]
P = np.eye(k)
P[0, 0] = 0


def newton(y, fam, l2):
    beta = np.zeros(k)
    for _ in range(200):
        eta = X @ beta
        mu = 1 / (1 + np.exp(-eta)) if fam == "logit" else np.exp(eta)
        w = mu * (1 - mu) if fam == "logit" else mu
        H = X.T @ (X * w[:, None]) + l2 * P
        g = X.T @ (y - mu) - l2 * P @ beta
        step = np.linalg.solve(H, g)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-13:
            break
    eta = X @ beta
    mu = 1 / (1 + np.exp(-eta)) if fam == "logit" else np.exp(eta)
    w = mu * (1 - mu) if fam == "logit" else mu
    bread = np.linalg.inv(X.T @ (X * w[:, None]) + l2 * P)
    if fam == "logit":
        cov = bread
        dev = -2 * np.sum(y * np.log(mu) + (1 - y) * np.log(1 - mu))
    else:
        meat = X.T @ (X * ((y - mu) ** 2)[:, None])
        cov = bread @ meat @ bread
        t = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0)
        dev = 2 * np.sum(t - (y - mu))
    return beta, np.sqrt(np.diag(cov)), dev


lines = []
for tag, y, fam, l2 in [("ridge_logit", d.yb.to_numpy(float), "logit", 5.0),
                        ("ridge_pois", d.cnt.to_numpy(float), "poisson", 3.0)]:
    b, se, dev = newton(y, fam, l2)
    lines += [f"{tag}.l2 {l2!r}"]
    lines += [f"{tag}.beta.{j} {b[j]:.17g}" for j in range(k)]
    lines += [f"{tag}.se.{j} {se[j]:.17g}" for j in range(k)]
    lines += [f"{tag}.deviance {dev:.17g}"]
with open(os.path.join(fx, "glm_ridge_ref.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")

# cross-check: R (glm_ref.txt) against statsmodels, unpenalized
ref = dict(l.split() for l in open(os.path.join(fx, "glm_ref.txt")))
worst = 0.0
for tag, y, fam in [("logit_a", d.yb, sm.families.Binomial()), ("pois_a", d.cnt, sm.families.Poisson())]:
    r = sm.GLM(y, X, family=fam).fit(tol=1e-14, cov_type="nonrobust" if tag == "logit_a" else "HC0")
    for j in range(k):
        worst = max(worst, abs(r.params[j] - float(ref[f"{tag}.beta.{j}"])),
                    abs(r.bse[j] - float(ref[f"{tag}.se.{j}"])))
print(f"wrote glm_ridge_ref.txt; R vs statsmodels: largest difference {worst:.3g}")
# R's vcov() uses the IRLS weights from the start of its last iteration, statsmodels
# (and px_logit_fit) those at the final estimates: the logit SEs differ by ~1e-8.
assert worst < 1e-7
