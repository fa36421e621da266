#!/usr/bin/python3
"""Fixtures and reference values for tests/unit/test_eval.c (models/eval.c).

Run from the repository root:  /usr/bin/python3 tests/unit/ref_eval.py
It (re)writes tests/fixtures/eval/*.csv from fixed seeds, then reads those CSV
files back (so both sides parse the same decimal text) and writes
tests/fixtures/eval/ref.txt: one "case key value" line per reference value,
value printed with repr() (17 significant digits) or "nan".

Independent implementations (none shares code or algorithm with eval.c):
  AUC          sklearn.metrics.roc_auc_score (1.2), cross-checked against the
               O(n1*n0) mean of psi(x_i, y_j) (1 if x > y, 1/2 if tied, 0 else)
  DeLong SE    textbook DeLong, DeLong & Clarke-Pearson (1988): placement values
               V10_i = mean_j psi(x_i, y_j), V01_j = mean_i psi(x_i, y_j) from the
               full n1 x n0 psi matrix, S10/S01 with np.cov (denominator m - 1),
               Var = S10/n1 + S01/n0; paired: the 2x2 covariances, L S L', L = (1,-1),
               p = 2 * scipy.stats.norm.sf(|z|)
  95% CI       auc +- 1.96 se clipped to [0, 1]
  AUPRC        sklearn.metrics.average_precision_score
  Brier        sklearn.metrics.brier_score_loss
  calibration  statsmodels 0.13 GLM(Binomial): intercept = GLM(y ~ 1, offset =
               logit(p)), slope = GLM(y ~ 1 + logit(p)), p clipped to
               [1e-12, 1 - 1e-12] before the logit, IRLS tol 1e-13; the slope is nan
               when the classes do not overlap on logit(p) (separation: no finite MLE)
  deciles, HL  numpy: order = argsort(p, kind="stable") (ascending p, ties in row
               order), groups = np.array_split(order, min(10, n)) (the first
               n mod G groups hold one row more); C-hat = sum (O-E)^2/(E(1-E/n_g)),
               df = G (fixed predictions on a holdout: no parameter fitted there),
               p = scipy.stats.chi2.sf, no test (nan) when G < 2
  thresholds   sklearn.metrics.confusion_matrix(y, p >= t)
  regression   sklearn mean_absolute_error, mean_squared_error, r2_score
"""
import os
import sys

import numpy as np
import scipy.stats
import sklearn
import statsmodels
import statsmodels.api as sm
from sklearn import metrics

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.normpath(os.path.join(HERE, "..", "fixtures", "eval"))
THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]
PCLIP = 1e-12


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def write_csv(name, cols):
    names = list(cols)
    n = len(cols[names[0]])
    with open(os.path.join(FIX, name + ".csv"), "w") as f:
        f.write(",".join(names) + "\n")
        for i in range(n):
            f.write(",".join(cols[c][i] for c in names) + "\n")


def fmt_y(y):
    return [str(int(v)) for v in y]


def fmt_p(p, decimals):
    return [f"{v:.{decimals}f}" for v in p]


def make_fixtures():
    os.makedirs(FIX, exist_ok=True)
    # hand: the 4-row example of scikit-learn's documentation, checkable by hand
    write_csv("hand", {"y": fmt_y([0, 0, 1, 1]), "p": ["0.1", "0.4", "0.35", "0.8"]})
    # ties: 12 rows, scores tied within and across classes
    write_csv("ties", {"y": fmt_y([0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1]),
                       "p": ["0.1", "0.1", "0.1", "0.3", "0.3", "0.3", "0.3", "0.6", "0.6", "0.9", "0.9", "0.9"]})
    # small7: n < 10, so 7 groups of one row, df = 7
    write_csv("small7", {"y": fmt_y([0, 1, 0, 0, 1, 0, 1]),
                         "p": ["0.2", "0.7", "0.05", "0.5", "0.5", "0.1", "0.95"]})
    # big: 3007 rows (n mod 10 = 7), about 9% events; p1 a miscalibrated but good
    # score rounded to 3 decimals (ties), p2 a worse one rounded to 2 decimals
    # (many ties), p3 one of p1's quality with independent noise
    rng = np.random.default_rng(20240311)
    n = 3007
    x = rng.normal(size=n)
    y = rng.random(n) < sigmoid(-2.7 + 1.2 * x)
    p1 = np.round(sigmoid(-2.4 + 1.5 * (x + 0.3 * rng.normal(size=n))), 3)
    p2 = np.round(sigmoid(-2.3 + 1.0 * (x + 1.5 * rng.normal(size=n))), 2)
    p3 = np.round(sigmoid(-2.4 + 1.5 * (x + 0.3 * rng.normal(size=n))), 3)
    write_csv("big", {"y": fmt_y(y), "p1": fmt_p(p1, 3), "p2": fmt_p(p2, 2), "p3": fmt_p(p3, 3)})
    # edge: 400 rows with some scores exactly 0 and 1 (the logit clip matters),
    # including events at p = 0 and non-events at p = 1
    rng = np.random.default_rng(7)
    n = 400
    x = rng.normal(size=n)
    y = (rng.random(n) < sigmoid(-1.0 + x)).astype(int)
    p = np.round(sigmoid(-1.0 + 0.8 * x), 2)
    zero = rng.choice(n, 12, replace=False)
    p[zero[:6]] = 0.0
    p[zero[6:]] = 1.0
    y[zero[0]] = 1
    y[zero[6]] = 0
    write_csv("edge", {"y": fmt_y(y), "p": fmt_p(p, 2)})
    # reg: length of stay (days) and a prediction of it
    rng = np.random.default_rng(99)
    n = 2000
    mu = np.exp(1.3 + 0.5 * rng.normal(size=n))
    los = rng.poisson(mu) + 1
    pred = mu * np.exp(0.2 * rng.normal(size=n)) + 1
    write_csv("reg", {"y": [str(v) for v in los], "yhat": fmt_p(pred, 4)})


def read_csv(name):
    with open(os.path.join(FIX, name + ".csv")) as f:
        names = f.readline().strip().split(",")
        rows = [[float(v) for v in line.strip().split(",")] for line in f if line.strip()]
    a = np.array(rows)
    return {c: a[:, j] for j, c in enumerate(names)}


def psi_matrix(y, p):
    x, z = p[y == 1], p[y == 0]
    return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])


def delong_textbook(y, p):
    """Placement values from the full psi matrix (O(n1 n0))."""
    psi = psi_matrix(y, p)
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def calibration(y, p):
    pc = np.clip(p, PCLIP, 1 - PCLIP)
    lp = np.log(pc / (1 - pc))
    fam = sm.families.Binomial()
    fi = sm.GLM(y, np.ones((len(y), 1)), family=fam, offset=lp).fit(tol=1e-13, maxiter=200)
    assert fi.converged
    # y ~ 1 + x has a finite MLE only if the classes overlap on x (Albert & Anderson
    # 1984); otherwise (complete or quasi-complete separation) the reference is nan
    x0, x1 = lp[y == 0], lp[y == 1]
    if not (x0.max() > x1.min() and x1.max() > x0.min()):
        return fi.params[0], float("nan")
    fs = sm.GLM(y, np.column_stack([np.ones(len(y)), lp]), family=fam).fit(tol=1e-13, maxiter=200)
    assert fs.converged
    return fi.params[0], fs.params[1]


def hosmer_lemeshow(y, p):
    n = len(y)
    G = min(10, n)
    order = np.argsort(p, kind="stable")
    groups = []
    chi2 = 0.0
    for idx in np.array_split(order, G):
        m, E, O = len(idx), p[idx].sum(), y[idx].sum()
        groups.append((m, O, E / m, O / m))
        den = E * (1 - E / m)
        chi2 += (O - E) ** 2 / den if den > 0 else (0.0 if O == E else np.inf)
    df = G
    pval = scipy.stats.chi2.sf(chi2, df) if df >= 2 else float("nan")
    return groups, chi2, df, pval


def binary_refs(y, p):
    r = {}
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    r["n"], r["events"] = len(y), n1
    auc = metrics.roc_auc_score(y, p)
    a2, v10, v01 = delong_textbook(y, p)
    assert abs(auc - a2) < 1e-12, (auc, a2)
    r["auc"] = auc
    if n1 >= 2 and n0 >= 2:
        se = np.sqrt(np.var(v10, ddof=1) / n1 + np.var(v01, ddof=1) / n0)
        r["auc_se"], r["auc_lo"], r["auc_hi"] = se, max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)
    else:
        r["auc_se"] = r["auc_lo"] = r["auc_hi"] = float("nan")
    r["auprc"] = metrics.average_precision_score(y, p)
    r["brier"] = metrics.brier_score_loss(y, p)
    r["cal_intercept"], r["cal_slope"] = calibration(y, p)
    groups, chi2, df, pval = hosmer_lemeshow(y, p)
    r["hl_chi2"], r["hl_df"], r["hl_p"], r["ngroups"] = chi2, df, pval, len(groups)
    for g, (m, O, mp, orate) in enumerate(groups):
        r[f"group{g}.n"], r[f"group{g}.events"], r[f"group{g}.mean_pred"], r[f"group{g}.obs_rate"] = m, O, mp, orate
    for t, thr in enumerate(THRESHOLDS):
        tn, fp, fn, tp = metrics.confusion_matrix(y, (p >= thr).astype(int), labels=[0, 1]).ravel()
        r[f"thr{t}.threshold"] = thr
        r[f"thr{t}.tp"], r[f"thr{t}.fp"], r[f"thr{t}.tn"], r[f"thr{t}.fn"] = tp, fp, tn, fn
        r[f"thr{t}.sens"] = tp / (tp + fn)
        r[f"thr{t}.spec"] = tn / (tn + fp)
        r[f"thr{t}.ppv"] = tp / (tp + fp) if tp + fp else float("nan")
        r[f"thr{t}.npv"] = tn / (tn + fn) if tn + fn else float("nan")
    return r


def paired_refs(y, pa, pb):
    a1, v10a, v01a = delong_textbook(y, pa)
    a2, v10b, v01b = delong_textbook(y, pb)
    n1, n0 = len(v10a), len(v01a)
    S10, S01 = np.cov(np.vstack([v10a, v10b])), np.cov(np.vstack([v01a, v01b]))
    S = S10 / n1 + S01 / n0
    L = np.array([1.0, -1.0])
    se = float(np.sqrt(L @ S @ L))
    diff = a1 - a2
    return {"diff": diff, "se": se, "pvalue": 2 * scipy.stats.norm.sf(abs(diff) / se)}


def reg_refs(y, yhat):
    return {"n": len(y), "mae": metrics.mean_absolute_error(y, yhat),
            "rmse": metrics.mean_squared_error(y, yhat, squared=False), "r2": metrics.r2_score(y, yhat),
            "mean_obs": y.mean(), "mean_pred": yhat.mean()}


def main():
    make_fixtures()
    out = []

    def emit(case, refs):
        for k, v in refs.items():
            v = float(v)
            out.append(f"{case} {k} {'nan' if np.isnan(v) else ('inf' if np.isinf(v) else repr(v))}")

    for fx, cols in [("hand", ["p"]), ("ties", ["p"]), ("small7", ["p"]), ("edge", ["p"]),
                     ("big", ["p1", "p2", "p3"])]:
        d = read_csv(fx)
        for c in cols:
            emit(f"{fx}:{c}", binary_refs(d["y"], d[c]))
    d = read_csv("big")
    for a, b in [("p1", "p2"), ("p1", "p3"), ("p2", "p3")]:
        emit(f"big:{a}-{b}", paired_refs(d["y"], d[a], d[b]))
    d = read_csv("reg")
    emit("reg:yhat", reg_refs(d["y"], d["yhat"]))
    with open(os.path.join(FIX, "ref.txt"), "w") as f:
        f.write(f"# from tests/unit/ref_eval.py: scikit-learn {sklearn.__version__}, statsmodels "
                f"{statsmodels.__version__}, numpy {np.__version__}, scipy {scipy.__version__}\n")
        f.write("\n".join(out) + "\n")
    print(f"wrote {len(out)} reference values to {FIX}/ref.txt", file=sys.stderr)


if __name__ == "__main__":
    main()
