#!/usr/bin/env python3
"""Writes notebooks/registry.ipynb (the cells below, no outputs). Edit the cells here,
run this script, commit both: the notebook stays reviewable as plain Python."""
import nbformat as nbf
import os

cells = []
def md(s): cells.append(nbf.v4.new_markdown_cell(s.strip()))
def code(s): cells.append(nbf.v4.new_code_cell(s.strip()))

md("""
# Prognos model registry

Every registered version of every model: its metrics on the holdout, ROC and calibration,
coefficients with 95% Wald intervals, subgroup performance, and the retraining decisions.

The notebook reads the warehouse (`registry.*` tables) and the signed artifacts under
`$PROGNOS_HOME/registry/<model>/<version>/`. Before it uses an artifact file it checks the file's
SHA-256 against `manifest.json` (the signature itself is checked by `prognos registry verify`).

Configuration: `PROGNOS_DB_URL` (a libpq URI; default: the output of `prognos db url`), `PROGNOS_HOME`
(default `./var`), `PROGNOS_BIN` (default `prognos` on the `PATH`).
""")

code("""
import hashlib, io, json, os, subprocess, warnings
import matplotlib.pyplot as plt  # the kernel's inline backend: plots are embedded in the executed notebook
import pandas as pd
import psycopg2

warnings.filterwarnings("ignore", message=".*SQLAlchemy.*")
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)

home = os.path.abspath(os.environ.get("PROGNOS_HOME", "var"))
url = os.environ.get("PROGNOS_DB_URL") or subprocess.run(
    [os.environ.get("PROGNOS_BIN", "prognos"), "db", "url"], check=True, capture_output=True, text=True
).stdout.strip()
conn = psycopg2.connect(url)
conn.set_session(readonly=True, autocommit=True)

def q(sql, params=None):
    return pd.read_sql_query(sql, conn, params=params)

def fmt(x, spec=".3f"):
    \"\"\"A number for a title or a label; "n/a" when undefined (None, NaN: e.g. an AUC
    interval of a holdout without events).\"\"\"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if x != x else format(x, spec)

def artifact(name, version, file):
    \"\"\"Bytes of one artifact file, after checking its SHA-256 against the manifest.\"\"\"
    d = os.path.join(home, "registry", name, str(version))
    manifest = json.load(open(os.path.join(d, "manifest.json")))
    data = open(os.path.join(d, file), "rb").read()
    want = manifest["files"][file]["sha256"]
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise RuntimeError(f"{name} v{version}: {file} does not match its manifest ({got} != {want})")
    return data
""")

md("## Versions and aliases")
code("""
versions = q(\"\"\"
    SELECT v.name, v.version, v.algo, v.task, v.feature_set, v.label, v.created_at,
           coalesce(string_agg(a.alias, ',' ORDER BY a.alias), '') AS aliases,
           (v.split->>'train_rows')::int AS train_rows, (v.split->>'holdout_rows')::int AS holdout_rows,
           left(v.fingerprint, 12) AS data_fingerprint
      FROM registry.versions v LEFT JOIN registry.aliases a ON a.name = v.name AND a.version = v.version
     GROUP BY v.name, v.version ORDER BY v.name, v.version\"\"\")
versions
""")

md("## Holdout metrics of every version")
code("""
rows = []
for r in q("SELECT name, version, task, metrics FROM registry.versions ORDER BY name, version").itertuples():
    o = r.metrics["overall"] or {}
    if r.task == "binary":
        rows.append(dict(name=r.name, version=r.version, n=o.get("n"), events=o.get("events"),
                         auc=o.get("auc"), auc_lo=o.get("auc_lo"), auc_hi=o.get("auc_hi"),
                         auprc=o.get("auprc"), brier=o.get("brier"), cal_intercept=o.get("cal_intercept"),
                         cal_slope=o.get("cal_slope"), hl_p=o.get("hl_p")))
    else:
        rows.append(dict(name=r.name, version=r.version, n=o.get("n"), mae=o.get("mae"),
                         rmse=o.get("rmse"), r2=o.get("r2")))
metrics = pd.DataFrame(rows)
metrics.round(4)
""")

md("## ROC and calibration of each champion")
code("""
champions = q(\"\"\"SELECT v.name, v.version, v.task FROM registry.aliases a
                  JOIN registry.versions v USING (name, version)
                 WHERE a.alias = 'champion' ORDER BY v.name\"\"\")
binary = champions[champions.task == "binary"]
if len(binary):
    fig, axes = plt.subplots(2, len(binary), figsize=(5 * len(binary), 9), squeeze=False)
    for k, r in enumerate(binary.itertuples()):
        m = json.loads(artifact(r.name, r.version, "metrics.json"))
        roc, o = m.get("roc") or {}, m.get("overall") or {}
        ax = axes[0][k]
        if roc.get("fpr") and o.get("events"):
            ax.plot(roc["fpr"], roc["tpr"], lw=2)
        else:
            ax.text(0.5, 0.5, "no holdout events:\\nROC undefined", ha="center", va="center")
        ax.plot([0, 1], [0, 1], ls="--", c="grey")
        ax.set(title=f"{r.name} v{r.version}: AUC {fmt(o.get('auc'))} ({fmt(o.get('auc_lo'))}-{fmt(o.get('auc_hi'))})"
                     f", {o.get('events', 'n/a')} events",
               xlabel="1 - specificity", ylabel="sensitivity")
        ax = axes[1][k]
        try:
            cal = pd.read_csv(io.BytesIO(artifact(r.name, r.version, "calibration.csv")))
        except (KeyError, FileNotFoundError, pd.errors.EmptyDataError):
            cal = pd.DataFrame(columns=["mean_predicted", "observed_rate"])
        if len(cal):
            ax.plot(cal.mean_predicted, cal.observed_rate, "o-")
            lim = max(cal.mean_predicted.max(), cal.observed_rate.max(), 1e-6) * 1.1
            ax.plot([0, lim], [0, lim], ls="--", c="grey")
        else:
            ax.text(0.5, 0.5, "no calibration table", ha="center", va="center")
        ax.set(title=f"calibration by decile (slope {fmt(o.get('cal_slope'), '.2f')})",
               xlabel="mean predicted risk", ylabel="observed rate")
    plt.tight_layout()
    plt.show()
""")

md("## Length-of-stay (regression) champions: observed and predicted mean by subgroup")
code("""
regression = champions[champions.task != "binary"]
for r in regression.itertuples():
    m = json.loads(artifact(r.name, r.version, "metrics.json"))
    o = m.get("overall") or {}
    groups = [("all", o)] + [(f"{dim[3:]}={lvl}", ev) for dim in ("by_sex", "by_age_band")
                             for lvl, ev in (m.get(dim) or {}).items() if ev]
    groups = [(g, ev) for g, ev in groups if ev.get("mean_obs") is not None and ev.get("mean_pred") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if groups:
        x = range(len(groups))
        axes[0].bar([i - 0.2 for i in x], [ev["mean_obs"] for _, ev in groups], width=0.4, label="observed")
        axes[0].bar([i + 0.2 for i in x], [ev["mean_pred"] for _, ev in groups], width=0.4, label="predicted")
        axes[0].set_xticks(list(x))
        axes[0].set_xticklabels([g for g, _ in groups], rotation=45, ha="right", fontsize=8)
        axes[0].legend()
        axes[1].bar(list(x), [ev.get("mae") or 0 for _, ev in groups])
        axes[1].set_xticks(list(x))
        axes[1].set_xticklabels([g for g, _ in groups], rotation=45, ha="right", fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "no holdout figures", ha="center", va="center")
    axes[0].set(title=f"{r.name} v{r.version}: mean length of stay (R2 {fmt(o.get('r2'))})",
                xlabel="holdout subgroup", ylabel="mean length of stay (days)")
    axes[1].set(title=f"mean absolute error (overall {fmt(o.get('mae'), '.2f')} days)",
                xlabel="holdout subgroup", ylabel="mean absolute error (days)")
    plt.tight_layout()
    plt.show()
""")

md("## Coefficients with 95% intervals (champions of logistic and Poisson models)")
code("""
coefs = {}
for r in champions.itertuples():
    try:
        c = pd.read_csv(io.BytesIO(artifact(r.name, r.version, "coefficients.csv")))
    except KeyError:
        continue  # SVMs have no coefficients
    if len(c) == 0:
        continue
    coefs[r.name] = c
    c = c[c.term != "(intercept)"].iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(c) + 1))
    ax.errorbar(c.estimate, range(len(c)), xerr=[c.estimate - c.lower, c.upper - c.estimate], fmt="o", ms=3)
    ax.axvline(0, c="grey", ls="--")
    ax.set_yticks(range(len(c)))
    ax.set_yticklabels(c.term, fontsize=7)
    ax.set(title=f"{r.name} v{r.version}: coefficients (log scale) with 95% Wald intervals",
           xlabel="estimate (log odds ratio or log rate ratio)", ylabel="term")
    plt.tight_layout()
    plt.show()
{k: v.round(4) for k, v in coefs.items()}
""")

md("## Subgroups: by sex and by age band (holdout)")
code("""
sub = []
for r in q("SELECT name, version, task, metrics FROM registry.versions ORDER BY name, version").itertuples():
    for dim in ("by_sex", "by_age_band"):
        for level, ev in (r.metrics.get(dim) or {}).items():
            if not ev:
                continue
            row = dict(name=r.name, version=r.version, subgroup=f"{dim[3:]}={level}", n=ev.get("n"))
            for key in ("auc", "auc_lo", "auc_hi", "cal_slope", "cal_intercept", "brier", "mae", "rmse"):
                if key in ev:
                    row[key] = ev[key]
            sub.append(row)
subgroups = pd.DataFrame(sub)
subgroups.round(4)
""")

md("## Retraining decisions")
code("""
q("SELECT name, at, candidate_version, champion_version, decision, message FROM registry.decisions ORDER BY decision_id")
""")

md("Summary (machine-readable, checked by the test suite):")
code("""
summary = {"versions": int(len(versions)),
           "champions": {r.name: int(r.version) for r in champions.itertuples()},
           "auc": {f"{r.name}/{r.version}": round(float(r.auc), 6) for r in metrics.dropna(subset=["auc"]).itertuples()} if "auc" in metrics else {},
           "auc_undefined_interval": sorted(f"{r.name}/{r.version}" for r in metrics.itertuples()
                                            if getattr(r, "auc", None) is not None and getattr(r, "auc", None) == getattr(r, "auc", None)
                                            and (getattr(r, "auc_lo", None) is None or getattr(r, "auc_lo") != getattr(r, "auc_lo"))),
           "plots": {"binary": int(len(binary)), "regression": int(len(regression))}}
print("SUMMARY " + json.dumps(summary, sort_keys=True))
""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry.ipynb")
nbf.write(nb, out)
print("wrote", out)
