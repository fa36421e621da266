/* report_card.c: the Markdown model card of one version (prognos registry card):
 * intended use, data, features, evaluation overall and by group, calibration,
 * coefficients, limitations and the quality gates, from the verified
 * artifacts only. */
#include "registry/report_int.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- model card ---------------------------------------------------------------------- */

/* What each built-in model is for; the cohort and label come from the feature set's doc. */
static const struct {
    const char *set, *use;
} intended[] = {
    {"readmission",
     "Estimates, at discharge, the probability that an adult inpatient stay is followed by a readmission "
     "(all-cause: planned readmissions are not removed) within 30 days. Intended uses: (1) decision support, to prioritise discharge planning and "
     "follow-up for patients at high risk; (2) risk adjustment, as the expected-count model behind the "
     "risk-standardized readmission KPIs. Not intended for denying care, for individual prognosis "
     "conversations without clinical judgement, or for populations unlike the training cohort."},
    {"mortality",
     "Estimates, at admission, the probability of death within 30 days of an inpatient admission. Intended "
     "uses: risk adjustment of mortality KPIs by hospital, department and month, and flagging high-risk "
     "admissions for review. Not a triage tool, and not for end-of-life decisions."},
    {"los",
     "Estimates, at admission, the expected length of stay in days of an inpatient stay. Intended uses: "
     "capacity planning, and the expected length of stay behind risk-adjusted LOS KPIs. It predicts a mean, "
     "not an individual's discharge date."},
};

static void md_eval_header(px_buf *b, int binary)
{
    if (binary)
        px_buf_adds(b, "| group | n | events | AUC (95% CI) | AUPRC | Brier | calibration intercept | "
                       "calibration slope | Hosmer-Lemeshow p |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
    else
        px_buf_adds(b, "| group | n | mean observed | mean predicted | MAE | RMSE | R² |\n"
                       "|---|---:|---:|---:|---:|---:|---:|\n");
}

static void md_eval_row(px_buf *b, const char *group, const cJSON *ev, int binary)
{
    char s[10][32], auc[96];
    px_buf_adds(b, "| ");
    rep_md_cell(b, group);
    if (binary)
        px_buf_printf(b, " | %s | %s | %s | %s | %s | %s | %s | %s |\n", rep_count(s[0], 32, rep_jnum(ev, "n")),
                      rep_count(s[1], 32, rep_jnum(ev, "events")), rep_auc_ci(auc, sizeof auc, ev, ""),
                      rep_num(s[5], 32, rep_jnum(ev, "auprc"), 3), rep_num(s[6], 32, rep_jnum(ev, "brier"), 4),
                      rep_num(s[7], 32, rep_jnum(ev, "cal_intercept"), 3),
                      rep_num(s[8], 32, rep_jnum(ev, "cal_slope"), 3),
                      rep_num(s[9], 32, rep_jnum(ev, "hl_p"), 3));
    else
        px_buf_printf(b, " | %s | %s | %s | %s | %s | %s |\n", rep_count(s[0], 32, rep_jnum(ev, "n")),
                      rep_num(s[1], 32, rep_jnum(ev, "mean_obs"), 3), rep_num(s[2], 32, rep_jnum(ev, "mean_pred"), 3),
                      rep_num(s[3], 32, rep_jnum(ev, "mae"), 3), rep_num(s[4], 32, rep_jnum(ev, "rmse"), 3),
                      rep_num(s[5], 32, rep_jnum(ev, "r2"), 3));
}

/* A table from a CSV (header row first). */
static void md_csv(px_buf *b, const csv_rows *t)
{
    for (size_t i = 0; i < t->n; i++) {
        px_buf_adds(b, "|");
        for (size_t j = 0; j < t->ncol[i]; j++) {
            px_buf_addc(b, ' ');
            rep_md_cell(b, t->row[i][j]);
            px_buf_adds(b, " |");
        }
        px_buf_addc(b, '\n');
        if (i == 0) {
            px_buf_adds(b, "|");
            for (size_t j = 0; j < t->ncol[0]; j++) px_buf_adds(b, j ? "---:|" : "---|");
            px_buf_addc(b, '\n');
        }
    }
}

/* Coefficients rounded to 4 significant digits (coefficients.csv keeps 10). */
static void md_coef(px_buf *b, const csv_rows *t, int logit)
{
    px_buf_printf(b, "| term | estimate | SE | 95%% CI | %s (95%% CI) |\n|---|---:|---:|---:|---:|\n",
                  logit ? "odds ratio" : "rate ratio");
    for (size_t i = 1; i < t->n; i++) {
        char **f = t->row[i];
        if (t->ncol[i] < 8) continue;
        px_buf_adds(b, "| ");
        rep_md_cell(b, f[0]);
        px_buf_printf(b, " | %.4g | %.4g | %.4g to %.4g | %.4g (%.4g to %.4g) |\n", atof(f[1]), atof(f[2]), atof(f[3]),
                      atof(f[4]), atof(f[5]), atof(f[6]), atof(f[7]));
    }
}

/* Calibration from the metrics' deciles of risk when there is no calibration.csv. */
static int md_groups(px_buf *b, const cJSON *overall)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(overall, "groups");
    if (!cJSON_IsArray(g) || cJSON_GetArraySize(g) == 0) return 0;
    px_buf_adds(b, "| decile of risk | n | events | mean predicted | observed rate |\n|---|---:|---:|---:|---:|\n");
    int i = 1;
    for (const cJSON *r = g->child; r; r = r->next, i++) {
        char s[4][32];
        px_buf_printf(b, "| %d | %s | %s | %s | %s |\n", i, rep_count(s[0], 32, rep_jnum(r, "n")),
                      rep_count(s[1], 32, rep_jnum(r, "events")), rep_num(s[2], 32, rep_jnum(r, "mean_pred"), 4),
                      rep_num(s[3], 32, rep_jnum(r, "obs_rate"), 4));
    }
    return 1;
}

static void card_features(px_buf *b, const version_info *vi)
{
    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(vi->m.json, "features");
    const cJSON *rfeats = cJSON_GetObjectItemCaseSensitive(vi->ref, "features");
    px_buf_adds(b, "| feature | kind | training range or levels | mean (SD) | missing in training |\n"
                   "|---|---|---|---|---:|\n");
    for (const cJSON *f = feats ? feats->child : NULL; f; f = f->next) {
        const cJSON *rf = NULL;
        for (const cJSON *x = rfeats ? rfeats->child : NULL; x; x = x->next)
            if (strcmp(rep_jstr(x, "name"), rep_jstr(f, "name")) == 0) rf = x;
        char s[4][32];
        px_buf_adds(b, "| ");
        rep_md_cell(b, rep_jstr(f, "name"));
        px_buf_printf(b, " | %s%s | ", rep_jstr(f, "kind"), cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "dropped"))
                                                            ? " (constant in training: not used)"
                                                            : "");
        if (strcmp(rep_jstr(f, "kind"), "numeric") == 0) {
            px_buf_printf(b, "%s to %s | %s (%s) | ", rep_num(s[0], 32, rep_jnum(f, "min"), 3),
                          rep_num(s[1], 32, rep_jnum(f, "max"), 3),
                          rep_num(s[2], 32, rep_jnum(f, "mean"), 3), rep_num(s[3], 32, rep_jnum(f, "sd"), 3));
        } else {
            const cJSON *lv = cJSON_GetObjectItemCaseSensitive(f, "levels");
            int nl = cJSON_GetArraySize(lv), l = 0;
            for (const cJSON *x = lv ? lv->child : NULL; x && l < 12; x = x->next, l++) {
                if (l) px_buf_adds(b, ", ");
                rep_md_cell(b, cJSON_IsString(x) ? x->valuestring : "");
            }
            if (nl > 12) px_buf_printf(b, ", ... (%d levels)", nl);
            px_buf_adds(b, " (reference: ");
            rep_md_cell(b, rep_jstr(f, "reference"));
            px_buf_adds(b, ") | - | ");
        }
        if (rf) px_buf_printf(b, "%.1f%% |\n", 100 * rep_jnum(rf, "missing_share"));
        else px_buf_adds(b, "- |\n");
    }
}

/* Limitations that follow from this version's own numbers, then the standing ones. */
static void card_limitations(px_buf *b, const version_info *vi, int binary)
{
    const cJSON *overall = cJSON_GetObjectItemCaseSensitive(vi->metrics, "overall");
    if (binary && overall) {
        double lo = rep_jnum(overall, "auc_lo"), hi = rep_jnum(overall, "auc_hi");
        double slope = rep_jnum(overall, "cal_slope");
        if (!isnan(lo) && !isnan(hi) && hi - lo > 0.1)
            px_buf_printf(b, "- The holdout AUC is imprecise (95%% CI %.3f-%.3f): the holdout is small or has few "
                             "events.\n", lo, hi);
        if (!isnan(slope) && (slope < 0.8 || slope > 1.2))
            px_buf_printf(b, "- Calibration slope %.2f on the holdout (ideal 1): predictions are %s; recalibrate "
                             "before using absolute risks.\n", slope, slope < 1 ? "too extreme (overfitting or drift)"
                                                                                   : "too moderate");
    }
    if (!binary && overall) {
        double r2 = rep_jnum(overall, "r2");
        if (!isnan(r2) && r2 < 0.2)
            px_buf_printf(b, "- The model explains little of the variation in the outcome (holdout R² %.3f): use "
                             "it for averages over groups, not for individual stays.\n", r2);
    }
    static const char *const groups[] = {"by_sex", "by_age_band"};
    for (int g = 0; g < 2; g++) {
        const cJSON *grp = cJSON_GetObjectItemCaseSensitive(vi->metrics, groups[g]);
        for (const cJSON *s = grp ? grp->child : NULL; s; s = s->next) {
            double n = rep_jnum(s, "n"), ev = rep_jnum(s, "events");
            if ((!isnan(n) && n < 100) || (binary && !isnan(ev) && ev < 10)) {
                px_buf_printf(b, "- Subgroup %s = ", groups[g] + 3);
                rep_md_cell(b, s->string ? s->string : "");
                px_buf_printf(b, " has only %.0f holdout rows%s: its metrics are imprecise.\n", n,
                              binary && !isnan(ev) ? (ev < 10 ? " and fewer than 10 events" : "") : "");
            }
        }
    }
    const char *algo = rep_jstr(vi->row, "algo");
    if (strcmp(algo, "svc") == 0 || strcmp(algo, "svr") == 0)
        px_buf_adds(b, "- Support vector machines have no coefficients; per-feature explanations are the change in "
                       "the prediction when a feature is set to its training mean or reference level.\n");
    px_buf_adds(b,
                "- Validated only on a holdout of this installation's own data (later prediction times and patients "
                "not seen in training); performance in other hospitals or periods is unknown until checked there, "
                "and the drift monitor compares live inputs with the reference distributions recorded here.\n"
                "- Associations, not causes: coefficients describe the training data and must not be read as the "
                "effect of changing a feature.\n"
                "- Missing inputs are imputed with the training mean (numeric) or the reference level "
                "(categorical); inputs outside the training ranges above are extrapolations.\n"
                "- Subgroups other than sex and age band were not evaluated; check fairness for the populations "
                "where the model is used.\n");
}

int px_reg_card(PGconn *c, const px_config *cfg, const char *name, const char *ref, FILE *out, px_err *e)
{
    version_info vi;
    px_buf b = {0};
    int rc = rep_info_load(c, cfg, name, ref, "cannot write the card of", &vi, e);
    if (rc != 0) return rc;
    const cJSON *row = vi.row;
    int binary = strcmp(rep_jstr(row, "task"), "binary") == 0;
    int version = (int)rep_jnum(row, "version");
    const char *set = rep_jstr(row, "feature_set");
    const px_feat_set_info *fs = *set ? px_feat_set_find(set) : NULL;

    px_buf_printf(&b, "# Model card: %s v%d\n\n", name, version);
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(row, "aliases");
    px_buf_printf(&b, "| | |\n|---|---|\n| model | %s |\n| version | %d |\n| aliases | ", name, version);
    if (cJSON_GetArraySize(al) == 0) px_buf_adds(&b, "-");
    for (const cJSON *a = al ? al->child : NULL; a; a = a->next)
        px_buf_printf(&b, "%s%s", a == al->child ? "" : ", ", cJSON_IsString(a) ? a->valuestring : "");
    px_buf_printf(&b, " |\n| algorithm | %s |\n| task | %s |\n| label | %s |\n| feature table | %s |\n",
                  rep_jstr(row, "algo"), binary ? "binary classification (probability)" : "regression (expected value)",
                  rep_jstr(row, "label"), rep_jstr(row, "feature_table"));
    px_buf_printf(&b, "| registered | %s by %s |\n\n", rep_jstr(row, "created_at"), rep_jstr(row, "created_by"));

    px_buf_adds(&b, "## Quality gates\n\n");
    rep_gates_section(&b, &vi, 1);

    px_buf_adds(&b, "## Intended use\n\n");
    const char *use = NULL;
    for (size_t i = 0; fs && i < sizeof intended / sizeof intended[0]; i++)
        if (strcmp(intended[i].set, set) == 0) use = intended[i].use;
    if (use) px_buf_printf(&b, "%s\n\n", use);
    else
        px_buf_printf(&b, "A model of `%s` trained on the user table `%s`. Prognos does not know what it is for: "
                          "the team that registered it must state the intended use and population before it is "
                          "used for decisions.\n\n",
                      rep_jstr(row, "label"), rep_jstr(row, "feature_table"));

    px_buf_adds(&b, "## Cohort and label\n\n");
    if (fs && fs->doc) px_buf_printf(&b, "%s\n\n", fs->doc);
    else px_buf_printf(&b, "Rows of `%s`; label `%s`.\n\n", rep_jstr(row, "feature_table"), rep_jstr(row, "label"));
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(row, "split");
    if (cJSON_GetArraySize(split) > 0) {
        px_buf_adds(&b, "Training and holdout split:\n\n");
        for (const cJSON *s = split->child; s; s = s->next) {
            char *v = cJSON_IsString(s) ? NULL : cJSON_PrintUnformatted(s);
            px_buf_printf(&b, "- %s: %s\n", s->string, v ? v : cJSON_IsString(s) ? s->valuestring : "");
            free(v);
        }
        px_buf_addc(&b, '\n');
    }

    px_buf_adds(&b, "## Features\n\n");
    card_features(&b, &vi);
    px_buf_addc(&b, '\n');

    px_buf_adds(&b, "## Holdout performance\n\n");
    const cJSON *overall = cJSON_GetObjectItemCaseSensitive(vi.metrics, "overall");
    if (overall) {
        if (binary)
            px_buf_adds(&b, "AUC with a 95% interval from DeLong's variance; Brier score; calibration intercept "
                            "and slope from a logistic recalibration of the predictions; Hosmer-Lemeshow over "
                            "deciles of risk.\n\n");
        md_eval_header(&b, binary);
        md_eval_row(&b, "overall", overall, binary);
        px_buf_addc(&b, '\n');
    } else {
        px_buf_adds(&b, "No holdout evaluation was recorded.\n\n");
    }

    if (binary) {
        px_buf_adds(&b, "## Calibration by decile of risk\n\n");
        if (vi.calib.n > 0) md_csv(&b, &vi.calib);
        else if (!md_groups(&b, overall)) px_buf_adds(&b, "No calibration table was recorded.");
        px_buf_addc(&b, '\n');
    }

    px_buf_adds(&b, "## Subgroups\n\n");
    static const char *const groups[] = {"by_sex", "by_age_band"};
    static const char *const titles[] = {"sex", "age band"};
    int any = 0;
    for (int g = 0; g < 2; g++) {
        const cJSON *grp = cJSON_GetObjectItemCaseSensitive(vi.metrics, groups[g]);
        if (!cJSON_IsObject(grp) || !grp->child) continue;
        px_buf_printf(&b, "By %s:\n\n", titles[g]);
        md_eval_header(&b, binary);
        for (const cJSON *s = grp->child; s; s = s->next) md_eval_row(&b, s->string ? s->string : "", s, binary);
        px_buf_addc(&b, '\n');
        any = 1;
    }
    if (!any) px_buf_adds(&b, "No subgroup metrics were recorded.\n\n");

    px_buf_adds(&b, "## Coefficients\n\n");
    if (vi.coef.n > 0) {
        px_buf_adds(&b, strcmp(rep_jstr(row, "algo"), "logit") == 0
                            ? "Log-odds per unit of each feature on its original scale, with 95% Wald intervals "
                              "and odds ratios.\n\n"
                            : "Log of the ratio of means per unit of each feature, with 95% Wald intervals "
                              "(robust standard errors) and rate ratios.\n\n");
        md_coef(&b, &vi.coef, strcmp(rep_jstr(row, "algo"), "logit") == 0);
    } else {
        px_buf_adds(&b, "This algorithm has no coefficients.\n");
    }
    px_buf_addc(&b, '\n');

    px_buf_adds(&b, "## Limitations\n\n");
    card_limitations(&b, &vi, binary);
    px_buf_addc(&b, '\n');

    px_buf_adds(&b, "## Training data\n\n");
    char *batches = rep_compact(cJSON_GetObjectItemCaseSensitive(row, "source_batches"));
    char *params = rep_compact(cJSON_GetObjectItemCaseSensitive(row, "params"));
    px_buf_printf(&b, "- fingerprint (SHA-256 of the training data): `%s`\n", rep_jstr(row, "fingerprint"));
    px_buf_printf(&b, "- feature set: %s; definition hash `%s`\n", *set ? set : "(user table)",
                  *rep_jstr(row, "definition_hash") ? rep_jstr(row, "definition_hash") : "-");
    px_buf_printf(&b, "- ETL batches: %s\n", batches ? batches : "[]");
    px_buf_printf(&b, "- fit parameters: `%s`\n", params ? params : "{}");
    px_buf_printf(&b, "- reference distributions from %.0f training rows\n", rep_jnum(vi.ref, "n"));
    px_buf_printf(&b, "- artifacts: manifest SHA-256 `%s`, model SHA-256 `%s`, signed with Ed25519\n",
                  rep_jstr(row, "manifest_sha256"), rep_jstr(row, "model_sha256"));
    free(batches);
    free(params);

    rc = b.data ? rep_emit(&b, out, e) : px_err_set(e, PX_ENOMEM, "out of memory");
    px_buf_release(&b);
    rep_info_release(&vi);
    return rc;
}
