/* test_gates.c: px_gate_eval (registry/gates.c), the quality gates as a pure
 * function: each gate on its boundary (passes at the threshold, fails just past
 * it), the verdict JSON (failed names in order, values, fixes), the summary text,
 * and the regression gates (rows per parameter, the mean-only model, LOS bounds). */
#include "registry/registry.h"
#include "check.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

static px_gate_input good_binary(const double *pred, size_t n)
{
    px_gate_input in;
    memset(&in, 0, sizeof in);
    in.binary = 1;
    in.glm = 1;
    in.n_train = 2000;
    in.n_test = 500;
    in.train_events = 200; /* 200 / 20 parameters = 10 per parameter: exactly the default */
    in.test_events = 20;   /* exactly the default */
    in.n_params = 20;
    in.converged = 1;
    in.auc_lo = 0.5000001;
    in.cal_slope = 1.5;    /* the upper bound itself passes */
    in.train_pred = pred;
    in.n_pred = n;
    return in;
}

/* The names in verdict["failed"], ","-joined (caller frees). */
static char *failed_names(const char *json, int *passed, int *accepted)
{
    cJSON *o = cJSON_Parse(json);
    char *out = calloc(1, 512);
    *passed = cJSON_IsTrue(cJSON_GetObjectItem(o, "passed"));
    *accepted = cJSON_IsTrue(cJSON_GetObjectItem(o, "accepted"));
    const cJSON *f = cJSON_GetObjectItem(o, "failed");
    for (const cJSON *x = f ? f->child : NULL; x; x = x->next) {
        if (out[0]) strcat(out, ",");
        strncat(out, x->valuestring, 64);
    }
    cJSON_Delete(o);
    return out;
}

static double check_value(const char *json, const char *gate)
{
    cJSON *o = cJSON_Parse(json);
    double v = NAN;
    const cJSON *c = cJSON_GetObjectItem(o, "checks");
    for (const cJSON *x = c ? c->child : NULL; x; x = x->next)
        if (strcmp(cJSON_GetObjectItem(x, "gate")->valuestring, gate) == 0)
            v = cJSON_GetNumberValue(cJSON_GetObjectItem(x, "value"));
    cJSON_Delete(o);
    return v;
}

int main(void)
{
    px_gate_params p = px_gate_default_params();
    CHECK_NEAR(p.min_epp, 10, 0);
    CHECK_NEAR(p.min_holdout_events, 20, 0);
    CHECK_NEAR(p.slope_lo, 0.5, 0);
    CHECK_NEAR(p.slope_hi, 1.5, 0);
    double pred[4] = {0.01, 0.2, 0.5, 0.99};
    char summary[2048];
    int passed = -1, accepted = -1;

    /* every gate on its boundary: passes */
    px_gate_input in = good_binary(pred, 4);
    char *j = px_gate_eval(&p, &in, &passed, summary, sizeof summary);
    CHECK(j != NULL);
    CHECK_INT(passed, 1);
    CHECK_STR(summary, "");
    char *names = failed_names(j, &passed, &accepted);
    CHECK_STR(names, "");
    CHECK_INT(passed, 1);
    CHECK_INT(accepted, 0);
    CHECK_NEAR(check_value(j, "events_per_parameter"), 10, 1e-12);
    free(names);
    free(j);

    /* the rarer class counts: 1,800 events of 2,000 leave 200 non-events */
    in.train_events = 1800;
    j = px_gate_eval(&p, &in, &passed, NULL, 0);
    CHECK_INT(passed, 1);
    CHECK_NEAR(check_value(j, "events_per_parameter"), 10, 1e-12);
    free(j);

    /* each just past its threshold: a model of 2 events with separation, like SynPUF mortality */
    in = good_binary(pred, 4);
    in.train_events = 199;
    in.test_events = 19;
    in.separation = 1;
    in.converged = 0;
    in.auc_lo = 0.5;                 /* must exceed 0.5 */
    in.cal_slope = 1.5000001;
    pred[0] = 1e-9;                  /* within 1e-8 of 0 */
    in.accepted = 1;
    j = px_gate_eval(&p, &in, &passed, summary, sizeof summary);
    CHECK_INT(passed, 0);
    names = failed_names(j, &passed, &accepted);
    CHECK_STR(names, "events_per_parameter,holdout_events,separation,convergence,auc_lower_bound,calibration_slope,"
                     "training_predictions");
    CHECK_INT(accepted, 1);
    CHECK(strstr(summary, "events_per_parameter: 199 events") == summary);
    CHECK(strstr(summary, "(fix: more data (at least 200 events for 20 candidate parameters), or fewer features "
                          "(at most 19 parameters for 199 events: --features))") != NULL);
    CHECK(strstr(summary, "separation: the fit separates") != NULL);
    CHECK(strstr(summary, "--l2") != NULL);
    free(names);
    free(j);

    /* an undefined AUC and slope (a holdout of one class) fail their gates */
    in = good_binary(pred, 4);
    pred[0] = 0.01;
    in.auc_lo = NAN;
    in.cal_slope = NAN;
    j = px_gate_eval(&p, &in, &passed, summary, sizeof summary);
    names = failed_names(j, &passed, &accepted);
    CHECK_STR(names, "auc_lower_bound,calibration_slope");
    CHECK(strstr(summary, "holdout AUC undefined") != NULL);
    free(names);
    free(j);

    /* a non-finite training prediction fails */
    in = good_binary(pred, 4);
    pred[1] = NAN;
    j = px_gate_eval(&p, &in, &passed, NULL, 0);
    names = failed_names(j, &passed, &accepted);
    CHECK_STR(names, "training_predictions");
    free(names);
    free(j);

    /* regression (LOS): rows per parameter, holdout rows, the mean-only model +5%, 0-365 days */
    double los[3] = {0.5, 3, 365};
    memset(&in, 0, sizeof in);
    in.glm = 1;
    in.converged = 1;
    in.n_train = 200;
    in.n_params = 20;
    in.n_test = 20;
    in.rmse = 3.15;
    in.rmse_mean = 3.0;              /* 3.15 = 3.0 x 1.05: allowed */
    in.train_pred = los;
    in.n_pred = 3;
    p.max_value = 365;
    j = px_gate_eval(&p, &in, &passed, summary, sizeof summary);
    CHECK_INT(passed, 1);
    free(j);
    in.n_train = 199;
    in.n_test = 19;
    in.rmse = 3.1500001;
    los[2] = 365.001;
    j = px_gate_eval(&p, &in, &passed, summary, sizeof summary);
    names = failed_names(j, &passed, &accepted);
    CHECK_STR(names, "rows_per_parameter,holdout_rows,vs_mean_model,training_predictions");
    CHECK(strstr(summary, "1 one outside 0-365 (most extreme 365") != NULL);
    free(names);
    free(j);
    return check_report("test_gates");
}
