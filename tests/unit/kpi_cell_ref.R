# kpi_cell_ref.R: reference values for tests/unit/test_kpi_cells.c, the statistics
# of one KPI cell (kpi/stats.c: px_kpi_flag, px_kpi_eb_var_binary,
# px_kpi_eb_var_ratio, px_kpi_los_funnel_var), computed here from unit-level data
# with base R only (R 4.2: poisson.test, glm(quasipoisson), qnorm).
# Regenerate: Rscript tests/unit/kpi_cell_ref.R > tests/unit/kpi_cell_ref.txt
# Each line: a tag, the inputs, then the expected outputs, space-separated, 15
# significant digits. Flags are coded -1 better, 0 no different, 1 worse.
out <- function(tag, ...) cat(tag, formatC(c(...), digits = 15, format = "g"), "\n")
z <- function(conf) qnorm(0.5 + conf / 2)
flag <- function(lo, hi) if (lo > 1) 1 else if (hi < 1) -1 else 0

# Flag rule on the exact (Garwood) O/E interval, poisson.test(o, T = e): cells
# on both sides of each boundary (the lower limit just above / below 1, the upper
# limit just below / above 1), and ordinary ones. Below 50 events the C side
# uses the exact interval too (px_kpi_oe's default rule).
for (conf in c(0.95, 0.998)) for (o in c(1, 3, 10, 27, 49)) {
  lo_at1 <- qgamma((1 - conf) / 2, o)           # e at which the lower limit is 1
  hi_at1 <- qgamma((1 + conf) / 2, o + 1)       # e at which the upper limit is 1
  for (e in c(lo_at1 * (1 - 1e-6), lo_at1 * (1 + 1e-6), hi_at1 * (1 - 1e-6), hi_at1 * (1 + 1e-6), o, o / 2, o * 3)) {
    ci <- poisson.test(o, T = e, conf.level = conf)$conf.int
    out("flag", o, e, conf, ci[1], ci[2], flag(ci[1], ci[2]))
  }
}

# Empirical-Bayes noise variance of a binary measure's risk-standardized rate,
# RSR = O/E * ref: Var(O) under the model is the sum of the stays' Bernoulli
# variances, so Var(RSR) = ref^2 sum p(1-p) / E^2. Here from the stays'
# probabilities p (written to the line so the C side sums them itself), and then
# the whole group: DerSimonian-Laird shrinkage towards ref (as kpi_ref.R's eb()).
set.seed(21)
ref <- 0.15
k <- 12
units <- lapply(seq_len(k), function(i) {
  n <- sample(c(3, 8, 20, 60), 1)
  p <- plogis(rnorm(n, qlogis(0.15), 0.7))
  y <- rbinom(n, 1, plogis(qlogis(p) + rnorm(1, 0, 0.3)))
  list(p = p, y = y)
})
rsr <- v <- numeric(k)
for (i in seq_len(k)) {
  p <- units[[i]]$p; o <- sum(units[[i]]$y); e <- sum(p)
  v[i] <- ref^2 * sum(p * (1 - p)) / e^2
  rsr[i] <- o / e * ref
  out("ebvar_bin", ref, o, length(p), v[i], p)
}
w <- 1 / v; m <- sum(w * rsr) / sum(w)
q <- sum(w * (rsr - m)^2)
s2 <- max(0, (q - (k - 1)) / (sum(w) - sum(w^2) / sum(w)))
lam <- s2 / (s2 + v)
out("ebgroup_bin", k, ref, s2, lam * rsr + (1 - lam) * ref)

# Continuous measure (LOS): the robust interval of O/E is exp(b +- z se) with b
# and se from the quasi-Poisson GLM with offset log(e) and the HC0 sandwich
# (kpi_ref.R, ratio_robust); the EB noise variance is the delta method's
# ref^2 exp(b)^2 se^2, computed here from se directly.
set.seed(22)
for (n in c(6, 40, 800)) for (conf in c(0.95, 0.9)) {
  e <- 1 + rgamma(n, 2, 0.5)
  y <- rnbinom(n, mu = e * 1.05, size = 1.5)
  f <- glm(y ~ 1 + offset(log(e)), family = quasipoisson)
  mu <- fitted(f)
  se <- sqrt(sum((y - mu)^2)) / sum(mu)
  b <- coef(f)[[1]]
  ref <- 4.7
  out("ebvar_los", n, sum(y), sum(e), sum(y^2), sum(y * e), sum(e^2), conf, ref, ref^2 * exp(2 * b) * se^2)
}

# LOS funnel: the system's per-stay residual variance on the O/E scale,
# mean((y - e)^2) / mean(e)^2, from the stays themselves; limits for a unit of
# n_u stays 1 +- z sqrt(phi var / n_u) (phi = 1 when not over-dispersed).
set.seed(23)
for (n in c(50, 2000)) {
  e <- 1 + rgamma(n, 2, 0.5)
  y <- rnbinom(n, mu = e, size = 2)
  fv <- mean((y - e)^2) / mean(e)^2
  for (nu in c(5, 120)) for (conf in c(0.95, 0.998)) for (phi in c(1, 2.5)) {
    h <- z(conf) * sqrt(max(phi, 1) * fv / nu)
    out("losfunnel", n, sum(e), sum(y^2), sum(y * e), sum(e^2), nu, conf, phi, fv, 1 - h, 1 + h)
  }
}
