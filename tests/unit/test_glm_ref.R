# test_glm_ref.R: reference values for test_glm.c and test_model.c from R's glm().
# Reads tests/fixtures/models/glm.csv, writes tests/fixtures/models/glm_ref.txt
# ("key value" lines, values with 17 significant digits).
#   logit_a / pois_a: site with R's default reference 'A' (the design test_glm builds)
#   logit_b / pois_b: site releveled to 'B', the most frequent level (what px_model uses)
# Poisson SEs are the robust sandwich (HC0): bread = (X'WX)^-1, meat = X' diag((y-mu)^2) X,
# the same as sandwich::vcovHC(fit, type = "HC0"), written out so that no package is needed.
# Convergence: epsilon = 1e-14 (tighter than the C fits' 1e-10, so R is the reference).
# Run: Rscript tests/unit/test_glm_ref.R   (from the repository root)
d <- read.csv("tests/fixtures/models/glm.csv", stringsAsFactors = FALSE)
ctl <- glm.control(epsilon = 1e-14, maxit = 100)
out <- character(0)
put <- function(key, v) out <<- c(out, sprintf("%s %s", key, sprintf("%.17g", v)))
emit <- function(tag, fit, V) {
  b <- coef(fit)
  for (j in seq_along(b)) {
    put(sprintf("%s.beta.%d", tag, j - 1), b[[j]])
    put(sprintf("%s.se.%d", tag, j - 1), sqrt(V[j, j]))
  }
  put(paste0(tag, ".deviance"), deviance(fit))
  put(paste0(tag, ".null_deviance"), fit$null.deviance)
  put(paste0(tag, ".loglik"), as.numeric(logLik(fit)))
  f <- fitted(fit)
  for (i in 1:5) put(sprintf("%s.fitted.%d", tag, i - 1), f[[i]])
}
hc0 <- function(fit) {
  X <- model.matrix(fit)
  mu <- fitted(fit)
  y <- fit$y
  bread <- solve(crossprod(X, X * mu))
  meat <- crossprod(X * (y - mu))
  bread %*% meat %*% bread
}
for (ref in c("A", "B")) {
  d$site_f <- relevel(factor(d$site), ref = ref)
  fl <- glm(yb ~ age + los_prior + female + site_f, family = binomial, data = d, control = ctl)
  emit(sprintf("logit_%s", tolower(ref)), fl, vcov(fl))
  fp <- glm(cnt ~ age + los_prior + female + site_f, family = poisson, data = d, control = ctl)
  emit(sprintf("pois_%s", tolower(ref)), fp, hc0(fp))
}
# encoding: training means and population sds of the numeric columns
for (v in c("age", "los_prior", "female")) {
  x <- d[[v]]
  put(paste0("mean.", v), mean(x))
  put(paste0("sd.", v), sqrt(mean((x - mean(x))^2)))
}
writeLines(out, "tests/fixtures/models/glm_ref.txt")
cat("wrote", length(out), "reference values\n")
