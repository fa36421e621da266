# test_glmm_ref.R: the fixture tests/fixtures/glmm/glmm.csv and lme4's reference
# values for test_glmm.c (glmm_ref.txt). Run from the repository root:
#   Rscript tests/unit/test_glmm_ref.R
# The data: 41 facilities, 9 of them with 1-5 stays, a long tail, and a few
# large ones; a binary outcome (logit) and a count (days, Poisson/log), both
# with facility intercepts. References: glmer(nAGQ = 1) as it is, and glmer's own
# Laplace deviance function (mkGlmerDevfun, stage 2) minimized to convergence
# with nlminb from glmer's estimate, its conditional modes solved to 1e-13
# ("tight"): the optimum glmer approximates.
suppressPackageStartupMessages(library(lme4))
set.seed(20261206)
sizes <- c(1, 1, 2, 2, 3, 3, 4, 5, 5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100,
           110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 220, 240, 260, 280, 300, 320, 340, 360)
nf <- length(sizes)
fac <- rep(sprintf("F%02d", seq_len(nf)), sizes)
n <- length(fac)
u1 <- rnorm(nf, 0, 0.5); u2 <- rnorm(nf, 0, 0.3)
names(u1) <- names(u2) <- sprintf("F%02d", seq_len(nf))
age <- round(rnorm(n, 0, 1), 4)
female <- rbinom(n, 1, 0.5)
sev <- round(rexp(n, 1), 4)
adm <- sample(c("a", "b", "c"), n, TRUE, c(0.5, 0.3, 0.2))
adm_b <- as.integer(adm == "b"); adm_c <- as.integer(adm == "c")
eta1 <- -1.6 + 0.5 * age - 0.3 * female + 0.4 * sev + 0.6 * adm_b - 0.4 * adm_c + u1[fac]
yb <- rbinom(n, 1, plogis(eta1))
eta2 <- 1.2 + 0.15 * age + 0.05 * female + 0.2 * sev + 0.1 * adm_b + 0.3 * adm_c + u2[fac]
days <- rpois(n, exp(eta2))
d <- data.frame(fac, age, female, sev, adm_b, adm_c, yb, days)
dir.create("tests/fixtures/glmm", showWarnings = FALSE)
write.csv(d, "tests/fixtures/glmm/glmm.csv", row.names = FALSE, quote = FALSE)

out <- file("tests/fixtures/glmm/glmm_ref.txt", "w")
put <- function(k, v) writeLines(sprintf("%s %.15g", k, v), out)
ref <- function(tag, form, fam) {
  t0 <- proc.time()[["elapsed"]]
  m <- glmer(form, data = d, family = fam, nAGQ = 1)
  put(sprintf("%s.glmer.seconds", tag), proc.time()[["elapsed"]] - t0)
  put(sprintf("%s.glmer.tau", tag), getME(m, "theta"))
  b <- fixef(m)
  for (j in seq_along(b)) put(sprintf("%s.glmer.beta.%d", tag, j - 1), b[[j]])
  put(sprintf("%s.glmer.m2ll", tag), -2 * as.numeric(logLik(m)))
  re <- ranef(m)$fac
  for (g in seq_len(nrow(re))) put(sprintf("%s.glmer.mode.%d", tag, g - 1), re[g, 1])
  # tight: glmer's stage-2 deviance function minimized to convergence
  gf <- glFormula(form, data = d, family = fam)
  # PIRLS (the conditional modes) to 1e-13 instead of glmer's default 1e-7, so
  # that the deviance function is smooth enough for a converged optimum
  df <- do.call(mkGlmerDevfun, c(gf, list(control = glmerControl(tolPwrss = 1e-13))))
  o1 <- optimizeGlmer(df)
  df <- updateGlmerDevfun(df, gf$reTrms)
  o2 <- optimizeGlmer(df, stage = 2)
  st <- c(getME(m, "theta"), b)
  nl <- nlminb(st, df, lower = c(0, rep(-Inf, length(b))),
               control = list(rel.tol = 1e-15, x.tol = 1e-12, eval.max = 1e5, iter.max = 1e4))
  if (nl$objective > o2$fval + 1e-9) stop("nlminb did worse than glmer")
  m2 <- mkMerMod(environment(df), list(par = nl$par, fval = nl$objective, conv = 0, feval = nl$evaluations[1],
                                        message = ""), gf$reTrms, fr = gf$fr)
  put(sprintf("%s.tau", tag), getME(m2, "theta"))
  b2 <- fixef(m2)
  for (j in seq_along(b2)) put(sprintf("%s.beta.%d", tag, j - 1), b2[[j]])
  se <- sqrt(diag(as.matrix(vcov(m2))))
  for (j in seq_along(se)) put(sprintf("%s.se.%d", tag, j - 1), se[[j]])
  put(sprintf("%s.m2ll", tag), -2 * as.numeric(logLik(m2)))
  re2 <- ranef(m2, condVar = TRUE)
  pv <- attr(re2$fac, "postVar")
  for (g in seq_len(nrow(re2$fac))) {
    put(sprintf("%s.mode.%d", tag, g - 1), re2$fac[g, 1])
    put(sprintf("%s.sd.%d", tag, g - 1), sqrt(pv[1, 1, g]))
  }
  put(sprintf("%s.ngroups", tag), nrow(re2$fac))
}
ref("logit", yb ~ age + female + sev + adm_b + adm_c + (1 | fac), binomial)
ref("poisson", days ~ age + female + sev + adm_b + adm_c + (1 | fac), poisson)
close(out)
