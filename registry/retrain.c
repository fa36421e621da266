/* retrain.c: retraining: a candidate trained as the champion was (same table,
 * label, algorithm and holdout shares), scored with the champion on the same
 * holdout rows, promoted only when it passes its quality gates and is no worse
 * than the champion (AUC and calibration, or RMSE); every decision is recorded
 * in registry.decisions. Uses train.c's training run (train_int.h). */
#include "registry/train_int.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

px_retrain_params px_retrain_default_params(void)
{
    px_retrain_params p;
    p.max_auc_drop = 0.01;
    p.slope_lo = 0.8;
    p.slope_hi = 1.2;
    p.max_rmse_rise = 0.02;
    p.gates = px_gate_default_params();
    p.hier = px_hier_default_params();
    return p;
}

/* ---- retraining ------------------------------------------------------------ */

/* Reads the champion's training spec from its row into tp (table, label, algo, l2,
 * holdout shares; table and label point into the given buffers) and its features
 * (NULL-terminated, caller frees with free_list). The holdout shares matter: the
 * patient group is a threshold on the same hash, so a larger share than the
 * champion's would hold out patients the champion was trained on. */
static int champion_spec(PGconn *c, const char *name, int version, px_train_params *tp, char *table, size_t tlen,
                         char *label, size_t llen, char ***features, int32_t *cutoff, px_err *e)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", version);
    const char *params[2] = {name, ver};
    *features = NULL;
    PGresult *r = PQexecParams(c,
                               "SELECT feature_table, label, algo, coalesce((params->>'l2')::float8, 0),"
                               " coalesce((split->>'holdout_time_share')::float8, 0),"
                               " coalesce((split->>'holdout_patient_share')::float8, 0),"
                               " coalesce(nullif(split->>'holdout_from', '')::date - date '1970-01-01', 0),"
                               " coalesce((params->>'max_rows')::float8, 0)"
                               " FROM registry.versions WHERE name = $1 AND version = $2::int",
                               2, NULL, params, NULL, NULL, 0);
    PGresult *fr = NULL;
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_err_set(e, PX_EDB, "cannot read the spec of '%s' v%d", name, version);
        px_err_detail(e, "%s", PQresultErrorMessage(r));
        goto out;
    }
    if (PQntuples(r) != 1) {
        rc = px_err_set(e, PX_ENOTFOUND, "model '%s' has no version %d", name, version);
        goto out;
    }
    snprintf(table, tlen, "%s", PQgetvalue(r, 0, 0));
    snprintf(label, llen, "%s", PQgetvalue(r, 0, 1));
    tp->table = table;
    tp->label = label;
    if (px_algo_parse(PQgetvalue(r, 0, 2), &tp->algo) == 0) tp->algo_given = 1;
    double l2 = strtod(PQgetvalue(r, 0, 3), NULL), ts = strtod(PQgetvalue(r, 0, 4), NULL),
           ps = strtod(PQgetvalue(r, 0, 5), NULL);
    if (l2 >= 0) tp->l2 = l2;
    if (ts > 0 && ts < 1) tp->holdout_time_share = ts;
    if (ps > 0 && ps < 1) tp->holdout_patient_share = ps;
    *cutoff = (int32_t)atoi(PQgetvalue(r, 0, 6));
    double max_rows = strtod(PQgetvalue(r, 0, 7), NULL); /* an SVM's row limit (0: not one) */
    if (max_rows >= 2 && max_rows <= 1e9) tp->svm_max_rows = (size_t)max_rows;
    /* one row per feature, in order (a quoted column name may hold a comma) */
    fr = PQexecParams(c,
                      "SELECT f FROM registry.versions v, jsonb_array_elements_text(v.params->'features')"
                      " WITH ORDINALITY a(f, k) WHERE v.name = $1 AND v.version = $2::int ORDER BY k",
                      2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(fr) != PGRES_TUPLES_OK) {
        rc = px_err_set(e, PX_EDB, "cannot read the features of '%s' v%d", name, version);
        px_err_detail(e, "%s", PQresultErrorMessage(fr));
        goto out;
    }
    int nf = PQntuples(fr);
    char **list = calloc((size_t)nf + 1, sizeof *list);
    if (!list) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    *features = list;
    for (int k = 0; k < nf; k++)
        if (!(list[k] = strdup(PQgetvalue(fr, k, 0)))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
out:
    PQclear(fr);
    PQclear(r);
    return rc;
}

static void free_list(char **l)
{
    if (!l) return;
    for (size_t i = 0; l[i]; i++) free(l[i]);
    free(l);
}

int px_retrain(PGconn *c, const px_config *cfg, const char *model, const px_retrain_params *p, FILE *report, px_err *e)
{
    return px_retrain_ex(c, cfg, model, p, report, NULL, e);
}

int px_retrain_ex(PGconn *c, const px_config *cfg, const char *model, const px_retrain_params *p, FILE *report,
                  px_retrain_outcome *outcome, px_err *e)
{
    px_retrain_outcome oc = PX_RETRAIN_FAILED;
    int champ = 0, rc;
    px_err e2 = {0};
    px_train_params tp = px_train_default_params();
    tp.model = model;
    tp.gates = p->gates;
    tp.hier = p->hier;
    char table[256] = "", label[64] = "";
    char **champ_feats = NULL;
    reg_job j;
    memset(&j, 0, sizeof j);
    px_model *cm = NULL;
    double *cs = NULL, *y = NULL;
    char gates[1024] = "{}", metrics[1024] = "{}", msg[1600] = "";
    int version = 0; /* the candidate, once registered */

    int rr = px_reg_resolve(c, model, "champion", &champ, &e2);
    if (rr != 0 && rr != PX_ENOTFOUND) { /* a failed lookup is not "no champion": that would promote ungated */
        *e = e2;
        rc = rr;
        if (rr == PX_EINVAL) goto out; /* an invalid name: nothing to record it under */
        snprintf(msg, sizeof msg, "cannot resolve the champion: %s", e->msg);
        champ = 0;
        goto fail;
    }
    if (rr == 0) {
        if ((rc = champion_spec(c, model, champ, &tp, table, sizeof table, label, sizeof label, &champ_feats,
                                &j.min_cutoff, e)) != 0) {
            snprintf(msg, sizeof msg, "cannot read the champion v%d: %s", champ, e->msg);
            goto fail;
        }
        /* a built-in model trained on its own set: rebuild the set, use its current default features */
        const px_feat_set_info *set = px_feat_set_find(model);
        if (set && strcmp(set->table, table) == 0 && strcmp(set->label, label) == 0) {
            tp.table = NULL;
            tp.label = NULL;
        }
    } else if (!px_feat_set_find(model)) {
        rc = px_err_set(e, PX_ENOTFOUND, "model '%s' has no champion and is not a built-in model", model);
        goto out;
    }

    /* the candidate uses the set's current default features (built-in) or the champion's */
    if (tp.table && champ_feats) tp.features = (const char *const *)champ_feats;
    if ((rc = reg_job_run(c, cfg, &tp, champ ? (const char *const *)champ_feats : NULL, &j, e)) != 0) {
        snprintf(msg, sizeof msg, "training failed: %s", e->msg);
        goto fail;
    }
    rc = reg_job_register(c, cfg, &j, &version, e);
    if (rc == PX_ENOTHING) {
        px_err_clear(e);
        snprintf(msg, sizeof msg, "data and parameters unchanged since v%d: nothing to train", version);
        int accepted = 0;
        if (!j.gates_passed) {
            int passed = 0;
            px_err e3 = {0};
            if (px_reg_gates_status(c, model, version, &passed, &accepted, NULL, 0, &e3) != 0) accepted = 0;
            size_t l = strlen(msg);
            snprintf(msg + l, sizeof msg - l, "; v%d failed its quality gates%s: %s", version,
                     accepted ? " (accepted)" : "", j.gates_summary);
        }
        if ((rc = reg_record_decision(c, model, version, champ, "unchanged", j.gates_passed ? NULL : j.gates_json, NULL,
                                  msg, e)) != 0)
            goto out;
        /* unchanged, but still failing its gates (in msg): the scheduler must hear about it */
        if (report) fprintf(report, "%s: %s\n", model, msg);
        rc = px_err_set(e, PX_ENOTHING, "%s: %s", model, msg);
        oc = j.gates_passed || accepted ? PX_RETRAIN_UNCHANGED : PX_RETRAIN_GATES_FAILED;
        goto out;
    }
    if (rc != 0) {
        version = 0;
        snprintf(msg, sizeof msg, "registration failed: %s", e->msg);
        goto fail;
    }
    if (!j.gates_passed) {
        /* registered with its failed gates in its record; never promoted, not even as the first version */
        char gmsg[sizeof msg];
        snprintf(gmsg, sizeof gmsg, "candidate v%d failed its quality gates: %s", version, j.gates_summary);
        if (champ)
            snprintf(msg, sizeof msg, "%.*s; champion v%d kept", (int)(sizeof msg - 32), gmsg, champ);
        else
            snprintf(msg, sizeof msg, "%.*s; the model has no champion", (int)(sizeof msg - 40), gmsg);
        if ((rc = reg_record_decision(c, model, version, champ, "kept", j.gates_json, NULL, msg, e)) != 0) goto out;
        if (report) fprintf(report, "%s: %s\n", model, msg);
        rc = px_err_set(e, PX_ENOTHING, "%s: %s", model, msg);
        oc = PX_RETRAIN_GATES_FAILED;
        goto out;
    }
    if (!champ) {
        if ((rc = px_reg_promote(c, cfg, model, version, "champion", "first version of the model", e)) != 0) {
            snprintf(msg, sizeof msg, "cannot promote v%d, the first version: %s", version, e->msg);
            goto fail;
        }
        snprintf(msg, sizeof msg, "v%d is the first version: promoted to champion", version);
        if ((rc = reg_record_decision(c, model, version, 0, "promoted", j.gates_json, NULL, msg, e)) != 0) goto out;
        if (report) fprintf(report, "%s: %s\n", model, msg);
        oc = PX_RETRAIN_PROMOTED;
        goto out;
    }

    /* champion and candidate on the same holdout rows */
    int cv = 0;
    if (!(cm = px_reg_load(c, cfg, model, "champion", &cv, e))) {
        rc = e->code ? e->code : PX_ECORRUPT;
        snprintf(msg, sizeof msg, "cannot load the champion v%d: %s", champ, e->msg);
        goto fail;
    }
    cs = malloc(j.ntest * sizeof *cs);
    y = malloc(j.ntest * sizeof *y);
    if (!cs || !y) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = px_model_score(cm, j.d, j.test, j.ntest, cs, e)) != 0) {
        snprintf(msg, sizeof msg, "cannot score the champion v%d: %s", champ, e->msg);
        goto fail;
    }
    for (size_t k = 0; k < j.ntest; k++) y[k] = j.d->y[j.test[k]];
    int pass;
    if (j.binary && isnan(j.eb.auc)) {
        /* a holdout of one class cannot rank two models: keep the champion */
        pass = 0;
        snprintf(gates, sizeof gates, "{\"comparable\":false}");
        snprintf(msg, sizeof msg, "candidate v%d vs champion v%d: kept: %s", version, champ, j.fi.warning);
    } else if (j.binary) {
        px_eval_bin ce;
        double diff = 0, se = 0, pv = 1;
        if ((rc = px_eval_binary(y, cs, j.ntest, &ce, e)) != 0 ||
            (rc = px_eval_delong_paired(y, j.test_scores, cs, j.ntest, &diff, &se, &pv, e)) != 0)
            goto fail;
        int auc_ok = j.eb.auc >= ce.auc - p->max_auc_drop;
        int slope_ok = j.eb.cal_slope >= p->slope_lo && j.eb.cal_slope <= p->slope_hi;
        pass = auc_ok && slope_ok;
        snprintf(gates, sizeof gates,
                 "{\"max_auc_drop\":%.6g,\"auc_ok\":%s,\"slope_range\":[%.6g,%.6g],\"slope_ok\":%s}", p->max_auc_drop,
                 auc_ok ? "true" : "false", p->slope_lo, p->slope_hi, slope_ok ? "true" : "false");
        snprintf(metrics, sizeof metrics,
                 "{\"holdout_rows\":%zu,\"candidate\":{\"auc\":%.6f,\"cal_slope\":%.6f,\"brier\":%.6f},"
                 "\"champion\":{\"auc\":%.6f,\"cal_slope\":%.6f,\"brier\":%.6f},"
                 "\"delong\":{\"diff\":%.6f,\"se\":%.6f,\"p\":%.6g}}",
                 j.ntest, j.eb.auc, j.eb.cal_slope, j.eb.brier, ce.auc, ce.cal_slope, ce.brier, diff, se, pv);
        snprintf(msg, sizeof msg,
                 "candidate v%d AUC %.4f (slope %.2f) vs champion v%d AUC %.4f (slope %.2f) on %zu holdout rows: %s",
                 version, j.eb.auc, j.eb.cal_slope, champ, ce.auc, ce.cal_slope, j.ntest,
                 pass ? "promoted" : !auc_ok ? "kept: AUC gate failed" : "kept: calibration gate failed");
    } else {
        px_eval_reg ce;
        if ((rc = px_eval_regression(y, cs, j.ntest, &ce, e)) != 0) goto fail;
        pass = j.er.rmse <= ce.rmse * (1 + p->max_rmse_rise);
        snprintf(gates, sizeof gates, "{\"max_rmse_rise\":%.6g,\"rmse_ok\":%s}", p->max_rmse_rise,
                 pass ? "true" : "false");
        snprintf(metrics, sizeof metrics,
                 "{\"holdout_rows\":%zu,\"candidate\":{\"rmse\":%.6f,\"mae\":%.6f,\"r2\":%.6f},"
                 "\"champion\":{\"rmse\":%.6f,\"mae\":%.6f,\"r2\":%.6f}}",
                 j.ntest, j.er.rmse, j.er.mae, j.er.r2, ce.rmse, ce.mae, ce.r2);
        snprintf(msg, sizeof msg, "candidate v%d RMSE %.4f vs champion v%d RMSE %.4f on %zu holdout rows: %s", version,
                 j.er.rmse, champ, ce.rmse, j.ntest, pass ? "promoted" : "kept: RMSE gate failed");
    }
    if (pass) {
        if ((rc = px_reg_promote(c, cfg, model, version, "champion", msg, e)) != 0) goto fail;
        px_reg_promote(c, cfg, model, champ, "challenger", "previous champion", &e2);
    } else {
        px_reg_promote(c, cfg, model, version, "challenger", msg, &e2);
    }
    if ((rc = reg_record_decision(c, model, version, champ, pass ? "promoted" : "kept", gates, metrics, msg, e)) != 0)
        goto out;
    if (report) fprintf(report, "%s: %s\n", model, msg);
    rc = pass ? 0 : px_err_set(e, PX_ENOTHING, "%s: %s", model, msg);
    oc = pass ? PX_RETRAIN_PROMOTED : PX_RETRAIN_KEPT;
    goto out;
fail:
    if (!msg[0]) snprintf(msg, sizeof msg, "%s", e->msg);
    {
        px_err keep = *e;
        reg_record_decision(c, model, version, champ, "failed", NULL, NULL, msg, &e2);
        *e = keep;
    }
    if (report) fprintf(report, "%s: failed: %s\n", model, msg);
    if (rc == 0 || rc == PX_ENOTHING) rc = PX_EINVAL;
out:
    if (outcome) *outcome = rc < 0 && rc != PX_ENOTHING ? PX_RETRAIN_FAILED : oc;
    free(cs);
    free(y);
    px_model_free(cm);
    free_list(champ_feats);
    reg_job_release(&j);
    return rc;
}

