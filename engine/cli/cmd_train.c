/* cmd_train.c: prognos train - fit, evaluate and register one model version. */
#include "engine/cli/cli.h"
#include "registry/registry.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos train --model NAME [--algo logit|poisson|svc|svr|svm] [--table SCHEMA.TABLE --label COL]\n"
    "                     [--features A,B,...] [--l2 LAMBDA] [--holdout-time SHARE] [--holdout-patients SHARE]\n"
    "                     [--no-build] [--min-epp N] [--min-holdout-events N] [--gate-slope LO,HI]\n"
    "                     [--accept-failed-gates] [--hier-boot N] [--hier-seed S] [--no-hier]\n"
    "                     [--svm-max-rows N] [--json]\n"
    "\n"
    "Fits a model, evaluates it on a temporal, patient-grouped holdout, applies the quality\n"
    "gates and registers it as a new, signed version in the model registry. The first version\n"
    "of a model becomes its champion if it passed its gates; later versions are promoted by\n"
    "'prognos retrain' or 'prognos registry promote'. Training the same data with the same\n"
    "parameters again creates no new version.\n"
    "\n"
    "Quality gates (a version that fails one is registered with the failure in its record,\n"
    "card and this output, but does not become champion, serve or adjust KPIs):\n"
    "  0/1 outcome: events (the rarer class) per candidate parameter >= --min-epp (10),\n"
    "  holdout events >= --min-holdout-events (20), no (quasi-)separation, a converged fit,\n"
    "  holdout AUC lower 95%% bound > 0.5, calibration slope within --gate-slope (0.5,1.5),\n"
    "  training probabilities within 1e-8 of neither 0 nor 1;\n"
    "  numeric outcome: rows per parameter and holdout rows as above, holdout RMSE below the\n"
    "  mean-only model's + 5%%, training predictions finite, >= 0 and (los) <= 365 days.\n"
    "\n"
    "  --model NAME          readmission, mortality or los (the built-in feature sets, built\n"
    "                        first unless --no-build), or any name [a-z][a-z0-9_]* with --table\n"
    "  --algo A              logit (0/1 labels, default) or svc (LibSVM C-SVC, RBF);\n"
    "                        poisson (numeric labels, default) or svr (LibSVM epsilon-SVR);\n"
    "                        svm = svc or svr by the label\n"
    "  --table SCHEMA.TABLE  train on any table or view (a data scientist's extract)\n"
    "  --label COL           the outcome column (default: the set's)\n"
    "  --features A,B,...    the inputs (default: the set's default features, or every\n"
    "                        numeric, boolean and text column of --table)\n"
    "  --l2 LAMBDA           ridge penalty on standardized coefficients (default 0)\n"
    "  --holdout-time SHARE  latest share of prediction times held out (default 0.25)\n"
    "  --holdout-patients SHARE  share of patients in the holdout group (default 0.3)\n"
    "  --min-epp N           events per candidate parameter required (default 10)\n"
    "  --min-holdout-events N  holdout events required (default 20)\n"
    "  --gate-slope LO,HI    holdout calibration slope required (default 0.5,1.5)\n"
    "  --accept-failed-gates a version that fails its gates may still become the first\n"
    "                        champion (recorded in registry.decisions); exits 0\n"
    "  --hier-boot N         bootstrap draws over facilities for the hierarchical model's\n"
    "                        intervals (default 20; 0 = none). A logit or poisson model on a\n"
    "                        table with facility_id is stored with a random-intercept model\n"
    "                        (hierarchical.json, CMS's method) that 'kpi compute' applies\n"
    "  --hier-seed S         the bootstrap's seed (default 1)\n"
    "  --no-hier             do not fit the hierarchical model\n"
    "  --svm-max-rows N      svc/svr: train on at most N rows, a seeded (stratified) random\n"
    "                        subsample beyond (default 10000; training time grows with the\n"
    "                        square of the rows); recorded in the version, kept by retrain\n"
    "  --json                machine-readable result\n"
    "\n"
    "Exit codes: 0 ok (a version was created or already existed, and passed its gates or\n"
    "was accepted), 1 failed, 2 usage, 3 the version failed a quality gate (registered,\n"
    "not champion; the message names the gate and what would fix it).\n";

/* Splits "a,b,c" into a NULL-terminated array pointing into s (modified). Caller frees the array. */
static const char **split_list(char *s)
{
    size_t n = 1;
    for (char *p = s; *p; p++) n += *p == ',';
    const char **out = calloc(n + 1, sizeof *out);
    if (!out) return NULL;
    size_t k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) out[k++] = tok;
    return out;
}

static int parse_share(const char *s, double *out)
{
    double v;
    if (px_cli_double(s, &v) != 0 || !(v > 0 && v < 1)) return -1;
    *out = v;
    return 0;
}

/* "gates_failed": [names] from "a,b,c". */
static void add_gates_failed(cJSON *o, const char *names, int *ok)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "gates_failed");
    cli_json_ok(ok, arr);
    for (const char *s = names; arr && s && *s;) {
        size_t n = strcspn(s, ",");
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), s);
        cJSON *item = cJSON_CreateString(name);
        if (!item || !cJSON_AddItemToArray(arr, item)) {
            cJSON_Delete(item);
            *ok = 0;
        }
        s += n + (s[n] == ',');
    }
}
int cmd_train(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    px_train_params p = px_train_default_params();
    const char *algo = NULL;
    char *features = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) p.model = argv[++i];
        else if (strcmp(argv[i], "--algo") == 0 && i + 1 < argc) algo = argv[++i];
        else if (strcmp(argv[i], "--table") == 0 && i + 1 < argc) p.table = argv[++i];
        else if (strcmp(argv[i], "--label") == 0 && i + 1 < argc) p.label = argv[++i];
        else if (strcmp(argv[i], "--features") == 0 && i + 1 < argc) features = argv[++i];
        else if (strcmp(argv[i], "--l2") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.l2) != 0 || !(p.l2 >= 0) || p.l2 > 1e9) return px_cli_usage_error("train", "--l2 needs a number >= 0");
        } else if (strcmp(argv[i], "--holdout-time") == 0 && i + 1 < argc) {
            if (parse_share(argv[++i], &p.holdout_time_share) != 0)
                return px_cli_usage_error("train", "--holdout-time needs a share between 0 and 1");
        } else if (strcmp(argv[i], "--holdout-patients") == 0 && i + 1 < argc) {
            if (parse_share(argv[++i], &p.holdout_patient_share) != 0)
                return px_cli_usage_error("train", "--holdout-patients needs a share between 0 and 1");
        } else if (strcmp(argv[i], "--min-epp") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.gates.min_epp) != 0 || !(p.gates.min_epp >= 0 && p.gates.min_epp <= 1e6))
                return px_cli_usage_error("train", "--min-epp needs a number of events between 0 and 1000000");
        } else if (strcmp(argv[i], "--min-holdout-events") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.gates.min_holdout_events) != 0 || !(p.gates.min_holdout_events >= 0 && p.gates.min_holdout_events <= 1e9))
                return px_cli_usage_error("train", "--min-holdout-events needs a count >= 0");
        } else if (strcmp(argv[i], "--gate-slope") == 0 && i + 1 < argc) {
            char tail;
            if (sscanf(argv[++i], "%lf,%lf%c", &p.gates.slope_lo, &p.gates.slope_hi, &tail) != 2 ||
                !(p.gates.slope_lo < p.gates.slope_hi))
                return px_cli_usage_error("train", "--gate-slope needs LO,HI with LO < HI");
        } else if (strcmp(argv[i], "--accept-failed-gates") == 0) p.accept_failed_gates = 1;
        else if (strcmp(argv[i], "--hier-boot") == 0 && i + 1 < argc) {
            long long b;
            if (px_cli_ll(argv[++i], 0, 100000, &b) != 0)
                return px_cli_usage_error("train", "--hier-boot needs a whole number of draws from 0 to 100000");
            p.hier.boot = (int)b;
        } else if (strcmp(argv[i], "--hier-seed") == 0 && i + 1 < argc) {
            if (px_cli_u64(argv[++i], &p.hier.seed) != 0)
                return px_cli_usage_error("train", "--hier-seed needs a whole number >= 0");
        } else if (strcmp(argv[i], "--svm-max-rows") == 0 && i + 1 < argc) {
            long long m;
            if (px_cli_ll(argv[++i], 2, 10000000, &m) != 0)
                return px_cli_usage_error("train", "--svm-max-rows needs a whole number of rows from 2 to 10000000");
            p.svm_max_rows = (size_t)m;
        } else if (strcmp(argv[i], "--no-hier") == 0) p.no_hier = 1;
        else if (strcmp(argv[i], "--no-build") == 0) p.build_features = 0;
        else if (strcmp(argv[i], "--json") == 0) json = 1;
        else return px_cli_usage_error("train", "unknown or incomplete option '%s'", argv[i]);
    }
    if (!p.model) return px_cli_usage_error("train", "--model is required");
    if (p.table && !p.label) return px_cli_usage_error("train", "--table needs --label");
    if (!p.table && !px_feat_set_find(p.model))
        return px_cli_usage_error("train", "'%s' is not a built-in model (readmission, mortality, los); "
                                           "give --table and --label to train on your own table", p.model);
    int svm_auto = 0;
    if (algo) {
        if (strcmp(algo, "svm") == 0) svm_auto = 1;
        else if (px_algo_parse(algo, &p.algo) != 0)
            return px_cli_usage_error("train", "unknown algorithm '%s' (logit, poisson, svc, svr, svm)", algo);
        else p.algo_given = 1;
    }
    if (svm_auto) { /* svc or svr by the label: a built-in set knows which */
        const px_feat_set_info *set = p.table ? NULL : px_feat_set_find(p.model);
        if (!set) return px_cli_usage_error("train", "--algo svm needs a built-in model; use svc or svr with --table");
        p.algo = set->binary ? PX_ALGO_SVC : PX_ALGO_SVR;
        p.algo_given = 1;
    }
    const char **flist = NULL;
    if (features) {
        if (!(flist = split_list(features)) || !flist[0]) {
            free(flist);
            return px_cli_usage_error("train", "--features needs a comma-separated list of columns");
        }
        p.features = flist;
    }

    px_config cfg;
    px_err e = {0};
    int code = PX_EXIT_FAIL;
    PGconn *c = NULL;
    if (px_config_load(&cfg, &e) != 0) goto fail;
    px_log_open(cfg.home);
    if (!(c = px_db_connect(&cfg, &e))) goto fail;
    px_train_result r;
    if (px_train(c, &cfg, &p, &r, &e) != 0) goto fail;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        int ok = o != NULL;
        char num[64];
        cli_json_ok(&ok, cJSON_AddStringToObject(o, "model", p.model));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "version", r.version));
        cli_json_ok(&ok, cJSON_AddBoolToObject(o, "created", r.created != 0));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "train_rows", (double)r.n_train));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "holdout_rows", (double)r.n_test));
        const char *keys[] = {"auc", "auc_lo", "auc_hi", "rmse", "r2"};
        double vals[] = {r.auc, r.auc_lo, r.auc_hi, r.rmse, r.r2};
        for (int k = 0; k < 5; k++) { /* JSON has no NaN: an undefined statistic is null */
            snprintf(num, sizeof num, "%.6f", vals[k]);
            cli_json_ok(&ok, isfinite(vals[k]) ? cJSON_AddRawToObject(o, keys[k], num)
                                               : cJSON_AddNullToObject(o, keys[k]));
        }
        cli_json_ok(&ok, cJSON_AddBoolToObject(o, "gates_passed", r.gates_passed != 0));
        cli_json_ok(&ok, cJSON_AddBoolToObject(o, "gates_accepted", r.gates_accepted != 0));
        cli_json_ok(&ok, cJSON_AddBoolToObject(o, "champion", r.champion != 0));
        add_gates_failed(o, r.gates_failed, &ok);
        cli_json_ok(&ok, cJSON_AddStringToObject(o, "hierarchical", r.hierarchical));
        if (cli_json_print(o, ok) != 0) goto done; /* code is PX_EXIT_FAIL */
    } else {
        printf("%s%s\n", r.summary, r.created ? "" : " (unchanged: this version already existed)");
        if (r.hierarchical[0]) printf("%s\n", r.hierarchical);
    }
    if (!r.gates_passed) {
        fprintf(stderr, "prognos train: '%s' v%d failed its quality gates%s: %s\n", p.model, r.version,
                r.gates_accepted ? " (accepted with --accept-failed-gates)" : ", not made champion", r.gates_summary);
        code = r.gates_accepted ? PX_EXIT_OK : PX_EXIT_NOTHING;
        goto done;
    }
    code = PX_EXIT_OK;
    goto done;
fail:
    code = px_cli_fail(&e);
done:
    if (c) PQfinish(c);
    free(flist);
    return code;
}
