# kpi_ref.R: reference values for tests/unit/test_kpi_stats.c, from base R only
# (R 4.2: prop.test, binom.test, poisson.test, t.test, glm, qpois/qbinom).
# Regenerate: Rscript tests/unit/kpi_ref.R > tests/unit/kpi_ref.txt
# Each line: a tag, the inputs, then the expected outputs, space-separated,
# printed with 15 significant digits.
out <- function(tag, ...) cat(tag, formatC(c(...), digits = 15, format = "g"), "\n")
confs <- c(0.95, 0.998, 0.9)

# Wilson score interval = prop.test without continuity correction;
# Clopper-Pearson = binom.test.
for (conf in confs) for (nx in list(c(0, 10), c(1, 10), c(5, 10), c(10, 10), c(3, 25), c(24, 25),
                                    c(150, 1000), c(1, 100000), c(61234, 400000), c(7, 7))) {
  x <- nx[1]; n <- nx[2]
  w <- suppressWarnings(prop.test(x, n, conf.level = conf, correct = FALSE))$conf.int
  out("wilson", x, n, conf, w[1], w[2])
  b <- binom.test(x, n, conf.level = conf)$conf.int
  out("clopper", x, n, conf, b[1], b[2])
}

# Exact Poisson limits (poisson.test) and Byar's formula, and O/E with T = expected.
z <- function(conf) qnorm(0.5 + conf / 2)
byar <- function(o, conf) {
  lo <- if (o > 0) o * (1 - 1 / (9 * o) - z(conf) / (3 * sqrt(o)))^3 else 0
  o1 <- o + 1
  c(max(lo, 0), o1 * (1 - 1 / (9 * o1) + z(conf) / (3 * sqrt(o1)))^3)
}
for (conf in confs) for (o in c(0, 1, 2, 3, 5, 6, 10, 25, 49, 50, 51, 100, 1000, 12345, 250000)) {
  p <- poisson.test(o, conf.level = conf)$conf.int
  out("poisson", o, conf, p[1], p[2])
  out("byar", o, conf, byar(o, conf))
}
for (conf in confs) for (oe in list(c(0, 3.2), c(4, 2.5), c(12, 20.7), c(49, 40.1), c(50, 40.1),
                                    c(180, 150.3), c(2345, 2500.5))) {
  p <- poisson.test(oe[1], T = oe[2], conf.level = conf)
  out("oe_exact", oe[1], oe[2], conf, p$estimate, p$conf.int[1], p$conf.int[2])
}

# Student-t interval of a mean from sums.
set.seed(11)
for (n in c(2, 5, 30, 1000)) for (conf in c(0.95, 0.99)) {
  x <- rlnorm(n, 9.5, 0.8)
  t <- t.test(x, conf.level = conf)$conf.int
  out("mean_t", n, sum(x), sum(x^2), conf, mean(x), t[1], t[2])
}

# O/E of LOS: quasi-Poisson GLM with offset log(e), intercept only; its estimate
# is log(sum y / sum e); HC0 sandwich standard error computed by hand from the fit.
set.seed(12)
for (n in c(5, 40, 500, 20000)) for (conf in c(0.95, 0.998)) {
  e <- 1 + rgamma(n, 2, 0.5)
  y <- rnbinom(n, mu = e * 1.1, size = 1.5)
  f <- glm(y ~ 1 + offset(log(e)), family = quasipoisson)
  mu <- fitted(f)
  bread <- 1 / sum(mu)
  meat <- sum((y - mu)^2)
  se <- sqrt(bread * meat * bread)
  b <- coef(f)[[1]]
  out("ratio_robust", n, sum(y), sum(e), sum(y^2), sum(y * e), sum(e^2), conf,
      exp(b), exp(b - z(conf) * se), exp(b + z(conf) * se))
}

# Empirical Bayes: DerSimonian-Laird signal variance, AHRQ reliability weights.
eb <- function(tag, r, v, target) {
  w <- 1 / v; k <- length(r)
  m <- sum(w * r) / sum(w)
  q <- sum(w * (r - m)^2)
  s2 <- max(0, (q - (k - 1)) / (sum(w) - sum(w^2) / sum(w)))
  lam <- s2 / (s2 + v)
  out(paste0(tag, "_s2"), k, target, s2)
  for (i in seq_len(k)) out(tag, i - 1, r[i], v[i], lam[i] * r[i] + (1 - lam[i]) * target, lam[i])
}
set.seed(13)
k <- 40
n <- round(rlnorm(k, 7, 0.8)); p <- plogis(rnorm(k, qlogis(0.15), 0.2))
y <- rbinom(k, n, p); r <- y / n; v <- 0.15 * 0.85 / n
eb("eb_a", r, v, 0.15)
# no signal beyond noise: s2 floors at 0, everything shrinks to the target
eb("eb_b", c(0.10, 0.11, 0.105, 0.1), c(0.01, 0.01, 0.02, 0.03), 0.1)

# Funnel limits (Spiegelhalter 2005, appendix): interpolated exact quantiles.
interp <- function(p, q, cdf) { r <- q(p); fr <- cdf(r); fr1 <- if (r > 0) cdf(r - 1) else 0
  r - (fr - p) / (fr - fr1) }
for (conf in c(0.95, 0.998)) for (e in c(0.7, 3.3, 10, 47.5, 250, 1234.5, 60000)) for (phi in c(1, 1.8)) {
  pl <- (1 - conf) / 2; pu <- (1 + conf) / 2
  lo <- interp(pl, function(p) qpois(p, e), function(r) ppois(r, e)) / e
  hi <- interp(pu, function(p) qpois(p, e), function(r) ppois(r, e)) / e
  k <- if (phi > 1) sqrt(phi) else 1
  out("funnel_oe", e, conf, phi, max(0, 1 + (lo - 1) * k), 1 + (hi - 1) * k)
}
for (conf in c(0.95, 0.998)) for (n in c(25, 100, 1000, 25000)) for (t in c(0.06, 0.15)) for (phi in c(1, 1.5)) {
  pl <- (1 - conf) / 2; pu <- (1 + conf) / 2
  lo <- interp(pl, function(p) qbinom(p, n, t), function(r) pbinom(r, n, t)) / n
  hi <- interp(pu, function(p) qbinom(p, n, t), function(r) pbinom(r, n, t)) / n
  k <- if (phi > 1) sqrt(phi) else 1
  out("funnel_prop", n, t, conf, phi, max(0, t + (lo - t) * k), min(1, t + (hi - t) * k))
}

# Over-dispersion factor: mean squared z after Winsorizing at the 10% / 90% quantiles (type 7).
set.seed(14)
for (k in c(7, 40, 200)) {
  zs <- rnorm(k, 0, 1.4); zs[1] <- 6
  q <- quantile(zs, c(0.1, 0.9))
  phi <- mean(pmin(pmax(zs, q[1]), q[2])^2)
  out("phi", k, 0.1, phi, zs)
}
