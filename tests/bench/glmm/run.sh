#!/usr/bin/env bash
# Hierarchical-model benchmark: a random-intercept logistic model on 188,000 stays
# x 19 features x 200 facilities (long-tailed facility sizes; bench_glmm gen,
# deterministic, written once as CSV), fitted by prognos's px_glmm_fit_dense
# (Laplace approximation) and, when R with lme4 is installed, by
# lme4::glmer(nAGQ = 1) on the same CSV in the same run. Only the fits are timed
# (R: system.time around glmer() after read.csv; prognos: around
# px_glmm_fit_dense after parsing the CSV), wall and CPU time (CPU is the fairer
# measure on a shared machine). Prints both times, the ratios, and the
# largest relative differences of tau, the fixed effects and the facility modes.
#   usage: tests/bench/glmm/run.sh [--rows N] [--features K] [--groups G] [--family logit|poisson]
#          (default 188000, 19, 200, logit)
# Timing is reported, never asserted: these machines are noisy. Target: prognos
# under 1/50 of glmer's time, estimates equal to 1e-4 relative.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
ROWS=188000 FEATURES=19 NFAC=200 FAMILY=logit
bench_options 2,13p --rows=ROWS --features=FEATURES --groups=NFAC --family=FAMILY -- "$@"
case $FAMILY in logit|poisson) ;; *) echo "--family is logit or poisson" >&2; exit 2 ;; esac
BIN="$ROOT/build/tests/bench_glmm"
[ -x "$BIN" ] || cmake --build "$ROOT/build" --target bench_glmm -j2 >/dev/null
WORK=$(mktemp -d /tmp/prognos-bench-glmm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CSV="$WORK/glmm.csv"
"$BIN" gen "$CSV" --rows "$ROWS" --features "$FEATURES" --groups "$NFAC" --seed 1 --family "$FAMILY"
echo "data: $ROWS rows x $FEATURES features (+ intercept), $NFAC facilities, $FAMILY"
read -r px_s px_cpu px_iter px_tau _ < <("$BIN" fit "$CSV" --family "$FAMILY" --coef "$WORK/px.coef")
printf 'prognos px_glmm_fit_dense: %.3f s wall, %.3f s CPU, %d Newton iterations, tau %.6f\n' "$px_s" "$px_cpu" \
    "$px_iter" "$px_tau"
if ! command -v Rscript >/dev/null || ! Rscript -e 'suppressPackageStartupMessages(library(lme4))' >/dev/null 2>&1; then
    echo "R with lme4 not installed (r-cran-lme4): no reference timing"
    exit 0
fi
FAM=$([ "$FAMILY" = logit ] && echo binomial || echo poisson)
Rscript - "$CSV" "$WORK/r.coef" "$FAM" <<'REOF' > "$WORK/r.out"
suppressPackageStartupMessages(library(lme4))
a <- commandArgs(TRUE)
d <- read.csv(a[1])
xs <- grep("^x", names(d), value = TRUE)
f <- as.formula(paste("y ~", paste(xs, collapse = " + "), "+ (1 | fac)"))
st <- system.time(m <- glmer(f, data = d, family = a[3], nAGQ = 1))
b <- fixef(m); re <- ranef(m)$fac[, 1]
writeLines(c(sprintf("tau %.15g", getME(m, "theta")), sprintf("beta.%d %.15g", seq_along(b) - 1, b),
             sprintf("mode.%d %.15g", seq_along(re) - 1, re)), a[2])
cat(sprintf("%.3f %.3f\n", st[["elapsed"]], st[["user.self"]] + st[["sys.self"]]))
REOF
read -r r_s r_cpu < <(tail -1 "$WORK/r.out")
printf 'R lme4::glmer(nAGQ = 1): %.3f s wall, %.3f s CPU\n' "$r_s" "$r_cpu"
# CPU time is the fairer ratio on a shared machine: wall time includes waiting for a core
awk -v p="$px_s" -v r="$r_s" -v pc="$px_cpu" -v rc="$r_cpu" 'BEGIN {
    printf "ratio prognos / glmer: wall %.5f (glmer %.0fx as long), CPU %.5f (glmer %.0fx)\n", p / r, r / p, pc / rc, rc / pc }'
# largest relative difference (absolute below 1) per kind of estimate
awk 'NR == FNR { v[$1] = $2; next }
     { k = $1; sub(/\..*/, "", k); d = $2 - v[$1]; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2; if (s > 1) d /= s;
       if (d > w[k]) w[k] = d }
     END { printf "max rel. difference to glmer: tau %.2g, beta %.2g, facility modes %.2g\n", w["tau"], w["beta"], w["mode"] }' \
    "$WORK/px.coef" "$WORK/r.coef"
