/* gates.c: the quality gates a model version must pass at registration before it
 * may become a champion, serve predictions or adjust KPIs. Pure function of the
 * fit's and the holdout's figures (no database): train.c gathers them, the result
 * is stored with the version (metrics.json "gates", registry.versions.gates).
 *
 * Why these gates (defaults in px_gate_default_params):
 * - events per candidate parameter >= 10 (Peduzzi et al. 1996, J Clin Epidemiol
 *   49:1373; the rarer class counts as the events); for a numeric outcome, rows;
 * - holdout events >= 20: fewer make AUC and calibration too noisy to check
 *   (Collins et al. 2016, Stat Med 35:214, advise 100+; 20 is the floor);
 * - no (quasi-)complete separation and a converged fit: otherwise the estimates
 *   are not finite MLEs and the probabilities are 0 or 1 by construction;
 * - the holdout AUC's lower 95% bound (DeLong) above 0.5: better than chance;
 * - the holdout calibration slope within [0.5, 1.5] (1 is perfect; below it the
 *   model is over-fitted, a negative slope ranks backwards);
 * - finite and plausible predictions on the training rows: probabilities inside
 *   [1e-8, 1 - 1e-8] (|logit| <= 18.4), numeric predictions >= 0 and <= max_value
 *   (365 days for length of stay);
 * - numeric outcome: the holdout RMSE at most 5% above that of the mean-only
 *   model (the training rows' mean predicted for every holdout row), i.e. a
 *   holdout R^2 above about -0.10. Not "below": case mix explains little of
 *   length of stay (holdout R^2 0.01-0.05 is common), so a holdout RMSE a little
 *   above the mean's is noise; one well above it is an over-fitted or
 *   extrapolating model.
 * px_reg_gates_status and px_reg_accept_gates read and amend the stored verdict. */
#include "registry/registry.h"
#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

px_gate_params px_gate_default_params(void)
{
    px_gate_params p;
    p.min_epp = 10;
    p.min_holdout_events = 20;
    p.min_auc_lo = 0.5;
    p.slope_lo = 0.5;
    p.slope_hi = 1.5;
    p.max_value = INFINITY;
    p.max_rmse_over_mean = 0.05;
    return p;
}

typedef struct gate_out {
    cJSON *checks, *failed;
    char *summary;
    size_t slen, used;
    int passed;
} gate_out;

static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

/* Records one gate; on failure appends "name: why (fix: ...)" to the summary. */
static void gate(gate_out *g, const char *name, int ok, double value, double threshold, const char *fix,
                 const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    cJSON *c = cJSON_CreateObject();
    if (c) {
        cJSON_AddStringToObject(c, "gate", name);
        cJSON_AddBoolToObject(c, "passed", ok);
        add_num(c, "value", value);
        add_num(c, "threshold", threshold);
        cJSON_AddStringToObject(c, "why", why);
        if (!ok) cJSON_AddStringToObject(c, "fix", fix);
        cJSON_AddItemToArray(g->checks, c);
    }
    if (ok) return;
    g->passed = 0;
    cJSON_AddItemToArray(g->failed, cJSON_CreateString(name));
    if (g->summary && g->used < g->slen) {
        int n = snprintf(g->summary + g->used, g->slen - g->used, "%s%s: %s (fix: %s)", g->used ? "; " : "", name, why,
                         fix);
        if (n > 0) g->used += (size_t)n;
        if (g->used >= g->slen) g->used = g->slen;
    }
}

char *px_gate_eval(const px_gate_params *p, const px_gate_input *in, int *passed, char *summary, size_t slen)
{
    gate_out g = {0};
    g.passed = 1;
    g.summary = summary;
    g.slen = slen;
    if (summary && slen) summary[0] = '\0';
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    g.checks = cJSON_AddArrayToObject(root, "checks");
    g.failed = cJSON_AddArrayToObject(root, "failed");
    char fix[256];
    double np = in->n_params > 0 ? (double)in->n_params : 1;

    if (in->binary) {
        double ev = fmin(in->train_events, (double)in->n_train - in->train_events);
        double need = p->min_epp * np;
        snprintf(fix, sizeof fix,
                 "more data (at least %.0f events for %zu candidate parameters), or fewer features (at most %.0f "
                 "parameters for %.0f events: --features)",
                 need, in->n_params, floor(ev / p->min_epp), ev);
        gate(&g, "events_per_parameter", ev / np >= p->min_epp, ev / np, p->min_epp, fix,
             "%.0f events (the rarer class) in %zu training rows for %zu candidate parameters: %.2f per parameter, "
             "%.0f needed", ev, in->n_train, in->n_params, ev / np, p->min_epp);
        double hev = fmin(in->test_events, (double)in->n_test - in->test_events);
        gate(&g, "holdout_events", hev >= p->min_holdout_events, hev, p->min_holdout_events,
             "more data, or a larger holdout (--holdout-time, --holdout-patients)",
             "%.0f events (the rarer class) in %zu holdout rows, %.0f needed to check discrimination and calibration",
             hev, in->n_test, p->min_holdout_events);
        if (in->glm) {
            gate(&g, "separation", !in->separation, in->separation, 0,
                 "fewer features, or a ridge penalty (--l2, e.g. --l2 1)",
                 in->separation ? "the fit separates the training rows (quasi-complete separation): coefficients "
                                  "diverge and probabilities reach 0 or 1"
                                : "no separation");
            gate(&g, "convergence", in->converged, in->converged, 1, "fewer features, or a ridge penalty (--l2)",
                 in->converged ? "the fit converged" : "the fit did not converge");
        }
        gate(&g, "auc_lower_bound", in->auc_lo > p->min_auc_lo, in->auc_lo, p->min_auc_lo,
             "more data, or features that predict the outcome",
             isfinite(in->auc_lo) ? "holdout AUC lower 95%% bound %.3f, must exceed %.2f"
                                  : "holdout AUC undefined (a holdout with one class or a single event); must exceed %.2f",
             isfinite(in->auc_lo) ? in->auc_lo : p->min_auc_lo, p->min_auc_lo);
        int slope_ok = in->cal_slope >= p->slope_lo && in->cal_slope <= p->slope_hi;
        gate(&g, "calibration_slope", slope_ok, in->cal_slope, p->slope_lo,
             in->cal_slope < p->slope_lo ? "fewer features or a ridge penalty (--l2): the model is over-fitted; or more data"
                                         : "more data, or other features",
             isfinite(in->cal_slope) ? "holdout calibration slope %.3f, must be within %.2f-%.2f"
                                     : "holdout calibration slope undefined, must be within %.2f-%.2f",
             isfinite(in->cal_slope) ? in->cal_slope : p->slope_lo, isfinite(in->cal_slope) ? p->slope_lo : p->slope_hi,
             p->slope_hi);
    } else {
        double rows = (double)in->n_train;
        snprintf(fix, sizeof fix, "more data (at least %.0f rows for %zu candidate parameters), or fewer features",
                 p->min_epp * np, in->n_params);
        gate(&g, "rows_per_parameter", rows / np >= p->min_epp, rows / np, p->min_epp, fix,
             "%zu training rows for %zu candidate parameters: %.2f per parameter, %.0f needed", in->n_train,
             in->n_params, rows / np, p->min_epp);
        gate(&g, "holdout_rows", (double)in->n_test >= p->min_holdout_events, (double)in->n_test,
             p->min_holdout_events, "more data, or a larger holdout (--holdout-time, --holdout-patients)",
             "%zu holdout rows, %.0f needed", in->n_test, p->min_holdout_events);
        if (in->glm)
            gate(&g, "convergence", in->converged, in->converged, 1, "fewer features, or a ridge penalty (--l2)",
                 in->converged ? "the fit converged" : "the fit did not converge");
        double lim = in->rmse_mean * (1 + p->max_rmse_over_mean);
        gate(&g, "vs_mean_model", in->rmse <= lim, in->rmse, lim, "more data, fewer features, or other features",
             "holdout RMSE %.4g against %.4g for the mean-only model (the training mean for every row); at most "
             "%.4g (+%.0f%%) allowed", in->rmse, in->rmse_mean, lim, 100 * p->max_rmse_over_mean);
    }
    /* the predictions on the training rows: finite and plausible */
    size_t bad = 0, extreme = 0;
    double worst = NAN;
    for (size_t i = 0; i < in->n_pred; i++) {
        double v = in->train_pred[i];
        if (!isfinite(v)) {
            bad++;
            continue;
        }
        int out = in->binary ? v < 1e-8 || v > 1 - 1e-8 : v < 0 || v > p->max_value;
        if (out) {
            extreme++;
            if (isnan(worst) || (in->binary ? fabs(v - 0.5) > fabs(worst - 0.5) : fabs(v) > fabs(worst))) worst = v;
        }
    }
    if (in->binary)
        gate(&g, "training_predictions", bad == 0 && extreme == 0, (double)(bad + extreme), 0,
             "fewer features, or a ridge penalty (--l2)",
             "%zu of %zu training rows get a non-finite probability, %zu one within 1e-8 of 0 or 1%s", bad, in->n_pred,
             extreme, extreme ? " (separated or extrapolating)" : "");
    else
        gate(&g, "training_predictions", bad == 0 && extreme == 0, (double)(bad + extreme), p->max_value,
             "fewer features, a ridge penalty (--l2), or more data",
             "%zu of %zu training rows get a non-finite prediction, %zu one outside 0-%.6g (most extreme %.4g)", bad,
             in->n_pred, extreme, p->max_value, isnan(worst) ? 0.0 : worst);

    /* "passed", "accepted" and "failed" lead the JSON, then the checks and the policy */
    cJSON *out = cJSON_CreateObject();
    char *text = NULL;
    if (out) {
        cJSON_AddBoolToObject(out, "passed", g.passed);
        cJSON_AddBoolToObject(out, "accepted", !g.passed && in->accepted);
        cJSON_AddItemToObject(out, "failed", cJSON_DetachItemFromObject(root, "failed"));
        cJSON_AddItemToObject(out, "checks", cJSON_DetachItemFromObject(root, "checks"));
        cJSON *pp = cJSON_AddObjectToObject(out, "params");
        if (pp) {
            cJSON_AddNumberToObject(pp, "min_epp", p->min_epp);
            cJSON_AddNumberToObject(pp, "min_holdout_events", p->min_holdout_events);
            cJSON_AddNumberToObject(pp, "min_auc_lo", p->min_auc_lo);
            cJSON_AddNumberToObject(pp, "slope_lo", p->slope_lo);
            cJSON_AddNumberToObject(pp, "slope_hi", p->slope_hi);
            add_num(pp, "max_value", p->max_value);
            cJSON_AddNumberToObject(pp, "max_rmse_over_mean", p->max_rmse_over_mean);
        }
        text = cJSON_PrintUnformatted(out);
    }
    cJSON_Delete(out);
    cJSON_Delete(root);
    if (passed) *passed = g.passed;
    return text;
}

/* ---- the verdict stored with a version --------------------------------------- */

int px_reg_gates_status(PGconn *c, const char *name, int version, int *passed, int *accepted, char *failed,
                        size_t flen, px_err *e)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *pp[2] = {name, ver};
    PGresult *r = PQexecParams(c,
                               "SELECT coalesce(gates->>'passed', 'true'), coalesce(gates->>'accepted', 'false'),"
                               " coalesce((SELECT string_agg(f, ', ') FROM jsonb_array_elements_text("
                               "  CASE WHEN jsonb_typeof(gates->'failed') = 'array' THEN gates->'failed'"
                               "  ELSE '[]' END) f), '')"
                               " FROM registry.versions WHERE name = $1 AND version = $2::int",
                               2, NULL, pp, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char what[200];
        snprintf(what, sizeof what, "cannot read the quality gates of '%s' v%d", name, version);
        rc = px_db_fail(e, c, r, what);
    } else if (PQntuples(r) != 1) {
        rc = px_err_set(e, PX_ENOTFOUND, "model '%s' has no version %d", name, version);
    } else {
        *passed = strcmp(PQgetvalue(r, 0, 0), "false") != 0;
        *accepted = strcmp(PQgetvalue(r, 0, 1), "true") == 0;
        if (failed && flen) snprintf(failed, flen, "%s", PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return rc;
}

int px_reg_accept_gates(PGconn *c, const char *name, int version, const char *reason, px_err *e)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *pp[3] = {name, ver, reason ? reason : ""};
    /* one statement: the mark on the version and its line in the decision log */
    PGresult *r = PQexecParams(
        c,
        "WITH v AS (UPDATE registry.versions SET gates = gates || '{\"accepted\":true}'"
        "  WHERE name = $1 AND version = $2::int AND gates->>'passed' = 'false' RETURNING name, version, gates)"
        " INSERT INTO registry.decisions (name, candidate_version, decision, gates, message)"
        " SELECT name, version, 'promoted', gates, 'failed quality gates accepted with --accept-failed-gates: ' || $3"
        " FROM v",
        3, NULL, pp, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char what[200];
        snprintf(what, sizeof what, "cannot record the acceptance of '%s' v%d", name, version);
        rc = px_db_fail(e, c, r, what);
    }
    PQclear(r);
    return rc;
}
