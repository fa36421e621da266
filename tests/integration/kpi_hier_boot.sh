#!/usr/bin/env bash
# kpi_hier_boot.sh: the hierarchical model's two intervals agree, on kpi_hier.sh's data
# (kpi_hier_lib.sh: a long tail of ~2,000 tiny facilities beside 8 ordinary ones). The
# analytic interval (the facility intercept's normal posterior, coefficients known)
# against the stored CMS bootstrap interval (facilities resampled, model refitted, 40
# draws), for readmission (logit) and length of stay (Poisson): for facilities with 50
# stays or more the bootstrap interval holds the point estimate and the median ratio of
# the widths (bootstrap / analytic) lies within 0.7-2.5 (the bootstrap adds the
# parameters' uncertainty, so it is the wider one). Label slow: the 80 refits are a
# statistical check, and kpi_hier.sh runs the bootstrap's code (5 draws) in both passes.
# A fixed pseudonymization key fixes the holdout patients, so the fits are the same on
# every run.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kpi_hier_lib.sh"
(umask 077; echo 4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e4b1e >"$PROGNOS_HOME/secret.key")
kpi_hier_data "$WORK/gen"
for m in readmission los; do
    assert_exit 0 px train --model $m --no-build --hier-boot 40 --accept-failed-gates
    grep -q "^hierarchical model: " "$WORK/out" || fail "train $m did not fit the hierarchical model: $(cat "$WORK/out")"
done
python3 - "$PROGNOS_HOME/registry/readmission/1/hierarchical.json" "$PROGNOS_HOME/registry/los/1/hierarchical.json" <<'PY' \
    || fail "bootstrap and analytic intervals disagree"
import json, statistics, sys
for path in sys.argv[1:]:
    h = json.load(open(path))
    assert h["bootstrap"]["draws"] == 40 and h["bootstrap"]["failed"] <= 2, h["bootstrap"]
    big = [f for f in h["facilities"] if f["n"] >= 50]
    assert len(big) >= 5, len(big)
    ratios = []
    for f in big:
        assert f["boot_lo"] <= f["ratio"] <= f["boot_hi"], f
        ratios.append((f["boot_hi"] - f["boot_lo"]) / (f["hi"] - f["lo"]))
    med = statistics.median(ratios)
    print(f"  {h['algo']}: {len(big)} facilities with >= 50 stays, bootstrap / analytic interval width: median {med:.2f}")
    assert 0.7 <= med <= 2.5, med
PY
ok "the analytic intervals agree with the CMS bootstrap in width and centre ($tiny tiny facilities)"
