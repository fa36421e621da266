#!/usr/bin/env bash
# train_recovery.sh: the models recover what the generator planted. On a generated
# hospital system, readmission and mortality models fitted on the generator's own
# covariates (plus facility indicators, so the planted facility effects are not
# omitted variables) must find each planted coefficient within its 99% Wald
# interval (and most within 95%), and their holdout AUC must match what truth.json
# implies for the same rows: the AUC of the true probabilities (truth.json's intercept,
# coefficients and facility effects) over exactly the holdout rows, recomputed here.
# Tolerance: the fitted model may lose at most 0.03 against the truth and gain at
# most 0.015 (noise of a fitted model on the same rows). The built-in models (their
# default features, without facility terms) must come within 0.05 of the truth on
# their own holdout rows. The generator plants its models on the feature sets'
# own cohorts (engine/GENERATOR.md), so the tables are used as built. A fixed pseudonymization key makes the holdout patients, and so
# every figure here, the same on every run.
source "$(dirname "$0")/lib.sh"
N=${RECOVERY_PATIENTS:-25000}
export PROGNOS_KEY_FILE="$WORK/fixed.key"
(umask 077; echo 5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed >"$PROGNOS_KEY_FILE")
px generate --patients "$N" --seed 11 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
px features build --set all >/dev/null

# The generator's populations are the feature sets' cohorts (engine/GENERATOR.md).
sql "CREATE SCHEMA t;
     CREATE VIEW t.readm AS SELECT * FROM features.readmission;
     CREATE VIEW t.mort AS SELECT * FROM features.mortality;"
COVS=age_years,female,cci_chf,cci_cpd,cci_diab,cci_renal,cci_cancer,cci_dementia,cci_mild_liver,prior_adm_12m,emergency,facility_id
px train --model readm_truth --table t.readm --label readmit_30d --features "$COVS" --json --accept-failed-gates --hier-boot 0 >"$WORK/readm.json"
px train --model mort_truth --table t.mort --label death_30d --features "$COVS" --json --accept-failed-gates --hier-boot 0 >"$WORK/mort.json"
px train --model readmission --json --accept-failed-gates --hier-boot 0 >"$WORK/readm_builtin.json"
px train --model mortality --json --accept-failed-gates --hier-boot 0 >"$WORK/mort_builtin.json"
px train --model los --json --accept-failed-gates --hier-boot 0 >"$WORK/los_builtin.json"

# rows of each training table, for the true probabilities on the holdout rows
rows() { # table label
    psql -X -q -At -v ON_ERROR_STOP=1 "$(px db url)" -c "COPY (SELECT patient_id, admission_date, discharge_date, $2, age_years, female,
        cci_chf, cci_cpd, cci_diab, cci_renal, cci_cancer, cci_dementia, cci_mild_liver, prior_adm_12m,
        emergency, facility_id FROM $1) TO STDOUT WITH (FORMAT csv)"
}
rows t.readm readmit_30d >"$WORK/rows_readm.csv"
rows t.mort death_30d >"$WORK/rows_mort.csv"
rows features.readmission readmit_30d >"$WORK/rows_readm_builtin.csv"
rows features.mortality death_30d >"$WORK/rows_mort_builtin.csv"

python3 - "$WORK" "$PROGNOS_HOME" <<'PY'
import csv, datetime, json, math, sys
work, home = sys.argv[1], sys.argv[2]
truth = json.load(open(f"{work}/data/truth.json"))
names = {"age_per_10y": ("age_years", 10.0), "female": ("female", 1), "chf": ("cci_chf", 1),
         "copd": ("cci_cpd", 1), "diabetes": ("cci_diab", 1), "renal": ("cci_renal", 1),
         "cancer": ("cci_cancer", 1), "dementia": ("cci_dementia", 1), "liver": ("cci_mild_liver", 1),
         "prior_adm_12m": ("prior_adm_12m", 1), "emergency": ("emergency", 1)}
COLS = ["patient_id", "admission_date", "discharge_date", "y", "age_years", "female", "cci_chf", "cci_cpd", "cci_diab", "cci_renal",
        "cci_cancer", "cci_dementia", "cci_mild_liver", "prior_adm_12m", "emergency", "facility_id"]
M64 = (1 << 64) - 1
SALT = 0x70726F676E6F7331  # registry/train.c's holdout salt

def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)

def holdout(rows, split):
    """The version's holdout rows, recomputed as registry/train.c defines them."""
    days = sorted(r["day"] for r in rows)
    q = min(int(math.floor(len(rows) * (1.0 - split["holdout_time_share"]))), len(rows) - 1)
    cut = days[q]
    share = split["holdout_patient_share"]
    hold = lambda g: (mix64(g ^ SALT) >> 11) * 2.0 ** -53 < share
    return [r for r in rows if r["day"] >= cut and hold(int(r["patient_id"].replace("-", "")[:16], 16))]

def true_p(r, tmodel):
    m = truth["models"][tmodel]
    eta = m["intercept"] + effects[tmodel][r["facility_id"]]
    for cov, beta in m["coefficients"].items():
        term, scale = names[cov]
        x = float(r[term])
        eta += beta * ((x - 65) / 10 if cov == "age_per_10y" else x)
    return 1 / (1 + math.exp(-eta))

def auc(pairs):  # Mann-Whitney, ties at mid-rank
    pairs = sorted(pairs)
    ranks, i = [0.0] * len(pairs), 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    n1 = sum(y for _, y in pairs)
    n0 = len(pairs) - n1
    return (sum(r for r, (_, y) in zip(ranks, pairs) if y) - n1 * (n1 + 1) / 2) / (n1 * n0)

effects = {t: {f["facility_id"]: f["effects"][t] for f in truth["facilities"]} for t in ("readmission", "mortality")}
bad = 0
def check(model, tmodel, result, rows_file):
    global bad
    r = json.load(open(f"{work}/{result}"))
    rows = list(csv.DictReader(open(f"{work}/{rows_file}"), fieldnames=COLS))
    vdir = f"{home}/registry/{model}/{r['version']}"
    split, metrics = json.load(open(f"{vdir}/manifest.json"))["split"], json.load(open(f"{vdir}/metrics.json"))
    for row in rows:  # the prediction time the split used
        row["day"] = (datetime.date.fromisoformat(row[split["time_column"]]) - datetime.date(1970, 1, 1)).days
    test = holdout(rows, split)
    assert len(test) == split["holdout_rows"], (model, len(test), split["holdout_rows"])
    implied = auc([(true_p(x, tmodel), int(x["y"])) for x in test])
    fitted = metrics["overall"]["auc"]
    lo, hi = (0.03, 0.015) if model.endswith("_truth") else (0.05, 0.05)
    print(f"{model}: holdout AUC {fitted:.4f} on {len(test)} rows; truth.json implies {implied:.4f} on the same rows "
          f"(whole population: {truth['models'][tmodel]['observed']['auc_true_p']:.4f}); allowed {-lo:+.3f}..{hi:+.3f}")
    if not (implied - lo <= fitted <= implied + hi):
        print(f"FAIL: {model}: AUC {fitted:.4f} outside {implied - lo:.4f}..{implied + hi:.4f}")
        bad += 1
    if not model.endswith("_truth"):
        return
    terms = list(csv.DictReader(open(f"{vdir}/coefficients.csv")))
    est = {row["term"]: (float(row["estimate"]), float(row["se"])) for row in terms}
    planted = truth["models"][tmodel]["coefficients"]
    in95 = 0
    for cov, beta in planted.items():
        term, scale = names[cov]
        b, se = est[term]
        b, se = b * scale, se * scale
        z = (b - beta) / se
        print(f"{tmodel:12s} {cov:14s} planted {beta:+.3f} fitted {b:+.4f} se {se:.4f} z {z:+.2f}")
        if abs(z) > 2.576:
            print(f"FAIL: {tmodel} {cov}: planted {beta} outside the 99% interval of {b:.4f} (se {se:.4f})")
            bad += 1
        in95 += abs(z) <= 1.96
    if in95 < 0.8 * len(planted):
        print(f"FAIL: {tmodel}: only {in95} of {len(planted)} planted coefficients inside their 95% intervals")
        bad += 1

check("readm_truth", "readmission", "readm.json", "rows_readm.csv")
check("mort_truth", "mortality", "mort.json", "rows_mort.csv")
check("readmission", "readmission", "readm_builtin.json", "rows_readm_builtin.csv")
check("mortality", "mortality", "mort_builtin.json", "rows_mort_builtin.csv")
los = json.load(open(f"{work}/los_builtin.json"))
if not (los["r2"] > 0.02 and los["rmse"] > 0):
    print(f"FAIL: los model explains nothing: {los}")
    bad += 1
sys.exit(1 if bad else 0)
PY
ok "planted coefficients and AUCs recovered"
