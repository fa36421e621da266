/* main.c: the `prognos` command table. Each entry names a command, its one-line
 * summary and the cmd_<name>() in its own file that does the work. */
#include "engine/cli/cli.h"
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"db", cmd_db, "manage the warehouse: init, start, stop, status, migrate, url, psql, retention, shards"},
    {"etl", cmd_etl, "load source data into the warehouse (load), report on loads (status)"},
    {"generate", cmd_generate, "write a synthetic canonical dataset with planted effects"},
    {"features", cmd_features, "build the feature tables or the marts (build), list the latest builds (list)"},
    {"train", cmd_train, "fit, evaluate and register a model version"},
    {"retrain", cmd_retrain, "retrain and promote only if better (for schedulers: exit 0/3/4/1)"},
    {"registry", cmd_registry, "the model registry: list, show, promote, verify, card"},
    {"kpi", cmd_kpi, "risk-adjusted outcome KPIs with intervals (compute), the executive report (report)"},
    {"serve", cmd_serve, "the prediction and drift-alert server (HTTP)"},
    {"apikey", cmd_apikey, "API keys of the server: create, revoke, list"},
    {"drift", cmd_drift, "check newly loaded data for drift against each champion (check)"},
    {"export", cmd_export, "a de-identified research extract of a feature table (HIPAA Safe Harbor)"},
    {"run", cmd_run, "the scheduler's chain as steps with state, retries and resume; run status"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: prognos <command> [options]\n"
            "\n"
            "Prognos %s: clinical prediction and KPI engine.\n"
            "\n"
            "commands:\n",
            PX_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run 'prognos <command> --help' for a command's options.\n"
            "Environment: PROGNOS_HOME (default ./var), PROGNOS_DB, PROGNOS_KEY_FILE,\n"
            "PROGNOS_PG_BIN, PROGNOS_PG_USER; see README.md.\n"
            "Exit codes: 0 ok, 1 failed, 2 usage error, 3 nothing to do (train: the version failed\n"
            "its quality gates, registered but not champion; retrain: champion kept), 4 a candidate\n"
            "failed its quality gates (retrain, run).\n");
}

int px_cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
    return 0;
}

int px_cli_fail(const px_err *e)
{
    if (e->code == PX_ENOTHING) {
        fprintf(stderr, "prognos: %s\n", e->msg);
        return PX_EXIT_NOTHING;
    }
    px_err_print(e);
    return PX_EXIT_FAIL; /* usage errors are caught by the commands themselves */
}

int cli_json_ok(int *ok, const void *added)
{
    if (!added) *ok = 0;
    return *ok;
}

int cli_json_print(cJSON *o, int ok)
{
    char *txt = ok && o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!txt) {
        fprintf(stderr, "prognos: error: out of memory printing JSON\n");
        return PX_EXIT_FAIL;
    }
    printf("%s\n", txt);
    free(txt);
    return 0;
}

int px_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "prognos %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'prognos %s --help'.\n", cmd);
    return PX_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    /* a closed pipe (prognos ... | head, a parser that stopped reading) is an
     * error to report, not a reason to die */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return PX_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return PX_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("prognos %s\n", PX_VERSION);
        return PX_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "prognos: '%s' is not a prognos command; see 'prognos --help'\n", argv[1]);
    return PX_EXIT_USAGE;
}
