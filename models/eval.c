/* eval.c: evaluation metrics for binary risk scores and for regression.
 * Binary metrics come from one stable sort of the scores (ascending p, ties in
 * row order; a radix sort, so O(n) where O(n log n) was asked) and sweeps over
 * it; inputs are checked first (n > 0, y in {0,1}, p in [0,1] and not NaN, both
 * classes) and *out is written only on success. */
#include "models/models.h"
#include <cjson/cJSON.h>
#include <gsl/gsl_cdf.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Calibration fits take logit(p) of p clipped to [PCLIP, 1 - PCLIP], so that a
 * score of exactly 0 or 1 gives a large finite logit (about -/+27.6) instead of -/+inf. */
#define PCLIP 1e-12
/* Half-width of the 95% normal interval, as specified: auc +- 1.96 se. */
#define Z95 1.96

static const double thresholds[PX_EVAL_THRESHOLDS] = {0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5};

typedef struct { double p; size_t i; } key;   /* a score and its row */

static uint64_t bits_of(double p)
{
    uint64_t u;
    p += 0.0;   /* -0.0 -> +0.0 */
    memcpy(&u, &p, sizeof u);
    return u;
}

/* ---- input checks -------------------------------------------------------- */

/* Returns 0 and the number of events in *events, or PX_EINVAL naming the first bad row. */
static int check_binary(const double *y, const double *p, size_t n, const char *what, size_t *events, px_err *e)
{
    size_t ev = 0;
    if (n == 0) return px_err_set(e, PX_EINVAL, "cannot evaluate %s: no rows", what);
    for (size_t i = 0; i < n; i++) {
        if (!(y[i] == 0.0 || y[i] == 1.0))
            return px_err_set(e, PX_EINVAL, "cannot evaluate %s: label of row %zu is %g, not 0 or 1", what, i, y[i]);
        if (!(p[i] >= 0.0 && p[i] <= 1.0))   /* also refuses NaN */
            return px_err_set(e, PX_EINVAL, "cannot evaluate %s: probability of row %zu is %g, not in [0,1]", what, i,
                              p[i]);
        ev += y[i] == 1.0;
    }
    if (ev == 0 || ev == n)
        return px_err_set(e, PX_EINVAL, "cannot evaluate %s: all %zu rows have label %d (AUC needs both classes)", what,
                          n, ev ? 1 : 0);
    *events = ev;
    return 0;
}

/* ---- sorting ------------------------------------------------------------- */

/* Stable LSD radix sort of k[0..n) by p ascending; tmp holds n keys. For
 * p >= 0 (checked before) the IEEE-754 bit pattern read as an unsigned integer
 * orders like the value (p + 0.0 turns -0.0 into +0.0). 11-bit digits, 6
 * passes, a pass skipped when one bucket holds every key (the high bits of
 * probabilities rarely vary). Stability plus keys built in row order makes the
 * tie rule "row order", which the decile grouping relies on (documented and
 * reproduced by the reference script). O(n), unlike a comparison sort. */
#define RADIX_BITS 11
#define RADIX_PASSES 6   /* ceil(64 / 11) */
static int sort_keys(key *k, key *tmp, size_t n)
{
    size_t (*count)[1 << RADIX_BITS] = calloc(RADIX_PASSES, sizeof *count);
    if (!count) return -1;
    const uint64_t mask = (1u << RADIX_BITS) - 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t u = bits_of(k[i].p);
        for (int d = 0; d < RADIX_PASSES; d++) count[d][(u >> (d * RADIX_BITS)) & mask]++;
    }
    key *src = k, *dst = tmp;
    for (int d = 0; d < RADIX_PASSES; d++) {
        size_t *c = count[d], sum = 0;
        uint64_t first = (bits_of(src[0].p) >> (d * RADIX_BITS)) & mask;
        if (c[first] == n) continue;   /* every key has the same digit: nothing to do */
        for (size_t b = 0; b <= mask; b++) {   /* counts -> start offsets */
            size_t t = c[b];
            c[b] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++) dst[c[(bits_of(src[i].p) >> (d * RADIX_BITS)) & mask]++] = src[i];
        key *t = src;
        src = dst;
        dst = t;
    }
    if (src != k) memcpy(k, src, n * sizeof *k);
    free(count);
    return 0;
}

/* Returns the n scores sorted (caller frees), or NULL on ENOMEM. */
static key *sorted_scores(const double *p, size_t n)
{
    if (n > SIZE_MAX / sizeof(key)) return NULL;
    key *k = malloc(n * sizeof *k), *tmp = malloc(n * sizeof *tmp);
    if (!k || !tmp) {
        free(k);
        free(tmp);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) k[i] = (key){p[i], i};
    int rc = sort_keys(k, tmp, n);
    free(tmp);
    if (rc) {
        free(k);
        return NULL;
    }
    return k;
}

/* ---- AUC and DeLong ------------------------------------------------------ */

/* DeLong, DeLong & Clarke-Pearson (1988) structural components ("placement
 * values"), per row: an event i gets V10 = P(score of a non-event < s_i) + 1/2
 * P(tie); a non-event j gets V01 = P(score of an event > s_j) + 1/2 P(tie).
 * Sun & Xu (2014) obtain them from mid-ranks, V10 = (Tz - Tx)/n0 with Tz the
 * pooled and Tx the within-class mid-rank; counting the other class below / in
 * each tie group of the one pooled sort is the same quantity, in O(n).
 * Returns the Mann-Whitney AUC (ties count 1/2), computed in exact integer
 * arithmetic before the one division. */
static double placements(const key *s, const double *y, size_t n, size_t n1, double *v)
{
    size_t n0 = n - n1, neg_below = 0, pos_below = 0;
    uint64_t twice = 0;   /* 2 * sum over events of (#non-events below + 1/2 #tied) */
    for (size_t a = 0; a < n;) {
        size_t b = a, pos = 0, neg = 0;
        for (; b < n && s[b].p == s[a].p; b++) pos += y[s[b].i] == 1.0;
        neg = (b - a) - pos;
        double v10 = ((double)neg_below + 0.5 * (double)neg) / (double)n0;
        double v01 = ((double)(n1 - pos_below - pos) + 0.5 * (double)pos) / (double)n1;
        for (size_t c = a; c < b; c++) v[s[c].i] = y[s[c].i] == 1.0 ? v10 : v01;
        twice += (uint64_t)pos * (2 * (uint64_t)neg_below + neg);
        neg_below += neg;
        pos_below += pos;
        a = b;
    }
    return (double)twice / 2.0 / ((double)n1 * (double)n0);
}

/* Sample variance (denominator m - 1) of d[i] = v1[i] - (v2 ? v2[i] : 0) over the
 * rows of class cls. DeLong's S10 (events) and S01 (non-events) use m - 1. */
static double class_var(const double *y, const double *v1, const double *v2, size_t n, double cls, size_t m)
{
    double sum = 0, ss = 0;
    for (size_t i = 0; i < n; i++)
        if (y[i] == cls) sum += v1[i] - (v2 ? v2[i] : 0);
    double mean = sum / (double)m;
    for (size_t i = 0; i < n; i++)
        if (y[i] == cls) {
            double d = v1[i] - (v2 ? v2[i] : 0) - mean;
            ss += d * d;
        }
    return ss / (double)(m - 1);
}

/* ---- average precision --------------------------------------------------- */

/* scikit-learn's average_precision_score: AP = sum_k (R_k - R_{k-1}) P_k over
 * the distinct scores taken as thresholds from the highest down (a tie group is
 * one threshold, all its rows enter together), P_k = TP_k / (TP_k + FP_k),
 * R_k = TP_k / n1. The step function, no interpolation. */
static double average_precision(const key *s, const double *y, size_t n, size_t n1)
{
    double ap = 0;
    size_t tp = 0, taken = 0;
    for (size_t b = n; b > 0;) {
        size_t a = b, pos = 0;
        for (; a > 0 && s[a - 1].p == s[b - 1].p; a--) pos += y[s[a - 1].i] == 1.0;
        tp += pos;
        taken += b - a;
        if (pos) ap += ((double)pos / (double)n1) * ((double)tp / (double)taken);
        b = a;
    }
    return ap;
}

/* ---- calibration --------------------------------------------------------- */

/* x[i] = logit(p[i]) with p clipped to [PCLIP, 1 - PCLIP]. */
static void clipped_logits(const double *p, size_t n, double *x)
{
    for (size_t i = 0; i < n; i++) {
        double pc = fmin(fmax(p[i], PCLIP), 1.0 - PCLIP);
        x[i] = log(pc / (1.0 - pc));   /* one log; the quotient is accurate to an ulp */
    }
}

/* Maximum-likelihood logistic regression of y on logit(P(y)) = a + x (slope == 0:
 * x is an offset, calibration-in-the-large) or a + b x (slope == 1), by Newton's
 * method with step halving when the log-likelihood drops. Starts at a = 0, b = 1
 * (perfect calibration). Returns 0, or -1 when the fit has no finite answer
 * (singular information: x constant; or no convergence in 100 steps:
 * separation); *a and *b are then NaN. */
static int logit_newton(const double *x, const double *y, size_t n, int slope, double *a_out, double *b_out)
{
    double a = 0, b = 1, a_old = 0, b_old = 1, ll_old = -INFINITY;
    *a_out = *b_out = NAN;
    for (int it = 0, halvings = 0; it < 100; it++) {
        double ll = 0, g0 = 0, g1 = 0, h00 = 0, h01 = 0, h11 = 0;
        for (size_t i = 0; i < n; i++) {
            double eta = a + (slope ? b : 1.0) * x[i];
            /* log(1 + exp(eta)) and mu = 1/(1 + exp(-eta)) without overflow, one exp() */
            double t = exp(-fabs(eta));
            double l1p = (eta > 0 ? eta : 0) + log1p(t);
            double mu = eta > 0 ? 1.0 / (1.0 + t) : t / (1.0 + t);
            double w = mu * (1.0 - mu), r = y[i] - mu;
            ll += y[i] * eta - l1p;
            g0 += r;
            h00 += w;
            if (slope) {
                g1 += r * x[i];
                h01 += w * x[i];
                h11 += w * x[i] * x[i];
            }
        }
        if (!isfinite(ll)) return -1;
        if (ll < ll_old - 1e-12 * fabs(ll_old)) {   /* overshoot: halve back towards the last point */
            if (++halvings > 40) return -1;
            a = (a + a_old) / 2;
            b = (b + b_old) / 2;
            continue;
        }
        halvings = 0;
        double da, db = 0;
        if (slope) {
            double det = h00 * h11 - h01 * h01;
            if (!(det > 1e-13 * h00 * h11)) return -1;   /* logit(p) (nearly) constant */
            da = (h11 * g0 - h01 * g1) / det;
            db = (h00 * g1 - h01 * g0) / det;
        } else {
            if (!(h00 > 0)) return -1;
            da = g0 / h00;
        }
        a_old = a;
        b_old = b;
        ll_old = ll;
        a += da;
        b += db;
        if (fabs(da) <= 1e-10 * (1 + fabs(a)) && fabs(db) <= 1e-10 * (1 + fabs(b))) {
            *a_out = a;
            *b_out = slope ? b : NAN;
            return 0;
        }
    }
    return -1;
}

/* ---- deciles of risk and Hosmer-Lemeshow --------------------------------- */

/* Groups: G = min(10, n) groups of consecutive rows in the sorted order
 * (ascending p, ties in row order, so tied scores may straddle a boundary);
 * with n = qG + r the first r groups hold q + 1 rows, the rest q (numpy's
 * array_split rule). Hosmer & Lemeshow (1980) C-hat statistic: sum over groups
 * of (O - E)^2 / (E (1 - E/n_g)), O observed events and E the sum of p in the
 * group, referred to chi-square with G degrees of freedom: this evaluates
 * fixed predictions on rows they were not fitted on (a holdout), so no parameter
 * is estimated from these rows and none is subtracted (Hosmer & Lemeshow,
 * Applied Logistic Regression, 3rd ed., section 5.2.2 on external validation;
 * G - 2 is the in-sample rule and rejects 9-12% of well-calibrated holdouts
 * at alpha 0.05 instead of 5%: tests/unit/test_eval.c simulates it). A group with
 * E (1 - E/n_g) = 0 (all p 0 or all 1) adds 0 if O == E, else makes the
 * statistic infinite (p-value 0). With G < 2 there is no test: NaN. */
static void deciles(const key *s, const double *y, size_t n, px_eval_bin *ev)
{
    size_t G = n < PX_EVAL_GROUPS ? n : PX_EVAL_GROUPS, q = n / G, r = n % G, at = 0;
    double chi2 = 0;
    ev->ngroups = G;
    for (size_t g = 0; g < G; g++) {
        size_t m = q + (g < r);
        double E = 0, O = 0;
        for (size_t c = at; c < at + m; c++) {
            E += s[c].p;
            O += y[s[c].i];
        }
        at += m;
        ev->group[g].n = m;
        ev->group[g].events = O;
        ev->group[g].mean_pred = E / (double)m;
        ev->group[g].obs_rate = O / (double)m;
        double den = E * (1.0 - E / (double)m);
        if (den > 0)
            chi2 += (O - E) * (O - E) / den;
        else if (O != E)
            chi2 = INFINITY;
    }
    ev->hl_df = (int)G;
    ev->hl_chi2 = chi2;
    if (ev->hl_df < 2)
        ev->hl_p = NAN;
    else
        ev->hl_p = isinf(chi2) ? 0.0 : gsl_cdf_chisq_Q(chi2, (double)ev->hl_df);
}

/* ---- public -------------------------------------------------------------- */

static double ratio(size_t a, size_t b)
{
    return b ? (double)a / (double)b : NAN;
}

/* Returns 0 and fills *out; PX_EINVAL (no rows, a label not 0/1, a probability
 * NaN or outside [0,1], one class only) or PX_ENOMEM, *out untouched. auc_se and
 * the interval are NaN with fewer than 2 events or 2 non-events (DeLong's sample
 * variances need 2); cal_* are NaN when the fit has no finite solution
 * (cal_slope under separation). The calibration fits use logit(p) of p clipped
 * to [1e-12, 1 - 1e-12]; Brier, deciles and HL use p as given. */
int px_eval_binary(const double *y, const double *p, size_t n, px_eval_bin *out, px_err *e)
{
    px_models_init(); /* GSL reports, never aborts */
    size_t n1 = 0;
    int rc = check_binary(y, p, n, "binary predictions", &n1, e);
    if (rc) return rc;
    px_eval_bin ev;
    memset(&ev, 0, sizeof ev);
    double *v = NULL, *x = NULL;
    key *s = sorted_scores(p, n);
    v = n <= SIZE_MAX / sizeof(double) ? malloc(n * sizeof *v) : NULL;
    x = v ? calloc(n, sizeof *x) : NULL;   /* calloc: GCC 12 cannot see clipped_logits() fill it */
    if (!s || !v || !x) {
        rc = px_err_set(e, PX_ENOMEM, "cannot evaluate binary predictions: out of memory for %zu rows", n);
        goto cleanup;
    }
    size_t n0 = n - n1;
    ev.n = n;
    ev.events = n1;

    ev.auc = placements(s, y, n, n1, v);
    if (n1 >= 2 && n0 >= 2) {
        /* Var(AUC) = S10/n1 + S01/n0 (DeLong et al. 1988, eq. for one score) */
        double var = class_var(y, v, NULL, n, 1.0, n1) / (double)n1 + class_var(y, v, NULL, n, 0.0, n0) / (double)n0;
        ev.auc_se = sqrt(var);
        ev.auc_lo = fmax(0.0, ev.auc - Z95 * ev.auc_se);
        ev.auc_hi = fmin(1.0, ev.auc + Z95 * ev.auc_se);
    } else {
        ev.auc_se = ev.auc_lo = ev.auc_hi = NAN;
    }
    ev.auprc = average_precision(s, y, n, n1);

    double brier = 0;
    for (size_t i = 0; i < n; i++) brier += (p[i] - y[i]) * (p[i] - y[i]);
    ev.brier = brier / (double)n;
    clipped_logits(p, n, x);

    double a = NAN, b = NAN;   /* set by logit_newton: NaN when there is no finite fit */
    logit_newton(x, y, n, 0, &a, &b);
    ev.cal_intercept = a;
    logit_newton(x, y, n, 1, &a, &b);
    ev.cal_slope = b;

    deciles(s, y, n, &ev);

    /* Confusion counts at fixed thresholds: a row is predicted positive when p >= t
     * (the thresholds ascend, so a row stops at the first one above its p). */
    for (int t = 0; t < PX_EVAL_THRESHOLDS; t++) {
        ev.thr[t].threshold = thresholds[t];
        ev.thr[t].tp = ev.thr[t].fp = 0;
    }
    for (size_t i = 0; i < n; i++)
        for (int t = 0; t < PX_EVAL_THRESHOLDS && p[i] >= thresholds[t]; t++) {
            if (y[i] == 1.0)
                ev.thr[t].tp++;
            else
                ev.thr[t].fp++;
        }
    for (int t = 0; t < PX_EVAL_THRESHOLDS; t++) {
        ev.thr[t].fn = n1 - ev.thr[t].tp;
        ev.thr[t].tn = n0 - ev.thr[t].fp;
        ev.thr[t].sens = ratio(ev.thr[t].tp, n1);
        ev.thr[t].spec = ratio(ev.thr[t].tn, n0);
        ev.thr[t].ppv = ratio(ev.thr[t].tp, ev.thr[t].tp + ev.thr[t].fp);   /* NaN: nobody predicted positive */
        ev.thr[t].npv = ratio(ev.thr[t].tn, ev.thr[t].tn + ev.thr[t].fn);   /* NaN: nobody predicted negative */
    }
    *out = ev;
cleanup:
    free(s);
    free(v);
    free(x);
    return rc;
}

/* DeLong et al. (1988) test of H0: AUC1 = AUC2 for two scores on the same rows.
 * Var(AUC1 - AUC2) = L S L' with L = (1, -1) and S = S10/n1 + S01/n0 the
 * covariance of the placement values; L S10 L' is the sample variance of the
 * per-event differences V10_1 - V10_2 (likewise for non-events), which is how
 * it is computed here. z = diff / se, p = 2 (1 - Phi(|z|)). When se = 0 (the two
 * scores order every pair alike) p is 1 if diff = 0, else 0. Returns 0, or
 * PX_EINVAL (as px_eval_binary, and fewer than 2 events or non-events), PX_ENOMEM. */
int px_eval_delong_paired(const double *y, const double *p1, const double *p2, size_t n, double *diff, double *se,
                          double *pvalue, px_err *e)
{
    px_models_init(); /* GSL reports, never aborts */
    size_t n1 = 0;
    int rc = check_binary(y, p1, n, "the first score", &n1, e);
    if (!rc) rc = check_binary(y, p2, n, "the second score", &n1, e);
    if (rc) return rc;
    size_t n0 = n - n1;
    if (n1 < 2 || n0 < 2)
        return px_err_set(e, PX_EINVAL,
                          "cannot compare AUCs: %zu events and %zu non-events (DeLong's test needs at least 2 of each)",
                          n1, n0);
    double *v1 = NULL, *v2 = NULL;
    key *s1 = sorted_scores(p1, n), *s2 = NULL;
    if (s1) s2 = sorted_scores(p2, n);
    v1 = s2 && n <= SIZE_MAX / sizeof(double) ? malloc(n * sizeof *v1) : NULL;
    v2 = v1 ? malloc(n * sizeof *v2) : NULL;
    if (!v2) {
        rc = px_err_set(e, PX_ENOMEM, "cannot compare AUCs: out of memory for %zu rows", n);
        goto cleanup;
    }
    double auc1 = placements(s1, y, n, n1, v1), auc2 = placements(s2, y, n, n1, v2);
    double var = class_var(y, v1, v2, n, 1.0, n1) / (double)n1 + class_var(y, v1, v2, n, 0.0, n0) / (double)n0;
    double d = auc1 - auc2, sd = sqrt(var);
    *diff = d;
    *se = sd;
    if (sd > 0)
        *pvalue = 2.0 * gsl_cdf_ugaussian_Q(fabs(d) / sd);
    else
        *pvalue = d == 0 ? 1.0 : 0.0;
cleanup:
    free(s1);
    free(s2);
    free(v1);
    free(v2);
    return rc;
}

/* Returns 0 and fills *out, or PX_EINVAL (no rows, a non-finite value), *out
 * untouched. R^2 = 1 - SSE/SST with SST about the observed mean (two passes);
 * NaN when SST = 0 (constant outcome: undefined). RMSE divides by n. */
int px_eval_regression(const double *y, const double *yhat, size_t n, px_eval_reg *out, px_err *e)
{
    px_models_init(); /* GSL reports, never aborts */
    if (n == 0) return px_err_set(e, PX_EINVAL, "cannot evaluate regression predictions: no rows");
    double sy = 0, sp = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(y[i]))
            return px_err_set(e, PX_EINVAL, "cannot evaluate regression predictions: outcome of row %zu is %g", i, y[i]);
        if (!isfinite(yhat[i]))
            return px_err_set(e, PX_EINVAL, "cannot evaluate regression predictions: prediction of row %zu is %g", i,
                              yhat[i]);
        sy += y[i];
        sp += yhat[i];
    }
    double my = sy / (double)n, sae = 0, sse = 0, sst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = y[i] - yhat[i], c = y[i] - my;
        sae += fabs(r);
        sse += r * r;
        sst += c * c;
    }
    out->n = n;
    out->mae = sae / (double)n;
    out->rmse = sqrt(sse / (double)n);
    out->r2 = sst > 0 ? 1.0 - sse / sst : NAN;
    out->mean_obs = my;
    out->mean_pred = sp / (double)n;
    return 0;
}

/* ---- JSON ---------------------------------------------------------------- */

/* Adds a number, or null when it is not finite (JSON has no NaN/Inf). NULL on ENOMEM. */
static cJSON *add_num(cJSON *o, const char *name, double v)
{
    return isfinite(v) ? cJSON_AddNumberToObject(o, name, v) : cJSON_AddNullToObject(o, name);
}

static int add_nums(cJSON *o, const char *const *names, const double *vals, size_t k)
{
    for (size_t j = 0; j < k; j++)
        if (!add_num(o, names[j], vals[j])) return -1;
    return 0;
}

/* Keys, in this order: n events auc auc_se auc_lo auc_hi auprc brier
 * cal_intercept cal_slope hl_chi2 hl_df hl_p groups[{n events mean_pred
 * obs_rate}] thresholds[{threshold tp fp tn fn sens spec ppv npv}].
 * Returns compact text the caller frees with free(), or NULL on ENOMEM. */
char *px_eval_bin_json(const px_eval_bin *ev)
{
    static const char *const top[] = {"n", "events", "auc", "auc_se", "auc_lo", "auc_hi", "auprc",
                                      "brier", "cal_intercept", "cal_slope", "hl_chi2", "hl_df", "hl_p"};
    static const char *const gk[] = {"n", "events", "mean_pred", "obs_rate"};
    static const char *const tk[] = {"threshold", "tp", "fp", "tn", "fn", "sens", "spec", "ppv", "npv"};
    char *text = NULL;
    cJSON *o = cJSON_CreateObject(), *groups = NULL, *thr = NULL;
    double tv[] = {(double)ev->n, (double)ev->events, ev->auc, ev->auc_se, ev->auc_lo, ev->auc_hi, ev->auprc,
                   ev->brier, ev->cal_intercept, ev->cal_slope, ev->hl_chi2, (double)ev->hl_df, ev->hl_p};
    if (!o || add_nums(o, top, tv, sizeof tv / sizeof tv[0])) goto cleanup;
    if (!(groups = cJSON_AddArrayToObject(o, "groups"))) goto cleanup;
    for (size_t g = 0; g < ev->ngroups && g < PX_EVAL_GROUPS; g++) {
        cJSON *r = cJSON_CreateObject();
        if (!r) goto cleanup;
        cJSON_AddItemToArray(groups, r);
        double gv[] = {(double)ev->group[g].n, ev->group[g].events, ev->group[g].mean_pred, ev->group[g].obs_rate};
        if (add_nums(r, gk, gv, 4)) goto cleanup;
    }
    if (!(thr = cJSON_AddArrayToObject(o, "thresholds"))) goto cleanup;
    for (int t = 0; t < PX_EVAL_THRESHOLDS; t++) {
        cJSON *r = cJSON_CreateObject();
        if (!r) goto cleanup;
        cJSON_AddItemToArray(thr, r);
        double rv[] = {ev->thr[t].threshold, (double)ev->thr[t].tp, (double)ev->thr[t].fp, (double)ev->thr[t].tn,
                       (double)ev->thr[t].fn, ev->thr[t].sens, ev->thr[t].spec, ev->thr[t].ppv, ev->thr[t].npv};
        if (add_nums(r, tk, rv, 9)) goto cleanup;
    }
    text = cJSON_PrintUnformatted(o);
cleanup:
    cJSON_Delete(o);
    return text;
}

/* Keys, in this order: n mae rmse r2 mean_obs mean_pred. Caller frees with free(); NULL on ENOMEM. */
char *px_eval_reg_json(const px_eval_reg *ev)
{
    static const char *const k[] = {"n", "mae", "rmse", "r2", "mean_obs", "mean_pred"};
    double v[] = {(double)ev->n, ev->mae, ev->rmse, ev->r2, ev->mean_obs, ev->mean_pred};
    char *text = NULL;
    cJSON *o = cJSON_CreateObject();
    if (o && !add_nums(o, k, v, 6)) text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}
