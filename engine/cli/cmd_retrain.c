/* cmd_retrain.c: prognos retrain - the scheduler's job: rebuild features, train a
 * candidate, compare it with the champion on the same holdout, promote only if it
 * passes the gates. Exit 0 promoted, 3 kept (or nothing new), 4 a candidate failed
 * its quality gates, 1 failed (see the usage text). */
#include "engine/cli/cli.h"
#include "registry/registry.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos retrain [--model readmission|mortality|los|NAME|all] [--max-auc-drop D]\n"
    "                       [--slope-range LO,HI] [--max-rmse-rise R] [--min-epp N]\n"
    "                       [--min-holdout-events N] [--gate-slope LO,HI] [--hier-boot N]\n"
    "\n"
    "For each model: rebuilds its features, trains a candidate with the champion's settings,\n"
    "scores candidate and champion on the same holdout (later discharges of patients neither\n"
    "trained on) and promotes the candidate to champion only if it passes the gates:\n"
    "  binary outcomes: AUC >= champion's AUC - D (default 0.01) and calibration slope in\n"
    "                   [LO, HI] (default 0.8,1.2);\n"
    "  numeric outcomes: RMSE <= champion's RMSE x (1 + R) (default R = 0.02).\n"
    "A candidate that fails becomes the challenger. Before any comparison a candidate must\n"
    "pass its quality gates (see prognos train --help); one that fails is registered with\n"
    "the failure in its record but never promoted, not even as a model's first version.\n"
    "Each decision is recorded in registry.decisions. Data unchanged since the last\n"
    "version: nothing is trained. With all, every model is retrained whatever happens to\n"
    "the others.\n"
    "\n"
    "  --model M   one model, or all (default): readmission, mortality, los\n"
    "  --min-epp N, --min-holdout-events N, --gate-slope LO,HI  the candidate's quality\n"
    "              gates, as for prognos train (defaults 10, 20, 0.5,1.5)\n"
    "  --hier-boot N  bootstrap draws for the candidate's hierarchical model's intervals,\n"
    "              as for prognos train (default 20; 0 = none)\n"
    "\n"
    "Exit codes (with all, the first that applies, in this order):\n"
    "  1  a model failed with an error (the others were still retrained)\n"
    "  4  a candidate failed its quality gates: registered, not promoted (the others may\n"
    "     have been promoted; registry.decisions says which)\n"
    "  0  a candidate was promoted (with all: at least one)\n"
    "  3  champions kept or nothing new\n"
    "  2  usage error\n";

int cmd_retrain(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    const char *model = "all";
    px_retrain_params p = px_retrain_default_params();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) model = argv[++i];
        else if (strcmp(argv[i], "--max-auc-drop") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.max_auc_drop) != 0 || !(p.max_auc_drop >= 0 && p.max_auc_drop < 1))
                return px_cli_usage_error("retrain", "--max-auc-drop needs a number in [0, 1)");
        } else if (strcmp(argv[i], "--slope-range") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%lf,%lf", &p.slope_lo, &p.slope_hi) != 2 || !(p.slope_lo < p.slope_hi))
                return px_cli_usage_error("retrain", "--slope-range needs LO,HI with LO < HI");
        } else if (strcmp(argv[i], "--max-rmse-rise") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.max_rmse_rise) != 0 || !(p.max_rmse_rise >= 0)) return px_cli_usage_error("retrain", "--max-rmse-rise needs a number >= 0");
        } else if (strcmp(argv[i], "--min-epp") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.gates.min_epp) != 0 || !(p.gates.min_epp >= 0 && p.gates.min_epp <= 1e6))
                return px_cli_usage_error("retrain", "--min-epp needs a number of events between 0 and 1000000");
        } else if (strcmp(argv[i], "--min-holdout-events") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.gates.min_holdout_events) != 0 || !(p.gates.min_holdout_events >= 0 && p.gates.min_holdout_events <= 1e9))
                return px_cli_usage_error("retrain", "--min-holdout-events needs a count >= 0");
        } else if (strcmp(argv[i], "--gate-slope") == 0 && i + 1 < argc) {
            char tail;
            if (sscanf(argv[++i], "%lf,%lf%c", &p.gates.slope_lo, &p.gates.slope_hi, &tail) != 2 ||
                !(p.gates.slope_lo < p.gates.slope_hi))
                return px_cli_usage_error("retrain", "--gate-slope needs LO,HI with LO < HI");
        } else if (strcmp(argv[i], "--hier-boot") == 0 && i + 1 < argc) {
            long long b;
            if (px_cli_ll(argv[++i], 0, 100000, &b) != 0)
                return px_cli_usage_error("retrain", "--hier-boot needs a whole number of draws from 0 to 100000");
            p.hier.boot = (int)b;
        } else return px_cli_usage_error("retrain", "unknown or incomplete option '%s'", argv[i]);
    }
    px_config cfg;
    px_err e = {0};
    PGconn *c = px_cli_connect(&cfg, 0, &e);
    if (!c) return px_cli_fail(&e);
    int promoted = 0, failed = 0, gates_failed = 0;
    for (int k = 0; k < px_feat_sets_count; k++) {
        const char *name = strcmp(model, "all") == 0 ? px_feat_sets[k].name : model;
        px_err_clear(&e);
        px_retrain_outcome oc = PX_RETRAIN_FAILED;
        int rc = px_retrain_ex(c, &cfg, name, &p, stdout, &oc, &e);
        if (rc == 0) promoted++;
        else if (oc == PX_RETRAIN_GATES_FAILED) gates_failed++;
        else if (rc != PX_ENOTHING) {
            px_err_print(&e);
            failed++;
        }
        if (strcmp(model, "all") != 0) break;
    }
    PQfinish(c);
    return failed ? PX_EXIT_FAIL : gates_failed ? PX_EXIT_GATES : promoted ? PX_EXIT_OK : PX_EXIT_NOTHING;
}
