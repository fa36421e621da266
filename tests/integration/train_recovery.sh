#!/usr/bin/env bash
# train_recovery.sh: the models recover what the generator planted. On a generated
# hospital system, readmission and mortality models fitted on the generator's own
# covariates (plus facility indicators, so the planted facility effects are not
# omitted variables) must find each planted coefficient within its 99% Wald
# interval (and most within 95%), and their holdout AUC must match the AUC of the
# true probabilities (truth.json auc_true_p) within 3 DeLong standard errors + 0.01
# (a fitted model can only lose a little against the truth). The built-in models
# (default features) are trained too and must reach the same AUC band.
source "$(dirname "$0")/lib.sh"
N=${RECOVERY_PATIENTS:-25000}
px generate --patients "$N" --seed 11 --out "$WORK/data" >/dev/null
px etl load --format canonical --source "$WORK/data" --quiet >/dev/null
px features build --set all >/dev/null

# The generator's populations (engine/GENERATOR.md, "Outcomes and populations"):
# readmission excludes stays followed by a death within 0-29 days of admission.
sql "CREATE SCHEMA t;
     CREATE VIEW t.readm AS SELECT r.* FROM features.readmission r JOIN wh.dim_patient p USING (patient_id)
      WHERE p.death_date IS NULL OR p.death_date - r.admission_date NOT BETWEEN 0 AND 29;
     CREATE VIEW t.mort AS SELECT * FROM features.mortality;"
COVS=age_years,female,cci_chf,cci_cpd,cci_diab,cci_renal,cci_cancer,cci_dementia,cci_mild_liver,prior_adm_12m,emergency,facility_id
px train --model readm_truth --table t.readm --label readmit_30d --features "$COVS" --json >"$WORK/readm.json"
px train --model mort_truth --table t.mort --label death_30d --features "$COVS" --json >"$WORK/mort.json"
px train --model readmission --json >"$WORK/readm_builtin.json"
px train --model mortality --json >"$WORK/mort_builtin.json"
px train --model los --json >"$WORK/los_builtin.json"

python3 - "$WORK" "$PROGNOS_HOME" <<'PY'
import csv, json, sys
work, home = sys.argv[1], sys.argv[2]
truth = json.load(open(f"{work}/data/truth.json"))
names = {"age_per_10y": ("age_years", 10.0), "female": ("female", 1), "chf": ("cci_chf", 1),
         "copd": ("cci_cpd", 1), "diabetes": ("cci_diab", 1), "renal": ("cci_renal", 1),
         "cancer": ("cci_cancer", 1), "dementia": ("cci_dementia", 1), "liver": ("cci_mild_liver", 1),
         "prior_adm_12m": ("prior_adm_12m", 1), "emergency": ("emergency", 1)}
bad = 0
def check(model, tmodel, result):
    global bad
    r = json.load(open(f"{work}/{result}"))
    rows = list(csv.DictReader(open(f"{home}/registry/{model}/{r['version']}/coefficients.csv")))
    est = {row["term"]: (float(row["estimate"]), float(row["se"])) for row in rows}
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
    true_auc = truth["models"][tmodel]["observed"]["auc_true_p"]
    for res in (result, result.replace(".json", "_builtin.json")):
        r = json.load(open(f"{work}/{res}"))
        m = json.load(open(f"{home}/registry/{model if res == result else tmodel}/{r['version']}/metrics.json"))
        auc, se = m["overall"]["auc"], m["overall"]["auc_se"]
        tol = 3 * se + 0.01
        print(f"{res}: holdout AUC {auc:.4f} (se {se:.4f}, {r['holdout_rows']} rows) vs true {true_auc:.4f}, tolerance {tol:.4f}")
        if abs(auc - true_auc) > tol:
            print(f"FAIL: {res}: AUC {auc:.4f} not within {tol:.4f} of the true {true_auc:.4f}")
            bad += 1
check("readm_truth", "readmission", "readm.json")
check("mort_truth", "mortality", "mort.json")
los = json.load(open(f"{work}/los_builtin.json"))
if not (los["r2"] > 0.02 and los["rmse"] > 0):
    print(f"FAIL: los model explains nothing: {los}")
    bad += 1
sys.exit(1 if bad else 0)
PY
ok "planted coefficients and AUCs recovered"
