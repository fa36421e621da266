#!/usr/bin/env bash
# Training benchmark: logistic regression on 1M rows x 30 features from a planted
# logistic model (bench_train gen, deterministic; written once as CSV), fitted by
# px_logit_fit (2 threads) and, when R is installed, by R's glm() on the same CSV
# in the same run. Both use the same convergence rule and tolerance: R's
# glm.control rule |dev - dev_old| / (|dev| + 0.1) < 1e-10 (epsilon = 1e-10 for R,
# tol = 1e-10 for prognos); both start from R's mustart. Only the fits are timed
# (R: system.time around glm() after read.csv; prognos: around px_logit_fit after
# parsing the CSV). Repetitions alternate between the two so that a change in the
# machine's load hits both alike. Prints the median of the repetitions, the
# ratio, and the largest absolute coefficient difference.
#   usage: tests/bench/train/run.sh [--rows N] [--features K] [--reps R]   (default 1000000, 30, 3)
#          tests/bench/train/run.sh --warehouse URI [--reps R]: feature table to fit on a warehouse's
#          features.readmission (e.g. the one tests/bench/kpi/run.sh builds: ~1M stays): the feature
#          reader's load and px_model_fit, each timed (bench_train table)
# Timing is reported, never asserted: these machines are noisy. Target: prognos at
# most 0.2x R's time, coefficients equal to 1e-6.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/lib.sh"
ROWS=1000000 FEATURES=30 REPS=3 URI=
bench_options 2,17p --warehouse=URI --rows=ROWS --features=FEATURES --reps=REPS -- "$@"
BIN="$ROOT/build/tests/bench_train"
[ -x "$BIN" ] || "$ROOT/scripts/setup.sh"
[ -x "$BIN" ] || cmake --build "$ROOT/build" --target bench_train -j2 >/dev/null
if [ -n "$URI" ]; then
    exec "$BIN" table "$URI" --reps "$REPS"
fi
WORK=$(mktemp -d /tmp/prognos-bench-train.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CSV="$WORK/train.csv"
"$BIN" gen "$CSV" --rows "$ROWS" --features "$FEATURES" --seed 1
echo "data: $ROWS rows x $FEATURES features (+ intercept), $(($(wc -c < "$CSV") / 1048576)) MiB CSV; $REPS repetitions each"

if ! command -v Rscript >/dev/null; then
    read -r px_s px_iter _ _ < <("$BIN" fit "$CSV" --reps "$REPS" --threads 2 --tol 1e-10 --coef "$WORK/px.coef")
    printf 'prognos px_logit_fit: median %.3f s, %d iterations\n' "$px_s" "$px_iter"
    echo "R not installed (r-base-core): no reference timing"
    exit 0
fi
# The repetitions alternate (prognos, R, prognos, R, ...) so that a change in the
# machine's load hits both sides alike; R runs the prognos driver between its fits.
cat > "$WORK/glm.R" <<'REOF'
args <- commandArgs(trailingOnly = TRUE)
csv <- args[1]; bin <- args[2]; work <- args[3]; reps <- as.integer(args[4])
d <- read.csv(csv, colClasses = "numeric")
ctl <- glm.control(epsilon = 1e-10, maxit = 50)
tp <- tr <- numeric(reps)
for (r in seq_len(reps)) {
  out <- system2(bin, c("fit", csv, "--reps", "1", "--threads", "2", "--tol", "1e-10",
                        "--coef", file.path(work, "px.coef")), stdout = TRUE, stderr = FALSE)
  px <- scan(text = out, quiet = TRUE)
  tp[r] <- px[1]
  tr[r] <- system.time(fit <- glm(y ~ ., family = binomial, data = d, control = ctl))[["elapsed"]]
  cat(sprintf("  rep %d: prognos %.3f s (%d iterations), R %.3f s (%d iterations)\n", r, tp[r], px[2], tr[r],
              fit$iter), file = stderr())
}
writeLines(sprintf("%.17g", coef(fit)), file.path(work, "r.coef"))
cat(sprintf("%.6f %d %.6f %d\n", median(tp), px[2], median(tr), fit$iter))
REOF
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r px_s px_iter r_s r_iter < <(Rscript "$WORK/glm.R" "$CSV" "$BIN" "$WORK" "$REPS")
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'prognos px_logit_fit (2 threads): median %.3f s, %d iterations\n' "$px_s" "$px_iter"
printf 'R %s glm(): median %.3f s, %d iterations\n' "$(R --version | head -1 | awk '{print $3}')" "$r_s" "$r_iter"
diff=$(paste "$WORK/px.coef" "$WORK/r.coef" | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d} END {printf "%.3g", m}')
printf 'ratio prognos / R = %.3f (target <= 0.2); largest |coefficient difference| = %s (target <= 1e-6)\n' \
    "$(echo "$px_s / $r_s" | bc -l)" "$diff"
