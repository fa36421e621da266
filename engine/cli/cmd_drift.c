/* cmd_drift.c: prognos drift check - newly loaded warehouse data against each
 * champion's training reference. */
#include "engine/cli/cli.h"
#include "serve/serve.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>

static const char usage[] =
    "usage: prognos drift check [--model NAME] [--since-batch N] [--alpha A] [--psi-floor X]\n"
    "                           [--min-n N] [--fail-on-alert] [--json]\n"
    "\n"
    "Scores the feature rows of each champion whose encounters came from etl batches the\n"
    "version was not trained on (or, with --since-batch, from batches N and later), and tests\n"
    "their distributions and scores against the version's reference as the server does: PSI\n"
    "with a sample-size-aware limit, KS for numeric and chi-square for categorical inputs.\n"
    "Alerts are stored in serve.drift_alerts (source 'drift check') and shown by the server.\n"
    "\n"
    "  --model NAME      one model (default: every champion)\n"
    "  --since-batch N   rows of etl batches >= N instead of those the champion never saw\n"
    "  --alpha A         false-alarm probability per model (default 0.01)\n"
    "  --psi-floor X     smallest PSI that alerts (default 0.1)\n"
    "  --min-n N         fewest rows that are tested (default 100)\n"
    "  --fail-on-alert   exit 1 when an alert was raised\n"
    "  --json            machine-readable report\n"
    "\n"
    "Exit codes: 0 checked, 1 failed (or an alert with --fail-on-alert), 2 usage,\n"
    "3 nothing new to check.\n";

int cmd_drift(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    if (argc < 2 || strcmp(argv[1], "check") != 0)
        return px_cli_usage_error("drift", "the only subcommand is 'check'");
    px_drift_params p = px_drift_default_params();
    const char *model = NULL;
    long long since = 0;
    int json = 0, fail_on_alert = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) model = argv[++i];
        else if (strcmp(argv[i], "--since-batch") == 0 && i + 1 < argc) {
            if (px_cli_ll(argv[++i], 1, LLONG_MAX, &since) != 0) return px_cli_usage_error("drift", "--since-batch needs a batch id >= 1");
        } else if (strcmp(argv[i], "--alpha") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.alpha) != 0 || !(p.alpha > 0 && p.alpha < 0.5)) return px_cli_usage_error("drift", "--alpha needs 0 < A < 0.5");
        } else if (strcmp(argv[i], "--psi-floor") == 0 && i + 1 < argc) {
            if (px_cli_double(argv[++i], &p.psi_floor) != 0 || !(p.psi_floor >= 0)) return px_cli_usage_error("drift", "--psi-floor needs a number >= 0");
        } else if (strcmp(argv[i], "--min-n") == 0 && i + 1 < argc) {
            long long n;
            if (px_cli_ll(argv[++i], 10, LLONG_MAX, &n) != 0) return px_cli_usage_error("drift", "--min-n needs a number >= 10");
            p.min_n = (size_t)n;
        } else if (strcmp(argv[i], "--fail-on-alert") == 0) fail_on_alert = 1;
        else if (strcmp(argv[i], "--json") == 0) json = 1;
        else return px_cli_usage_error("drift", "unknown or incomplete option '%s'", argv[i]);
    }
    px_config cfg;
    px_err e = {0};
    PGconn *c = NULL;
    int code = PX_EXIT_OK, alerts = 0;
    if (px_config_load(&cfg, &e) != 0) goto fail;
    if (px_db_require(&cfg, &e) != 0) goto fail; /* reads only: never creates a warehouse */
    px_log_open(cfg.home);
    if (!(c = px_db_connect(&cfg, &e))) goto fail;
    if (px_drift_check(c, &cfg, model, since, &p, json, stdout, &alerts, &e) != 0) goto fail;
    if (alerts && fail_on_alert) code = PX_EXIT_FAIL;
    goto done;
fail:
    code = px_cli_fail(&e);
done:
    if (c) PQfinish(c);
    return code;
}
