#!/usr/bin/env bash
# Training benchmark: logistic regression on 1M rows x 30 features from a planted
# logistic model (bench_train gen, deterministic; written once as CSV), fitted by
# px_logit_fit (2 threads) and, when R is installed, by R's glm() on the same CSV
# in the same run. Both use the same convergence rule and tolerance: R's
# glm.control rule |dev - dev_old| / (|dev| + 0.1) < 1e-10 (epsilon = 1e-10 for R,
# tol = 1e-10 for prognos); both start from R's mustart. Only the fits are timed
# (R: system.time around glm() after read.csv). Prints the median of the
# repetitions, the ratio, and the largest absolute coefficient difference.
#   usage: tests/bench/train/run.sh [--rows N] [--features K] [--reps R]   (default 1000000, 30, 3)
# Timing is reported, never asserted: these machines are noisy. Target: prognos at
# most 0.2x R's time, coefficients equal to 1e-6.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
ROWS=1000000 FEATURES=30 REPS=3
while [ $# -gt 0 ]; do
    case $1 in
        --rows) ROWS=$2; shift 2 ;;
        --features) FEATURES=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
BIN="$ROOT/build/tests/bench_train"
[ -x "$BIN" ] || "$ROOT/scripts/setup.sh"
[ -x "$BIN" ] || cmake --build "$ROOT/build" --target bench_train -j2 >/dev/null
WORK=$(mktemp -d /tmp/prognos-bench-train.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CSV="$WORK/train.csv"
"$BIN" gen "$CSV" --rows "$ROWS" --features "$FEATURES" --seed 1
echo "data: $ROWS rows x $FEATURES features (+ intercept), $(($(wc -c < "$CSV") / 1048576)) MiB CSV; $REPS repetitions each"

read -r px_s px_iter _ _ < <("$BIN" fit "$CSV" --reps "$REPS" --threads 2 --tol 1e-10 --coef "$WORK/px.coef")
printf 'prognos px_logit_fit: median %.3f s, %d iterations\n' "$px_s" "$px_iter"

if ! command -v Rscript >/dev/null; then
    echo "R not installed (r-base-core): no reference timing"
    exit 0
fi
cat > "$WORK/glm.R" <<'REOF'
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = "numeric")
reps <- as.integer(args[3])
ctl <- glm.control(epsilon = 1e-10, maxit = 50)
t <- numeric(reps)
for (r in seq_len(reps)) {
  t[r] <- system.time(fit <- glm(y ~ ., family = binomial, data = d, control = ctl))[["elapsed"]]
  cat(sprintf("  R rep %d: %.3f s (%d iterations)\n", r, t[r], fit$iter), file = stderr())
}
writeLines(sprintf("%.17g", coef(fit)), args[2])
cat(sprintf("%.6f %d\n", median(t), fit$iter))
REOF
read -r r_s r_iter < <(Rscript "$WORK/glm.R" "$CSV" "$WORK/r.coef" "$REPS")
printf 'R %s glm(): median %.3f s, %d iterations\n' "$(R --version | head -1 | awk '{print $3}')" "$r_s" "$r_iter"
diff=$(paste "$WORK/px.coef" "$WORK/r.coef" | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d} END {printf "%.3g", m}')
printf 'ratio prognos / R = %.3f (target <= 0.2); largest |coefficient difference| = %s (target <= 1e-6)\n' \
    "$(echo "$px_s / $r_s" | bc -l)" "$diff"
